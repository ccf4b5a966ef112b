"""MID: multimodal inference debiasing, ``p = p0 - alpha * p_img_cf - beta * p_txt_cf``.

A trained base model (any image-text backbone) is run on the factual input
and on the image and text counterfactual inputs (the modality's core content
removed, its context kept; :mod:`robustmsa.debias.text_cf`,
:mod:`robustmsa.debias.image_cf`). The counterfactual predictions estimate
what the context alone makes the model say; subtracting them removes that
part. ``alpha`` and ``beta`` are searched on validation data with Optuna
(TPE, at most 50 trials) by :meth:`MID.calibrate`; the test set is never
used. Training is the base model's plain supervised training: train a
:class:`~robustmsa.method.Supervised` base on the plain data and wrap it with
:meth:`MID.from_base` (mode ``factual`` is that base model and needs no
counterfactual input). ``fit(MID(backbone), bundle)`` trains the same, but
refuses, before training, a bundle whose tuning split lacks the counterfactual
inputs that :meth:`MID.calibrate` will need.

Modalities: ``modalities`` names the counterfactuals used; a modality the
data lacks is dropped (MVSA has no image: MID reduces to text-only
debiasing, ``p0 - beta * p_txt_cf``, and ``alpha`` stays 0), unless
``strict_modalities=True`` asks for an error instead.

Components (one run of the networks; :func:`~robustmsa.debias.counterfactual.collect_components`):
``p0``, ``p_img`` / ``p_txt`` (B, C) probabilities (only for the used
modalities) and ``features`` (B, F), the router input of MRID / MME-JD
(:func:`router_features`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import DataBundle, TaskSpec, check_selection_split
from robustmsa.debias.categorize import DEBIASABLE, check_modalities
from robustmsa.debias.counterfactual import CounterfactualMethod, subtract_counterfactuals
from robustmsa.debias.text_cf import COUNTERFACTUAL_HINT, counterfactual_batch, counterfactual_keys
from robustmsa.errors import ConfigError
from robustmsa.method import Method, Supervised, scores_from_logits
from robustmsa.metrics import LOWER_IS_BETTER, binary_accuracy, check_metric
from robustmsa.models.base import Backbone, Output
from robustmsa.registry import METHODS

#: Component name of each modality's counterfactual prediction, and its MID weight.
CF_COMPONENT = {"image": "p_img", "text": "p_txt"}
CF_WEIGHT = {"image": "alpha", "text": "beta"}


def debiased_modalities(requested: Sequence[str], dims: Mapping[str, int], strict: bool = False) -> tuple[str, ...]:
    """The requested counterfactual modalities that the data has (error if none, or any missing with ``strict``)."""
    wanted = check_modalities(requested)
    present = tuple(m for m in wanted if m in dims)
    missing = [m for m in wanted if m not in dims]
    if (missing and strict) or not present:
        raise ConfigError(f"counterfactual debiasing of {list(wanted)} needs those modalities; the data has {sorted(dims)} (missing {missing})")
    return present


def counterfactual_outputs(backbone: Backbone, batch: Batch, modalities: Sequence[str]) -> dict[str, Output]:
    """Backbone outputs on the factual input (``'factual'``) and on each modality's counterfactual input."""
    outputs = {"factual": backbone(batch)}
    for m in modalities:
        outputs[m] = backbone(counterfactual_batch(batch, m))
    return outputs


def router_features(outputs: Mapping[str, Output], modalities: Sequence[str], scores: Sequence[Tensor]) -> Tensor:
    """Router input (B, F): each debiased modality's representation on the factual input, then on its counterfactual input, then ``scores``.

    With both modalities: ``[i, t, i_cf, t_cf, p0, p_img, p_txt]`` where ``i``
    / ``t`` are ``Output.modality['image' / 'text']`` (the backbone's fused
    representation when it has no per-modality one). The probabilities are
    added because the sample categories are defined by them.
    """

    def rep(out: Output, m: str) -> Tensor:
        return out.modality.get(m, out.fused)

    parts = [rep(outputs["factual"], m) for m in modalities] + [rep(outputs[m], m) for m in modalities]
    return torch.cat(parts + [s if s.dim() == 2 else s.unsqueeze(-1) for s in scores], dim=-1)


def mid_components(backbone: Backbone, batch: Batch, modalities: Sequence[str]) -> dict[str, Tensor]:
    """``p0``, ``p_img`` / ``p_txt`` (used modalities only) and the router ``features`` from one run of the backbone per input."""
    outputs = counterfactual_outputs(backbone, batch, modalities)
    out = {"p0": scores_from_logits(outputs["factual"].logits, backbone.task)}
    for m in modalities:
        out[CF_COMPONENT[m]] = scores_from_logits(outputs[m].logits, backbone.task)
    out["features"] = router_features(outputs, modalities, list(out.values()))
    return out


