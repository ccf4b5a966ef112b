"""Two-stream context-aware emotion recognition backbones (CAER-Net, Lee et al., ICCV 2019; the EMOTIC baseline).

A *subject* stream encodes the person's tokens (``vision``: face / body
features, (B, Ls, Ds)) and a *context* stream the scene tokens with the
person masked out (``image``, (B, Lc, Dc)). Each stream projects its tokens
to ``hidden`` and pools them by masked attention; with ``guided=True`` the
context attention is guided by the subject summary, as CAER-Net's context
encoder attends to the regions that matter for the person. The fusion:

* ``fusion='adaptive'`` (CAER-Net): a small network weighs the two summaries
  per sample (softmax over one score per stream), and a head classifies the
  weighted concatenation;
* ``fusion='concat'`` (the EMOTIC baseline of Kosti et al.): the head
  classifies the plain concatenation (use with ``guided=False``).

``modality`` holds the two summaries (``subject``, ``context``) and
``extras['fusion_weights']`` (B, 2) the per-sample stream weights (1 each
for ``concat``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError, DataError
from robustmsa.models.base import Backbone, Output, mlp
from robustmsa.registry import BACKBONES


class AttentionPool(nn.Module):
    """Masked additive attention pooling of (B, L, H) tokens into (B, H), with a learned or a given (B, H) query."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.key = nn.Linear(hidden, hidden)
        self.query = nn.Parameter(torch.randn(hidden) * 0.02)

    def forward(self, x: Tensor, mask: Tensor, query: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The pooled (B, H) summary and the (B, L) attention weights (zero on padding)."""
        q = self.query.expand(x.shape[0], -1) if query is None else query
        scores = (torch.tanh(self.key(x)) * q.unsqueeze(1)).sum(dim=-1)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1) * mask.to(x.dtype)  # an all-padding row pools to zero
        return (weights.unsqueeze(-1) * x).sum(dim=1), weights


class TokenStream(nn.Module):
    """Project one modality's tokens (Linear + LayerNorm + GELU) and pool them by attention."""

    def __init__(self, in_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout))
        self.pool = AttentionPool(hidden)

    def forward(self, x: Tensor, mask: Tensor, query: Tensor | None = None) -> Tensor:
        return self.pool(self.proj(x), mask, query)[0]


@BACKBONES.register("two_stream")
class TwoStream(Backbone):
    """Subject stream (``vision``) + (subject-guided) context stream (``image``) + adaptive or concatenation fusion."""

    modalities = ("vision", "image")

    def __init__(self, dims: dict[str, int], task: TaskSpec, hidden: int = 64, dropout: float = 0.1, guided: bool = True, fusion: str = "adaptive") -> None:
        super().__init__(dims, task)
        if fusion not in ("adaptive", "concat"):
            raise ConfigError(f"two_stream: fusion must be 'adaptive' or 'concat', got '{fusion}'")
        self.subject = TokenStream(dims["vision"], hidden, dropout)
        self.context = TokenStream(dims["image"], hidden, dropout)
        self.guide = nn.Linear(hidden, hidden) if guided else None
        self.stream_scores = nn.ModuleList([nn.Linear(hidden, 1), nn.Linear(hidden, 1)]) if fusion == "adaptive" else None
        self.head = mlp(2 * hidden, hidden, self.out_dim, dropout)

    def forward(self, batch: Batch) -> Output:
        for name in self.modalities:
            if getattr(batch, name) is None:
                raise DataError(batch.ids[0] if batch.ids else "batch", name, f"the two_stream backbone needs '{name}' tokens in every batch")
        h_s = self.subject(batch.vision, batch.mask("vision"))
        h_c = self.context(batch.image, batch.mask("image"), self.guide(h_s) if self.guide is not None else None)
        if self.stream_scores is None:
            weights = torch.ones(h_s.shape[0], 2, device=h_s.device, dtype=h_s.dtype)
        else:
            weights = torch.cat([score(h) for score, h in zip(self.stream_scores, (h_s, h_c))], dim=-1).softmax(dim=-1)
        fused = torch.cat([weights[:, :1] * h_s, weights[:, 1:] * h_c], dim=-1)
        return Output(logits=self.head(fused), fused=fused, modality={"subject": h_s, "context": h_c}, extras={"fusion_weights": weights})
