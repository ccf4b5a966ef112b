"""Compare finished training runs on the same test data: paired seed by seed, with a bootstrap over test samples.

Two ``robustmsa train`` runs (TFN against TFN + CLUE, a config against its searched version, ...) are compared
on the seeds they share: each model's metrics as mean +- std over those seeds, and each one minus the reference,
seed by seed, with on how many seeds it is better (:func:`~robustmsa.evaluation.protocols.paired_differences`).
That spread is the training-seed noise. The other noise is the test set's: a few hundred clips give an accuracy
that another draw of clips would move by a point or two. With ``bootstrap`` resamples, the saved models of every
seed predict the test splits once, the test samples are drawn again with replacement (whole videos where the data
groups clips by video, since clips of one speaker are not independent), and each difference, averaged over the
seeds, is recomputed per draw: its percentile interval is the test-sampling uncertainty of the difference.

A run is compared in each of its inference modes (CLUE's ``te`` and ``tie`` are two entries, ``run/te`` and
``run/tie``; a run with one mode is one entry, named as the run). Only splits that hold the same samples in every
run (content fingerprints recorded when they trained) are compared; models trained on different training data
may be compared on the same test data, and the report says so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robustmsa.errors import ConfigError, DataError, RobustMSAError
from robustmsa.evaluation.protocols import RUN_SETTINGS, check_numbers, mean_std, paired_differences, read_json_file
from robustmsa.evaluation.report import PERCENT_METRICS, format_value, interval_plot, markdown_table, write_results, write_text_atomic
from robustmsa.metrics import single_metric, task_metrics

#: The validation criterion's row name in a comparison (not a split: what each run chose its checkpoints by).
VALID = "valid (checkpoint criterion)"


@dataclass(frozen=True)
class Run:
    """A finished ``robustmsa train`` folder: its ``results.json`` and the content fingerprints of the splits it
    was trained and evaluated on."""

    name: str
    folder: Path
    results: dict[str, Any]
    fingerprints: dict[str, str]

    def entries(self) -> dict[str, str]:
        """Entry name -> inference mode: the run's name when it has one mode, ``name/mode`` per mode otherwise."""
        modes = list(dict.fromkeys(mode for seed in self.results["per_seed"].values() for split in seed["metrics"].values() for mode in split))
        return {self.name: modes[0]} if len(modes) == 1 else {f"{self.name}/{mode}": mode for mode in modes}


def read_run(spec: str | Path) -> Run:
    """The run named by ``spec``: a folder written by ``robustmsa train``, or ``NAME=FOLDER`` (default name: the
    folder's). A folder without ``results.json`` (not a finished run) or without a record of its data is refused."""
    text = str(spec)
    name, sep, folder_text = text.partition("=")
    if not sep or Path(text).is_dir():  # a folder whose own name holds '='
        name, folder_text = "", text
    folder = Path(folder_text)
    name = name or folder.resolve().name
    results = read_json_file(folder / "results.json")
    if results is None:
        raise ConfigError(f"{folder}: not a finished `robustmsa train` run (no results.json); run the training into it to the end first")
    if not isinstance(results, dict) or not isinstance(results.get("per_seed"), dict) or not results["per_seed"]:
        raise DataError(str(folder / "results.json"), "per_seed", "missing or empty; expected the results of `robustmsa train`")
    shape = None
    for seed, result in results["per_seed"].items():
        try:
            check_numbers(result, "metrics", "best_valid", where=f"per_seed.{seed}")
        except ValueError as exc:
            raise DataError(str(folder / "results.json"), None, f"{exc}; expected the results of `robustmsa train`") from None
        scored = {split: list(modes) for split, modes in result["metrics"].items()}
        if shape is not None and scored != shape:
            raise DataError(str(folder / "results.json"), f"per_seed.{seed}.metrics", f"holds splits and modes {scored}; the first seed holds {shape}")
        shape = scored
    settings = read_json_file(folder / RUN_SETTINGS)
    if not isinstance(settings, dict) or not isinstance(settings.get("splits"), dict):
        raise DataError(str(folder / RUN_SETTINGS), "splits", "missing; the comparison needs the record of the data the run used (train it again with this version)")
    return Run(name, folder, results, dict(settings["splits"]))


