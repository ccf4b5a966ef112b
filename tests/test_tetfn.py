"""TETFN: the text enhanced transformer and the whole forward on recomputed cases, padding and empty sequences, the
generated unimodal labels (shared with Self-MM) and their weighted losses, the parameters each loss trains, config
errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustmsa.data.batch import Sample, collate
from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.method import Supervised
from robustmsa.models.attention import TransformerStack, sinusoidal_positions
from robustmsa.models.base import masked_max
from robustmsa.models.self_mm import SelfMM
from robustmsa.models.tetfn import TETFN, cross_attend
from robustmsa.models.ulgm import GeneratedLabelsBackbone
from robustmsa.training.fit import seeded
from tests.conftest import make_toy_split

DIMS = {"text": 16, "audio": 5, "vision": 4}
SIZES = {"dim": 8, "heads": 2, "layers": 2, "enhance_layers": 1, "audio_hidden": 4, "vision_hidden": 6, "text_post": 8, "audio_post": 5, "vision_post": 3, "fusion_hidden": 12}
MODALITIES = ("text", "audio", "vision")


def _model(seed: int = 0, task: TaskSpec | None = None, **extra) -> TETFN:
    with seeded(seed):
        return TETFN(DIMS, task or TaskSpec(), **{**SIZES, **extra}).eval()


# --- an independent recomputation of the attention blocks: explicit multi-head attention, no nn.MultiheadAttention


def _attention(mha: torch.nn.MultiheadAttention, q_in: torch.Tensor, kv_in: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d_h)) V per head, then the output projection; (Lq, d) queries over (Ls, d) keys, Ls >= 1."""
    d, h = q_in.shape[-1], mha.num_heads
    wq, wk, wv = mha.in_proj_weight.chunk(3)
    bq, bk, bv = mha.in_proj_bias.chunk(3)
    q, k, v = ((x @ w.T + b).view(x.shape[0], h, d // h).transpose(0, 1) for x, w, b in ((q_in, wq, bq), (kv_in, wk, bk), (kv_in, wv, bv)))
    weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d // h), dim=-1)
    return mha.out_proj((weights @ v).transpose(0, 1).reshape(q_in.shape[0], d))


def _stack(stack: TransformerStack, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
    """x (Lq, d) through the stack's pre-norm blocks (self-attention if source is None); an empty source adds nothing."""
    for block in stack.blocks:
        q = block.norm_q(x)
        kv = q if source is None else block.norm_kv(source)
        attended = torch.zeros_like(x) if kv.shape[0] == 0 else _attention(block.attn, q, kv)
        x = x + attended
        x = x + block.ff(block.norm_ff(x))
    return stack.norm(x)


def _reference(model: TETFN, sample: Sample) -> dict[str, torch.Tensor]:
    """One sample, exactly its true lengths and no padding, through the equations of the module docstring."""
    d = model.dim
    x = {m: torch.as_tensor(getattr(sample, m)) for m in MODALITIES}
    proj = {"text": x["text"] @ model.text_proj.weight.T}
    for m in ("audio", "vision"):
        out = model.rnns[m].rnn(x[m].unsqueeze(0))[0][0] if x[m].shape[0] else torch.zeros(0, model.rnns[m].rnn.hidden_size)
        proj[m] = out @ model.av_proj[m].weight.T
    seq = {m: math.sqrt(d) * p + sinusoidal_positions(p.shape[0], d) for m, p in proj.items()}
    pairs = {"text": [_stack(model.text_from["audio"], seq["text"], seq["audio"]), _stack(model.text_from["vision"], seq["text"], seq["vision"])]}
    for m, n in (("audio", "vision"), ("vision", "audio")):
        enhanced = _stack(model.enhanced[m].lower, seq[n], seq["text"])  # the partner reads the text
        pairs[m] = [_stack(model.from_text[m], seq[m], seq["text"]), _stack(model.enhanced[m].upper, seq[m], enhanced)]
    streams = {}
    for m in MODALITIES:
        h = torch.cat(pairs[m], dim=-1)
        streams[m] = _stack(model.memory[m], h).mean(0) if h.shape[0] else torch.zeros(2 * d)
    fused = model.fusion_post(torch.cat([streams[m] for m in MODALITIES]))
    pooled = {m: p.max(0).values if p.shape[0] else torch.zeros(d) for m, p in proj.items()}
    feats = {m: model.unimodal_post[m](pooled[m]) for m in MODALITIES}
    return {"logits": model.fusion_head(fused), "fused": fused, **{f"{m}_feat": feats[m] for m in MODALITIES}, **{f"{m}_stream": streams[m] for m in MODALITIES}}


def _empty(modality: str, seed: int) -> Sample:
    rng = np.random.default_rng(seed)
    lengths = {"text": 5, "audio": 4, "vision": 3} | {modality: 0}
    arrays = {m: rng.normal(size=(lengths[m], DIMS[m])).astype(np.float32) for m in MODALITIES}
    return Sample(id=f"empty_{modality}", label=1.0, **arrays)


def test_cross_attend_is_the_stack_and_adds_nothing_from_an_empty_source() -> None:
    with seeded(0):
        stack = TransformerStack(8, 2, 2, dropout=0.0, cross=True).eval()
    gen = torch.Generator().manual_seed(0)
    x, source = torch.randn(3, 5, 8, generator=gen), torch.randn(3, 4, 8, generator=gen)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False], [True] * 4])
    with torch.no_grad():
        torch.testing.assert_close(cross_attend(stack, x, source, mask), stack(x, torch.ones(3, 5, dtype=torch.bool), source, mask))
        mask[1] = False  # sample 1 has no keys: only the feed-forward halves act
        out = cross_attend(stack, x, source, mask)
        expected = x[1]
        for block in stack.blocks:
            expected = block.feed_forward(expected)
        torch.testing.assert_close(out[1], stack.norm(expected))
        source[1] = 1e6  # what its padding holds is never read
        torch.testing.assert_close(cross_attend(stack, x, source, mask), out)


