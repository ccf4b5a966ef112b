"""Metrics against hand-computed values (MMSA conventions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import pearsonr

from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.metrics import check_metric, classification_metrics, metric_names, regression_metrics, sims_regression_metrics, task_metrics

PRED = [-1.2, 0.0, 0.4, 2.6, -0.2]
TRUTH = [-2.0, 0.0, 1.0, 3.0, 0.5]


def test_regression_metrics_hand_computed() -> None:
    m = regression_metrics(PRED, TRUTH)
    # Has0: pred>=0 [F,T,T,T,F] vs truth>=0 [F,T,T,T,T]
    assert m["Has0_acc_2"] == pytest.approx(0.8)
    assert m["Has0_F1_score"] == pytest.approx((1 * 2 / 3 + 4 * 6 / 7) / 5)
    # Non0 drops the zero-labelled sample: pred>0 [F,T,T,F] vs truth>0 [F,T,T,T]
    assert m["Non0_acc_2"] == pytest.approx(0.75)
    assert m["Non0_F1_score"] == pytest.approx((2 / 3 + 3 * 0.8) / 4)
    # numpy rounds half to even: truth 0.5 -> 0 matches pred -0.2 -> 0
    assert m["Mult_acc_7"] == pytest.approx(0.6)
    assert m["Mult_acc_5"] == pytest.approx(0.6)
    assert m["MAE"] == pytest.approx(0.5)
    assert m["Corr"] == pytest.approx(pearsonr(PRED, TRUTH)[0])


def test_clipping_before_rounding() -> None:
    m = regression_metrics([5.0, -4.0], [3.0, -2.6])
    assert m["Mult_acc_7"] == 1.0  # 5 -> 3, -4 -> -3 and -2.6 -> -3
    assert m["Mult_acc_5"] == 1.0  # everything clipped to +-2


def test_constant_predictions_and_zero_ties() -> None:
    m = regression_metrics([0.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 2.0, 1.0])
    assert m["Has0_acc_2"] == pytest.approx(0.75)  # 0 counts as non-negative
    assert m["Non0_acc_2"] == pytest.approx(1 / 3)  # 0 is not positive; the zero-labelled sample is dropped
    assert m["Corr"] == 0.0
    all_zero = regression_metrics([0.3, -0.2], [0.0, 0.0])
    assert math.isnan(all_zero["Non0_acc_2"]) and math.isnan(all_zero["Non0_F1_score"])


def test_regression_metrics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="equal length"):
        regression_metrics([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        regression_metrics([np.nan], [0.1])


def test_binary_classification_positive_class_one() -> None:
    m = classification_metrics([1, 0, 1, 1, 0, 1], [1, 0, 0, 1, 1, 1])
    assert m["Acc"] == pytest.approx(4 / 6)
    assert m["Precision"] == pytest.approx(0.75)
    assert m["Recall"] == pytest.approx(0.75)
    assert m["F1"] == pytest.approx(0.75)


def test_multiclass_macro_and_weighted() -> None:
    m = classification_metrics([0, 1, 1, 2, 2, 0], [0, 0, 1, 2, 2, 2], num_classes=3)
    assert m["Acc"] == pytest.approx(4 / 6)
    assert m["Macro_F1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert m["Weighted_F1"] == pytest.approx((2 * 0.5 + 1 * 2 / 3 + 3 * 0.8) / 6)
    assert m["F1"] == pytest.approx(m["Macro_F1"])


def test_macro_averages_leave_out_classes_no_sample_has_or_gets() -> None:
    """A split that lacks a class (small, limited or OOD splits): perfect predictions score 1, as in scikit-learn."""
    from sklearn.metrics import f1_score

    perfect = classification_metrics([0, 0, 1, 1], [0, 0, 1, 1], num_classes=3)
    assert perfect["Macro_F1"] == perfect["F1"] == perfect["Precision"] == perfect["Recall"] == 1.0
    assert classification_metrics([0, 0], [0, 0], num_classes=2)["Macro_F1"] == 1.0
    # a class predicted but absent from the truth still counts (F1 0)
    pred, truth = [0, 2, 1, 1], [0, 0, 1, 1]
    assert classification_metrics(pred, truth, num_classes=3)["Macro_F1"] == pytest.approx(f1_score(truth, pred, average="macro"))
    assert classification_metrics(pred, truth, num_classes=3)["Macro_F1"] < 1.0


def test_nan_class_scores_are_refused_not_scored_as_class_zero() -> None:
    for task in (TaskSpec(kind="classification", num_classes=3, label_range=None), TaskSpec(kind="multilabel", num_classes=3, label_range=None)):
        truth = np.zeros(4, dtype=np.int64) if task.kind == "classification" else np.zeros((4, 3), dtype=np.int64)
        with pytest.raises(ValueError, match="NaN or inf"):
            task_metrics(np.full((4, 3), np.nan), truth, task)


def test_truth_first_matters_for_f1() -> None:
    # Weighted F1 depends on the order when supports differ: truth must come first.
    pred, truth = [0, 0, 1, 1, 1], [0, 1, 1, 1, 1]
    # truth first: class 0 F1 2/3 (support 1), class 1 F1 6/7 (support 4)
    expected = (2 / 3 + 4 * 6 / 7) / 5
    assert classification_metrics(pred, truth)["Weighted_F1"] == pytest.approx(expected)
    assert classification_metrics(truth, pred)["Weighted_F1"] != pytest.approx(expected)
    regression = regression_metrics([-1, -1, 1, 1, 1], [-1, 1, 1, 1, 1])
    assert regression["Has0_F1_score"] == pytest.approx(expected)


def test_task_metrics_dispatch() -> None:
    scores = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert task_metrics(scores, np.array([0, 1]), TaskSpec(kind="classification", num_classes=2, label_range=None))["Acc"] == 1.0
    assert task_metrics(np.array([1.0, -1.0]), np.array([1.0, -1.0]), TaskSpec())["MAE"] == 0.0


def _mmsa_sims_bins(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """MMSA's loop: class i for values in (edges[i], edges[i + 1]], written independently of robustmsa."""
    out = values.copy()
    for i in range(len(edges) - 1):
        out[np.logical_and(values > edges[i], values <= edges[i + 1])] = i
    return out


