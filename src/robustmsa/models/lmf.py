"""LMF: low-rank multimodal fusion (Liu et al., 2018).

TFN's fusion tensor W . (z_t' x z_a' x z_v') (z' = [1; z]) is replaced by a
rank-``rank`` decomposition of W into per-modality factors W_m (rank, H_m + 1, H):
fused = sum_r w_r * prod_m (z_m' W_m[r]) + b, linear in each modality and never
materialising the outer product. Here the fusion output is a ``hidden``-wide
representation (B, hidden) followed by an MLP head (the original maps
directly to the output; the extra width exposes a fused representation).
"""

from __future__ import annotations

import torch
from torch import nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.models.base import Backbone, Output, SequenceEncoder, mlp
from robustmsa.registry import BACKBONES


@BACKBONES.register("lmf")
class LMF(Backbone):
    def __init__(self, dims: dict[str, int], task: TaskSpec, text_hidden: int = 32, av_hidden: int = 16, hidden: int = 32, rank: int = 4, dropout: float = 0.1) -> None:
        super().__init__(dims, task)
        if rank < 1:
            raise ConfigError(f"lmf rank must be >= 1, got {rank}")
        self.encoders = nn.ModuleDict(
            {
                "text": SequenceEncoder(dims["text"], text_hidden, kind="lstm", dropout=dropout),
                "audio": SequenceEncoder(dims["audio"], av_hidden, kind="mean", dropout=dropout),
                "vision": SequenceEncoder(dims["vision"], av_hidden, kind="mean", dropout=dropout),
            }
        )
        self.factors = nn.ParameterDict({m: nn.Parameter(torch.empty(rank, enc.out_dim + 1, hidden)) for m, enc in self.encoders.items()})
        self.rank_weights = nn.Parameter(torch.empty(1, rank))
        self.fusion_bias = nn.Parameter(torch.zeros(hidden))
        for factor in self.factors.values():
            nn.init.xavier_normal_(factor)
        nn.init.xavier_normal_(self.rank_weights)
        self.head = mlp(hidden, hidden, self.out_dim, dropout)

    def forward(self, batch: Batch) -> Output:
        reps = {m: enc(getattr(batch, m), batch.mask(m)) for m, enc in self.encoders.items()}
        product = None
        for m, z in reps.items():
            z1 = torch.cat([torch.ones_like(z[:, :1]), z], dim=-1)  # (B, H_m + 1)
            term = torch.einsum("bi,rih->rbh", z1, self.factors[m])  # (rank, B, hidden)
            product = term if product is None else product * term
        fused = torch.einsum("r,rbh->bh", self.rank_weights[0], product) + self.fusion_bias
        return Output(logits=self.head(fused), fused=fused, modality=reps)
