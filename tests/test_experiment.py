"""The config-driven experiment runner: per-seed fit, saved models, results files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robustmsa.config import parse_config
from robustmsa.errors import ConfigError, DataError
from robustmsa.experiment import build_method, load_model, run_experiment, save_model
from robustmsa.provenance import environment
from robustmsa.training.fit import load_checkpoint_state, predict

CONFIG = {
    "data": {"name": "toy"},
    "backbone": {"name": "lf_dnn", "params": {"hidden": 16}},
    "train": {"max_epochs": 3, "progress": False, "lr": 0.005},
    "seeds": [0, 1],
}


def test_run_experiment_writes_results_and_reloadable_models(toy_bundle, tmp_path: Path) -> None:
    cfg = parse_config(CONFIG)
    results = run_experiment(cfg, tmp_path / "run", bundle=toy_bundle)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["seeds"] == [0, 1] and set(saved["per_seed"]) == {"0", "1"}
    assert saved["aggregate"]["metrics"]["test"]["factual"]["MAE"]["n"] == 2
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| test / factual |" in report and "Not a test result" not in report and saved["chosen_on"] == ["valid"]
    for seed in (0, 1):
        model = load_model(tmp_path / "run" / f"seed_{seed}" / "model.pt", cfg, toy_bundle)
        pred = predict(model, toy_bundle["test"])
        truth = toy_bundle["test"].labels()
        assert np.mean(np.abs(pred - truth)) == pytest.approx(results["per_seed"][str(seed)]["metrics"]["test"]["factual"]["MAE"], rel=1e-5)
    copy = save_model(model, str(tmp_path / "copy.pt"), cfg, 1)  # a path given as a string
    assert np.array_equal(predict(load_model(copy, cfg, toy_bundle), toy_bundle["test"]), pred)
    with pytest.raises(ConfigError, match="already exists"):
        run_experiment(cfg, tmp_path / "run", bundle=toy_bundle)
    # the split checkpoints were chosen on, evaluated too, is marked: its numbers are not held out
    one = parse_config({**CONFIG, "seeds": [0], "train": {**CONFIG["train"], "max_epochs": 1}, "eval": {"splits": ["valid", "test"]}})
    run_experiment(one, tmp_path / "with_valid", bundle=toy_bundle)
    report = (tmp_path / "with_valid" / "report.md").read_text()
    assert "**Not a test result:** checkpoints or inference parameters were chosen on ['valid']" in report
    assert "| valid / factual (chosen on) |" in report and "| test / factual |" in report


def test_a_stopped_run_resumes_with_its_finished_seeds(toy_bundle, tmp_path: Path) -> None:
    cfg = parse_config(CONFIG)
    out = tmp_path / "run"
    first = run_experiment(cfg, out, bundle=toy_bundle)
    (out / "results.json").unlink()  # stopped while training seed 1
    (out / "seed_1" / "result.json").unlink()
    kept = {seed: (out / f"seed_{seed}" / "model.pt").stat().st_mtime_ns for seed in (0, 1)}
    again = run_experiment(cfg, out, bundle=toy_bundle)
    assert again["per_seed"] == json.loads(json.dumps(first["per_seed"]))
    assert (out / "seed_0" / "model.pt").stat().st_mtime_ns == kept[0] and (out / "seed_1" / "model.pt").stat().st_mtime_ns != kept[1]
    (out / "results.json").unlink()
    other = parse_config({**CONFIG, "train": {**CONFIG["train"], "lr": 0.001}})
    with pytest.raises(ConfigError, match="run_settings.json: this folder holds a run made with other settings"):
        run_experiment(other, out, bundle=toy_bundle)
    # also with seeds that the folder does not hold yet: the folder would mix two runs
    with pytest.raises(ConfigError, match="run_settings.json: this folder holds a run made with other settings"):
        run_experiment(parse_config({**CONFIG, "train": {**CONFIG["train"], "lr": 0.001}, "seeds": [2]}), out, bundle=toy_bundle)
    assert "lr: 0.005" in (out / "config.yaml").read_text()  # the stopped run's config is left as it was
    (out / "run_settings.json").unlink()  # a folder made before the run settings were recorded: its seed records still guard it
    with pytest.raises(ConfigError, match="seed_0/result.json: this folder holds a run made with other settings"):
        run_experiment(other, out, bundle=toy_bundle)


def test_an_edited_record_is_named_and_nothing_is_written(toy_bundle, tmp_path: Path) -> None:
    cfg = parse_config(CONFIG)
    out = tmp_path / "run"
    run_experiment(cfg, out, bundle=toy_bundle)
    (out / "results.json").unlink()
    record = out / "seed_1" / "result.json"
    saved = json.loads(record.read_text())
    for result, field in (({}, "'result.metrics.test' is missing"), ({**saved["result"], "best_valid": "0.3"}, "'result.best_valid' is '0.3'; expected a number")):
        record.write_text(json.dumps({**saved, "result": result}))
        with pytest.raises(DataError, match=rf"seed_1/result.json: field {field}; delete this file to run that part again"):
            run_experiment(cfg, out, bundle=toy_bundle)
        assert not (out / "results.json").exists()
    metrics = saved["result"]["metrics"]
    record.write_text(json.dumps({**saved, "result": {**saved["result"], "metrics": {"test": {"factual": {**metrics["test"]["factual"], "MAE": "abc"}}}}}))
    with pytest.raises(DataError, match=r"field 'result.metrics.test.factual.MAE' is 'abc'; expected a number"):  # was silently dropped from the aggregate
        run_experiment(cfg, out, bundle=toy_bundle)
    record.write_text(json.dumps(saved))
    assert run_experiment(cfg, out, bundle=toy_bundle)["aggregate"]["metrics"]["test"]["factual"]["MAE"]["n"] == 2


def test_overwrite_replaces_the_old_summary_at_once_and_models_of_another_run_are_refused(toy_bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from robustmsa import experiment

    cfg = parse_config(CONFIG)
    out = tmp_path / "run"
    run_experiment(cfg, out, bundle=toy_bundle)
    other = parse_config({**CONFIG, "train": {**CONFIG["train"], "lr": 0.002}})
    fit = experiment.fit

    def stopped_after_seed_0(method, bundle, cfg, *, seed, **kwargs):  # type: ignore[no-untyped-def]
        if seed == 1:
            raise KeyboardInterrupt
        return fit(method, bundle, cfg, seed=seed, **kwargs)

    monkeypatch.setattr(experiment, "fit", stopped_after_seed_0)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(other, out, bundle=toy_bundle, overwrite=True)
    assert not (out / "results.json").exists() and not (out / "report.md").exists()  # no summary of the run replaced
    assert not (out / "seed_1" / "result.json").exists()  # nor its record of seed 1, so the replacing run can resume
    with pytest.raises(DataError, match=r"seed_1/model.pt: field 'config': the model was trained with other settings than"):
        load_model(out / "seed_1" / "model.pt", other, toy_bundle)  # seed 1 is still the first run's
    load_model(out / "seed_0" / "model.pt", other, toy_bundle)
    monkeypatch.setattr(experiment, "fit", fit)
    again = run_experiment(other, out, bundle=toy_bundle)  # resumes the replacing run without another --overwrite
    assert again["seeds"] == [0, 1]
    load_model(out / "seed_1" / "model.pt", other, toy_bundle)


def test_missing_model_file(toy_bundle, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model file not found"):
        load_model(tmp_path / "nope.pt", parse_config(CONFIG), toy_bundle)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's notice about the foreign file this test writes
def test_corrupt_checkpoint_is_a_data_error(toy_bundle, tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"\x80\x04 this is not a checkpoint")
    with pytest.raises(DataError, match=r"garbage\.pt: not a robustmsa checkpoint") as info:
        load_checkpoint_state(path)
    assert "weights_only" not in str(info.value)
    with pytest.raises(DataError, match=r"garbage\.pt: not a robustmsa checkpoint"):
        load_model(path, parse_config(CONFIG), toy_bundle)


class _Crafted:
    def __reduce__(self) -> tuple:
        return (print, ("this must never run",))


def test_a_crafted_checkpoint_is_refused_without_advice_to_allow_its_globals(toy_bundle, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "crafted.pt"
    torch.save({"state_dict": _Crafted()}, path)
    with pytest.raises(DataError, match=r"crafted\.pt: not a robustmsa checkpoint \(UnpicklingError: Unsupported global: GLOBAL print was not an allowed global by default\)$") as info:
        load_checkpoint_state(path)
    assert "safe_globals" not in str(info.value) and "must never run" not in capsys.readouterr().out


def test_model_file_without_state_dict(toy_bundle, tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save({"x": 1}, path)
    with pytest.raises(DataError, match=r"foreign\.pt: field 'state_dict'"):
        load_model(path, parse_config(CONFIG), toy_bundle)


def test_model_file_with_a_bad_structure(toy_bundle, tmp_path: Path) -> None:
    path = tmp_path / "odd.pt"
    torch.save({"state_dict": {}, "structure": ["router"]}, path)
    with pytest.raises(DataError, match=r"odd\.pt: field 'structure': is a list"):
        load_model(path, parse_config(CONFIG), toy_bundle)
    torch.save({"state_dict": {}, "structure": {"router": {}}}, path)  # a supervised model has no parts built later
    with pytest.raises(DataError, match=r"odd\.pt: field 'structure': cannot rebuild"):
        load_model(path, parse_config(CONFIG), toy_bundle)


def test_an_unknown_evaluation_mode_fails_before_training(toy_bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from robustmsa import experiment

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained before the evaluation modes were checked")

    monkeypatch.setattr(experiment, "fit", no_training)
    cfg = parse_config({**CONFIG, "eval": {"modes": ["factual", "tie"]}})
    with pytest.raises(ConfigError, match="Supervised has no inference mode 'tie'"):
        run_experiment(cfg, tmp_path / "run", bundle=toy_bundle)


def test_a_config_unfit_for_the_data_leaves_no_folder_behind(toy_bundle, tmp_path: Path) -> None:
    bad = parse_config({**CONFIG, "train": {**CONFIG["train"], "monitor": "Accuracy"}}, "exp.yaml")
    with pytest.raises(ConfigError, match="^exp.yaml: monitor 'Accuracy' is not a metric of a regression task"):
        run_experiment(bad, tmp_path / "run", bundle=toy_bundle)
    assert not (tmp_path / "run").exists()  # before: config.yaml and run_settings.json, which refused the corrected config
    assert run_experiment(parse_config(CONFIG), tmp_path / "run", bundle=toy_bundle)["seeds"] == [0, 1]


def test_loading_a_model_file_never_imports_the_plugins_it_names(toy_bundle, tmp_path: Path) -> None:
    cfg = parse_config(CONFIG)
    path = save_model(build_method(cfg, toy_bundle, 0), tmp_path / "model.pt", cfg, 0)
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    payload = torch.load(path, weights_only=True)
    assert payload["environment"] == environment()  # what trained it, readable without unpickling code
    payload["config"]["plugins"] = [str(evil)]
    torch.save(payload, path)
    load_model(path, cfg, toy_bundle)  # the settings are compared, the file's plugin list is not imported
    assert not (tmp_path / "ran").exists()


def test_the_report_shows_every_metric_of_the_task() -> None:
    """CH-SIMS metrics (a task whose metric set is not MOSI's) all appear, not only the names both sets share."""
    from robustmsa.experiment import experiment_report
    from robustmsa.metrics import SIMS_METRICS

    config = parse_config(CONFIG)
    metrics = {name: {"mean": 0.5, "std": 0.0, "n": 1} for name in SIMS_METRICS}
    report = experiment_report(config, {"seeds": [0], "aggregate": {"metrics": {"test": {"factual": metrics}}}})
    assert "| test set / mode | " + " | ".join(SIMS_METRICS) + " |" in report
