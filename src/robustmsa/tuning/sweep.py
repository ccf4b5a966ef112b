"""Search the training hyper-parameters of one model of a missing-rate sweep on validation data (Optuna).

A search config names a sweep YAML (its data, views, backbone and training
settings are used as they are; the model's own backbone if the sweep gives it
one), one of its models, and a space over that model's parameters::

    sweep: synthetic.yaml          # relative to this file
    model: lnln
    seeds: [0]                     # training seeds of every trial (score: the mean over them)
    n_trials: 12
    startup_trials: 4              # random trials before TPE takes over
    space:
      w_completeness: {low: 0.01, high: 1.0, log: true}
      proxy_layers: {low: 1, high: 3, integer: true}   # whole numbers low..high
      blend: {choices: [sample, missing]}

Each trial trains the model with the sampled parameters (over the sweep's own
ones) on each of ``seeds`` and scores it by the sweep's checkpoint criterion on
the validation split (by default the MAE at r = 0.5), averaged over the seeds:
a test split is never seen. A trial whose score is not finite (a diverged
run) fails and still counts towards ``n_trials``. The study lives in an Optuna
journal file (``study.log``) in the output folder, so an interrupted search
resumes, and several processes (``worker`` 1, 2, ..., each with its own sampler
seed) can run trials of the same study at once.

Outputs: ``search.json`` (every trial, the best one), ``search.md`` and
``best_sweep.yaml``, the sweep config with only the tuned model, named
``<model>_tuned``, ready for ``sweep-missing`` and ``sweep-combine`` with the
untuned runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import yaml
from pydantic import Field, model_validator

from robustmsa.config import ComponentConfig, Seeds, _Strict, load_config
from robustmsa.data.dataset import DataBundle
from robustmsa.errors import ConfigError, TrainingDiverged
from robustmsa.evaluation.missing_protocol import MissingSweepConfig, check_sweep_models, load_sweep_config, load_sweep_data, train_sweep_model
from robustmsa.evaluation.report import markdown_table, write_json, write_text_atomic
from robustmsa.registry import METHODS


class Param(_Strict):
    """One searched parameter: a range ``{low, high, log?, integer?}`` (floats; whole numbers with ``integer``) or a
    list of ``choices``."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: list[str | bool | int | float] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Param:
        if self.choices is not None:
            if self.low is not None or self.high is not None or not self.choices:
                raise ValueError("give either a non-empty 'choices' list or 'low' and 'high', not both")
        elif self.low is None or self.high is None:
            raise ValueError("give 'low' and 'high' (a float range) or 'choices'")
        elif not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        elif self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        elif self.integer and not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError(f"an integer range needs whole-number ends, got {self.low} and {self.high}")
        if self.integer:
            self.low, self.high = int(self.low), int(self.high)  # type: ignore[union-attr, arg-type]
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(name, self.choices)
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)  # type: ignore[arg-type]
        return trial.suggest_float(name, self.low, self.high, log=self.log)  # type: ignore[arg-type]


class SweepSearchConfig(_Strict):
    """What to search (see module doc)."""

    sweep: Path
    model: str
    space: dict[str, Param] = Field(min_length=1)
    seeds: Seeds = Field(default_factory=lambda: [0])
    n_trials: int = Field(12, ge=1)
    startup_trials: int = Field(4, ge=1)
    sampler_seed: int = Field(0, ge=0, le=2**32 - 1)


def load_search_config(path: Path | str) -> tuple[SweepSearchConfig, MissingSweepConfig]:
    """The search config and the sweep config it names (relative paths: to the search file's folder)."""
    path = Path(path)
    search = load_config(path, SweepSearchConfig)
    sweep_path = search.sweep if search.sweep.is_absolute() else path.parent / search.sweep
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
        for values in _corners(search.space):  # every choice, and both ends of every range, must be a value the method takes
            METHODS.check(sweep.models[search.model].name, _tuned_component(sweep, search.model, values).params, 1)
    except ConfigError as exc:
        raise ConfigError(f"{path}: field 'space': {exc}") from None
    return search, sweep


def _suggest(trial: optuna.Trial, space: dict[str, Param]) -> dict[str, Any]:
    return {name: p.suggest(trial, name) for name, p in space.items()}


def _corners(space: dict[str, Param]) -> list[dict[str, Any]]:
    """Parameter sets that together hold every choice and both ends of every range of ``space``."""
    options = {name: p.choices if p.choices is not None else [p.low, p.high] for name, p in space.items()}
    return [{name: values[min(k, len(values) - 1)] for name, values in options.items()} for k in range(max(map(len, options.values())))]


def _tuned_component(sweep: MissingSweepConfig, model: str, params: dict[str, Any]) -> ComponentConfig:
    base = sweep.models[model]
    return ComponentConfig(name=base.name, params={**base.params, **params})


def _variants(sweep: MissingSweepConfig, model: str, components: dict[str, ComponentConfig]) -> MissingSweepConfig:
    """The sweep with ``components`` (display name -> variant of ``model``) as its only models, each on ``model``'s
    backbone (its own one, if the sweep gives it one)."""
    backbones = {name: sweep.backbones[model] for name in components} if model in sweep.backbones else {}
    return sweep.model_copy(update={"models": components, "backbones": backbones, "reference": None})