def _config(run: Run) -> dict[str, Any]:
    config = run.results.get("config")
    if not isinstance(config, dict):
        raise DataError(str(run.folder / "results.json"), "config", "missing; expected the config the run was trained with")
    return config


def _task_kind(metrics: Mapping[str, Any]) -> str:
    return "regression" if "MAE" in metrics else "classification" if "Weighted_F1" in metrics else "multilabel"


def _monitor(run: Run) -> str:
    """The metric the run chose its checkpoints by, on validation."""
    from robustmsa.training.fit import TrainConfig

    first = next(iter(run.results["per_seed"].values()))["metrics"]
    metrics = next(iter(next(iter(first.values())).values()))
    train = _config(run).get("train", {})
    return TrainConfig(monitor=train.get("monitor"), monitor_mode=train.get("monitor_mode")).monitor_spec(_task_kind(metrics))[0]


def _shared(runs: Sequence[Run], requested: Sequence[str] | None) -> tuple[list[str], list[str], list[str]]:
    """``(seeds, splits, notes)``: the seeds all runs have, and the test splits all runs scored on the same data."""
    notes = []
    seeds = [s for s in runs[0].results["per_seed"] if all(s in run.results["per_seed"] for run in runs)]
    if not seeds:
        have = ", ".join(f"{run.name}: {list(run.results['per_seed'])}" for run in runs)
        raise ConfigError(f"the runs share no seed ({have}): a paired comparison needs the same seeds")
    for run in runs:
        if extra := [s for s in run.results["per_seed"] if s not in seeds]:
            notes.append(f"{run.name}'s seeds {extra} are left out: not every run has them.")
    scored = [list(run.results["per_seed"][seeds[0]]["metrics"]) for run in runs]
    splits = [name for name in scored[0] if all(name in names for names in scored)]
    for name in requested or ():
        if name not in splits:
            raise ConfigError(f"--split '{name}': not a split every run was scored on; common: {splits}")
    splits = list(requested or splits)
    if not splits:
        raise ConfigError(f"the runs were scored on no common split ({', '.join(f'{run.name}: {names}' for run, names in zip(runs, scored))})")
    for name in splits:
        prints = {run.name: run.fingerprints.get(name) for run in runs}
        if len(set(prints.values())) > 1 or None in prints.values():
            differ = [n for n, p in prints.items() if p != prints[runs[0].name]]
            raise ConfigError(f"split '{name}' holds other samples in run {differ[0]} than in run {runs[0].name}: a comparison needs the same test data; pass --split for the splits they share")
    if len({run.fingerprints.get("train") for run in runs}) > 1:
        notes.append("The runs were trained on different training data (compared on the same test data).")
    return seeds, splits, notes


