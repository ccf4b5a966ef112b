"""MFM: the MMD estimator, the masked reconstruction loss, the factorised forward pass, which parameters each loss
trains, padding and empty sequences, and the configuration checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustmsa.data.batch import Sample, collate
from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.method import Supervised
from robustmsa.models.align import align_to_text
from robustmsa.models.mfm import MFM, SequenceDecoder, masked_mse, mmd
from robustmsa.registry import BACKBONES
from robustmsa.training.fit import seeded
from tests.conftest import make_toy_split

SIZES = {"text_hidden": 6, "audio_hidden": 3, "vision_hidden": 4, "mem_dim": 5, "attn_hidden": 8, "mem_hidden": 8, "gate_hidden": 8}
SIZES |= {"zy_dim": 6, "za_dim": 5, "fy_dim": 7, "fa_dim": 4, "decoder_hidden": 6, "hidden": 8}
DIMS = {"text": 16, "audio": 5, "vision": 4}
MODALITIES = ("text", "audio", "vision")
AUX = {"mfm_recon_text", "mfm_recon_audio", "mfm_recon_vision", "mfm_mmd"}


def _model(seed: int = 0, **extra: object) -> MFM:
    with seeded(seed):
        return MFM(DIMS, TaskSpec(), **{**SIZES, **extra})


def _batch(n: int, name: str, seed: int):
    return collate(make_toy_split(n, name, seed).samples)


def _reference_mmd(x: torch.Tensor, y: torch.Tensor, k) -> float:
    """MMD^2_u written pair by pair."""
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return float(xx + yy - 2 * xy)


def test_mmd_on_a_hand_set_case_and_against_a_pairwise_reference() -> None:
    x, y = torch.tensor([[0.0], [0.0]]), torch.tensor([[3.0], [3.0]])
    # imq, C = 1: k = 1 / (1 + r^2): within x and within y 1, across 1 / 10
    assert abs(float(mmd(x, y, "imq", scale=1.0)) - (1 + 1 - 2 * 0.1)) < 1e-6
    # default scale C = 2 d = 2 for d = 1; rbf k = exp(-r^2 / 2)
    assert abs(float(mmd(x, y, "rbf")) - (2 - 2 * math.exp(-4.5))) < 1e-6
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 3, generator=gen), torch.randn(4, 3, generator=gen) + 0.5
    imq = lambda u, v: 6.0 / (6.0 + (u - v).pow(2).sum())  # noqa: E731
    rbf = lambda u, v: torch.exp(-(u - v).pow(2).sum() / 6.0)  # noqa: E731
    assert abs(float(mmd(a, b, "imq")) - _reference_mmd(a, b, imq)) < 1e-5
    assert abs(float(mmd(a, b, "rbf")) - _reference_mmd(a, b, rbf)) < 1e-5
    assert float(mmd(a, b, "imq", scale=6.0)) == float(mmd(a, b, "imq"))


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_is_near_zero_for_one_distribution_and_grows_with_a_shift(kernel: str) -> None:
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(400, 4, generator=gen), torch.randn(400, 4, generator=gen)
    values = [float(mmd(x, y + shift, kernel)) for shift in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert abs(values[0]) < 2e-3
    assert all(a < b for a, b in zip(values, values[1:]))
    assert values[1] > 5e-3 and values[-1] > 0.4


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_is_unbiased_for_small_samples(kernel: str) -> None:
    """Averaged over many small samples (n = 3) of one distribution, the estimate is 0; the V-statistic (self-pairs
    included) would be about 2 / n (1 - E k) > 0.2 above it."""
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(2000, 3, 2, generator=gen), torch.randn(2000, 3, 2, generator=gen)
    values = torch.stack([mmd(a, b, kernel) for a, b in zip(x, y)])
    assert abs(float(values.mean())) < 0.02
    assert float(values.min()) < 0  # an unbiased estimate of 0 must go below it


def test_mmd_of_a_single_sample_is_zero_and_gradients_are_finite() -> None:
    one, many = torch.randn(1, 3), torch.randn(6, 3)
    assert float(mmd(one, many)) == 0.0 and float(mmd(many, one)) == 0.0 and float(mmd(one, one, "rbf")) == 0.0
    codes = torch.zeros(4, 3, requires_grad=True)  # identical rows: zero distances
    mmd(codes, many).backward()
    assert torch.isfinite(codes.grad).all()
    with pytest.raises(ConfigError, match="kernel"):
        mmd(many, many, "laplace")


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_minimising_the_mmd_moves_codes_to_the_prior(kernel: str) -> None:
    """Codes of an affine encoder, base * s + t, start far from N(0, I) (t = 3, s = 0.3): minimising the MMD against
    fresh prior draws at every step brings t to 0 and s to 1."""
    with seeded(0):
        base = torch.randn(64, 2)
        scale, shift = torch.full((2,), 0.3, requires_grad=True), torch.full((2,), 3.0, requires_grad=True)
        opt = torch.optim.Adam([scale, shift], lr=0.05)
        for _ in range(200):
            opt.zero_grad()
            mmd(base * scale + shift, torch.randn(64, 2), kernel).backward()
            opt.step()
    assert float(shift.detach().abs().max()) < 0.2
    assert float((scale.detach() - 1).abs().max()) < 0.2


def test_masked_mse_reads_only_real_steps() -> None:
    prediction = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]], requires_grad=True)
    target = torch.tensor([[[0.0, 2.0], [3.0, 6.0], [float("nan"), 1e6]], [[2.0, 1.0], [float("nan"), 5.0], [7.0, 7.0]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    loss = masked_mse(prediction, target, mask)
    assert abs(float(loss.detach()) - (1 + 0 + 0 + 4 + 1 + 0) / 6) < 1e-6  # 3 real steps x 2 features
    loss.backward()
    assert torch.isfinite(prediction.grad).all() and (prediction.grad[~mask] == 0).all()
    full = torch.ones(2, 3, dtype=torch.bool)
    clean = torch.nan_to_num(target, nan=0.0)
    torch.testing.assert_close(masked_mse(prediction, clean, full), F.mse_loss(prediction, clean))  # MMSA's loss without padding
    empty = torch.zeros(2, 3, dtype=torch.bool)
    assert float(masked_mse(prediction, target, empty).detach()) == 0.0


def test_decoder_reads_the_factors_and_the_relative_position_at_every_step() -> None:
    with seeded(0):
        decoder = SequenceDecoder(3, 5, 2)
    factors = torch.randn(3, 3)
    mask = torch.tensor([[True, True, True, True], [True, False, False, False], [False, False, False, False]])
    with torch.no_grad():
        out = decoder(factors, mask)
        for i, n in enumerate((4, 1)):
            position = torch.arange(n, dtype=torch.float32) / max(n - 1, 1)  # 0 ... 1
            inputs = torch.cat([factors[i].expand(n, 3), position.unsqueeze(-1)], dim=-1).unsqueeze(0)
            torch.testing.assert_close(out[i, :n], decoder.out(decoder.rnn(inputs)[0])[0])
    assert (out[1, 1:] == 0).all() and (out[2] == 0).all()
    assert decoder(factors, torch.zeros(3, 0, dtype=torch.bool)).shape == (3, 0, 2)


def test_forward_follows_the_factorisation() -> None:
    """Z_y = W [MFN's h_t; h_a; h_v; u], F_y = D_y(Z_y), Y = D(F_y); Z_a(m) = W_m LSTM_m(X_m), F_a(m) = D_a(m)(Z_a(m));
    X_hat_m = F_m([F_a(m); F_y])."""
    model = _model(1).eval()
    batch = _batch(5, "f", 1)
    with torch.no_grad():
        out = model(batch)
        inputs = {"text": batch.text, "audio": align_to_text(batch, "audio"), "vision": align_to_text(batch, "vision")}
        h, _, memory, traces = model.mfn.run(inputs, batch.mask("text"))
        z_y = model.to_zy(torch.cat([h["text"], h["audio"], h["vision"], memory], dim=-1))
        f_y = model.factor_y(z_y)
        torch.testing.assert_close(out.extras["z_y"], z_y)
        torch.testing.assert_close(out.fused, f_y)
        torch.testing.assert_close(out.logits, model.head(f_y))
        torch.testing.assert_close(out.extras["dman_attention"], traces["dman_attention"])
        for m in MODALITIES:
            z = model.to_za[m](model.encoders[m](getattr(batch, m), batch.mask(m)))
            torch.testing.assert_close(out.extras[f"z_{m}"], z)
            torch.testing.assert_close(out.modality[m], model.factor_a[m](z))
            torch.testing.assert_close(out.extras[f"recon_{m}"], model.decoders[m](torch.cat([model.factor_a[m](z), f_y], dim=-1), batch.mask(m)))
    assert (out.fused >= 0).all() and all((f >= 0).all() for f in out.modality.values())  # ReLU factors, as MMSA's
    assert not hasattr(model.mfn, "head")  # the MFN encoder's own output MLP is not part of the model


def test_extras_shapes_and_padded_steps() -> None:
    model = _model(2).eval()
    batch = _batch(6, "x", 2)
    with torch.no_grad():
        out = model(batch)
    e = out.extras
    assert e["z_y"].shape == (6, SIZES["zy_dim"]) and out.fused.shape == (6, SIZES["fy_dim"])
    for m in MODALITIES:
        assert e[f"z_{m}"].shape == (6, SIZES["za_dim"]) and out.modality[m].shape == (6, SIZES["fa_dim"])
        x, mask = getattr(batch, m), batch.mask(m)
        assert e[f"recon_{m}"].shape == x.shape
        assert not mask.all() and (e[f"recon_{m}"][~mask] == 0).all() and (e[f"recon_{m}"][mask] != 0).any()
    lt = batch.text.shape[1]
    assert e["dman_attention"].shape == (6, lt, 2 * (6 + 3 + 4))
    torch.testing.assert_close(e["dman_attention"].sum(-1)[batch.mask("text")], torch.ones(int(batch.mask("text").sum())))
    assert all(isinstance(v, torch.Tensor) for v in e.values())


def test_padding_changes_neither_outputs_nor_reconstruction_losses() -> None:
    split = make_toy_split(6, "p", 3)
    model = _model(3, dropout=0.0, factor_dropout=0.0).train()  # train mode for the losses; no dropout: deterministic
    short = min(range(6), key=lambda i: split.samples[i].audio.shape[0])
    batch = collate(split.samples)
    la = int(batch.lengths("audio")[short])
    assert la < batch.audio.shape[1]
    audio = batch.audio.clone()
    audio[short, la:] = float("nan")  # whatever the padding holds
    noisy = batch.replace(audio=audio)
    alone_batch = collate([split.samples[short]])
    clean, out, alone = model(batch), model(noisy), model(alone_batch)
    torch.testing.assert_close(out.logits[short : short + 1], alone.logits, atol=1e-5, rtol=1e-5)
    for m in MODALITIES:
        n = int(batch.lengths(m)[short])
        torch.testing.assert_close(out.extras[f"recon_{m}"][short, :n], alone.extras[f"recon_{m}"][0, :n], atol=1e-5, rtol=1e-5)
    recon = {k: v for k, v in model.auxiliary_losses(noisy, out).items() if k.startswith("mfm_recon")}
    reference = {k: v for k, v in model.auxiliary_losses(batch, clean).items() if k.startswith("mfm_recon")}
    assert all(torch.isfinite(v) for v in recon.values())
    torch.testing.assert_close(recon, reference)
    # pooled over the real steps of the batch, by hand
    x, mask, rec = batch.audio, batch.mask("audio"), clean.extras["recon_audio"].detach()
    by_hand = sum(float((rec[i, : int(mask[i].sum())] - x[i, : int(mask[i].sum())]).pow(2).sum()) for i in range(6)) / (int(mask.sum()) * DIMS["audio"])
    assert abs(float(reference["mfm_recon_audio"].detach()) / model.recon_weights["audio"] - by_hand) < 1e-4
    sum(recon.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_an_empty_sequence_adds_nothing_to_its_reconstruction_loss() -> None:
    rng = np.random.default_rng(0)
    others = make_toy_split(3, "o", 4).samples
    empty = Sample(id="e", label=0.5, text=rng.normal(size=(5, 16)).astype(np.float32), audio=np.zeros((0, 5), np.float32), vision=np.zeros((0, 4), np.float32))
    model = _model(4, dropout=0.0, factor_dropout=0.0).train()
    with_empty, without = collate(others + [empty]), collate(others)
    a = model.auxiliary_losses(with_empty, out := model(with_empty))
    b = model.auxiliary_losses(without, model(without))
    for m in ("audio", "vision"):
        torch.testing.assert_close(a[f"mfm_recon_{m}"], b[f"mfm_recon_{m}"])
        assert (out.extras[f"recon_{m}"][3] == 0).all()
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.extras["z_audio"]).all()
    only_empty = collate([empty, empty])  # no real audio step in the whole batch
    losses = model.auxiliary_losses(only_empty, model(only_empty))
    assert float(losses["mfm_recon_audio"].detach()) == 0.0 and float(losses["mfm_recon_text"].detach()) > 0


def _reached(loss: torch.Tensor, model: MFM) -> set[str]:
    named = list(model.named_parameters())
    grads = torch.autograd.grad(loss, [p for _, p in named], retain_graph=True, allow_unused=True)
    return {n for (n, _), g in zip(named, grads) if g is not None and bool(g.abs().sum() > 0)}


def _under(model: MFM, *prefixes: str) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(prefixes)}


def test_which_parameters_each_loss_trains() -> None:
    model = _model(5, zy_dim=12, fy_dim=12, fa_dim=8, za_dim=8).train()
    batch = _batch(12, "r", 5)
    out = model(batch)
    with seeded(1):
        losses = model.auxiliary_losses(batch, out)
    assert set(losses) == AUX
    discriminative = ("mfn.", "to_zy.", "factor_y.")
    # the prediction reads F_y only
    assert _reached(out.logits.sum(), model) == _under(model, *discriminative, "head.")
    # reconstruction of m: its generative path, its decoder and the whole F_y path (shared by every decoder), not the head
    for m in MODALITIES:
        assert _reached(losses[f"mfm_recon_{m}"], model) == _under(model, *discriminative, f"encoders.{m}.", f"to_za.{m}.", f"factor_a.{m}.", f"decoders.{m}.")
    # MMD on the latents: the encoders only (not the factor networks, decoders or head)
    assert _reached(losses["mfm_mmd"], model) == _under(model, "mfn.", "to_zy.", "encoders.", "to_za.")


def test_weights_scale_their_terms_and_zero_weights_give_zero_terms() -> None:
    batch = _batch(8, "w", 6)
    model = _model(6, dropout=0.0, factor_dropout=0.0).train()
    out = model(batch)
    with seeded(2):
        base = model.auxiliary_losses(batch, out)
    model.mmd_weight = 3 * model.mmd_weight
    model.recon_weights = {m: 2 * w for m, w in model.recon_weights.items()}
    with seeded(2):  # the same prior draws
        scaled = model.auxiliary_losses(batch, out)
    for m in MODALITIES:
        torch.testing.assert_close(scaled[f"mfm_recon_{m}"], 2 * base[f"mfm_recon_{m}"])
    torch.testing.assert_close(scaled["mfm_mmd"], 3 * base["mfm_mmd"])
    assert all(float(v.detach()) != 0 for v in base.values())
    zero = _model(6, dropout=0.0, factor_dropout=0.0, mmd_weight=0.0, text_recon_weight=0.0, audio_recon_weight=0.0, vision_recon_weight=0.0).train()
    losses = Supervised(zero).training_loss(batch)
    assert AUX <= set(losses) and all(float(losses[k].detach()) == 0.0 for k in AUX)
    torch.testing.assert_close(losses["loss"], losses["task"])


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_a_training_batch_of_one_sample(kind: str) -> None:
    task = TaskSpec() if kind == "regression" else TaskSpec(kind="classification", num_classes=7, label_range=None)
    with seeded(0):
        method = Supervised(MFM(DIMS, task, **SIZES)).train()
    losses = method.training_loss(collate(make_toy_split(1, "o", 8, task=task).samples))
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    assert float(losses["mfm_mmd"].detach()) == 0.0 and float(losses["mfm_recon_text"].detach()) > 0
    losses["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in method.parameters() if p.grad is not None)


BAD = [("zy_dim", 0), ("fa_dim", 2.5), ("hidden", True), ("text_hidden", -1), ("dropout", 1.0), ("factor_dropout", -0.1), ("mmd_weight", -1.0)]
BAD += [("audio_recon_weight", float("nan")), ("vision_recon_weight", "1"), ("kernel", "gauss")]


@pytest.mark.parametrize(("key", "value"), BAD)
def test_bad_settings_are_refused(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"mfm {key}"):
        MFM(DIMS, TaskSpec(), **{key: value})


def test_registered_and_built_with_its_defaults() -> None:
    model = BACKBONES.build("mfm", DIMS, TaskSpec())
    assert isinstance(model, MFM) and model.kernel == "imq"
    with pytest.raises(ConfigError, match="needs modalities"):
        BACKBONES.build("mfm", {"text": 16, "audio": 5}, TaskSpec())
