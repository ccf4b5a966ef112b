"""TFR-Net: the network (models/tfr_net.py) and its training with feature reconstruction (reconstruct/tfr_net.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from robustmsa.data.batch import collate
from robustmsa.data.dataset import DataBundle
from robustmsa.errors import ConfigError
from robustmsa.evaluation.missing_protocol import MissingSweepConfig, load_sweep_method, sweep_missing
from robustmsa.models.text_centric import TextCentric
from robustmsa.models.tfr_net import TFRNet
from robustmsa.reconstruct.corruption import corrupt_batch, missing_positions
from robustmsa.reconstruct.tfr_net import dropped_positions, masked_smooth_l1
from robustmsa.registry import BACKBONES, METHODS
from robustmsa.training.fit import TrainConfig, fit, seeded

SMALL = {"dim": 8, "heads": 2, "layers": 1, "fusion_hidden": 8, "fusion_layers": 1, "classifier_hidden": 16}
MODALITIES = ("text", "audio", "vision")


def _build(bundle: DataBundle, seed: int = 0, **params: object):
    with seeded(seed):
        backbone = BACKBONES.build("tfr_net", bundle.dims(), bundle.task, **SMALL)
        return METHODS.build("tfr_net", backbone, **{"heads": 2, **params})


def test_dropped_positions_are_those_the_corruption_zeroed_not_those_missing_by_nature(toy_bundle: DataBundle) -> None:
    batch = collate(toy_bundle["train"].samples[:8])
    batch = batch.replace(audio=batch.audio.clone())
    batch.audio[0, 0] = 0.0  # missing by nature: no target to reconstruct
    noisy = corrupt_batch(batch, 0.5, seed=3)
    for m in MODALITIES:
        dropped = dropped_positions(batch, noisy, m)
        assert bool(dropped.any())
        assert torch.equal(dropped, missing_positions(noisy, m) & ~missing_positions(batch, m))
        assert not bool((dropped & ~batch.mask(m)).any())  # padding is never a target
    assert not bool(dropped_positions(batch, noisy, "audio")[0, 0])


def test_masked_smooth_l1_reads_the_masked_positions_only() -> None:
    pred, target = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    mask = torch.tensor([[True, False, False], [False, False, True]])
    expected = F.smooth_l1_loss(torch.stack([pred[0, 0], pred[1, 2]]), torch.stack([target[0, 0], target[1, 2]]))
    assert masked_smooth_l1(pred, target, mask).item() == pytest.approx(expected.item())
    target[~mask] = 1e6  # what the other positions hold does not matter
    assert masked_smooth_l1(pred, target, mask).item() == pytest.approx(expected.item())
    empty = masked_smooth_l1(pred.requires_grad_(), target, torch.zeros_like(mask))
    assert empty.item() == 0.0 and empty.requires_grad


def test_reconstruction_losses_are_the_weighted_smooth_l1_at_the_dropped_positions(toy_bundle: DataBundle) -> None:
    method = _build(toy_bundle, w_text=1.5, w_audio=0.5, w_vision=3.0, dropout=0.0).eval()
    method.on_train_epoch_start(1)
    batch = collate(toy_bundle["train"].samples[:16])
    losses = method.training_loss(batch)
    assert set(losses) == {"task", "reconstruction_text", "reconstruction_audio", "reconstruction_vision", "loss"}
    noisy = method.corrupt(batch)
    out = method.backbone(noisy)
    for m, weight in (("text", 1.5), ("audio", 0.5), ("vision", 3.0)):
        rebuilt = method.generate[m](method.temporal[m](out.extras[f"aligned_{m}"], noisy.mask(m)))
        assert rebuilt.shape == getattr(batch, m).shape
        dropped = dropped_positions(batch, noisy, m)
        expected = weight * F.smooth_l1_loss(rebuilt[dropped], getattr(batch, m)[dropped])
        assert losses[f"reconstruction_{m}"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert losses["loss"].item() == pytest.approx(sum(v.item() for k, v in losses.items() if k != "loss"), rel=1e-5)


def test_warmup_epochs_train_the_task_alone(toy_bundle: DataBundle) -> None:
    method = _build(toy_bundle, warmup_epochs=2)
    batch = collate(toy_bundle["train"].samples[:8])
    for epoch, reconstructs in ((0, False), (1, False), (2, True)):
        method.on_train_epoch_start(epoch)
        assert ("reconstruction_text" in method.training_loss(batch)) == reconstructs


def test_reconstruction_trains_the_alignment_and_the_generator_not_the_classifier(toy_bundle: DataBundle) -> None:
    method = _build(toy_bundle)
    method.on_train_epoch_start(1)
    losses = method.training_loss(collate(toy_bundle["train"].samples[:16]))
    sum(v for k, v in losses.items() if k.startswith("reconstruction_")).backward()
    grads = {n: p.grad for n, p in method.named_parameters()}
    assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in grads if n.startswith(("generate.", "temporal.")))
    for part in ("backbone.proj.audio", "backbone.intra.vision", "backbone.cross.text_from_audio", "backbone.cross.vision_from_text"):
        assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(part)), part
    assert all(grads[n] is None for n in grads if n.startswith("backbone.classifier."))


def test_a_zero_weight_drops_that_modality_and_its_generator(toy_bundle: DataBundle) -> None:
    method = _build(toy_bundle, w_audio=0.0)
    assert set(method.generate) == set(method.temporal) == {"text", "vision"}
    method.on_train_epoch_start(1)
    assert "reconstruction_audio" not in method.training_loss(collate(toy_bundle["train"].samples[:8]))


def test_prediction_is_the_networks_and_does_not_depend_on_the_generator(toy_bundle: DataBundle) -> None:
    method = _build(toy_bundle).eval()
    batch = collate(toy_bundle["test"].samples[:8])
    before = method.predict(batch)
    assert torch.allclose(before, method.backbone(batch).logits[:, 0])
    with torch.no_grad():
        for p in method.generate.parameters():
            p.add_(1.0)
    assert torch.equal(method.predict(batch), before)


@pytest.mark.parametrize(
    ("params", "message"),
    [({"w_vision": -1.0}, "weights must be >= 0"), ({"warmup_epochs": -1}, "warmup_epochs"), ({"warmup_epochs": 1.5}, "warmup_epochs"), ({"heads": 5}, "multiple of the number of heads")],
)
def test_bad_method_parameters_are_refused(toy_bundle: DataBundle, params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _build(toy_bundle, **params)


def test_a_backbone_without_aligned_sequences_is_refused(toy_bundle: DataBundle) -> None:
    backbone = BACKBONES.build("mult", toy_bundle.dims(), toy_bundle.task, dim=8, heads=2, layers=1)
    with pytest.raises(ConfigError, match="aligned_dim"):
        METHODS.build("tfr_net", backbone)


def test_a_backbone_returning_the_wrong_sequences_is_named(toy_bundle: DataBundle) -> None:
    method = _build(toy_bundle)
    batch = collate(toy_bundle["train"].samples[:4])
    out = method.backbone(batch)
    out.extras["aligned_text"] = out.extras["aligned_text"][..., :5]
    with pytest.raises(ConfigError, match=r"TFRNet: Output.extras\['aligned_text'\] must have shape .* got \(4, \d+, 5\)"):
        method.reconstruct(batch, out, "text")
    del out.extras["aligned_audio"]
    with pytest.raises(ConfigError, match=r"aligned_audio.*got NoneType"):
        method.reconstruct(batch, out, "audio")


@pytest.mark.parametrize(
    ("params", "message"),
    [({"kernel_sizes": {"audio": 4}}, "kernel_sizes"), ({"kernel_sizes": {"image": 3}}, "kernel_sizes"), ({"fusion_layers": 0}, "fusion_layers"), ({"dim": 9}, "heads")],
)
def test_bad_network_parameters_are_refused(toy_bundle: DataBundle, params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BACKBONES.build("tfr_net", toy_bundle.dims(), toy_bundle.task, **{**SMALL, **params})


def test_aligned_sequences_are_zero_at_padding_and_hold_both_other_modalities(toy_bundle: DataBundle) -> None:
    with seeded(0):
        net = BACKBONES.build("tfr_net", toy_bundle.dims(), toy_bundle.task, **SMALL).eval()
    batch = collate(toy_bundle["train"].samples[:8])
    out = net(batch)
    for m in MODALITIES:
        aligned = out.extras[f"aligned_{m}"]
        assert aligned.shape == (*batch.mask(m).shape, net.aligned_dim)
        assert not bool(aligned[~batch.mask(m)].any())
    changed = batch.replace(vision=batch.vision + 1.0)  # another vision stream changes the text's cross-modal part only
    text, other = out.extras["aligned_text"], net(changed).extras["aligned_text"]
    mask = batch.mask("text")
    assert torch.equal(text[..., : net.dim][mask], other[..., : net.dim][mask])
    assert not torch.allclose(text[..., 2 * net.dim :][mask], other[..., 2 * net.dim :][mask])


def test_training_lowers_the_reconstruction_error_of_dropped_features(toy_bundle: DataBundle) -> None:
    """Trained with reconstruction, the generator predicts dropped features better than before training."""
    method = _build(toy_bundle, warmup_epochs=0, dropout=0.0)
    batch = collate(toy_bundle["valid"].samples)
    noisy = corrupt_batch(batch, 0.5, seed=1)

    def error() -> float:
        with torch.no_grad():
            method.eval()
            out = method.backbone(noisy)
            return sum(masked_smooth_l1(method.reconstruct(noisy, out, m), getattr(batch, m), dropped_positions(batch, noisy, m)).item() for m in MODALITIES)

    before = error()
    fit(method, toy_bundle, TrainConfig(max_epochs=6, batch_size=16, lr=3e-3, patience=6, progress=False, valid_mode="missing"), seed=0)
    assert error() < 0.8 * before


def test_tfr_net_sweeps_on_its_own_network_next_to_the_text_centric_baseline(toy_bundle: DataBundle, tmp_path: Path) -> None:
    config = MissingSweepConfig.model_validate(
        {
            "data": {"name": "toy"},
            "backbone": {"name": "text_centric", "params": {"dim": 8, "heads": 2, "av_tokens": 2, "levels": 1}},
            "models": {"baseline": {"name": "missing_robust"}, "tfr_net": {"name": "tfr_net", "params": {"heads": 2, "warmup_epochs": 0}}},
            "backbones": {"tfr_net": {"name": "tfr_net", "params": SMALL}},
            "train": {"max_epochs": 1, "batch_size": 64},
            "sensitivity": {"enabled": False},
        }
    )
    results = sweep_missing(config, tmp_path / "sweep", seeds=[0], rates=[0.0, 0.9], bundle=toy_bundle)
    assert list(results["aggregate"]) == ["baseline", "tfr_net"]
    loaded = load_sweep_method(tmp_path / "sweep", "tfr_net", 0, bundle=toy_bundle)[0]
    assert isinstance(loaded.backbone, TFRNet) and set(loaded.generate) == set(MODALITIES)
    assert isinstance(load_sweep_method(tmp_path / "sweep", "baseline", 0, bundle=toy_bundle)[0].backbone, TextCentric)
    logged = (tmp_path / "sweep" / "seed_0" / "tfr_net" / "logs" / "metrics.csv").read_text()
    assert "train/reconstruction_vision" in logged