def test_sims_metrics_follow_mmsa() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    # values on and near every bin edge, outside [-1, 1] and in between
    truth = np.concatenate([rng.uniform(-1.3, 1.3, 200), [-1.0, -0.7, -0.1, 0.0, 0.1, 0.7, 1.0, -0.70001, 0.10001]])
    pred = np.concatenate([rng.uniform(-1.3, 1.3, 200), [0.0, -0.69, -0.1, 0.1, 0.1, 0.7, 1.2, -0.7, 0.1]])
    got = sims_regression_metrics(pred, truth)
    p, t = np.clip(pred, -1, 1), np.clip(truth, -1, 1)
    edges = {"Mult_acc_2": [-1.01, 0.0, 1.01], "Mult_acc_3": [-1.01, -0.1, 0.1, 1.01], "Mult_acc_5": [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01]}
    for name, e in edges.items():
        assert got[name] == pytest.approx(np.mean(_mmsa_sims_bins(p, e) == _mmsa_sims_bins(t, e))), name
    assert got["F1_score"] == pytest.approx(f1_score(_mmsa_sims_bins(t, edges["Mult_acc_2"]), _mmsa_sims_bins(p, edges["Mult_acc_2"]), average="weighted"))
    assert got["MAE"] == pytest.approx(np.mean(np.abs(p - t))) and got["Corr"] == pytest.approx(pearsonr(p, t)[0])
    # float32 values on a bin edge fall in MMSA's bin (MMSA compares float32 tensors with the edges)
    assert sims_regression_metrics(np.float32([0.1, 0.1, -0.7]), np.float32([0.2, -0.8, -0.75]))["Mult_acc_3"] == pytest.approx(1 / 3)
    # 0 belongs to the negative class in SIMS (MOSI's Has0 counts it as non-negative)
    assert sims_regression_metrics([0.0, 0.5], [-0.5, 0.5])["Mult_acc_2"] == 1.0
    assert regression_metrics([0.0, 0.5], [-0.5, 0.5])["Has0_acc_2"] == 0.5


