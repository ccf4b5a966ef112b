"""MFN: the delta-memory attention, the gated memory update, and the state freezing after a sample's true length."""

from __future__ import annotations

import math

import numpy as np
import torch

from robustmsa.data.batch import Sample, collate
from robustmsa.data.dataset import TaskSpec
from robustmsa.models.mfn import MFN
from robustmsa.training.fit import seeded
from tests.conftest import make_toy_split
from tests.mfn_reference import constant_output, step_by_step

SIZES = {"text_hidden": 6, "audio_hidden": 3, "vision_hidden": 4, "mem_dim": 5, "attn_hidden": 8, "mem_hidden": 8, "gate_hidden": 8, "hidden": 8}
WINDOW = 2 * (6 + 3 + 4)


def _model(seed: int = 0, **sizes: int) -> MFN:
    with seeded(seed):
        return MFN({"text": 16, "audio": 5, "vision": 4}, TaskSpec(), **{**SIZES, **sizes}).eval()


def test_gated_memory_update_on_a_hand_set_case() -> None:
    model = _model(text_hidden=1, audio_hidden=1, vision_hidden=1, mem_dim=2)
    constant_output(model.attention, [0.0] * 6)  # uniform attention: a = 1/6
    constant_output(model.proposal, [0.5, -1.0])  # û
    constant_output(model.retain_gate, [0.0, math.log(3.0)])  # γ1 = (1/2, 3/4)
    constant_output(model.update_gate, [math.log(3.0), 0.0])  # γ2 = (3/4, 1/2)
    c_prev, c_new = torch.tensor([[1.0, -2.0, 0.5]]), torch.tensor([[0.0, 3.0, -1.0]])
    memory = torch.tensor([[0.2, -0.4]])
    with torch.no_grad():
        new, traces = model.step(c_prev, c_new, memory)
        weights = traces["dman_attention"]
    torch.testing.assert_close(weights, torch.full((1, 6), 1 / 6))
    expected = torch.tensor([[0.5 * 0.2 + 0.75 * math.tanh(0.5), 0.75 * -0.4 + 0.5 * math.tanh(-1.0)]])
    torch.testing.assert_close(new, expected)