def compare_runs(runs: Sequence[Run], *, reference: str | None = None, splits: Sequence[str] | None = None, bootstrap: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """The comparison described in the module docstring, as a JSON-ready dict (see :func:`comparison_report`).

    ``reference``: the entry (or run, for its first mode) the others are paired against; default the first run's
    first entry. ``bootstrap``: resamples of the test samples (0: the recorded metrics only; no data or model is
    read). ``seed``: the resampling's random seed."""
    names = [run.name for run in runs]
    if len(runs) < 2:
        raise ConfigError("a comparison needs at least two runs (--run A --run B)")
    if len(set(names)) != len(names):
        raise ConfigError(f"two runs are named alike ({names}): name them, e.g. --run base=runs/a --run clue=runs/b")
    if not 0.5 <= level < 1.0:
        raise ConfigError(f"the confidence level must be in [0.5, 1); got {level}")
    entries = {entry: (run, mode) for run in runs for entry, mode in run.entries().items()}
    if len(entries) != sum(len(run.entries()) for run in runs):
        raise ConfigError(f"two entries are named alike ({[e for run in runs for e in run.entries()]}): rename a run with NAME=FOLDER")
    by_run = {run.name: next(iter(run.entries())) for run in runs}
    reference = by_run.get(reference, reference) if reference is not None else next(iter(entries))
    if reference not in entries:
        raise ConfigError(f"--reference '{reference}': not one of the compared runs or entries: {list(entries)}")
    seeds, split_names, notes = _shared(runs, splits)
    chosen_on = {run.name: [s for s in run.results.get("chosen_on", []) if s in split_names] for run in runs}
    notes += [f"{name} chose checkpoints or inference parameters on {marked}: not a test result there." for name, marked in chosen_on.items() if marked]

    out: dict[str, Any] = {
        "runs": {run.name: str(run.folder) for run in runs},
        "entries": {entry: {"run": run.name, "mode": mode} for entry, (run, mode) in entries.items()},
        "reference": reference,
        "seeds": seeds,
        "splits": {},
        "notes": notes,
    }
    for name in split_names:
        per_seed = {s: {entry: {"metrics": run.results["per_seed"][s]["metrics"][name][mode]} for entry, (run, mode) in entries.items()} for s in seeds}
        metrics = list(per_seed[seeds[0]][reference]["metrics"])
        out["splits"][name] = {
            "table": {entry: mean_std(per_seed[s][entry]["metrics"] for s in seeds) for entry in entries},
            "minus_reference": paired_differences(per_seed, reference, metrics, key="metrics"),
        }
    out["validation"] = _validation(runs, seeds, entries[reference][0].name)
    if bootstrap:
        out["bootstrap"] = _bootstrap(runs, entries, reference, seeds, split_names, bootstrap, level, seed)
        for name, intervals in out["bootstrap"].pop("intervals").items():
            for entry, by_metric in intervals.items():
                for metric, interval in by_metric.items():
                    out["splits"][name]["minus_reference"][entry][metric]["interval"] = interval
    return out


def _validation(runs: Sequence[Run], seeds: list[str], reference: str) -> dict[str, Any]:
    """The checkpoint criterion on validation, per run: what each run chose by, and so the only column to choose a
    run by. Compared only where every run chose on the same metric and the same validation samples."""
    monitors = {run.name: _monitor(run) for run in runs}
    valid = {run.name: _config(run).get("train", {}).get("valid_split", "valid") for run in runs}
    prints = {run.fingerprints.get(valid[run.name]) for run in runs}
    if len(set(monitors.values())) > 1 or len(prints) > 1 or None in prints:
        return {"compared": False, "reason": f"the runs chose checkpoints by {monitors} on {valid}, not one metric on the same validation samples"}
    metric = monitors[runs[0].name]
    per_seed = {s: {run.name: {"v": {metric: run.results["per_seed"][s]["best_valid"]}} for run in runs} for s in seeds}
    return {
        "compared": True,
        "metric": metric,
        "split": valid[runs[0].name],
        "table": {run.name: mean_std(per_seed[s][run.name]["v"] for s in seeds) for run in runs},
        "minus_reference": paired_differences(per_seed, reference, [metric], key="v"),
    }


def _units(groups: Sequence[str | None]) -> tuple[list[np.ndarray], str]:
    """The resampling units of a split: whole groups (videos) when the samples are grouped, single samples otherwise."""
    if any(g in (None, "") for g in groups) or len(set(groups)) in (1, len(groups)):
        return [np.array([i]) for i in range(len(groups))], "sample"
    index: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        index.setdefault(str(g), []).append(i)
    return [np.array(members) for members in index.values()], "group"


def bootstrap_differences(
    predictions: Mapping[str, Sequence[Any]],
    truth: np.ndarray,
    groups: Sequence[str | None],
    task: Any,
    reference: str,
    resamples: int,
    level: float,
    rng: np.random.Generator,
    metrics: Sequence[str] | None = None,
    *,
    conditions: bool = False,
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, Any]]:
    """Percentile intervals of each entry's difference to ``reference``, averaged over the seeds, over ``resamples``
    draws of one split's samples with replacement (whole groups where grouped, :func:`_units`); the same draws for
    every entry and seed. ``predictions[entry]``: per seed, in the same seed order for every entry, the method's
    outputs for the split (what :func:`~robustmsa.training.fit.predict` returns); with ``conditions``, per seed a
    sequence of such outputs, one per condition the split was scored under (e.g. the missing rates of a sweep), and
    a metric is its mean over the conditions. Returns ``({entry: {metric: {'low', 'high', 'finite'}}}, {'unit',
    'count'})``; 'finite' counts the draws where the metric was defined. ``metrics``: only these
    (:func:`~robustmsa.metrics.single_metric`, fast for accuracies, MAE and mAP); default all the task's."""

    def one(pred: np.ndarray, idx: np.ndarray) -> dict[str, float]:
        if metrics is None:
            return task_metrics(pred[idx], truth[idx], task)
        return {m: single_metric(pred[idx], truth[idx], task, m) for m in metrics}

    def score(pred: Any, idx: np.ndarray) -> dict[str, float]:
        if not conditions:
            return one(pred, idx)
        each = [one(p, idx) for p in pred]
        return {m: float(np.mean([e[m] for e in each])) for m in each[0]}

    units, kind = _units(groups)
    others = [e for e in predictions if e != reference]
    draws: dict[str, dict[str, list[float]]] = {e: {} for e in others}
    for _ in range(resamples):
        idx = np.concatenate([units[k] for k in rng.integers(len(units), size=len(units))])
        scores = {e: [score(pred, idx) for pred in predictions[e]] for e in predictions}
        for e in others:
            for metric in scores[reference][0]:
                diff = np.mean([mine[metric] - theirs[metric] for mine, theirs in zip(scores[e], scores[reference])])
                draws[e].setdefault(metric, []).append(float(diff))
    tail = 100 * (1 - level) / 2
    intervals: dict[str, dict[str, dict[str, Any]]] = {}
    for e in others:
        intervals[e] = {}
        for metric, values in draws[e].items():
            finite = np.asarray(values)[np.isfinite(values)]
            low, high = np.percentile(finite, [tail, 100 - tail]) if finite.size else (math.nan, math.nan)
            intervals[e][metric] = {"low": float(low), "high": float(high), "finite": int(finite.size)}
    return intervals, {"unit": kind, "count": len(units)}


