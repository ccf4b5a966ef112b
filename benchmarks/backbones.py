"""Benchmark the backbone zoo on the generated default corpus.

For every backbone, with the hyper-parameters and training settings of
``configs/backbones/<name>.yaml``, and every seed: train with the
``supervised`` method through :func:`robustmsa.training.fit.fit` (checkpoint
chosen on the IID validation split), then measure

* IID test (``test``) and OOD test (``test_ood``) metrics, mean +- std over seeds;
* the parameter count of the backbone;
* training throughput: samples per second of forward + backward of the
  training loss on batches of 32 (no optimiser step; a copy of the trained
  method, so training is untouched), and the end-to-end ``fit`` throughput
  (training samples x epochs / wall time of ``fit``, validation included);
* inference latency: median milliseconds per batch of 32 (eval mode, no grad).

With ``--clue`` every backbone is also wrapped by CLUE
(:mod:`robustmsa.debias.clue`, its defaults): the checkpoint is chosen on
IID validation with the ``te`` rule, tau on IID validation; rows report
``te`` on the IID test and ``tie`` on the OOD test (all modes are in the JSON).

Usage::

    python benchmarks/backbones.py --overwrite          # all models, 3 seeds, config epochs (replaces the stored results)
    python benchmarks/backbones.py --epochs 10 --clue --out runs/b   # fewer epochs, plus CLUE rows
    python benchmarks/backbones.py --quick              # small corpus, 2 epochs, 1 seed (smoke run)
    python benchmarks/backbones.py --epochs 10 --models misa --update   # re-run one model, keep the others' rows
    python benchmarks/backbones.py --merge runs/a runs/b --out benchmarks/results --overwrite   # join runs made in parallel

Writes ``<out>/backbones.json`` and ``<out>/backbones.md`` after every
model (atomically), so a long run can be watched and interrupted.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from robustmsa.config import ExperimentConfig, check_seeds, load_config
from robustmsa.data.dataset import DataBundle, MultimodalSplit, make_loader
from robustmsa.data.synthetic import SyntheticConfig, generate_corpus
from robustmsa.errors import ConfigError, RobustMSAError
from robustmsa.evaluation.protocols import run_seeds
from robustmsa.evaluation.report import markdown_table, write_json, write_text_atomic
from robustmsa.experiment import build_method
from robustmsa.method import Method
from robustmsa.provenance import environment
from robustmsa.training.fit import TrainConfig, evaluate, fit

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("text_only", "lf_dnn", "tfn", "ef_lstm", "lmf", "mfn", "graph_mfn", "mfm", "mctn", "mult", "bbfn", "tfr_net", "misa", "mmim", "self_mm", "tetfn", "mag", "cenet", "text_centric")
METRICS = ("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Mult_acc_7", "MAE", "Corr")
BATCH = 32


def training_throughput(method: Method, split: MultimodalSplit, batches: int = 10) -> float:
    """Samples/s of forward + backward of the training loss on batches of 32 (a copy of ``method``; 1 warm-up batch)."""
    probe = copy.deepcopy(method).train()
    loader = list(make_loader(split, BATCH, shuffle=True, seed=0))
    seen, elapsed = 0, 0.0
    for i in range(batches + 1):
        batch = loader[i % len(loader)]
        start = time.perf_counter()
        probe.training_loss(batch, probe.phases[0])["loss"].backward()
        probe.zero_grad(set_to_none=True)
        if i:  # the first batch warms up
            elapsed += time.perf_counter() - start
            seen += len(batch)
    return seen / elapsed


@torch.no_grad()
def inference_latency_ms(method: Method, split: MultimodalSplit, mode: str, batches: int = 20) -> float:
    """Median milliseconds of ``method.predict`` per batch of 32 (eval mode; 2 warm-up batches)."""
    was_training = method.training
    method.eval()
    times = []
    loader = list(make_loader(split, BATCH))
    try:
        for i in range(batches + 2):
            batch = loader[i % len(loader)]
            start = time.perf_counter()
            method.predict(batch, mode)
            if i >= 2:
                times.append(1000 * (time.perf_counter() - start))
    finally:
        method.train(was_training)
    return statistics.median(times)


def run_model(config: ExperimentConfig, bundle: DataBundle, train_cfg: TrainConfig, seeds: Sequence[int], clue: bool) -> dict[str, Any]:
    """Train/evaluate one backbone (optionally wrapped by CLUE) for each seed; per-seed results and mean +- std."""
    if clue:
        config = config.model_copy(update={"method": config.method.model_copy(update={"name": "clue", "params": {}})})
        train_cfg = dataclasses.replace(train_cfg, valid_mode="te")
    iid_mode, ood_mode = ("te", "tie") if clue else ("factual", "factual")

    def one_seed(seed: int) -> dict[str, Any]:
        method = build_method(config, bundle, seed)
        start = time.perf_counter()
        result = fit(method, bundle, train_cfg, seed=seed)
        fit_seconds = time.perf_counter() - start
        calibration = method.calibrate(bundle)
        modes = ("te", "tie") if clue else ("factual",)
        metrics = {name: evaluate(method, bundle[name], modes) for name in ("test", "test_ood")}
        return {
            "iid": metrics["test"][iid_mode],
            "ood": metrics["test_ood"][ood_mode],
            "metrics": metrics,
            "calibration": calibration,
            "epochs": result.epochs,
            "best_valid": result.best_score,
            "param_count": sum(p.numel() for p in method.backbone.parameters() if p.requires_grad),
            "method_param_count": sum(p.numel() for p in method.parameters() if p.requires_grad),
            "train_samples_per_s": training_throughput(method, bundle["train"]),
            "fit_samples_per_s": len(bundle["train"]) * max(result.epochs, 1) / fit_seconds,
            "fit_seconds": fit_seconds,
            "latency_ms_per_batch": inference_latency_ms(method, bundle["test"], iid_mode),
        }

    results = run_seeds(one_seed, seeds)
    results["backbone"] = config.backbone.model_dump(mode="json")
    results["method"] = config.method.model_dump(mode="json")
    results["train"] = dataclasses.asdict(train_cfg)
    return results


def _mean_std(value: dict[str, float], digits: int) -> str:
    text = f"{value['mean']:.{digits}f}"
    return text + (f" ± {value['std']:.{digits}f}" if value["n"] > 1 and value["std"] > 0 else "")


def markdown_report(data: dict[str, Any]) -> str:
    """Three tables (IID test, OOD test, cost) with mean +- std over seeds."""
    rows = data["models"]
    aggregate = {name: r["aggregate"] for name, r in rows.items()}
    head = (
        "# Backbone zoo on the generated default corpus\n\n"
        f"Seeds: {data['seeds']}; max epochs: {data['max_epochs']} (early stopping on IID validation MAE, patience from the configs); "
        f"{data['machine']['threads']} CPU thread(s) on {data['machine']['platform']}. "
        f"Corpus: {data['corpus']['sizes']}. Values: mean ± std over seeds; accuracies and F1 in %.\n"
        "`+ CLUE` rows: `te` on the IID test, `tie` on the OOD test (tau chosen on IID validation). They are CLUE on the continuous"
        " labels, an extension beyond the paper (which is classification only): there TIE reduces to the multimodal branch minus a"
        " constant. CLUE in the paper's 2-class / 7-class setting is measured by `benchmarks/clue.py` (`clue_synthetic.md`).\n\n"
    )
    iid = markdown_table({n: a["iid"] for n, a in aggregate.items()}, METRICS, row_header="IID test (test)")
    ood = markdown_table({n: a["ood"] for n, a in aggregate.items()}, METRICS, row_header="OOD test (test_ood)")
    cost_columns = {"param_count": 0, "method_param_count": 0, "train_samples_per_s": 0, "fit_samples_per_s": 0, "latency_ms_per_batch": 1, "epochs": 1}
    cost_rows = {n: {c: _mean_std(a[c], digits) for c, digits in cost_columns.items()} for n, a in aggregate.items()}
    cost = markdown_table(cost_rows, list(cost_columns), row_header="cost (batch 32)")
    legend = (
        "\n`param_count`: backbone parameters; `method_param_count`: with the method's own branches (CLUE's text branch). "
        "`train_samples_per_s`: forward + backward of the training loss; `fit_samples_per_s`: training samples x epochs / "
        "wall time of `fit` (validation included); `latency_ms_per_batch`: median inference time per batch of 32.\n"
    )
    return head + "## IID test\n\n" + iid + "\n## OOD test\n\n" + ood + "\n## Cost\n\n" + cost + legend


def merge_runs(folders: Sequence[Path]) -> dict[str, Any]:
    """One result from the ``backbones.json`` of runs made with the same corpus, seeds, epochs and threads (e.g. in parallel).

    Rows are ordered as :data:`MODELS` (plain rows first, then ``+ CLUE`` rows); a model in two runs is an error.
    """
    runs = [json.loads((Path(f) / "backbones.json").read_text(encoding="utf-8")) for f in folders]
    if not runs:
        raise ConfigError("--merge needs at least one folder")
    same = ("corpus", "seeds", "max_epochs")
    for folder, run in zip(folders, runs):
        if any(run[k] != runs[0][k] for k in same) or run["machine"]["threads"] != runs[0]["machine"]["threads"]:
            raise ConfigError(f"{folder}/backbones.json: different corpus, seeds, epochs or threads from {folders[0]}/backbones.json")
    models: dict[str, Any] = {}
    for folder, run in zip(folders, runs):
        for name, row in run["models"].items():
            if name in models:
                raise ConfigError(f"{folder}/backbones.json: model '{name}' is in two runs")
            models[name] = row
    return {**runs[0], "models": ordered(models), "merged_from": [str(f) for f in folders]}


def ordered(models: dict[str, Any]) -> dict[str, Any]:
    """Rows ordered as :data:`MODELS`, plain rows first, then ``+ CLUE`` rows (others last, as they came)."""
    order = [*MODELS, *(f"{m} + CLUE" for m in MODELS)]
    return {n: models[n] for n in sorted(models, key=lambda n: order.index(n) if n in order else len(order))}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: 0 1 2; --quick: 0)")
    parser.add_argument("--epochs", type=int, default=None, help="max epochs (default: from each config; --quick: 2)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help=f"backbones (default: {' '.join(MODELS)})")
    parser.add_argument("--quick", action="store_true", help="small corpus (SyntheticConfig.small()), 2 epochs, seed 0")
    parser.add_argument("--clue", action="store_true", help="also run every backbone wrapped by CLUE with its defaults")
    parser.add_argument("--configs", type=Path, default=ROOT / "configs" / "backbones", help="folder of <model>.yaml configs")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: benchmarks/results, --quick: benchmarks/results/quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--update", action="store_true", help="keep the other models' rows of an existing <out>/backbones.json run with the same settings")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, help="merge the backbones.json of these run folders into --out (no training)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing <out>/backbones.json (without it, only --update may write into one)")
    args = parser.parse_args(argv)
    if args.seeds is not None:
        try:
            check_seeds(args.seeds)
        except ValueError as exc:
            raise ConfigError(f"--seeds: {exc}") from None
    out = args.out or (ROOT / "benchmarks" / "results" / ("quick" if args.quick and not args.merge else ""))
    previous = out / "backbones.json"
    if previous.is_file() and not args.overwrite and not (args.update and not args.merge):
        raise ConfigError(f"{previous} already exists: pass --update to re-run some models and keep the others' rows, or --overwrite to replace it")
    if args.merge:
        merged = merge_runs(args.merge)
        write_json(out / "backbones.json", merged)
        write_text_atomic(out / "backbones.md", markdown_report(merged))
        return merged

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    configs = {name: load_config(args.configs / f"{name}.yaml") for name in args.models}
    corpus_cfg = SyntheticConfig.small() if args.quick else SyntheticConfig()
    bundle = generate_corpus(corpus_cfg)
    data: dict[str, Any] = {
        "corpus": {"config": corpus_cfg.to_dict(), "sizes": {k: len(v) for k, v in bundle.splits.items()}, "dims": bundle.dims()},
        "seeds": seeds,
        "max_epochs": args.epochs or (2 if args.quick else "from configs"),
        "machine": {"threads": args.threads, **environment()},
        "models": {},
    }
    if args.update and previous.is_file():
        old = json.loads(previous.read_text(encoding="utf-8"))
        same = ("corpus", "seeds", "max_epochs")
        if any(old.get(k) != json.loads(json.dumps(data[k])) for k in same) or old["machine"]["threads"] != args.threads:
            raise ConfigError(f"{previous}: --update needs the same corpus, seeds, epochs and threads as the existing results")
        data["models"] = old["models"]
    variants = [(name, False) for name in args.models] + ([(name, True) for name in args.models] if args.clue else [])
    for name, clue in variants:
        config = configs[name]
        train_cfg = dataclasses.replace(config.train.to_train_config(), progress=False)
        if args.epochs or args.quick:
            train_cfg = dataclasses.replace(train_cfg, max_epochs=args.epochs or 2)
        label = f"{name} + CLUE" if clue else name
        start = time.perf_counter()
        data["models"] = ordered({**data["models"], label: run_model(config, bundle, train_cfg, seeds, clue)})
        agg = data["models"][label]["aggregate"]
        print(f"{label}: IID Acc-2 {agg['iid']['Has0_acc_2']['mean']:.3f}, OOD Acc-2 {agg['ood']['Has0_acc_2']['mean']:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
        write_json(out / "backbones.json", data)
        write_text_atomic(out / "backbones.md", markdown_report(data))
    return data


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except RobustMSAError as exc:
        sys.exit(f"error: {exc}")