def test_masked_max_reads_real_positions_only() -> None:
    x = torch.tensor([[[1.0, -5.0], [3.0, -2.0], [9.0, 9.0]], [[-1.0, -1.0], [7.0, 7.0], [7.0, 7.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    torch.testing.assert_close(masked_max(x, mask), torch.tensor([[3.0, -2.0], [0.0, 0.0]]))


def test_text_enhanced_transformer_reads_the_partner_through_the_text() -> None:
    """Z_{n->m} = CT_up(X_m, CT_low(X_n, X_t)), recomputed; the text reaches it only through the lower transformer."""
    model = _model(1)
    enhanced = model.enhanced["audio"]  # target audio, partner vision
    gen = torch.Generator().manual_seed(1)
    target, partner, text = torch.randn(1, 6, 8, generator=gen), torch.randn(1, 4, 8, generator=gen), torch.randn(1, 5, 8, generator=gen)
    ones = {k: torch.ones(1, v.shape[1], dtype=torch.bool) for k, v in (("p", partner), ("t", text))}
    with torch.no_grad():
        out = enhanced(target, partner, ones["p"], text, ones["t"])
        expected = _stack(enhanced.upper, target[0], _stack(enhanced.lower, partner[0], text[0]))
        torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=1e-5)
        other_text = enhanced(target, partner, ones["p"], torch.randn(1, 5, 8, generator=gen), ones["t"])
        assert not torch.allclose(other_text, out, atol=1e-3)  # the text changes what the target reads
        for block in enhanced.lower.blocks:  # shut the lower attention: the partner no longer reads the text
            block.attn.out_proj.weight.zero_()
            block.attn.out_proj.bias.zero_()
        shut = enhanced(target, partner, ones["p"], text, ones["t"])
        torch.testing.assert_close(enhanced(target, partner, ones["p"], torch.randn(1, 5, 8, generator=gen), ones["t"]), shut)


def test_forward_follows_the_equations_for_every_sample_of_a_padded_batch() -> None:
    samples = make_toy_split(4, "ref", 2, dims=(16, 5, 4)).samples + [_empty("audio", 3), _empty("vision", 4)]
    model = _model(2)
    batch = collate(samples)
    with torch.no_grad():
        out = model(batch)
        for i, sample in enumerate(samples):
            ref = _reference(model, sample)
            torch.testing.assert_close(out.logits[i], ref["logits"], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out.fused[i], ref["fused"], atol=1e-5, rtol=1e-5)
            for m in MODALITIES:
                torch.testing.assert_close(out.modality[m][i], ref[f"{m}_feat"], atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(out.extras[f"{m}_stream"][i], ref[f"{m}_stream"], atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(out.extras[f"{m}_score"][i], model.unimodal_heads[m](out.modality[m][i])[0])


def test_outputs_and_extras_shapes() -> None:
    model = _model(3)
    batch = collate(make_toy_split(5, "s", 3).samples)
    with torch.no_grad():
        out = model(batch)
    assert out.logits.shape == (5, 1) and out.fused.shape == (5, 12)
    assert {m: tuple(v.shape) for m, v in out.modality.items()} == {"text": (5, 8), "audio": (5, 5), "vision": (5, 3)}
    assert set(out.extras) == {f"{m}_{k}" for m in MODALITIES for k in ("score", "stream")}
    assert all(out.extras[f"{m}_score"].shape == (5,) and out.extras[f"{m}_stream"].shape == (5, 16) for m in MODALITIES)
    assert (out.fused >= 0).all() and all((v >= 0).all() for v in out.modality.values())  # ReLU features, as the ULGM's


def test_padding_values_and_empty_sequences_change_nothing() -> None:
    split = make_toy_split(5, "pad", 4)
    samples = split.samples[:3] + [_empty("audio", 5), _empty("vision", 6)]
    model = _model(4)
    batch = collate(samples)
    short = min(range(3), key=lambda i: samples[i].text.shape[0])
    n = int(batch.lengths("text")[short])
    assert n < batch.text.shape[1] and int(batch.lengths("audio")[3]) == 0 and int(batch.lengths("vision")[4]) == 0
    text, audio, vision = batch.text.clone(), batch.audio.clone(), batch.vision.clone()
    text[short, n:] = float("nan")
    audio[3] = 1e6  # the whole padded row of an empty sequence
    vision[4] = -1e6
    noisy = batch.replace(text=text.requires_grad_(), audio=audio.requires_grad_(), vision=vision)
    with torch.no_grad():
        clean = model(batch)
        alone = [model(collate([s])) for s in samples]
    out = model(noisy)
    for i in range(5):
        torch.testing.assert_close(out.logits[i : i + 1].detach(), alone[i].logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.fused[i : i + 1].detach(), alone[i].fused, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits.detach(), clean.logits)
    # an empty sequence: a zero stream summary, a unimodal feature from a zero pool
    assert (out.extras["audio_stream"][3] == 0).all() and (out.extras["vision_stream"][4] == 0).all()
    with torch.no_grad():
        torch.testing.assert_close(out.modality["audio"][3], model.unimodal_post["audio"](torch.zeros(8)))
    total = out.logits.sum() + sum(out.extras[f"{m}_score"].sum() for m in MODALITIES)
    total.backward()
    assert torch.isfinite(noisy.text.grad).all() and (noisy.text.grad[short, n:] == 0).all() and (noisy.audio.grad[3] == 0).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _visit(model: GeneratedLabelsBackbone, batch, times: int) -> dict[str, torch.Tensor]:
    losses: dict[str, torch.Tensor] = {}
    for _ in range(times):
        losses = model.auxiliary_losses(batch, model(batch))
    return losses


def test_generated_labels_move_from_the_fusion_label_and_weight_the_unimodal_losses() -> None:
    model = _model(5, dropout=0.0).train()
    batch = collate(make_toy_split(16, "lab", 5).samples)
    first = _visit(model, batch, 1)  # labels start at the true label: every weight tanh(0) = 0
    assert set(first) == {"tetfn_text", "tetfn_audio", "tetfn_vision"} and all(float(v.detach()) == 0.0 for v in first.values())
    _visit(model, batch, 1)  # second visit: the labels move
    labels = model.unimodal_labels(batch.ids)
    torch.testing.assert_close(labels[:, 0], batch.label)  # the fusion label stays the true label
    moved = (labels[:, 1:] - batch.label[:, None]).abs()
    assert float(moved.max()) > 0.01 and float(labels.abs().max()) <= 3.0
    model.unimodal_weight = 0.5
    out = model(batch)
    losses = model.auxiliary_losses(batch, out)  # computed from the labels before this visit's update
    for k, m in enumerate(MODALITIES, start=1):
        weight = torch.tanh((labels[:, k] - labels[:, 0]).abs())
        expected = 0.5 * (weight * (out.extras[f"{m}_score"] - labels[:, k]).abs()).mean()
        torch.testing.assert_close(losses[f"tetfn_{m}"], expected)
        assert float(losses[f"tetfn_{m}"].detach()) > 0
    assert not torch.equal(model.unimodal_labels(batch.ids), labels)  # the third visit moved them again


def test_no_auxiliary_losses_and_no_state_change_in_eval_mode() -> None:
    model = _model(6)
    batch = collate(make_toy_split(6, "e", 6).samples)
    method = Supervised(model).eval()
    assert model.auxiliary_losses(batch, model(batch)) == {}
    assert set(method.training_loss(batch)) == {"task", "loss"}
    assert model.memory_labels.shape[0] == 0 and not model._rows_of  # nothing remembered
    method.train()
    assert {"tetfn_text", "tetfn_audio", "tetfn_vision"} <= set(method.training_loss(batch))
    assert model.memory_labels.shape[0] == 6


@pytest.mark.parametrize("name", ["self_mm", "tetfn"])
def test_label_generation_on_a_hand_set_case(name: str) -> None:
    """Centres C_pos = e1, C_neg = -e1 in every space; y_F = 2 at its second visit with f_F = e1 / 2 (delta_F = 2):
    f_text = 0 (delta 0) -> y_hat 0, f_audio = e1 / 2 (delta 2) -> y_hat 2, f_vision = -e1 / 2 (delta -2/3) -> y_hat -2/3;
    y_m <- (1/3) y_m + (2/3) y_hat."""
    with seeded(0):
        model = SelfMM(DIMS, TaskSpec()) if name == "self_mm" else TETFN(DIMS, TaskSpec(), **SIZES)
    labels = torch.tensor([2.0, -1.0, 1.0, -2.0])
    rows = model._rows(["a", "b", "c", "d"], labels)
    model.memory_visits[:] = 1
    for space in model.spaces:
        memory = getattr(model, f"memory_{space}")
        memory.zero_()
        memory[:, 0] = torch.sign(labels)
    e1 = {space: torch.nn.functional.one_hot(torch.tensor([0]), getattr(model, f"memory_{space}").shape[1]).float() for space in model.spaces}
    model._update_state(rows[:1], {"fusion": 0.5 * e1["fusion"], "text": 0 * e1["text"], "audio": 0.5 * e1["audio"], "vision": -0.5 * e1["vision"]})
    torch.testing.assert_close(model.memory_labels[0], torch.tensor([2.0, 2 / 3, 2.0, 2 / 9]))
    torch.testing.assert_close(model.memory_labels[1:], labels[1:, None].expand(-1, 4))  # not visited again: unchanged
    assert int(model.memory_visits[0]) == 2 and float(model.memory_audio[0, 0]) == 0.5


def _reached(loss: torch.Tensor, model: TETFN) -> set[str]:
    named = list(model.named_parameters())
    grads = torch.autograd.grad(loss, [p for _, p in named], retain_graph=True, allow_unused=True)
    return {n for (n, _), g in zip(named, grads) if g is not None and bool(g.abs().sum() > 0)}


def test_each_loss_trains_its_parameters() -> None:
    model = _model(7, dropout=0.0).train()
    batch = collate(make_toy_split(16, "p", 7).samples)
    _visit(model, batch, 2)
    out = model(batch)
    losses = model.auxiliary_losses(batch, out)
    names = {n for n, _ in model.named_parameters()}
    branches = {n for n in names if n.startswith(("unimodal_post.", "unimodal_heads."))}
    task = (out.logits[:, 0] - batch.label).abs().mean()
    assert _reached(task, model) == names - branches  # the fusion path: encoders, transformers, fusion branch
    encoders = {"text": ("text_proj.",), "audio": ("rnns.audio.", "av_proj.audio."), "vision": ("rnns.vision.", "av_proj.vision.")}
    for m in MODALITIES:
        own = {n for n in names if n.startswith((*encoders[m], f"unimodal_post.{m}.", f"unimodal_heads.{m}."))}
        assert _reached(losses[f"tetfn_{m}"], model) == own  # its own encoder and branch: no transformer, no fusion


def test_self_mm_keeps_its_api_on_the_shared_label_generation() -> None:
    assert issubclass(SelfMM, GeneratedLabelsBackbone) and issubclass(TETFN, GeneratedLabelsBackbone)
    assert SelfMM.per_sample_state and TETFN.per_sample_state
    classification = TaskSpec(kind="classification", num_classes=2, label_range=None)
    with pytest.raises(ConfigError, match=r"^self_mm generates unimodal labels from continuous sentiment scores and supports regression only"):
        SelfMM(DIMS, classification)
    with pytest.raises(ConfigError, match=r"^tetfn generates unimodal labels .* regression only; the task is 'classification'"):
        TETFN(DIMS, classification)
    batch = collate(make_toy_split(4, "n", 8).samples)
    with seeded(0):
        self_mm = SelfMM(DIMS, TaskSpec()).train()
    assert set(self_mm.auxiliary_losses(batch, self_mm(batch))) == {"selfmm_text", "selfmm_audio", "selfmm_vision"}
    unlabelled = batch.replace(label=None)
    for model in (self_mm, _model(8).train()):
        with pytest.raises(ConfigError, match=f"{model.ulgm_name} needs regression labels in training batches"):
            model.auxiliary_losses(unlabelled, model(unlabelled))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"dim": 10, "heads": 4}, r"dim \(10\) must be a multiple of heads \(4\)"),
        ({"layers": 0}, "layers must be a positive integer"),
        ({"enhance_layers": 0}, "enhance_layers must be a positive integer"),
        ({"audio_hidden": 2.5}, "audio_hidden must be a positive integer"),
        ({"fusion_hidden": True}, "fusion_hidden must be a positive integer"),
        ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\)"),
        ({"post_dropout": -0.1}, r"post_dropout must be a number in \[0, 1\)"),
        ({"unimodal_weight": -1.0}, "unimodal_weight must be a finite number >= 0"),
        ({"unimodal_weight": float("nan")}, "unimodal_weight must be a finite number >= 0"),
        ({"exclude_zero": "yes"}, "exclude_zero must be true or false"),
    ],
)
def test_bad_hyper_parameters_are_refused(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=f"tetfn {message}"):
        TETFN(DIMS, TaskSpec(), **{**SIZES, **params})