def recorded_predictions(values: Any, n: int, source: Path, field: str, split: str) -> np.ndarray:
    """Per-sample predictions a protocol recorded for a bootstrap, as an array: a DataError naming ``source`` and
    ``field`` unless they are ``n`` finite predictions (one per sample of ``split``)."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        array = np.empty(0)
    if array.ndim == 0 or len(array) != n or not np.isfinite(array).all():
        raise DataError(str(source), field, f"is not one finite prediction per sample of split '{split}' ({n}); delete this file to run that part again")
    return array


def _bootstrap(runs: Sequence[Run], entries: Mapping[str, tuple[Run, str]], reference: str, seeds: list[str], splits: list[str], resamples: int, level: float, seed: int) -> dict[str, Any]:
    """:func:`bootstrap_differences` on each split, from the runs' saved models."""
    predictions, data = _predictions(runs, entries, seeds, splits)
    rng = np.random.default_rng(seed)
    intervals, units = {}, {}
    for name in splits:
        truth, groups, task = data[name]
        by_entry = {e: [predictions[e][s][name] for s in seeds] for e in entries}
        intervals[name], units[name] = bootstrap_differences(by_entry, truth, groups, task, reference, resamples, level, rng)
    return {"resamples": resamples, "level": level, "seed": seed, "units": units, "intervals": intervals}


