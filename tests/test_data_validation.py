"""MultimodalSplit validation: every user error names the file and the field."""

from __future__ import annotations

import numpy as np
import pytest

from robustmsa.data.batch import Sample
from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec
from robustmsa.errors import DataError

SOURCE = "data/mosi.pkl"


def _ok(i: int, **changes: object) -> Sample:
    fields: dict[str, object] = {"id": f"s{i}", "text": np.ones((3, 4), np.float32), "audio": np.ones((2, 5), np.float32), "label": 0.5}
    fields.update(changes)
    return Sample(**fields)  # type: ignore[arg-type]


def _error(samples: list[Sample], task: TaskSpec | None = None) -> str:
    with pytest.raises(DataError) as info:
        MultimodalSplit(samples, name="train", source=SOURCE, task=task or TaskSpec())
    message = str(info.value)
    assert SOURCE in message and "[train]" in message
    return message


def test_valid_split_passes() -> None:
    split = MultimodalSplit([_ok(0), _ok(1)], name="train", source=SOURCE, task=TaskSpec())
    assert len(split) == 2 and split.dims() == {"text": 4, "audio": 5}
    assert split.labels().tolist() == [0.5, 0.5]


def test_empty_split() -> None:
    assert "empty" in _error([])


def test_nan_and_inf_features() -> None:
    bad = np.ones((2, 5), np.float32)
    bad[1, 2] = np.nan
    assert "field 'audio'" in _error([_ok(0), _ok(1, audio=bad)])
    bad = np.ones((3, 4), np.float32)
    bad[0, 0] = np.inf
    message = _error([_ok(0, text=bad)])
    assert "field 'text'" in message and "'s0'" in message


def test_wrong_width_and_rank() -> None:
    assert "field 'audio'" in _error([_ok(0), _ok(1, audio=np.ones((2, 6), np.float32))])
    assert "field 'text'" in _error([_ok(0, text=np.ones(4, np.float32))])


def test_modality_present_for_some_samples_only() -> None:
    assert "field 'audio'" in _error([_ok(0), _ok(1, audio=None)])
    assert "field 'vision'" in _error([_ok(0), _ok(1, vision=np.ones((2, 2), np.float32))])


def test_label_out_of_range_or_missing() -> None:
    assert "field 'label'" in _error([_ok(0, label=3.5)])
    assert "field 'label'" in _error([_ok(0, label=float("nan"))])
    sims = TaskSpec(label_range=(-1.0, 1.0))
    assert "[-1.0, 1.0]" in _error([_ok(0, label=-1.5)], sims)
    # the same label is fine under the MOSI range
    MultimodalSplit([_ok(0, label=-1.5)], name="train", source=SOURCE, task=TaskSpec())


def test_class_label_out_of_range() -> None:
    task = TaskSpec(kind="classification", num_classes=3, label_range=None)
    assert "field 'label'" in _error([_ok(0, label=None, label_class=3)], task)


def test_duplicate_id() -> None:
    message = _error([_ok(0), _ok(0)])
    assert "field 'id'" in message and "s0" in message


def test_text_special_length_mismatch() -> None:
    assert "field 'text_special'" in _error([_ok(0, text_special=np.zeros(2, bool))])


def test_unknown_split_and_ids() -> None:
    split = MultimodalSplit([_ok(0), _ok(1)], name="train", source=SOURCE, task=TaskSpec())
    bundle = DataBundle({"train": split}, TaskSpec(), name="mosi")
    with pytest.raises(DataError, match="field 'split'"):
        bundle["test_ood"]
    with pytest.raises(DataError, match="field 'id'"):
        split.select_ids(["s1", "nope"], name="x")
    assert split.select_ids(["s1", "s0"], name="x").ids == ["s1", "s0"]


def test_bundle_widths_agree_across_splits() -> None:
    train = MultimodalSplit([_ok(0), _ok(1)], name="train", source=SOURCE, task=TaskSpec())
    test = MultimodalSplit([_ok(2, audio=np.ones((2, 6), np.float32))], name="test", source=SOURCE, task=TaskSpec())
    with pytest.raises(DataError, match=r"data/mosi\.pkl: field 'audio': split 'test' has feature width 6; split 'train' has 5"):
        DataBundle({"train": train, "test": test}, TaskSpec())
    textless = MultimodalSplit([_ok(3, text=None)], name="test", source=SOURCE, task=TaskSpec())
    assert DataBundle({"train": train, "test": textless}, TaskSpec()).dims() == {"text": 4, "audio": 5}  # a modality absent from a split is fine


def test_bundle_ids_in_two_splits() -> None:
    train = MultimodalSplit([_ok(0), _ok(1)], name="train", source=SOURCE, task=TaskSpec())
    test = MultimodalSplit([_ok(2), _ok(1)], name="test", source=SOURCE, task=TaskSpec())
    with pytest.raises(DataError, match=r"field 'id': sample id 's1' is in split 'train' and in split 'test'"):
        DataBundle({"train": train, "test": test}, TaskSpec())
    assert len(DataBundle({"train": train, "test": test}, TaskSpec(), disjoint_ids=False)["test"]) == 2  # per-split numbering (router data) opts out


def test_limit_keeps_a_random_subset_in_file_order() -> None:
    """Files sorted by label (MVSA's train.json) must not give a one-class split; the same subset every time."""
    from robustmsa.data.dataset import limited

    items = [0] * 50 + [1] * 50  # label-sorted
    kept = limited(items, 10)
    assert len(kept) == 10 and set(kept) == {0, 1} and kept == sorted(kept)
    assert limited(items, 10) == kept and limited(list(range(100)), 10) == sorted(limited(list(range(100)), 10))
    assert limited(items, None) == items and limited(items, 500) == items
