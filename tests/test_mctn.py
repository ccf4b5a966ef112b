"""MCTN: the prediction reads the text alone, the seq2seq translation decoder (hand-set and recomputed), the forward
equations, the translation / cycle losses on hand-computed values, empty targets, padding, which parameters each
loss trains, the loss weights, eval mode and the configuration checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustmsa.data.batch import Sample, collate
from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.method import Supervised
from robustmsa.models.base import SequenceEncoder
from robustmsa.models.mctn import MCTN, TranslationDecoder
from robustmsa.registry import BACKBONES
from robustmsa.training.fit import seeded
from tests.conftest import make_toy_split

SIZES = {"hidden": 6, "second_hidden": 4, "predictor_hidden": 5}
DIMS = {"text": 16, "audio": 5, "vision": 4}
AUX = {"mctn_translate_vision", "mctn_cycle_text", "mctn_translate_audio"}


def _model(seed: int = 0, **extra: object) -> MCTN:
    with seeded(seed):
        return MCTN(DIMS, TaskSpec(), **{**SIZES, **extra})


def _batch(n: int, name: str, seed: int):
    return collate(make_toy_split(n, name, seed).samples)


def _by_hand_mse(prediction: torch.Tensor, target: torch.Tensor, lengths: list[int]) -> float:
    """Mean squared error over the first ``lengths[i]`` steps of every sample, written out sample by sample."""
    total = sum(float((prediction[i, :n] - target[i, :n]).pow(2).sum()) for i, n in enumerate(lengths))
    count = sum(lengths) * prediction.shape[-1]
    return total / count if count else 0.0


def test_the_prediction_reads_the_text_alone() -> None:
    """Changed, emptied or removed audio and vision leave the logits (and every other output) bit-identical, in eval
    mode and in training mode; a changed text does change them."""
    batch = _batch(6, "s", 0)
    rng = torch.Generator().manual_seed(0)
    changed = batch.replace(audio=torch.randn(batch.audio.shape, generator=rng) * 100, vision=torch.full_like(batch.vision, float("nan")))
    empty = batch.replace(audio=torch.zeros(6, 1, 5), audio_lengths=torch.zeros(6, dtype=torch.long), vision=torch.zeros(6, 1, 4), vision_lengths=torch.zeros(6, dtype=torch.long))
    removed = batch.replace(audio=None, audio_lengths=None, vision=None, vision_lengths=None)
    for mode in ("eval", "train"):
        model = _model(0, dropout=0.0).train(mode == "train")
        with torch.no_grad():
            reference = model(batch)
            for other in (changed, empty, removed):
                out = model(other)
                assert torch.equal(out.logits, reference.logits) and torch.equal(out.fused, reference.fused)
                assert all(torch.equal(out.modality[k], v) for k, v in reference.modality.items())
                assert all(torch.equal(out.extras[k], v) for k, v in reference.extras.items())
            text = batch.text.clone()
            text[0, 0] += 1.0
            assert not torch.equal(model(batch.replace(text=text)).logits[0], reference.logits[0])


def test_decoder_on_a_hand_set_case() -> None:
    """A decoder LSTM with zero weights keeps h_t = 0 (c_t = 0.5 c_{t-1} + 0.5 tanh(0) = 0), so the query is 0, the
    attention uniform over the real source positions, and with W_o = [0 | I] every real step is the mean of the real
    encoder states; padded steps are 0."""
    decoder = TranslationDecoder(2, 2, 3)
    with torch.no_grad():
        for p in decoder.rnn.parameters():
            p.zero_()
        decoder.out.weight.copy_(torch.cat([torch.zeros(2, 3), torch.eye(2)], dim=1))
        decoder.out.bias.zero_()
    states = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]], [[-1.0, 5.0], [7.0, 7.0], [0.5, 0.5]]])
    source_mask = torch.tensor([[True, True, False], [True, True, True]])
    target = torch.randn(2, 4, 2)
    target_mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    with torch.no_grad():
        out, weights = decoder(states, source_mask, torch.randn(2, 2), target, target_mask)
    expected = torch.zeros(2, 4, 2)
    expected[0, :3] = torch.tensor([2.0, 3.0])
    expected[1, :1] = torch.tensor([(-1.0 + 7.0 + 0.5) / 3, (5.0 + 7.0 + 0.5) / 3])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(weights[0, :3], torch.tensor([[0.5, 0.5, 0.0]] * 3))
    torch.testing.assert_close(weights[1, 0], torch.full((3,), 1 / 3))
    assert (weights[0, 3] == 0).all() and (weights[1, 1:] == 0).all()


@pytest.mark.parametrize("teacher_forcing", [True, False])
def test_decoder_recomputed_sample_by_sample(teacher_forcing: bool) -> None:
    """h_0 = tanh(W s), LSTM over [x_{t-1}] (x_{-1} = 0) or over [t / (n - 1)], c_t = softmax(q(h_t) . e / sqrt(E)) e over
    the real source positions, x_hat_t = W_o [h_t; c_t] + b_o; every sample alone, without padding."""
    with seeded(0):
        decoder = TranslationDecoder(4, 3, 5, teacher_forcing)
    gen = torch.Generator().manual_seed(1)
    states, summary, target = torch.randn(3, 5, 4, generator=gen), torch.randn(3, 4, generator=gen), torch.randn(3, 6, 3, generator=gen)
    source_lengths, target_lengths = (5, 2, 3), (6, 1, 4)
    source_mask = torch.arange(5).unsqueeze(0) < torch.tensor(source_lengths).unsqueeze(1)
    target_mask = torch.arange(6).unsqueeze(0) < torch.tensor(target_lengths).unsqueeze(1)
    with torch.no_grad():
        out, weights = decoder(states, source_mask, summary, target, target_mask)
        for i, (ns, nt) in enumerate(zip(source_lengths, target_lengths)):
            if teacher_forcing:
                inputs = torch.cat([torch.zeros(1, 3), target[i, : nt - 1]])
            else:
                inputs = (torch.arange(nt, dtype=torch.float32) / max(nt - 1, 1)).unsqueeze(-1)
            h0 = torch.tanh(decoder.init(summary[i])).view(1, 1, -1)
            hidden = decoder.rnn(inputs.unsqueeze(0), (h0, torch.zeros_like(h0)))[0][0]
            e = states[i, :ns]
            a = torch.softmax(decoder.query(hidden) @ e.T / 2.0, dim=-1)
            torch.testing.assert_close(weights[i, :nt, :ns], a)
            torch.testing.assert_close(out[i, :nt], decoder.out(torch.cat([hidden, a @ e], dim=-1)))
    assert (out[~target_mask] == 0).all() and (weights[~target_mask] == 0).all()
    assert (weights.transpose(1, 2)[~source_mask] == 0).all()


def test_teacher_forcing_is_causal_and_its_absence_ignores_the_target_values() -> None:
    with seeded(0):
        forced, free = TranslationDecoder(4, 3, 5, True), TranslationDecoder(4, 3, 5, False)
    states, summary, target = torch.randn(2, 4, 4), torch.randn(2, 4), torch.randn(2, 6, 3)
    source_mask, target_mask = torch.ones(2, 4, dtype=torch.bool), torch.ones(2, 6, dtype=torch.bool)
    changed = target.clone()
    changed[:, 3] += 5.0  # the true frame at step 3
    with torch.no_grad():
        a, b = forced(states, source_mask, summary, target, target_mask)[0], forced(states, source_mask, summary, changed, target_mask)[0]
        assert torch.equal(a[:, :4], b[:, :4]) and not torch.allclose(a[:, 4:], b[:, 4:])  # x_hat_t reads x_{<t} only
        assert torch.equal(free(states, source_mask, summary, target, target_mask)[0], free(states, source_mask, summary, changed * 0, target_mask)[0])


def test_forward_follows_the_hierarchy() -> None:
    """E1 = f_e1(X^S), E2 = f_e2(E1), a = LSTM(E2), p = sum_i softmax_i(tanh(w . a_i + b)) a_i, y = W p + b; a
    bidirectional encoder's states are its forward and backward LSTM outputs, concatenated, on the sample alone."""
    model = _model(1).eval()
    batch = _batch(5, "f", 1)
    mask = batch.mask("text")
    with torch.no_grad():
        out = model(batch)
        states1, summary1 = model.encoder1.states(batch.text, mask)
        states2, summary2 = model.encoder2.states(states1, mask)
        a = model.predictor.states(states2, mask)[0]
        for i, n in enumerate(batch.lengths("text").tolist()):
            torch.testing.assert_close(states1[i, :n], model.encoder1.rnn(batch.text[i : i + 1, :n])[0][0])
            alpha = torch.softmax(torch.tanh(model.score(a[i, :n])).squeeze(-1), dim=0)
            torch.testing.assert_close(out.extras["pooling_attention"][i, :n], alpha)
            torch.testing.assert_close(out.fused[i], alpha @ a[i, :n])
        torch.testing.assert_close(out.logits, model.head(out.fused))
        torch.testing.assert_close(out.extras["stage1_states"], states1)
        torch.testing.assert_close(out.extras["stage2_states"], states2)
        torch.testing.assert_close(out.modality["text"], summary1)
        torch.testing.assert_close(out.modality["joint"], summary2)
        torch.testing.assert_close(out.modality["text"], model.encoder1(batch.text, mask))  # the summary SequenceEncoder gives


