"""Search the hyper-parameters of an experiment config on validation data (Optuna): MMSA's tuning mode, done on
validation only.

A search config names an experiment YAML (its data, method and seeds are used as they are) and a space over
parameters of its backbone, its method and its training, as ``section.parameter``::

    experiment: ../backbones/tfn.yaml     # relative to this file
    seeds: [0]                            # training seeds of every trial (score: the mean over them)
    n_trials: 12
    startup_trials: 4                     # random trials before TPE takes over
    pruner: median                        # optional: stop trials that fall behind (see robustmsa.tuning.search)
    space:
      backbone.hidden: {low: 16, high: 128, integer: true, log: true}
      backbone.dropout: {low: 0.0, high: 0.5}
      method.alpha: {choices: [0.5, 1.0]}  # a parameter of the method (with method: clue, its loss weight alpha)
      train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}

Each trial trains the experiment with the sampled parameters (over the config's own ones) on each of ``seeds`` and
is scored by the training's checkpoint criterion (``train.monitor`` on ``train.valid_split``, by default validation
MAE for regression), averaged over the seeds; trials, studies and workers behave as :mod:`robustmsa.tuning.search`
describes. What sets that criterion (the monitor, the validation split and mode), the data and the hardware are not
search dimensions. Every choice and both ends of every range are checked against the backbone, the method and the
training before the first trial; a value inside a range that a component still refuses (a width that the number of
attention heads does not divide) fails that trial only, with the reason recorded in ``search.json``.

Outputs: ``search.json`` (every trial, the best one, the failed ones with their reason), ``search.md`` and
``best_config.yaml``, the experiment config with the best parameters and its own seeds, ready for
``robustmsa train``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from robustmsa.config import ExperimentConfig, TrainSection, dump_config, load_config, parse_config
from robustmsa.data.dataset import DataBundle
from robustmsa.errors import ConfigError
from robustmsa.evaluation.report import write_results, write_text_atomic
from robustmsa.experiment import build_method, load_data
from robustmsa.registry import METHODS
from robustmsa.training.fit import check_fit, fit, world_size
from robustmsa.tuning.search import SearchSettings, check_pruner, corners, finished_trials, named_file, open_study, pruned_trials, run_trials, suggest, trial_table

#: Training settings a search may vary. The others set what a trial is scored by (monitor, monitor_mode,
#: valid_split, valid_mode) or where it runs (accelerator, devices, strategy, ...), not how well it learns.
SEARCHABLE_TRAIN = ("max_epochs", "min_epochs", "batch_size", "lr", "lr_schedule", "weight_decay", "grad_clip", "patience", "limit_train_batches")
SECTIONS = ("backbone", "method", "train")


class ExperimentSearchConfig(SearchSettings):
    """What to search (see module doc)."""

    experiment: Path


def load_experiment_search(path: Path | str) -> tuple[ExperimentSearchConfig, ExperimentConfig]:
    """The search config and the experiment config it names (relative paths: to the search file's folder); every
    choice and range end is checked against the experiment's components (ConfigError naming the file and field)."""
    path = Path(path)
    search = load_config(path, ExperimentSearchConfig)
    experiment_path = named_file(path, search.experiment, "experiment")
    config = load_config(experiment_path)
    try:
        check_space(search, config)
    except ConfigError as exc:
        raise ConfigError(f"{path}: field 'space': {exc}") from None
    return search, config


def check_space(search: ExperimentSearchConfig, config: ExperimentConfig) -> None:
    """ConfigError unless every key of the space is a searchable ``section.parameter`` and every choice and range
    end gives a valid config."""
    for key in search.space:
        section, _, name = key.partition(".")
        if section not in SECTIONS or not name:
            raise ConfigError(f"'{key}': expected 'section.parameter' with section one of {list(SECTIONS)} (the data is what every trial is scored on)")
        if section == "train" and name not in SEARCHABLE_TRAIN:
            known = f"one of {list(SEARCHABLE_TRAIN)}" if name in TrainSection.model_fields else f"a training setting, one of {list(SEARCHABLE_TRAIN)}"
            raise ConfigError(f"'{key}': not searchable; expected {known} (the monitor, validation split and mode set what every trial is scored by)")
        if section == "method" and name in getattr(METHODS.get(config.method.name), "selection_parameters", ()):  # a factory may be a function
            raise ConfigError(f"'{key}' sets the validation condition every trial is scored by; searching it would compare trials at different conditions")
    for values in corners(search.space):
        variant(config, values, f"{config._source} with {values}")


def variant(config: ExperimentConfig, values: dict[str, Any], source: str) -> ExperimentConfig:
    """``config`` with ``values`` (``section.parameter`` -> value) set, validated as a config read from ``source``."""
    data = config.model_dump(mode="json")
    for key, value in values.items():
        section, _, name = key.partition(".")
        target = data[section] if section == "train" else data[section]["params"]
        target[name] = value
    return parse_config(data, source)


def search_experiment(
    search: ExperimentSearchConfig,
    config: ExperimentConfig,
    out_dir: Path,
    *,
    worker: int = 0,
    overwrite: bool = False,
    bundle: DataBundle | None = None,
) -> dict[str, Any]:
    """Search ``config``'s parameters in the study in ``out_dir`` until it holds ``search.n_trials`` trials
    (:func:`robustmsa.tuning.search.run_trials`); write the outputs (see module doc) and return ``search.json``'s content."""
    out = Path(out_dir)
    check_space(search, config)
    bundle = bundle if bundle is not None else load_data(config)
    config.check_split_names(bundle)
    with config.naming_errors():
        # a value a component refuses at build time (a range end outside its bounds) fails now, before any training
        for values in corners(search.space):
            chosen = variant(config, values, f"{config._source} with {values}")
            check_fit(build_method(chosen, bundle, search.seeds[0]), bundle, chosen.train.to_train_config())
    metric, mode = config.train.to_train_config().monitor_spec(bundle.task.kind)
    check_pruner(search, world_size(config.train.to_train_config()))
    snapshot = {"search": search.record({"experiment", "n_trials"}), "experiment": config.model_dump(mode="json")}
    study = open_study(out, snapshot, search, "minimize" if mode == "min" else "maximize", worker, overwrite)

    def train(trial: optuna.Trial, seed: int, callbacks: Sequence[Any]) -> float | None:
        values = suggest(trial, search.space)
        try:
            chosen = variant(config, values, f"trial {trial.number}")
            method = build_method(chosen, bundle, seed)
        except ConfigError as exc:  # a value inside the ranges that a component refuses: this trial fails, the search goes on
            trial.set_user_attr("error", str(exc))
            return float("nan")
        return fit(method, bundle, chosen.train.to_train_config(), seed=seed, callbacks=callbacks).best_score

    run_trials(study, search, metric, train)
    return write_experiment_search(out, study, search, config, metric)


def write_experiment_search(out: Path, study: optuna.Study, search: ExperimentSearchConfig, config: ExperimentConfig, metric: str) -> dict[str, Any]:
    """``search.json``, ``search.md`` and ``best_config.yaml`` from the finished trials of ``study``."""
    trials = finished_trials(out, study, metric)
    best = study.best_trial
    failed = [
        {"number": t.number, "params": t.params, "error": t.user_attrs.get("error", "no finite validation score")}
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
    ]
    result = {
        "experiment": config._source,
        "metric": f"valid {metric} (the training's checkpoint criterion)",
        "monitor": metric,
        "direction": study.direction.name.lower(),
        "seeds": search.seeds,
        "best": {"number": best.number, "params": best.params, "value": best.value},
        "trials": trials,
        "failed": failed,
        "pruned": pruned_trials(study),
        "search": search.model_dump(mode="json"),
    }
    write_results(out / "search.json", result)
    header = f"# {config._source} with the parameters of trial {best.number} of {out / 'search.json'} (chosen on validation)\n"
    write_text_atomic(out / "best_config.yaml", header + dump_config(variant(config, best.params, "the best trial")))
    text = (
        f"# Search over the parameters of {config._source}\n\n"
        f"{len(trials)} finished trials ({len(failed)} failed, {len(result['pruned'])} pruned), training seeds {search.seeds}; score: {result['metric']}, mean over the seeds, "
        f"{result['direction']}d. Best first.\n\n" + trial_table(trials, metric, search.space, result["direction"]) + "\nThe best parameters are in best_config.yaml, ready for `robustmsa train`.\n"
    )
    write_text_atomic(out / "search.md", text)
    return result
