"""Removing a bias branch's direct effect by counterfactual inference (CF-VQA style), shared by CLUE and CLEF.

A *bias branch* sees only the shortcut input (the text for CLUE, the scene
context for CLEF) and predicts ``Y_b``; the wrapped backbone (the *main*
branch) predicts ``Y_m`` (logits (B, C)). The factual output is the fusion
``h(Y_b, Y_m)``:

* ``sum``:  ``log sigmoid(Y_b + Y_m)``
* ``hm``:   ``log(z / (1 + z))`` with ``z = sigmoid(Y_b) * sigmoid(Y_m)``
  (computed stably as ``logsigmoid(logsigmoid(Y_b) + logsigmoid(Y_m))``)
* ``rubi``: ``Y_m * sigmoid(Y_b)``

In the counterfactual world the main output is a learned constant ``Y_m*``
(scalar or per-class vector) shared by all samples. Training loss::

    alpha * L(h(Y_b, Y_m), y) + beta * L(h(Y_b, sg(Y_m*)), y) + gamma * KL(h(Y_b, Y_m) || h(sg(Y_b), Y_m*))

plus the backbone's auxiliary losses (``sg``: stop-gradient; the KL term
moves only ``Y_m*``, its target is detached). ``Y_m*`` starts at 0 and, like the
reference code, is trained with the training lr by default; Adam moves it by about
lr per step, so a short run can leave it far from the KL's minimiser and the
subtracted NDE then depends on the training length. ``c_lr`` gives it a learning
rate of its own (and no weight decay). Inference: ``te`` =
``h(Y_b, Y_m)`` (total effect) and ``tie`` = ``h(Y_b, Y_m) - tau * h(Y_b, Y_m*)``
(total indirect effect: the natural direct effect of the shortcut removed);
``tau`` is chosen on a validation split by :meth:`DirectEffectDebiasing.calibrate`.

Regression and multi-label tasks use ``Y_b + Y_m`` as the factual score or
logit (``sum`` fusion without squashing), with L1/MSE or binary cross-entropy
as ``L`` and a squared error or a binary KL as the KL term.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import DataBundle, check_selection_split
from robustmsa.debias.counterfactual import CounterfactualMethod
from robustmsa.errors import ConfigError
from robustmsa.method import scores_from_logits, target_of
from robustmsa.metrics import LOWER_IS_BETTER, binary_accuracy, check_metric
from robustmsa.models.base import Backbone
from robustmsa.registry import BACKBONES, METHODS
from robustmsa.training.fit import TrainConfig, check_fit, fit, seeded

FUSIONS = ("sum", "hm", "rubi")
#: tau values tried by :meth:`DirectEffectDebiasing.calibrate`. The grid starts at the papers' tau = 1 (the whole
#: estimated direct effect removed): on IID validation data a smaller tau always looks better, because there the
#: shortcut still pays, so a grid reaching down to 0 would pick "no debiasing" by construction.
DEFAULT_TAU_GRID = (1.0, 1.25, 1.5, 1.75, 2.0)


def fuse(y_b: Tensor, y_m: Tensor, fusion: str) -> Tensor:
    """The fusion ``h(Y_b, Y_m)`` of two logit tensors of one shape (B, C) (``y_m`` may broadcast)."""
    if fusion == "sum":
        return F.logsigmoid(y_b + y_m)
    if fusion == "hm":
        # log(z / (1 + z)) = log sigmoid(log z) with log z = log sig(Y_b) + log sig(Y_m)
        return F.logsigmoid(F.logsigmoid(y_b) + F.logsigmoid(y_m))
    if fusion == "rubi":
        return y_m * torch.sigmoid(y_b)
    raise ConfigError(f"unknown fusion '{fusion}'; choose one of {list(FUSIONS)}")


class DirectEffectDebiasing(CounterfactualMethod):
    """Backbone + bias branch + learned counterfactual main output; modes te / tie / <bias> / <main>.

    Subclasses name the two branches (``names``: component key and inference mode of the bias branch and of
    the main branch) and build the bias branch; ``bias_branch=None`` ablates it (``Y_b = 0``) and
    ``use_main=False`` ablates the backbone (``Y_m = 0``, the backbone is not run).
    """

    #: Filled by the subclass, never by a config (see :func:`robustmsa.registry.check_parameters`).
    internal_parameters = ("bias_branch", "use_main")
    #: (component key, mode) of the bias branch and of the main branch.
    names: tuple[tuple[str, str], tuple[str, str]] = (("y_b", "bias"), ("y_m", "main"))

    def __init__(
        self,
        backbone: Backbone,
        bias_branch: nn.Module | None,
        *,
        use_main: bool = True,
        fusion: str = "sum",
        counterfactual: str = "scalar",
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float = 1.0,
        tau: float = 1.0,
        tau_grid: Sequence[float] = DEFAULT_TAU_GRID,
        tau_split: str = "valid",
        tau_metric: str | None = None,
        regression_loss: str = "l1",
        c_lr: float | None = None,
    ) -> None:
        super().__init__(backbone)
        kind = self.task.kind
        if fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion '{fusion}'; choose one of {list(FUSIONS)}")
        if kind != "classification" and fusion != "sum":
            raise ConfigError(f"on a {kind} task the fusion is 'sum' (Y_b + Y_m); '{fusion}' needs class logits")
        if counterfactual not in ("scalar", "vector"):
            raise ConfigError(f"counterfactual must be 'scalar' or 'vector', got '{counterfactual}'")
        if not all(math.isfinite(w) and w >= 0 for w in (alpha, beta, gamma)):
            raise ConfigError(f"alpha, beta and gamma must be finite numbers >= 0, got {alpha}, {beta}, {gamma}")
        if bias_branch is None and not use_main:
            raise ConfigError(f"{type(self).__name__} needs at least one of its two branches")
        check_selection_split(tau_split, "tau_split", "tau")
        if not tau_grid or not all(math.isfinite(t) and t >= 0 for t in (*tau_grid, tau)):
            raise ConfigError(f"tau and tau_grid must be finite numbers >= 0 (a negative tau adds the bias back), got {tau} and {list(tau_grid)}")
        if regression_loss not in ("l1", "mse"):
            raise ConfigError(f"regression_loss must be 'l1' or 'mse', got '{regression_loss}'")
        if c_lr is not None and not (math.isfinite(c_lr) and c_lr > 0):
            raise ConfigError(f"c_lr must be a positive learning rate (or null: the training lr), got {c_lr}")
        self.c_lr = c_lr
        self.bias_branch = bias_branch
        self.y_cf = nn.Parameter(torch.zeros(1 if counterfactual == "scalar" else self.task.out_dim))
        self.fusion = fusion
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.use_main = use_main
        self.tau_grid = [float(t) for t in tau_grid]
        self.tau_split = tau_split
        self.tau_metric = check_metric(tau_metric or {"regression": binary_accuracy(self.task), "classification": "Acc", "multilabel": "mAP"}[kind], self.task, "tau_metric")
        self.regression_loss = regression_loss
        self.inference_params = {"tau": float(tau)}
        (self.bias_key, bias_mode), (self.main_key, main_mode) = self.names
        self.modes = ("te", "tie", bias_mode, main_mode)

    # --- the two branches ------------------------------------------------
    def _h(self, y_b: Tensor, y_m: Tensor) -> Tensor:
        return fuse(y_b, y_m, self.fusion) if self.task.kind == "classification" else y_b + y_m

    def branches(self, batch: Batch) -> tuple[Tensor, Tensor, Any]:
        """``Y_b`` (B, C), ``Y_m`` (B, C) and the backbone output (None without the main branch)."""
        out = self.backbone(batch) if self.use_main else None
        y_b = self.bias_branch(batch) if self.bias_branch is not None else None
        y_m = out.logits if out is not None else torch.zeros_like(y_b)
        return (torch.zeros_like(y_m) if y_b is None else y_b), y_m, out

    def components(self, batch: Batch) -> dict[str, Tensor]:
        """The two branch logits, ``te`` = h(Y_b, Y_m) and ``nde`` = h(Y_b, Y_m*), each (B, C)."""
        y_b, y_m, _ = self.branches(batch)
        return {self.bias_key: y_b, self.main_key: y_m, "te": self._h(y_b, y_m), "nde": self._h(y_b, self.y_cf.expand_as(y_m))}

    def combine(self, components: Mapping[str, Tensor], mode: str, params: Mapping[str, float]) -> Tensor:
        """Scores of a mode: te, tie = te - tau * nde, or one branch alone."""
        self.check_mode(mode)
        if mode == "te":
            logits = components["te"]
        elif mode == "tie":
            logits = components["te"] - float(params.get("tau", 1.0)) * components["nde"]
        else:
            logits = components[self.bias_key if mode == self.modes[2] else self.main_key]
        return scores_from_logits(logits, self.task)

    # --- training ---------------------------------------------------------
    def _supervised(self, logits: Tensor, batch: Batch) -> Tensor:
        target = target_of(batch, self.task)
        if self.task.kind == "regression":
            return F.l1_loss(logits[:, 0], target) if self.regression_loss == "l1" else F.mse_loss(logits[:, 0], target)
        if self.task.kind == "multilabel":
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.cross_entropy(logits, target)

    def _kl(self, nde: Tensor, te: Tensor) -> Tensor:
        """KL(te || nde) with ``te`` detached (a squared error for regression, per-label binary KL for multi-label)."""
        te = te.detach()
        if self.task.kind == "regression":
            return F.mse_loss(nde, te)
        if self.task.kind == "multilabel":  # binary cross-entropy to soft targets = binary KL + a constant in nde
            return F.binary_cross_entropy_with_logits(nde, torch.sigmoid(te))
        return F.kl_div(nde.log_softmax(dim=-1), te.log_softmax(dim=-1), log_target=True, reduction="batchmean")

    def training_loss(self, batch: Batch, phase: str = "main") -> dict[str, Tensor]:
        y_b, y_m, out = self.branches(batch)
        te = self._h(y_b, y_m)
        losses = {"fused": self.alpha * self._supervised(te, batch)}
        if self.beta:
            losses["bias"] = self.beta * self._supervised(self._h(y_b, self.y_cf.detach().expand_as(y_m)), batch)
        if self.gamma:
            losses["kl"] = self.gamma * self._kl(self._h(y_b.detach(), self.y_cf.expand_as(y_m)), te)
        if out is not None:
            losses.update(self.backbone.auxiliary_losses(batch, out))
        losses["loss"] = torch.stack(list(losses.values())).sum()
        return losses

    def optimizer_groups(self, phase: str) -> list[dict[str, Any]]:
        """With ``c_lr``: the counterfactual output in a group of its own (that lr, no weight decay)."""
        groups = super().optimizer_groups(phase)
        if self.c_lr is None:
            return groups
        rest = [p for p in groups[0]["params"] if p is not self.y_cf]
        return [{"params": rest}, {"params": [self.y_cf], "lr": self.c_lr, "weight_decay": 0.0}]

    # --- inference parameters ----------------------------------------------
    def calibration_splits(self) -> tuple[str, ...]:
        return (self.tau_split,)

    def calibrate(self, bundle: DataBundle) -> dict[str, Any]:
        """Choose tau for the ``tie`` mode on ``bundle[tau_split]`` (a validation split) over ``tau_grid``."""
        from robustmsa.tuning.inference import tune_inference_params

        direction = "minimize" if self.tau_metric in LOWER_IS_BETTER else "maximize"
        result = tune_inference_params(self, bundle[self.tau_split], {"tau": self.tau_grid}, mode="tie", metric=self.tau_metric, direction=direction)
        return {"tau": result.params["tau"], "split": self.tau_split, "metric": result.metric, "value": result.value}


# --------------------------------------------------------------------------
# Plain functions for the demo, the CLI and the protocols
# --------------------------------------------------------------------------


def build_debiased(method: str, bundle: DataBundle, backbone_name: str, backbone_params: Mapping[str, Any] | None = None, seed: int = 0, **params: Any) -> DirectEffectDebiasing:
    """A fresh registered direct-effect method (``clue``, ``clef``) around a registered backbone, initialised under ``seed``."""
    with seeded(seed):
        backbone = BACKBONES.build(backbone_name, bundle.dims(), bundle.task, **dict(backbone_params or {}))
        built = METHODS.build(method, backbone, **params)
    if not isinstance(built, DirectEffectDebiasing):
        raise ConfigError(f"method '{method}' does not remove a direct effect (use clue or clef)")
    return built


def train_debiased(
    method: str, bundle: DataBundle, backbone_name: str, backbone_params: Mapping[str, Any] | None = None, train_cfg: TrainConfig | None = None, seed: int = 0, **params: Any
) -> tuple[DirectEffectDebiasing, dict[str, Any]]:
    """Train with the one training path (checkpoint chosen on IID validation, TE), then choose tau.

    Returns the trained method (tau set) and what calibration chose (``{'tau', 'split', 'metric', 'value'}``).
    """
    built = build_debiased(method, bundle, backbone_name, backbone_params, seed, **params)
    fit(built, bundle, _selected_on_te(train_cfg), seed=seed)
    return built, built.calibrate(bundle)


def check_debiased(method: str, bundle: DataBundle, backbone_name: str, backbone_params: Mapping[str, Any] | None = None, train_cfg: TrainConfig | None = None, **params: Any) -> None:
    """What :func:`train_debiased` checks before it trains (the method's parameter values, the data, the training
    settings), without training: a ConfigError."""
    check_fit(build_debiased(method, bundle, backbone_name, backbone_params, 0, **params), bundle, _selected_on_te(train_cfg))


def _selected_on_te(train_cfg: TrainConfig | None) -> TrainConfig:
    """The training settings of a debiased model: its checkpoint is chosen by the total effect (TE) on validation."""
    return dataclasses.replace(train_cfg or TrainConfig(), valid_mode="te")
