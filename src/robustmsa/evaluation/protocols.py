"""Evaluation protocols shared by every method: multi-seed runs and aggregation.

A protocol returns plain nested dicts ``{row: {column: value}}`` so that
:mod:`robustmsa.evaluation.report` can write them as JSON and Markdown.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robustmsa.errors import ConfigError, DataError
from robustmsa.evaluation.report import write_json
from robustmsa.metrics import LOWER_IS_BETTER, METRIC_NAMES
from robustmsa.provenance import environment

Nested = Mapping[str, Any]


def mean_std(runs: Iterable[Nested]) -> dict[str, Any]:
    """Aggregate per-seed nested metric dicts into ``{..: {metric: {'mean', 'std', 'n'}}}``.

    The standard deviation is the sample standard deviation (ddof=1; 0 for one run).
    Leaves that are not numbers in any run (names, lists) are dropped; a leaf that is a number in some runs and not
    in others, or a number in some runs and absent from others, is a ValueError naming it, never a silently dropped
    metric (a section present in some runs only, e.g. an analysis of one seed, is left out). ``None`` among numbers is a NaN that went through JSON (results read
    back from disk): the aggregate is then NaN, as it is for the in-memory NaN, never a crash or a dropped metric;
    a metric (:data:`~robustmsa.metrics.METRIC_NAMES`) that is None in every run is kept as NaN too.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("mean_std needs at least one run")

    def walk(items: list[Any], where: str) -> Any:
        first = items[0]
        if isinstance(first, Mapping):
            keys = [k for k in first if all(isinstance(it, Mapping) and k in it for it in items)]
            for it in items:
                for k, v in it.items() if isinstance(it, Mapping) else ():
                    if k not in keys and isinstance(v, int | float | np.floating | np.integer) and not isinstance(v, bool):
                        raise ValueError(f"'{where}.{k}' is a number in some runs and missing in others" if where else f"'{k}' is a number in some runs and missing in others")
            out = {k: walk([it[k] for it in items], f"{where}.{k}" if where else str(k)) for k in keys}
            return {k: v for k, v in out.items() if v is not None}
        numbers = [it for it in items if it is not None]
        numeric = [isinstance(v, int | float | np.floating | np.integer) and not isinstance(v, bool) for v in numbers]
        if not numbers and where.rsplit(".", 1)[-1] in METRIC_NAMES:  # NaN in every run, read back from JSON (e.g. Corr of
            return {"mean": float("nan"), "std": float("nan"), "n": len(items)}  # a constant prediction): still a metric
        if numbers and all(numeric):
            values = np.array([np.nan if v is None else float(v) for v in items], dtype=np.float64)
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            return {"mean": float(np.mean(values)), "std": std, "n": int(len(values))}
        if any(numeric):
            raise ValueError(f"'{where}' is a number in some runs and not in others: {numbers}")
        return None

    return walk(runs, "")


