"""The one metrics module: MMSA-convention regression metrics and classification metrics.

Regression tasks get one of MMSA's two metric sets, chosen by ``TaskSpec.metric_set``. ``mosi`` (CMU-MOSI /
MOSEI, labels in [-3, 3]; ``MetricsTop.__eval_mosi_regression``):

* ``Has0_acc_2`` / ``Has0_F1_score``: negative (< 0) vs non-negative (>= 0).
* ``Non0_acc_2`` / ``Non0_F1_score``: negative vs positive, samples whose
  *true* label is exactly 0 dropped.
* ``Mult_acc_5`` / ``Mult_acc_7``: predictions and truth clipped to [-2, 2] /
  [-3, 3], then rounded to the nearest integer.
* ``MAE``; ``Corr``: Pearson correlation (0 when either side is constant).

``sims`` (CH-SIMS, labels in [-1, 1]; ``MetricsTop.__eval_sims_regression``): predictions and truth clipped
to [-1, 1], then binned, each bin closed on the right:

* ``Mult_acc_2`` / ``F1_score``: [-1, 0] vs (0, 1];
* ``Mult_acc_3``: [-1, -0.1], (-0.1, 0.1], (0.1, 1];
* ``Mult_acc_5``: [-1, -0.7], (-0.7, -0.1], (-0.1, 0.1], (0.1, 0.7], (0.7, 1];
* ``MAE``, ``Corr`` on the clipped values.

F1 scores are weighted F1 computed as scikit-learn defines it, truth first. scikit-learn is imported by the
functions that compute, so that reading a config (which imports this module) does not wait for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from robustmsa.errors import ConfigError

if TYPE_CHECKING:
    from robustmsa.data.dataset import TaskSpec

REGRESSION_METRICS = ("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_5", "Mult_acc_7", "MAE", "Corr")
SIMS_METRICS = ("Mult_acc_2", "F1_score", "Mult_acc_3", "Mult_acc_5", "MAE", "Corr")
CLASSIFICATION_METRICS = ("Acc", "Precision", "Recall", "F1", "F0.5", "Macro_F1", "Weighted_F1")
MULTILABEL_METRICS = ("Acc", "Micro_F1", "Macro_F1", "mAP")
#: Every metric name the toolkit computes (a leaf of that name is a metric wherever it appears in a result).
METRIC_NAMES = frozenset(REGRESSION_METRICS + SIMS_METRICS + CLASSIFICATION_METRICS + MULTILABEL_METRICS)
#: Inner bin edges of the SIMS class accuracies (bins closed on the right).
SIMS_BINS = {"Mult_acc_2": (0.0,), "Mult_acc_3": (-0.1, 0.1), "Mult_acc_5": (-0.7, -0.1, 0.1, 0.7)}


def metric_names(task: TaskSpec) -> tuple[str, ...]:
    """The metrics :func:`task_metrics` reports for ``task`` (what ``train.monitor`` may name)."""
    if task.kind == "regression":
        task.check_signed(f"the {task.metric_set} metrics (Acc-2, F1, Acc-k)")
        return SIMS_METRICS if task.metric_set == "sims" else REGRESSION_METRICS
    return CLASSIFICATION_METRICS if task.kind == "classification" else MULTILABEL_METRICS


def binary_accuracy(task: TaskSpec) -> str:
    """The two-class accuracy of a regression task's metric set (``Has0_acc_2``; ``Mult_acc_2`` for SIMS)."""
    return "Mult_acc_2" if task.metric_set == "sims" else "Has0_acc_2"


def check_metric(metric: str, task: TaskSpec, what: str) -> str:
    """``metric`` if :func:`task_metrics` reports it for ``task``; a ConfigError naming ``what`` otherwise
    (so that a typo fails before training, not when the metric is first looked up)."""
    names = metric_names(task)
    if metric not in names:
        scale = f" ({task.metric_set} metrics)" if task.kind == "regression" else ""
        raise ConfigError(f"{what} '{metric}' is not a metric of a {task.kind} task{scale}; choose one of {list(names)}")
    return metric


