"""The demo: the generated default corpus, baselines vs debiasing, IID vs OOD.

``robustmsa demo --out DIR`` generates the default corpus (text topic words
co-occur with the label in train/IID test and are reversed in the OOD test),
trains a text-only model and a multimodal baseline (LF-DNN) on the continuous
labels, then, on CLUE's 2-class task (negative vs non-negative, as in the
paper), the same LF-DNN alone and wrapped by CLUE; evaluates each on the IID
and OOD test sets, and writes ``DIR/results.json``, ``DIR/report.md`` and
``DIR/acc2_iid_vs_ood.png``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from robustmsa.data.dataset import DataBundle
from robustmsa.data.labels import mmsa_metrics, to_classification
from robustmsa.evaluation.protocols import run_seeds
from robustmsa.evaluation.report import bar_plot, markdown_table, write_results, write_text_atomic
from robustmsa.folders import holds_output, prepare_out_dir
from robustmsa.method import Method, Supervised
from robustmsa.registry import BACKBONES
from robustmsa.training.fit import TrainConfig, evaluate, fit, seeded

DEMO_METRICS = ("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_7", "MAE", "Corr")
TEST_SETS = {"test": "IID test", "test_ood": "OOD test"}


@dataclass
class DemoEntry:
    """One row of the demo: how to train a method, which inference mode each test set uses, and on which labels.

    ``scheme``: None for the continuous labels, or a classification view
    (:data:`robustmsa.data.labels.SCHEMES`, e.g. ``has0``) whose metrics are
    reported under their MMSA names (Acc -> Has0_acc_2, ...).
    """

    name: str
    train: Callable[[DataBundle, int, TrainConfig], Method]
    modes: dict[str, str] = field(default_factory=lambda: {"test": "factual", "test_ood": "factual"})
    scheme: str | None = None


def _supervised(backbone: str, **params: Any) -> Callable[[DataBundle, int, TrainConfig], Method]:
    def train(bundle: DataBundle, seed: int, cfg: TrainConfig) -> Method:
        with seeded(seed):
            method = Supervised(BACKBONES.build(backbone, bundle.dims(), bundle.task, **params))
        fit(method, bundle, cfg, seed=seed)
        return method

    return train


def default_entries() -> list[DemoEntry]:
    """Text-only and the LF-DNN multimodal baseline (continuous labels); LF-DNN alone and + CLUE on the 2-class task."""
    from robustmsa.debias.clue import demo_entry as clue_entry

    return [
        DemoEntry("Text-only", _supervised("text_only")),
        DemoEntry("LF-DNN (multimodal baseline)", _supervised("lf_dnn")),
        DemoEntry("LF-DNN, 2-class", _supervised("lf_dnn"), scheme="has0"),
        DemoEntry(**clue_entry("lf_dnn", name="LF-DNN + CLUE, 2-class"), scheme="has0"),
    ]


@holds_output
def run_demo(
    out_dir: Path,
    *,
    overwrite: bool = False,
    seeds: tuple[int, ...] = (0,),
    max_epochs: int = 12,
    corpus: DataBundle | None = None,
    entries: list[DemoEntry] | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the demo and write its results; returns the results dict."""
    console = console or Console(stderr=True)
    out = prepare_out_dir(out_dir, overwrite)
    start = time.perf_counter()
    if corpus is None:
        from robustmsa.data.synthetic import SyntheticConfig, generate_corpus

        with console.status("Generating the default corpus and encoding its text with all-MiniLM-L6-v2 (cached after the first run)..."):
            corpus = generate_corpus(SyntheticConfig())
    sizes = ", ".join(f"{name} {len(split)}" for name, split in corpus.splits.items())
    console.print(f"[bold]Corpus[/bold]: {corpus.name} ({sizes}); modalities {corpus.dims()}")
    cfg = TrainConfig(max_epochs=max_epochs, patience=4, batch_size=32, lr=1e-3, progress=True)
    results: dict[str, Any] = {"corpus": {"name": corpus.name, "sizes": {n: len(s) for n, s in corpus.splits.items()}, "meta": corpus.meta}, "seeds": list(seeds), "models": {}}
    views: dict[str | None, DataBundle] = {None: corpus}
    for entry in entries if entries is not None else default_entries():
        console.rule(f"[bold]{entry.name}")
        if entry.scheme not in views:
            views[entry.scheme] = to_classification(corpus, entry.scheme)
        data = views[entry.scheme]

        def one_seed(seed: int, entry: DemoEntry = entry, data: DataBundle = data) -> dict[str, Any]:
            method = entry.train(data, seed, cfg)
            scores = {split: evaluate(method, data[split], (mode,))[mode] for split, mode in entry.modes.items() if split in data}
            return scores if entry.scheme is None else {split: mmsa_metrics(m, entry.scheme) for split, m in scores.items()}

        results["models"][entry.name] = {**run_seeds(one_seed, seeds), "modes": entry.modes, "labels": entry.scheme or "continuous"}
    results["seconds"] = time.perf_counter() - start
    write_text_atomic(out / "report.md", demo_report(results, out))
    write_results(out / "results.json", results)  # last: a folder with results.json holds a finished run
    console.print(f"[green]Done in {results['seconds']:.0f} s.[/green] Results: {out / 'results.json'}, report: {out / 'report.md'}")
    return results


