"""Per-sample prediction tables: one row per sample in split order, the truth, each mode's prediction."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from robustmsa.data.batch import Sample
from robustmsa.data.dataset import MultimodalSplit, TaskSpec
from robustmsa.evaluation.predictions import prediction_table, write_predictions
from robustmsa.method import Supervised
from robustmsa.registry import BACKBONES
from robustmsa.training.fit import predict
from tests.conftest import make_toy_split


def _method(split: MultimodalSplit) -> Supervised:
    return Supervised(BACKBONES.build("lf_dnn", split.dims(), split.task, hidden=8))


def test_regression_rows_follow_the_split_and_hold_the_scores() -> None:
    split = make_toy_split(7, "test", 0)
    method = _method(split)
    header, rows = prediction_table(method, split, ["factual"])
    assert header == ["id", "group", "truth", "factual"]
    assert [r[0] for r in rows] == split.ids and [r[1] for r in rows] == [s.group for s in split]
    np.testing.assert_allclose([float(r[2]) for r in rows], split.labels(), rtol=1e-5)
    np.testing.assert_allclose([float(r[3]) for r in rows], predict(method, split), rtol=1e-5, atol=1e-6)


def test_classification_gives_the_class_and_its_probabilities() -> None:
    task = TaskSpec(kind="classification", num_classes=2, label_range=None, class_names=("negative", "positive"))
    split = make_toy_split(9, "test", 1, task=task)
    method = _method(split)
    header, rows = prediction_table(method, split, ["factual"])
    assert header == ["id", "group", "truth", "factual", "factual:p(negative)", "factual:p(positive)"]
    probs = predict(method, split)
    assert [r[2] for r in rows] == [("negative", "positive")[k] for k in split.labels()]
    assert [r[3] for r in rows] == [("negative", "positive")[k] for k in probs.argmax(axis=1)]
    np.testing.assert_allclose([[float(r[4]), float(r[5])] for r in rows], probs, rtol=1e-5, atol=1e-6)


def test_multilabel_truth_lists_the_positive_labels(tmp_path: Path) -> None:
    task = TaskSpec(kind="multilabel", num_classes=3, label_range=None, class_names=("joy", "fear", "anger"))
    rng = np.random.default_rng(0)
    multi = [np.array(v, dtype=np.float32) for v in ([1, 0, 1], [0, 0, 0], [0, 1, 0])]
    def features(length: int, width: int) -> np.ndarray:
        return rng.normal(size=(length, width)).astype(np.float32)

    samples = [Sample(id=f"s{i}", label_multi=m, text=features(3, 4), audio=features(2, 3), vision=features(2, 2)) for i, m in enumerate(multi)]
    split = MultimodalSplit(samples, name="test", source="made", task=task)
    path = write_predictions(tmp_path / "p" / "test.csv", _method(split), split, ["factual"])
    with path.open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["truth"] for r in table] == ["joy;anger", "", "fear"] and [r["group"] for r in table] == ["", "", ""]
    assert set(table[0]) == {"id", "group", "truth", "factual:p(joy)", "factual:p(fear)", "factual:p(anger)"}
    assert all(0.0 <= float(r["factual:p(fear)"]) <= 1.0 for r in table)


def test_an_unknown_mode_is_refused_before_writing(tmp_path: Path) -> None:
    from robustmsa.errors import ConfigError

    split = make_toy_split(5, "test", 0)
    with pytest.raises(ConfigError, match="no inference mode 'tie'"):
        write_predictions(tmp_path / "x.csv", _method(split), split, ["tie"])
    assert not (tmp_path / "x.csv").exists()


def test_unlabelled_samples_are_predicted_not_scored() -> None:
    import dataclasses

    from robustmsa.errors import DataError
    from robustmsa.training.fit import evaluate

    labelled = make_toy_split(5, "new", 0)
    unlabelled = MultimodalSplit([dataclasses.replace(s, label=None) for s in labelled], name="new", source="user", task=labelled.task, labelled=False)
    with pytest.raises(DataError, match="has no finite label"):  # a labelled split still needs its labels
        MultimodalSplit(unlabelled.samples, name="new", source="user", task=labelled.task)
    method = _method(labelled)
    np.testing.assert_allclose(predict(method, unlabelled), predict(method, labelled), rtol=1e-6)
    header, rows = prediction_table(method, unlabelled, ["factual"])
    assert header == ["id", "group", "factual"] and len(rows) == 5
    with pytest.raises(DataError, match=r"user \[new\]: field 'label': this split holds unlabelled samples"):
        evaluate(method, unlabelled)


def test_scores_are_written_with_enough_digits_to_read_back_exactly() -> None:
    from robustmsa.evaluation.predictions import _number

    value = np.float32(1.4999996)  # 6 significant digits would write "1.5": Mult_acc_7 of the CSV would differ
    assert np.float32(float(_number(value))) == value
