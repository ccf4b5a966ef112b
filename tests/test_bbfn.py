"""BBFN: the gated cross-modal update, both-way attention in two separate modules, empty sequences, the separator loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustmsa.data.batch import Batch, Sample, collate
from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.method import Supervised
from robustmsa.models.base import Output
from robustmsa.models.bbfn import BBFN, GatedCrossLayer, ModalitySeparator
from robustmsa.training.fit import seeded
from tests.conftest import make_toy_split

DIMS = {"text": 16, "audio": 5, "vision": 4}
SIZES = {"dim": 8, "heads": 2, "layers": 2, "dropout": 0.0, "embed_dropout": 0.0}
STREAMS = ("text_from_audio", "audio_from_text", "text_from_vision", "vision_from_text")


def _model(seed: int = 0, task: TaskSpec | None = None, **extra) -> BBFN:
    with seeded(seed):
        return BBFN(DIMS, task or TaskSpec(), **{**SIZES, **extra}).eval()


def _constant(layer: torch.nn.Linear, bias: list[float]) -> None:
    """Make a linear layer output the constant ``bias``."""
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.tensor(bias))


def _batch(n: int = 5, name: str = "b", seed: int = 0) -> Batch:
    return collate(make_toy_split(n, name, seed).samples)


def test_gated_update_on_a_hand_set_case() -> None:
    """out = g_c ⊙ Attn + g_r ⊙ x (+ FF, here zero); a sample without keys gets g_r ⊙ x only."""
    with seeded(0):
        layer = GatedCrossLayer(2, 1, 0.0).eval()
    _constant(layer.block.attn.out_proj, [0.5, -1.0])  # every query reads the value (0.5, -1)
    _constant(layer.block.ff[-1], [0.0, 0.0])  # the feed-forward adds nothing
    _constant(layer.retain, [0.0, math.log(3.0)])  # g_r = (1/2, 3/4)
    _constant(layer.compound, [math.log(3.0), 0.0])  # g_c = (3/4, 1/2)
    x = torch.tensor([[[1.0, 2.0], [-2.0, 0.4]], [[3.0, -1.0], [0.0, 0.0]]])
    source = torch.randn(2, 3, 2)
    source_mask = torch.tensor([[True, True, False], [False, False, False]])  # the second sample has no keys
    with torch.no_grad():
        out, retain, compound = layer(x, source, source_mask, torch.randn(2, 4))
    torch.testing.assert_close(retain, torch.tensor([[0.5, 0.75]] * 2))
    torch.testing.assert_close(compound, torch.tensor([[0.75, 0.5]] * 2))
    g_r, g_c, read = torch.tensor([0.5, 0.75]), torch.tensor([0.75, 0.5]), torch.tensor([0.5, -1.0])
    torch.testing.assert_close(out[0], g_c * read + g_r * x[0])
    torch.testing.assert_close(out[1], g_r * x[1])
    assert out[0, 0].tolist() == pytest.approx([0.75 * 0.5 + 0.5 * 1.0, 0.5 * -1.0 + 0.75 * 2.0])


def test_gated_layer_follows_the_equations() -> None:
    """Z = σ(W_c c + b_c) ⊙ softmax(Q K^T / sqrt(d)) V + σ(W_r c + b_r) ⊙ x over the real keys only; out = Z + FF(LN(Z))."""
    with seeded(1):
        layer = GatedCrossLayer(4, 1, 0.0).eval()
        x, source, control = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 8)
    lengths = [5, 2]
    mask = torch.arange(5).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    source[1, 2:] = 1e4  # padded keys must not count
    block = layer.block
    w_q, w_k, w_v = block.attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = block.attn.in_proj_bias.chunk(3)
    with torch.no_grad():
        out, _, _ = layer(x, source, mask, control)
        for i, n in enumerate(lengths):
            q = block.norm_q(x[i]) @ w_q.t() + b_q
            kv = block.norm_kv(source[i, :n])
            k, v = kv @ w_k.t() + b_k, kv @ w_v.t() + b_v
            attended = block.attn.out_proj(torch.softmax(q @ k.t() / 2.0, dim=-1) @ v)
            z = torch.sigmoid(layer.compound(control[i])) * attended + torch.sigmoid(layer.retain(control[i])) * x[i]
            torch.testing.assert_close(out[i], z + block.ff(block.norm_ff(z)), atol=1e-5, rtol=1e-5)


def test_the_gru_separator_reads_each_streams_true_length() -> None:
    with seeded(2):
        separator = ModalitySeparator(4, "gru").eval()
        x = torch.randn(3, 6, 4)
    mask = torch.arange(6).unsqueeze(0) < torch.tensor([6, 3, 0]).unsqueeze(1)
    x[1, 3:] = float("nan")  # padding
    with torch.no_grad():
        encoded = separator.encode("other", x, mask)
        for i, n in enumerate([6, 3]):
            out, _ = separator.encoders["other"](x[i : i + 1, :n])
            torch.testing.assert_close(encoded[i], (0.5 * (out[0, :, :4] + out[0, :, 4:])).mean(0))
    assert (encoded[2] == 0).all()  # an empty stream
    linear = ModalitySeparator(4, "linear")
    with torch.no_grad():
        torch.testing.assert_close(linear.encode("text", x.nan_to_num(), mask)[1], linear.encoders["text"](x[1, :3].mean(0)))


def test_both_way_attention_inside_a_module_and_nothing_across_modules() -> None:
    model = _model(3)
    batch = _batch(4, "w", 1)
    audio, text = batch.audio.clone(), batch.text.clone()
    audio[0, 0] += 3.0
    text[0, 0] += 3.0
    with torch.no_grad():
        base = model(batch).modality
        new_audio = model(batch.replace(audio=audio)).modality
        new_text = model(batch.replace(text=text)).modality
    # audio reaches the text stream of the text-audio module, never the text-vision module
    assert not torch.allclose(new_audio["text_from_audio"][0], base["text_from_audio"][0], atol=1e-4)
    assert not torch.allclose(new_audio["audio_from_text"][0], base["audio_from_text"][0], atol=1e-4)
    assert torch.equal(new_audio["text_from_vision"], base["text_from_vision"]) and torch.equal(new_audio["vision_from_text"], base["vision_from_text"])
    # text reaches the other stream of both modules
    for name in STREAMS:
        assert not torch.allclose(new_text[name][0], base[name][0], atol=1e-4)
    for changed in (new_audio, new_text):  # and no other sample
        for name in STREAMS:
            torch.testing.assert_close(changed[name][1:], base[name][1:])


def test_what_the_gates_let_through() -> None:
    """Compound gates shut (g_c ≈ 0): a stream takes in nothing it reads by attention; audio still reaches the text
    stream through the control vector (the retain gates read the separator's audio encoding) until they are fixed too."""
    model = _model(4)
    batch = _batch(3, "g", 2)
    audio, text = batch.audio.clone(), batch.text.clone()
    audio[:, :2] += 5.0
    text[:, :2] += 5.0

    def moved() -> tuple[Output, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        with torch.no_grad():
            return model(batch), model(batch.replace(audio=audio)).modality, model(batch.replace(text=text)).modality

    layers = [layer for module in model.fusion.values() for layer in [*module.to_text, *module.to_other]]
    for layer in layers:
        _constant(layer.compound, [-60.0] * 8)
    base, moved_audio, moved_text = moved()
    assert (base.extras["compound_text_from_audio"] < 1e-20).all()
    assert not torch.allclose(moved_audio["text_from_audio"], base.modality["text_from_audio"], atol=1e-4)  # via g_r
    for layer in layers:
        _constant(layer.retain, [0.4] * 8)
    base, moved_audio, moved_text = moved()
    torch.testing.assert_close(moved_audio["text_from_audio"], base.modality["text_from_audio"])
    torch.testing.assert_close(moved_text["audio_from_text"], base.modality["audio_from_text"])
    assert not torch.allclose(moved_audio["audio_from_text"], base.modality["audio_from_text"], atol=1e-4)  # its own input still counts


def _with_empty(modality: str) -> list[Sample]:
    rng = np.random.default_rng(0)
    others = make_toy_split(3, "e", 3).samples
    empty = Sample(
        id="empty",
        label=0.5,
        text=rng.normal(size=(5, 16)).astype(np.float32),
        audio=np.zeros((0, 5), np.float32) if modality == "audio" else rng.normal(size=(4, 5)).astype(np.float32),
        vision=np.zeros((0, 4), np.float32) if modality == "vision" else rng.normal(size=(3, 4)).astype(np.float32),
    )
    return [others[0], empty, others[1], others[2]]


@pytest.mark.parametrize("modality", ["audio", "vision"])
def test_an_empty_sequence_is_finite_and_padding_invariant(modality: str) -> None:
    model = _model(5)
    samples = _with_empty(modality)
    batch = collate(samples)
    assert int(batch.lengths(modality)[1]) == 0
    garbage = getattr(batch, modality).clone()
    garbage[1] = float("nan")  # whatever the padding of the empty sequence holds
    with torch.no_grad():
        alone = model(collate([samples[1]]))
        mixed = model(batch)
        noisy = model(batch.replace(**{modality: garbage}))
    for out in (mixed, noisy):
        assert all(torch.isfinite(v).all() for v in [out.logits, out.fused, *out.modality.values(), *out.extras.values()])
        torch.testing.assert_close(out.logits[1:2], alone.logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.fused[1:2], alone.fused, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(noisy.logits, mixed.logits)
    assert (mixed.modality[f"{modality}_from_text"][1] == 0).all()  # an empty stream summarises to 0
    # the text stream of that module read nothing: its value depends on neither the padding nor the other samples
    torch.testing.assert_close(mixed.modality[f"text_from_{modality}"][1:2], alone.modality[f"text_from_{modality}"], atol=1e-5, rtol=1e-5)
    # and training on the batch gives finite gradients
    method = Supervised(_model(5)).train()
    method.training_loss(batch.replace(**{modality: garbage}))["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in method.parameters() if p.grad is not None)


def test_padded_values_change_nothing_and_get_no_gradient() -> None:
    split = make_toy_split(5, "p", 4)
    model = _model(6)
    batch = collate(split.samples)
    short = min(range(5), key=lambda i: split.samples[i].text.shape[0])
    n, la = int(batch.lengths("text")[short]), int(batch.lengths("audio")[short])
    assert n < batch.text.shape[1]
    text, audio = batch.text.clone(), batch.audio.clone()
    text[short, n:] = float("nan")
    if la < batch.audio.shape[1]:
        audio[short, la:] = 1e6
    noisy = batch.replace(text=text.requires_grad_(), audio=audio)
    with torch.no_grad():
        clean = model(batch)
        alone = model(collate([split.samples[short]]))
    out = model(noisy)
    torch.testing.assert_close(out.logits.detach(), clean.logits)
    torch.testing.assert_close(out.logits[short : short + 1].detach(), alone.logits, atol=1e-5, rtol=1e-5)
    out.logits.sum().backward()
    assert torch.isfinite(noisy.text.grad).all() and (noisy.text.grad[short, n:] == 0).all()


def test_outputs_and_extras_shapes() -> None:
    model = _model(7, layers=3)
    batch = _batch(5, "s", 5)
    with torch.no_grad():
        out = model(batch)
    assert set(out.modality) == set(STREAMS) and all(v.shape == (5, 8) for v in out.modality.values())
    assert out.fused.shape == (5, 32)
    summary = torch.cat([out.modality[s] for s in STREAMS], dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(out.fused, summary + model.residual(summary))
    gates = {f"{kind}_{s}" for kind in ("retain", "compound") for s in STREAMS}
    assert set(out.extras) == gates | {"separator_logits_text_audio", "separator_logits_text_vision"}
    for key in gates:
        assert out.extras[key].shape == (5, 3, 8)
        assert ((out.extras[key] > 0) & (out.extras[key] < 1)).all()
    assert out.extras["separator_logits_text_audio"].shape == (5, 3, 2)
    kinds = [s.kind for s in model.fusion["text_audio"].separators]
    assert kinds == ["linear", "gru", "gru"] and [s.kind for s in _model(separator="linear").fusion["text_vision"].separators] == ["linear", "linear"]


def _reached(loss: torch.Tensor, model: BBFN) -> set[str]:
    named = list(model.named_parameters())
    grads = torch.autograd.grad(loss, [p for _, p in named], retain_graph=True, allow_unused=True)
    return {n for (n, _), g in zip(named, grads) if g is not None and bool(g.abs().sum() > 0)}


def test_the_separator_loss_value_and_where_its_gradient_goes() -> None:
    model = _model(8, separator_weight=0.3).train()
    batch = _batch(6, "l", 6)
    out = model(batch)
    losses = model.auxiliary_losses(batch, out)
    assert set(losses) == {"bbfn_separator"}
    logits = torch.cat([out.extras["separator_logits_text_audio"], out.extras["separator_logits_text_vision"]], dim=1)
    by_hand = -(F.logsigmoid(-logits[..., 0]) + F.logsigmoid(logits[..., 1])).sum() / logits.numel()  # text: label 0, other: 1
    torch.testing.assert_close(losses["bbfn_separator"], 0.3 * by_hand)
    # the discriminators, the separator encoders, the projections and the layers before the last; not the last layer,
    # the final norms, the residual block or the head
    expected = {n for n, _ in model.named_parameters() if n.startswith("proj.") or ".separators." in n or ".to_text.0." in n or ".to_other.0." in n}
    assert _reached(losses["bbfn_separator"], model) == expected
    assert any("separators.1.encoders" in n for n in expected)  # the GRU encoders of the second layer
    # a discriminator that cannot tell: log 2
    for module in model.fusion.values():
        for separator in module.separators:
            _constant(separator.discriminator[-1], [0.0])
    torch.testing.assert_close(model.auxiliary_losses(batch, model(batch))["bbfn_separator"], torch.tensor(0.3 * math.log(2.0)))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"dim": 10, "heads": 4}, r"bbfn dim \(10\) must be a positive multiple of heads \(4\)"),
        ({"heads": 0}, "positive multiple of heads"),
        ({"layers": 0}, "at least one complementation layer"),
        ({"kernel_size": 2}, "kernel_size must be a positive odd number"),
        ({"separator": "lstm"}, r"separator must be one of \['gru', 'linear'\]"),
        ({"separator_weight": -0.1}, "separator_weight must be a finite number >= 0"),
        ({"separator_weight": float("nan")}, "separator_weight"),
        ({"dropout": 1.0}, r"bbfn dropout must be in \[0, 1\)"),
        ({"embed_dropout": -0.1}, "embed_dropout"),
    ],
)
def test_bad_hyper_parameters_are_refused(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _model(**params)