def demo_report(results: dict[str, Any], out: Path) -> str:
    """Markdown report with the IID/OOD table, the OOD drop and a linked bar plot."""
    rows: dict[str, dict[str, Any]] = {}
    acc: dict[str, dict[str, float]] = {}
    err: dict[str, dict[str, float]] = {}
    drops: list[str] = []
    for model, res in results["models"].items():
        agg = res["aggregate"]
        for split, label in TEST_SETS.items():
            if split in agg:
                rows[f"{model} — {label} ({res['modes'][split]})"] = agg[split]
        acc[model] = {label: agg[s]["Has0_acc_2"]["mean"] * 100 for s, label in TEST_SETS.items() if s in agg}
        err[model] = {label: agg[s]["Has0_acc_2"]["std"] * 100 for s, label in TEST_SETS.items() if s in agg}
        if len(acc[model]) == 2:
            iid, ood = acc[model].values()
            drops.append(f"| {model} | {res['labels']} | {iid:.2f} | {ood:.2f} | {iid - ood:+.2f} |")
    gains = _debiasing_gains(results["models"], acc)
    plot = bar_plot(out / "acc2_iid_vs_ood.png", acc, errors=err, ylabel="Has0 Acc-2 (%)", title="IID vs OOD accuracy on the generated corpus")
    meta = results["corpus"]["meta"]
    bias = meta.get("config", {}) if isinstance(meta, dict) else {}
    seeds = results["seeds"]
    lines = [
        "# robustmsa demo: text shortcut on the generated default corpus",
        "",
        f"Corpus sizes: {results['corpus']['sizes']}. Topic words co-occur with the label in train / valid / IID test"
        f" (bias strength {bias.get('bias_strength', '?')}) and are reversed in the OOD test (shift {bias.get('ood_shift', '?')}).",
        f"Seeds: {seeds} (mean ± std over seeds where more than one). Accuracy and F1 in %. Checkpoints and inference parameters are chosen on validation data only.",
        "Rows marked 2-class are trained and tested on CLUE's task (negative vs non-negative, as in the paper): their accuracy and weighted F1"
        " are Has0_acc_2 / Has0_F1_score; the regression metrics do not apply there (n/a).",
        "",
        "## Metrics",
        "",
        markdown_table(rows, DEMO_METRICS, row_header="model — test set (inference mode)"),
        "## OOD drop (Has0 Acc-2, %)",
        "",
        "| model | labels | IID | OOD | drop |",
        "|---|---|---|---|---|",
        *drops,
        "",
        *gains,
        f"![Acc-2 IID vs OOD]({plot.name})",
        "",
        f"Total time: {results['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def _debiasing_gains(models: dict[str, Any], acc: dict[str, dict[str, float]]) -> list[str]:
    """Report lines: each debiased model (a non-factual OOD mode) vs the first factual model trained on the same labels."""
    lines = []
    for name, res in models.items():
        if res["modes"].get("test_ood", "factual") == "factual" or len(acc.get(name, {})) != 2:
            continue
        base = next((b for b, r in models.items() if r["labels"] == res["labels"] and r["modes"].get("test_ood") == "factual" and len(acc.get(b, {})) == 2), None)
        if base is None:
            continue
        (iid, ood), (base_iid, base_ood) = acc[name].values(), acc[base].values()
        lines += [f"**{name}** vs **{base}**: OOD Has0 Acc-2 {ood - base_ood:+.2f} points, IID {iid - base_iid:+.2f} points.", ""]
    return lines
