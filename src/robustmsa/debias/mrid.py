"""MRID: the strategy router applied to MID (routed inference debiasing).

Per sample the router picks a strategy c from the base model's
representations and probabilities (:func:`robustmsa.debias.mid.router_features`),
and the prediction is ``p0 - alpha_c * p_img_cf - beta_c * p_txt_cf`` with
``(alpha_0, beta_0) = (0, 0)`` (keep the base prediction), ``(alpha_1, 0)``
(debias the image), ``(0, beta_2)`` (the text) and ``(alpha_3, beta_3)``
(both). The four weights are searched on validation data with Optuna after
the router is trained. :func:`fit_router` (shared with MME-JD) categorises the
base model's train and validation samples
(:func:`robustmsa.debias.categorize.categorize`) and trains the router on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import DataBundle, MultimodalSplit, check_selection_split
from robustmsa.debias.categorize import DEBIASABLE, categorize, category_counts, strategies_for
from robustmsa.debias.counterfactual import collect_components, subtract_counterfactuals
from robustmsa.debias.mid import CF_COMPONENT, CF_WEIGHT, MID, TuneSettings, check_range, debiased_modalities, mid_components, tune_weights
from robustmsa.debias.router import RoutedMethod, Router, RouterConfig, RouterFit, router_bundle, strategy_weights, train_router
from robustmsa.debias.text_cf import COUNTERFACTUAL_HINT, counterfactual_keys
from robustmsa.errors import ConfigError
from robustmsa.method import Method, Supervised
from robustmsa.metrics import check_metric
from robustmsa.models.base import Backbone
from robustmsa.registry import METHODS


def base_components(backbone: Backbone, split: MultimodalSplit, modalities: Sequence[str]) -> dict[str, Tensor]:
    """MID components (``p0``, ``p_img``/``p_txt``, ``features``) of the base backbone over a whole split."""
    return collect_components(MID(backbone, modalities=modalities), split)


def split_categories(components: Mapping[str, Tensor], split: MultimodalSplit, eps: float) -> np.ndarray:
    """Categories (strategy index or -1) of a split's samples from the base components and the true labels."""
    if split.task.kind != "classification":
        raise ConfigError(f"sample categorisation needs a classification task, got '{split.task.kind}'")
    p_img, p_txt = (components[CF_COMPONENT[m]].numpy() if CF_COMPONENT[m] in components else None for m in ("image", "text"))
    return categorize(components["p0"].numpy(), p_img, p_txt, split.labels(), eps)


def fit_router(
    backbone: Backbone, bundle: DataBundle, modalities: Sequence[str], cfg: RouterConfig, *, eps: float = 0.1, seed: int = 0, valid_split: str = "valid"
) -> tuple[RouterFit, dict[str, Any]]:
    """Categorise train and validation samples with the base backbone, train the router (selection by validation F-0.5).

    Returns the fitted router and a record: category counts per split and the validation F-0.5 per loss.
    """
    strategies = strategies_for(modalities)
    data, record = {}, {}
    check_selection_split(valid_split, "router valid_split", "the router's checkpoint and loss")
    for name in ("train", valid_split):
        components = base_components(backbone, bundle[name], modalities)
        category = split_categories(components, bundle[name], eps)
        data[name] = (components["features"], category)
        record[f"categories_{name}"] = category_counts(category)
    result = train_router(router_bundle(data["train"], data[valid_split], strategies), strategies, cfg, seed=seed)
    record.update(router_loss=result.loss, router_valid_f05=result.valid_f05, router_valid_f05_per_loss=result.per_loss)
    return result, record


def as_router_config(value: RouterConfig | Mapping[str, Any] | None) -> RouterConfig:
    """A :class:`RouterConfig` from a config mapping (or the default)."""
    if isinstance(value, RouterConfig):
        return value
    params = dict(value or {})
    if "losses" in params:
        params["losses"] = tuple(params["losses"])
    try:
        return RouterConfig(**params)
    except TypeError as exc:
        raise ConfigError(f"router config: {exc}") from None


class RoutedDebiasing(RoutedMethod, Supervised):
    """What MRID and MME-JD share: used modalities, router fitting on the base categories, validation search of the strategy weights."""

    def __init__(
        self,
        backbone: Backbone,
        router: Router | None = None,
        modalities: Sequence[str] = DEBIASABLE,
        strict_modalities: bool = False,
        eps: float = 0.1,
        weight_range: Sequence[float] = (0.0, 1.0),
        router_config: RouterConfig | Mapping[str, Any] | None = None,
        tune_split: str = "valid",
        tune_metric: str | None = None,
        n_trials: int = 50,
        tune_seed: int = 0,
    ) -> None:
        mods = debiased_modalities(modalities, backbone.dims, strict_modalities)
        super().__init__(backbone, router, strategies_for(mods))
        if self.task.kind != "classification":
            raise ConfigError(f"{type(self).__name__} needs a classification task (sample categories), got '{self.task.kind}'")
        if eps < 0:
            raise ConfigError(f"eps must be >= 0, got {eps}")
        self.modalities = mods
        self.eps = float(eps)
        self.weight_range = check_range(weight_range, "weight_range")
        self.router_cfg = as_router_config(router_config)
        self.tune = TuneSettings(tune_split, tune_metric, n_trials, tune_seed)
        check_metric(self.tune.metric_for(self.task), self.task, "tune_metric")

    @classmethod
    def from_base(cls, base: Method, router: Router | None = None, **params: Any) -> RoutedDebiasing:
        """Around the trained backbone of ``base`` (shared), optionally with an already trained router."""
        return cls(base.backbone, router, **params)

    extras_hint = COUNTERFACTUAL_HINT

    def required_extras(self, split: str) -> tuple[str, ...]:
        """Counterfactual inputs everywhere: the router learns from train's sample categories, the weights are tuned on
        validation and routed inference needs them."""
        return counterfactual_keys(self.modalities)

    def calibration_splits(self) -> tuple[str, ...]:
        return (self.tune.split,)

    def calibrate(self, bundle: DataBundle) -> dict[str, Any]:
        """Train the router if there is none, then search the strategy weights on the validation split."""
        record: dict[str, Any] = {}
        if self.router is None:
            result, record = fit_router(self.backbone, bundle, self.modalities, self.router_cfg, eps=self.eps, seed=self.tune.seed, valid_split=self.tune.split)
            self.router = result.router
        space = dict.fromkeys(self.inference_params, self.weight_range)
        return {**record, **tune_weights(self, bundle, space, "routed", self.tune)}


@METHODS.register("mrid")
class MRID(RoutedDebiasing):
    """MID with a per-sample strategy from the router; modes ``factual`` and ``routed``."""

    def components(self, batch: Batch) -> dict[str, Tensor]:
        out = mid_components(self.backbone, batch, self.modalities)
        out["route"] = self.require_router().route(out["features"])
        return out

    def strategy_scores(self, components: Mapping[str, Tensor], strategy: int, params: Mapping[str, float]) -> Tensor:
        alpha, beta = strategy_weights(strategy, params)
        weights = {"alpha": alpha, "beta": beta}
        used = {CF_WEIGHT[m]: components[CF_COMPONENT[m]] for m in self.modalities}
        return subtract_counterfactuals(components["p0"], used, {k: weights[k] for k in used})