def test_the_metric_set_is_the_tasks() -> None:
    sims = TaskSpec(label_range=(-1.0, 1.0), metric_set="sims")
    assert set(task_metrics(np.array([0.2, -0.5]), np.array([0.3, -0.4]), sims)) == {"Mult_acc_2", "F1_score", "Mult_acc_3", "Mult_acc_5", "MAE", "Corr"}
    assert check_metric("Mult_acc_3", sims, "monitor") == "Mult_acc_3"
    with pytest.raises(ConfigError, match=r"monitor 'Has0_acc_2' is not a metric of a regression task \(sims metrics\)"):
        check_metric("Has0_acc_2", sims, "monitor")
    with pytest.raises(ConfigError, match="regression tasks only"):
        TaskSpec(kind="classification", num_classes=2, label_range=None, metric_set="sims")


def test_labels_without_a_sentiment_zero_are_refused_by_the_sentiment_metrics() -> None:
    """MMMO's ratings 1-5: a constant prediction of 3 would score a perfect Has0 Acc-2."""
    mmmo = TaskSpec(label_range=(1.0, 5.0))
    assert not mmmo.signed and TaskSpec().signed and TaskSpec(label_range=None).signed
    for call in (lambda: metric_names(mmmo), lambda: task_metrics(np.full(4, 3.0), np.array([1.0, 2.0, 4.0, 5.0]), mmmo)):
        with pytest.raises(ConfigError, match=r"the mosi metrics \(Acc-2, F1, Acc-k\) split sentiment at 0, but these labels lie in \[1.0, 5.0\]"):
            call()


def test_single_metric_is_the_task_metric() -> None:
    from robustmsa.metrics import single_metric

    rng = np.random.default_rng(0)
    three, two = TaskSpec(kind="classification", num_classes=3, label_range=None), TaskSpec(kind="classification", num_classes=2, label_range=None)
    sims = TaskSpec(label_range=(-1.0, 1.0), metric_set="sims")  # values on the bin edges (rounded to 0.1), clipped ones
    never_two = rng.normal(size=(50, 3))
    never_two[:, 2] = -10.0  # class 2 neither predicted nor true: left out of the macro average
    cases = (
        (three, rng.normal(size=(50, 3)), rng.integers(0, 3, 50), ("Acc", "F1", "Macro_F1")),
        (three, never_two, rng.integers(0, 2, 50), ("F1",)),
        (two, rng.normal(size=(50, 2)), rng.integers(0, 2, 50), ("Acc", "F1")),
        (two, np.tile([1.0, 0.0], (20, 1)), np.zeros(20, dtype=int), ("F1",)),  # no positive sample, none predicted: 0
        (TaskSpec(kind="multilabel", num_classes=3, label_range=None), rng.uniform(size=(50, 3)), rng.integers(0, 2, (50, 3)), ("mAP", "Acc")),
        (TaskSpec(), rng.normal(size=50), np.round(rng.uniform(-3, 3, 50)), ("MAE", "Has0_acc_2", "Non0_acc_2", "Mult_acc_5", "Mult_acc_7", "Corr")),
        (TaskSpec(), rng.normal(size=20), np.zeros(20), ("Non0_acc_2",)),  # every truth 0: NaN
        (sims, np.round(rng.uniform(-1.3, 1.3, 80), 1), np.round(rng.uniform(-1, 1, 80), 1), ("Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "MAE", "F1_score")),
    )
    for task, pred, truth, names in cases:
        every = task_metrics(pred, truth, task)
        for name in names:
            assert single_metric(pred, truth, task, name) == pytest.approx(every[name], nan_ok=True)
    with pytest.raises(ValueError, match="NaN"):
        single_metric(np.full((2, 3), np.nan), np.array([0, 1]), cases[0][0], "Acc")
    with pytest.raises(ConfigError, match="split sentiment at 0"):  # refused as task_metrics refuses it
        single_metric(np.full(4, 3.0), np.array([1.0, 2.0, 4.0, 5.0]), TaskSpec(label_range=(1.0, 5.0)), "MAE")
