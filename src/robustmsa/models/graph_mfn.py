"""Graph-MFN: the Graph Memory Fusion Network (Zadeh, Liang, Vanbriesen, Poria, Tong, Cambria, Chen and Morency,
ACL 2018, "Multimodal Language Analysis in the Wild: CMU-MOSEI Dataset and Interpretable Dynamic Fusion Graph").

Graph-MFN is MFN (:mod:`robustmsa.models.mfn`: audio and vision resampled onto the text positions, one LSTM per
modality, the Delta-memory Attention Network (DMAN) over the LSTM memories before and after each step, a multi-view
gated memory u, the state frozen at masked steps) whose fusion step is a **Dynamic Fusion Graph (DFG)**: the DMAN's
attended memories ĉ no longer go to the gated memory directly; the DFG turns them into τ, which the memory reads
where MFN reads ĉ. Everything but that step is MFN's own code (:class:`~robustmsa.models.mfn.MemoryRecurrence`,
hook :meth:`GraphMFN.memory_input`). At every text step t:

* **unimodal vertices**: ĉ = c^[t-1,t] ⊙ a split per modality and rescaled, v_m = 2C [ĉ_m(t-1); ĉ_m(t)]
  (width 2 H_m, C = Ht + Ha + Hv), i.e. the part of the attended window that belongs to modality m's LSTM; the
  factor 2C, the width of ĉ, makes a uniform attention (every weight 1 / 2C) give back the memories themselves;
* **efficacies**: one network over the unimodal vertices gives all edge weights at once,
  α = sigmoid(D_α([v_t; v_a; v_v])) in [0, 1]^19 (:data:`EDGES` lists the edges in the order of α);
* **bimodal vertices**: v_ij = D_ij([α_(i→ij) v_i; α_(j→ij) v_j]) for ij in ta, tv, av (width ``vertex_dim``);
* **trimodal vertex**: v_tav = D_tav([α v_t; α v_a; α v_v; α v_ta; α v_tv; α v_av]), each vertex weighted by the
  efficacy of its own edge into tav;
* **graph output**: τ = D_τ([α_(m→τ) v_m for all seven vertices]) (width ``tau_dim``);
* **multi-view gated memory** (MFN's, reading τ instead of ĉ): û = D_u(τ), γ1 = sigmoid(D_γ1([τ; u_{t-1}])),
  γ2 = sigmoid(D_γ2([τ; u_{t-1}])), u_t = γ1 ⊙ u_{t-1} + γ2 ⊙ tanh(û).

Every D is a two-layer ReLU MLP with dropout (MFN's :func:`~robustmsa.models.base.mlp`). The output is MFN's: an MLP
over [h_t(T); h_a(T); h_v(T); u_T]. ``Output.modality``: m -> h_m(T); ``Output.extras``: ``dman_attention``
(B, Lt, 2 (Ht + Ha + Hv)) the DMAN weights and ``dfg_efficacies`` (B, Lt, 19) the efficacies α of every step, in the
order of :data:`EDGES`, both zero at padded (masked) steps. A sample's state and output do not depend on the padding
or the other samples (MFN's state freezing). There are no auxiliary losses: like the paper, Graph-MFN is trained
with the task loss only.

Edge order (:data:`EDGES`, vertices named by their modalities joined with ``+``): 0-1 text, audio -> text+audio;
2-3 text, vision -> text+vision; 4-5 audio, vision -> audio+vision; 6-11 text, audio, vision, text+audio,
text+vision, audio+vision -> text+audio+vision; 12-18 the same six and text+audio+vision -> tau. This is also the
order of the authors' DFG (CMU-MultimodalSDK) and of MMSA's copy of it, with the modalities ordered text, audio,
vision.

Deviations, each on purpose:

* Where the DFG sits. The paper describes Graph-MFN as MFN with its fusion block replaced by the DFG. Here the DMAN
  is kept and its attended memories ĉ, split per modality, are the unimodal vertices; τ replaces ĉ as the input
  of the gated memory. MMSA (``Graph_MFN.py``) drops the DMAN and builds each unimodal vertex from the hidden states,
  ReLU(W_m [h_m(t-1); h_m(t)]). Keeping the DMAN makes Graph-MFN differ from MFN in the fusion step only (the two
  share their code and can be compared directly) and keeps both interpretable weightings, the DMAN's over memory
  dimensions and the DFG's over modality interactions.
* The factor 2C on the unimodal vertices (ours). The DMAN's softmax spreads a total weight of 1 over 2C entries, so
  ĉ is about 1 / 2C of the LSTM memories (1 / 224 with the default sizes). Fed to the DFG as is, its networks saw
  near-zero inputs and the efficacies stayed constant: on the small generated corpus (15 epochs, seed 0), their
  standard deviation over test samples and steps was 0.002 (all of them in [0.47, 0.57]) without the factor and
  0.055 (from 0.18 to 0.95) with it, at about the same accuracy (default corpus, 3 epochs, seed 0: IID Has0 Acc-2
  90.8 % without, 90.5 % with). MMSA's unimodal vertices (below) are of the hidden states' scale too. MFN's own
  memory, which reads ĉ, is left as it is.
* Efficacies in [0, 1] through a sigmoid, the range the paper gives them. The authors' SDK code and MMSA use the raw
  output of the efficacy network (unbounded, possibly negative), which makes them weights no longer comparable
  across edges or steps.
* Vertex, efficacy and τ networks are two-layer ReLU MLPs with dropout, like every other network of MFN here. In
  the SDK / MMSA every vertex network and D_τ is two stacked linear layers without an activation (a linear map
  through a 100-wide bottleneck) and the efficacy network three such linear layers.
* Text: precomputed token features (GloVe / BERT vectors from an MMSA pickle, MiniLM on the generated corpus), no
  fine-tuned language model, as in MMSA's Graph-MFN. Unaligned audio / vision are linearly resampled onto the text
  positions (MFN's alignment; the paper and MMSA need word-aligned data).
* Padding: MFN's state freezing (MMSA runs the recurrence over the padded steps too). No input normalisation, zero
  initial states, the DMAN window fixed at two steps; sizes much smaller than MMSA's (LSTMs 256/32/256, memory 300,
  see ``configs/mmsa/graph_mfn.yaml``) so that the step-by-step recurrence trains on a CPU.
"""

