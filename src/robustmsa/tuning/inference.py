"""Choose inference-only hyper-parameters (tau, alpha, beta, ...) on validation data.

Grid search for one or two parameters, Optuna (TPE, Bayesian optimisation) for
more or when asked. For a :class:`~robustmsa.debias.counterfactual.CounterfactualMethod`
the networks run once over the split and each trial only re-combines the
cached components. The split passed here must be a validation split: the
caller is responsible for never passing a test set (protocols do this).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import optuna

from robustmsa.data.dataset import MultimodalSplit
from robustmsa.debias.counterfactual import CounterfactualMethod, collect_components
from robustmsa.errors import ConfigError
from robustmsa.method import Method
from robustmsa.metrics import task_metrics
from robustmsa.training.fit import predict


@dataclass
class TuneResult:
    params: dict[str, float]
    value: float
    metric: str
    trials: list[dict[str, float]] = field(default_factory=list)


def _scorer(method: Method, split: MultimodalSplit, mode: str) -> Callable[[Mapping[str, float]], np.ndarray]:
    """A function params -> predictions over the split, as cheap as the method allows."""
    if isinstance(method, CounterfactualMethod):
        components = collect_components(method, split)
        return lambda params: method.combine(components, mode, {**method.inference_params, **params}).numpy()

    def run(params: Mapping[str, float]) -> np.ndarray:
        method.set_inference_params(**params)
        return predict(method, split, mode)

    return run


def tune_inference_params(
    method: Method,
    valid_split: MultimodalSplit,
    space: Mapping[str, Sequence[float] | tuple[float, float]],
    *,
    mode: str,
    metric: str,
    direction: str = "maximize",
    search: str = "grid",
    n_trials: int = 50,
    seed: int = 0,
) -> TuneResult:
    """Pick the parameters of inference ``mode`` that optimise ``metric`` on ``valid_split``.

    ``space``: with ``search='grid'`` each name maps to a list of values; with
    ``search='optuna'`` each maps to a (low, high) float range (TPE; the
    first of the ``n_trials`` trials is the lower corner). The best
    parameters are set on the method and returned.
    """
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"direction must be 'maximize' or 'minimize', got '{direction}'")
    method.check_mode(mode)
    unknown = set(space) - set(method.inference_params)
    if unknown:
        raise ConfigError(f"{type(method).__name__} has no inference parameters {sorted(unknown)}")
    truth = valid_split.labels()
    task = method.task
    scorer = _scorer(method, valid_split, mode)
    sign = 1.0 if direction == "maximize" else -1.0
    trials: list[dict[str, float]] = []

    def evaluate(params: dict[str, float]) -> float:
        value = task_metrics(scorer(params), truth, task)[metric]
        trials.append({**params, metric: value})
        return value

    if search == "grid":
        names = list(space)
        grid = [dict(zip(names, map(float, values))) for values in itertools.product(*(list(space[n]) for n in names))]
        if not grid:
            raise ConfigError("the search grid is empty")
        scored = [sign * evaluate(params) for params in grid]
        best_index = max(range(len(grid)), key=lambda i: (scored[i], -i))  # ties: the first grid point
        best_params, best_value = grid[best_index], trials[best_index][metric]
    elif search == "optuna":
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=seed))
        # The first trial is the lower corner of the space (no debiasing for ranges that start at 0), so the
        # tuned rule is never worse on validation than leaving the factual prediction alone.
        study.enqueue_trial({n: float(lo) for n, (lo, _) in space.items()})
        study.optimize(lambda trial: evaluate({n: trial.suggest_float(n, float(lo), float(hi)) for n, (lo, hi) in space.items()}), n_trials=n_trials)
        best_params, best_value = dict(study.best_params), float(study.best_value)
    else:
        raise ConfigError(f"search must be 'grid' or 'optuna', got '{search}'")
    method.set_inference_params(**best_params)
    return TuneResult(best_params, float(best_value), metric, trials)