@dataclass(frozen=True)
class TuneSettings:
    """Validation search of inference weights: Optuna TPE, ``n_trials`` <= 50, seeded."""

    split: str = "valid"
    metric: str | None = None  # default: F1 (classification), Has0_acc_2 (regression; Mult_acc_2 for SIMS)
    n_trials: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        check_selection_split(self.split, "tune split", "inference weights")
        if not 1 <= self.n_trials <= 50:
            raise ConfigError(f"n_trials must be in [1, 50], got {self.n_trials}")

    def metric_for(self, task: TaskSpec) -> str:
        return self.metric or (binary_accuracy(task) if task.kind == "regression" else "F1" if task.kind == "classification" else "Macro_F1")


def tune_weights(method: CounterfactualMethod, bundle: DataBundle, space: Mapping[str, tuple[float, float]], mode: str, settings: TuneSettings) -> dict[str, Any]:
    """Optuna search of ``space`` for inference ``mode`` on the validation split; sets and returns the best weights."""
    from robustmsa.tuning.inference import tune_inference_params

    if not space:
        return {}
    metric = settings.metric_for(method.task)
    direction = "minimize" if metric in LOWER_IS_BETTER else "maximize"
    result = tune_inference_params(method, bundle[settings.split], space, mode=mode, metric=metric, direction=direction, search="optuna", n_trials=settings.n_trials, seed=settings.seed)
    return {**result.params, "metric": metric, "value": result.value, "split": settings.split, "trials": len(result.trials)}


def check_range(value: Sequence[float], name: str | None = None) -> tuple[float, float]:
    """``value`` as a (low, high) pair of finite numbers with 0 <= low < high, else a ConfigError (naming ``name``)."""
    lo, hi = (float(v) for v in value)
    if not 0.0 <= lo < hi < math.inf:
        raise ConfigError(f"{f'{name}: ' if name else ''}expected a range (low, high) of finite numbers with 0 <= low < high, got {list(value)}")
    return lo, hi


@METHODS.register("mid")
class MID(CounterfactualMethod, Supervised):
    """The base model plus counterfactual subtraction at inference; modes ``factual`` (p0) and ``mid``."""

    modes = ("factual", "mid")
    score_modes = ("mid",)
    factual_is_backbone = True

    def __init__(
        self,
        backbone: Backbone,
        modalities: Sequence[str] = DEBIASABLE,
        strict_modalities: bool = False,
        alpha_range: Sequence[float] = (0.0, 1.0),
        beta_range: Sequence[float] = (0.0, 1.0),
        tune_split: str = "valid",
        tune_metric: str | None = None,
        n_trials: int = 50,
        tune_seed: int = 0,
        regression_loss: str = "l1",
    ) -> None:
        super().__init__(backbone, regression_loss)
        self.modalities = debiased_modalities(modalities, backbone.dims, strict_modalities)
        self.ranges = {"alpha": check_range(alpha_range, "alpha_range"), "beta": check_range(beta_range, "beta_range")}
        self.tune = TuneSettings(tune_split, tune_metric, n_trials, tune_seed)
        check_metric(self.tune.metric_for(self.task), self.task, "tune_metric")
        self.inference_params = {"alpha": 0.0, "beta": 0.0}

    @classmethod
    def from_base(cls, base: Method, **params: Any) -> MID:
        """MID around the (trained) backbone of ``base``; the backbone is shared, not copied."""
        return cls(base.backbone, **params)

    extras_hint = COUNTERFACTUAL_HINT

    def required_extras(self, split: str) -> tuple[str, ...]:
        """Counterfactual inputs wherever MID is calibrated or evaluated; its training is the base model's (none on train)."""
        return () if split == "train" else counterfactual_keys(self.modalities)

    def components(self, batch: Batch) -> dict[str, Tensor]:
        return mid_components(self.backbone, batch, self.modalities)

    def combine(self, components: Mapping[str, Tensor], mode: str, params: Mapping[str, float]) -> Tensor:
        if mode == "factual":
            return components["p0"]
        if mode != "mid":
            raise ConfigError(f"MID has no inference mode '{mode}'; choose one of {list(self.modes)}")
        used = {CF_WEIGHT[m]: components[CF_COMPONENT[m]] for m in self.modalities}
        return subtract_counterfactuals(components["p0"], used, {name: float(params.get(name, 0.0)) for name in used})

    def calibration_splits(self) -> tuple[str, ...]:
        return (self.tune.split,)

    def calibrate(self, bundle: DataBundle) -> dict[str, Any]:
        """Search alpha (image) and beta (text) of the used modalities on the validation split."""
        space = {CF_WEIGHT[m]: self.ranges[CF_WEIGHT[m]] for m in self.modalities}
        return tune_weights(self, bundle, space, "mid", self.tune)
