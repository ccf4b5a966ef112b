"""Graph-MFN: the Dynamic Fusion Graph's equations, its efficacies (order, range, masked steps), the unimodal vertices
cut from ĉ, the memory reading τ, the state freezing shared with MFN, and the hyper-parameter checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustmsa.data.batch import Sample, collate
from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.models.graph_mfn import EDGES, MULTIMODAL, VERTICES, GraphMFN
from robustmsa.models.mfn import MFN
from robustmsa.registry import BACKBONES
from robustmsa.training.fit import seeded
from tests.conftest import make_toy_split
from tests.mfn_reference import constant_output, step_by_step

SIZES = {
    "text_hidden": 6,
    "audio_hidden": 3,
    "vision_hidden": 4,
    "mem_dim": 5,
    "attn_hidden": 8,
    "vertex_dim": 3,
    "tau_dim": 7,
    "graph_hidden": 8,
    "efficacy_hidden": 8,
    "mem_hidden": 8,
    "gate_hidden": 8,
    "hidden": 8,
}
WINDOW = 2 * (6 + 3 + 4)
TAU_IN = 2 * (6 + 3 + 4) + 4 * 3  # the unimodal vertices and the four multimodal ones


def _model(seed: int = 0, **sizes: int) -> GraphMFN:
    with seeded(seed):
        return GraphMFN({"text": 16, "audio": 5, "vision": 4}, TaskSpec(), **{**SIZES, **sizes}).eval()


def _sum_of_inputs(layers: torch.nn.Sequential) -> None:
    """Make a two-layer ReLU MLP with one output compute relu(sum of its inputs) (its first hidden unit)."""
    with torch.no_grad():
        for layer in (layers[0], layers[-1]):
            layer.weight.zero_()
            layer.bias.zero_()
        layers[0].weight[0] = 1.0
        layers[-1].weight[0, 0] = 1.0


def test_the_edges_and_their_order() -> None:
    assert VERTICES == ("text", "audio", "vision", "text+audio", "text+vision", "audio+vision", "text+audio+vision")
    assert EDGES[:6] == (("text", "text+audio"), ("audio", "text+audio"), ("text", "text+vision"), ("vision", "text+vision"), ("audio", "audio+vision"), ("vision", "audio+vision"))
    assert EDGES[6:12] == tuple((v, "text+audio+vision") for v in VERTICES[:6])  # the unimodal AND the bimodal vertices
    assert EDGES[12:] == tuple((v, "tau") for v in VERTICES)
    assert GraphMFN.edges == EDGES and len(EDGES) == 19


def test_the_graph_on_a_hand_set_case() -> None:
    """Constant efficacies, every vertex network and D_τ computing relu(sum of inputs): τ by hand from the equations."""
    model = _model(text_hidden=1, audio_hidden=1, vision_hidden=1, vertex_dim=1, tau_dim=1)
    alpha = [(i + 1) / 20 for i in range(19)]
    constant_output(model.graph.efficacy, [math.log(a / (1 - a)) for a in alpha])  # sigmoid(logit(α)) = α
    for network in [*model.graph.vertices.values(), model.graph.tau]:
        _sum_of_inputs(network)
    # ĉ = [c_t(t-1), c_a(t-1), c_v(t-1), c_t(t), c_a(t), c_v(t)] ⊙ a and v_m = 2C [ĉ_m(t-1); ĉ_m(t)] (2C = 6):
    # v_t = 6 (1, 4), v_a = 6 (2, 0.5), v_v = 6 (0.25, 3)
    attended = torch.tensor([[1.0, 2.0, 0.25, 4.0, 0.5, 3.0]])
    with torch.no_grad():
        tau, traces = model.memory_input(attended)
        _, _, vertices = model.graph(model.unimodal_vertices(attended))
    s = {"text": 6 * 5.0, "audio": 6 * 2.5, "vision": 6 * 3.25}  # sums of the unimodal vertices
    a = alpha
    s["text+audio"] = a[0] * s["text"] + a[1] * s["audio"]
    s["text+vision"] = a[2] * s["text"] + a[3] * s["vision"]
    s["audio+vision"] = a[4] * s["audio"] + a[5] * s["vision"]
    s["text+audio+vision"] = sum(a[6 + k] * s[v] for k, v in enumerate(VERTICES[:6]))
    expected = sum(a[12 + k] * s[v] for k, v in enumerate(VERTICES))
    torch.testing.assert_close(traces["dfg_efficacies"], torch.tensor([alpha]))
    for v in MULTIMODAL:
        torch.testing.assert_close(vertices[v], torch.tensor([[s[v]]]))
    torch.testing.assert_close(tau, torch.tensor([[expected]]))


def test_tau_and_the_memory_follow_the_equations() -> None:
    """Recomputed with the model's own networks: v_m = 2C [ĉ_m(t-1); ĉ_m(t)], α = σ(D_α([v_t; v_a; v_v])),
    v_ij = D_ij([α v_i; α v_j]),
    v_tav = D_tav([α v for the six lower vertices]), τ = D_τ([α v for all seven]); u_t = γ1 u + γ2 tanh(D_u(τ))."""
    model = _model(1)
    gen = torch.Generator().manual_seed(0)
    c_prev, c_new, memory = torch.randn(4, WINDOW // 2, generator=gen), torch.randn(4, WINDOW // 2, generator=gen), torch.randn(4, 5, generator=gen)
    with torch.no_grad():
        new, traces = model.step(c_prev, c_new, memory)
        window = torch.cat([c_prev, c_new], dim=-1)
        weights = torch.softmax(model.attention(window), dim=-1)
        attended = window * weights
        scaled = WINDOW * attended  # uniform DMAN weights (1 / 2C) would give back c^[t-1,t]
        v = {"text": scaled[:, [0, 1, 2, 3, 4, 5, 13, 14, 15, 16, 17, 18]], "audio": scaled[:, [6, 7, 8, 19, 20, 21]], "vision": scaled[:, [9, 10, 11, 12, 22, 23, 24, 25]]}
        alpha = torch.sigmoid(model.graph.efficacy(torch.cat([v["text"], v["audio"], v["vision"]], dim=-1)))
        for k, (i, j) in enumerate([("text", "audio"), ("text", "vision"), ("audio", "vision")]):
            v[f"{i}+{j}"] = model.graph.vertices[f"{i}+{j}"](torch.cat([alpha[:, 2 * k : 2 * k + 1] * v[i], alpha[:, 2 * k + 1 : 2 * k + 2] * v[j]], dim=-1))
        v["text+audio+vision"] = model.graph.vertices["text+audio+vision"](torch.cat([alpha[:, 6 + k : 7 + k] * v[u] for k, u in enumerate(VERTICES[:6])], dim=-1))
        tau = model.graph.tau(torch.cat([alpha[:, 12 + k : 13 + k] * v[u] for k, u in enumerate(VERTICES)], dim=-1))
        both = torch.cat([tau, memory], dim=-1)
        expected = torch.sigmoid(model.retain_gate(both)) * memory + torch.sigmoid(model.update_gate(both)) * torch.tanh(model.proposal(tau))
    assert tau.shape == (4, 7) and model.graph.tau[0].in_features == TAU_IN
    torch.testing.assert_close(traces["dfg_efficacies"], alpha)
    torch.testing.assert_close(traces["dman_attention"], weights)
    torch.testing.assert_close(new, expected)


def test_an_edge_of_efficacy_zero_cuts_its_source_off() -> None:
    """Constant efficacies, 0 on every edge leaving the audio vertex or a vertex built on it: τ does not depend on
    audio at all. Open those edges again and it does."""
    model = _model(2)
    cut = [i for i, (source, _) in enumerate(EDGES) if "audio" in source]
    assert len(cut) == 2 + 3 + 4  # audio -> ta, av; audio, ta, av -> tav; audio, ta, av, tav -> tau
    with torch.no_grad():
        model.graph.efficacy[-1].weight.zero_()
        model.graph.efficacy[-1].bias[cut] = -1e4  # σ = 0 exactly in float32
    attended = torch.randn(3, WINDOW, generator=torch.Generator().manual_seed(2)).requires_grad_()
    tau, traces = model.memory_input(attended)
    (grad,) = torch.autograd.grad(tau.sum(), attended)
    audio = [6, 7, 8, 19, 20, 21]  # c_a(t-1), c_a(t) in ĉ
    assert (traces["dfg_efficacies"][:, cut] == 0).all() and (traces["dfg_efficacies"][:, [0, 2, 3, 12]] > 0).all()
    assert (grad[:, audio] == 0).all() and (grad.abs().sum(0) > 0).sum() == WINDOW - len(audio)
    with torch.no_grad():
        model.graph.efficacy[-1].bias[cut] = 0.0
    (grad,) = torch.autograd.grad(model.memory_input(attended)[0].sum(), attended)
    assert (grad[:, audio] != 0).any()


def test_state_and_efficacies_stop_at_each_samples_true_length() -> None:
    split = make_toy_split(4, "ref", 1)
    batch = collate(split.samples)
    model = _model(3)
    with torch.no_grad():
        out = model(batch)
        mask = batch.mask("text")
        assert not mask.all()  # the batch has padding
        eff = out.extras["dfg_efficacies"]
        assert eff.shape == (4, batch.text.shape[1], 19) and out.extras["dman_attention"].shape == (4, batch.text.shape[1], WINDOW)
        assert ((eff[mask] > 0) & (eff[mask] < 1)).all() and (eff[~mask] == 0).all()
        for i in range(4):
            h, memory, _, traces = step_by_step(model, batch, i)
            efficacies = torch.cat([step["dfg_efficacies"] for step in traces])  # (n, 19)
            n = len(efficacies)
            torch.testing.assert_close(out.fused[i : i + 1], torch.cat([h["text"], h["audio"], h["vision"], memory], dim=-1), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(eff[i, :n], efficacies, atol=1e-5, rtol=1e-5)
    assert out.fused.shape == (4, 6 + 3 + 4 + 5) and set(out.modality) == {"text", "audio", "vision"}


def test_a_masked_step_is_skipped_and_has_no_efficacies() -> None:
    """h, c, u stay put at a masked step in the middle of a sequence, as if it were not there; its efficacies are 0."""
    model = _model(4)
    gen = torch.Generator().manual_seed(1)
    inputs = {m: torch.randn(1, 5, d, generator=gen) for m, d in (("text", 16), ("audio", 5), ("vision", 4))}
    holes = torch.tensor([[True, False, True, True, False]])
    kept = {m: x[:, [0, 2, 3]] for m, x in inputs.items()}
    with torch.no_grad():
        h, c, memory, traces = model.run(inputs, holes)
        h2, c2, memory2, traces2 = model.run(kept, torch.ones(1, 3, dtype=torch.bool))
    for m in inputs:
        torch.testing.assert_close(h[m], h2[m])
        torch.testing.assert_close(c[m], c2[m])
    torch.testing.assert_close(memory, memory2)
    assert (traces["dfg_efficacies"][0, [1, 4]] == 0).all() and (traces["dman_attention"][0, [1, 4]] == 0).all()
    torch.testing.assert_close(traces["dfg_efficacies"][0, [0, 2, 3]], traces2["dfg_efficacies"][0])


def test_padding_values_and_an_empty_text_do_not_leak() -> None:
    split = make_toy_split(6, "pad", 2)
    model = _model(5)
    short = min(range(6), key=lambda i: split.samples[i].text.shape[0])
    batch = collate(split.samples)
    n = int(batch.lengths("text")[short])
    text = batch.text.clone()
    text[short, n:] = float("nan")  # whatever the padding holds
    noisy = batch.replace(text=text.requires_grad_())
    with torch.no_grad():
        alone = model(collate([split.samples[short]]))
    out = model(noisy)
    torch.testing.assert_close(out.logits[short : short + 1].detach(), alone.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.extras["dfg_efficacies"][short : short + 1, :n].detach(), alone.extras["dfg_efficacies"], atol=1e-5, rtol=1e-5)
    out.logits.sum().backward()
    assert torch.isfinite(noisy.text.grad).all() and (noisy.text.grad[short, n:] == 0).all()
    rng = np.random.default_rng(0)
    empty = Sample(id="e", label=0.0, text=np.zeros((0, 16), np.float32), audio=rng.normal(size=(4, 5)).astype(np.float32), vision=rng.normal(size=(3, 4)).astype(np.float32))
    with torch.no_grad():
        mixed = model(collate([split.samples[0], empty]))
        lone = model(collate([empty]))
    assert (mixed.fused[1] == 0).all() and (mixed.extras["dfg_efficacies"][1] == 0).all()
    assert (lone.extras["dfg_efficacies"] == 0).all()
    torch.testing.assert_close(lone.logits, model.head(torch.zeros(1, 6 + 3 + 4 + 5)))


def test_graph_mfn_is_mfn_with_another_memory_input() -> None:
    """Same seeds, same MFN sizes: the System of LSTMs and the DMAN are built alike, and with the DFG bypassed (τ := ĉ)
    Graph-MFN computes exactly MFN."""
    mfn_sizes = {k: v for k, v in SIZES.items() if k not in ("vertex_dim", "tau_dim", "graph_hidden", "efficacy_hidden")}
    with seeded(0):
        mfn = MFN({"text": 16, "audio": 5, "vision": 4}, TaskSpec(), **mfn_sizes).eval()
    graph = _model(0, tau_dim=WINDOW)
    graph.load_state_dict(mfn.state_dict(), strict=False)  # everything but the graph
    graph.memory_input = lambda attended: (attended, {"dfg_efficacies": attended.new_zeros(len(attended), 19)})  # type: ignore[method-assign]
    batch = collate(make_toy_split(3, "same", 6).samples)
    with torch.no_grad():
        torch.testing.assert_close(graph(batch).logits, mfn(batch).logits)
    assert {n for n, _ in graph.named_parameters()} - {n for n, _ in mfn.named_parameters()} == {n for n, _ in graph.named_parameters() if n.startswith("graph.")}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tau_dim": 0}, "graph_mfn tau_dim must be a positive integer, got 0"),
        ({"vertex_dim": -2}, "graph_mfn vertex_dim must be a positive integer, got -2"),
        ({"efficacy_hidden": 2.5}, "graph_mfn efficacy_hidden must be a positive integer, got 2.5"),
        ({"text_hidden": True}, "graph_mfn text_hidden must be a positive integer, got True"),
        ({"dropout": 1.0}, r"graph_mfn dropout must be in \[0, 1\), got 1.0"),
    ],
)
def test_bad_hyper_parameters_are_config_errors(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GraphMFN({"text": 16, "audio": 5, "vision": 4}, TaskSpec(), **params)


def test_a_config_is_checked_by_name_type_and_range() -> None:
    dims = {"text": 16, "audio": 5, "vision": 4}
    cases = (({"window": 3}, "unknown parameter"), ({"efficacy_hidden": 2.5}, "'efficacy_hidden' is 2.5; expected int"), ({"graph_hidden": 0}, "graph_hidden must be a positive integer"))
    for params, message in cases:
        with pytest.raises(ConfigError, match=message):
            BACKBONES.build("graph_mfn", dims, TaskSpec(), **params)
