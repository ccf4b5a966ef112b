"""The one Lightning module family: trains any :class:`~robustmsa.method.Method`; and the callbacks :func:`~robustmsa.training.fit.fit` uses.

Single-phase methods use Lightning's automatic optimisation; methods that
declare several phases (alternating optimisation) get one optimiser per phase
and manual optimisation. Nothing method-specific lives here: methods express
their needs through ``training_loss``, ``phases`` and ``active_phases``. The Lightning classes live here;
:mod:`robustmsa.training.fit` imports this module when a model trains, so reading a config does not wait for Lightning.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from robustmsa.data.batch import Batch
from robustmsa.method import Method, target_of
from robustmsa.metrics import task_metrics


@dataclass(frozen=True)
class OptimConfig:
    """AdamW settings. ``lr_schedule``: ``constant``, or ``cosine`` (annealed per epoch from ``lr`` to 0 over ``max_epochs``)."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    lr_schedule: str = "constant"
    max_epochs: int = 1


class MethodModule(L.LightningModule):
    """Wraps a method; validation computes the metrics module's metrics per epoch."""

    def __init__(self, method: Method, optim: OptimConfig, valid_mode: str = "factual", config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.method = method
        self.optim = optim
        self.valid_mode = valid_mode
        self.config = config or {}
        self.automatic_optimization = len(method.phases) == 1
        self._val_preds: list[Tensor] = []
        self._val_truth: list[Tensor] = []

    # --- optimisation ---------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizers = []
        for phase in self.method.phases:
            groups = [group for group in self.method.optimizer_groups(phase) if group["params"]]
            optimizers.append(torch.optim.AdamW(groups, lr=self.optim.lr, weight_decay=self.optim.weight_decay))
        if self.optim.lr_schedule == "constant":
            return optimizers[0] if len(optimizers) == 1 else optimizers
        schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.optim.max_epochs)) for opt in optimizers]
        return optimizers, schedulers

    def on_train_epoch_end(self) -> None:
        # Lightning steps epoch-interval schedulers itself only under automatic optimisation.
        if self.automatic_optimization or self.optim.lr_schedule == "constant":
            return
        schedulers = self.lr_schedulers()
        with warnings.catch_warnings():
            # The schedule follows the epoch for every optimiser, also one that has not stepped yet
            # (e.g. ConfNet before TCMR's ConfNet-later switch); torch warns about that order.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`")
            for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
                scheduler.step()

    def on_train_epoch_start(self) -> None:
        self.method.on_train_epoch_start(self.current_epoch)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        if self.automatic_optimization:
            losses = self.method.training_loss(batch, self.method.phases[0])
            self._log_losses(losses, batch)
            return losses["loss"]
        optimizers = self.optimizers()
        by_phase = dict(zip(self.method.phases, optimizers if isinstance(optimizers, list) else [optimizers]))
        for phase in self.method.active_phases(self.current_epoch):
            opt = by_phase[phase]
            opt.zero_grad()
            losses = self.method.training_loss(batch, phase)
            self.manual_backward(losses["loss"])
            if self.optim.grad_clip:
                self.clip_gradients(opt, gradient_clip_val=self.optim.grad_clip, gradient_clip_algorithm="norm")
            opt.step()
            self._log_losses(losses, batch, prefix=f"train_{phase}")
        return None

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None) -> None:
        if self.optim.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.optim.grad_clip, gradient_clip_algorithm="norm")

    def _log_losses(self, losses: dict[str, Tensor], batch: Batch, prefix: str = "train") -> None:
        for name, value in losses.items():
            # sync_dist: on several devices the epoch's loss is the mean over every process's batches
            self.log(f"{prefix}/{name}", value.detach(), prog_bar=name == "loss", batch_size=len(batch), on_step=False, on_epoch=True, sync_dist=True)

    # --- validation -----------------------------------------------------
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._val_preds.append(self.method.predict(batch, self.valid_mode).detach().cpu())
        self._val_truth.append(target_of(batch, self.method.task).detach().cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_preds:
            return
        pred = torch.cat(self._val_preds).numpy()
        truth = torch.cat(self._val_truth).numpy()
        self._val_preds.clear()
        self._val_truth.clear()
        task = self.method.task
        diverged = not np.isfinite(pred).all()
        metrics = task_metrics(np.zeros_like(pred) if diverged else pred, truth, task)
        for name, value in metrics.items():
            # diverged: every score NaN, so EarlyStopping (check_finite) stops and the checkpoint stays an earlier epoch's
            if diverged or np.isfinite(value):
                # sync_dist: every process scores the whole split, so the mean over processes is the same number
                value = float("nan") if diverged else float(value)
                self.log(f"val/{name}", value, prog_bar=name in ("MAE", "Has0_acc_2", "Mult_acc_2", "Acc", "Weighted_F1"), sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["robustmsa"] = {"config": self.config, "method": self.method.extra_state()}


class AtomicCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that writes to a temporary file and renames it into place."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        tmp = f"{filepath}.tmp-{os.getpid()}"
        trainer.save_checkpoint(tmp, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(tmp, filepath)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath


class EpochHistory(L.Callback):
    """Per-epoch logged metrics, and ``lr/<phase>``: the learning rate each epoch trained with."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for phase, optimizer in zip(pl_module.method.phases, trainer.optimizers):
            self.values.setdefault(f"lr/{phase}", []).append(float(optimizer.param_groups[0]["lr"]))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for key, value in trainer.callback_metrics.items():
            self.values.setdefault(key, []).append(float(value))