def test_extras_and_translations_shapes_and_padding() -> None:
    model = _model(2).eval()
    batch = _batch(6, "x", 2)
    mask = batch.mask("text")
    with torch.no_grad():
        out = model(batch)
        t = model.translate(batch, out)
    e, lt = out.extras, batch.text.shape[1]
    assert e["stage1_states"].shape == (6, lt, 6) and e["stage2_states"].shape == (6, lt, 4) and e["pooling_attention"].shape == (6, lt)
    assert not mask.all() and (e["stage1_states"][~mask] == 0).all() and (e["stage2_states"][~mask] == 0).all()
    torch.testing.assert_close(e["pooling_attention"].sum(-1), torch.ones(6))
    assert (e["pooling_attention"][~mask] == 0).all()
    assert out.modality["text"].shape == (6, 6) and out.modality["joint"].shape == (6, 4) and out.fused.shape == (6, 5)
    assert all(isinstance(v, torch.Tensor) for v in e.values())
    assert set(t) == {"vision", "cycle_text", "audio", "attention_vision", "attention_cycle_text", "attention_audio"}
    for key, m, source in (("vision", "vision", "text"), ("cycle_text", "text", "vision"), ("audio", "audio", "text")):
        x, m_mask = getattr(batch, m), batch.mask(m)
        assert t[key].shape == x.shape and not m_mask.all() and (t[key][~m_mask] == 0).all() and (t[key][m_mask] != 0).any()
        assert t[f"attention_{key}"].shape == (6, x.shape[1], getattr(batch, source).shape[1])
        torch.testing.assert_close(t[f"attention_{key}"].sum(-1)[m_mask], torch.ones(int(m_mask.sum())))


