"""Unimodal label generation (ULGM, Yu et al., AAAI 2021, "Learning Modality-Specific Representations with
Self-Supervised Multi-Task Learning for Multimodal Sentiment Analysis"), shared by Self-MM and TETFN.

A :class:`GeneratedLabelsBackbone` has a fusion branch (its task output) and one unimodal branch per modality, each
with its own regression head; the unimodal heads are trained on labels generated from the geometry of the
representation spaces. The subclass's forward returns, besides the logits:

* ``Output.fused``: the fusion features f_F (B, H_F), the input of the fusion head;
* ``Output.modality[m]``: the unimodal features f_m (B, H_m), the input of the unimodal head of m;
* ``Output.extras[f"{m}_score"]``: the unimodal head's prediction (B,).

Label generation, kept as per-sample state inside the module (keyed by ``batch.ids``; non-persistent buffers, not in
checkpoints, since it is training-time state only):

* every training sample has a fusion label y_F (its true label) and unimodal labels y_m, initialised to y_F, and a
  memory of its last features f_F, f_m;
* class centres C_pos / C_neg of each representation space are the means of the remembered features of samples
  whose (fusion or unimodal) label is > 0 / < 0 (>= 0 for C_pos when ``exclude_zero`` is false);
* relative distance delta = (|f - C_neg| - |f - C_pos|) / (|f - C_pos| + eps); from the sample's current features,
  y_hat_m = 0.5 (delta_m / delta_F) y_F + 0.5 (y_F + delta_m - delta_F), clipped to the label range;
* momentum update at the sample's n-th visit (n >= 2, i.e. its n-th epoch):
  y_m <- (n-1)/(n+1) y_m + 2/(n+1) y_hat_m.

Unimodal losses (returned by :meth:`GeneratedLabelsBackbone.auxiliary_losses`, in training mode only), named
``<loss_prefix>_<m>``: ``unimodal_weight * mean(tanh(|y_m - y_F|) * |yhat_m - y_m|)`` per modality; the fusion loss
is the task loss of the training method. State updates happen in :meth:`~GeneratedLabelsBackbone.auxiliary_losses`
with the detached features of the current forward (the reference implementation updates after the backward of the
same step, from the same features). Centres are recomputed from the feature memory at every update (as the reference
implementation does after every step), over the samples seen so far (the reference also averages the zero-initialised
memory of samples not yet visited in the first epoch). Regression only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.models.base import Backbone, Output

_EPS = 1e-8


def _relative_distance(features: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    """(|f - C_neg| - |f - C_pos|) / (|f - C_pos| + eps) for (B, H) features -> (B,)."""
    d_pos = (features - pos).norm(dim=-1)
    d_neg = (features - neg).norm(dim=-1)
    return (d_neg - d_pos) / (d_pos + _EPS)


def post_layer(in_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    """The layer that makes a branch's features: ReLU(W Dropout(x)) (MMSA's post_*_layer_1)."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim), nn.ReLU())


def score_head(width: int, out_dim: int) -> nn.Sequential:
    """A branch's head on its features: Linear-ReLU-Linear (MMSA's post_*_layer_2 and _3)."""
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, out_dim))


