"""What the validation searches share (Optuna): the searched parameters, the study kept in an output folder, the
trial loop and the table of finished trials.

:mod:`robustmsa.tuning.sweep` searches one model of a missing-rate sweep, :mod:`robustmsa.tuning.experiment` an
experiment config. Each trial trains on the search's seeds and is scored by the training's checkpoint criterion on
the validation split, averaged over the seeds: a test split is never seen. A trial whose score is not finite (a
diverged run) fails and still counts towards ``n_trials``. The study lives in an Optuna journal file
(``study.log``) in the output folder, so an interrupted search resumes, and several processes (``worker`` 1, 2, ...,
each with its own sampler seed) can run trials of the same study at once.

With ``pruner: median`` a trial reports its validation score after every epoch of its first seed, and stops early
when it is worse than the median of the earlier trials at the same epoch (Optuna's MedianPruner; not before
``pruner_warmup_epochs`` epochs, nor during the first ``startup_trials`` trials). A pruned trial counts towards
``n_trials`` and is listed apart from the finished ones; its partial score is never the best.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import optuna
from pydantic import Field, PrivateAttr, model_validator

from robustmsa.config import Seeds, _Strict
from robustmsa.errors import ConfigError, TrainingDiverged
from robustmsa.evaluation.report import markdown_table, write_json


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


class SearchSettings(_Strict):
    """The space, the training seeds of every trial (score: the mean over them) and the budget of a search."""

    space: dict[str, Param] = Field(min_length=1)
    seeds: Seeds = Field(default_factory=lambda: [0])
    n_trials: int = Field(12, ge=1)
    startup_trials: int = Field(4, ge=1)  # random trials before TPE takes over
    sampler_seed: int = Field(0, ge=0, le=2**32 - 1)
    pruner: Literal["none", "median"] = "none"
    pruner_warmup_epochs: int = Field(3, ge=0)  # epochs every trial trains before it can be pruned
    _source: str = PrivateAttr("<config>")  # the file it was read from, for errors found later (set by parse_config)

    def record(self, exclude: set[str]) -> dict[str, Any]:
        """The settings a study is made from (see :func:`open_study`); without the pruner's when there is none,
        as studies were recorded before searches could prune, so that those are joined, not refused."""
        unpruned = {"pruner", "pruner_warmup_epochs"} if self.pruner == "none" else set()
        return self.model_dump(mode="json", exclude=exclude | unpruned)


def named_file(config: Path, named: Path, field: str) -> Path:
    """The file ``named`` by the search config ``config``'s ``field`` (relative to its folder), below the working
    directory as a relative path (reports then name ``configs/backbones/tfn.yaml``, not
    ``configs/search/../backbones/tfn.yaml``); a ConfigError naming ``config`` and ``field`` when there is none."""
    full = (config.parent / named).resolve()
    if not full.is_file():
        raise ConfigError(f"{config}: field '{field}': no config file at {full} (a relative path is read from the search config's folder)")
    try:
        return full.relative_to(Path.cwd().resolve())
    except ValueError:
        return full


def suggest(trial: optuna.Trial, space: Mapping[str, Param]) -> dict[str, Any]:
    return {name: p.suggest(trial, name) for name, p in space.items()}


def corners(space: Mapping[str, Param]) -> list[dict[str, Any]]:
    """Parameter sets that together hold every choice and both ends of every range of ``space``: checking them
    before the first trial finds a value the component refuses before anything has trained."""
    options = {name: p.choices if p.choices is not None else [p.low, p.high] for name, p in space.items()}
    return [{name: values[min(k, len(values) - 1)] for name, values in options.items()} for k in range(max(map(len, options.values())))]


def open_study(out: Path, snapshot: dict[str, Any], settings: SearchSettings, direction: str, worker: int, overwrite: bool) -> optuna.Study:
    """Create the study in ``out``, or join the one there if it was made from the same settings (``snapshot``; the
    number of trials may grow)."""
    marker = out / "search_config.json"
    journal = out / "study.log"
    if marker.exists():
        if overwrite:
            journal.unlink(missing_ok=True)
        elif json.loads(marker.read_text(encoding="utf-8")) != json.loads(json.dumps(snapshot)):
            raise ConfigError(f"{marker}: this folder holds a search with other settings; choose another --out folder or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    write_json(marker, snapshot)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    sampler = optuna.samplers.TPESampler(seed=settings.sampler_seed + worker, n_startup_trials=settings.startup_trials)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=settings.startup_trials, n_warmup_steps=settings.pruner_warmup_epochs) if settings.pruner == "median" else optuna.pruners.NopPruner()
    return optuna.create_study(study_name="search", storage=storage, sampler=sampler, pruner=pruner, direction=direction, load_if_exists=True)


def check_pruner(settings: SearchSettings, world: int) -> None:
    """A pruned trial stops from a per-epoch report made in the training process: one device only."""
    if settings.pruner != "none" and world > 1:
        raise ConfigError(f"pruner '{settings.pruner}' needs training on one device (this training runs as {world} processes); set pruner: none")


def pruning_report(trial: optuna.Trial, metric: str) -> Any:
    """A Lightning callback that reports the validation ``metric`` to ``trial`` after every epoch and stops the
    training when the study's pruner says so (its ``pruned`` is then True)."""
    import lightning as L  # imported when a trial trains, not when a search config is read

    class Report(L.Callback):
        pruned = False

        def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            value = trainer.callback_metrics.get(f"val/{metric}")
            if trainer.sanity_checking or value is None or not math.isfinite(float(value)):
                return
            trial.report(float(value), trainer.current_epoch)
            if trial.should_prune():
                self.pruned = trainer.should_stop = True

    return Report()