def test_losses_are_the_weighted_masked_mses_of_the_translations() -> None:
    model = _model(3, translation_weight=0.5, cycle_weight=2.0, second_translation_weight=0.25).train()
    batch = _batch(7, "l", 3)
    out = model(batch)
    losses = model.auxiliary_losses(batch, out)
    with torch.no_grad():
        t = model.translate(batch, out)
    assert set(losses) == AUX
    expected = {
        "mctn_translate_vision": 0.5 * _by_hand_mse(t["vision"], batch.vision, batch.lengths("vision").tolist()),
        "mctn_cycle_text": 2.0 * _by_hand_mse(t["cycle_text"], batch.text, batch.lengths("text").tolist()),
        "mctn_translate_audio": 0.25 * _by_hand_mse(t["audio"], batch.audio, batch.lengths("audio").tolist()),
    }
    for name, value in expected.items():
        assert abs(float(losses[name].detach()) - value) < 1e-5 * max(1.0, value)
    # the cycle reads the translation back: it changes when X_hat^T1 changes
    with torch.no_grad():
        model.decoder1.out.bias.add_(1.0)
        moved = model.translate(batch, out)
    assert torch.allclose(moved["audio"], t["audio"]) and not torch.allclose(moved["cycle_text"], t["cycle_text"])


