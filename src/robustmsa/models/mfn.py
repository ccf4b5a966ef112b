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
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.models.align import align_to_text
from robustmsa.models.base import Backbone, Output, mlp
from robustmsa.registry import BACKBONES


@BACKBONES.register("mfn")
class MFN(Backbone):
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
        super().__init__(dims, task)
        self.widths = {"text": text_hidden, "audio": audio_hidden, "vision": vision_hidden}
        self.cells = nn.ModuleDict({m: nn.LSTMCell(dims[m], self.widths[m]) for m in self.modalities})
        self.mem_dim = mem_dim
        window = 2 * sum(self.widths.values())  # c^[t-1,t]
        self.attention = mlp(window, attn_hidden, window, dropout)  # D_a
        self.proposal = mlp(window, mem_hidden, mem_dim, dropout)  # D_u
        self.retain_gate = mlp(window + mem_dim, gate_hidden, mem_dim, dropout)  # D_γ1
        self.update_gate = mlp(window + mem_dim, gate_hidden, mem_dim, dropout)  # D_γ2
        self.head = mlp(sum(self.widths.values()) + mem_dim, hidden, self.out_dim, dropout)

    def memory_step(self, c_prev: Tensor, c_new: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        """One DMAN + gated-memory update from the concatenated LSTM memories (B, C) before and after a step and the
        memory u_{t-1} (B, mem_dim); returns (u_t, the attention weights over c^[t-1,t] (B, 2C))."""
        window = torch.cat([c_prev, c_new], dim=-1)
        weights = torch.softmax(self.attention(window), dim=-1)
        attended = window * weights
        both = torch.cat([attended, memory], dim=-1)
        retain = torch.sigmoid(self.retain_gate(both))
        update = torch.sigmoid(self.update_gate(both))
        return retain * memory + update * torch.tanh(self.proposal(attended)), weights

    def recur(self, inputs: dict[str, Tensor], mask: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor, Tensor]:
        """Run the System of LSTMs and the memory over (B, L, D_m) ``inputs`` (one per modality, on a shared time axis).

        At a step where the (B, L) bool ``mask`` is False a sample's h, c and u are left as they are. Returns the final
        hidden states h_m (B, H_m), cell states c_m (B, H_m), the memory u (B, mem_dim) and the DMAN weights
        (B, L, 2 sum H_m), zero at masked steps."""
        keep = mask.unsqueeze(-1)
        inputs = {m: inputs[m].masked_fill(~keep, 0.0) for m in self.modalities}  # padding never reaches a cell
        size, steps = mask.shape
        ref = inputs["text"]
        h = {m: ref.new_zeros(size, self.widths[m]) for m in self.modalities}
        c = {m: ref.new_zeros(size, self.widths[m]) for m in self.modalities}
        memory = ref.new_zeros(size, self.mem_dim)
        attention = [ref.new_zeros(size, 0, 2 * sum(self.widths.values()))]
        for t in range(steps):
            real = keep[:, t]  # (B, 1): False freezes the sample's state
            new = {m: self.cells[m](inputs[m][:, t], (h[m], c[m])) for m in self.modalities}
            c_prev = torch.cat([c[m] for m in self.modalities], dim=-1)
            c_new = torch.cat([new[m][1] for m in self.modalities], dim=-1)
            new_memory, weights = self.memory_step(c_prev, c_new, memory)
            h = {m: torch.where(real, new[m][0], h[m]) for m in self.modalities}
            c = {m: torch.where(real, new[m][1], c[m]) for m in self.modalities}
            memory = torch.where(real, new_memory, memory)
            attention.append((weights * real.to(weights.dtype)).unsqueeze(1))
        return h, c, memory, torch.cat(attention, dim=1)

    def forward(self, batch: Batch) -> Output:
        inputs = {m: batch.text if m == "text" else align_to_text(batch, m) for m in self.modalities}  # (B, Lt, D_m)
        h, _, memory, attention = self.recur(inputs, batch.mask("text"))
        fused = torch.cat([h[m] for m in self.modalities] + [memory], dim=-1)
        return Output(logits=self.head(fused), fused=fused, modality=h, extras={"dman_attention": attention})
