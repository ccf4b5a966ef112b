"""TFR-Net: the Transformer-based Feature Reconstruction Network (Yuan, Li, Xu and Yu, ACM MM 2021, "Transformer-based
Feature Reconstruction Network for Robust Multimodal Sentiment Analysis").

The network of TFR-Net; the method :mod:`robustmsa.reconstruct.tfr_net` (``method: {name: tfr_net}``) trains it on
randomly corrupted inputs with its feature reconstruction loss. Trained with any other method (``supervised``,
``missing_robust``...) it is TFR-Net without the reconstruction (the paper's "w/o generator" ablation).

* **Input projections.** Each modality's features (padding zeroed; the text after ``text_dropout``) are projected to
  width ``dim`` by a 1D convolution over time (``kernel_sizes``, no bias), scaled by sqrt(dim), given sinusoidal
  positions and embedding dropout: E_t, E_a, E_v (B, L_m, dim).
* **Intra- and inter-modal attention** (the paper's alignment module). For every modality m, a self-attention stack
  over E_m and two cross-modal stacks in which E_m queries each other modality (keys / values from it, masked by its
  true length), each with ``layers`` pre-norm blocks; their outputs are concatenated: the aligned sequence
  H_m = [Intra(E_m); Cross(E_m <- E_x); Cross(E_m <- E_y)] (B, L_m, 3 dim). The representation of a position thus
  holds what the other modalities say at the same moment, which is what lets the network fill a dropped position.
* **Fusion** (the paper's C-GATE module), per modality: a bidirectional GRU (``fusion_layers`` layers, hidden
  ``fusion_hidden`` per direction) over H_m's true length gives G (B, L_m, 2 fusion_hidden); a 1D convolution over
  time (kernel 3) and a sigmoid give a gate per position; R = tanh(W [H_m; tanh(G) * gate]) (B, L_m, fusion_hidden),
  max-pooled over the real positions, then ``fusion_dropout``. The three pooled vectors (B, 3 fusion_hidden) are
  concatenated (the fused representation) and a classifier LayerNorm - Linear(``classifier_hidden``) - LeakyReLU -
  Dropout(``classifier_dropout``) - Linear gives the logits.
* **Reconstruction** is trained by the method :mod:`robustmsa.reconstruct.tfr_net`, which owns the generator (the
  aligned sequences H_m are its input): trained with another method the network carries no unused parameters.

``Output.modality``: the pooled vector of each modality (B, fusion_hidden). ``Output.extras``: ``aligned_<m>`` the
aligned sequences H_m (B, L_m, ``aligned_dim`` = 3 dim), 0 at padded positions, which the generator reads.

Padding: inputs are zeroed at padded positions, every attention has a key padding mask, the GRU runs over packed true
lengths (outputs 0 at padded steps, so the gate convolution sees the zeros its own padding would give) and the
pooling reads real positions only: a sample's output depends neither on the padding nor on the other samples. A
sample with an empty sequence pools to 0 for that modality.

Reference: the authors' code as shipped in MMSA (github thuiar/MMSA, src/MMSA/models/missingTask/TFR_NET and
trains/missingTask/TFR_NET.py). Deviations, each on purpose:

* Text: precomputed token features through the convolutional projection, not a BERT fine-tuned inside the model (as
  every backbone of this package); reconstruction targets are those features (MMSA: the BERT outputs of the
  complete text).
* Attention layers: the shared pre-norm :class:`~robustmsa.models.attention.AttentionBlock` (one dropout rate for
  attention, feed-forward and residual, a final LayerNorm per stack) instead of MulT's layer with separate attention /
  ReLU / residual dropout rates and per-modality attention dropout.
* The classifier normalises with a LayerNorm instead of MMSA's BatchNorm1d, so that a prediction does not depend on
  the other samples of its batch and a batch of one sample trains. One ``fusion_hidden`` for the three modalities
  (MMSA's MOSI setting: 36 / 20 / 48).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.models.attention import TransformerStack, check_heads, conv_embed
from robustmsa.models.base import Backbone, Output, masked_max, run_packed
from robustmsa.registry import BACKBONES

#: MMSA's MOSI kernel sizes of the input convolutions.
KERNEL_SIZES = {"text": 1, "audio": 5, "vision": 3}


class ContextGate(nn.Module):
    """TFR-Net's C-GATE: (B, L, in_dim) sequence -> (B, hidden), a gated bi-GRU summary max-pooled over real positions."""

    def __init__(self, in_dim: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.gru = nn.GRU(in_dim, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.gate = nn.Conv1d(2 * hidden, 1, kernel_size=3, padding=1)
        self.out = nn.Linear(in_dim + 2 * hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        context, _ = run_packed(self.gru, x, mask)  # (B, L, 2 hidden), 0 at padded steps
        gate = torch.sigmoid(self.gate(context.transpose(1, 2))).transpose(1, 2)  # (B, L, 1)
        rep = torch.tanh(self.out(torch.cat([x, torch.tanh(context) * gate], dim=-1)))
        return self.dropout(masked_max(rep, mask))


@BACKBONES.register("tfr_net")
class TFRNet(Backbone):
    """TFR-Net's network (see module doc)."""

    def __init__(
        self,
        dims: dict[str, int],
        task: TaskSpec,
        dim: int = 30,
        heads: int = 6,
        layers: int = 3,
        kernel_sizes: Mapping[str, int] | None = None,
        fusion_hidden: int = 32,
        fusion_layers: int = 3,
        classifier_hidden: int = 128,
        dropout: float = 0.2,
        embed_dropout: float = 0.2,
        text_dropout: float = 0.2,
        fusion_dropout: float = 0.2,
        classifier_dropout: float = 0.0,
    ) -> None:
        super().__init__(dims, task)
        check_heads(dim, heads)
        kernels = {**KERNEL_SIZES, **(kernel_sizes or {})}
        unknown = sorted(set(kernels) - set(self.modalities))
        bad = {m: k for m, k in kernels.items() if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0}
        if unknown or bad:
            raise ConfigError(f"tfr_net kernel_sizes must map {list(self.modalities)} to positive odd numbers, got {dict(kernel_sizes or {})}")
        for name, value in {"fusion_hidden": fusion_hidden, "fusion_layers": fusion_layers, "classifier_hidden": classifier_hidden}.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"tfr_net {name} must be a positive integer, got {value!r}")
        self.dim = dim
        self.aligned_dim = 3 * dim
        self.proj = nn.ModuleDict({m: nn.Conv1d(dims[m], dim, kernels[m], padding=kernels[m] // 2, bias=False) for m in self.modalities})
        self.text_dropout = nn.Dropout(text_dropout)
        self.embed_dropout = nn.Dropout(embed_dropout)
        self.intra = nn.ModuleDict({m: TransformerStack(dim, heads, layers, dropout) for m in self.modalities})
        self.cross = nn.ModuleDict(
            {f"{t}_from_{s}": TransformerStack(dim, heads, layers, dropout, cross=True) for t in self.modalities for s in self.modalities if s != t}
        )
        self.fusion = nn.ModuleDict({m: ContextGate(3 * dim, fusion_hidden, fusion_layers, fusion_dropout) for m in self.modalities})
        width = 3 * fusion_hidden
        self.classifier = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, classifier_hidden), nn.LeakyReLU(), nn.Dropout(classifier_dropout), nn.Linear(classifier_hidden, self.out_dim)
        )

    def align(self, batch: Batch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The aligned sequences H_m (B, L_m, 3 dim), 0 at padded positions, and the masks (B, L_m)."""
        masks = {m: batch.mask(m) for m in self.modalities}
        inputs = {m: getattr(batch, m) for m in self.modalities}
        inputs["text"] = self.text_dropout(inputs["text"])
        seqs = {m: self.embed_dropout(conv_embed(self.proj[m], inputs[m], masks[m])) for m in self.modalities}
        aligned = {}
        for t in self.modalities:
            parts = [self.intra[t](seqs[t], masks[t])]
            parts += [self.cross[f"{t}_from_{s}"](seqs[t], masks[t], seqs[s], masks[s]) for s in self.modalities if s != t]
            aligned[t] = torch.cat(parts, dim=-1).masked_fill(~masks[t].unsqueeze(-1), 0.0)
        return aligned, masks

    def forward(self, batch: Batch) -> Output:
        aligned, masks = self.align(batch)
        pooled = {m: self.fusion[m](aligned[m], masks[m]) for m in self.modalities}
        fused = torch.cat([pooled[m] for m in self.modalities], dim=-1)
        return Output(logits=self.classifier(fused), fused=fused, modality=pooled, extras={f"aligned_{m}": aligned[m] for m in self.modalities})
