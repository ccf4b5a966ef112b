"""LF-DNN: late fusion of per-modality encoders by concatenation and an MLP."""

from __future__ import annotations

import torch

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.models.base import Backbone, Output, SequenceEncoder, mlp
from robustmsa.registry import BACKBONES


@BACKBONES.register("lf_dnn")
class LFDNN(Backbone):
    """Each modality is summarised (text: LSTM, audio/vision: masked mean + MLP), then concatenated."""

    def __init__(self, dims: dict[str, int], task: TaskSpec, hidden: int = 64, text_hidden: int | None = None, dropout: float = 0.1) -> None:
        super().__init__(dims, task)
        self.encoders = torch.nn.ModuleDict(
            {
                "text": SequenceEncoder(dims["text"], text_hidden or hidden, kind="lstm", dropout=dropout),
                "audio": SequenceEncoder(dims["audio"], hidden, kind="mean", dropout=dropout),
                "vision": SequenceEncoder(dims["vision"], hidden, kind="mean", dropout=dropout),
            }
        )
        width = sum(e.out_dim for e in self.encoders.values())
        self.fusion = torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.ReLU(), torch.nn.Dropout(dropout))
        self.head = mlp(hidden, hidden, self.out_dim, dropout)

    def forward(self, batch: Batch) -> Output:
        reps = {m: enc(getattr(batch, m), batch.mask(m)) for m, enc in self.encoders.items()}
        fused = self.fusion(torch.cat([reps[m] for m in self.encoders], dim=-1))
        return Output(logits=self.head(fused), fused=fused, modality=reps)