def test_an_empty_target_adds_nothing() -> None:
    """A sample without vision (or audio) adds nothing to that translation's loss, and its text steps are left out of the
    cycle when the first target is empty; a batch without any real step of a target gives 0."""
    rng = np.random.default_rng(0)
    others = make_toy_split(3, "o", 4).samples
    text = rng.normal(size=(5, 16)).astype(np.float32)
    no_vision = Sample(id="v", label=0.5, text=text, audio=rng.normal(size=(4, 5)).astype(np.float32), vision=np.zeros((0, 4), np.float32))
    no_audio = Sample(id="a", label=0.5, text=text, audio=np.zeros((0, 5), np.float32), vision=rng.normal(size=(3, 4)).astype(np.float32))
    model = _model(4, dropout=0.0).train()
    base = model.auxiliary_losses(b := collate(others), model(b))
    with_v = model.auxiliary_losses(b := collate(others + [no_vision]), model(b))
    with_a = model.auxiliary_losses(b := collate(others + [no_audio]), model(b))
    torch.testing.assert_close(with_v["mctn_translate_vision"], base["mctn_translate_vision"])
    torch.testing.assert_close(with_v["mctn_cycle_text"], base["mctn_cycle_text"])
    assert not torch.allclose(with_v["mctn_translate_audio"], base["mctn_translate_audio"])  # its audio counts
    torch.testing.assert_close(with_a["mctn_translate_audio"], base["mctn_translate_audio"])
    assert not torch.allclose(with_a["mctn_cycle_text"], base["mctn_cycle_text"])  # its vision exists: so does its cycle
    silent = Sample(id="e", label=0.5, text=text, audio=np.zeros((0, 5), np.float32), vision=np.zeros((0, 4), np.float32))
    batch = collate([silent, silent])
    out = model(batch)
    losses = model.auxiliary_losses(batch, out)
    assert all(float(v.detach()) == 0.0 for v in losses.values())
    assert torch.isfinite(out.logits).all()
    t = model.translate(batch, out)
    assert all(torch.isfinite(v).all() for v in t.values()) and (t["vision"] == 0).all() and (t["cycle_text"] != 0).any()


def test_padding_changes_neither_outputs_nor_losses() -> None:
    split = make_toy_split(6, "p", 5)
    model = _model(5, dropout=0.0).train()  # train mode for the losses; no dropout: deterministic
    short = min(range(6), key=lambda i: split.samples[i].text.shape[0] + split.samples[i].audio.shape[0] + split.samples[i].vision.shape[0])
    batch = collate(split.samples)
    noisy = {}
    for m in ("text", "audio", "vision"):
        x, n = getattr(batch, m).clone(), int(batch.lengths(m)[short])
        assert n < x.shape[1]
        x[short, n:] = float("nan")  # whatever the padding holds
        noisy[m] = x
    noisy_batch = batch.replace(**noisy)
    alone_batch = collate([split.samples[short]])
    clean, out, alone = model(batch), model(noisy_batch), model(alone_batch)
    torch.testing.assert_close(out.logits[short : short + 1], alone.logits, atol=1e-5, rtol=1e-5)
    t_out, t_alone = model.translate(noisy_batch, out), model.translate(alone_batch, alone)
    for key, m in (("vision", "vision"), ("cycle_text", "text"), ("audio", "audio")):
        n = int(batch.lengths(m)[short])
        torch.testing.assert_close(t_out[key][short, :n], t_alone[key][0, :n], atol=1e-5, rtol=1e-5)
    losses, reference = model.auxiliary_losses(noisy_batch, out), model.auxiliary_losses(batch, clean)
    assert all(torch.isfinite(v) for v in losses.values())
    torch.testing.assert_close(losses, reference)
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _reached(loss: torch.Tensor, model: MCTN) -> set[str]:
    named = list(model.named_parameters())
    grads = torch.autograd.grad(loss, [p for _, p in named], retain_graph=True, allow_unused=True)
    return {n for (n, _), g in zip(named, grads) if g is not None and bool(g.abs().sum() > 0)}


def _under(model: MCTN, *prefixes: str) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(prefixes)}


@pytest.mark.parametrize("first_target", ["vision", "audio"])
def test_which_parameters_each_loss_trains(first_target: str) -> None:
    second = "audio" if first_target == "vision" else "vision"
    model = _model(6, first_target=first_target, dropout=0.0).train()
    batch = _batch(8, "r", 6)
    out = model(batch)
    losses = model.auxiliary_losses(batch, out)
    assert set(losses) == {f"mctn_translate_{first_target}", "mctn_cycle_text", f"mctn_translate_{second}"}
    # the prediction: the text encoder, the second encoder and the inference network, no decoder
    assert _reached(out.logits.sum(), model) == _under(model, "encoder1.", "encoder2.", "predictor.", "score.", "head.")
    # stage 1: the joint (text) encoder and its decoder
    assert _reached(losses[f"mctn_translate_{first_target}"], model) == _under(model, "encoder1.", "decoder1.")
    # the cycle: through the translation back to the text, the back-translation pair and the stage-1 pair
    assert _reached(losses["mctn_cycle_text"], model) == _under(model, "encoder1.", "decoder1.", "back_encoder.", "back_decoder.")
    # stage 2: through the second encoder down to the text encoder
    assert _reached(losses[f"mctn_translate_{second}"], model) == _under(model, "encoder1.", "encoder2.", "decoder2.")
    assert model.decoder1.out.out_features == DIMS[first_target] and model.decoder2.out.out_features == DIMS[second]
    assert model.back_encoder.rnn.input_size == DIMS[first_target] and model.back_decoder.out.out_features == DIMS["text"]


