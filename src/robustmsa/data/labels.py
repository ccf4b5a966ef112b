"""Classification views of continuous sentiment labels (the CLUE / MMSA classification tasks).

Schemes (``y`` is the continuous label in [-3, 3]):

* ``has0``: 2 classes, negative (y < 0) vs non-negative (y >= 0).
* ``non0``: 2 classes, negative (y < 0) vs positive (y > 0); samples labelled
  exactly 0 are dropped.
* ``7class``: ``round(clip(y, -3, 3)) + 3`` in {0, ..., 6}.

The continuous label is kept in ``Sample.label`` (for case studies); the
class index goes to ``Sample.label_class`` and the bundle's task becomes a
classification task.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec
from robustmsa.errors import ConfigError, DataError

SCHEMES: dict[str, tuple[str, ...]] = {
    "has0": ("negative", "non-negative"),
    "non0": ("negative", "positive"),
    "7class": ("-3", "-2", "-1", "0", "+1", "+2", "+3"),
}
#: MMSA metric names of a scheme's classification metrics (Acc and weighted F1, truth first).
MMSA_NAMES: dict[str, dict[str, str]] = {
    "has0": {"Acc": "Has0_acc_2", "Weighted_F1": "Has0_F1_score"},
    "non0": {"Acc": "Non0_acc_2", "Weighted_F1": "Non0_F1_score"},
    "7class": {"Acc": "Mult_acc_7"},
}
#: Class index of samples that a scheme drops (``non0``: exact zeros).
DROPPED = -1


def _check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown label scheme '{scheme}'; choose one of {sorted(SCHEMES)}")
    return scheme


def classes_of(labels: object, scheme: str) -> np.ndarray:
    """Class indices (N,) int64 of continuous labels under ``scheme``; :data:`DROPPED` (-1) where dropped."""
    _check_scheme(scheme)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if not np.isfinite(y).all():
        raise ValueError("labels contain NaN or inf")
    if scheme == "has0":
        return (y >= 0).astype(np.int64)
    if scheme == "non0":
        return np.where(y == 0, DROPPED, (y > 0).astype(np.int64))
    return (np.round(np.clip(y, -3.0, 3.0)) + 3).astype(np.int64)


def mmsa_metrics(metrics: dict[str, float], scheme: str) -> dict[str, float]:
    """Classification metrics of a scheme under their MMSA names (e.g. has0 Acc -> Has0_acc_2); others dropped."""
    names = MMSA_NAMES[_check_scheme(scheme)]
    return {names[k]: v for k, v in metrics.items() if k in names}


def scheme_task(scheme: str) -> TaskSpec:
    """The classification :class:`TaskSpec` of a scheme."""
    names = SCHEMES[_check_scheme(scheme)]
    return TaskSpec(kind="classification", num_classes=len(names), label_range=None, class_names=names)


def to_classification(bundle: DataBundle, scheme: str) -> DataBundle:
    """A copy of a regression bundle whose samples carry ``label_class`` under ``scheme``.

    Every split is converted; ``non0`` drops exact-zero samples (a split left
    empty raises :class:`DataError`). ``meta['label_scheme']`` records the scheme.
    """
    task = scheme_task(scheme)
    if bundle.task.kind != "regression":
        raise DataError(bundle.name, "task", f"label scheme '{scheme}' needs continuous (regression) labels; this bundle is '{bundle.task.kind}'")
    bundle.task.check_signed(f"data '{bundle.name}': label scheme '{scheme}' would")
    splits: dict[str, MultimodalSplit] = {}
    for name, split in bundle.splits.items():
        classes = classes_of(split.labels(), scheme)
        kept = [dataclasses.replace(s, label_class=int(c)) for s, c in zip(split.samples, classes) if c != DROPPED]
        if not kept:
            raise DataError(split.source, "label", f"split '{name}' has no sample left under label scheme '{scheme}'")
        splits[name] = MultimodalSplit(kept, name=name, source=split.source, task=task)
    meta = {**bundle.meta, "label_scheme": scheme, "dropped": {n: len(bundle[n]) - len(s) for n, s in splits.items()}}
    return DataBundle(splits, task, name=f"{bundle.name}[{scheme}]", meta=meta)