def run_trials(study: optuna.Study, settings: SearchSettings, metric: str, train: Callable[[optuna.Trial, int, Sequence[Any]], float | None]) -> None:
    """Run trials until ``study`` has ``settings.n_trials`` finished, failed, pruned or running ones. A trial's score
    is the mean over ``settings.seeds`` of ``train(trial, seed, callbacks)``, the best validation ``metric`` of one
    training run given those Lightning callbacks; a run that diverges fails the trial."""

    def objective(trial: optuna.Trial) -> float:
        scores = {}
        for k, seed in enumerate(settings.seeds):
            report = pruning_report(trial, metric) if settings.pruner != "none" and k == 0 else None
            try:
                score = train(trial, seed, [report] if report is not None else [])
            except TrainingDiverged:
                return float("nan")  # Optuna records the trial as failed
            if report is not None and report.pruned:
                raise optuna.TrialPruned()
            if score is None:
                raise ConfigError(f"trial {trial.number}: training recorded no validation '{metric}'")
            if not math.isfinite(score):
                return float("nan")
            scores[str(seed)] = float(score)
        trial.set_user_attr("per_seed", scores)
        return sum(scores.values()) / len(scores)

    counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
    while len(study.get_trials(deepcopy=False, states=counted)) < settings.n_trials:
        study.optimize(objective, n_trials=1)


def finished_trials(out: Path, study: optuna.Study, metric: str) -> list[dict[str, Any]]:
    """The finished trials of ``study`` (number, params, value, per-seed scores); a ConfigError when none finished."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
        reasons = [t.user_attrs["error"] for t in failed if "error" in t.user_attrs]  # a value a component refused
        raise ConfigError(f"{out}: no trial of the study finished ({len(failed)} failed: {reasons[0] if reasons else f'no finite validation {metric!r}'})")
    return [{"number": t.number, "params": t.params, "value": t.value, "per_seed": t.user_attrs.get("per_seed")} for t in done]


def trial_table(trials: list[dict[str, Any]], metric: str, space: Mapping[str, Param], direction: str) -> str:
    """Markdown: one row per finished trial, best first."""
    ordered = sorted(trials, key=lambda t: t["value"], reverse=direction == "maximize")
    rows = {f"trial {t['number']}": {metric: t["value"], **{name: _shown(value) for name, value in t["params"].items()}} for t in ordered}
    return markdown_table(rows, [metric, *space], row_header="trial")


def _shown(value: Any) -> str:
    """A parameter value as written in a config: whole numbers as they are, floats to 4 significant digits (a
    learning rate of 0.0003 is not 0.000)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def pruned_trials(study: optuna.Study) -> list[dict[str, Any]]:
    """The trials the pruner stopped: number, params and the last epoch's validation score they reported."""
    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    return [{"number": t.number, "params": t.params, "epochs": t.last_step + 1 if t.last_step is not None else 0, "last_value": t.intermediate_values.get(t.last_step)} for t in pruned]
