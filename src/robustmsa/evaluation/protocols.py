"""Evaluation protocols shared by every method: multi-seed runs and aggregation.

A protocol returns plain nested dicts ``{row: {column: value}}`` so that
:mod:`robustmsa.evaluation.report` can write them as JSON and Markdown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

Nested = Mapping[str, Any]


def mean_std(runs: Iterable[Nested]) -> dict[str, Any]:
    """Aggregate per-seed nested metric dicts into ``{..: {metric: {'mean', 'std', 'n'}}}``.

    The standard deviation is the sample standard deviation (ddof=1; 0 for one run).
    Leaves that are not numbers are dropped.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("mean_std needs at least one run")

    def walk(items: list[Any]) -> Any:
        first = items[0]
        if isinstance(first, Mapping):
            keys = [k for k in first if all(isinstance(it, Mapping) and k in it for it in items)]
            out = {k: walk([it[k] for it in items]) for k in keys}
            return {k: v for k, v in out.items() if v is not None}
        if isinstance(first, (int, float, np.floating, np.integer)) and not isinstance(first, bool):
            values = np.array([float(v) for v in items], dtype=np.float64)
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            return {"mean": float(np.mean(values)), "std": std, "n": int(len(values))}
        return None

    return walk(runs)


def run_seeds(run: Callable[[int], Nested], seeds: Iterable[int]) -> dict[str, Any]:
    """Call ``run(seed)`` for each seed; return ``{'seeds', 'per_seed', 'aggregate'}``."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("run_seeds needs at least one seed")
    per_seed = {str(seed): run(seed) for seed in seeds}
    return {"seeds": seeds, "per_seed": per_seed, "aggregate": mean_std(per_seed.values())}
