"""MMSA's multi-task backbones for CH-SIMS (Yu et al., ACL 2020, "CH-SIMS: A Chinese Multimodal Sentiment Analysis
Dataset with Fine-grained Annotation of Modality"): ``mlf_dnn``, ``mtfn`` and ``mlmf``.

Each is the single-task model (:class:`~robustmsa.models.lf_dnn.LFDNN`, :class:`~robustmsa.models.tfn.TFN`,
:class:`~robustmsa.models.lmf.LMF`, reused unchanged: its forward gives the task output) plus one unimodal regression
head per modality on that model's per-modality representation ``Output.modality[m]`` (the summary that enters the
fusion, as MMSA's heads read ``text_h`` / ``audio_h`` / ``video_h``). A head is MMSA's post_<m> layers:
Dropout, Linear(H_m, post_m), ReLU, Linear(post_m, post_m), ReLU, Linear(post_m, 1).

The heads are trained on CH-SIMS's unimodal labels (``regression_labels_T/A/V`` of an MMSA pickle, read into
``Sample.extras`` under :data:`robustmsa.data.mmsa.UNIMODAL_LABELS`: ``label_text``, ``label_audio``,
``label_vision``): the training-only auxiliary losses ``<name>_<m>`` = ``<m>_weight * L1(y_hat_m, y_m)`` (e.g.
``mtfn_text``), one per modality of non-zero weight. MMSA trains ``M L1(y_hat, y) + T L1(y_hat_t, y_t) + A ... +
V ...``; here the task loss of the training method has weight 1, so the default weights are MMSA's CH-SIMS ratios
T/M, A/M, V/M (the same objective divided by M, which Adam(W) is invariant to, up to its eps). A zero weight leaves
that head untrained (as MMSA's 0 does) and needs no label of that modality.

``Output.extras[f"{m}_score"]``: the unimodal predictions (B,). A training batch without the labels of a modality of
non-zero weight raises a ConfigError; :meth:`required_extras` lets ``fit`` refuse such data (naming the data set)
before training. Regression only.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.data.mmsa import UNIMODAL_LABELS
from robustmsa.errors import ConfigError
from robustmsa.models.base import Backbone, Output
from robustmsa.models.lf_dnn import LFDNN
from robustmsa.models.lmf import LMF
from robustmsa.models.tfn import TFN
from robustmsa.models.ulgm import post_layer, score_head
from robustmsa.registry import BACKBONES

MODALITIES = ("text", "audio", "vision")

#: What a user does about a data set without unimodal labels (completes the errors).
LABELS_HINT = (
    "The unimodal heads train on CH-SIMS-style unimodal labels: an MMSA pickle with regression_labels_T, "
    "regression_labels_A and regression_labels_V (read into Sample.extras 'label_text', 'label_audio', 'label_vision'); "
    "set text_weight, audio_weight and vision_weight to 0 to train without them."
)


class UnimodalHeads(Backbone):
    """A backbone plus one unimodal regression head per modality, trained on given unimodal labels.

    Mixed in before a single-task backbone whose forward returns the per-modality representations in
    ``Output.modality`` and whose ``encoders[m].out_dim`` gives their widths: the subclass calls :meth:`check_task`
    before building the backbone, then :meth:`init_heads`."""

    mtl_name = "multitask"
    extras_hint = LABELS_HINT

    def check_task(self, task: TaskSpec) -> None:
        if task.kind != "regression":
            raise ConfigError(f"{self.mtl_name} trains regression heads on CH-SIMS's continuous unimodal labels and supports regression only; the task is '{task.kind}'")

    def init_heads(self, posts: dict[str, int], dropout: float, weights: dict[str, float]) -> None:
        for m in MODALITIES:
            if isinstance(posts[m], bool) or not isinstance(posts[m], int) or posts[m] < 1:
                raise ConfigError(f"{self.mtl_name}: '{m}_post' must be a positive integer, got {posts[m]!r}")
            w = weights[m]
            if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
                raise ConfigError(f"{self.mtl_name}: '{m}_weight' must be a finite number >= 0, got {w!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"{self.mtl_name}: 'post_dropout' must be in [0, 1), got {dropout!r}")
        widths = {m: self.encoders[m].out_dim for m in MODALITIES}  # type: ignore[index]
        self.unimodal_heads = nn.ModuleDict({m: nn.Sequential(post_layer(widths[m], posts[m], dropout), score_head(posts[m], 1)) for m in MODALITIES})
        self.unimodal_weights = {m: float(weights[m]) for m in MODALITIES}

    def forward(self, batch: Batch) -> Output:
        out = super().forward(batch)
        scores = {f"{m}_score": self.unimodal_heads[m](out.modality[m])[:, 0] for m in MODALITIES}
        return Output(logits=out.logits, fused=out.fused, modality=out.modality, extras={**out.extras, **scores})

    def required_extras(self, split: str) -> tuple[str, ...]:
        """The unimodal labels of the modalities of non-zero weight, on the training split."""
        return tuple(UNIMODAL_LABELS[m][1] for m in MODALITIES if self.unimodal_weights[m] > 0) if split == "train" else ()

    def auxiliary_losses(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        if not self.training:
            return {}
        losses = {}
        for m in MODALITIES:
            if self.unimodal_weights[m] == 0:
                continue
            key = UNIMODAL_LABELS[m][1]
            target = batch.extras.get(key)
            if target is None:
                raise ConfigError(f"{self.mtl_name} needs the {m} label of every training sample in batch.extras['{key}']; the training batch of samples {batch.ids[:3]} has none. {LABELS_HINT}")
            score = output.extras[f"{m}_score"]
            losses[f"{self.mtl_name}_{m}"] = self.unimodal_weights[m] * F.l1_loss(score, target.reshape(score.shape).to(score.dtype))
        return losses


@BACKBONES.register("mlf_dnn")
class MLFDNN(UnimodalHeads, LFDNN):
    """LF-DNN with unimodal heads (MMSA's MLF_DNN); default weights MMSA's CH-SIMS M 0.6, T 0.2, A 0.8, V 0.8."""

    mtl_name = "mlf_dnn"

    def __init__(
        self,
        dims: dict[str, int],
        task: TaskSpec,
        hidden: int = 64,
        text_hidden: int | None = None,
        dropout: float = 0.1,
        text_post: int = 16,
        audio_post: int = 4,
        vision_post: int = 32,
        post_dropout: float = 0.5,
        text_weight: float = 0.2 / 0.6,
        audio_weight: float = 0.8 / 0.6,
        vision_weight: float = 0.8 / 0.6,
    ) -> None:
        self.check_task(task)
        super().__init__(dims, task, hidden=hidden, text_hidden=text_hidden, dropout=dropout)
        self.init_heads({"text": text_post, "audio": audio_post, "vision": vision_post}, post_dropout, {"text": text_weight, "audio": audio_weight, "vision": vision_weight})


@BACKBONES.register("mtfn")
class MTFN(UnimodalHeads, TFN):
    """TFN with unimodal heads (MMSA's MTFN); default weights MMSA's CH-SIMS M 0.6, T 0.4, A 0, V 1."""

    mtl_name = "mtfn"

    def __init__(
        self,
        dims: dict[str, int],
        task: TaskSpec,
        text_hidden: int = 32,
        av_hidden: int = 8,
        hidden: int = 64,
        dropout: float = 0.1,
        text_post: int = 64,
        audio_post: int = 4,
        vision_post: int = 8,
        post_dropout: float = 0.2,
        text_weight: float = 0.4 / 0.6,
        audio_weight: float = 0.0,
        vision_weight: float = 1.0 / 0.6,
    ) -> None:
        self.check_task(task)
        super().__init__(dims, task, text_hidden=text_hidden, av_hidden=av_hidden, hidden=hidden, dropout=dropout)
        self.init_heads({"text": text_post, "audio": audio_post, "vision": vision_post}, post_dropout, {"text": text_weight, "audio": audio_weight, "vision": vision_weight})


@BACKBONES.register("mlmf")
class MLMF(UnimodalHeads, LMF):
    """LMF with unimodal heads (MMSA's MLMF); default weights MMSA's CH-SIMS M 0.2, T 1, A 0.4, V 0.8."""

    mtl_name = "mlmf"

    def __init__(
        self,
        dims: dict[str, int],
        task: TaskSpec,
        text_hidden: int = 32,
        av_hidden: int = 16,
        hidden: int = 32,
        rank: int = 4,
        dropout: float = 0.1,
        text_post: int = 8,
        audio_post: int = 4,
        vision_post: int = 32,
        post_dropout: float = 0.4,
        text_weight: float = 1.0 / 0.2,
        audio_weight: float = 0.4 / 0.2,
        vision_weight: float = 0.8 / 0.2,
    ) -> None:
        self.check_task(task)
        super().__init__(dims, task, text_hidden=text_hidden, av_hidden=av_hidden, hidden=hidden, rank=rank, dropout=dropout)
        self.init_heads({"text": text_post, "audio": audio_post, "vision": vision_post}, post_dropout, {"text": text_weight, "audio": audio_weight, "vision": vision_weight})
