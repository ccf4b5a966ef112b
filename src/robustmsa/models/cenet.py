"""CENET: the Cross-modal Enhancement Network (Wang, Tian, Chen, Shi, Wu and Xie, IEEE Transactions on Multimedia 2022,
"Cross-modal Enhancement Network for Multimodal Sentiment Analysis").

CENET enhances the text representation inside the text encoder with what audio and vision say: after the first
encoder layer, every text token queries the audio and the vision sequences and the answers shift the token, and the
remaining layers encode the shifted tokens.

* **Text encoder, part 1.** The token features are projected to width ``dim``, given sinusoidal positions and
  encoded by ``layers_before`` self-attention blocks: Z (B, Lt, dim).
* **Cross-modal enhancement (CE).** Audio and vision frames are mapped to width ``dim`` by two-layer MLPs
  (Linear - ReLU - Linear): A', V'. A single-head attention lets each text token query each of them,
  E_a = softmax(s (Z W_q^a)(A' W_k^a)^T) (A' W_v^a) and E_v alike (keys restricted to the real frames, s =
  ``score_scale``); the shift W_s [E_v; E_a] is added to the tokens: Z' = Z + W_s [E_v; E_a].
* **Text encoder, part 2.** ``layers_after`` self-attention blocks over Z'; their mean over the real tokens is the
  fused representation, and the head Dropout - Linear - tanh - Dropout - Linear gives the logits.

``Output.modality``: the masked means of Z, A' and V' (B, dim). ``Output.extras``: ``ce_shift`` the shift added to each
token (B, Lt, dim).

Padding: padded inputs reach nothing (zeroed before the projections, masked as attention keys, left out of the
means); a sample without any audio (or vision) frame gets no shift from it.

Reference: MMSA's CENET (github thuiar/MMSA, src/MMSA/models/singleTask/CENET.py). Deviations, each on purpose:

* Text: precomputed token features through a linear projection and a small transformer standing in for BERT (the
  injection after its first layer is kept), as for :mod:`robustmsa.models.mag`; MMSA fine-tunes BERT's layers around
  the CE module (with the embedding layer frozen).
* Pooling: the mean over the real tokens instead of the first token (BERT's [CLS]), which token features need not
  have.
* Attention scores: scaled by 1 / sqrt(dim) by default (``score_scale: null``); MMSA multiplies them by 8, which at
  BERT's width (768) makes the attention nearly one-hot. ``score_scale: 8`` gives MMSA's.
* Keys: MMSA attends over every audio / vision frame, padding included; here only over the real frames.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.models.attention import TransformerStack, sinusoidal_positions
from robustmsa.models.base import Backbone, Output, masked_mean
from robustmsa.registry import BACKBONES


class TextQuery(nn.Module):
    """Single-head attention of text tokens (B, Lt, dim) over a (B, L, dim) sequence at its real positions; 0 without any."""

    def __init__(self, dim: int, scale: float) -> None:
        super().__init__()
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.scale = scale

    def forward(self, text: Tensor, source: Tensor, source_mask: Tensor) -> Tensor:
        scores = self.scale * self.query(text) @ self.key(source).transpose(1, 2)  # (B, Lt, L)
        scores = scores.masked_fill(~source_mask.unsqueeze(1), float("-inf"))
        has_keys = source_mask.any(dim=1)[:, None, None]
        weights = torch.softmax(torch.where(has_keys, scores, torch.zeros_like(scores)), dim=-1)
        return has_keys.to(text.dtype) * (weights @ self.value(source))


@BACKBONES.register("cenet")
class CENET(Backbone):
    """Cross-modal Enhancement Network (see module doc)."""

    def __init__(
        self,
        dims: dict[str, int],
        task: TaskSpec,
        dim: int = 32,
        heads: int = 4,
        layers_before: int = 1,
        layers_after: int = 1,
        score_scale: float | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(dims, task)
        if score_scale is not None and not (isinstance(score_scale, int | float) and not isinstance(score_scale, bool) and math.isfinite(score_scale) and score_scale > 0):
            raise ConfigError(f"cenet score_scale must be a positive number or null (1 / sqrt(dim)), got {score_scale!r}")
        self.dim = dim
        self.text_proj = nn.Linear(dims["text"], dim)
        self.before = TransformerStack(dim, heads, layers_before, dropout)
        self.transform = nn.ModuleDict({m: nn.Sequential(nn.Linear(dims[m], dim), nn.ReLU(), nn.Linear(dim, dim)) for m in ("audio", "vision")})
        scale = float(score_scale) if score_scale is not None else 1.0 / math.sqrt(dim)
        self.attend = nn.ModuleDict({m: TextQuery(dim, scale) for m in ("audio", "vision")})
        self.shift = nn.Linear(2 * dim, dim)
        self.after = TransformerStack(dim, heads, layers_after, dropout)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, dim), nn.Tanh(), nn.Dropout(dropout), nn.Linear(dim, self.out_dim))

    def forward(self, batch: Batch) -> Output:
        masks = {m: batch.mask(m) for m in self.modalities}
        text = self.text_proj(batch.text.masked_fill(~masks["text"].unsqueeze(-1), 0.0))
        z = self.before(text + sinusoidal_positions(text.shape[1], self.dim, text.device, text.dtype), masks["text"])
        frames = {m: self.transform[m](getattr(batch, m).masked_fill(~masks[m].unsqueeze(-1), 0.0)) for m in ("audio", "vision")}
        shift = self.shift(torch.cat([self.attend[m](z, frames[m], masks[m]) for m in ("vision", "audio")], dim=-1))
        fused = masked_mean(self.after(z + shift, masks["text"]), masks["text"])
        reps = {"text": masked_mean(z, masks["text"]), **{m: masked_mean(frames[m], masks[m]) for m in frames}}
        return Output(logits=self.head(fused), fused=fused, modality=reps, extras={"ce_shift": shift})
