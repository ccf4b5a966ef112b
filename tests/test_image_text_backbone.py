"""The image-text fusion backbone: shapes, padding masks, gradients, text-only data, learning a toy task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustmsa.data.batch import Sample, collate
from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.method import Supervised
from robustmsa.metrics import classification_metrics
from robustmsa.models.image_text import ImageText
from robustmsa.registry import BACKBONES
from robustmsa.training.fit import TrainConfig, fit, predict, seeded

BINARY = TaskSpec(kind="classification", num_classes=2, label_range=None)
SMALL = {"hidden": 16, "heads": 2, "layers": 1, "dropout": 0.0}


def _samples(n: int, seed: int, image: bool = True, prefix: str = "s") -> list[Sample]:
    """Label = 1 iff the text signal and the image signal have the same sign (needs both modalities)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ts, vs = rng.choice([-1.0, 1.0], size=2)
        text = rng.normal(size=(int(rng.integers(3, 9)), 12)).astype(np.float32)
        text[:, 0] += 2.0 * ts
        img = None
        if image:
            img = rng.normal(size=(int(rng.integers(2, 6)), 6)).astype(np.float32)
            img[:, 0] += 2.0 * vs
        out.append(Sample(id=f"{prefix}{i}", text=text, image=img, label_class=int(ts == vs) if image else int(ts > 0)))
    return out


def _build(dims: dict[str, int], seed: int = 0, task: TaskSpec = BINARY) -> ImageText:
    with seeded(seed):
        return BACKBONES.build("image_text", dims, task, **SMALL)


def test_shapes_and_modalities() -> None:
    batch = collate(_samples(5, 0))
    model = _build({"text": 12, "image": 6})
    out = model(batch)
    assert model.modalities == ("text", "image")
    assert out.logits.shape == (5, 2) and out.fused.shape == (5, 16)
    assert set(out.modality) == {"text", "image"} and all(v.shape == (5, 16) for v in out.modality.values())
    regression = _build({"text": 12, "image": 6}, task=TaskSpec())
    assert regression(batch).logits.shape == (5, 1)


def test_text_only_data_uses_an_empty_image_token() -> None:
    batch = collate(_samples(4, 1, image=False))
    model = _build({"text": 12})
    out = model(batch)
    assert model.modalities == ("text",) and set(out.modality) == {"text"}
    assert out.logits.shape == (4, 2) and torch.isfinite(out.logits).all()
    with pytest.raises(ConfigError, match="image"):
        _build({"text": 12, "image": 6})(batch)


def test_padding_does_not_change_a_sample() -> None:
    samples = _samples(6, 2)
    model = _build({"text": 12, "image": 6}).eval()
    alone = model(collate(samples[:1])).logits
    padded = model(collate(samples)).logits[:1]  # the first sample is padded to the longest text and image
    assert torch.allclose(alone, padded, atol=1e-5)


@pytest.mark.parametrize("image", [True, False], ids=["image", "text_only"])
def test_gradients_reach_every_parameter(image: bool) -> None:
    samples = _samples(6, 3, image=image)
    dims = {"text": 12, "image": 6} if image else {"text": 12}
    model = _build(dims)
    out = model(collate(samples))
    (out.logits.sum() + sum(v.sum() for v in out.modality.values())).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_bad_settings_raise() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        BACKBONES.build("image_text", {"text": 12}, BINARY, hidden=10, heads=4)
    model = BACKBONES.build("image_text", {"text": 12}, BINARY, hidden=8, heads=2, max_len=4)
    with pytest.raises(ConfigError, match="max_len"):
        model(collate([Sample(id="x", text=np.zeros((5, 12), np.float32), label_class=0)]))


def test_learns_a_task_that_needs_both_modalities() -> None:
    task = BINARY
    splits = {name: MultimodalSplit(_samples(n, seed, prefix=name), name=name, source="toy", task=task) for name, n, seed in (("train", 320, 10), ("valid", 80, 11), ("test", 120, 12))}
    bundle = DataBundle(splits, task, name="toy_image_text")
    method = Supervised(_build(bundle.dims(), seed=0))
    fit(method, bundle, TrainConfig(max_epochs=12, batch_size=32, lr=3e-3, patience=12, progress=False), seed=0)
    pred = predict(method, bundle["test"]).argmax(axis=1)
    acc = classification_metrics(pred, bundle["test"].labels(), 2)["Acc"]
    assert acc > 0.9, acc
