"""Measured cost of methods: model forward passes (counted with hooks) and wall time, relative to the base.

A :class:`CostMeter` records named stages (``base_train``, ``router_train``,
``mid_infer``, ...). While a stage runs, a forward hook on every tracked
backbone inside the given modules counts the samples that pass through it
(a batch of B samples = B sample-forwards), so training stages count the
training and the validation passes that :func:`~robustmsa.training.fit.fit`
makes, and inference stages count every pass over the counterfactual inputs.
Backward passes are not counted (their cost follows the training forwards).
Backbones whose class sets ``cost_tracked = False`` (the tiny router MLP)
are not counted. A method's cost is the sum of the stages it needs (MID:
the base training plus its validation tuning), reported relative to the
base model (the paper's table 1). Wall times come from ``time.perf_counter``
on a shared machine: compare them within one run only.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from robustmsa.errors import ConfigError
from robustmsa.models.base import Backbone

logger = logging.getLogger(__name__)


@dataclass
class StageCost:
    seconds: float = 0.0
    forwards: int = 0  # samples passed through tracked backbones
    calls: int = 0  # backbone forward calls (batches)

    def __add__(self, other: StageCost) -> StageCost:
        return StageCost(self.seconds + other.seconds, self.forwards + other.forwards, self.calls + other.calls)


def tracked_backbones(*modules: nn.Module) -> list[Backbone]:
    """The outermost tracked :class:`Backbone` modules inside ``modules`` (each once, even if shared)."""
    found: dict[int, Backbone] = {}
    for root in modules:
        for module in root.modules():
            if isinstance(module, Backbone) and getattr(module, "cost_tracked", True) and id(module) not in found:
                found[id(module)] = module
    inner = {id(sub) for b in found.values() for sub in b.modules() if sub is not b}
    return [b for key, b in found.items() if key not in inner]


class CostMeter:
    """Named stages of wall time and counted sample-forwards."""

    def __init__(self) -> None:
        self.stages: dict[str, StageCost] = {}

    @contextlib.contextmanager
    def measure(self, name: str, *modules: nn.Module) -> Iterator[StageCost]:
        """Time the block and count forwards of the backbones inside ``modules``; adds to stage ``name``."""
        cost = StageCost()

        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            cost.forwards += len(inputs[0])
            cost.calls += 1

        handles = [b.register_forward_hook(hook) for b in tracked_backbones(*modules)]
        start = time.perf_counter()
        try:
            yield cost
        finally:
            cost.seconds = time.perf_counter() - start
            for handle in handles:
                handle.remove()
            self.stages[name] = self.stages.get(name, StageCost()) + cost
            logger.info("stage %s: %.1f s, %d sample-forwards", name, cost.seconds, cost.forwards)

    def total(self, stages: Sequence[str]) -> StageCost:
        missing = [s for s in stages if s not in self.stages]
        if missing:
            raise ConfigError(f"cost stages {missing} were not measured; measured: {sorted(self.stages)}")
        out = StageCost()
        for stage in stages:
            out = out + self.stages[stage]
        return out


def cost_table(meter: CostMeter, recipes: Mapping[str, Mapping[str, Sequence[str]]], *, base: str, n_test: int) -> dict[str, dict[str, float]]:
    """One row per method: ``recipes[method] = {'train': stages, 'infer': stages}``.

    Columns: absolute train / inference sample-forwards and seconds,
    inference forwards per test sample, and each relative to ``base``.
    """
    if base not in recipes:
        raise ConfigError(f"the base method '{base}' has no cost recipe")
    if n_test < 1:
        raise ConfigError(f"n_test must be >= 1, got {n_test}")
    totals = {m: (meter.total(r["train"]), meter.total(r["infer"])) for m, r in recipes.items()}
    base_train, base_infer = totals[base]

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    rows = {}
    for method, (train, infer) in totals.items():
        rows[method] = {
            "train_forwards": float(train.forwards),
            "train_seconds": train.seconds,
            "infer_forwards_per_sample": infer.forwards / n_test,
            "infer_seconds": infer.seconds,
            "train_forwards_rel": ratio(train.forwards, base_train.forwards),
            "train_time_rel": ratio(train.seconds, base_train.seconds),
            "infer_forwards_rel": ratio(infer.forwards, base_infer.forwards),
            "infer_time_rel": ratio(infer.seconds, base_infer.seconds),
        }
    return rows


#: Columns of the Markdown cost table, in order.
COST_COLUMNS = ("train_forwards_rel", "train_time_rel", "infer_forwards_per_sample", "infer_forwards_rel", "infer_time_rel", "train_seconds", "infer_seconds")