def _open_study(out: Path, search: SweepSearchConfig, sweep: MissingSweepConfig, direction: str, worker: int, overwrite: bool) -> optuna.Study:
    """Create the study in ``out``, or join the one there if it was made from the same settings (the number of
    trials may grow)."""
    # without own backbones as before sweeps had them, so that the studies of those days are joined, not refused
    snapshot = {"search": search.model_dump(mode="json", exclude={"sweep", "n_trials"}), "sweep": sweep.model_dump(mode="json", exclude=None if sweep.backbones else {"backbones"})}
    marker = out / "search_config.json"
    journal = out / "study.log"
    if marker.exists():
        if overwrite:
            journal.unlink(missing_ok=True)
        elif json.loads(marker.read_text(encoding="utf-8")) != json.loads(json.dumps(snapshot)):
            raise ConfigError(f"{marker}: this folder holds a search with other settings; choose another --out folder or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    write_json(marker, snapshot)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    sampler = optuna.samplers.TPESampler(seed=search.sampler_seed + worker, n_startup_trials=search.startup_trials)
    return optuna.create_study(study_name="search", storage=storage, sampler=sampler, direction=direction, load_if_exists=True)


def search_sweep_model(
    search: SweepSearchConfig,
    sweep: MissingSweepConfig,
    out_dir: Path,
    *,
    worker: int = 0,
    overwrite: bool = False,
    bundle: DataBundle | None = None,
) -> dict[str, Any]:
    """Run trials until the study in ``out_dir`` has ``search.n_trials`` finished, failed or running ones; write
    the outputs (see module doc) and return the content of ``search.json``."""
    out = Path(out_dir)
    bundle = bundle if bundle is not None else load_sweep_data(sweep)
    sweep.check_split_names(bundle)
    # a value the method refuses (a range end outside its bounds) fails now, not in a trial after others have trained
    check_sweep_models(_variants(sweep, search.model, {f"{search.model} with {v}": _tuned_component(sweep, search.model, v) for v in _corners(search.space)}), bundle)
    metric, mode = sweep.train.to_train_config().monitor_spec(bundle.task.kind)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(out, search, sweep, "minimize" if mode == "min" else "maximize", worker, overwrite)

    def objective(trial: optuna.Trial) -> float:
        name = f"{search.model}_trial{trial.number}"
        component = _tuned_component(sweep, search.model, _suggest(trial, search.space))
        scores = {}
        for seed in search.seeds:
            try:
                fitted = train_sweep_model(_variants(sweep, search.model, {name: component}), name, component, bundle, seed, None)[1]
            except TrainingDiverged:
                return float("nan")  # Optuna records the trial as failed
            if fitted.best_score is None:
                raise ConfigError(f"trial {trial.number}: training recorded no validation '{metric}'")
            scores[str(seed)] = float(fitted.best_score)
        trial.set_user_attr("per_seed", scores)
        return sum(scores.values()) / len(scores)

    counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.RUNNING)
    while len(study.get_trials(deepcopy=False, states=counted)) < search.n_trials:
        study.optimize(objective, n_trials=1)
    return write_search(out, study, search, sweep, metric)


def write_search(out: Path, study: optuna.Study, search: SweepSearchConfig, sweep: MissingSweepConfig, metric: str) -> dict[str, Any]:
    """``search.json``, ``search.md`` and ``best_sweep.yaml`` from the finished trials of ``study``."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        failed = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)))
        raise ConfigError(f"{out}: no trial of the study finished ({failed} failed: no finite validation '{metric}')")
    trials = [{"number": t.number, "params": t.params, "value": t.value, "per_seed": t.user_attrs.get("per_seed")} for t in done]
    best = study.best_trial
    tuned = f"{search.model}_tuned"
    result = {
        "model": search.model,
        "metric": f"valid {metric} (the sweep's checkpoint criterion)",
        "direction": study.direction.name.lower(),
        "seeds": search.seeds,
        "best": {"number": best.number, "params": best.params, "value": best.value},
        "trials": trials,
        "search": search.model_dump(mode="json"),
    }
    write_json(out / "search.json", result)
    best_sweep = _variants(sweep, search.model, {tuned: _tuned_component(sweep, search.model, best.params)})
    header = f"# {tuned}: {search.model} with the parameters of trial {best.number} of {out / 'search.json'}\n"
    write_text_atomic(out / "best_sweep.yaml", header + yaml.safe_dump(best_sweep.model_dump(mode="json"), sort_keys=False))
    ordered = sorted(trials, key=lambda t: t["value"], reverse=result["direction"] == "maximize")
    rows = {f"trial {t['number']}": {metric: t["value"], **t["params"]} for t in ordered}
    text = (
        f"# Search over the training parameters of '{search.model}'\n\n"
        f"{len(trials)} finished trials, training seeds {search.seeds}; score: {result['metric']}, mean over the seeds, {result['direction']}d. Best first.\n\n"
        + markdown_table(rows, [metric, *search.space], row_header="trial")
        + f"\nThe best parameters are in best_sweep.yaml as model '{tuned}'.\n"
    )
    write_text_atomic(out / "search.md", text)
    return result
