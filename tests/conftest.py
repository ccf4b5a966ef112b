"""Shared fixtures: small in-memory data, the real-data folder, thread limits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from robustmsa.data.batch import Sample
from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real data folder ../shared/data; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA


def make_toy_split(n: int, name: str, seed: int, *, task: TaskSpec | None = None, dims: tuple[int, int, int] = (16, 5, 4)) -> MultimodalSplit:
    """A learnable toy regression split: the label is planted in text, audio and vision."""
    task = task or TaskSpec()
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        y = float(rng.uniform(-3, 3))
        text = rng.normal(size=(int(rng.integers(4, 12)), dims[0])).astype(np.float32)
        text[:, 0] += y
        audio = rng.normal(size=(int(rng.integers(3, 9)), dims[1])).astype(np.float32)
        audio[:, 0] += 0.5 * y
        vision = rng.normal(size=(int(rng.integers(3, 9)), dims[2])).astype(np.float32)
        vision[:, 0] += 0.5 * y
        label_class = None if task.kind != "classification" else int(y >= 0) if task.num_classes == 2 else int(np.clip(np.round(y), -3, 3) + 3)
        samples.append(Sample(id=f"{name}{i}", group=f"{name}v{i // 3}", label=y if task.kind == "regression" else None, label_class=label_class, text=text, audio=audio, vision=vision))
    return MultimodalSplit(samples, name=name, source="toy", task=task)


@pytest.fixture
def toy_bundle() -> DataBundle:
    """Regression toy bundle (train 240 / valid 60 / test 60), 16-d text, 5-d audio, 4-d vision."""
    task = TaskSpec()
    return DataBundle({"train": make_toy_split(240, "train", 0), "valid": make_toy_split(60, "valid", 1), "test": make_toy_split(60, "test", 2)}, task, name="toy")
