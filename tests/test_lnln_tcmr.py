"""LNLN, TCMR and the missing-robust baseline: losses, phases, stage-1 teachers, validation mode."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from robustmsa.data.batch import collate
from robustmsa.data.dataset import DataBundle
from robustmsa.errors import ConfigError, DataError
from robustmsa.reconstruct.base import blend_text
from robustmsa.reconstruct.corruption import corrupt_batch, corrupt_for_training, missing_positions, training_rates
from robustmsa.reconstruct.proxy import GradReverse, LatentReconstructor, ProxyGenerator
from robustmsa.reconstruct.tcmr import complete_text_bundle, polarity_classes
from robustmsa.registry import BACKBONES, METHODS
from robustmsa.training.fit import TrainConfig, fit, predict, seeded

SMALL = {"dim": 8, "heads": 2, "text_layers": 1, "av_tokens": 2, "av_layers": 1, "levels": 1, "fusion_layers": 1, "dropout": 0.0}
FAST = TrainConfig(max_epochs=2, batch_size=64, progress=False, valid_mode="missing", patience=2)


def _build(name: str, bundle: DataBundle, seed: int = 0, **params: object):
    with seeded(seed):
        backbone = BACKBONES.build("text_centric", bundle.dims(), bundle.task, **SMALL)
        return METHODS.build(name, backbone, heads=2, **params) if name != "missing_robust" else METHODS.build(name, backbone, **params)


def _grads(module: torch.nn.Module) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_grad_reverse_negates_gradient() -> None:
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    (GradReverse.apply(x) * torch.tensor([3.0, 5.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-3.0, -5.0]))


def test_ipfg_gate_selects_the_audio_generator_when_saturated() -> None:
    torch.manual_seed(0)
    proxy = ProxyGenerator(8, 2, kind="ipfg", dropout=0.0)
    last = proxy.gate[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.constant_(last.bias, 40.0)  # alpha = sigmoid(40) ~ 1
    enc = {f"{m}_{k}": v for m in ("audio", "vision") for k, v in (("tokens", torch.randn(3, 4, 8)), ("mask", torch.ones(3, 4, dtype=torch.bool)))}
    mask = torch.ones(3, 5, dtype=torch.bool)
    h_p, alpha = proxy(mask, enc)
    assert torch.allclose(alpha, torch.ones(3))
    assert torch.allclose(h_p, proxy.generators["audio"](mask, enc["audio_tokens"], enc["audio_mask"]), atol=1e-6)


@pytest.mark.parametrize("query", ["position", "text"])
def test_proxy_queries_use_text_tokens_only_when_asked(query: str) -> None:
    torch.manual_seed(0)
    proxy = ProxyGenerator(8, 2, kind="joint", query=query, dropout=0.0)
    enc = {f"{m}_{k}": v for m in ("audio", "vision") for k, v in (("tokens", torch.randn(2, 3, 8)), ("mask", torch.ones(2, 3, dtype=torch.bool)))}
    mask = torch.ones(2, 4, dtype=torch.bool)
    a, _ = proxy(mask, {**enc, "text_tokens": torch.randn(2, 4, 8)})
    b, _ = proxy(mask, {**enc, "text_tokens": torch.randn(2, 4, 8)})
    assert torch.allclose(a, b) == (query == "position")


@pytest.mark.parametrize(("blend", "reconstruction"), [("sample", "frames"), ("missing", "frames"), ("sample", "latent")])
def test_lnln_loss_terms_and_gradients(toy_bundle: DataBundle, blend: str, reconstruction: str) -> None:
    method = _build("lnln", toy_bundle, blend=blend, reconstruction=reconstruction)
    batch = collate(toy_bundle["train"].samples[:16])
    losses = method.training_loss(batch)
    assert set(losses) == {"task", "completeness", "adversarial", "reconstruction", "loss"}
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    for part in (method.completeness, method.proxy, method.discriminator, method.reconstructor, method.backbone.fusion):
        assert _grads(part)
    method.eval()  # without dropout, the same epoch gives the same corruption and the same loss
    epoch0 = method.training_loss(batch)["loss"].item()
    assert method.training_loss(batch)["loss"].item() == pytest.approx(epoch0)
    method.on_train_epoch_start(1)  # corruption redrawn
    assert method.training_loss(batch)["loss"].item() != pytest.approx(epoch0, abs=1e-6)


def test_latent_reconstruction_targets_the_real_complete_tokens_only(toy_bundle: DataBundle) -> None:
    torch.manual_seed(0)
    rec = LatentReconstructor(8, 2, dropout=0.0)
    lengths = {"text": 5, "audio": 3, "vision": 3}
    enc = {f"{m}_tokens": torch.randn(2, n, 8) for m, n in lengths.items()}
    enc.update({f"{m}_mask": torch.ones(2, n, dtype=torch.bool) for m, n in lengths.items()})
    enc["text_mask"][1, 3:] = False  # the second text is padded after 3 tokens
    clean = {k: v.clone() for k, v in enc.items()}
    loss = rec(enc, clean)
    expected = sum(((rec.out[m](rec.attend[m](enc[f"{m}_tokens"], enc[f"{m}_mask"])) - clean[f"{m}_tokens"]) ** 2)[enc[f"{m}_mask"]].mean() for m in lengths)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    clean["text_tokens"][1, 4] += 100.0  # a padded position: ignored
    assert rec(enc, clean).item() == pytest.approx(loss.item(), rel=1e-6)
    clean["text_tokens"][1, 0] += 1.0  # a real one: counted
    assert rec(enc, clean).item() > loss.item()
    clean = {k: v.requires_grad_() if v.is_floating_point() else v for k, v in clean.items()}
    rec(enc, clean).backward()
    assert all(clean[f"{m}_tokens"].grad is None for m in lengths)  # a stop-gradient target
    with pytest.raises(ConfigError, match="reconstruction must be 'frames' or 'latent'"):
        _build("lnln", toy_bundle, reconstruction="pixels")


def test_polarity_classes_by_hand() -> None:
    y = np.array([-2.0, -0.6, -0.4, 0.0, 0.49, 0.51, 3.0])
    expected = [0, 0, 1, 1, 1, 2, 2]
    assert polarity_classes(y).tolist() == expected
    assert polarity_classes(torch.tensor(y, dtype=torch.float32)).tolist() == expected
    sims = np.array([-1.0, -0.1, -0.09, 0.0, 0.1, 0.11, 0.6])  # SIMS's Acc-3 bins, closed on the right
    expected = [0, 0, 1, 1, 1, 2, 2]
    assert polarity_classes(sims, "sims").tolist() == expected
    assert polarity_classes(torch.tensor(sims, dtype=torch.float64), "sims").tolist() == expected


def test_tcmr_phases_partition_parameters_and_schedules(toy_bundle: DataBundle) -> None:
    assert _build("tcmr", toy_bundle).text_encoder_phase == "both"  # the default (see the TCMR module doc)
    method = _build("tcmr", toy_bundle, text_encoder_phase="confidence")
    assert method.phases == ("confidence", "main")
    conf = {id(p) for p in method.phase_parameters("confidence")}
    main = {id(p) for p in method.phase_parameters("main")}
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert conf and main and not conf & main and conf | main == trainable
    assert {id(p) for p in method.confnet.parameters()} <= conf
    assert {id(p) for p in method.backbone.text_encoder.parameters()} <= conf
    assert not {id(p) for p in method.text_teacher.parameters()} & trainable  # frozen teachers
    first = _build("tcmr", toy_bundle, schedule="confnet_first", switch_epoch=2)
    assert [first.active_phases(e) for e in range(4)] == [("confidence",), ("confidence",), ("main",), ("main",)]
    later = _build("tcmr", toy_bundle, schedule="confnet_later", switch_epoch=1)
    assert [later.active_phases(e) for e in range(3)] == [("main",), ("confidence",), ("confidence",)]
    both = _build("tcmr", toy_bundle, text_encoder_phase="both")
    text = {id(p) for p in both.backbone.text_encoder.parameters()}
    assert text <= {id(p) for p in both.phase_parameters("main")} and text <= {id(p) for p in both.phase_parameters("confidence")}
    assert not {id(p) for p in both.confnet.parameters()} & {id(p) for p in both.phase_parameters("main")}
    both.teachers_ready.fill_(True)  # skip stage 1: only the gradient flow is checked here
    both.training_loss(collate(toy_bundle["train"].samples[:8]), "main")["loss"].backward()
    assert _grads(both.backbone.text_encoder) and not _grads(both.confnet)
    main_only = _build("tcmr", toy_bundle, text_encoder_phase="main")
    text = {id(p) for p in main_only.backbone.text_encoder.parameters()}
    assert text <= {id(p) for p in main_only.phase_parameters("main")} and not text & {id(p) for p in main_only.phase_parameters("confidence")}
    main_only.teachers_ready.fill_(True)
    main_only.training_loss(collate(toy_bundle["train"].samples[:8]), "confidence")["loss"].backward()
    assert _grads(main_only.confnet) and not _grads(main_only.backbone.text_encoder)
    end2end = _build("tcmr", toy_bundle, schedule="end2end")
    assert end2end.phases == ("main",) and {id(p) for p in end2end.phase_parameters("main")} == {id(p) for p in end2end.parameters() if p.requires_grad}
    with pytest.raises(ConfigError):
        _build("tcmr", toy_bundle, schedule="sometimes")
    with pytest.raises(ConfigError):  # not a composable text-centric backbone
        METHODS.build("tcmr", BACKBONES.build("text_only", toy_bundle.dims(), toy_bundle.task))


def test_tcmr_needs_stage_one_and_trains_teachers_once(toy_bundle: DataBundle) -> None:
    method = _build("tcmr", toy_bundle, text_encoder_phase="confidence")
    batch = collate(toy_bundle["train"].samples[:16])
    with pytest.raises(ConfigError):
        method.training_loss(batch, "main")
    record = method.prepare(toy_bundle, FAST, seed=0)
    assert set(record) == {"text_teacher", "polarity"} and bool(method.teachers_ready)
    teacher = {k: v.clone() for k, v in method.text_teacher.state_dict().items()}
    assert all(torch.equal(teacher[f"encoder.{k}"], v) for k, v in method.backbone.text_encoder.state_dict().items())  # H_t starts in the teacher's space
    # phase A: only ConfNet and the text encoder receive gradients; phase B: never ConfNet (nor, here, the text encoder)
    losses = method.training_loss(batch, "confidence")
    assert set(losses) == {"confidence", "loss"}
    losses["loss"].backward()
    assert _grads(method.confnet) and _grads(method.backbone.text_encoder) and not _grads(method.proxy)
    method.zero_grad()
    losses = method.training_loss(batch, "main")
    assert set(losses) == {"text_reconstruction", "av_reconstruction", "task", "loss"}
    losses["loss"].backward()
    assert _grads(method.proxy) and _grads(method.reconstructor) and not _grads(method.confnet) and not _grads(method.backbone.text_encoder)
    method.zero_grad()
    fit(method, toy_bundle, FAST, seed=0)  # prepare is skipped: teachers stay as they were
    assert all(torch.equal(teacher[k], v) for k, v in method.text_teacher.state_dict().items())
    # TCE labels are the frozen classifier's true-class probabilities
    noisy = method.corrupt(batch)
    probs = method.polarity(noisy).logits.softmax(-1)
    expected = probs[torch.arange(len(batch)), polarity_classes(batch.label)]
    assert torch.allclose(method.confidence_target(noisy), expected)


def test_tcmr_without_tce_uses_missing_rate_and_skips_classifier(toy_bundle: DataBundle) -> None:
    method = _build("tcmr", toy_bundle, confidence="missing_rate", proxy="joint")
    assert method.polarity is None and method.proxy.kind == "joint"
    noisy = method.corrupt(collate(toy_bundle["train"].samples[:8]))
    assert torch.allclose(method.confidence_target(noisy), 1.0 - noisy.extras["missing_rate_text"])


def test_blend_text_replaces_text_by_the_proxy_where_it_should(toy_bundle: DataBundle) -> None:
    noisy = corrupt_batch(collate(toy_bundle["train"].samples[:8]), {"text": 0.5}, seed=1)
    missing = missing_positions(noisy, "text")
    present = ~missing & noisy.text_mask
    assert missing.any() and present.any()
    h_t, h_p = torch.randn(2, *noisy.text_mask.shape, 4).unbind(0)
    w = torch.linspace(0.0, 1.0, 8)
    everywhere = blend_text(noisy, h_t, h_p, w, "sample")
    torch.testing.assert_close(everywhere, w[:, None, None] * h_t + (1 - w[:, None, None]) * h_p)
    only_missing = blend_text(noisy, h_t, h_p, w, "missing")
    torch.testing.assert_close(only_missing[present], h_t[present])
    torch.testing.assert_close(only_missing[missing], everywhere[missing])
    for name in ("tcmr", "lnln"):
        assert _build(name, toy_bundle, blend="missing").blend == "missing"
        with pytest.raises(ConfigError, match="blend"):
            _build(name, toy_bundle, blend="tokens")


def test_missing_robust_trains_and_validates_at_r50(toy_bundle: DataBundle) -> None:
    method = _build("missing_robust", toy_bundle)
    result = fit(method, toy_bundle, FAST, seed=0)
    assert result.best_score is not None and np.isfinite(result.best_score)
    clean = predict(method, toy_bundle["valid"], "factual")
    missing = predict(method, toy_bundle["valid"], "missing")
    assert not np.allclose(clean, missing)
    assert np.allclose(missing, predict(method, toy_bundle["valid"], "missing"))  # fixed validation masks


def test_complete_text_bundle_drops_text_missing_by_nature(toy_bundle: DataBundle) -> None:
    train = toy_bundle["train"].samples
    gone = {s.id for s in train[:5]}
    samples = [dataclasses.replace(s, text=np.zeros_like(s.text)) if s.id in gone else s for s in train]
    bundle = DataBundle({**toy_bundle.splits, "train": type(toy_bundle["train"])(samples, name="train", source="toy", task=toy_bundle.task)}, toy_bundle.task)
    out = complete_text_bundle(bundle)
    assert len(out["train"]) == len(train) - 5 and not gone & set(out["train"].ids)
    labelled = complete_text_bundle(bundle, task=dataclasses.replace(bundle.task, kind="classification", num_classes=3, label_range=None))
    assert [s.label_class for s in labelled["valid"]] == polarity_classes(bundle["valid"].labels()).tolist()
    empty = [dataclasses.replace(s, text=np.zeros_like(s.text)) for s in train]
    with pytest.raises(DataError):
        complete_text_bundle(DataBundle({**toy_bundle.splits, "train": type(toy_bundle["train"])(empty, name="train", source="toy", task=toy_bundle.task)}, toy_bundle.task))


def test_estimates_report_completeness_and_confidence_against_their_targets(toy_bundle: DataBundle) -> None:
    from robustmsa.evaluation.missing_protocol import evaluate_missing

    batch = collate(toy_bundle["test"].samples[:16])
    lnln = _build("lnln", toy_bundle).eval()
    with torch.no_grad():
        clean, heavy = lnln.estimates(corrupt_batch(batch, 0.0, seed=0)), lnln.estimates(corrupt_batch(batch, 0.9, seed=0))
        _, _, w, _ = lnln.represent(corrupt_batch(batch, 0.9, seed=0))
    assert set(heavy) == {"completeness", "completeness_target", "completeness_error"}
    assert torch.all(clean["completeness_target"] == 1.0) and heavy["completeness_target"].mean() < 0.3
    assert torch.allclose(heavy["completeness_error"], (heavy["completeness"] - heavy["completeness_target"]).abs())
    assert torch.equal(heavy["completeness"], w)  # the w the model blends with
    assert set(lnln.estimates(batch)) == {"completeness"}  # an uncorrupted batch records no missing rate: no target
    tcmr = _build("tcmr", toy_bundle)
    tcmr.prepare(toy_bundle, FAST, seed=0)
    tcmr.eval()
    noisy = corrupt_batch(batch, 0.5, seed=0)
    with torch.no_grad():
        got = tcmr.estimates(noisy)
        assert torch.allclose(got["confidence_target"], tcmr.confidence_target(noisy))
    assert set(got) == {"confidence", "confidence_target", "confidence_error", "ipfg_alpha"}
    assert torch.all((got["ipfg_alpha"] >= 0) & (got["ipfg_alpha"] <= 1))
    swept = evaluate_missing(lnln, toy_bundle["test"], [0.0, 0.9], seed=0)
    assert swept["estimates"]["0.0"]["completeness_target"] == 1.0 and swept["estimates"]["0.9"]["completeness_target"] < 0.3
    assert "estimates" not in evaluate_missing(_build("missing_robust", toy_bundle), toy_bundle["test"], [0.0], seed=0)


def test_a_user_backbone_that_breaks_the_composable_contract_is_named(toy_bundle: DataBundle) -> None:
    from robustmsa.models.text_centric import TextCentric

    class NoAudioMask(TextCentric):
        def encode(self, batch):
            enc = super().encode(batch)
            del enc["audio_mask"]
            return enc

    class Wider(TextCentric):
        def encode(self, batch):
            enc = super().encode(batch)
            return {**enc, "vision_tokens": torch.cat([enc["vision_tokens"], enc["vision_tokens"]], dim=-1)}

    batch = collate(toy_bundle["train"].samples[:4])
    for cls, message in ((NoAudioMask, "must return a dict with tensors 'audio_tokens' and 'audio_mask'"), (Wider, r"'vision_tokens'\] has shape \(4, 2, 16\); expected .*dim 8")):
        with seeded(0):
            method = METHODS.build("lnln", cls(toy_bundle.dims(), toy_bundle.task, **SMALL), heads=2)
        with pytest.raises(ConfigError, match=rf"backbone {cls.__name__}: encode\(\)(\[)?.*{message}"):
            method.training_loss(batch)

    class OneArgument(torch.nn.Module):
        dim = 8

        def forward(self, x):
            return x

    backbone = BACKBONES.build("text_centric", toy_bundle.dims(), toy_bundle.task, **SMALL)
    backbone.text_encoder = OneArgument()
    with pytest.raises(ConfigError, match=r"TCMR calls TextCentric.text_encoder\(features, mask\); its forward\(x\) does not take"):
        METHODS.build("tcmr", backbone, heads=2)
    with pytest.raises(ConfigError, match=r"lnln loss weights must be >= 0, got \{'task': -1.0\}"):
        _build("lnln", toy_bundle, w_task=-1.0)
    with pytest.raises(ConfigError, match=r"tcmr loss weights must be >= 0"):
        _build("tcmr", toy_bundle, gamma=-0.1)


def test_every_method_corrupts_its_training_batches_by_its_complete_share_and_per(toy_bundle: DataBundle) -> None:
    batch = collate(toy_bundle["train"].samples[:16])
    for name in ("missing_robust", "lnln", "tcmr"):
        method = _build(name, toy_bundle, complete_share=0.5, complete_per="modality")
        seed = int(method.corruption_seed)
        rates = training_rates(batch.ids, ("text", "audio", "vision"), seed, 0, complete_share=0.5, complete_per="modality")
        per_sample = training_rates(batch.ids, ("text", "audio", "vision"), seed, 0, complete_share=0.5)
        assert not np.array_equal(rates["text"], per_sample["text"])
        noisy = method.corrupt(batch)
        expected = corrupt_for_training(batch, seed, method.epoch, complete_share=0.5, complete_per="modality")
        assert all(torch.equal(getattr(noisy, m), getattr(expected, m)) for m in ("text", "audio", "vision"))
        assert (noisy.extras["missing_rate_text"][torch.from_numpy(rates["text"] == 0)] == 0).all()
        with pytest.raises(ConfigError, match="complete_per must be one of"):
            _build(name, toy_bundle, complete_per="batch")