def _predictions(runs: Sequence[Run], entries: Mapping[str, tuple[Run, str]], seeds: list[str], splits: list[str]) -> tuple[dict, dict]:
    """Each entry's predictions ``{entry: {seed: {split: array}}}`` by the runs' saved models, and per split
    ``(truth, groups, task)``. The data is read as each run's config reads it and must be the data the run was
    scored on (same fingerprints); the models must reproduce the metrics the run recorded."""
    from robustmsa.config import load_config
    from robustmsa.experiment import load_data, load_model
    from robustmsa.training.fit import predict

    bundles: dict[str, Any] = {}
    predictions: dict[str, dict[str, dict[str, np.ndarray]]] = {e: {s: {} for s in seeds} for e in entries}
    data: dict[str, tuple[np.ndarray, list[str | None], Any]] = {}
    for run in runs:
        config = load_config(run.folder / "config.yaml")
        key = config.data.model_dump_json()
        if key not in bundles:
            try:
                bundles[key] = load_data(config)
            except RobustMSAError as exc:
                raise ConfigError(f"{exc} (the bootstrap reads the data of run '{run.name}'; --bootstrap 0 compares the recorded metrics only)") from None
        bundle = bundles[key]
        for name in splits:
            if name not in bundle or bundle[name].fingerprint() != run.fingerprints[name]:
                problem = f"split '{name}' is not the data the run was scored on (missing or changed since); the bootstrap needs it: restore it, or pass --bootstrap 0"
                raise DataError(str(run.folder / "config.yaml"), "data", problem)
            split = bundle[name]
            data.setdefault(name, (split.labels(), [s.group for s in split], split.task))
        for s in seeds:
            path = run.folder / f"seed_{s}" / "model.pt"
            method = load_model(path, config, bundle)
            for entry, (owner, mode) in entries.items():
                if owner is not run:
                    continue
                for name in splits:
                    pred = predict(method, bundle[name], mode)
                    _check_reproduced(path, name, mode, task_metrics(pred, data[name][0], data[name][2]), run.results["per_seed"][s]["metrics"][name][mode])
                    predictions[entry][s][name] = pred
    return predictions, data


def _check_reproduced(path: Path, split: str, mode: str, now: Mapping[str, float], recorded: Mapping[str, Any]) -> None:
    for metric, value in now.items():
        was = recorded.get(metric)
        same = (was is None and not math.isfinite(value)) or (was is not None and math.isclose(value, float(was), rel_tol=1e-5, abs_tol=1e-6))
        if not same:
            raise DataError(
                str(path), None, f"does not reproduce the recorded {metric} on split '{split}' in mode '{mode}' ({value:.6g}; results.json: {was}): "
                "the folder mixes two runs, or the data changed; run the training again, or pass --bootstrap 0"
            )


def interval_text(interval: Mapping[str, Any] | None, metric: str) -> str:
    """`` [low, high]`` of a bootstrap interval as reports show the metric (points for accuracies), with ``*`` where it
    excludes 0; empty without an interval."""
    if interval is None:
        return ""
    scale, digits = (100.0, 2) if metric in PERCENT_METRICS else (1.0, 3)
    low, high = (scale * interval[k] for k in ("low", "high"))
    return f" [{low:+.{digits}f}, {high:+.{digits}f}]" + ("*" if low > 0 or high < 0 else "")


def difference_text(value: Mapping[str, Any], metric: str) -> str:
    """A paired difference (:func:`~robustmsa.evaluation.protocols.paired_differences`) as reports show it: signed mean
    +- std, on how many seeds better, and its bootstrap interval (``value["interval"]``) where it has one."""
    sign = "+" if value["mean"] >= 0 else ""
    return f"{sign}{format_value(value, metric)} ({value['better']}/{value['n']}){interval_text(value.get('interval'), metric)}"


