"""BBFN: the Bi-Bimodal Fusion Network (Han, Chen, Gelbukh, Zadeh, Morency and Poria, ICMI 2021, "Bi-Bimodal Modality
Fusion for Correlation-Controlled Multimodal Sentiment Analysis").

Text is the most informative modality, so BBFN fuses two text-centred pairs, text-audio (TA) and text-vision (TV),
in two independent bimodal fusion modules, and predicts from their four final streams.

* **Input projections.** Each modality's features are zeroed at padded positions, projected to width ``dim`` by a 1D
  convolution over time (``kernel_size``; no bias), scaled by sqrt(dim), given sinusoidal positions and embedding
  dropout: X_t^0, X_a^0, X_v^0 (B, L_m, dim). The text projection is shared by both modules.
* **Bimodal fusion module** for the pair (t, m), m = a or v: a stack of ``layers`` complementation layers over two
  streams, the text stream X_t^i and the stream X_m^i. Layer i:

  - *modality-specific feature space separator*: one encoder per stream gives s_t^i = E_t^i(X_t^i) and
    s_m^i = E_m^i(X_m^i) (B, dim); a discriminator D^i (dim -> 4 dim -> 1, ReLU) guesses from each encoding which
    stream it comes from (text: label 0, m: label 1). Encoder E: in layer 0 a linear map of the masked mean over the
    stream's real positions; in later layers (``separator='gru'``) a bidirectional GRU over the stream, the mean of its
    two directions averaged over the real positions (as the authors' code); ``separator='linear'`` uses the layer-0 kind
    in every layer;
  - *gated control*: the control vector c^i = [s_t^i; s_m^i] (B, 2 dim) sets, for each direction, a retain gate
    g_r = sigmoid(W_r c^i + b_r) and a compound gate g_c = sigmoid(W_c c^i + b_c) (B, dim), one value per sample and
    channel, shared by all positions;
  - *both-way cross-modal attention* (pre-norm, :class:`~robustmsa.models.attention.AttentionBlock`): the text stream
    queries stream m and stream m queries the text, both from the layer's inputs,
    Z_t = g_c^{m->t} ⊙ Attn(LN(X_t^i), LN(X_m^i)) + g_r^{m->t} ⊙ X_t^i,   X_t^{i+1} = Z_t + FF(LN(Z_t)),
    Z_m = g_c^{t->m} ⊙ Attn(LN(X_m^i), LN(X_t^i)) + g_r^{t->m} ⊙ X_m^i,   X_m^{i+1} = Z_m + FF(LN(Z_m)),
    so the gates decide how much of each stream is kept (g_r) and how much of what it read from the other modality
    is added (g_c). Since c^i holds both encodings, the gates themselves carry information across: the audio
    encoding modulates the text stream through g_r even where g_c shuts the attention term. A final LayerNorm per
    stream follows the last layer.
* **Prediction.** Each module's two final streams are averaged over their real positions; the four summaries
  [text_from_audio; audio_from_text; text_from_vision; vision_from_text] (B, 4 dim) go through a residual two-layer
  block (the fused representation) and a linear head.

Auxiliary loss (:meth:`BBFN.auxiliary_losses`, training mode only): ``bbfn_separator`` = ``separator_weight`` x the
binary cross-entropy of every discriminator (both modules, every layer, both streams, every sample; the mean of all
those terms). It is minimised *with* the encoders, not against them (no gradient reversal): the separator keeps the
two streams of a pair distinguishable while the attention mixes them, the paper's "difference increment" against the
fusion's "relevance increment". Its gradient reaches the discriminators, the separator encoders, the input projections
and the complementation layers before the last (whose outputs the next layer's separator reads), never the last
layer, the final norms, the residual block or the head. Since each stream has its own encoder, the two encodings can
be told apart through the encoders alone (e.g. their biases), so the term need not move the streams much.

Outputs: ``Output.modality`` holds the four stream summaries (B, dim) keyed ``text_from_audio``,
``audio_from_text``, ``text_from_vision``, ``vision_from_text`` (``x_from_y``: stream x after attending to y).
``Output.extras``: ``retain_<stream>`` and ``compound_<stream>`` (B, layers, dim) the gate values of every layer for
the attention into each of the four streams, in (0, 1); ``separator_logits_text_audio`` / ``separator_logits_text_vision``
(B, layers, 2) the discriminator logits of the text encoding ([..., 0], label 0) and the audio / vision encoding
([..., 1], label 1).

Padding: padded inputs are zeroed before the convolution, every attention has a key padding mask, the summaries and
the separator encoders only read real positions (the GRU over packed true lengths), so a sample's output does not
depend on the padding or on the other samples. A sample whose audio (or vision) sequence is empty has no keys to
attend to: its softmax is kept finite by :func:`~robustmsa.models.attention.key_padding_mask` and the attention term
is then set to zero explicitly, so its text stream keeps g_r ⊙ X_t (+ FF) and reads nothing; its audio stream summary
is 0.

Deviations, each on purpose:

* Reference code: the authors' implementation (github declare-lab/multimodal-deep-learning, BBFN/src). The MMSA
  versions searched (github thuiar/MMSA, src/MMSA/models/singleTask) have no BBFN model, so there is no MMSA code to
  follow; the MMSA pickles are only a data source here.
* Text: precomputed token features through the convolutional projection, not a fine-tuned BERT (the paper; the
  authors' code, with ``--use_bert``, freezes BERT's first nine layers and fine-tunes the rest).
* Pooling: the masked mean over each stream's real positions instead of the stream's first position (BERT's [CLS] in
  the authors' code): the token features here need not start with a [CLS] token and the audio / vision streams have
  no such token at all.
* Unaligned sequences: the authors' code builds its attention masks from the text lengths only and requires equal
  lengths (word-aligned data); here every attention is masked by its own key sequence's true lengths, so the
  modalities may have different lengths, and an empty sequence is handled (above).
* Positions: sinusoidal positions (and the sqrt(dim) scale) are added after the projection, as in this package's
  MulT; the authors' transformer defines them in a method its forward pass does not call, so their model has only the
  convolution's local order.
* Attention layers: the shared pre-norm :class:`~robustmsa.models.attention.AttentionBlock` (its own LayerNorm for the
  keys, one dropout rate for attention, feed-forward and residual) instead of the reference's layer with one
  LayerNorm for query and keys and separate attention / ReLU / residual dropout rates; a final LayerNorm per stream
  (the reference defines one but does not apply it).
* Separator: the encodings get no dropout (the reference's default rate is 0 as well); the discriminators output
  logits and the loss uses ``binary_cross_entropy_with_logits`` (the same value as the reference's sigmoid + BCE,
  numerically stable). The reference adds the loss only with ``--use_disc`` (off in its default script); the paper's
  model has it, so it is on here with the reference's weight 0.1.
* Head: residual block and linear head as in the reference (``proj1`` / ``proj2`` / ``out_layer``) with ``dropout``.
* Training: the package's task loss (L1 for regression) where the reference trains MOSI / MOSEI with MSE; no Xavier /
  orthogonal initialisation or learning-rate schedule of the reference code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.models.attention import AttentionBlock, attend_real, conv_embed
from robustmsa.models.base import Backbone, Output, masked_mean, mlp, run_packed
from robustmsa.registry import BACKBONES

SEPARATORS = ("gru", "linear")
PARTNERS = ("audio", "vision")  # the text-audio and text-vision modules


class ModalitySeparator(nn.Module):
    """The feature space separator of one complementation layer: an encoder per stream and a discriminator.

    ``kind='linear'``: s = Linear(masked mean of the stream); ``kind='gru'``: the masked mean of a bidirectional GRU's
    outputs over the true lengths, its two directions averaged. Both give (B, dim); an empty stream gives the linear
    map of 0 (its bias) or 0."""

    def __init__(self, dim: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.dim = dim
        if kind == "linear":
            self.encoders = nn.ModuleDict({s: nn.Linear(dim, dim) for s in ("text", "other")})
        else:
            self.encoders = nn.ModuleDict({s: nn.GRU(dim, dim, batch_first=True, bidirectional=True) for s in ("text", "other")})
        self.discriminator = mlp(dim, 4 * dim, 1)

    def encode(self, stream: str, x: Tensor, mask: Tensor) -> Tensor:
        """Encoding (B, dim) of the (B, L, dim) stream ``stream`` ('text' or 'other') with its (B, L) mask."""
        encoder = self.encoders[stream]
        if self.kind == "linear":
            return encoder(masked_mean(x, mask))
        out, _ = run_packed(encoder, x, mask)
        return masked_mean(0.5 * (out[..., : self.dim] + out[..., self.dim :]), mask)

    def forward(self, text: Tensor, text_mask: Tensor, other: Tensor, other_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns s_t, s_m (B, dim) and the discriminator logits (B, 2) of [s_t, s_m] (labels 0 and 1)."""
        s_text, s_other = self.encode("text", text, text_mask), self.encode("other", other, other_mask)
        logits = self.discriminator(torch.stack([s_text, s_other], dim=1)).squeeze(-1)
        return s_text, s_other, logits


