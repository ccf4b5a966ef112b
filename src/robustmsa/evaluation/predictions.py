"""Per-sample predictions of a trained method as a CSV table, for a user's own error analysis.

One row per sample, in the split's order: ``id``, ``group``, ``truth`` (labelled splits only), then per inference
mode the prediction:

- regression: the score (``<mode>``);
- classification: the predicted class (``<mode>``) and each class's probability (``<mode>:p(<class>)``), or its
  score (``<mode>:score(<class>)``) for the modes whose outputs are debiased scores (:attr:`Method.score_modes`:
  MID's ``mid``, MRID's and MME-JD's ``routed``; they may be negative and need not sum to 1);
- multi-label: each label's probability (``<mode>:p(<label>)``); ``truth`` lists the positive labels, ``;``-joined.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from robustmsa.data.dataset import MultimodalSplit
from robustmsa.evaluation.report import write_text_atomic
from robustmsa.method import Method
from robustmsa.training.fit import predict


def _number(value: float) -> str:
    return f"{float(value):.9g}"  # 9 significant digits: a float32 reads back exactly, so metrics recomputed from the CSV match


def prediction_table(method: Method, split: MultimodalSplit, modes: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)`` of the CSV described in the module docstring."""
    task = split.task
    names = task.label_names
    header = ["id", "group"]
    columns: list[list[str]] = [split.ids, [s.group or "" for s in split]]
    if split.labelled:
        truth = split.labels()
        if task.kind == "regression":
            columns.append([_number(v) for v in truth])
        elif task.kind == "classification":
            columns.append([names[int(v)] for v in truth])
        else:
            columns.append([";".join(n for n, on in zip(names, row) if on > 0.5) for row in truth])
        header.append("truth")
    for mode in modes:
        pred = predict(method, split, mode)
        if task.kind == "regression":
            header.append(mode)
            columns.append([_number(v) for v in pred])
            continue
        if task.kind == "classification":
            header.append(mode)
            columns.append([names[int(k)] for k in np.argmax(pred, axis=1)])
        kind = "score" if mode in method.score_modes else "p"
        header += [f"{mode}:{kind}({n})" for n in names]
        columns += [[_number(v) for v in pred[:, k]] for k in range(len(names))]
    return header, [list(row) for row in zip(*columns)]


def write_predictions(path: Path, method: Method, split: MultimodalSplit, modes: Sequence[str]) -> Path:
    """Write :func:`prediction_table` to ``path`` atomically."""
    header, rows = prediction_table(method, split, modes)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_text_atomic(Path(path), buffer.getvalue())
