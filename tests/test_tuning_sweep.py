"""The validation search over a sweep model's training parameters (robustmsa.tuning.sweep)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from robustmsa.config import parse_config
from robustmsa.data.dataset import DataBundle
from robustmsa.errors import ConfigError, TrainingDiverged
from robustmsa.evaluation.missing_protocol import MissingSweepConfig, load_sweep_config, train_sweep_model
from robustmsa.tuning.sweep import SweepSearchConfig, load_search_config, search_sweep_model

SWEEP = {
    "data": {"name": "toy"},
    "backbone": {"name": "text_centric", "params": {"dim": 8, "heads": 2, "av_tokens": 2, "levels": 1}},
    "models": {"baseline": {"name": "missing_robust"}, "lnln": {"name": "lnln", "params": {"w_adversarial": 0.3}}},
    "train": {"max_epochs": 1, "batch_size": 64},
    "seeds": [0],
}
SPACE = {"w_completeness": {"low": 0.01, "high": 1.0, "log": True}, "blend": {"choices": ["sample", "missing"]}}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_search_config_names_the_file_and_the_field(tmp_path: Path) -> None:
    (tmp_path / "sweeps").mkdir()
    _write(tmp_path / "sweeps" / "sweep.yaml", SWEEP)
    good = {"sweep": "sweeps/sweep.yaml", "model": "lnln", "space": SPACE}
    search, sweep = load_search_config(_write(tmp_path / "search.yaml", good))  # the sweep path is relative to the search file
    assert search.model == "lnln" and set(sweep.models) == {"baseline", "lnln"}
    for change, message in (
        ({"model": "lnnl"}, "field 'model': 'lnnl' is not a model"),
        ({"space": {"w_completeness": {"low": 1.0, "high": 0.1}}}, "low .* must be below high"),
        ({"space": {"w_completeness": {"low": 0.0, "high": 1.0, "log": True}}}, "log range needs low > 0"),
        ({"space": {"blend": {"choices": []}}}, "space.blend.*non-empty .choices."),
        ({"space": {"blend": {"low": 0.1}}}, "give .low. and .high."),
        ({"space": {}}, "space"),
        ({"space": {"w_completness": {"low": 0.1, "high": 1.0}}}, r"field 'space': method 'lnln': unknown parameter\(s\) 'w_completness'"),
        # the validation condition every trial is scored at is not a search dimension (rate 0.0 would score best)
        ({"space": {"valid_missing_rate": {"choices": [0.0, 0.5, 0.9]}}}, r"field 'space': \['valid_missing_rate'\] set the validation condition"),
        ({"space": {"valid_seed": {"choices": [0, 1]}}}, r"field 'space': \['valid_seed'\] set the validation condition"),
        ({"n_trails": 3}, "n_trails"),
        ({"sweep": "nowhere.yaml"}, r"bad.yaml: field 'sweep': no config file at .*nowhere.yaml"),
        ({"space": {"proxy_layers": {"low": 1, "high": 3}}}, "'proxy_layers' is 1.0; expected int"),  # a float range
        ({"space": {"proxy_layers": {"low": 1, "high": 2.5, "integer": True}}}, "integer range needs whole-number ends"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_search_config(_write(tmp_path / "bad.yaml", {**good, **change}))


def test_integer_ranges_suggest_whole_numbers(tmp_path: Path) -> None:
    import optuna

    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(SWEEP))
    search, _ = load_search_config(_write(tmp_path / "s.yaml", {"sweep": "sweep.yaml", "model": "lnln", "space": {"proxy_layers": {"low": 1, "high": 3, "integer": True}}}))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = {search.space["proxy_layers"].suggest(study.ask(), "proxy_layers") for _ in range(20)}
    assert values == {1, 2, 3} and all(isinstance(v, int) for v in values)


def test_search_trains_on_validation_resumes_joins_and_writes_the_tuned_sweep(toy_bundle: DataBundle, tmp_path: Path) -> None:
    sweep = MissingSweepConfig.model_validate(SWEEP)
    search = SweepSearchConfig.model_validate({"sweep": "sweep.yaml", "model": "lnln", "space": SPACE, "n_trials": 2, "startup_trials": 2, "seeds": [1, 2]})
    out = tmp_path / "search"
    result = search_sweep_model(search, sweep, out, bundle=toy_bundle)
    values = [t["value"] for t in result["trials"]]
    assert len(values) == 2 and result["direction"] == "minimize" and result["best"]["value"] == min(values)
    assert values[0] != values[1]
    # the score is the sweep's checkpoint criterion for that seed: retraining with the best parameters reproduces it
    tuned = load_sweep_config(out / "best_sweep.yaml")
    assert list(tuned.models) == ["lnln_tuned"] and tuned.train == sweep.train and tuned.backbone == sweep.backbone
    params = tuned.models["lnln_tuned"].params
    assert params["w_adversarial"] == 0.3 and {k: params[k] for k in SPACE} == result["best"]["params"]
    best = next(t for t in result["trials"] if t["number"] == result["best"]["number"])
    assert set(best["per_seed"]) == {"1", "2"} and best["value"] == pytest.approx(sum(best["per_seed"].values()) / 2)
    _, fitted = train_sweep_model(tuned, "lnln_tuned", tuned.models["lnln_tuned"], toy_bundle, 2, None)
    assert fitted.best_score == pytest.approx(best["per_seed"]["2"], rel=1e-6)
    # a second process (worker 1) joins the study and adds trials up to the new total; an unchanged total adds none
    more = search_sweep_model(search.model_copy(update={"n_trials": 3}), sweep, out, worker=1, bundle=toy_bundle)
    assert [t["number"] for t in more["trials"]] == [0, 1, 2] and more["trials"][:2] == result["trials"]
    assert search_sweep_model(search.model_copy(update={"n_trials": 3}), sweep, out, bundle=toy_bundle)["trials"] == more["trials"]
    assert json.loads((out / "search.json").read_text())["best"] == more["best"]
    assert "| trial " in (out / "search.md").read_text()
    # other settings never mix into an existing study; --overwrite starts afresh
    other = SweepSearchConfig.model_validate({**search.model_dump(), "space": {"w_completeness": SPACE["w_completeness"]}})
    with pytest.raises(ConfigError, match="search_config.json: this folder holds a search with other settings"):
        search_sweep_model(other, sweep, out, bundle=toy_bundle)
    fresh = search_sweep_model(other.model_copy(update={"n_trials": 1}), sweep, out, overwrite=True, bundle=toy_bundle)
    assert len(fresh["trials"]) == 1 and set(fresh["best"]["params"]) == {"w_completeness"}


def test_diverged_trials_fail_and_count_towards_the_budget(toy_bundle: DataBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from robustmsa.training.fit import FitResult
    from robustmsa.tuning import sweep as module

    calls = []

    def diverged(*args: object) -> tuple[None, FitResult]:
        calls.append(args)
        if len(calls) > 5:
            raise AssertionError("the search kept going after its budget")
        if len(calls) == 1:  # fit found no finite epoch at all
            raise TrainingDiverged("diverged")
        return None, FitResult(best_path=None, best_score=float("nan"), monitor="val/MAE", epochs=1)

    monkeypatch.setattr(module, "train_sweep_model", diverged)
    search = SweepSearchConfig.model_validate({"sweep": "sweep.yaml", "model": "lnln", "space": SPACE, "n_trials": 2})
    with pytest.raises(ConfigError, match="no trial of the study finished \\(2 failed"):
        search_sweep_model(search, MissingSweepConfig.model_validate(SWEEP), tmp_path / "nan", bundle=toy_bundle)
    assert len(calls) == 2


def test_a_range_end_the_method_refuses_fails_before_any_trial(toy_bundle: DataBundle, tmp_path: Path) -> None:
    sweep = MissingSweepConfig.model_validate(SWEEP)
    search = parse_config({"sweep": "sweep.yaml", "model": "lnln", "space": {"complete_share": {"low": 0.1, "high": 3.0}}}, "search.yaml", SweepSearchConfig)
    with pytest.raises(ConfigError, match=r"^search.yaml: field 'space': sweep model 'lnln with \{'complete_share': 3.0\}': .*complete_share must lie in \[0, 1\], got 3.0"):
        search_sweep_model(search, sweep, tmp_path / "search", bundle=toy_bundle)
    assert not (tmp_path / "search" / "study.log").exists()


def test_a_model_on_its_own_backbone_is_searched_and_tuned_on_it(toy_bundle: DataBundle, tmp_path: Path) -> None:
    own = {"name": "ef_lstm", "params": {"hidden": 8}}
    sweep = MissingSweepConfig.model_validate({**SWEEP, "models": {**SWEEP["models"], "own": {"name": "missing_robust"}}, "backbones": {"own": own}})
    search = SweepSearchConfig.model_validate({"sweep": "sweep.yaml", "model": "own", "space": {"complete_share": {"low": 0.1, "high": 0.9}}, "n_trials": 1, "seeds": [0]})
    out = tmp_path / "search"
    result = search_sweep_model(search, sweep, out, bundle=toy_bundle)
    tuned = load_sweep_config(out / "best_sweep.yaml")
    assert list(tuned.models) == ["own_tuned"] and tuned.backbone_of("own_tuned").model_dump() == own
    assert json.loads((out / "search_config.json").read_text())["sweep"]["backbones"] == {"own": own}
    # the trial trained on that backbone: retraining the tuned model on it reproduces the trial's score
    _, fitted = train_sweep_model(tuned, "own_tuned", tuned.models["own_tuned"], toy_bundle, 0, None)
    assert fitted.best_score == pytest.approx(result["trials"][0]["per_seed"]["0"], rel=1e-6)
    # a search on a sweep without own backbones records its sweep as before they existed (its study is joined, not refused)
    plain = search_sweep_model(search.model_copy(update={"model": "baseline"}), MissingSweepConfig.model_validate(SWEEP), tmp_path / "plain", bundle=toy_bundle)
    assert plain["trials"] and "backbones" not in json.loads((tmp_path / "plain" / "search_config.json").read_text())["sweep"]


def test_a_pruning_search_gives_the_first_seed_of_each_trial_a_report(toy_bundle: DataBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from robustmsa.tuning import sweep as module

    given = []

    def recording(*args: object) -> object:
        given.append(args[-1])
        return train_sweep_model(*args)

    monkeypatch.setattr(module, "train_sweep_model", recording)
    search = SweepSearchConfig.model_validate({"sweep": "sweep.yaml", "model": "lnln", "space": SPACE, "n_trials": 2, "startup_trials": 1, "seeds": [0, 1], "pruner": "median"})
    result = search_sweep_model(search, MissingSweepConfig.model_validate(SWEEP), tmp_path / "s", bundle=toy_bundle)
    # trial 0 trains seeds 0 (with the report) and 1; trial 1 the same, or only seed 0 if it was pruned there
    assert [len(callbacks) for callbacks in given] == [1, 0, 1, 0][: len(given)] and len(given) == (3 if result["pruned"] else 4)
    assert len(result["trials"]) + len(result["pruned"]) == 2
    assert json.loads((tmp_path / "s" / "search_config.json").read_text())["search"]["pruner"] == "median"
