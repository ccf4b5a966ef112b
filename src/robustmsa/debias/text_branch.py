"""CLUE's text-only branch: predicts Y_t (B, out_dim) from the text alone.

Inputs (``input``):

* ``'static'``: static word vectors of ``batch.raw_text`` (MiniLM's input
  word-piece table averaged per word, :class:`robustmsa.features.text.StaticWordEncoder`),
  the GloVe-style branch of the paper;
* ``'hash'``: fixed pseudo-random word vectors of ``raw_text`` (fast tests);
* ``'features'``: the bundle's own token features ``batch.text`` (B, Lt, Dt).

Encoders (``encoder``): ``'transformer'`` (default: a small Transformer
encoder, masked mean), ``'lstm'`` (BiLSTM, last states), ``'mean'`` (masked
mean + linear). The default pair (static vectors, transformer) is the one that
measured best on the generated corpus (benchmarks/results/clue_synthetic.md).
Word vectors of raw texts are computed on the fly (memoised per word by the
encoder), so the branch works on any split that carries ``raw_text``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.errors import ConfigError, DataError
from robustmsa.models.base import SequenceEncoder, masked_mean, mlp

INPUTS = ("static", "hash", "features")
ENCODERS = ("lstm", "transformer", "mean")


class TextBranch(nn.Module):
    """Text-only classifier/regressor: (raw text or token features) -> encoder -> MLP -> (B, out_dim)."""

    def __init__(
        self,
        out_dim: int,
        text_dim: int | None = None,
        *,
        input: str = "static",
        encoder: str = "transformer",
        hidden: int = 64,
        layers: int = 1,
        heads: int = 4,
        dropout: float = 0.1,
        max_words: int = 64,
        hash_dim: int = 64,
        glove_path: str | None = None,
    ) -> None:
        super().__init__()
        if input not in INPUTS:
            raise ConfigError(f"text_branch.input must be one of {list(INPUTS)}, got '{input}'")
        if encoder not in ENCODERS:
            raise ConfigError(f"text_branch.encoder must be one of {list(ENCODERS)}, got '{encoder}'")
        if hidden < 2 or layers < 1 or max_words < 1:
            raise ConfigError(f"text_branch needs hidden >= 2, layers >= 1 and max_words >= 1, got {hidden}, {layers}, {max_words}")
        self.input = input
        self.max_words = max_words
        self._words: Any = None
        if input == "features":
            if text_dim is None:
                raise ConfigError("text_branch.input='features' needs the width of the text features")
            in_dim = text_dim
        else:
            from robustmsa.features.text import build_text_encoder

            self._words = build_text_encoder(input, **({"dim": hash_dim} if input == "hash" else {"glove_path": glove_path} if glove_path else {}))
            in_dim = self._words.dim
        self.kind = encoder
        if encoder == "transformer":
            if hidden % heads:
                raise ConfigError(f"text_branch: hidden ({hidden}) must be divisible by heads ({heads})")
            self.proj = nn.Linear(in_dim, hidden)
            self.position = nn.Parameter(torch.zeros(max_words + 2, hidden))
            layer = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=2 * hidden, dropout=dropout, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        else:
            self.encoder = SequenceEncoder(in_dim, hidden, kind=encoder, bidirectional=True, dropout=dropout)
        self.head = mlp(hidden, hidden, out_dim, dropout)

    def inputs(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Token vectors (B, L, D) and their (B, L) mask (at least one position per row is marked real)."""
        device = self.head[-1].weight.device
        if self.input == "features":
            if batch.text is None:
                raise DataError(batch.ids[0] if batch.ids else "batch", "text", "the CLUE text branch (input='features') needs text features")
            x, mask = batch.text[:, : self.max_words + 2], batch.mask("text")[:, : self.max_words + 2]
        else:
            missing = [i for i, t in zip(batch.ids, batch.raw_text) if t is None]
            if missing:
                raise DataError(missing[0], "raw_text", f"the CLUE text branch (input='{self.input}') needs the raw text of every sample")
            feats = [f[: self.max_words] for f in self._words.encode(list(batch.raw_text)).features]
            length = max(1, max(len(f) for f in feats))
            x = torch.zeros(len(feats), length, self._words.dim)
            mask = torch.zeros(len(feats), length, dtype=torch.bool)
            for i, f in enumerate(feats):
                if len(f):
                    x[i, : len(f)] = torch.from_numpy(f)
                    mask[i, : len(f)] = True
        mask = mask.clone()
        mask[:, 0] = True  # an empty text reads as one zero vector (keeps the LSTM and attention defined)
        return x.to(device), mask.to(device)

    def forward(self, batch: Batch) -> Tensor:
        x, mask = self.inputs(batch)
        if self.kind == "transformer":
            h = self.proj(x) + self.position[: x.shape[1]]
            h = masked_mean(self.encoder(h, src_key_padding_mask=~mask), mask)
        else:
            h = self.encoder(x, mask)
        return self.head(h)