class GatedCrossLayer(nn.Module):
    """Cross-modal attention of one stream over another with BBFN's retain and compound gates.

    ``forward(x, source, source_mask, control)``: x (B, Lq, dim) queries source (B, Ls, dim) whose (B, Ls) bool mask
    marks its real positions; control (B, 2 dim). Returns the new stream FF-block(g_c ⊙ Attn + g_r ⊙ x) (B, Lq, dim) and
    the gates g_r, g_c (B, dim). A sample with no real source position gets an attention term of zero."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.block = AttentionBlock(dim, heads, dropout, cross=True)
        self.retain = nn.Linear(2 * dim, dim)
        self.compound = nn.Linear(2 * dim, dim)

    def forward(self, x: Tensor, source: Tensor, source_mask: Tensor, control: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        retain, compound = torch.sigmoid(self.retain(control)), torch.sigmoid(self.compound(control))
        mixed = compound.unsqueeze(1) * attend_real(self.block, x, source, source_mask) + retain.unsqueeze(1) * x
        return self.block.feed_forward(mixed), retain, compound


class BimodalFusion(nn.Module):
    """One bimodal fusion module: ``layers`` complementation layers over a text stream and another stream.

    ``forward(text, text_mask, other, other_mask)`` -> dict of tensors: ``text`` (B, Lt, dim) and ``other``
    (B, Lm, dim) the final streams (after their LayerNorm); ``retain_to_text`` / ``compound_to_text`` /
    ``retain_to_other`` / ``compound_to_other`` (B, layers, dim) the gates of the attention into each stream;
    ``separator_logits`` (B, layers, 2)."""

    def __init__(self, dim: int, heads: int, layers: int, dropout: float, separator: str) -> None:
        super().__init__()
        self.separators = nn.ModuleList(ModalitySeparator(dim, "linear" if i == 0 else separator) for i in range(layers))
        self.to_text = nn.ModuleList(GatedCrossLayer(dim, heads, dropout) for _ in range(layers))  # text queries the other stream
        self.to_other = nn.ModuleList(GatedCrossLayer(dim, heads, dropout) for _ in range(layers))  # the other stream queries text
        self.norms = nn.ModuleDict({s: nn.LayerNorm(dim) for s in ("text", "other")})

    def forward(self, text: Tensor, text_mask: Tensor, other: Tensor, other_mask: Tensor) -> dict[str, Tensor]:
        record: dict[str, list[Tensor]] = {k: [] for k in ("retain_to_text", "compound_to_text", "retain_to_other", "compound_to_other", "separator_logits")}
        for separator, to_text, to_other in zip(self.separators, self.to_text, self.to_other):
            s_text, s_other, logits = separator(text, text_mask, other, other_mask)
            control = torch.cat([s_text, s_other], dim=-1)
            new_text, retain_t, compound_t = to_text(text, other, other_mask, control)
            other, retain_o, compound_o = to_other(other, text, text_mask, control)  # reads the layer's input text
            text = new_text
            for key, value in zip(record, (retain_t, compound_t, retain_o, compound_o, logits)):
                record[key].append(value)
        out = {key: torch.stack(values, dim=1) for key, values in record.items()}
        out["text"], out["other"] = self.norms["text"](text), self.norms["other"](other)
        return out


@BACKBONES.register("bbfn")
class BBFN(Backbone):
    def __init__(
        self,
        dims: dict[str, int],
        task: TaskSpec,
        dim: int = 32,
        heads: int = 4,
        layers: int = 2,
        kernel_size: int = 3,
        separator: str = "gru",
        separator_weight: float = 0.1,
        dropout: float = 0.1,
        embed_dropout: float = 0.1,
    ) -> None:
        super().__init__(dims, task)
        if isinstance(dim, bool) or isinstance(heads, bool) or dim <= 0 or heads <= 0 or dim % heads:
            raise ConfigError(f"bbfn dim ({dim}) must be a positive multiple of heads ({heads})")
        if isinstance(layers, bool) or layers < 1:
            raise ConfigError(f"bbfn needs at least one complementation layer, got layers={layers}")
        if isinstance(kernel_size, bool) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"bbfn kernel_size must be a positive odd number, got {kernel_size}")
        if separator not in SEPARATORS:
            raise ConfigError(f"bbfn separator must be one of {list(SEPARATORS)}, got '{separator}'")
        if not (isinstance(separator_weight, (int, float)) and math.isfinite(separator_weight) and separator_weight >= 0):
            raise ConfigError(f"bbfn separator_weight must be a finite number >= 0, got {separator_weight}")
        for name, rate in (("dropout", dropout), ("embed_dropout", embed_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ConfigError(f"bbfn {name} must be in [0, 1), got {rate}")
        self.dim = dim
        self.separator_weight = float(separator_weight)
        self.proj = nn.ModuleDict({m: nn.Conv1d(dims[m], dim, kernel_size, padding=kernel_size // 2, bias=False) for m in self.modalities})
        self.embed_dropout = nn.Dropout(embed_dropout)
        self.fusion = nn.ModuleDict({f"text_{m}": BimodalFusion(dim, heads, layers, dropout, separator) for m in PARTNERS})
        width = 4 * dim
        self.residual = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, width))
        self.head = nn.Linear(width, self.out_dim)

    def embed(self, x: Tensor, mask: Tensor, modality: str) -> Tensor:
        """(B, L, D_m) -> (B, L, dim): padding zeroed, conv projection, sqrt(dim) scale, sinusoidal positions, dropout."""
        return self.embed_dropout(conv_embed(self.proj[modality], x, mask))

    def forward(self, batch: Batch) -> Output:
        masks = {m: batch.mask(m) for m in self.modalities}
        seqs = {m: self.embed(getattr(batch, m), masks[m], m) for m in self.modalities}
        streams: dict[str, Tensor] = {}
        extras: dict[str, Tensor] = {}
        for m in PARTNERS:
            out = self.fusion[f"text_{m}"](seqs["text"], masks["text"], seqs[m], masks[m])
            names = {"text": f"text_from_{m}", "other": f"{m}_from_text"}
            streams[names["text"]] = masked_mean(out["text"], masks["text"])
            streams[names["other"]] = masked_mean(out["other"], masks[m])
            for side, name in names.items():
                extras[f"retain_{name}"] = out[f"retain_to_{side}"]
                extras[f"compound_{name}"] = out[f"compound_to_{side}"]
            extras[f"separator_logits_text_{m}"] = out["separator_logits"]
        summary = torch.cat(list(streams.values()), dim=-1)  # (B, 4 dim)
        fused = summary + self.residual(summary)
        return Output(logits=self.head(fused), fused=fused, modality=streams, extras=extras)

    def auxiliary_losses(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        if not self.training:
            return {}
        logits = torch.cat([output.extras[f"separator_logits_text_{m}"] for m in PARTNERS], dim=1)  # (B, 2 layers, 2)
        labels = torch.zeros_like(logits)
        labels[..., 1] = 1.0  # text encodings 0, audio / vision encodings 1
        return {"bbfn_separator": self.separator_weight * F.binary_cross_entropy_with_logits(logits, labels)}