from __future__ import annotations

from itertools import combinations

import torch
from torch import Tensor, nn

from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.models.base import mlp
from robustmsa.models.mfn import MemoryRecurrence
from robustmsa.registry import BACKBONES

MODALITIES = ("text", "audio", "vision")
#: The vertices: unimodal, bimodal, trimodal (each named by its modalities joined with "+").
VERTICES = tuple("+".join(group) for size in range(1, len(MODALITIES) + 1) for group in combinations(MODALITIES, size))
#: The multimodal vertices, each an MLP over the efficacy-weighted concatenation of its sources.
MULTIMODAL = VERTICES[len(MODALITIES) :]
#: The edges (source vertex, target), in the order of the efficacies: into each multimodal vertex from every vertex
#: made of a proper subset of its modalities, then into ``tau`` (the graph's output) from every vertex.
EDGES = tuple((source, target) for target in MULTIMODAL for source in VERTICES if set(source.split("+")) < set(target.split("+"))) + tuple((v, "tau") for v in VERTICES)
#: For each target (the multimodal vertices, then ``tau``): the indices in :data:`EDGES` of the edges into it, in order.
INCOMING = {target: tuple(i for i, (_, t) in enumerate(EDGES) if t == target) for target in (*MULTIMODAL, "tau")}


class DynamicFusionGraph(nn.Module):
    """The DFG over the three unimodal vertices, of widths ``widths`` (modality -> width).

    ``forward(unimodal)`` takes the unimodal vertices concatenated, [v_t; v_a; v_v] (B, sum of widths), and returns
    τ (B, tau_dim), the efficacies α (B, len(EDGES)) in [0, 1] and every vertex but τ (name -> (B, width)); see the
    module docstring for the equations.
    """

    def __init__(self, widths: dict[str, int], vertex_dim: int, tau_dim: int, graph_hidden: int, efficacy_hidden: int, dropout: float) -> None:
        super().__init__()
        self.widths = {**{m: widths[m] for m in MODALITIES}, **{v: vertex_dim for v in MULTIMODAL}}
        in_widths = {target: sum(self.widths[EDGES[i][0]] for i in edges) for target, edges in INCOMING.items()}
        self.efficacy = mlp(sum(widths[m] for m in MODALITIES), efficacy_hidden, len(EDGES), dropout)  # D_α
        self.vertices = nn.ModuleDict({v: mlp(in_widths[v], graph_hidden, vertex_dim, dropout) for v in MULTIMODAL})  # D_ta, ...
        self.tau = mlp(in_widths["tau"], graph_hidden, tau_dim, dropout)  # D_τ
        # the edge of every column of a target's input (its source vertices concatenated), so that one gather of α
        # weights them all
        self.columns = {target: f"columns_{k}" for k, target in enumerate(INCOMING)}  # target -> buffer name
        for target, edges in INCOMING.items():
            columns = [i for i in edges for _ in range(self.widths[EDGES[i][0]])]
            self.register_buffer(self.columns[target], torch.tensor(columns, dtype=torch.long), persistent=False)

    def weighted(self, target: str, alpha: Tensor, vertices: dict[str, Tensor]) -> Tensor:
        """The input of ``target``'s network: the vertices with an edge into it, each times its efficacy, concatenated."""
        sources = torch.cat([vertices[EDGES[i][0]] for i in INCOMING[target]], dim=-1)
        return sources * alpha[:, getattr(self, self.columns[target])]

    def forward(self, unimodal: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        alpha = torch.sigmoid(self.efficacy(unimodal))
        vertices = dict(zip(MODALITIES, unimodal.split([self.widths[m] for m in MODALITIES], dim=-1)))
        for v in MULTIMODAL:  # bimodal, then trimodal
            vertices[v] = self.vertices[v](self.weighted(v, alpha, vertices))
        return self.tau(self.weighted("tau", alpha, vertices)), alpha, vertices


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"graph_mfn {name} must be a positive integer, got {value!r}")


