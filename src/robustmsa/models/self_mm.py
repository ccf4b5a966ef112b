"""Self-MM: self-supervised multi-task learning with generated unimodal labels (Yu et al., 2021).

Architecture: per-modality LSTM summaries (text: over the precomputed token
features instead of fine-tuned BERT), a fusion branch
f_F = ReLU(W [h_t; h_a; h_v]) with a regression head (the task output), and
one unimodal branch per modality f_m = ReLU(W_m h_m) with its own head.

Unimodal label generation (ULGM) and the unimodal losses
(``selfmm_<modality>``, returned by :meth:`auxiliary_losses` in training mode
only) are those of :mod:`robustmsa.models.ulgm` (shared with TETFN): every
training sample keeps generated unimodal labels y_m, initialised to its true
label y_F and moved, from its second epoch on, towards
y_hat_m = 0.5 (delta_m / delta_F) y_F + 0.5 (y_F + delta_m - delta_F), where
delta is the relative distance of the sample's features to the positive and
negative class centres of each representation space; each unimodal head is
trained with ``unimodal_weight * mean(tanh(|y_m - y_F|) * |yhat_m - y_m|)``.
Regression only.
"""

from __future__ import annotations

import torch
from torch import nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.models.base import Output, SequenceEncoder
from robustmsa.models.ulgm import GeneratedLabelsBackbone, post_layer, score_head
from robustmsa.registry import BACKBONES


@BACKBONES.register("self_mm")
class SelfMM(GeneratedLabelsBackbone):
    ulgm_name = "self_mm"
    loss_prefix = "selfmm"

    def __init__(
        self,
        dims: dict[str, int],
        task: TaskSpec,
        text_hidden: int = 32,
        av_hidden: int = 16,
        fusion_hidden: int = 32,
        text_post: int = 32,
        av_post: int = 16,
        dropout: float = 0.1,
        unimodal_weight: float = 1.0,
        exclude_zero: bool = True,
    ) -> None:
        super().__init__(dims, task)
        widths = {"text": text_hidden, "audio": av_hidden, "vision": av_hidden}
        posts = {"text": text_post, "audio": av_post, "vision": av_post}
        self.encoders = nn.ModuleDict({m: SequenceEncoder(dims[m], widths[m], kind="lstm", dropout=dropout) for m in self.modalities})
        self.fusion_post = post_layer(sum(widths.values()), fusion_hidden, dropout)
        self.fusion_head = score_head(fusion_hidden, self.out_dim)
        self.unimodal_post = nn.ModuleDict({m: post_layer(widths[m], posts[m], dropout) for m in self.modalities})
        self.unimodal_heads = nn.ModuleDict({m: score_head(posts[m], 1) for m in self.modalities})
        self.init_label_memory(fusion_hidden, posts, unimodal_weight, exclude_zero)

    def forward(self, batch: Batch) -> Output:
        hidden = {m: self.encoders[m](getattr(batch, m), batch.mask(m)) for m in self.modalities}
        fused = self.fusion_post(torch.cat([hidden[m] for m in self.modalities], dim=-1))
        feats = {m: self.unimodal_post[m](hidden[m]) for m in self.modalities}
        scores = {f"{m}_score": self.unimodal_heads[m](feats[m])[:, 0] for m in self.modalities}
        return Output(logits=self.fusion_head(fused), fused=fused, modality=feats, extras=scores)