def test_weights_scale_their_terms_and_zero_weights_give_zero_terms() -> None:
    batch = _batch(6, "w", 7)
    model = _model(7, dropout=0.0).train()
    out = model(batch)
    base = model.auxiliary_losses(batch, out)
    model.translation_weight, model.cycle_weight, model.second_translation_weight = 0.3, 0.7, 2.0
    scaled = model.auxiliary_losses(batch, out)
    for name, factor in (("mctn_translate_vision", 3.0), ("mctn_cycle_text", 7.0), ("mctn_translate_audio", 20.0)):
        torch.testing.assert_close(scaled[name], factor * base[name])
    assert all(float(v.detach()) > 0 for v in base.values())
    zero = _model(7, dropout=0.0, translation_weight=0.0, cycle_weight=0.0, second_translation_weight=0.0).train()
    losses = Supervised(zero).training_loss(batch)
    assert AUX <= set(losses) and all(float(losses[k].detach()) == 0.0 for k in AUX)
    torch.testing.assert_close(losses["loss"], losses["task"])


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_a_training_batch_of_one_sample(kind: str) -> None:
    task = TaskSpec() if kind == "regression" else TaskSpec(kind="classification", num_classes=7, label_range=None)
    with seeded(0):
        method = Supervised(MCTN(DIMS, task, **SIZES, teacher_forcing=False)).train()
    losses = method.training_loss(collate(make_toy_split(1, "o", 9, task=task).samples))
    assert all(bool(torch.isfinite(v)) and float(v.detach()) > 0 for v in losses.values())
    losses["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in method.parameters())


def test_sequence_encoder_states_match_its_summary() -> None:
    """The per-step states the encoders give (SequenceEncoder.states): the last real forward step and the first backward
    step make the summary that forward returns."""
    with seeded(0):
        encoder = SequenceEncoder(3, 8, kind="lstm", bidirectional=True).eval()
    x, mask = torch.randn(3, 5, 3), torch.arange(5).unsqueeze(0) < torch.tensor([[5], [2], [0]])
    states, summary = encoder.states(x, mask)
    torch.testing.assert_close(summary, encoder(x, mask))
    for i, n in enumerate((5, 2)):
        torch.testing.assert_close(summary[i], torch.cat([states[i, n - 1, :4], states[i, 0, 4:]]))
    assert (states[~mask] == 0).all()
    with pytest.raises(ConfigError, match="kind 'lstm'"):
        SequenceEncoder(3, 8, kind="mean").states(x, mask)


BAD = [("hidden", 0), ("second_hidden", 2.5), ("predictor_hidden", True), ("hidden", 7), ("bidirectional", "yes"), ("teacher_forcing", 1)]
BAD += [("first_target", "text"), ("dropout", 1.0), ("translation_weight", -0.1), ("cycle_weight", float("nan")), ("second_translation_weight", "1")]


@pytest.mark.parametrize(("key", "value"), BAD)
def test_bad_settings_are_refused(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"mctn {key}"):
        MCTN(DIMS, TaskSpec(), **{key: value})


def test_registered_and_built_with_its_defaults() -> None:
    model = BACKBONES.build("mctn", DIMS, TaskSpec())
    assert isinstance(model, MCTN) and (model.first, model.second) == ("vision", "audio")
    assert model.decoder1.teacher_forcing and model.translation_weight == model.cycle_weight == model.second_translation_weight == 0.1
    assert MCTN(DIMS, TaskSpec(), hidden=7, bidirectional=False).encoder1.out_dim == 7  # odd widths without a backward half
    with pytest.raises(ConfigError, match="needs modalities"):
        BACKBONES.build("mctn", {"text": 16, "audio": 5}, TaskSpec())
    assert math.isclose(float(_model(0).dropout.p), 0.1)
