"""The Method interface: what the one training path trains and evaluates.

A method wraps a backbone (plus any extra branches) and provides

* ``training_loss(batch, phase) -> {"loss": scalar, other named terms...}``
* ``predict(batch, mode) -> Tensor``: scores (B,) for regression, class
  scores (B, C) for classification/multilabel (argmax or threshold gives the
  decision). ``mode`` names the inference rule (``factual``, ``tie``, ...).

Methods that need alternating optimisation (TCMR) declare several
``phases``; the trainer builds one optimiser per phase over
``phase_parameters(phase)`` and, each step, runs the phases returned by
``active_phases(epoch)``. Inference-only hyper-parameters (tau, alpha, beta)
live in ``inference_params`` and are set after training on validation data by
``calibrate(bundle)``, which the experiment runner calls after ``fit``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import DataBundle, TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.models.base import Backbone
from robustmsa.registry import METHODS


def target_of(batch: Batch, task: TaskSpec) -> Tensor:
    """The supervised target of a batch for a task (error if absent)."""
    value = {"regression": batch.label, "classification": batch.label_class, "multilabel": batch.label_multi}[task.kind]
    if value is None:
        raise ConfigError(f"task '{task.kind}' needs labels that this batch does not have")
    return value


def task_loss(logits: Tensor, batch: Batch, task: TaskSpec, regression_loss: str = "l1") -> Tensor:
    """Standard supervised loss: L1/MSE on the score, cross-entropy, or BCE."""
    target = target_of(batch, task)
    if task.kind == "regression":
        score = logits[:, 0]
        return F.l1_loss(score, target) if regression_loss == "l1" else F.mse_loss(score, target)
    if task.kind == "classification":
        return F.cross_entropy(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


def scores_from_logits(logits: Tensor, task: TaskSpec) -> Tensor:
    """Prediction tensor of :meth:`Method.predict` from raw logits."""
    if task.kind == "regression":
        return logits[:, 0]
    if task.kind == "classification":
        return logits.softmax(dim=-1)
    return logits.sigmoid()


class Method(nn.Module):
    """Base class of methods (plain supervised training, debiasing, reconstruction)."""

    phases: tuple[str, ...] = ("main",)
    modes: tuple[str, ...] = ("factual",)
    #: Parameters that define how checkpoints are scored (not model settings): a search never varies them.
    selection_parameters: tuple[str, ...] = ()
    #: Whether ``fit`` may train this classification method on a train split of a single class (refused by default:
    #: it is usually a data mistake, e.g. a reader's ``limit`` keeping items that all share a label).
    one_class_ok: bool = False
    #: Classification modes whose outputs are debiased scores (e.g. p0 - alpha p_img - beta p_txt), not probabilities:
    #: they rank the classes but may be negative and need not sum to 1.
    score_modes: tuple[str, ...] = ()

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.task: TaskSpec = backbone.task
        self.inference_params: dict[str, float] = {}
        self.epoch = 0

    # --- training -------------------------------------------------------
    def training_loss(self, batch: Batch, phase: str = "main") -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def phase_parameters(self, phase: str) -> Iterable[nn.Parameter]:
        """Parameters updated in ``phase`` (default: all trainable ones)."""
        return [p for p in self.parameters() if p.requires_grad]

    def optimizer_groups(self, phase: str) -> list[dict[str, Any]]:
        """AdamW parameter groups of ``phase``: its trainable parameters in one group with the training settings
        (a method may give some parameters their own ``lr`` / ``weight_decay``)."""
        return [{"params": [p for p in self.phase_parameters(phase) if p.requires_grad]}]

    def active_phases(self, epoch: int) -> tuple[str, ...]:
        """Phases run at each step of ``epoch`` (default: all, in order)."""
        return self.phases

    def prepare(self, bundle: DataBundle, cfg: Any, *, seed: int, out_dir: Path | None = None) -> dict[str, Any]:
        """Earlier training stages, run by ``fit`` before the main stage (``cfg``: its TrainConfig).

        Multi-stage methods train their helper models here with ``fit`` and
        freeze them (e.g. TCMR's text teacher). Returns a record of what ran.
        Default: nothing.
        """
        return {}

    def on_train_epoch_start(self, epoch: int) -> None:
        """Called by the trainer at each epoch start (redraw corruption, update state...)."""
        self.epoch = epoch

    # --- inference ------------------------------------------------------
    def predict(self, batch: Batch, mode: str = "factual") -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_mode(self, mode: str) -> None:
        if mode not in self.modes:
            raise ConfigError(f"{type(self).__name__} has no inference mode '{mode}'; choose one of {list(self.modes)}")

    def set_inference_params(self, **params: float) -> None:
        """Set inference-only hyper-parameters (validated against the known names)."""
        unknown = set(params) - set(self.inference_params)
        if unknown:
            raise ConfigError(f"{type(self).__name__} has no inference parameters {sorted(unknown)}; known: {sorted(self.inference_params)}")
        self.inference_params.update({k: float(v) for k, v in params.items()})

    def calibrate(self, bundle: DataBundle) -> dict[str, Any]:
        """Choose inference-only parameters after training, on validation splits of ``bundle`` only.

        Returns what was chosen (for the record). Default: nothing to choose.
        """
        return {}

    def calibration_splits(self) -> tuple[str, ...]:
        """The validation splits :meth:`calibrate` reads (``fit`` checks they exist before training). Default: none."""
        return ()

    def required_extras(self, split: str) -> tuple[str, ...]:
        """``Sample.extras`` keys every sample of ``split`` must carry for this method to train, calibrate or predict on it.

        ``fit`` checks them on the splits it reads before training, ``run_experiment`` on its test splits too.
        Default: none."""
        return ()

    #: How a user provides the extras of :meth:`required_extras` (completes the error message).
    extras_hint: str = ""

    def extra_state(self) -> dict[str, Any]:
        return {"inference_params": dict(self.inference_params)}

    def structure(self) -> dict[str, Any]:
        """Settings (plain values) of parts built after construction, e.g. a router fitted in :meth:`calibrate`.

        A saved model stores them so that :meth:`rebuild` can recreate those parts before its weights are loaded.
        Default: none."""
        return {}

    def rebuild(self, structure: Mapping[str, Any]) -> None:
        """Recreate the parts described by :meth:`structure` (untrained; the saved weights are loaded next)."""
        if structure:
            raise ValueError(f"{type(self).__name__} has no parts built after construction, got {sorted(structure)}")


@METHODS.register("supervised")
class Supervised(Method):
    """The plain baseline: task loss of the backbone plus its auxiliary losses."""

    def __init__(self, backbone: Backbone, regression_loss: str = "l1") -> None:
        super().__init__(backbone)
        if regression_loss not in ("l1", "mse"):
            raise ConfigError(f"regression_loss must be 'l1' or 'mse', got '{regression_loss}'")
        self.regression_loss = regression_loss

    def training_loss(self, batch: Batch, phase: str = "main") -> dict[str, Tensor]:
        out = self.backbone(batch)
        losses = {"task": task_loss(out.logits, batch, self.task, self.regression_loss)}
        losses.update(self.backbone.auxiliary_losses(batch, out))
        losses["loss"] = torch.stack(list(losses.values())).sum()
        return losses

    def predict(self, batch: Batch, mode: str = "factual") -> Tensor:
        self.check_mode(mode)
        return scores_from_logits(self.backbone(batch).logits, self.task)


def check_required_extras(method: Method, bundle: DataBundle, splits: Iterable[str], as_split: str | None = None) -> None:
    """ConfigError, before any training, if a sample of one of ``splits`` lacks an extra the method needs there
    (``as_split``: the extras it needs on a split of that name, for every split)."""
    backbone = getattr(method, "backbone", None)
    owners = [method] + ([backbone] if isinstance(backbone, Backbone) else [])  # the backbone's own needs (unimodal labels)
    for name in dict.fromkeys(splits):
        for owner in owners:
            keys = owner.required_extras(as_split or name)
            lacking = next(((s.id, k) for s in bundle[name] for k in keys if k not in s.extras), None)
            if lacking is not None:
                raise ConfigError(
                    f"{type(owner).__name__} needs '{lacking[1]}' in the extras of every sample of split '{name}' ({bundle.name}); "
                    f"sample '{lacking[0]}' has none. {owner.extras_hint}".rstrip()
                )