def test_a_step_follows_the_paper_equations() -> None:
    """ĉ = c^[t-1,t] ⊙ softmax(D_a(c^[t-1,t])); u_t = σ(D_γ1([ĉ; u_{t-1}])) ⊙ u_{t-1} + σ(D_γ2([ĉ; u_{t-1}])) ⊙ tanh(D_u(ĉ))."""
    model = _model(1)
    gen = torch.Generator().manual_seed(0)
    c_prev, c_new, memory = torch.randn(4, WINDOW // 2, generator=gen), torch.randn(4, WINDOW // 2, generator=gen), torch.randn(4, 5, generator=gen)
    with torch.no_grad():
        new, traces = model.step(c_prev, c_new, memory)
        weights = traces["dman_attention"]
        window = torch.cat([c_prev, c_new], dim=-1)
        a = torch.softmax(model.attention(window), dim=-1)
        attended = window * a
        both = torch.cat([attended, memory], dim=-1)
        expected = torch.sigmoid(model.retain_gate(both)) * memory + torch.sigmoid(model.update_gate(both)) * torch.tanh(model.proposal(attended))
    torch.testing.assert_close(weights, a)
    torch.testing.assert_close(new, expected)


def test_dman_attention_sums_to_one_over_the_concatenated_memories() -> None:
    split = make_toy_split(5, "att", 0)
    batch = collate(split.samples)
    with torch.no_grad():
        out = _model()(batch)
    att = out.extras["dman_attention"]
    assert att.shape == (5, batch.text.shape[1], WINDOW)
    mask = batch.mask("text")
    assert not mask.all()  # the batch has padding
    torch.testing.assert_close(att.sum(-1)[mask], torch.ones(int(mask.sum())))
    assert (att[mask] > 0).all() and (att[~mask] == 0).all()


def test_final_state_is_the_state_at_each_samples_true_length() -> None:
    split = make_toy_split(4, "ref", 1)
    batch = collate(split.samples)
    model = _model(2)
    with torch.no_grad():
        out = model(batch)
        for i in range(4):
            h, memory, _, _ = step_by_step(model, batch, i)
            for m in ("text", "audio", "vision"):
                torch.testing.assert_close(out.modality[m][i : i + 1], h[m], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out.fused[i : i + 1], torch.cat([h["text"], h["audio"], h["vision"], memory], dim=-1), atol=1e-5, rtol=1e-5)
    assert out.fused.shape == (4, 6 + 3 + 4 + 5)


def test_padding_and_values_at_padded_positions_do_not_change_a_sample() -> None:
    split = make_toy_split(6, "pad", 2)
    model = _model(3)
    short = min(range(6), key=lambda i: split.samples[i].text.shape[0])
    batch = collate(split.samples)
    n, la = int(batch.lengths("text")[short]), int(batch.lengths("audio")[short])
    assert n < batch.text.shape[1] and la < batch.audio.shape[1]
    text, audio = batch.text.clone(), batch.audio.clone()
    text[short, n:] = float("nan")  # whatever the padding holds
    audio[short, la:] = 1e6
    noisy = batch.replace(text=text.requires_grad_(), audio=audio)
    with torch.no_grad():
        alone = model(collate([split.samples[short]]))
        clean = model(batch)
    out = model(noisy)
    for result in (clean, out):
        torch.testing.assert_close(result.logits[short : short + 1], alone.logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(result.fused[short : short + 1], alone.fused, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits.detach(), clean.logits)  # the other samples too
    out.logits.sum().backward()
    assert torch.isfinite(noisy.text.grad).all() and (noisy.text.grad[short, n:] == 0).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_an_empty_text_sequence_reads_the_initial_state() -> None:
    rng = np.random.default_rng(0)
    empty = Sample(id="e", label=0.0, text=np.zeros((0, 16), np.float32), audio=rng.normal(size=(4, 5)).astype(np.float32), vision=rng.normal(size=(3, 4)).astype(np.float32))
    other = make_toy_split(2, "o", 3).samples
    model = _model(4)
    with torch.no_grad():
        alone = model(collate([empty]))
        mixed = model(collate([other[0], empty, other[1]]))
        head_of_zero = model.head(torch.zeros(1, 6 + 3 + 4 + 5))
    assert (alone.fused == 0).all() and (mixed.fused[1] == 0).all()
    torch.testing.assert_close(alone.logits, head_of_zero)
    torch.testing.assert_close(mixed.logits[1:2], head_of_zero)
    assert (mixed.fused[[0, 2]] != 0).any()


def test_gates_control_what_the_memory_keeps() -> None:
    """Retain open, update shut: the memory is never written. Retain shut, update open: it holds only the last step's proposal."""
    split = make_toy_split(3, "gate", 4)
    batch = collate(split.samples)
    model = _model(5)
    constant_output(model.retain_gate, [50.0] * 5)
    constant_output(model.update_gate, [-50.0] * 5)
    with torch.no_grad():
        kept = model(batch).fused[:, -5:]
    torch.testing.assert_close(kept, torch.zeros(3, 5))
    constant_output(model.retain_gate, [-50.0] * 5)
    constant_output(model.update_gate, [50.0] * 5)
    with torch.no_grad():
        last = model(batch).fused[:, -5:]
        for i in range(3):
            states = step_by_step(model, batch, i)[2]  # c after steps 1..n
            proposals = []
            for before, after in zip(states[-3:-1], states[-2:]):
                window = torch.cat([before, after], dim=-1)
                proposals.append(torch.tanh(model.proposal(window * torch.softmax(model.attention(window), dim=-1))))
            torch.testing.assert_close(last[i : i + 1], proposals[-1], atol=1e-5, rtol=1e-5)  # from c(n-1) and c(n)
            assert not torch.allclose(last[i : i + 1], proposals[0], atol=1e-3)  # not the one a step earlier


def test_a_masked_step_is_skipped_by_every_state() -> None:
    """h, c and u all stay put at a masked step, also in the middle of a sequence: as if the step were not there."""
    model = _model(6)
    gen = torch.Generator().manual_seed(1)
    inputs = {m: torch.randn(1, 5, d, generator=gen) for m, d in (("text", 16), ("audio", 5), ("vision", 4))}
    holes = torch.tensor([[True, False, True, True, False]])
    kept = {m: x[:, [0, 2, 3]] for m, x in inputs.items()}
    with torch.no_grad():
        h, c, memory, traces = model.run(inputs, holes)
        h2, c2, memory2, _ = model.run(kept, torch.ones(1, 3, dtype=torch.bool))
    attention = traces["dman_attention"]
    for m in inputs:
        torch.testing.assert_close(h[m], h2[m])
        torch.testing.assert_close(c[m], c2[m])
    torch.testing.assert_close(memory, memory2)
    assert (attention[0, [1, 4]] == 0).all()
