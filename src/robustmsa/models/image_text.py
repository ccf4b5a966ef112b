"""Image-text backbone: a fusion transformer over [CLS] + text tokens + visual tokens.

Text token features (B, Lt, Dt) and visual tokens (B, Li, Di) (image attribute
word vectors, or EfficientNet grid tokens) are projected to ``hidden`` with a
LayerNorm; learned position and modality-type embeddings are added and a
pre-norm transformer encoder fuses ``[CLS] + text + image`` under key padding
masks. The [CLS] output is ``fused`` and feeds the classification/regression
head. ``modality['text']`` / ``modality['image']`` are unimodal summaries
(masked mean of the projected tokens before fusion, then Linear + GELU), for
methods that need per-modality branches.

Data without a visual modality (MVSA here: ``dims`` has no 'image') is
accepted: a single learned "empty image" token takes the place of the visual
tokens, and ``modality`` has only 'text'.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.models.base import Backbone, Output, masked_mean, mlp
from robustmsa.registry import BACKBONES

_CLS, _TEXT, _IMAGE = 0, 1, 2


@BACKBONES.register("image_text")
class ImageText(Backbone):
    """Fusion transformer over text and visual tokens; ``modalities`` is ('text', 'image') or ('text',) without images."""

    modalities = ("text",)  # required inputs; 'image' is used when the data has it

    def __init__(
        self,
        dims: dict[str, int],
        task: TaskSpec,
        hidden: int = 128,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
        max_len: int = 512,
    ) -> None:
        super().__init__(dims, task)
        if hidden % heads:
            raise ConfigError(f"image_text: hidden ({hidden}) must be divisible by heads ({heads})")
        self.has_image = "image" in dims
        self.modalities = ("text", "image") if self.has_image else ("text",)
        self.max_len = max_len
        self.proj = nn.ModuleDict({m: nn.Sequential(nn.Linear(dims[m], hidden), nn.LayerNorm(hidden)) for m in self.modalities})
        if not self.has_image:
            self.empty_image = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
        self.type_embedding = nn.Embedding(3, hidden)
        self.position = nn.ModuleDict({m: nn.Embedding(max_len, hidden) for m in self.modalities})
        layer = nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout, activation="gelu", batch_first=True, norm_first=True)
        self.fusion = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        self.unimodal = nn.ModuleDict({m: nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout)) for m in self.modalities})
        self.head = mlp(hidden, hidden, self.out_dim, dropout)

    def _tokens(self, batch: Batch, modality: str) -> tuple[Tensor, Tensor, Tensor]:
        """(projected tokens (B, L, H), tokens with position + type embeddings, mask (B, L))."""
        x = getattr(batch, modality)
        if x is None:
            raise ConfigError(f"image_text: the batch has no '{modality}' input")
        if x.shape[1] > self.max_len:
            raise ConfigError(f"image_text: {modality} has {x.shape[1]} tokens; max_len is {self.max_len}")
        projected = self.proj[modality](x)
        positions = self.position[modality](torch.arange(x.shape[1], device=x.device))
        kind = self.type_embedding.weight[_TEXT if modality == "text" else _IMAGE]
        return projected, projected + positions + kind, batch.mask(modality)

    def forward(self, batch: Batch) -> Output:
        text, text_in, text_mask = self._tokens(batch, "text")
        size = text.shape[0]
        modality = {"text": self.unimodal["text"](masked_mean(text, text_mask))}
        if self.has_image:
            image, image_in, image_mask = self._tokens(batch, "image")
            modality["image"] = self.unimodal["image"](masked_mean(image, image_mask))
        else:
            image_in = (self.empty_image + self.type_embedding.weight[_IMAGE]).expand(size, -1, -1)
            image_mask = torch.ones(size, 1, dtype=torch.bool, device=text.device)
        cls = (self.cls + self.type_embedding.weight[_CLS]).expand(size, -1, -1)
        sequence = self.dropout(torch.cat([cls, text_in, image_in], dim=1))
        keep = torch.cat([torch.ones(size, 1, dtype=torch.bool, device=text.device), text_mask, image_mask], dim=1)
        hidden = self.fusion(sequence, src_key_padding_mask=~keep)
        fused = self.norm(hidden[:, 0])
        return Output(logits=self.head(fused), fused=fused, modality=modality)
