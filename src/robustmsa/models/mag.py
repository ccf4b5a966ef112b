"""MAG: multimodal adaptation gate (Rahman et al., 2020, MAG-BERT) over token features.

MAG shifts each text token representation z_i by a displacement computed from
the audio a_i and vision v_i at that position:
g_v = ReLU(W_gv [z; v]), g_a = ReLU(W_ga [z; a]), H = g_v * W_v v + g_a * W_a a,
alpha = min(beta * ||z|| / ||H||, 1), z' = LayerNorm(z + alpha H).
Text arrives as precomputed token features, so MAG is applied to a linear
projection of them (B, Lt, dim), followed by a small transformer encoder
over the shifted tokens standing in for the text encoder layers above the
injection point; its masked mean is the fused representation. Unaligned
audio/vision are put on the token positions by linear interpolation
(:mod:`robustmsa.models.align`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.models.align import align_to_text
from robustmsa.models.attention import TransformerStack, sinusoidal_positions
from robustmsa.models.base import Backbone, Output, masked_mean, mlp
from robustmsa.registry import BACKBONES


class AdaptationGate(nn.Module):
    """The MAG layer: shifts (B, L, dim) tokens by gated audio (B, L, Da) and vision (B, L, Dv)."""

    def __init__(self, dim: int, audio_dim: int, vision_dim: int, beta_shift: float = 1.0, dropout: float = 0.1) -> None:
        super().__init__()
        self.gate_a = nn.Linear(dim + audio_dim, dim)
        self.gate_v = nn.Linear(dim + vision_dim, dim)
        self.proj_a = nn.Linear(audio_dim, dim)
        self.proj_v = nn.Linear(vision_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.beta_shift = beta_shift

    def forward(self, z: Tensor, audio: Tensor, vision: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns the shifted tokens and the projected audio / vision (B, L, dim)."""
        a, v = self.proj_a(audio), self.proj_v(vision)
        shift = torch.relu(self.gate_a(torch.cat([z, audio], -1))) * a + torch.relu(self.gate_v(torch.cat([z, vision], -1))) * v
        shift_norm = shift.norm(dim=-1, keepdim=True)
        shift_norm = torch.where(shift_norm == 0, torch.ones_like(shift_norm), shift_norm)
        alpha = (self.beta_shift * z.norm(dim=-1, keepdim=True) / (shift_norm + 1e-6)).clamp(max=1.0)
        return self.dropout(self.norm(z + alpha * shift)), a, v


@BACKBONES.register("mag")
class MAG(Backbone):
    def __init__(self, dims: dict[str, int], task: TaskSpec, dim: int = 32, heads: int = 4, layers: int = 2, beta_shift: float = 1.0, dropout: float = 0.1) -> None:
        super().__init__(dims, task)
        self.dim = dim
        self.text_proj = nn.Linear(dims["text"], dim)
        self.gate = AdaptationGate(dim, dims["audio"], dims["vision"], beta_shift, dropout)
        self.encoder = TransformerStack(dim, heads, layers, dropout)
        self.head = mlp(dim, dim, self.out_dim, dropout)

    def forward(self, batch: Batch) -> Output:
        mask = batch.mask("text")
        z = self.text_proj(batch.text)  # (B, Lt, dim)
        shifted, a, v = self.gate(z, align_to_text(batch, "audio"), align_to_text(batch, "vision"))
        h = self.encoder(shifted + sinusoidal_positions(shifted.shape[1], self.dim, z.device, z.dtype), mask)
        fused = masked_mean(h, mask)
        reps = {"text": masked_mean(z, mask), "audio": masked_mean(a, mask), "vision": masked_mean(v, mask)}
        return Output(logits=self.head(fused), fused=fused, modality=reps)
