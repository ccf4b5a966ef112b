"""Classification views of continuous labels: has0 / non0 / 7class."""

from __future__ import annotations

import numpy as np
import pytest

from robustmsa.data.batch import Sample
from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec
from robustmsa.data.labels import DROPPED, classes_of, scheme_task, to_classification
from robustmsa.errors import ConfigError, DataError
from tests.conftest import make_toy_split

LABELS = [-3.0, -2.2, -0.4, 0.0, 0.4, 1.2, 2.6, 3.0]


def test_classes_by_hand() -> None:
    assert classes_of(LABELS, "has0").tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert classes_of(LABELS, "non0").tolist() == [0, 0, 0, DROPPED, 1, 1, 1, 1]
    # round(clip(y, -3, 3)) + 3: -3->0, -2.2->1, -0.4->3, 0->3, 0.4->3, 1.2->4, 2.6->6, 3->6
    assert classes_of(LABELS, "7class").tolist() == [0, 1, 3, 3, 3, 4, 6, 6]
    assert classes_of([-7.0, 9.0], "7class").tolist() == [0, 6]


def test_scheme_task_and_errors() -> None:
    assert scheme_task("7class").num_classes == 7
    assert scheme_task("non0").class_names == ("negative", "positive")
    with pytest.raises(ConfigError):
        scheme_task("5class")
    with pytest.raises(ValueError):
        classes_of([0.1, float("nan")], "has0")


def _bundle(labels: list[float]) -> DataBundle:
    def split(name: str) -> MultimodalSplit:
        samples = [Sample(id=f"{name}{i}", raw_text="w", text=np.zeros((2, 3), np.float32), label=y) for i, y in enumerate(labels)]
        return MultimodalSplit(samples, name=name, source="mem", task=TaskSpec())

    return DataBundle({"train": split("train"), "test": split("test")}, TaskSpec(), name="mem")


def test_to_classification_drops_zeros_for_non0_and_keeps_scores() -> None:
    bundle = _bundle(LABELS)
    non0 = to_classification(bundle, "non0")
    assert non0.task.kind == "classification" and non0.task.num_classes == 2
    assert len(non0["train"]) == len(LABELS) - 1
    assert [s.label for s in non0["train"]] == [y for y in LABELS if y != 0]
    assert non0["train"].labels().tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert non0.meta["dropped"] == {"train": 1, "test": 1}
    has0 = to_classification(bundle, "has0")
    assert len(has0["train"]) == len(LABELS) and has0.meta["label_scheme"] == "has0"
    seven = to_classification(bundle, "7class")
    assert seven["test"].labels().tolist() == [0, 1, 3, 3, 3, 4, 6, 6]


def test_to_classification_errors() -> None:
    with pytest.raises(DataError, match="no sample left"):
        to_classification(_bundle([0.0, 0.0]), "non0")
    toy = make_toy_split(6, "train", 0, task=TaskSpec(kind="classification", num_classes=2, label_range=None))
    with pytest.raises(DataError, match="regression"):
        to_classification(DataBundle({"train": toy}, toy.task), "has0")


def test_label_schemes_need_a_sentiment_zero() -> None:
    """MMMO's ratings 1-5 under has0 would all be one class ('non-negative')."""
    task = TaskSpec(label_range=(1.0, 5.0))
    samples = [Sample(id=f"s{i}", raw_text="w", text=np.zeros((2, 3), np.float32), label=y) for i, y in enumerate([1.0, 2.5, 3.0, 4.5, 5.0])]
    mmmo = DataBundle({"train": MultimodalSplit(samples, name="train", source="mem", task=task)}, task, name="mmmo")
    with pytest.raises(ConfigError, match=r"data 'mmmo': label scheme 'has0' would split sentiment at 0, but these labels lie in \[1.0, 5.0\]"):
        to_classification(mmmo, "has0")
