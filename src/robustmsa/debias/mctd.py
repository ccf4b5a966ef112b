"""MCTD: multimodal counterfactual training debiasing (reversed labels on selected counterfactuals).

Loss per batch (classification)::

    CE(f(x), y) + aux + cf_weight * sum_m  1/B * sum_b  s_m[b] * CE_soft(f(x_cf_m[b]), r(y[b]))

``x_cf_m`` is the modality-m counterfactual input (its core content removed,
its context kept), ``s_m`` the selection of
:func:`robustmsa.debias.categorize.shortcut_mask` (the model still predicts
the true class from the counterfactual about as confidently as from the full
input: it is right for a reason that survives removing the content) and
``r(y)`` the *reversed* label. Selection uses the model being trained
(detached, the same forward pass), so it starts as the base model's
categorisation when MCTD is initialised from the base, and a counterfactual
drops out of the loss as soon as it no longer supports the true class: the
loss removes the context -> label association and stops there instead of
planting the opposite one. Dividing by B (not by the number selected) lets
the term fade as fewer samples are selected.

**Reversed label for more than two classes.** ``r(y)`` is the uniform
distribution over the C - 1 wrong classes (for C = 2 exactly the other
class). Any single wrong class (e.g. the "opposite" sentiment) would tie the
context to that class, a new spurious association; the uniform target says
only "this context is no evidence for y".

With ``warmup_epochs`` > 0 the counterfactual term starts after that many
epochs (for training from scratch, where the selection of an untrained
model is meaningless); when initialised from a trained base use 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from robustmsa.data.batch import Batch
from robustmsa.debias.categorize import DEBIASABLE, shortcut_mask
from robustmsa.debias.mid import debiased_modalities
from robustmsa.debias.text_cf import COUNTERFACTUAL_HINT, counterfactual_batch, counterfactual_keys
from robustmsa.errors import ConfigError
from robustmsa.method import Supervised, task_loss
from robustmsa.models.base import Backbone
from robustmsa.registry import METHODS


def reversed_targets(y: Tensor, num_classes: int) -> Tensor:
    """(B, C) reversed soft labels: uniform over the classes other than ``y`` (one-hot of 1 - y for C = 2)."""
    if num_classes < 2:
        raise ConfigError(f"reversed labels need at least two classes, got {num_classes}")
    wrong = 1.0 - F.one_hot(y, num_classes).float()
    return wrong / (num_classes - 1)


@METHODS.register("mctd")
class MCTD(Supervised):
    """Supervised training plus reversed-label training on selected counterfactual inputs; inference is factual."""

    def __init__(
        self,
        backbone: Backbone,
        modalities: Sequence[str] = DEBIASABLE,
        strict_modalities: bool = False,
        cf_weight: float = 1.0,
        eps: float = 0.1,
        warmup_epochs: int = 0,
    ) -> None:
        super().__init__(backbone)
        if self.task.kind != "classification":
            raise ConfigError(f"MCTD needs a classification task (reversed labels), got '{self.task.kind}'")
        if cf_weight < 0 or eps < 0 or warmup_epochs < 0:
            raise ConfigError(f"cf_weight, eps and warmup_epochs must be >= 0, got {cf_weight}, {eps}, {warmup_epochs}")
        self.modalities = debiased_modalities(modalities, backbone.dims, strict_modalities)
        self.cf_weight = float(cf_weight)
        self.eps = float(eps)
        self.warmup_epochs = int(warmup_epochs)

    extras_hint = COUNTERFACTUAL_HINT

    def required_extras(self, split: str) -> tuple[str, ...]:
        """Counterfactual inputs on the training split (inference is factual)."""
        return counterfactual_keys(self.modalities) if split == "train" and self.cf_weight else ()

    def training_loss(self, batch: Batch, phase: str = "main") -> dict[str, Tensor]:
        out = self.backbone(batch)
        terms = {"task": task_loss(out.logits, batch, self.task), **self.backbone.auxiliary_losses(batch, out)}
        logged: dict[str, Tensor] = {}
        if self.cf_weight and self.epoch >= self.warmup_epochs:
            y = batch.label_class
            assert y is not None
            p0 = out.logits.detach().softmax(dim=-1)
            target = reversed_targets(y, self.task.num_classes)
            for m in self.modalities:
                logits_cf = self.backbone(counterfactual_batch(batch, m)).logits
                selected = shortcut_mask(p0, logits_cf.detach().softmax(dim=-1), y, self.eps)
                soft_ce = -(target * logits_cf.log_softmax(dim=-1)).sum(dim=-1)
                terms[f"cf_{m}"] = self.cf_weight * (soft_ce * selected).sum() / len(batch)
                logged[f"selected_{m}"] = selected.float().mean()
        return {**terms, **logged, "loss": torch.stack(list(terms.values())).sum()}
