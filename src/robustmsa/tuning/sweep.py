"""Search the training hyper-parameters of one model of a missing-rate sweep on validation data (Optuna).

A search config names a sweep YAML (its data, views, backbone and training
settings are used as they are; the model's own backbone if the sweep gives it
one), one of its models, and a space over that model's parameters::

    sweep: synthetic.yaml          # relative to this file
    model: lnln
    seeds: [0]                     # training seeds of every trial (score: the mean over them)
    n_trials: 12
    startup_trials: 4              # random trials before TPE takes over
    pruner: median                 # optional: stop trials that fall behind (see robustmsa.tuning.search)
    space:
      w_completeness: {low: 0.01, high: 1.0, log: true}
      proxy_layers: {low: 1, high: 3, integer: true}   # whole numbers low..high
      blend: {choices: [sample, missing]}

Each trial trains the model with the sampled parameters (over the sweep's own
ones) on each of ``seeds`` and is scored by the sweep's checkpoint criterion
on the validation split (by default the MAE at r = 0.5), averaged over the
seeds; trials, studies and workers behave as :mod:`robustmsa.tuning.search`
describes.

Outputs: ``search.json`` (every trial, the best one), ``search.md`` and
``best_sweep.yaml``, the sweep config with only the tuned model, named
``<model>_tuned``, ready for ``sweep-missing`` and ``sweep-combine`` with the
untuned runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml

from robustmsa.config import ComponentConfig, load_config
from robustmsa.data.dataset import DataBundle
from robustmsa.errors import ConfigError
from robustmsa.evaluation.missing_protocol import MissingSweepConfig, check_sweep_models, load_sweep_config, load_sweep_data, train_sweep_model
from robustmsa.evaluation.report import write_results, write_text_atomic
from robustmsa.registry import METHODS
from robustmsa.training.fit import world_size
from robustmsa.tuning.search import SearchSettings, check_pruner, corners, finished_trials, named_file, open_study, pruned_trials, run_trials, suggest, trial_table


class SweepSearchConfig(SearchSettings):
    """What to search (see module doc)."""

    sweep: Path
    model: str


def load_search_config(path: Path | str) -> tuple[SweepSearchConfig, MissingSweepConfig]:
    """The search config and the sweep config it names (relative paths: to the search file's folder)."""
    path = Path(path)
    search = load_config(path, SweepSearchConfig)
    sweep_path = named_file(path, search.sweep, "sweep")
    sweep = load_sweep_config(sweep_path)
    if search.model not in sweep.models:
        raise ConfigError(f"{path}: field 'model': '{search.model}' is not a model of {sweep_path} ({sorted(sweep.models)})")
    method = METHODS.get(sweep.models[search.model].name)
    if fixed := [name for name in search.space if name in getattr(method, "selection_parameters", ())]:  # a factory may be a function
        raise ConfigError(
            f"{path}: field 'space': {fixed} set the validation condition every trial is scored by (checkpoints at the "
            "configured missing rate); searching them would compare trials at different conditions"
        )
    try:
        for values in corners(search.space):  # every choice, and both ends of every range, must be a value the method takes
            METHODS.check(sweep.models[search.model].name, _tuned_component(sweep, search.model, values).params, 1)
    except ConfigError as exc:
        raise ConfigError(f"{path}: field 'space': {exc}") from None
    return search, sweep


def _tuned_component(sweep: MissingSweepConfig, model: str, params: dict[str, Any]) -> ComponentConfig:
    base = sweep.models[model]
    return ComponentConfig(name=base.name, params={**base.params, **params})


def _variants(sweep: MissingSweepConfig, model: str, components: dict[str, ComponentConfig]) -> MissingSweepConfig:
    """The sweep with ``components`` (display name -> variant of ``model``) as its only models, each on ``model``'s
    backbone (its own one, if the sweep gives it one)."""
    backbones = {name: sweep.backbones[model] for name in components} if model in sweep.backbones else {}
    return sweep.model_copy(update={"models": components, "backbones": backbones, "reference": None})


def search_sweep_model(
    search: SweepSearchConfig,
    sweep: MissingSweepConfig,
    out_dir: Path,
    *,
    worker: int = 0,
    overwrite: bool = False,
    bundle: DataBundle | None = None,
) -> dict[str, Any]:
    """Search the sweep model's parameters in the study in ``out_dir`` until it holds ``search.n_trials`` trials
    (:func:`robustmsa.tuning.search.run_trials`); write the outputs (see module doc) and return ``search.json``'s content."""
    out = Path(out_dir)
    bundle = bundle if bundle is not None else load_sweep_data(sweep)
    sweep.check_split_names(bundle)
    # a value the method refuses (a range end outside its bounds) fails now, not in a trial after others have trained
    try:
        check_sweep_models(_variants(sweep, search.model, {f"{search.model} with {v}": _tuned_component(sweep, search.model, v) for v in corners(search.space)}), bundle)
    except ConfigError as exc:
        raise ConfigError(f"{search._source}: field 'space': {exc}") from None
    metric, mode = sweep.train.to_train_config().monitor_spec(bundle.task.kind)
    # without own backbones as before sweeps had them, so that the studies of those days are joined, not refused
    check_pruner(search, world_size(sweep.train.to_train_config()))
    snapshot = {"search": search.record({"sweep", "n_trials"}), "sweep": sweep.model_dump(mode="json", exclude=None if sweep.backbones else {"backbones"})}
    study = open_study(out, snapshot, search, "minimize" if mode == "min" else "maximize", worker, overwrite)

    def train(trial: optuna.Trial, seed: int, callbacks: Sequence[Any]) -> float | None:
        name = f"{search.model}_trial{trial.number}"
        component = _tuned_component(sweep, search.model, suggest(trial, search.space))
        return train_sweep_model(_variants(sweep, search.model, {name: component}), name, component, bundle, seed, None, callbacks)[1].best_score

    run_trials(study, search, metric, train)
    return write_search(out, study, search, sweep, metric)


def write_search(out: Path, study: optuna.Study, search: SweepSearchConfig, sweep: MissingSweepConfig, metric: str) -> dict[str, Any]:
    """``search.json``, ``search.md`` and ``best_sweep.yaml`` from the finished trials of ``study``."""
    trials = finished_trials(out, study, metric)
    best = study.best_trial
    tuned = f"{search.model}_tuned"
    result = {
        "model": search.model,
        "metric": f"valid {metric} (the sweep's checkpoint criterion)",
        "direction": study.direction.name.lower(),
        "seeds": search.seeds,
        "best": {"number": best.number, "params": best.params, "value": best.value},
        "trials": trials,
        "pruned": pruned_trials(study),
        "search": search.model_dump(mode="json"),
    }
    write_results(out / "search.json", result)
    best_sweep = _variants(sweep, search.model, {tuned: _tuned_component(sweep, search.model, best.params)})
    header = f"# {tuned}: {search.model} with the parameters of trial {best.number} of {out / 'search.json'}\n"
    write_text_atomic(out / "best_sweep.yaml", header + yaml.safe_dump(best_sweep.model_dump(mode="json"), sort_keys=False))
    text = (
        f"# Search over the training parameters of '{search.model}'\n\n"
        f"{len(trials)} finished trials ({len(result['pruned'])} pruned), training seeds {search.seeds}; score: {result['metric']}, mean over the seeds, {result['direction']}d. Best first.\n\n"
        + trial_table(trials, metric, search.space, result["direction"])
        + f"\nThe best parameters are in best_sweep.yaml as model '{tuned}'.\n"
    )
    write_text_atomic(out / "search.md", text)
    return result
