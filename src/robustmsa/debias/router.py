"""The strategy router of MRID and MME-JD, its training, analysis and the oracle-router bound.

The router is a small MLP classifier over precomputed per-sample features
(the base model's image/text representations on the factual and the
counterfactual inputs, plus its three probability vectors; see
:func:`robustmsa.debias.mid.router_features`) that predicts the debiasing
strategy c (0 keep, 1 image, 2 text, 3 both; only the strategies of the
debiased modalities) whose labels come from :func:`robustmsa.debias.categorize.categorize`
(excluded samples left out). It is a :class:`~robustmsa.method.Method` over a
:class:`RouterNet` backbone, trained with :func:`robustmsa.training.fit.fit`
like everything else; the loss is plain, class-weighted (inverse class
frequency) or focal cross-entropy, and the checkpoint and the loss are
selected by F-0.5 on validation (precision counts more than recall: a wrong
debiasing decision costs more than a missed one, which falls back to the
base prediction).

:class:`RoutedMethod` is the shared "score every strategy, pick one per sample"
combination of MRID (strategies subtract counterfactual predictions) and
MME-JD (strategies add expert predictions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from robustmsa.data.batch import Batch, Sample
from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec
from robustmsa.debias.categorize import CATEGORIES, EXCLUDED
from robustmsa.debias.counterfactual import CounterfactualMethod
from robustmsa.errors import ConfigError
from robustmsa.method import Method, scores_from_logits
from robustmsa.metrics import per_class_scores, task_metrics
from robustmsa.models.base import Backbone, Output, mlp
from robustmsa.training.fit import TrainConfig, fit, seeded

FEATURE_KEY = "router_x"
ROUTER_LOSSES = ("plain", "weighted", "focal")


class RouterNet(Backbone):
    """MLP over standardised features ``batch.extras['router_x']`` (B, F) -> logits (B, K)."""

    modalities: tuple[str, ...] = ()
    cost_tracked = False  # a tiny MLP: not counted as a model forward pass by evaluation.cost

    def __init__(self, dims: dict[str, int], task: TaskSpec, in_dim: int, hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__(dims, task)
        self.in_dim, self.hidden, self.dropout = in_dim, hidden, dropout
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.net = mlp(in_dim, hidden, self.out_dim, dropout)

    def set_normalisation(self, features: Tensor) -> None:
        """Standardise inputs with the mean and std of (training) ``features`` (N, F)."""
        self.mean.copy_(features.mean(dim=0))
        self.std.copy_(features.std(dim=0).clamp_min(1e-6))

    def logits(self, features: Tensor) -> Tensor:
        return self.net((features - self.mean) / self.std)

    def forward(self, batch: Batch) -> Output:
        x = batch.extras[FEATURE_KEY]
        return Output(logits=self.logits(x), fused=x)


class Router(Method):
    """Strategy classifier; ``loss`` in plain / weighted / focal."""

    one_class_ok = True  # training samples that all fall in one category make a router that sends every sample there

    def __init__(self, backbone: RouterNet, strategies: Sequence[int], loss: str = "plain", class_weights: Sequence[float] | None = None, gamma: float = 2.0) -> None:
        super().__init__(backbone)
        if loss not in ROUTER_LOSSES:
            raise ConfigError(f"router loss must be one of {list(ROUTER_LOSSES)}, got '{loss}'")
        if len(strategies) != backbone.out_dim:
            raise ConfigError(f"the router has {backbone.out_dim} outputs for {len(strategies)} strategies")
        self.strategies = tuple(int(c) for c in strategies)
        self.loss = loss
        self.gamma = float(gamma)
        weights = torch.ones(len(strategies)) if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights)

    def training_loss(self, batch: Batch, phase: str = "main") -> dict[str, Tensor]:
        logits = self.backbone(batch).logits
        target = batch.label_class
        if self.loss == "plain":
            loss = F.cross_entropy(logits, target)
        elif self.loss == "weighted":
            loss = F.cross_entropy(logits, target, weight=self.class_weights)
        else:
            log_p = logits.log_softmax(dim=-1).gather(1, target[:, None])[:, 0]
            loss = (-((1.0 - log_p.exp()) ** self.gamma) * log_p).mean()
        return {"loss": loss}

    def predict(self, batch: Batch, mode: str = "factual") -> Tensor:
        self.check_mode(mode)
        return scores_from_logits(self.backbone(batch).logits, self.task)

    def spec(self) -> dict[str, Any]:
        """What :meth:`from_spec` needs to rebuild this router (its weights, normalisation and class weights are state)."""
        net = self.backbone
        return {"strategies": list(self.strategies), "in_dim": net.in_dim, "hidden": net.hidden, "dropout": net.dropout, "loss": self.loss, "gamma": self.gamma}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Router:
        strategies = [int(c) for c in spec["strategies"]]
        net = RouterNet({}, router_task(strategies), in_dim=int(spec["in_dim"]), hidden=int(spec["hidden"]), dropout=float(spec["dropout"]))
        return cls(net, strategies, loss=str(spec["loss"]), gamma=float(spec["gamma"]))

    def route(self, features: Tensor) -> Tensor:
        """(B, 4) routing probabilities over strategies 0..3 (0 for strategies the router does not have)."""
        probs = self.backbone.logits(features).softmax(dim=-1)
        out = torch.zeros(len(features), 4, dtype=probs.dtype, device=probs.device)
        out[:, list(self.strategies)] = probs
        return out


@dataclass(frozen=True)
class RouterConfig:
    """Router training: the candidate losses (best by validation F-0.5 wins) and the MLP / optimiser settings."""

    losses: tuple[str, ...] = ROUTER_LOSSES
    hidden: int = 64
    dropout: float = 0.1
    gamma: float = 2.0
    max_epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    patience: int = 5

    def __post_init__(self) -> None:
        bad = [loss for loss in self.losses if loss not in ROUTER_LOSSES]
        if bad or not self.losses:
            raise ConfigError(f"router losses must be a non-empty subset of {list(ROUTER_LOSSES)}, got {list(self.losses)}")
        for name in ("hidden", "max_epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"router {name} must be an integer >= 1, got {value!r}")
        ranges = {
            "lr": ("a finite number > 0", lambda v: 0 < v < math.inf),
            "dropout": ("in [0, 1)", lambda v: 0 <= v < 1),
            "gamma": ("a finite number >= 0 (the focal loss's)", lambda v: 0 <= v < math.inf),
        }
        for name, (expected, fits) in ranges.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not fits(value):
                raise ConfigError(f"router {name} must be {expected}, got {value!r}")


@dataclass
class RouterFit:
    router: Router
    loss: str
    valid_f05: float
    per_loss: dict[str, float] = field(default_factory=dict)


def _router_split(features: Tensor, category: np.ndarray, strategies: Sequence[int], name: str, task: TaskSpec) -> MultimodalSplit:
    index = {c: k for k, c in enumerate(strategies)}
    keep = [i for i, c in enumerate(category) if c != EXCLUDED]
    unknown = sorted({int(category[i]) for i in keep} - set(index))
    if unknown:
        raise ConfigError(f"router {name} data has categories {unknown} outside the strategies {list(strategies)}")
    if not keep:
        raise ConfigError(f"router {name} data has no sample with a category (all excluded)")
    x = features.detach().cpu().numpy().astype(np.float32)
    samples = [Sample(id=str(i), label_class=index[int(category[i])], extras={FEATURE_KEY: x[i]}) for i in keep]
    return MultimodalSplit(samples, name=name, source="router", task=task)


def router_task(strategies: Sequence[int]) -> TaskSpec:
    """The router's classification task: one class per strategy."""
    return TaskSpec(kind="classification", num_classes=len(strategies), label_range=None, class_names=tuple(CATEGORIES[c] for c in strategies))