class GeneratedLabelsBackbone(Backbone):
    """A backbone whose unimodal heads learn generated unimodal labels (see the module docstring).

    Subclasses set ``ulgm_name`` (their registered name, for messages) and ``loss_prefix``, call
    ``super().__init__(dims, task)`` (which refuses non-regression tasks), build their layers and then call
    :meth:`init_label_memory` with the widths of their fusion and unimodal features."""

    #: The generated unimodal labels and class centres are per-sample memory updated by each training step.
    per_sample_state = True
    ulgm_name = "ulgm"
    loss_prefix = "ulgm"

    def __init__(self, dims: dict[str, int], task: TaskSpec) -> None:
        super().__init__(dims, task)
        if task.kind != "regression":
            raise ConfigError(f"{self.ulgm_name} generates unimodal labels from continuous sentiment scores and supports regression only; the task is '{task.kind}'")

    def init_label_memory(self, fusion_width: int, widths: dict[str, int], unimodal_weight: float, exclude_zero: bool) -> None:
        """Set up the (empty) per-sample memory: labels, visit counts and features of the fusion and unimodal spaces."""
        self.unimodal_weight = unimodal_weight
        self.exclude_zero = exclude_zero
        self.bound = max(abs(v) for v in self.task.label_range) if self.task.label_range is not None else math.inf
        # per-sample training state: row index by sample id; labels columns = (fusion, *modalities)
        self.spaces = ("fusion", *self.modalities)
        self._rows_of: dict[str, int] = {}
        self.register_buffer("memory_labels", torch.zeros(0, len(self.spaces)), persistent=False)
        self.register_buffer("memory_visits", torch.zeros(0, dtype=torch.long), persistent=False)
        for space, width in zip(self.spaces, (fusion_width, *(widths[m] for m in self.modalities))):
            self.register_buffer(f"memory_{space}", torch.zeros(0, width), persistent=False)

    def unimodal_labels(self, ids: list[str]) -> Tensor:
        """Current generated labels (N, 1 + 3) of known sample ids: columns fusion, text, audio, vision."""
        return self.memory_labels[torch.tensor([self._rows_of[i] for i in ids], dtype=torch.long, device=self.memory_labels.device)]

    def auxiliary_losses(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        if not self.training:
            return {}
        if batch.label is None:
            raise ConfigError(f"{self.ulgm_name} needs regression labels in training batches")
        rows = self._rows(batch.ids, batch.label)
        labels = self.memory_labels[rows]  # (B, 4), a copy
        losses = {}
        for k, m in enumerate(self.modalities, start=1):
            weight = torch.tanh((labels[:, k] - labels[:, 0]).abs())
            losses[f"{self.loss_prefix}_{m}"] = self.unimodal_weight * (weight * (output.extras[f"{m}_score"] - labels[:, k]).abs()).mean()
        self._update_state(rows, {"fusion": output.fused.detach(), **{m: output.modality[m].detach() for m in self.modalities}})
        return losses

    def _rows(self, ids: list[str], labels: Tensor) -> Tensor:
        """Memory rows of the batch ids, creating rows (labels = true label, no visits, zero features) for new ids."""
        new = [j for j, i in enumerate(ids) if i not in self._rows_of]
        if new:
            start = len(self._rows_of)
            for k, j in enumerate(new):
                self._rows_of[ids[j]] = start + k
            fresh = labels.detach()[new].to(self.memory_labels).unsqueeze(1).expand(-1, len(self.spaces))
            self.memory_labels = torch.cat([self.memory_labels, fresh])
            self.memory_visits = torch.cat([self.memory_visits, self.memory_visits.new_zeros(len(new))])
            for space in self.spaces:
                memory = getattr(self, f"memory_{space}")
                setattr(self, f"memory_{space}", torch.cat([memory, memory.new_zeros(len(new), memory.shape[1])]))
        return torch.tensor([self._rows_of[i] for i in ids], dtype=torch.long, device=self.memory_labels.device)

    @torch.no_grad()
    def _update_state(self, rows: Tensor, feats: dict[str, Tensor]) -> None:
        seen = self.memory_visits > 0  # samples with remembered features (before this step)
        visits = self.memory_visits[rows] + 1
        self.memory_visits[rows] = visits
        again = visits > 1
        centres = {space: self._centres(space, k, seen) for k, space in enumerate(self.spaces)} if bool(again.any()) else {}
        if centres and all(c is not None for c in centres.values()):
            y_f = self.memory_labels[rows, 0]
            delta_f = _relative_distance(feats["fusion"], *centres["fusion"])
            n = visits.to(y_f.dtype)
            for k, m in enumerate(self.modalities, start=1):
                delta_m = _relative_distance(feats[m], *centres[m])
                target = 0.5 * (delta_m / (delta_f + _EPS)) * y_f + 0.5 * (y_f + delta_m - delta_f)
                target = target.clamp(-self.bound, self.bound)
                old = self.memory_labels[rows, k]
                self.memory_labels[rows, k] = torch.where(again, (n - 1) / (n + 1) * old + 2 / (n + 1) * target, old)
        for space, value in feats.items():
            getattr(self, f"memory_{space}")[rows] = value.to(self.memory_labels)

    def _centres(self, space: str, column: int, seen: Tensor) -> tuple[Tensor, Tensor] | None:
        """(positive, negative) class centres of a representation space, or None while a class is empty."""
        labels = self.memory_labels[:, column]
        pos = seen & (labels > 0 if self.exclude_zero else labels >= 0)
        neg = seen & (labels < 0)
        if not bool(pos.any()) or not bool(neg.any()):
            return None
        memory = getattr(self, f"memory_{space}")
        return memory[pos].mean(0), memory[neg].mean(0)
