"""Building blocks of LNLN and TCMR: proxy text generation from audio/vision and auxiliary reconstruction.

* :class:`QueryDecoder`: a sequence of a requested length decoded from source
  tokens by cross-attention (queries = a learned vector + sinusoidal
  positions): the generic "X-to-text" generator and frame reconstructor.
* :class:`ProxyGenerator`: the proxy text representation H_p (B, Lt, dim)
  from audio and vision tokens, either ``joint`` (one generator over the
  concatenated audio and vision tokens: LNLN, TCMR without IPFG) or ``ipfg``
  (TCMR's importance-aware proxy: audio-to-text and vision-to-text generators
  and a per-sample gate, H_p = alpha * H_at + (1 - alpha) * H_vt).
* :class:`FrameReconstructor`: auxiliary reconstruction of the clean audio and
  vision frames from the tokens encoded from the corrupted input.
* :class:`LatentReconstructor`: auxiliary reconstruction, in the encoder's token
  space, of the complete input's text, audio and vision tokens from the
  corrupted input's tokens (what the LNLN authors' released code trains).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.errors import ConfigError
from robustmsa.models.attention import TransformerStack, sinusoidal_positions
from robustmsa.models.base import masked_mean, masked_mse, mlp

SOURCES = ("audio", "vision")
MODALITIES = ("text", *SOURCES)


class GradReverse(torch.autograd.Function):
    """Identity forward, negated gradient backward (adversarial training with one optimiser)."""

    @staticmethod
    def forward(ctx: object, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:  # type: ignore[override]
        return -grad


class QueryDecoder(nn.Module):
    """Decode (B, L, out_dim) for the positions of a (B, L) mask from source tokens (B, K, dim).

    Queries: a learned vector + sinusoidal positions, or given (B, L, dim) ``queries``.
    """

    def __init__(self, dim: int, out_dim: int, heads: int, layers: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        self.dim = dim
        self.query = nn.Parameter(torch.empty(dim))
        nn.init.normal_(self.query, std=0.02)
        self.attend = TransformerStack(dim, heads, layers, dropout, cross=True)
        self.out = nn.Linear(dim, out_dim)

    def forward(self, mask: Tensor, source: Tensor, source_mask: Tensor, queries: Tensor | None = None) -> Tensor:
        batch, length = mask.shape
        if queries is None:
            queries = (self.query + sinusoidal_positions(length, self.dim, source.device, source.dtype)).expand(batch, -1, -1)
        return self.out(self.attend(queries, mask, source, source_mask))


class ProxyGenerator(nn.Module):
    """H_p (B, Lt, dim) from the encoded audio/vision tokens; ``kind`` 'joint' or 'ipfg' (see module doc).

    ``query='position'``: the generators' queries are learned position
    embeddings only; ``query='text'``: the (corrupted) text tokens H_t, so that
    each position asks audio and vision for what its own context lacks.
    """

    def __init__(self, dim: int, heads: int, layers: int = 1, dropout: float = 0.1, kind: str = "joint", query: str = "position") -> None:
        super().__init__()
        if kind not in ("joint", "ipfg"):
            raise ConfigError(f"proxy kind must be 'joint' or 'ipfg', got '{kind}'")
        if query not in ("position", "text"):
            raise ConfigError(f"proxy query must be 'position' or 'text', got '{query}'")
        self.kind = kind
        self.query = query
        names = ("joint",) if kind == "joint" else SOURCES
        self.generators = nn.ModuleDict({n: QueryDecoder(dim, dim, heads, layers, dropout) for n in names})
        self.gate = mlp(2 * dim, dim, 1, dropout) if kind == "ipfg" else None

    def forward(self, text_mask: Tensor, enc: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """Returns (H_p (B, Lt, dim), gate alpha (B,) or None)."""
        queries = enc["text_tokens"] if self.query == "text" else None
        if self.gate is None:
            tokens = torch.cat([enc[f"{m}_tokens"] for m in SOURCES], dim=1)
            mask = torch.cat([enc[f"{m}_mask"] for m in SOURCES], dim=1)
            return self.generators["joint"](text_mask, tokens, mask, queries), None
        h = {m: self.generators[m](text_mask, enc[f"{m}_tokens"], enc[f"{m}_mask"], queries) for m in SOURCES}
        summary = torch.cat([masked_mean(h[m], text_mask) for m in SOURCES], dim=-1)
        alpha = torch.sigmoid(self.gate(summary))  # (B, 1)
        return alpha.unsqueeze(-1) * h["audio"] + (1.0 - alpha.unsqueeze(-1)) * h["vision"], alpha[:, 0]


class FrameReconstructor(nn.Module):
    """Auxiliary reconstruction of the clean audio/vision frames (B, L_m, D_m) from their encoded tokens."""

    def __init__(self, dims: dict[str, int], dim: int, heads: int, layers: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        self.decoders = nn.ModuleDict({m: QueryDecoder(dim, dims[m], heads, layers, dropout) for m in SOURCES})

    def forward(self, enc: dict[str, Tensor], clean: Batch) -> Tensor:
        """Sum over audio and vision of the MSE to the clean frames (real positions only)."""
        total = torch.zeros((), device=enc["audio_tokens"].device)
        for m, decoder in self.decoders.items():
            mask = clean.mask(m)
            total = total + masked_mse(decoder(mask, enc[f"{m}_tokens"], enc[f"{m}_mask"]), getattr(clean, m), mask)
        return total


class LatentReconstructor(nn.Module):
    """Auxiliary reconstruction of the complete input's encoded tokens from the corrupted input's (see module doc).

    Per modality a self-attention stack and a linear map over the corrupted tokens; the MSE to the complete tokens
    (a stop-gradient target, so that the encoder cannot shrink its clean representation to ease the loss) over the
    real positions, summed over text, audio and vision.
    """

    def __init__(self, dim: int, heads: int, layers: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        self.attend = nn.ModuleDict({m: TransformerStack(dim, heads, layers, dropout) for m in MODALITIES})
        self.out = nn.ModuleDict({m: nn.Linear(dim, dim) for m in MODALITIES})

    def forward(self, enc: dict[str, Tensor], clean: dict[str, Tensor]) -> Tensor:
        total = torch.zeros((), device=enc["text_tokens"].device)
        for m in MODALITIES:
            tokens, mask = enc[f"{m}_tokens"], enc[f"{m}_mask"]
            total = total + masked_mse(self.out[m](self.attend[m](tokens, mask)), clean[f"{m}_tokens"].detach(), clean[f"{m}_mask"])
        return total