def run_seeds(run: Callable[[int], Nested], seeds: Iterable[int]) -> dict[str, Any]:
    """Call ``run(seed)`` for each seed; return ``{'seeds', 'per_seed', 'aggregate'}``."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("run_seeds needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct; got {seeds}")
    per_seed = {str(seed): run(seed) for seed in seeds}
    return {"seeds": seeds, "per_seed": per_seed, "aggregate": mean_std(per_seed.values())}


def paired_differences(per_seed: Mapping[str, Mapping[str, Nested]], reference: str, metrics: Sequence[str], key: str = "mean") -> dict[str, dict[str, Any]]:
    """Every model minus ``reference``, seed by seed, on ``per_seed[seed][model][key][metric]``.

    The two models of a pair saw the same seed, data and masks, so the
    seed-to-seed spread they share cancels. Returns ``{model: {metric: {'mean',
    'std', 'n', 'better', 'per_seed'}}}``: mean +- std (ddof=1) of the differences
    over the seeds, on how many seeds the model beat the reference (lower for
    :data:`robustmsa.metrics.LOWER_IS_BETTER`, higher otherwise) and each seed's
    difference, in the seeds' order (NaN where a metric was undefined).
    """
    seeds = list(per_seed)
    if not seeds or any(reference not in per_seed[s] for s in seeds):
        raise ValueError(f"reference model '{reference}' is missing from some seed")
    out: dict[str, dict[str, Any]] = {}
    for model in per_seed[seeds[0]]:
        if model == reference:
            continue
        diffs = [{m: _number(per_seed[s][model][key].get(m)) - _number(per_seed[s][reference][key].get(m)) for m in metrics} for s in seeds]
        out[model] = mean_std(diffs)
        for m in metrics:
            out[model][m]["better"] = sum((d[m] < 0) if m in LOWER_IS_BETTER else (d[m] > 0) for d in diffs)
            out[model][m]["per_seed"] = [d[m] for d in diffs]
    return out


def _number(value: Any) -> float:
    """A metric read back from JSON: NaN where it was undefined (written as null) or absent."""
    return float("nan") if value is None else float(value)


class Resumable:
    """The units of a long run (a seed; a seed's scheme or model), each recorded at ``records[key]`` with the
    ``settings[key]`` it is made with (and the :func:`~robustmsa.provenance.environment` it was computed in) once
    finished, so that a run that stopped resumes with the units it had finished. The records are read at once,
    before anything trains: a folder holding work made with other settings is refused (:func:`read_record`), and so
    is a record whose result ``check`` finds malformed (e.g. edited by hand); ``overwrite`` removes them and the
    summary files (``replaces``) of the run in ``folder`` being replaced."""

    def __init__(
        self,
        records: Mapping[Any, Path],
        settings: Mapping[Any, Mapping[str, Any]],
        overwrite: bool = False,
        *,
        folder: Path | None = None,
        shared: Mapping[str, Any] | None = None,
        check: Callable[[Mapping[str, Any]], None] | None = None,
        replaces: Sequence[str] = ("results.json", "report.md"),
    ) -> None:
        self.records, self.settings = dict(records), dict(settings)
        if folder is not None and shared is not None:
            claim_folder(folder, shared, overwrite)
            if overwrite:  # what this run replaces goes now, not when it ends: stopped part-way, it resumes without --overwrite
                for path in [*(Path(folder) / name for name in replaces), *self.records.values()]:
                    path.unlink(missing_ok=True)
        self.finished = {} if overwrite else {key: result for key, path in self.records.items() if (result := read_record(path, self.settings[key], check)) is not None}

    def run(self, key: Any, compute: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
        """The recorded result of ``key``, or ``compute()`` recorded (atomically) before it is returned."""
        if key not in self.finished:
            self.finished[key] = dict(compute())
            write_json(self.records[key], {"settings": self.settings[key], "result": self.finished[key], "environment": environment()})
        return self.finished[key]


#: The file in which a resumable run records the settings all its units share.
RUN_SETTINGS = "run_settings.json"


def claim_folder(folder: Path, shared: Mapping[str, Any], overwrite: bool = False) -> None:
    """Record in ``folder/run_settings.json`` the settings every unit of a resumable run shares (its config without
    the seeds or models, the data). A folder that holds a run made with other ones is refused unless ``overwrite``,
    also when none of its units is one of this run's (e.g. other seeds): the folder would mix two runs."""
    path = Path(folder) / RUN_SETTINGS
    if not overwrite and (recorded := read_json_file(path)) is not None and recorded != json.loads(json.dumps(shared)):
        raise ConfigError(f"{path}: this folder holds a run made with other settings; choose another --out folder or pass --overwrite")
    write_json(path, shared)


def read_json_file(path: Path) -> Any:
    """The JSON content of ``path``, None if there is no such file; a DataError naming it if it cannot be read."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(str(path), None, f"cannot be read as JSON ({exc}); delete it to run that part again") from None


def split_fingerprints(bundle: Any, names: Iterable[str]) -> dict[str, str]:
    """Content fingerprints of a bundle's splits (the data a recorded result depends on)."""
    return {name: bundle[name].fingerprint() for name in dict.fromkeys(names)}


def read_record(path: Path, settings: Mapping[str, Any], check: Callable[[Mapping[str, Any]], None] | None = None) -> dict[str, Any] | None:
    """The result recorded at ``path`` by :class:`Resumable` if there is one, so that a run that stopped resumes;
    a ConfigError if it was made with other ``settings`` (another run's work is never overwritten silently), a
    DataError naming the field if ``check(result)`` raises a ValueError (see :func:`check_numbers`)."""
    record = read_json_file(path)
    if record is None:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("result"), dict):
        raise DataError(str(path), "result", "missing; expected a record of a finished run")
    if record.get("settings") != json.loads(json.dumps(settings)):
        raise ConfigError(f"{path}: this folder holds a run made with other settings; choose another --out folder or pass --overwrite")
    if check is not None:
        try:
            check(record["result"])
        except ValueError as exc:
            raise DataError(str(path), None, f"{exc}; delete this file to run that part again") from None
    return record["result"]


def check_numbers(result: Mapping[str, Any], *fields: str, where: str = "result") -> None:
    """Each dotted ``field`` of ``result`` must be a number or a non-empty mapping whose leaves are numbers (None:
    a NaN written to JSON): a ValueError naming the first that is missing or is not, e.g. ``field 'result.mean.MAE'
    is 'abc'; expected a number``. What a protocol checks in the records it resumes from and the results it combines,
    so that an edited or foreign file is named instead of crashing the report or silently losing a metric."""
    for field in fields:
        node: Any = result
        for part in field.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise ValueError(f"field '{where}.{field}' is missing")
            node = node[part]
        _check_numeric(node, f"{where}.{field}")


def _check_numeric(node: Any, where: str) -> None:
    if isinstance(node, Mapping):
        if not node:
            raise ValueError(f"field '{where}' is empty; expected numbers")
        for key, value in node.items():
            _check_numeric(value, f"{where}.{key}")
    elif node is not None and (isinstance(node, bool) or not isinstance(node, int | float)):
        raise ValueError(f"field '{where}' is {node!r}; expected a number")
