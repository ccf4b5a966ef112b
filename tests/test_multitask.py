"""MMSA's multi-task backbones mlf_dnn, mtfn and mlmf: the zoo's generic checks on toy data with unimodal labels,
the unimodal losses and their weights, the error without unimodal labels, and a CH-SIMS-style pickle end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustmsa.config import parse_config
from robustmsa.data.batch import collate
from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec
from robustmsa.data.mmsa import UNIMODAL_LABELS, write_mmsa_pickle
from robustmsa.errors import ConfigError
from robustmsa.experiment import run_experiment
from robustmsa.method import Supervised
from robustmsa.metrics import regression_metrics
from robustmsa.registry import BACKBONES
from robustmsa.training.fit import TrainConfig, fit, predict, seeded
from tests.conftest import make_toy_split

SMALL: dict[str, dict] = {
    "mlf_dnn": {"hidden": 16, "text_post": 8, "audio_post": 4, "vision_post": 8},
    "mtfn": {"text_hidden": 8, "av_hidden": 4, "hidden": 16, "text_post": 8, "audio_post": 4, "vision_post": 4},
    "mlmf": {"text_hidden": 16, "av_hidden": 8, "hidden": 16, "rank": 2, "text_post": 8, "audio_post": 4, "vision_post": 8},
}
#: the single-task model each one extends, with the same sizes
BASE = {"mlf_dnn": ("lf_dnn", ("hidden",)), "mtfn": ("tfn", ("text_hidden", "av_hidden", "hidden")), "mlmf": ("lmf", ("text_hidden", "av_hidden", "hidden", "rank"))}
NAMES = sorted(SMALL)
MODALITIES = ("text", "audio", "vision")
ALL_ON = {"text_weight": 1.0, "audio_weight": 0.5, "vision_weight": 2.0}


def _build(name: str, dims: dict[str, int], task: TaskSpec | None = None, seed: int = 0, **changes: object):
    with seeded(seed):
        return BACKBONES.build(name, dims, task or TaskSpec(), **{**SMALL[name], **changes})


def _labelled(split: MultimodalSplit, seed: int = 0) -> MultimodalSplit:
    """The split with CH-SIMS-style unimodal labels in its extras: the label plus noise, clipped to the label range."""
    rng = np.random.default_rng(seed)
    samples = [dataclasses.replace(s, extras={**s.extras, **{key: np.float32(np.clip(s.label + rng.normal(0, 0.5), -3, 3)) for _, key in UNIMODAL_LABELS.values()}}) for s in split.samples]
    return MultimodalSplit(samples, name=split.name, source=split.source, task=split.task)


def _bundle() -> DataBundle:
    splits = {name: _labelled(make_toy_split(n, name, seed), seed) for name, n, seed in (("train", 240, 0), ("valid", 60, 1), ("test", 60, 2))}
    return DataBundle(splits, TaskSpec(), name="toy_sims")


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_padding_invariance(name: str) -> None:
    split = _labelled(make_toy_split(6, "u", 0, dims=(768, 33, 20)))
    model = _build(name, split.dims()).eval()
    with torch.no_grad():
        out = model(collate(split.samples))
        alone = model(collate(split.samples[:1]))
    assert out.logits.shape == (6, 1) and out.fused.shape[0] == 6
    assert {m: tuple(r.shape) for m, r in out.modality.items()} == {m: (6, model.encoders[m].out_dim) for m in MODALITIES}
    assert {k: tuple(v.shape) for k, v in out.extras.items()} == {f"{m}_score": (6,) for m in MODALITIES}
    for key, value in out.extras.items():
        assert torch.isfinite(value).all()
        torch.testing.assert_close(alone.extras[key], value[:1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(alone.logits, out.logits[:1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_the_task_output_is_the_single_task_models(name: str) -> None:
    """The backbone is reused, not copied: built first under the same seed, its task output is bit-identical."""
    split = make_toy_split(5, "s", 1)
    base, keys = BASE[name]
    multi = _build(name, split.dims()).eval()
    with seeded(0):
        single = BACKBONES.build(base, split.dims(), TaskSpec(), **{k: SMALL[name][k] for k in keys}).eval()
    batch = collate(split.samples)
    with torch.no_grad():
        assert torch.equal(multi(batch).logits, single(batch).logits)
    assert set(multi.state_dict()) - set(single.state_dict()) == {k for k in multi.state_dict() if k.startswith("unimodal_heads.")}


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name: str) -> None:
    split = _labelled(make_toy_split(12, "g", 3))
    method = Supervised(_build(name, split.dims(), **ALL_ON)).train()
    losses = method.training_loss(collate(split.samples))
    assert set(losses) == {"task", "loss"} | {f"{name}_{m}" for m in MODALITIES}
    losses["loss"].backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing


@pytest.mark.parametrize("name", NAMES)
def test_losses_are_weighted_l1_and_training_only(name: str) -> None:
    split = _labelled(make_toy_split(6, "w", 4))
    batch = collate(split.samples)
    model = _build(name, split.dims(), **ALL_ON)
    model.eval()
    with torch.no_grad():
        out = model(batch)
        assert model.auxiliary_losses(batch, out) == {}  # eval mode: no unimodal losses, no labels needed
        assert set(Supervised(model).eval().training_loss(collate(make_toy_split(6, "w", 4).samples))) == {"task", "loss"}
        losses = model.train().auxiliary_losses(batch, out)
    for m in MODALITIES:
        expected = ALL_ON[f"{m}_weight"] * F.l1_loss(out.extras[f"{m}_score"], batch.extras[UNIMODAL_LABELS[m][1]])
        torch.testing.assert_close(losses[f"{name}_{m}"], expected)
    # a zero weight drops that loss and the need for that label; all zero: plain single-task training
    none = _build(name, split.dims(), text_weight=0.0, audio_weight=0.0, vision_weight=0.0).train()
    assert none.required_extras("train") == ()
    assert set(Supervised(none).training_loss(collate(make_toy_split(6, "w", 4).samples))) == {"task", "loss"}
    text_only = _build(name, split.dims(), text_weight=1.0, audio_weight=0.0, vision_weight=0.0).train()
    assert text_only.required_extras("train") == ("label_text",) and text_only.required_extras("test") == ()
    assert set(text_only.auxiliary_losses(batch, text_only(batch))) == {f"{name}_text"}


def test_default_weights_are_mmsas_sims_ratios() -> None:
    dims = {"text": 8, "audio": 3, "vision": 2}
    # MMSA's CH-SIMS weights M / T / A / V, divided by M (the task loss has weight 1 here)
    mmsa = {"mlf_dnn": (0.6, 0.2, 0.8, 0.8), "mtfn": (0.6, 0.4, 0.0, 1.0), "mlmf": (0.2, 1.0, 0.4, 0.8)}
    for name, (m, *tav) in mmsa.items():
        with seeded(0):
            model = BACKBONES.build(name, dims, TaskSpec())
        assert model.unimodal_weights == pytest.approx(dict(zip(MODALITIES, (w / m for w in tav))))
    assert BACKBONES.build("mtfn", dims, TaskSpec()).required_extras("train") == ("label_text", "label_vision")


@pytest.mark.parametrize("name", NAMES)
def test_learns_toy_task_deterministically(name: str) -> None:
    bundle = _bundle()
    cfg = TrainConfig(max_epochs=6, patience=6, batch_size=32, lr=5e-3, progress=False)
    preds = []
    for _ in range(2):
        method = Supervised(_build(name, bundle.dims()))
        fit(method, bundle, cfg, seed=0)
        preds.append(predict(method, bundle["test"]))
    np.testing.assert_array_equal(preds[0], preds[1])
    assert regression_metrics(preds[0], bundle["test"].labels())["Has0_acc_2"] >= 0.8


@pytest.mark.parametrize("name", NAMES)
def test_data_without_unimodal_labels_is_refused(name: str) -> None:
    plain = {n: make_toy_split(k, n, s) for n, k, s in (("train", 20, 0), ("valid", 8, 1), ("test", 8, 2))}
    bundle = DataBundle(plain, TaskSpec(), name="toy_mosi")
    method = Supervised(_build(name, bundle.dims()))
    with pytest.raises(ConfigError, match=r"needs 'label_text' in the extras of every sample of split 'train' \(toy_mosi\).*regression_labels_T"):
        fit(method, bundle, TrainConfig(max_epochs=1, progress=False), seed=0)
    with pytest.raises(ConfigError, match=rf"{name} needs the text label .* samples \['train0', 'train1', 'train2'\] has none.*CH-SIMS-style unimodal labels"):
        method.train().training_loss(collate(bundle["train"].samples))
    # without unimodal losses the same data trains
    fit(Supervised(_build(name, bundle.dims(), text_weight=0, audio_weight=0, vision_weight=0)), bundle, TrainConfig(max_epochs=1, progress=False), seed=0)


@pytest.mark.parametrize(
    ("changes", "match"),
    [({"text_weight": -1.0}, "text_weight"), ({"vision_weight": float("nan")}, "vision_weight"), ({"audio_post": 0}, "audio_post"), ({"post_dropout": 1.0}, "post_dropout")],
)
def test_bad_settings_are_config_errors(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _build("mtfn", {"text": 8, "audio": 3, "vision": 2}, **changes)


@pytest.mark.parametrize("name", NAMES)
def test_regression_only(name: str) -> None:
    with pytest.raises(ConfigError, match="regression only"):
        _build(name, {"text": 8, "audio": 3, "vision": 2}, TaskSpec(kind="classification", num_classes=3, label_range=None))


def test_a_sims_style_pickle_trains_end_to_end(tmp_path: Path) -> None:
    """Unimodal labels written to an MMSA pickle, read back by the registered reader and trained on by a config."""
    bundle = _bundle()
    rescaled = {}
    for name, split in bundle.splits.items():  # CH-SIMS's scale [-1, 1]
        samples = [dataclasses.replace(s, label=s.label / 3, extras={k: np.float32(v / 3) for k, v in s.extras.items()}) for s in split.samples[:24]]
        rescaled[name] = MultimodalSplit(samples, name=name, source="toy", task=TaskSpec(label_range=(-1.0, 1.0)))
    write_mmsa_pickle(DataBundle(rescaled, TaskSpec(label_range=(-1.0, 1.0)), name="sims"), tmp_path / "unaligned_39.pkl")
    config = {
        "data": {"name": "mmsa_pickle", "params": {"path": str(tmp_path / "unaligned_39.pkl"), "label_range": "auto"}},
        "backbone": {"name": "mtfn", "params": SMALL["mtfn"]},
        "train": {"max_epochs": 1, "progress": False},
        "seeds": [0],
    }
    run_experiment(parse_config(config), tmp_path / "run")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    text = json.dumps(results)
    assert "Mult_acc_3" in text and "Has0_acc_2" not in text  # read as CH-SIMS (label range (-1, 1)): its metrics
