"""A text-centric backbone in the style of ALMT (Zhang et al., 2023) and LNLN (Zhang et al., 2024).

Language is the dominant modality: text tokens guide attention over audio and
vision. Composable parts, so that missing-modality reconstruction methods
(LNLN, TCMR) can replace the token-level text representation before fusion:

* :meth:`TextCentric.encode` ``(batch) -> dict``: ``text_tokens`` H_t
  (B, Lt, dim) from a projection + self-attention encoder over the token
  features, ``text_mask`` (B, Lt); ``audio_tokens`` / ``vision_tokens``
  (B, K, dim): each sequence compressed into K learned tokens (ALMT: the
  tokens are prepended to the projected sequence and read back after a
  transformer), with all-True masks ``audio_mask`` / ``vision_mask`` (B, K).
* :meth:`TextCentric.fuse` ``(text_tokens, audio_tokens, vision_tokens, masks) -> Output``:
  adaptive hyper-modality learning over ``levels`` steps (step j refines the
  text tokens with a self-attention layer, H_t^j, and adds text-guided
  cross-attention over audio and over vision to a hyper-modality sequence,
  H_hyper^j = H_hyper^{j-1} + Attn(H_t^j, H_a) + Attn(H_t^j, H_v), one hyper
  token per text position), then a fusion transformer whose [CLS] token
  attends over [CLS; H_t^levels] and, by cross-attention, over H_hyper; the
  [CLS] output is the fused representation and goes to the head.

Unlike ALMT (and the LNLN authors' code), the text is not compressed into K
learned tokens: H_t keeps one token per word, so that a missing word stays
addressable (LNLN / TCMR ``blend='missing'``, TCMR's per-token reconstruction
target), and H_hyper has one token per text position instead of K.

``Output.modality``: masked means of H_t, H_a, H_v (B, dim); ``Output.extras``:
``text_tokens``, ``text_mask``, ``audio_tokens``, ``vision_tokens``, ``hyper`` (B, Lt, dim).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.models.attention import AttentionBlock, TransformerStack, check_heads, key_padding_mask, sinusoidal_positions
from robustmsa.models.base import Backbone, Output, masked_mean, mlp
from robustmsa.registry import BACKBONES


class TextEncoder(nn.Module):
    """Token features (B, Lt, Dt) -> H_t (B, Lt, dim): projection, sinusoidal positions, self-attention layers."""

    def __init__(self, in_dim: int, dim: int, heads: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.dim = dim
        self.proj = nn.Linear(in_dim, dim)
        self.encoder = TransformerStack(dim, heads, layers, dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.proj(x)
        return self.encoder(h + sinusoidal_positions(h.shape[1], self.dim, h.device, h.dtype), mask)


class TokenCompressor(nn.Module):
    """A (B, L, D) sequence -> K learned summary tokens (B, K, dim) (ALMT's per-modality embedding)."""

    def __init__(self, in_dim: int, dim: int, tokens: int, heads: int, layers: int, dropout: float) -> None:
        super().__init__()
        if tokens < 1:
            raise ConfigError(f"text_centric av_tokens must be >= 1, got {tokens}")
        self.dim = dim
        self.proj = nn.Linear(in_dim, dim)
        self.tokens = nn.Parameter(torch.empty(tokens, dim))
        nn.init.normal_(self.tokens, std=0.02)
        self.encoder = TransformerStack(dim, heads, layers, dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        k = self.tokens.shape[0]
        h = self.proj(x)
        h = h + sinusoidal_positions(h.shape[1], self.dim, h.device, h.dtype)
        seq = torch.cat([self.tokens.unsqueeze(0).expand(h.shape[0], -1, -1), h], dim=1)
        full_mask = torch.cat([mask.new_ones(h.shape[0], k), mask], dim=1)
        return self.encoder(seq, full_mask)[:, :k]


class HyperModalityLayer(nn.Module):
    """One step of text-guided hyper-modality learning (ALMT's AHL layer)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        check_heads(dim, heads)
        self.text = AttentionBlock(dim, heads, dropout)
        self.norm_text = nn.LayerNorm(dim)
        self.norm_src = nn.ModuleDict({m: nn.LayerNorm(dim) for m in ("audio", "vision")})
        self.attn = nn.ModuleDict({m: nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True) for m in ("audio", "vision")})
        self.out = nn.Linear(dim, dim)

    def forward(self, h_text: Tensor, text_padding: Tensor, hyper: Tensor, sources: dict[str, tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        """``sources``: modality -> (tokens (B, L_m, dim), key padding mask (B, L_m)); returns (H_t^j, H_hyper^j)."""
        h_text = self.text(h_text, text_padding)
        q = self.norm_text(h_text)
        shift = 0
        for m, (tokens, padding) in sources.items():
            kv = self.norm_src[m](tokens)
            shift = shift + self.attn[m](q, kv, kv, key_padding_mask=padding, need_weights=False)[0]
        return h_text, hyper + self.out(shift)


class TextGuidedFusion(nn.Module):
    """Hyper-modality learning then a [CLS] fusion transformer: returns fused (B, dim) and H_hyper (B, Lt, dim)."""

    def __init__(self, dim: int, heads: int, levels: int, layers: int, dropout: float) -> None:
        super().__init__()
        if levels < 1 or layers < 1:
            raise ConfigError(f"text_centric needs levels >= 1 and fusion_layers >= 1, got {levels} and {layers}")
        self.hyper_init = nn.Parameter(torch.empty(dim))
        self.cls = nn.Parameter(torch.empty(dim))
        nn.init.normal_(self.hyper_init, std=0.02)
        nn.init.normal_(self.cls, std=0.02)
        self.levels = nn.ModuleList(HyperModalityLayer(dim, heads, dropout) for _ in range(levels))
        self.self_blocks = nn.ModuleList(AttentionBlock(dim, heads, dropout) for _ in range(layers))
        self.cross_blocks = nn.ModuleList(AttentionBlock(dim, heads, dropout, cross=True) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, h_text: Tensor, h_audio: Tensor, h_vision: Tensor, masks: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        text_padding = key_padding_mask(masks["text"])
        sources = {"audio": (h_audio, key_padding_mask(masks["audio"])), "vision": (h_vision, key_padding_mask(masks["vision"]))}
        hyper = self.hyper_init.expand_as(h_text)
        for level in self.levels:
            h_text, hyper = level(h_text, text_padding, hyper, sources)
        batch = h_text.shape[0]
        x = torch.cat([self.cls.expand(batch, 1, -1), h_text], dim=1)
        x_padding = torch.cat([text_padding.new_zeros(batch, 1), text_padding], dim=1)
        for self_block, cross_block in zip(self.self_blocks, self.cross_blocks):
            x = cross_block(self_block(x, x_padding), text_padding, hyper)
        return self.norm(x[:, 0]), hyper


@BACKBONES.register("text_centric")
class TextCentric(Backbone):
    def __init__(
        self,
        dims: dict[str, int],
        task: TaskSpec,
        dim: int = 32,
        heads: int = 4,
        text_layers: int = 1,
        av_tokens: int = 8,
        av_layers: int = 1,
        levels: int = 3,
        fusion_layers: int = 1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(dims, task)
        self.text_encoder = TextEncoder(dims["text"], dim, heads, text_layers, dropout)
        self.av_encoders = nn.ModuleDict({m: TokenCompressor(dims[m], dim, av_tokens, heads, av_layers, dropout) for m in ("audio", "vision")})
        self.fusion = TextGuidedFusion(dim, heads, levels, fusion_layers, dropout)
        self.head = mlp(dim, dim, self.out_dim, dropout)

    def encode(self, batch: Batch) -> dict[str, Tensor]:
        """Token-level representations and masks of the three modalities (see the module docstring)."""
        text_mask = batch.mask("text")
        out = {"text_tokens": self.text_encoder(batch.text, text_mask), "text_mask": text_mask}
        for m, encoder in self.av_encoders.items():
            tokens = encoder(getattr(batch, m), batch.mask(m))
            out[f"{m}_tokens"] = tokens
            out[f"{m}_mask"] = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return out

    def fuse(self, text_tokens: Tensor, audio_tokens: Tensor, vision_tokens: Tensor, masks: dict[str, Tensor]) -> Output:
        """Fuse token-level representations (B, L_m, dim) with (B, L_m) masks keyed text/audio/vision."""
        fused, hyper = self.fusion(text_tokens, audio_tokens, vision_tokens, masks)
        tokens = {"text": text_tokens, "audio": audio_tokens, "vision": vision_tokens}
        modality = {m: masked_mean(t, masks[m]) for m, t in tokens.items()}
        extras = {"text_tokens": text_tokens, "text_mask": masks["text"], "audio_tokens": audio_tokens, "vision_tokens": vision_tokens, "hyper": hyper}
        return Output(logits=self.head(fused), fused=fused, modality=modality, extras=extras)

    def forward(self, batch: Batch) -> Output:
        enc = self.encode(batch)
        return self.fuse(enc["text_tokens"], enc["audio_tokens"], enc["vision_tokens"], {m: enc[f"{m}_mask"] for m in self.modalities})
