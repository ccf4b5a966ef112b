"""MulT: multimodal transformer for unaligned sequences (Tsai et al., 2019).

Each modality is projected to width ``dim`` by a 1D convolution over time
(``kernel_size``), scaled by sqrt(dim) and given sinusoidal positions. For
every target modality, two crossmodal transformers let its sequence attend to
each other modality (keys/values from the source, with key padding masks, so
sequences of different lengths need no alignment); the two results are
concatenated (2 dim) and passed through a self-attention transformer. The
per-modality summary is the masked mean over the target's real positions
(the original takes the last step, which is padding for end-padded unaligned
batches). The three summaries (6 dim) go through a residual two-layer block
(the fused representation) and a linear head.
"""

from __future__ import annotations

import torch
from torch import nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.models.attention import TransformerStack, check_heads, conv_embed
from robustmsa.models.base import Backbone, Output, masked_mean
from robustmsa.registry import BACKBONES


@BACKBONES.register("mult")
class MulT(Backbone):
    def __init__(
        self, dims: dict[str, int], task: TaskSpec, dim: int = 32, heads: int = 4, layers: int = 2, kernel_size: int = 1, dropout: float = 0.1, embed_dropout: float = 0.1
    ) -> None:
        super().__init__(dims, task)
        check_heads(dim, heads)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"mult kernel_size must be a positive odd number, got {kernel_size}")
        self.dim = dim
        self.proj = nn.ModuleDict({m: nn.Conv1d(dims[m], dim, kernel_size, padding=kernel_size // 2, bias=False) for m in self.modalities})
        self.embed_dropout = nn.Dropout(embed_dropout)
        self.cross = nn.ModuleDict(
            {f"{t}_from_{s}": TransformerStack(dim, heads, layers, dropout, cross=True) for t in self.modalities for s in self.modalities if s != t}
        )
        self.memory = nn.ModuleDict({t: TransformerStack(2 * dim, heads, layers, dropout) for t in self.modalities})
        width = 6 * dim
        self.residual = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, width))
        self.head = nn.Linear(width, self.out_dim)

    def embed(self, x: torch.Tensor, mask: torch.Tensor, modality: str) -> torch.Tensor:
        """(B, L, D_m) -> (B, L, dim): padding zeroed, conv projection, sqrt(dim) scale, positions, dropout."""
        return self.embed_dropout(conv_embed(self.proj[modality], x, mask))

    def forward(self, batch: Batch) -> Output:
        masks = {m: batch.mask(m) for m in self.modalities}
        seqs = {m: self.embed(getattr(batch, m), masks[m], m) for m in self.modalities}
        reps = {}
        for t in self.modalities:
            crossed = [self.cross[f"{t}_from_{s}"](seqs[t], masks[t], seqs[s], masks[s]) for s in self.modalities if s != t]
            h = self.memory[t](torch.cat(crossed, dim=-1), masks[t])  # (B, L_t, 2 dim)
            reps[t] = masked_mean(h, masks[t])
        summary = torch.cat([reps[m] for m in self.modalities], dim=-1)  # (B, 6 dim)
        fused = summary + self.residual(summary)
        return Output(logits=self.head(fused), fused=fused, modality=reps)