def _as_1d(values: object, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or inf")
    return array


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def regression_metrics(pred: object, truth: object) -> dict[str, float]:
    """MMSA regression metrics of continuous sentiment predictions."""
    from sklearn.metrics import accuracy_score, f1_score

    p = _as_1d(pred, "pred")
    t = _as_1d(truth, "truth")
    if p.shape != t.shape or p.size == 0:
        raise ValueError(f"pred and truth must be non-empty and of equal length, got {p.shape} and {t.shape}")
    has0_p, has0_t = p >= 0, t >= 0
    non0 = t != 0
    non0_p, non0_t = p[non0] > 0, t[non0] > 0
    result = {
        "Has0_acc_2": float(accuracy_score(has0_t, has0_p)),
        "Has0_F1_score": float(f1_score(has0_t, has0_p, average="weighted", zero_division=0)),
        "Non0_acc_2": float(accuracy_score(non0_t, non0_p)) if non0.any() else float("nan"),
        "Non0_F1_score": float(f1_score(non0_t, non0_p, average="weighted", zero_division=0)) if non0.any() else float("nan"),
        "Mult_acc_5": float(np.mean(np.round(np.clip(p, -2, 2)) == np.round(np.clip(t, -2, 2)))),
        "Mult_acc_7": float(np.mean(np.round(np.clip(p, -3, 3)) == np.round(np.clip(t, -3, 3)))),
        "MAE": float(np.mean(np.abs(p - t))),
        "Corr": _pearson(p, t),
    }
    return result


def sims_regression_metrics(pred: object, truth: object) -> dict[str, float]:
    """MMSA's CH-SIMS regression metrics (see module doc)."""
    from sklearn.metrics import f1_score

    p = np.clip(_as_1d(pred, "pred"), -1.0, 1.0)
    t = np.clip(_as_1d(truth, "truth"), -1.0, 1.0)
    if p.shape != t.shape or p.size == 0:
        raise ValueError(f"pred and truth must be non-empty and of equal length, got {p.shape} and {t.shape}")
    # Binned in float32 like MMSA (float32 tensors against the edges), so a float32 value on an edge falls in MMSA's bin.
    p32, t32 = p.astype(np.float32), t.astype(np.float32)
    bins = {name: (np.searchsorted(np.float32(edges), p32, side="left"), np.searchsorted(np.float32(edges), t32, side="left")) for name, edges in SIMS_BINS.items()}
    result = {name: float(np.mean(bp == bt)) for name, (bp, bt) in bins.items()}
    result["F1_score"] = float(f1_score(bins["Mult_acc_2"][1], bins["Mult_acc_2"][0], average="weighted", zero_division=0))
    result.update(MAE=float(np.mean(np.abs(p - t))), Corr=_pearson(p, t))
    return {name: result[name] for name in SIMS_METRICS}


def classification_metrics(pred: object, truth: object, num_classes: int | None = None) -> dict[str, float]:
    """Accuracy, precision, recall and F1 of class predictions.

    Binary tasks (two classes): Precision, Recall, F1 and F0.5 of the positive
    class 1. Multi-class: Precision/Recall/F1/F0.5 are macro averages, and
    Macro_F1 and Weighted_F1 are reported for every task. F0.5 weighs precision
    higher than recall (model selection of routers).
    """
    from sklearn.metrics import accuracy_score, f1_score, fbeta_score, precision_score, recall_score

    p = np.asarray(pred).reshape(-1).astype(np.int64)
    t = np.asarray(truth).reshape(-1).astype(np.int64)
    if p.shape != t.shape or p.size == 0:
        raise ValueError(f"pred and truth must be non-empty and of equal length, got {p.shape} and {t.shape}")
    k = num_classes if num_classes is not None else int(max(p.max(), t.max())) + 1
    binary = max(k, 2) == 2
    # Averages over the classes that occur in the truth or the predictions (scikit-learn's default): a class a
    # split lacks and no sample is predicted as has no defined F1, and counting it as 0 would penalise perfect predictions.
    labels = sorted(set(np.unique(t).tolist()) | set(np.unique(p).tolist()))
    kwargs: dict[str, object] = {"average": "binary", "pos_label": 1} if binary else {"labels": labels, "average": "macro"}
    kwargs["zero_division"] = 0
    return {
        "Acc": float(accuracy_score(t, p)),
        "Precision": float(precision_score(t, p, **kwargs)),
        "Recall": float(recall_score(t, p, **kwargs)),
        "F1": float(f1_score(t, p, **kwargs)),
        "F0.5": float(fbeta_score(t, p, beta=0.5, **kwargs)),
        "Macro_F1": float(f1_score(t, p, labels=labels, average="macro", zero_division=0)),
        "Weighted_F1": float(f1_score(t, p, labels=labels, average="weighted", zero_division=0)),
    }


def per_class_scores(pred: object, truth: object, labels: list[int], beta: float = 1.0) -> dict[str, list[float]]:
    """Per-class precision, recall, F-beta and support (lists aligned with ``labels``), plus the confusion matrix (rows: truth)."""
    from sklearn.metrics import precision_recall_fscore_support

    p = np.asarray(pred).reshape(-1).astype(np.int64)
    t = np.asarray(truth).reshape(-1).astype(np.int64)
    if p.shape != t.shape or p.size == 0:
        raise ValueError(f"pred and truth must be non-empty and of equal length, got {p.shape} and {t.shape}")
    precision, recall, fbeta, support = precision_recall_fscore_support(t, p, beta=beta, labels=labels, zero_division=0)
    confusion = [[int(np.sum((t == a) & (p == b))) for b in labels] for a in labels]
    return {"precision": precision.tolist(), "recall": recall.tolist(), "fbeta": fbeta.tolist(), "support": support.tolist(), "confusion": confusion}


def task_metrics(pred: np.ndarray, truth: np.ndarray, task: TaskSpec) -> dict[str, float]:
    """The metrics of ``task`` (:func:`metric_names`) from :meth:`Method.predict` outputs.

    ``pred`` is (N,) scores for regression and (N, C) class scores otherwise.
    """
    from sklearn.metrics import f1_score

    if task.kind == "regression":
        task.check_signed(f"the {task.metric_set} metrics (Acc-2, F1, Acc-k)")
        return sims_regression_metrics(pred, truth) if task.metric_set == "sims" else regression_metrics(pred, truth)
    scores = np.asarray(pred, dtype=np.float64)
    if not np.isfinite(scores).all():  # argmax of a NaN row is class 0: it would be scored as a prediction
        raise ValueError("pred contains NaN or inf")
    if task.kind == "classification":
        return classification_metrics(scores.argmax(axis=-1), truth, task.num_classes)
    decisions = (scores >= 0.5).astype(np.int64)
    truth = np.asarray(truth).astype(np.int64)
    return {
        "Acc": float(np.mean(decisions == truth)),
        "Micro_F1": float(f1_score(truth, decisions, average="micro", zero_division=0)),
        "Macro_F1": float(f1_score(truth, decisions, average="macro", zero_division=0)),
        "mAP": mean_average_precision(scores, truth),
    }


def single_metric(pred: np.ndarray, truth: np.ndarray, task: TaskSpec, metric: str) -> float:
    """One metric of :func:`task_metrics`, computed alone where that is cheap (classification Acc and F1,
    multi-label mAP, the regression accuracies and MAE): what a bootstrap recomputes thousands of times. Any other
    metric is taken from :func:`task_metrics`."""
    if task.kind == "regression" and metric in _FAST_REGRESSION[task.metric_set]:
        task.check_signed(f"the {task.metric_set} metrics (Acc-2, F1, Acc-k)")  # as task_metrics
        return _regression_metric(_as_1d(pred, "pred"), _as_1d(truth, "truth"), task.metric_set, metric)
    if task.kind == "classification" and metric in ("Acc", "F1"):
        scores = np.asarray(pred, dtype=np.float64)
        if not np.isfinite(scores).all():
            raise ValueError("pred contains NaN or inf")
        p, t = scores.argmax(axis=-1), np.asarray(truth).reshape(-1).astype(np.int64)
        if metric == "Acc":
            return float(np.mean(p == t))
        # F1 as classification_metrics defines it: of class 1 for two classes, else the macro average over the
        # classes in the truth or the predictions; 0 where a class has no true or predicted sample (zero_division=0)
        labels = [1] if max(task.num_classes, 2) == 2 else np.union1d(p, t).tolist()
        per_class = []
        for c in labels:
            tp, wrong = np.sum((p == c) & (t == c)), np.sum((p == c) != (t == c))
            per_class.append(2 * tp / (2 * tp + wrong) if tp + wrong else 0.0)
        return float(np.mean(per_class))
    if task.kind == "multilabel" and metric == "mAP":
        return mean_average_precision(np.asarray(pred, dtype=np.float64), np.asarray(truth).astype(np.int64))
    return task_metrics(pred, truth, task)[metric]


#: Regression metrics :func:`single_metric` computes alone, per metric set.
_FAST_REGRESSION = {"mosi": ("Has0_acc_2", "Non0_acc_2", "Mult_acc_5", "Mult_acc_7", "MAE"), "sims": ("Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "MAE")}


def _regression_metric(p: np.ndarray, t: np.ndarray, metric_set: str, metric: str) -> float:
    """One of :data:`_FAST_REGRESSION`, as :func:`regression_metrics` / :func:`sims_regression_metrics` compute it."""
    if p.shape != t.shape or p.size == 0:
        raise ValueError(f"pred and truth must be non-empty and of equal length, got {p.shape} and {t.shape}")
    if metric_set == "sims":
        p, t = np.clip(p, -1.0, 1.0), np.clip(t, -1.0, 1.0)
        if metric != "MAE":
            edges = np.float32(SIMS_BINS[metric])
            return float(np.mean(np.searchsorted(edges, p.astype(np.float32)) == np.searchsorted(edges, t.astype(np.float32))))
    if metric == "MAE":
        return float(np.mean(np.abs(p - t)))
    if metric == "Has0_acc_2":
        return float(np.mean((p >= 0) == (t >= 0)))
    if metric == "Non0_acc_2":
        non0 = t != 0
        return float(np.mean((p[non0] > 0) == (t[non0] > 0))) if non0.any() else float("nan")
    bound = 2 if metric == "Mult_acc_5" else 3
    return float(np.mean(np.round(np.clip(p, -bound, bound)) == np.round(np.clip(t, -bound, bound))))


def average_precisions(scores: object, truth: object) -> dict[int, float]:
    """Label index -> average precision of (N, K) scores against (N, K) 0/1 truth, for labels with a positive sample
    (the others have no defined average precision)."""
    from sklearn.metrics import average_precision_score

    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(truth).astype(np.int64)
    if s.ndim != 2 or s.shape != t.shape or s.shape[0] == 0:
        raise ValueError(f"scores and truth must be non-empty (N, K) arrays of one shape, got {s.shape} and {t.shape}")
    return {k: float(average_precision_score(t[:, k], s[:, k])) for k in range(t.shape[1]) if t[:, k].any()}


def mean_average_precision(scores: object, truth: object) -> float:
    """Mean over labels of the average precision (EMOTIC's mAP); labels without a positive sample are left out
    (NaN if none has one)."""
    per_label = average_precisions(scores, truth)
    return float(np.mean(list(per_label.values()))) if per_label else float("nan")


def per_class_results(scores: object, truth: object, kind: str, names: Sequence[str]) -> dict[str, float]:
    """Class name -> its recall (the share of its samples predicted as it; ``classification``, from (N, C) scores and
    (N,) classes) or its average precision (``multilabel``); classes absent from ``truth`` are left out."""
    if kind == "multilabel":
        return {names[k]: value for k, value in average_precisions(scores, truth).items()}
    if kind != "classification":
        raise ValueError(f"per-class results need class labels, not a {kind} task")
    t = np.asarray(truth).reshape(-1).astype(np.int64)
    present = [k for k in range(len(names)) if np.any(t == k)]
    recall = per_class_scores(np.asarray(scores).argmax(axis=-1), t, present)["recall"]
    return {names[k]: float(r) for k, r in zip(present, recall)}


#: Metrics (and the training loss) for which a lower value is better; every other metric: higher is better.
LOWER_IS_BETTER = frozenset({"MAE", "loss"})

#: Validation metric used for model selection by default, and whether larger is better.
DEFAULT_MONITOR = {"regression": ("MAE", "min"), "classification": ("Weighted_F1", "max"), "multilabel": ("Macro_F1", "max")}