def router_bundle(train: tuple[Tensor, np.ndarray], valid: tuple[Tensor, np.ndarray], strategies: Sequence[int]) -> DataBundle:
    """Router data: (features (N, F), categories (N,)) of train and valid; excluded samples dropped."""
    task = router_task(strategies)
    splits = {"train": _router_split(*train, strategies, "train", task), "valid": _router_split(*valid, strategies, "valid", task)}
    return DataBundle(splits, task, name="router", disjoint_ids=False)  # samples are numbered per split


def inverse_frequency(labels: np.ndarray, num_classes: int) -> list[float]:
    """Class weights n / (K * n_k) (classes absent from ``labels`` count as one sample)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return (len(labels) / (num_classes * np.maximum(counts, 1.0))).tolist()


def train_router(bundle: DataBundle, strategies: Sequence[int], cfg: RouterConfig, *, seed: int = 0) -> RouterFit:
    """Train one router per candidate loss with :func:`fit` (checkpoint by validation F-0.5); keep the best."""
    train_x = torch.as_tensor(np.stack([s.extras[FEATURE_KEY] for s in bundle["train"]]))
    weights = inverse_frequency(bundle["train"].labels(), len(strategies))
    train_cfg = TrainConfig(max_epochs=cfg.max_epochs, batch_size=cfg.batch_size, lr=cfg.lr, patience=cfg.patience, monitor="F0.5", progress=False)
    best: RouterFit | None = None
    scores: dict[str, float] = {}
    for loss in cfg.losses:
        with seeded(seed):
            net = RouterNet({}, bundle.task, in_dim=train_x.shape[1], hidden=cfg.hidden, dropout=cfg.dropout)
            net.set_normalisation(train_x)
            router = Router(net, strategies, loss=loss, class_weights=weights, gamma=cfg.gamma)
        result = fit(router, bundle, train_cfg, seed=seed)
        scores[loss] = float(result.best_score) if result.best_score is not None else float("-inf")
        if best is None or scores[loss] > best.valid_f05:
            best = RouterFit(router, loss, scores[loss])
    assert best is not None
    best.per_loss = scores
    return best


# --------------------------------------------------------------------------
# Routed combination (shared by MRID and MME-JD)
# --------------------------------------------------------------------------


def strategy_weights(strategy: int, params: Mapping[str, float]) -> tuple[float, float]:
    """(image weight, text weight) of a strategy: ``alpha_c`` if it debiases the image, ``beta_c`` if the text."""
    alpha = float(params.get(f"alpha_{strategy}", 0.0)) if strategy & 1 else 0.0
    beta = float(params.get(f"beta_{strategy}", 0.0)) if strategy & 2 else 0.0
    return alpha, beta


def strategy_params(strategies: Sequence[int]) -> dict[str, float]:
    """The inference parameters of routed strategies, all 0: ``alpha_1``, ``beta_2``, ``alpha_3``, ``beta_3`` as available."""
    names = [name for c in strategies for name, bit in ((f"alpha_{c}", 1), (f"beta_{c}", 2)) if c & bit]
    return dict.fromkeys(names, 0.0)


class RoutedMethod(CounterfactualMethod):
    """Scores every strategy, then picks one per sample: by the router (``routed``) or keeps strategy 0 (``factual``).

    Subclasses implement :meth:`strategy_scores` and put the router's (B, 4)
    probabilities under ``components['route']``.
    """

    modes = ("factual", "routed")
    score_modes = ("routed",)  # a strategy may subtract counterfactual probabilities
    factual_is_backbone = True  # strategy 0 with no weights: p0

    def __init__(self, backbone: Backbone, router: Router | None, strategies: Sequence[int]) -> None:
        super().__init__(backbone)
        self.router = router
        self.strategies = tuple(strategies)
        self.inference_params = strategy_params(self.strategies)

    def strategy_scores(self, components: Mapping[str, Tensor], strategy: int, params: Mapping[str, float]) -> Tensor:  # pragma: no cover - abstract
        """(B, C) scores of one strategy."""
        raise NotImplementedError

    def structure(self) -> dict[str, Any]:
        return {"router": self.router.spec()} if self.router is not None else {}

    def rebuild(self, structure: Mapping[str, Any]) -> None:
        unknown = set(structure) - {"router"}
        if unknown:
            raise ValueError(f"unknown parts {sorted(unknown)}")
        if "router" in structure:
            self.router = Router.from_spec(structure["router"])

    def require_router(self) -> Router:
        if self.router is None:
            raise ConfigError(f"{type(self).__name__} has no trained router yet; run calibrate(bundle) (or pass a router) first")
        return self.router

    def combine(self, components: Mapping[str, Tensor], mode: str, params: Mapping[str, float]) -> Tensor:
        if mode == "factual":
            return self.strategy_scores(components, 0, params)
        if mode != "routed":
            raise ConfigError(f"{type(self).__name__} has no inference mode '{mode}'; choose one of {list(self.modes)}")
        return select_per_sample(self.all_scores(components, params), components["route"].argmax(dim=-1))

    def all_scores(self, components: Mapping[str, Tensor], params: Mapping[str, float]) -> Tensor:
        """(4, B, C) scores of strategies 0..3 (unavailable strategies get the strategy-0 scores)."""
        return torch.stack([self.strategy_scores(components, c if c in self.strategies else 0, params) for c in range(4)])


def select_per_sample(scores: Tensor, choice: Tensor) -> Tensor:
    """``scores[choice[b], b]`` for (S, B, C) scores and (B,) strategy indices -> (B, C)."""
    return scores[choice, torch.arange(scores.shape[1], device=scores.device)]


def oracle_choice(scores: Tensor, truth: Tensor, strategies: Sequence[int]) -> Tensor:
    """Per sample the first strategy (in ``strategies`` order, keep first) whose prediction is right; 0 if none is."""
    choice = torch.zeros(scores.shape[1], dtype=torch.long)
    undecided = torch.ones(scores.shape[1], dtype=torch.bool)
    for c in strategies:
        right = scores[c].argmax(dim=-1) == truth
        choice[undecided & right] = c
        undecided &= ~right
    return choice


def oracle_bound(method: RoutedMethod, components: Mapping[str, Tensor], truth: np.ndarray) -> dict[str, float]:
    """Metrics of an oracle router (it knows which strategy is right per sample): an upper bound for any router."""
    scores = method.all_scores(components, method.inference_params)
    truth_t = torch.as_tensor(truth)
    pred = select_per_sample(scores, oracle_choice(scores, truth_t, method.strategies))
    return task_metrics(pred.numpy(), truth, method.task)


def router_analysis(predicted: np.ndarray, category: np.ndarray, strategies: Sequence[int]) -> dict[str, Any]:
    """Per-category precision / recall / F-0.5 and the confusion matrix of routed strategies vs categories.

    Excluded samples (category -1) have no right strategy and are left out
    (their number is reported). Confusion: ``{true category: {predicted: count}}``.
    """
    keep = category != EXCLUDED
    names = [CATEGORIES[c] for c in strategies]
    result: dict[str, Any] = {"n": int(keep.sum()), "n_excluded": int((~keep).sum())}
    if not keep.any():
        return result
    scores = per_class_scores(predicted[keep], category[keep], list(strategies), beta=0.5)
    result["accuracy"] = float(np.mean(predicted[keep] == category[keep]))
    result["per_category"] = {
        name: {"Precision": scores["precision"][k], "Recall": scores["recall"][k], "F0.5": scores["fbeta"][k], "support": scores["support"][k]} for k, name in enumerate(names)
    }
    result["confusion"] = {name: dict(zip(names, row)) for name, row in zip(names, scores["confusion"])}
    return result