def comparison_report(comparison: Mapping[str, Any]) -> str:
    """Markdown: per split, every entry's mean +- std over the shared seeds, then each one minus the reference."""
    runs = ", ".join(f"{name} ({folder})" for name, folder in comparison["runs"].items())
    lines = [
        "# Comparison\n",
        f"Runs: {runs}. Seeds compared: {comparison['seeds']}. Reference: **{comparison['reference']}**.\n",
        "Rows: mean ± std over the seeds. '− reference' rows: the difference seed by seed (same seed, same test samples), "
        "its mean ± std, and in parentheses on how many seeds the entry is better (lower MAE, higher otherwise).",
    ]
    boot = comparison.get("bootstrap")
    if boot:
        units = "; ".join(f"{name}: {u['count']} {'videos' if u['unit'] == 'group' else 'samples'}" for name, u in boot["units"].items())
        lines.append(
            f"Square brackets: the {boot['level']:.0%} interval of the difference (averaged over the seeds) over {boot['resamples']} bootstrap draws "
            f"of the test data ({units}), the test-sampling noise; * where it excludes 0."
        )
    else:
        lines.append("No bootstrap over test samples (--bootstrap 0): the ± is the seed spread only, not the test-sampling noise.")
    lines += [f"\n{note}" for note in comparison["notes"]]
    valid = comparison["validation"]
    if valid["compared"]:
        metric = valid["metric"]
        rows = {**valid["table"], **{f"{name} − reference": {metric: difference_text(d[metric], metric)} for name, d in valid["minus_reference"].items()}}
        lines += [f"\n## {VALID}: {metric} on '{valid['split']}'\n", "What each run chose its checkpoints by: the column to choose between the runs by.\n"]
        lines.append(markdown_table(rows, [metric], row_header="run"))
    else:
        lines.append(f"\nValidation criterion not compared: {valid['reason']}.")
    for name, entry in comparison["splits"].items():
        metrics = list(entry["table"][comparison["reference"]])
        diffs = {f"{e} − reference": {m: difference_text(d[m], m) for m in metrics} for e, d in entry["minus_reference"].items()}
        lines += [f"\n## {name}\n", markdown_table({**entry["table"], **diffs}, metrics, row_header="entry")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).rstrip("\n") + "\n"


def plot_differences(path: Path, comparison: Mapping[str, Any]) -> Path:
    """Each entry minus the reference on the splits' first metric (the two-class accuracy, or Acc): the mean
    difference, each seed's, and the bootstrap interval where computed; one panel per split."""
    panels, units = {}, set()
    for name, entry in comparison["splits"].items():
        metric = next(iter(entry["table"][comparison["reference"]]))
        scale = 100.0 if metric in PERCENT_METRICS else 1.0  # points, as the report shows them
        units.add("points" if metric in PERCENT_METRICS else "")
        panels[f"{name}: {metric}"] = {
            e: {
                "mean": scale * d[metric]["mean"],
                "values": [scale * v for v in d[metric]["per_seed"]],
                **{k: None if (bound := d[metric].get("interval", {}).get(k)) is None else scale * bound for k in ("low", "high")},
            }
            for e, d in entry["minus_reference"].items()
        }
    boot = comparison.get("bootstrap")
    interval = f"; bars: {boot['level']:.0%} bootstrap interval" if boot else ""
    xlabel = f"minus {comparison['reference']}" + (" (points)" if units == {"points"} else "")
    return interval_plot(path, panels, xlabel=xlabel, title=f"Difference to {comparison['reference']}: mean (diamond), per seed (dots){interval}")


def write_comparison(runs: Sequence[Run], out: Path, *, overwrite: bool = False, **options: Any) -> dict[str, Any]:
    """:func:`compare_runs` written to ``out/results.json``, ``out/report.md`` and ``out/differences.png``
    (:func:`plot_differences`). ``out`` may not be one of the compared runs' folders (their results would be
    replaced), and one holding results is refused unless ``overwrite``, before anything is computed."""
    from robustmsa.folders import check_out_dir, ensure_folder

    for run in runs:
        if Path(out).resolve() == run.folder.resolve():
            raise ConfigError(f"{out}: --out is the folder of run '{run.name}'; its results would be replaced: choose another folder")
    check_out_dir(out, overwrite)
    comparison = compare_runs(runs, **options)
    ensure_folder(out)
    plot_differences(Path(out) / "differences.png", comparison)
    write_text_atomic(Path(out) / "report.md", comparison_report(comparison))
    write_results(Path(out) / "results.json", comparison)
    return comparison
