"""Transformer blocks shared by the attention-based backbones (MulT, MAG, MISA, text-centric, BBFN, TETFN).

One pre-norm block serves as self-attention (``cross=False``) or as
cross-modal attention from a query sequence over a source sequence
(``cross=True``, as in MulT's crossmodal transformer). Masks are (B, L) bool,
True for real positions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robustmsa.errors import ConfigError


def key_padding_mask(mask: Tensor) -> Tensor:
    """``nn.MultiheadAttention`` key padding mask (True = ignore) from a validity mask.

    Rows without any valid position keep position 0 (zero padding) so that the
    softmax stays finite for empty sequences.
    """
    empty = ~mask.any(dim=1)
    if bool(empty.any()):
        mask = mask.clone()
        mask[empty, 0] = True
    return ~mask


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Fixed sinusoidal position encodings (length, dim) (Vaswani et al., 2017)."""
    position = torch.arange(length, device=device, dtype=dtype).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=dtype) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device, dtype=dtype)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


def scaled_positions(h: Tensor) -> Tensor:
    """sqrt(d) h + sinusoidal positions of a (B, L, d) sequence: the input embedding of MulT, BBFN and TETFN."""
    dim = h.shape[-1]
    return math.sqrt(dim) * h + sinusoidal_positions(h.shape[1], dim, h.device, h.dtype)


def conv_embed(proj: nn.Module, x: Tensor, mask: Tensor) -> Tensor:
    """(B, L, D) -> (B, L, d): the padding zeroed (whatever it holds), the Conv1d ``proj`` over time, then
    :func:`scaled_positions`."""
    x = x.masked_fill(~mask.unsqueeze(-1), 0.0)
    return scaled_positions(proj(x.transpose(1, 2)).transpose(1, 2))


def check_heads(dim: int, heads: int) -> None:
    if dim <= 0 or heads <= 0 or dim % heads:
        raise ConfigError(f"attention width {dim} must be a positive multiple of the number of heads {heads}")


class AttentionBlock(nn.Module):
    """Pre-norm block: x + Attn(LN(x), LN(source)) then x + FF(LN(x)); shapes (B, Lq, d) -> (B, Lq, d)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.1, cross: bool = False, ff_mult: int = 4) -> None:
        super().__init__()
        check_heads(dim, heads)
        self.cross = cross
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim) if cross else None
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_mult * dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, padding: Tensor, source: Tensor | None = None) -> Tensor:
        """``padding``: key padding mask (True = ignore) of the keys (``source`` if cross, else ``x``)."""
        return self.feed_forward(x + self.attend(x, padding, source))

    def attend(self, x: Tensor, padding: Tensor, source: Tensor | None = None) -> Tensor:
        """The attention term alone, Dropout(Attn(LN(x), LN(source))) (B, Lq, d), without the residual (BBFN gates it)."""
        q = self.norm_q(x)
        kv = self.norm_kv(source) if self.norm_kv is not None else q
        attended, _ = self.attn(q, kv, kv, key_padding_mask=padding, need_weights=False)
        return self.dropout(attended)

    def feed_forward(self, x: Tensor) -> Tensor:
        """The second half of the block: x + Dropout(FF(LN(x)))."""
        return x + self.dropout(self.ff(self.norm_ff(x)))


def attend_real(block: AttentionBlock, x: Tensor, source: Tensor, source_mask: Tensor) -> Tensor:
    """``block.attend`` of queries x (B, Lq, d) over source (B, Ls, d) at its real positions ((B, Ls) bool mask), exactly 0
    for a sample without any (instead of what the padding slot that keeps its softmax finite holds)."""
    has_keys = source_mask.any(dim=1).to(x.dtype)[:, None, None]
    return has_keys * block.attend(x, key_padding_mask(source_mask), source)


class TransformerStack(nn.Module):
    """``layers`` attention blocks and a final LayerNorm.

    Self-attention: ``forward(x, x_mask)``; cross-attention (``cross=True``):
    ``forward(x, x_mask, source, source_mask)`` where queries come from x
    (B, Lq, d) and keys/values from source (B, Ls, d); ``x_mask`` is then
    not needed (outputs at padded query positions are ignored downstream).
    """

    def __init__(self, dim: int, heads: int, layers: int, dropout: float = 0.1, cross: bool = False) -> None:
        super().__init__()
        if layers < 1:
            raise ConfigError(f"a transformer needs at least one layer, got {layers}")
        self.cross = cross
        self.blocks = nn.ModuleList(AttentionBlock(dim, heads, dropout, cross=cross) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, x_mask: Tensor, source: Tensor | None = None, source_mask: Tensor | None = None) -> Tensor:
        if self.cross and (source is None or source_mask is None):
            raise ValueError("a cross-attention stack needs a source sequence and its mask")
        padding = key_padding_mask(source_mask if self.cross else x_mask)
        for block in self.blocks:
            x = block(x, padding, source if self.cross else None)
        return self.norm(x)
