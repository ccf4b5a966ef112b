"""MFN: the Memory Fusion Network (Zadeh et al., AAAI 2018, "Memory Fusion Network for Multi-view Sequential Learning").

Audio and vision are put on the text's time axis (unaligned inputs are
linearly resampled over their true lengths, see :mod:`robustmsa.models.align`;
aligned inputs pass unchanged). Then, step by step over the text positions:

* **System of LSTMs**: one :class:`~torch.nn.LSTMCell` per modality reads that
  modality's features at step t and updates its hidden state h_m and memory
  (cell state) c_m.
* **Delta-memory Attention Network (DMAN)**: the memories of all LSTMs before
  and after the step, c^[t-1,t] = [c_t(t-1); c_a(t-1); c_v(t-1); c_t(t); c_a(t); c_v(t)]
  (width 2 (Ht + Ha + Hv)), get attention weights a = softmax(D_a(c^[t-1,t]))
  over that whole concatenated vector (the weights sum to 1) and the attended
  memory is ĉ = c^[t-1,t] ⊙ a.
* **Multi-view Gated Memory** u (width ``mem_dim``, zero at the start): the
  proposal û = D_u(ĉ), the retain gate γ1 = sigmoid(D_γ1([ĉ; u_{t-1}])) and the
  update gate γ2 = sigmoid(D_γ2([ĉ; u_{t-1}])) give
  u_t = γ1 ⊙ u_{t-1} + γ2 ⊙ tanh(û).

Each D is a two-layer ReLU MLP with dropout (as in the authors' code). The
final representation (``Output.fused``) is [h_t(T); h_a(T); h_v(T); u_T], the
last hidden state of every LSTM and the final memory, and a two-layer MLP maps
it to the output. ``Output.modality``: m -> h_m(T) of that modality's LSTM;
``Output.extras['dman_attention']``: (B, Lt, 2 (Ht + Ha + Hv)) the DMAN
weights of every step (zero at padded steps).

Padding: a sample's state (h, c of every LSTM and u) is frozen at every text
position whose mask is False (padding, or a hole in the middle, which is then
skipped), so T is its true text length and its output does not depend on the
padding or on the other samples of the batch; a sample with an empty text
sequence keeps the initial (zero) state. Padded inputs are zeroed before they
reach the cells so that whatever the padding holds cannot leak into gradients.

Simplifications: the DMAN window is fixed at the paper's two steps (t-1, t);
no input normalisation (like the paper); the cells start from zero states.

The recurrence lives in :class:`MemoryRecurrence`, whose hook
:meth:`~MemoryRecurrence.memory_input` says what the gated memory reads (here
ĉ itself); Graph-MFN (:mod:`robustmsa.models.graph_mfn`) reuses everything
else and replaces only that step with its Dynamic Fusion Graph.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.models.align import align_to_text
from robustmsa.models.base import Backbone, Output, mlp
from robustmsa.registry import BACKBONES


class MemoryRecurrence(Backbone):
    """What MFN and Graph-MFN share: the System of LSTMs, the DMAN, the multi-view gated memory, the state freezing at
    masked steps and the output head over [h_t(T); h_a(T); h_v(T); u_T] (see the module docstring).

    The step between the DMAN and the memory is :meth:`memory_input`: what the gated memory reads, of width
    ``fused_dim``, computed from the attended memories ĉ. Here (MFN) it is ĉ itself; Graph-MFN overrides it with its
    Dynamic Fusion Graph. ``trace_widths`` names the per-step tensors that the steps return (name -> width); they
    reach ``Output.extras`` as (B, L, width), zero at masked steps.
    """

    def __init__(
        self,
        dims: dict[str, int],
        task: TaskSpec,
        widths: dict[str, int],
        mem_dim: int,
        attn_hidden: int,
        mem_hidden: int,
        gate_hidden: int,
        hidden: int,
        dropout: float,
        fused_dim: int,
    ) -> None:
        super().__init__(dims, task)
        self.widths = {m: widths[m] for m in self.modalities}
        self.cells = nn.ModuleDict({m: nn.LSTMCell(dims[m], self.widths[m]) for m in self.modalities})
        self.mem_dim = mem_dim
        window = 2 * sum(self.widths.values())  # c^[t-1,t]
        self.attention = mlp(window, attn_hidden, window, dropout)  # D_a
        self.proposal = mlp(fused_dim, mem_hidden, mem_dim, dropout)  # D_u
        self.retain_gate = mlp(fused_dim + mem_dim, gate_hidden, mem_dim, dropout)  # D_γ1
        self.update_gate = mlp(fused_dim + mem_dim, gate_hidden, mem_dim, dropout)  # D_γ2
        self.head = mlp(sum(self.widths.values()) + mem_dim, hidden, self.out_dim, dropout)
        self.trace_widths: dict[str, int] = {"dman_attention": window}

    def memory_input(self, attended: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """What the gated memory reads, from the attended memories ĉ (B, 2C), and this step's traces (name -> (B, width)
        as declared in ``trace_widths``). MFN: ĉ itself, no traces."""
        return attended, {}

    def step(self, c_prev: Tensor, c_new: Tensor, memory: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """One DMAN + fusion + gated-memory update from the concatenated LSTM memories (B, C) before and after a step and
        the memory u_{t-1} (B, mem_dim); returns u_t and the step's traces: the DMAN weights over c^[t-1,t] (B, 2C) as
        ``dman_attention`` and those of :meth:`memory_input`."""
        window = torch.cat([c_prev, c_new], dim=-1)
        weights = torch.softmax(self.attention(window), dim=-1)
        fused, traces = self.memory_input(window * weights)
        both = torch.cat([fused, memory], dim=-1)
        retain = torch.sigmoid(self.retain_gate(both))
        update = torch.sigmoid(self.update_gate(both))
        return retain * memory + update * torch.tanh(self.proposal(fused)), {"dman_attention": weights, **traces}

    def run(self, inputs: dict[str, Tensor], mask: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor, dict[str, Tensor]]:
        """Run the System of LSTMs and the memory over (B, L, D_m) ``inputs`` (one per modality, on a shared time axis).

        At a step where the (B, L) bool ``mask`` is False a sample's h, c and u are left as they are. Returns the final
        hidden states h_m (B, H_m), cell states c_m (B, H_m), the memory u (B, mem_dim) and the traces of every step
        (name -> (B, L, width), see ``trace_widths``), zero at masked steps."""
        keep = mask.unsqueeze(-1)
        inputs = {m: inputs[m].masked_fill(~keep, 0.0) for m in self.modalities}  # padding never reaches a cell
        size, steps = mask.shape
        ref = inputs["text"]
        h = {m: ref.new_zeros(size, self.widths[m]) for m in self.modalities}
        c = {m: ref.new_zeros(size, self.widths[m]) for m in self.modalities}
        memory = ref.new_zeros(size, self.mem_dim)
        traces = {name: [ref.new_zeros(size, 0, width)] for name, width in self.trace_widths.items()}
        for t in range(steps):
            real = keep[:, t]  # (B, 1): False freezes the sample's state
            new = {m: self.cells[m](inputs[m][:, t], (h[m], c[m])) for m in self.modalities}
            c_prev = torch.cat([c[m] for m in self.modalities], dim=-1)
            c_new = torch.cat([new[m][1] for m in self.modalities], dim=-1)
            new_memory, step_traces = self.step(c_prev, c_new, memory)
            h = {m: torch.where(real, new[m][0], h[m]) for m in self.modalities}
            c = {m: torch.where(real, new[m][1], c[m]) for m in self.modalities}
            memory = torch.where(real, new_memory, memory)
            for name, value in step_traces.items():
                traces[name].append((value * real.to(value.dtype)).unsqueeze(1))
        return h, c, memory, {name: torch.cat(values, dim=1) for name, values in traces.items()}

    def forward(self, batch: Batch) -> Output:
        inputs = {m: batch.text if m == "text" else align_to_text(batch, m) for m in self.modalities}  # (B, Lt, D_m)
        h, _, memory, traces = self.run(inputs, batch.mask("text"))
        fused = torch.cat([h[m] for m in self.modalities] + [memory], dim=-1)
        return Output(logits=self.head(fused), fused=fused, modality=h, extras=traces)


@BACKBONES.register("mfn")
class MFN(MemoryRecurrence):
    def __init__(
        self,
        dims: dict[str, int],
        task: TaskSpec,
        text_hidden: int = 64,
        audio_hidden: int = 16,
        vision_hidden: int = 32,
        mem_dim: int = 64,
        attn_hidden: int = 64,
        mem_hidden: int = 64,
        gate_hidden: int = 64,
        hidden: int = 64,
        dropout: float = 0.1,
    ) -> None:
        widths = {"text": text_hidden, "audio": audio_hidden, "vision": vision_hidden}
        window = 2 * sum(widths.values())  # the gated memory reads ĉ, of the width of c^[t-1,t]
        super().__init__(dims, task, widths, mem_dim, attn_hidden, mem_hidden, gate_hidden, hidden, dropout, fused_dim=window)
