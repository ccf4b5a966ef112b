"""TFN: tensor fusion network (Zadeh et al., 2017).

Unimodal summaries z_t, z_a, z_v are each extended with a constant 1 and fused
by their 3-way outer product (B, (Ht+1)(Ha+1)(Hv+1)), which holds the
unimodal, bimodal and trimodal interactions; an MLP maps it to the output.
"""

from __future__ import annotations

import torch

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.models.base import Backbone, Output, SequenceEncoder, mlp
from robustmsa.registry import BACKBONES


@BACKBONES.register("tfn")
class TFN(Backbone):
    def __init__(self, dims: dict[str, int], task: TaskSpec, text_hidden: int = 32, av_hidden: int = 8, hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__(dims, task)
        self.encoders = torch.nn.ModuleDict(
            {
                "text": SequenceEncoder(dims["text"], text_hidden, kind="lstm", dropout=dropout),
                "audio": SequenceEncoder(dims["audio"], av_hidden, kind="mean", dropout=dropout),
                "vision": SequenceEncoder(dims["vision"], av_hidden, kind="mean", dropout=dropout),
            }
        )
        width = (text_hidden + 1) * (av_hidden + 1) ** 2
        self.post = torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(width, hidden), torch.nn.ReLU())
        self.head = mlp(hidden, hidden, self.out_dim, dropout)

    def forward(self, batch: Batch) -> Output:
        reps = {m: enc(getattr(batch, m), batch.mask(m)) for m, enc in self.encoders.items()}
        ones = torch.ones(reps["text"].shape[0], 1, device=reps["text"].device, dtype=reps["text"].dtype)
        t, a, v = (torch.cat([ones, reps[m]], dim=-1) for m in ("text", "audio", "vision"))
        fusion = torch.einsum("bi,bj,bk->bijk", t, a, v).flatten(1)
        fused = self.post(fusion)
        return Output(logits=self.head(fused), fused=fused, modality=reps)
