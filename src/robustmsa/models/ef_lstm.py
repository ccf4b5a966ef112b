"""EF-LSTM: early fusion by per-step concatenation, then an LSTM (MMSA's EF_LSTM baseline).

Audio and vision are put on the text's time axis (unaligned inputs are
linearly resampled over their true lengths, see :mod:`robustmsa.models.align`;
aligned inputs pass unchanged), concatenated with the token features per step
(B, Lt, Dt + Da + Dv), layer-normalised (the modalities have very different
scales) and summarised by an LSTM over the true text lengths. Early fusion has
no per-modality representation, so ``Output.modality`` is empty.
Simplification: one LSTM layer (MMSA uses two) and LayerNorm instead of a
BatchNorm over padded sequence positions.
"""

from __future__ import annotations

import torch
from torch import nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.models.align import align_to_text
from robustmsa.models.base import Backbone, Output, SequenceEncoder
from robustmsa.registry import BACKBONES


@BACKBONES.register("ef_lstm")
class EFLSTM(Backbone):
    def __init__(self, dims: dict[str, int], task: TaskSpec, hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__(dims, task)
        width = dims["text"] + dims["audio"] + dims["vision"]
        self.norm = nn.LayerNorm(width)
        self.encoder = SequenceEncoder(width, hidden, kind="lstm", dropout=dropout)
        self.post = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, self.out_dim)

    def forward(self, batch: Batch) -> Output:
        x = torch.cat([batch.text, align_to_text(batch, "audio"), align_to_text(batch, "vision")], dim=-1)  # (B, Lt, Dt+Da+Dv)
        fused = self.post(self.encoder(self.norm(x), batch.mask("text")))
        return Output(logits=self.head(fused), fused=fused)
