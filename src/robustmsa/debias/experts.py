"""MME-JD: multimodal mixture of debiasing experts with a router (joint debiasing).

Experts (copies of one image-text backbone):

* the **general** expert: plain supervised training (the base model;
  ``MMEJD(backbone)`` trained with :func:`~robustmsa.training.fit.fit` is it);
* the **image-debiasing** expert: supervised loss plus MCTD's reversed-label
  loss on the *image* counterfactuals only;
* the **text-debiasing** expert: the same with the *text* counterfactuals.

The debiasing experts start from the trained general expert and are
fine-tuned with :func:`fit` (one call per expert, the general expert frozen
by being a separate copy): :meth:`MMEJD.train_experts`. The router
(:mod:`robustmsa.debias.router`, trained on the general expert's sample
categories, :func:`robustmsa.debias.mrid.fit_router`) predicts the strategy c
from ``[i, t, i_cf, t_cf, p0, p_img, p_txt]`` of the general expert; the
prediction combines the experts' class probabilities::

    p = p_general + alpha_c * p_image_expert + beta_c * p_text_expert

with ``(alpha_0, beta_0) = (0, 0)``, ``(alpha_1, 0)``, ``(0, beta_2)``,
``(alpha_3, beta_3)``, searched on validation data with Optuna. A modality
the data lacks has no expert (MVSA: general + text expert, strategies 0 / 2).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import DataBundle
from robustmsa.debias.categorize import DEBIASABLE
from robustmsa.debias.mctd import MCTD
from robustmsa.debias.mid import mid_components
from robustmsa.debias.mrid import RoutedDebiasing
from robustmsa.debias.router import Router, RouterConfig, strategy_weights
from robustmsa.errors import ConfigError
from robustmsa.method import scores_from_logits
from robustmsa.models.base import Backbone
from robustmsa.registry import METHODS
from robustmsa.training.fit import TrainConfig, fit

#: Component name of each debiasing expert's probabilities.
EXPERT_COMPONENT = {"image": "e_img", "text": "e_txt"}


def expert_train_config(value: TrainConfig | Mapping[str, Any] | None) -> TrainConfig:
    """The training settings of the debiasing experts (default: 10 epochs, patience 3, no progress bar)."""
    if isinstance(value, TrainConfig):
        return value
    params = {"max_epochs": 10, "patience": 3, "progress": False, **dict(value or {})}
    try:
        return TrainConfig(**params)
    except (TypeError, ConfigError) as exc:
        raise ConfigError(f"expert_train: {exc}") from None


@METHODS.register("mme_jd")
class MMEJD(RoutedDebiasing):
    """General + image/text-debiasing experts, combined per sample by the routed strategy; modes ``factual`` and ``routed``."""

    def __init__(
        self,
        backbone: Backbone,
        router: Router | None = None,
        modalities: Sequence[str] = DEBIASABLE,
        strict_modalities: bool = False,
        eps: float = 0.1,
        cf_weight: float = 1.0,
        weight_range: Sequence[float] = (0.0, 2.0),
        expert_train: TrainConfig | Mapping[str, Any] | None = None,
        router_config: RouterConfig | Mapping[str, Any] | None = None,
        tune_split: str = "valid",
        tune_metric: str | None = None,
        n_trials: int = 50,
        tune_seed: int = 0,
    ) -> None:
        super().__init__(backbone, router, modalities, strict_modalities, eps, weight_range, router_config, tune_split, tune_metric, n_trials, tune_seed)
        if cf_weight < 0:
            raise ConfigError(f"cf_weight must be >= 0, got {cf_weight}")
        self.cf_weight = float(cf_weight)
        self.expert_cfg = expert_train_config(expert_train)
        self.experts = nn.ModuleDict({m: copy.deepcopy(backbone) for m in self.modalities})
        self.experts_trained = False

    def train_experts(self, bundle: DataBundle, cfg: TrainConfig | None = None, *, seed: int = 0) -> dict[str, Any]:
        """Fine-tune one debiasing expert per modality from the (trained) general expert; returns their validation scores."""
        record = {}
        for m in self.modalities:
            expert = MCTD(copy.deepcopy(self.backbone), modalities=(m,), cf_weight=self.cf_weight, eps=self.eps)
            result = fit(expert, bundle, cfg or self.expert_cfg, seed=seed)
            self.experts[m] = expert.backbone
            record[f"expert_{m}_valid"] = result.best_score
        self.experts_trained = True
        return record

    def calibrate(self, bundle: DataBundle) -> dict[str, Any]:
        """Train the experts and the router where not done yet, then search the strategy weights on validation."""
        record = {} if self.experts_trained else self.train_experts(bundle, seed=self.tune.seed)
        return {**record, **super().calibrate(bundle)}

    def components(self, batch: Batch) -> dict[str, Tensor]:
        base = mid_components(self.backbone, batch, self.modalities)
        out = {"p0": base["p0"], "features": base["features"], "route": self.require_router().route(base["features"])}
        for m in self.modalities:
            out[EXPERT_COMPONENT[m]] = scores_from_logits(self.experts[m](batch).logits, self.task)
        return out

    def strategy_scores(self, components: Mapping[str, Tensor], strategy: int, params: Mapping[str, float]) -> Tensor:
        alpha, beta = strategy_weights(strategy, params)
        scores = components["p0"]
        for m, weight in (("image", alpha), ("text", beta)):
            if weight and m in self.modalities:
                scores = scores + weight * components[EXPERT_COMPONENT[m]]
        return scores
