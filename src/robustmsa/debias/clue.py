"""CLUE: counterfactual multimodal sentiment analysis (Sun et al., ACM MM 2022), model-agnostic.

A text-only branch predicts ``Y_t`` and the wrapped backbone predicts
``Y_m`` (logits (B, C)). The factual output is the fusion ``h(Y_t, Y_m)``:

* ``sum``:  ``log sigmoid(Y_t + Y_m)``
* ``hm``:   ``log(z / (1 + z))`` with ``z = sigmoid(Y_t) * sigmoid(Y_m)``
  (computed stably as ``logsigmoid(logsigmoid(Y_t) + logsigmoid(Y_m))``)
* ``rubi``: ``Y_m * sigmoid(Y_t)``

In the counterfactual world the multimodal output is a learned constant
``Y_m*`` (scalar or per-class vector) shared by all samples. Training loss::

    alpha * CE(h(Y_t, Y_m), y) + beta * CE(h(Y_t, sg(Y_m*)), y) + gamma * KL(softmax h(Y_t, Y_m) || softmax h(sg(Y_t), Y_m*))

plus the backbone's auxiliary losses (``sg``: stop-gradient; the KL term
moves only ``Y_m*``, its target is detached). Inference: ``te`` =
``h(Y_t, Y_m)`` (IID testing) and ``tie`` = ``h(Y_t, Y_m) - tau * h(Y_t, Y_m*)``
(OOD testing); ``tau`` is chosen on a validation split by :meth:`CLUE.calibrate`.

Regression tasks use ``Y_t + Y_m`` as the factual score (``sum`` fusion
without squashing), L1/MSE instead of CE and a squared error instead of KL.

Ablations by configuration: ``use_text=False`` (Y_t = 0), ``use_multimodal=False``
(Y_m = 0, the backbone is not run), ``gamma=0`` (no KL).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import DataBundle
from robustmsa.debias.counterfactual import CounterfactualMethod
from robustmsa.debias.text_branch import TextBranch
from robustmsa.errors import ConfigError
from robustmsa.method import target_of
from robustmsa.models.base import Backbone
from robustmsa.registry import BACKBONES, METHODS
from robustmsa.training.fit import TrainConfig, fit, seeded

FUSIONS = ("sum", "hm", "rubi")
#: tau values tried by :meth:`CLUE.calibrate`. The grid starts at the paper's tau = 1 (the whole estimated
#: direct effect removed): on IID validation data a smaller tau always looks better, because there the
#: text shortcut still pays, so a grid reaching down to 0 would pick "no debiasing" by construction.
DEFAULT_TAU_GRID = (1.0, 1.25, 1.5, 1.75, 2.0)


def fuse(y_t: Tensor, y_m: Tensor, fusion: str) -> Tensor:
    """The fusion ``h(Y_t, Y_m)`` of two logit tensors of one shape (B, C) (``y_m`` may broadcast)."""
    if fusion == "sum":
        return F.logsigmoid(y_t + y_m)
    if fusion == "hm":
        # log(z / (1 + z)) = log sigmoid(log z) with log z = log sig(Y_t) + log sig(Y_m)
        return F.logsigmoid(F.logsigmoid(y_t) + F.logsigmoid(y_m))
    if fusion == "rubi":
        return y_m * torch.sigmoid(y_t)
    raise ConfigError(f"unknown CLUE fusion '{fusion}'; choose one of {list(FUSIONS)}")


@METHODS.register("clue")
class CLUE(CounterfactualMethod):
    """Backbone + text branch + learned counterfactual multimodal output; modes te / tie / text / multimodal."""

    modes = ("te", "tie", "text", "multimodal")

    def __init__(
        self,
        backbone: Backbone,
        text_branch: Mapping[str, Any] | None = None,
        fusion: str = "sum",
        counterfactual: str = "scalar",
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float = 1.0,
        use_text: bool = True,
        use_multimodal: bool = True,
        tau: float = 1.0,
        tau_grid: Sequence[float] = DEFAULT_TAU_GRID,
        tau_split: str = "valid",
        tau_metric: str | None = None,
        regression_loss: str = "l1",
    ) -> None:
        super().__init__(backbone)
        if fusion not in FUSIONS:
            raise ConfigError(f"unknown CLUE fusion '{fusion}'; choose one of {list(FUSIONS)}")
        if self.task.kind == "multilabel":
            raise ConfigError("CLUE supports classification and regression tasks, not multilabel")
        if self.task.kind == "regression" and fusion != "sum":
            raise ConfigError(f"CLUE on a regression task uses the 'sum' fusion (Y_t + Y_m); '{fusion}' needs class logits")
        if counterfactual not in ("scalar", "vector"):
            raise ConfigError(f"counterfactual must be 'scalar' or 'vector', got '{counterfactual}'")
        if min(alpha, beta, gamma) < 0:
            raise ConfigError(f"alpha, beta and gamma must be >= 0, got {alpha}, {beta}, {gamma}")
        if not (use_text or use_multimodal):
            raise ConfigError("CLUE needs at least one of use_text / use_multimodal")
        if tau_split.startswith("test"):
            raise ConfigError(f"tau_split '{tau_split}' is a test split; tau must be chosen on validation data")
        if not tau_grid:
            raise ConfigError("tau_grid must hold at least one value")
        if regression_loss not in ("l1", "mse"):
            raise ConfigError(f"regression_loss must be 'l1' or 'mse', got '{regression_loss}'")
        out_dim = self.task.out_dim
        self.text_branch = TextBranch(out_dim, backbone.dims.get("text"), **dict(text_branch or {})) if use_text else None
        self.y_cf = nn.Parameter(torch.zeros(1 if counterfactual == "scalar" else out_dim))
        self.fusion = fusion
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.use_multimodal = use_multimodal
        self.tau_grid = [float(t) for t in tau_grid]
        self.tau_split = tau_split
        self.tau_metric = tau_metric or ("Has0_acc_2" if self.task.kind == "regression" else "Acc")
        self.regression_loss = regression_loss
        self.inference_params = {"tau": float(tau)}

    # --- the two branches ------------------------------------------------
    def _h(self, y_t: Tensor, y_m: Tensor) -> Tensor:
        return y_t + y_m if self.task.kind == "regression" else fuse(y_t, y_m, self.fusion)

    def branches(self, batch: Batch) -> tuple[Tensor, Tensor, Any]:
        """``Y_t`` (B, C), ``Y_m`` (B, C) and the backbone output (None without the multimodal branch)."""
        out = self.backbone(batch) if self.use_multimodal else None
        ref = out.logits if out is not None else None
        y_t = self.text_branch(batch) if self.text_branch is not None else None
        if ref is None:
            assert y_t is not None
            ref = torch.zeros_like(y_t)
        if y_t is None:
            y_t = torch.zeros_like(ref)
        return y_t, ref, out

    def components(self, batch: Batch) -> dict[str, Tensor]:
        """``y_t``, ``y_m`` (branch logits), ``te`` = h(Y_t, Y_m) and ``nde`` = h(Y_t, Y_m*), each (B, C)."""
        y_t, y_m, _ = self.branches(batch)
        return {"y_t": y_t, "y_m": y_m, "te": self._h(y_t, y_m), "nde": self._h(y_t, self.y_cf.expand_as(y_m))}

    def combine(self, components: Mapping[str, Tensor], mode: str, params: Mapping[str, float]) -> Tensor:
        """Scores of a mode: te, tie = te - tau * nde, or one branch alone (text / multimodal)."""
        if mode == "te":
            logits = components["te"]
        elif mode == "tie":
            logits = components["te"] - float(params.get("tau", 1.0)) * components["nde"]
        elif mode == "text":
            logits = components["y_t"]
        elif mode == "multimodal":
            logits = components["y_m"]
        else:
            raise ConfigError(f"CLUE has no inference mode '{mode}'; choose one of {list(self.modes)}")
        return logits[:, 0] if self.task.kind == "regression" else logits.softmax(dim=-1)

    # --- training ---------------------------------------------------------
    def _supervised(self, logits: Tensor, batch: Batch) -> Tensor:
        target = target_of(batch, self.task)
        if self.task.kind == "regression":
            return F.l1_loss(logits[:, 0], target) if self.regression_loss == "l1" else F.mse_loss(logits[:, 0], target)
        return F.cross_entropy(logits, target)

    def training_loss(self, batch: Batch, phase: str = "main") -> dict[str, Tensor]:
        y_t, y_m, out = self.branches(batch)
        te = self._h(y_t, y_m)
        losses = {"fused": self.alpha * self._supervised(te, batch)}
        if self.beta:
            losses["text"] = self.beta * self._supervised(self._h(y_t, self.y_cf.detach().expand_as(y_m)), batch)
        if self.gamma:
            nde = self._h(y_t.detach(), self.y_cf.expand_as(y_m))
            if self.task.kind == "regression":
                losses["kl"] = self.gamma * F.mse_loss(nde, te.detach())
            else:
                target = te.detach().log_softmax(dim=-1)
                losses["kl"] = self.gamma * F.kl_div(nde.log_softmax(dim=-1), target, log_target=True, reduction="batchmean")
        if out is not None:
            losses.update(self.backbone.auxiliary_losses(batch, out))
        losses["loss"] = torch.stack(list(losses.values())).sum()
        return losses

    # --- inference parameters ----------------------------------------------
    def calibrate(self, bundle: DataBundle) -> dict[str, Any]:
        """Choose tau for the ``tie`` mode on ``bundle[tau_split]`` (a validation split) over ``tau_grid``."""
        from robustmsa.tuning.inference import tune_inference_params

        result = tune_inference_params(self, bundle[self.tau_split], {"tau": self.tau_grid}, mode="tie", metric=self.tau_metric)
        return {"tau": result.params["tau"], "split": self.tau_split, "metric": result.metric, "value": result.value}


# --------------------------------------------------------------------------
# Plain functions for the demo, the CLI and the protocols
# --------------------------------------------------------------------------


def build_clue(bundle: DataBundle, backbone_name: str, backbone_params: Mapping[str, Any] | None = None, seed: int = 0, **clue_params: Any) -> CLUE:
    """A fresh CLUE around a registered backbone, initialised under ``seed``."""
    with seeded(seed):
        backbone = BACKBONES.build(backbone_name, bundle.dims(), bundle.task, **dict(backbone_params or {}))
        return METHODS.build("clue", backbone, **clue_params)


def train_clue(
    bundle: DataBundle, backbone_name: str, backbone_params: Mapping[str, Any] | None = None, train_cfg: TrainConfig | None = None, seed: int = 0, **clue_params: Any
) -> tuple[CLUE, dict[str, Any]]:
    """Train CLUE with the one training path (checkpoint chosen on IID validation, TE), then choose tau.

    Returns the trained method (tau set) and what calibration chose
    (``{'tau', 'split', 'metric', 'value'}``).
    """
    method = build_clue(bundle, backbone_name, backbone_params, seed, **clue_params)
    cfg = dataclasses.replace(train_cfg or TrainConfig(), valid_mode="te")
    fit(method, bundle, cfg, seed=seed)
    return method, method.calibrate(bundle)


def demo_entry(backbone_name: str, name: str | None = None, backbone_params: Mapping[str, Any] | None = None, **clue_params: Any) -> dict[str, Any]:
    """The ``+CLUE`` row of ``robustmsa demo``: ``{'name', 'train', 'modes'}`` (TE on the IID test, TIE on the OOD test)."""

    def train(bundle: DataBundle, seed: int, cfg: TrainConfig) -> CLUE:
        return train_clue(bundle, backbone_name, backbone_params, cfg, seed, **clue_params)[0]

    return {"name": name or f"{backbone_name} + CLUE", "train": train, "modes": {"test": "te", "test_ood": "tie"}}
