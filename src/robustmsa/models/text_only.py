"""Text-only baseline: a sequence encoder over token features and an MLP head."""

from __future__ import annotations

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.models.base import Backbone, Output, SequenceEncoder, mlp
from robustmsa.registry import BACKBONES


@BACKBONES.register("text_only")
class TextOnly(Backbone):
    """Encodes only the text (B, Lt, Dt) -> (B, hidden); ignores audio and vision."""

    modalities = ("text",)

    def __init__(self, dims: dict[str, int], task: TaskSpec, hidden: int = 64, encoder: str = "lstm", dropout: float = 0.1) -> None:
        super().__init__(dims, task)
        self.encoder = SequenceEncoder(dims["text"], hidden, kind=encoder, bidirectional=True, dropout=dropout)
        self.head = mlp(hidden, hidden, self.out_dim, dropout)

    def forward(self, batch: Batch) -> Output:
        h = self.encoder(batch.text, batch.mask("text"))
        return Output(logits=self.head(h), fused=h, modality={"text": h})