@BACKBONES.register("graph_mfn")
class GraphMFN(MemoryRecurrence):
    """Graph-MFN, see the module docstring. ``edges``: :data:`EDGES`, the order of ``Output.extras['dfg_efficacies']``."""

    edges = EDGES

    def __init__(
        self,
        dims: dict[str, int],
        task: TaskSpec,
        text_hidden: int = 64,
        audio_hidden: int = 16,
        vision_hidden: int = 32,
        mem_dim: int = 64,
        attn_hidden: int = 64,
        vertex_dim: int = 32,
        tau_dim: int = 64,
        graph_hidden: int = 64,
        efficacy_hidden: int = 32,
        mem_hidden: int = 64,
        gate_hidden: int = 64,
        hidden: int = 64,
        dropout: float = 0.1,
    ) -> None:
        sizes = {
            "text_hidden": text_hidden,
            "audio_hidden": audio_hidden,
            "vision_hidden": vision_hidden,
            "mem_dim": mem_dim,
            "attn_hidden": attn_hidden,
            "vertex_dim": vertex_dim,
            "tau_dim": tau_dim,
            "graph_hidden": graph_hidden,
            "efficacy_hidden": efficacy_hidden,
            "mem_hidden": mem_hidden,
            "gate_hidden": gate_hidden,
            "hidden": hidden,
        }
        for name, value in sizes.items():
            _positive(name, value)
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"graph_mfn dropout must be in [0, 1), got {dropout!r}")
        widths = {"text": text_hidden, "audio": audio_hidden, "vision": vision_hidden}
        super().__init__(dims, task, widths, mem_dim, attn_hidden, mem_hidden, gate_hidden, hidden, dropout, fused_dim=tau_dim)
        self.graph = DynamicFusionGraph({m: 2 * self.widths[m] for m in self.modalities}, vertex_dim, tau_dim, graph_hidden, efficacy_hidden, dropout)
        self.trace_widths["dfg_efficacies"] = len(EDGES)
        # the columns of ĉ that make [v_t; v_a; v_v]: ĉ viewed as (before, after) x C, each modality's block of both rows
        blocks = torch.arange(2 * sum(self.widths.values())).view(2, -1).split([self.widths[m] for m in self.modalities], dim=1)
        self.register_buffer("vertex_order", torch.cat([block.reshape(-1) for block in blocks]), persistent=False)

    def unimodal_vertices(self, attended: Tensor) -> Tensor:
        """Reorder ĉ (B, 2C), laid out [c_t(t-1); c_a(t-1); c_v(t-1); c_t(t); c_a(t); c_v(t)] ⊙ a, into the unimodal
        vertices v_m = 2C [ĉ_m(t-1); ĉ_m(t)] concatenated: [v_t; v_a; v_v] (B, 2C). The factor 2C undoes the 1 / 2C of
        a uniform attention (see the module docstring)."""
        return attended[:, self.vertex_order] * attended.shape[-1]

    def memory_input(self, attended: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """τ, the DFG's output over the unimodal vertices of ĉ, and the step's efficacies as ``dfg_efficacies``."""
        tau, alpha, _ = self.graph(self.unimodal_vertices(attended))
        return tau, {"dfg_efficacies": alpha}
