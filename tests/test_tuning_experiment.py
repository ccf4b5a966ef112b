"""The validation search over an experiment config's hyper-parameters (robustmsa.tuning.experiment)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from robustmsa.config import ExperimentConfig, load_config
from robustmsa.data.dataset import DataBundle
from robustmsa.errors import ConfigError
from robustmsa.experiment import build_method
from robustmsa.training.fit import fit
from robustmsa.tuning.experiment import ExperimentSearchConfig, load_experiment_search, search_experiment, variant
from robustmsa.tuning.search import check_pruner, pruned_trials
from tests.conftest import make_toy_split

EXPERIMENT = {
    "data": {"name": "toy"},
    "backbone": {"name": "lf_dnn", "params": {"hidden": 8, "dropout": 0.2}},
    "method": {"name": "supervised"},
    "train": {"max_epochs": 2, "batch_size": 32, "progress": False},
    "seeds": [0, 1, 2],
}
SPACE = {"backbone.hidden": {"low": 4, "high": 16, "integer": True}, "train.lr": {"low": 1e-3, "high": 3e-2, "log": True}}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _search(**changes: object) -> ExperimentSearchConfig:
    return ExperimentSearchConfig.model_validate({"experiment": "experiment.yaml", "space": SPACE, "n_trials": 2, "startup_trials": 2, **changes})


def test_search_config_names_the_file_and_the_field(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    _write(tmp_path / "configs" / "experiment.yaml", EXPERIMENT)
    good = {"experiment": "configs/experiment.yaml", "space": SPACE}
    search, config = load_experiment_search(_write(tmp_path / "search.yaml", good))  # relative to the search file
    assert set(search.space) == set(SPACE) and config.backbone.name == "lf_dnn" and config.seeds == [0, 1, 2]
    for space, message in (
        ({"data.n_train": {"choices": [100, 200]}}, r"'data.n_train': expected 'section.parameter' with section one of \['backbone', 'method', 'train'\]"),
        ({"hidden": {"choices": [4, 8]}}, "'hidden': expected 'section.parameter'"),
        ({"train.valid_split": {"choices": ["valid", "test"]}}, "'train.valid_split': not searchable"),
        ({"train.monitor": {"choices": ["MAE", "Corr"]}}, "'train.monitor': not searchable"),
        ({"train.lrr": {"low": 0.1, "high": 1.0}}, "'train.lrr': not searchable; expected a training setting"),
        ({"backbone.hiden": {"choices": [4, 8]}}, r"backbone 'lf_dnn': unknown parameter\(s\) 'hiden'"),
        ({"method.w_text": {"choices": [0.5, 1.0]}}, r"method 'supervised': unknown parameter\(s\) 'w_text'"),
        ({"train.lr": {"low": -1.0, "high": 0.1}}, "field 'train.lr'"),  # a range end the training refuses
        ({"train.max_epochs": {"low": 0.5, "high": 3.0}}, "field 'train.max_epochs'"),  # a float range for a whole number
    ):
        with pytest.raises(ConfigError, match=rf"bad.yaml: field 'space': .*{message}"):
            load_experiment_search(_write(tmp_path / "bad.yaml", {**good, "space": space}))
    with pytest.raises(ConfigError, match=r"bad.yaml: field 'experiment': no config file at .*nowhere.yaml"):
        load_experiment_search(_write(tmp_path / "bad.yaml", {**good, "experiment": "nowhere.yaml"}))
    # the validation condition of a missing-rate method is what every trial is scored at
    _write(tmp_path / "configs" / "experiment.yaml", {**EXPERIMENT, "backbone": {"name": "text_centric", "params": {"dim": 8, "heads": 2}}, "method": {"name": "missing_robust"}})
    with pytest.raises(ConfigError, match="'method.valid_missing_rate' sets the validation condition"):
        load_experiment_search(_write(tmp_path / "bad.yaml", {**good, "space": {"method.valid_missing_rate": {"choices": [0.0, 0.5]}}}))


def test_search_scores_on_validation_resumes_joins_and_writes_the_tuned_config(toy_bundle: DataBundle, tmp_path: Path) -> None:
    config = ExperimentConfig.model_validate(EXPERIMENT)
    search = _search(seeds=[1, 2])
    out = tmp_path / "search"
    result = search_experiment(search, config, out, bundle=toy_bundle)
    values = [t["value"] for t in result["trials"]]
    assert len(values) == 2 and values[0] != values[1] and result["direction"] == "minimize" and result["best"]["value"] == min(values)
    best = next(t for t in result["trials"] if t["number"] == result["best"]["number"])
    assert set(best["per_seed"]) == {"1", "2"} and best["value"] == pytest.approx(sum(best["per_seed"].values()) / 2)
    assert isinstance(best["params"]["backbone.hidden"], int) and result["failed"] == []
    # best_config.yaml: the experiment with the best parameters and its own seeds; training it reproduces the score
    tuned = load_config(out / "best_config.yaml")
    assert tuned.seeds == [0, 1, 2] and tuned.backbone.params == {"hidden": best["params"]["backbone.hidden"], "dropout": 0.2}
    assert tuned.train.lr == best["params"]["train.lr"] and tuned.train.max_epochs == 2 and tuned.method == config.method
    fitted = fit(build_method(tuned, toy_bundle, 2), toy_bundle, tuned.train.to_train_config(), seed=2)
    assert fitted.best_score == pytest.approx(best["per_seed"]["2"], rel=1e-6)
    # a test split is never read: other test data gives the same trials
    other = DataBundle({**toy_bundle.splits, "test": make_toy_split(60, "test", 99)}, toy_bundle.task, name="toy")
    assert search_experiment(search, config, tmp_path / "other", bundle=other)["trials"] == result["trials"]
    # a second process (worker 1) joins the study and adds trials up to the new total; an unchanged total adds none
    more = search_experiment(search.model_copy(update={"n_trials": 3}), config, out, worker=1, bundle=toy_bundle)
    assert [t["number"] for t in more["trials"]] == [0, 1, 2] and more["trials"][:2] == result["trials"]
    assert search_experiment(search.model_copy(update={"n_trials": 3}), config, out, bundle=toy_bundle)["trials"] == more["trials"]
    assert json.loads((out / "search.json").read_text())["best"] == more["best"]
    report = (out / "search.md").read_text()
    assert "| trial " in report and f"| {more['best']['params']['train.lr']:.4g} |" in report  # not rounded to 0.010
    assert f"| {more['best']['params']['backbone.hidden']} |" in report  # a whole number as one
    # another experiment never mixes into an existing study; --overwrite starts afresh
    changed = ExperimentConfig.model_validate({**EXPERIMENT, "train": {**EXPERIMENT["train"], "max_epochs": 1}})
    with pytest.raises(ConfigError, match="search_config.json: this folder holds a search with other settings"):
        search_experiment(search, changed, out, bundle=toy_bundle)
    fresh = search_experiment(search.model_copy(update={"n_trials": 1}), changed, out, overwrite=True, bundle=toy_bundle)
    assert len(fresh["trials"]) == 1


def test_a_sampled_value_a_component_refuses_fails_that_trial_only(toy_bundle: DataBundle, tmp_path: Path) -> None:
    # the corners (1, 1) and (2, 2) are valid, a sampled min_epochs 2 with max_epochs 1 is not
    space = {"train.min_epochs": {"choices": [1, 2]}, "train.max_epochs": {"choices": [1, 2]}}
    result = search_experiment(_search(space=space, n_trials=4, startup_trials=4), ExperimentConfig.model_validate(EXPERIMENT), tmp_path / "s", bundle=toy_bundle)
    assert result["failed"] and all("min_epochs (2) exceeds max_epochs (1)" in f["error"] for f in result["failed"])
    assert all(f["params"] == {"train.min_epochs": 2, "train.max_epochs": 1} for f in result["failed"])
    assert len(result["trials"]) + len(result["failed"]) == 4
    assert "failed" in (tmp_path / "s" / "search.md").read_text()
    # when every trial fails, the error says why (sampler seed 0 draws min_epochs 2, max_epochs 1 first)
    with pytest.raises(ConfigError, match=r"no trial of the study finished \(1 failed: .*min_epochs \(2\) exceeds max_epochs \(1\)"):
        search_experiment(_search(space=space, n_trials=1, startup_trials=1, sampler_seed=0), ExperimentConfig.model_validate(EXPERIMENT), tmp_path / "t", bundle=toy_bundle)


def test_a_range_end_a_component_refuses_fails_before_any_trial(toy_bundle: DataBundle, tmp_path: Path) -> None:
    search = _search(space={"backbone.dropout": {"low": 0.1, "high": 1.5}})
    with pytest.raises(ConfigError, match=r"backbone 'lf_dnn': a parameter value is out of range"):
        search_experiment(search, ExperimentConfig.model_validate(EXPERIMENT), tmp_path / "s", bundle=toy_bundle)
    assert not (tmp_path / "s").exists()


def test_the_median_pruner_stops_a_trial_worse_than_the_earlier_ones(toy_bundle: DataBundle) -> None:
    import optuna

    from robustmsa.tuning.search import SearchSettings, run_trials

    config = ExperimentConfig.model_validate({**EXPERIMENT, "train": {**EXPERIMENT["train"], "max_epochs": 4}})
    epochs: dict[int, int] = {}

    def train(trial: optuna.Trial, seed: int, callbacks: list) -> float | None:
        chosen = variant(config, {"train.lr": trial.suggest_categorical("train.lr", [0.03, 1e-7])}, "trial")
        fitted = fit(build_method(chosen, toy_bundle, seed), toy_bundle, chosen.train.to_train_config(), seed=seed, callbacks=callbacks)
        epochs[trial.number] = fitted.epochs
        return fitted.best_score

    settings = SearchSettings.model_validate({"space": {"train.lr": {"choices": [0.03, 1e-7]}}, "n_trials": 3, "startup_trials": 1, "pruner": "median", "pruner_warmup_epochs": 1})
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1))
    for lr in (0.03, 1e-7, 0.03):  # a learning rate that learns nothing, between two that learn
        study.enqueue_trial({"train.lr": lr})
    run_trials(study, settings, "MAE", train)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE]
    # the pruned trial stopped after the warm-up epoch at which it first fell behind; the others trained to the end
    assert study.trials[1].last_step == 1 and epochs[1] < epochs[0] == epochs[2] == 4
    assert pruned_trials(study) == [{"number": 1, "params": {"train.lr": 1e-7}, "epochs": 2, "last_value": study.trials[1].intermediate_values[1]}]


def test_pruning_settings_are_part_of_the_study_and_need_one_device(toy_bundle: DataBundle, tmp_path: Path) -> None:
    config = ExperimentConfig.model_validate(EXPERIMENT)
    plain = search_experiment(_search(n_trials=1), config, tmp_path / "plain", bundle=toy_bundle)
    assert plain["pruned"] == [] and "pruner" not in json.loads((tmp_path / "plain" / "search_config.json").read_text())["search"]  # as before pruning
    pruning = _search(n_trials=1, pruner="median")
    with pytest.raises(ConfigError, match="this folder holds a search with other settings"):
        search_experiment(pruning, config, tmp_path / "plain", bundle=toy_bundle)
    assert search_experiment(pruning, config, tmp_path / "pruning", bundle=toy_bundle)["pruned"] == []  # one trial: nothing to compare with
    with pytest.raises(ConfigError, match="pruner 'median' needs training on one device \\(this training runs as 2 processes\\)"):
        check_pruner(pruning, 2)
    check_pruner(pruning, 1)
    check_pruner(_search(), 2)


def test_a_classification_search_maximises_the_validation_f1(tmp_path: Path) -> None:
    from robustmsa.data.dataset import TaskSpec

    task = TaskSpec(kind="classification", num_classes=2, label_range=None)
    bundle = DataBundle({name: make_toy_split(n, name, seed, task=task) for name, n, seed in (("train", 120, 0), ("valid", 40, 1), ("test", 40, 2))}, task, name="toy")
    result = search_experiment(_search(n_trials=3, startup_trials=3), ExperimentConfig.model_validate(EXPERIMENT), tmp_path / "s", bundle=bundle)
    values = [t["value"] for t in result["trials"]]
    assert result["monitor"] == "Weighted_F1" and result["direction"] == "maximize" and result["best"]["value"] == max(values) != min(values)
