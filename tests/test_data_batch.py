"""collate(): padding, lengths, masks, absent modalities, extras."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustmsa.data.batch import Sample, collate
from robustmsa.data.dataset import MultimodalSplit, TaskSpec


def _sample(i: int, lt: int, la: int, lv: int, **kw: object) -> Sample:
    rng = np.random.default_rng(i)
    return Sample(
        id=f"s{i}",
        group=f"g{i}",
        raw_text=f"text {i}",
        text=rng.normal(size=(lt, 4)).astype(np.float32),
        audio=rng.normal(size=(la, 3)).astype(np.float32),
        vision=rng.normal(size=(lv, 2)).astype(np.float32),
        label=float(i),
        **kw,
    )


def test_collate_pads_to_longest_and_keeps_values() -> None:
    samples = [_sample(0, 3, 5, 1), _sample(1, 6, 2, 4)]
    batch = collate(samples)
    assert batch.text.shape == (2, 6, 4) and batch.audio.shape == (2, 5, 3) and batch.vision.shape == (2, 4, 2)
    assert batch.audio_lengths.tolist() == [5, 2] and batch.vision_lengths.tolist() == [1, 4]
    assert batch.lengths("text").tolist() == [3, 6]
    assert batch.text_mask.tolist() == [[True] * 3 + [False] * 3, [True] * 6]
    assert batch.mask("audio").tolist() == [[True] * 5, [True, True, False, False, False]]
    # real values are copied, padding is zero
    assert torch.allclose(batch.text[0, :3], torch.from_numpy(samples[0].text))
    assert torch.count_nonzero(batch.text[0, 3:]) == 0 and torch.count_nonzero(batch.audio[1, 2:]) == 0
    assert batch.label.tolist() == [0.0, 1.0] and batch.ids == ["s0", "s1"] and batch.groups == ["g0", "g1"]
    assert batch.modalities() == ("text", "audio", "vision")
    # no special tokens given -> all False
    assert not batch.text_special.any()


def test_collate_special_tokens_and_ids() -> None:
    a = _sample(0, 3, 2, 2, text_special=np.array([True, False, True]), text_ids=np.array([101, 7, 102]))
    b = _sample(1, 2, 2, 2, text_special=np.array([True, True]), text_ids=np.array([101, 102]))
    batch = collate([a, b])
    assert batch.text_special.tolist() == [[True, False, True], [True, True, False]]
    assert batch.text_ids.dtype == torch.long and batch.text_ids.tolist() == [[101, 7, 102], [101, 102, 0]]


def test_collate_absent_modalities_are_none() -> None:
    samples = [Sample(id="a", text=np.ones((2, 3), np.float32), label_class=1), Sample(id="b", text=np.ones((1, 3), np.float32), label_class=0)]
    batch = collate(samples)
    assert batch.audio is None and batch.audio_lengths is None and batch.vision is None and batch.image is None
    assert batch.label is None and batch.label_class.tolist() == [1, 0]
    assert batch.modalities() == ("text",)
    with pytest.raises(KeyError):
        batch.lengths("audio")


def test_collate_refuses_partial_modality() -> None:
    samples = [_sample(0, 2, 2, 2), Sample(id="x", text=np.ones((2, 4), np.float32), label=0.0)]
    with pytest.raises(ValueError, match="audio"):
        collate(samples)


def test_collate_zero_length_sequence() -> None:
    a = Sample(id="a", audio=np.zeros((0, 3), np.float32), label=0.0)
    b = Sample(id="b", audio=np.ones((2, 3), np.float32), label=1.0)
    batch = collate([a, b])
    assert batch.audio.shape == (2, 2, 3) and batch.audio_lengths.tolist() == [0, 2]
    assert batch.mask("audio").tolist() == [[False, False], [True, True]]


def test_collate_image_mask_and_extras() -> None:
    a = Sample(id="a", image=np.ones((5, 2), np.float32), label=0.0, extras={"prior": np.array([0.1, 0.9], np.float32)})
    b = Sample(id="b", image=np.ones((3, 2), np.float32), label=1.0, extras={"prior": np.array([0.5, 0.5], np.float32)})
    batch = collate([a, b])
    assert batch.image_mask.sum(dim=1).tolist() == [5, 3] and batch.lengths("image").tolist() == [5, 3]
    assert batch.extras["prior"].shape == (2, 2)
    assert torch.allclose(batch.extras["prior"][1], torch.tensor([0.5, 0.5]))
    c = Sample(id="c", image=np.ones((1, 2), np.float32), label=1.0)
    with pytest.raises(ValueError, match="value"):
        collate([a, c])


def test_batch_replace_and_to() -> None:
    batch = collate([_sample(0, 2, 2, 2), _sample(1, 3, 3, 3)])
    moved = batch.to("cpu")
    assert moved.text.device.type == "cpu" and moved.ids == batch.ids
    changed = batch.replace(label=torch.zeros(2))
    assert changed.label.tolist() == [0.0, 0.0] and batch.label.tolist() == [0.0, 1.0]
    assert len(batch) == 2 and batch.size == 2


def test_collate_empty_list() -> None:
    with pytest.raises(ValueError):
        collate([])


def test_split_fingerprint_changes_with_any_content() -> None:
    def split(audio_value: float = 1.0, label: float = 0.5, ids: tuple[str, ...] = ("a", "b"), audio_shape: tuple[int, int] = (2, 3)) -> MultimodalSplit:
        samples = [Sample(id=i, text=np.zeros((2, 4), np.float32), audio=np.full(audio_shape, audio_value, np.float32), label=label) for i in ids]
        return MultimodalSplit(samples, name="s", source="test", task=TaskSpec())

    reference = split().fingerprint()
    assert split().fingerprint() == reference  # same content, same digest
    for other in (split(audio_value=1.5), split(label=0.4), split(ids=("a", "c")), split(ids=("b", "a")), split(audio_shape=(3, 2)), split(ids=("a",))):
        assert other.fingerprint() != reference


def test_the_shuffle_order_does_not_depend_on_the_number_of_loader_workers() -> None:
    """Several epochs from one loader: the same order with 0 and 2 workers (results must not depend on a speed setting)."""
    from robustmsa.data.dataset import make_loader
    from tests.conftest import make_toy_split

    split = make_toy_split(12, "train", 0)
    orders = {}
    for workers in (0, 2):
        loader = make_loader(split, 4, shuffle=True, num_workers=workers, seed=0)
        orders[workers] = [[i for batch in loader for i in batch.ids] for _ in range(3)]
    assert orders[0] == orders[2]
    assert orders[0][0] != orders[0][1]  # reshuffled every epoch
