"""Comparing finished training runs: paired seed by seed, bootstrap over test samples, and what is refused."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from robustmsa.config import load_config
from robustmsa.errors import ConfigError, DataError
from robustmsa.evaluation.compare import _units, compare_runs, read_run, write_comparison
from robustmsa.experiment import evaluate_run, run_experiment
from robustmsa.metrics import regression_metrics
from tests.test_demo_cli import _cli

DATA = "data: {name: synthetic, params: {n_train: 120, n_valid: 30, n_test: 40, n_test_ood: 30, n_valid_ood: 20, text_encoder: hash}}\n"
TRAIN = "train: {max_epochs: 2, patience: 1, progress: false}\n"


def _train(folder: Path, text: str, data: str = DATA) -> Path:
    config = folder.with_suffix(".yaml")
    config.write_text(data + TRAIN + text)
    run_experiment(load_config(config), folder)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three runs on the same data: LF-DNN (seeds 0, 1), a wider LF-DNN (seeds 0, 1, 2) and CLUE (TE and TIE)."""
    root = tmp_path_factory.mktemp("runs")
    return {
        "base": _train(root / "base", "backbone: {name: lf_dnn, params: {hidden: 4}}\nseeds: [0, 1]\n"),
        "wide": _train(root / "wide", "backbone: {name: lf_dnn, params: {hidden: 16}}\nseeds: [0, 1, 2]\n"),
        "clue": _train(
            root / "clue",
            "backbone: {name: lf_dnn, params: {hidden: 4}}\nmethod: {name: clue, params: {text_branch: {input: hash, encoder: mean}, tau_split: valid}}\n"
            "eval: {modes: [te, tie]}\nseeds: [0, 1]\n",
        ),
    }


def test_the_recorded_metrics_paired_seed_by_seed(runs: dict[str, Path]) -> None:
    base, wide, clue = (json.loads((runs[k] / "results.json").read_text()) for k in ("base", "wide", "clue"))
    found = compare_runs([read_run(runs["base"]), read_run(runs["wide"]), read_run(runs["clue"])], bootstrap=0)
    assert found["seeds"] == ["0", "1"]  # wide's seed 2 has no partner
    assert any("wide's seeds ['2'] are left out" in note for note in found["notes"])
    assert list(found["entries"]) == ["base", "wide", "clue/te", "clue/tie"] and found["reference"] == "base"
    test = found["splits"]["test"]
    assert test["table"]["base"]["MAE"]["mean"] == pytest.approx(base["aggregate"]["metrics"]["test"]["factual"]["MAE"]["mean"])
    assert test["table"]["wide"]["MAE"]["n"] == 2  # over the shared seeds, not wide's three
    for entry, run, mode in (("wide", wide, "factual"), ("clue/tie", clue, "tie")):
        diffs = [run["per_seed"][s]["metrics"]["test"][mode]["MAE"] - base["per_seed"][s]["metrics"]["test"]["factual"]["MAE"] for s in ("0", "1")]
        paired = test["minus_reference"][entry]["MAE"]
        assert paired["mean"] == pytest.approx(np.mean(diffs)) and paired["std"] == pytest.approx(np.std(diffs, ddof=1))
        assert paired["better"] == sum(d < 0 for d in diffs)  # lower MAE is better
        assert paired["per_seed"] == pytest.approx(diffs)
        assert "interval" not in paired
    valid = found["validation"]
    assert valid["compared"] and valid["metric"] == "MAE"
    assert valid["minus_reference"]["clue"]["MAE"]["mean"] == pytest.approx(np.mean([clue["per_seed"][s]["best_valid"] - base["per_seed"][s]["best_valid"] for s in ("0", "1")]))
    assert set(found["splits"]) == {"test", "test_ood"}
    by_run = compare_runs([read_run(runs["base"]), read_run(runs["clue"])], reference="clue", bootstrap=0)
    assert by_run["reference"] == "clue/te" and set(by_run["splits"]["test"]["minus_reference"]) == {"base", "clue/tie"}


def test_the_bootstrap_redraws_whole_videos_of_the_test_data(runs: dict[str, Path], tmp_path: Path) -> None:
    named = [read_run(f"a={runs['base']}"), read_run(f"b={runs['wide']}")]
    one = compare_runs(named, splits=["test"], bootstrap=1, seed=5)
    # the one draw, recomputed from the per-sample predictions `evaluate --predictions` writes
    evaluate_run(runs["base"], splits=["test"], predictions=tmp_path / "a")
    evaluate_run(runs["wide"], splits=["test"], predictions=tmp_path / "b")
    tables = {(k, s): list(csv.DictReader((tmp_path / k / f"seed_{s}" / "test.csv").open())) for k in "ab" for s in "01"}
    groups = [row["group"] for row in tables["a", "0"]]
    units, kind = _units(groups)
    assert kind == "group" and len(units) == len(set(groups)) < len(groups)
    idx = np.concatenate([units[k] for k in np.random.default_rng(5).integers(len(units), size=len(units))])
    truth = np.array([float(row["truth"]) for row in tables["a", "0"]])

    def mae(k: str, s: str) -> float:
        return regression_metrics(np.array([float(row["factual"]) for row in tables[k, s]])[idx], truth[idx])["MAE"]

    drawn = np.mean([mae("b", s) - mae("a", s) for s in "01"])
    interval = one["splits"]["test"]["minus_reference"]["b"]["MAE"]["interval"]
    assert interval["low"] == pytest.approx(drawn, abs=1e-6) and interval["high"] == pytest.approx(drawn, abs=1e-6)
    assert one["bootstrap"]["units"]["test"] == {"unit": "group", "count": len(units)}

    many = compare_runs(named, splits=["test"], bootstrap=40, seed=5)
    assert many == compare_runs(named, splits=["test"], bootstrap=40, seed=5)  # deterministic for its seed
    low, high = (many["splits"]["test"]["minus_reference"]["b"]["Has0_acc_2"]["interval"][k] for k in ("low", "high"))
    assert low < high
    same = compare_runs([read_run(f"a={runs['base']}"), read_run(f"again={runs['base']}")], splits=["test"], bootstrap=20)
    again = same["splits"]["test"]["minus_reference"]["again"]["MAE"]
    assert again["mean"] == 0 and again["better"] == 0 and again["interval"]["low"] == again["interval"]["high"] == 0


def test_units_are_samples_without_a_grouping() -> None:
    assert _units(["v1", "v2", "v3"])[1] == "sample"  # one clip per video
    assert _units(["v1", None, "v1"])[1] == "sample"
    units, kind = _units(["v1", "v2", "v1"])
    assert kind == "group" and [u.tolist() for u in units] == [[0, 2], [1]]


def test_what_a_comparison_refuses(runs: dict[str, Path], tmp_path: Path) -> None:
    base = read_run(runs["base"])
    with pytest.raises(ConfigError, match="at least two runs"):
        compare_runs([base])
    with pytest.raises(ConfigError, match="two runs are named alike"):
        compare_runs([base, read_run(runs["base"])], bootstrap=0)
    with pytest.raises(ConfigError, match="--reference 'other': not one of the compared runs or entries: \\['base', 'clue/te', 'clue/tie'\\]"):
        compare_runs([base, read_run(runs["clue"])], reference="other", bootstrap=0)
    with pytest.raises(ConfigError, match="--split 'valid': not a split every run was scored on"):
        compare_runs([base, read_run(runs["wide"])], splits=["valid"], bootstrap=0)
    with pytest.raises(ConfigError, match="not a finished `robustmsa train` run"):
        read_run(tmp_path)
    edited = tmp_path / "edited"
    shutil.copytree(runs["base"], edited)
    results = json.loads((edited / "results.json").read_text())
    results["per_seed"]["1"]["metrics"]["test"]["factual"]["MAE"] = "abc"
    (edited / "results.json").write_text(json.dumps(results))
    with pytest.raises(DataError, match="edited/results.json: field 'per_seed.1.metrics.test.factual.MAE' is 'abc'; expected a number"):
        read_run(edited)
    del results["per_seed"]["1"]["metrics"]["test"]
    (edited / "results.json").write_text(json.dumps(results))
    with pytest.raises(DataError, match="field 'per_seed.1.metrics': holds splits and modes \\{'test_ood': \\['factual'\\]\\}; the first seed holds"):
        read_run(edited)
    # a larger IID test split (the same training, validation and OOD clips) is other test data
    other = _train(tmp_path / "other", "backbone: {name: lf_dnn, params: {hidden: 4}}\nseeds: [0]\n", DATA.replace("n_test: 40", "n_test: 50"))
    with pytest.raises(ConfigError, match="split 'test' holds other samples in run other than in run base"):
        compare_runs([base, read_run(other)], bootstrap=0)
    on_ood = compare_runs([base, read_run(other)], splits=["test_ood"], bootstrap=2)
    assert on_ood["seeds"] == ["0"] and not any("training data" in note for note in on_ood["notes"])
    shifted = json.loads((other / "results.json").read_text())
    shifted["per_seed"] = {"7": shifted["per_seed"]["0"]}
    (other / "results.json").write_text(json.dumps(shifted))
    with pytest.raises(ConfigError, match="the runs share no seed \\(base: \\['0', '1'\\], other: \\['7'\\]\\)"):
        compare_runs([base, read_run(other)], bootstrap=0)


def test_models_that_do_not_reproduce_their_results_are_named(runs: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(runs["wide"], copy)
    results = json.loads((copy / "results.json").read_text())
    results["per_seed"]["1"]["metrics"]["test"]["factual"]["MAE"] += 0.01  # an edited (or mixed-up) results file
    (copy / "results.json").write_text(json.dumps(results))
    pair = [read_run(runs["base"]), read_run(copy)]
    with pytest.raises(DataError, match="seed_1/model.pt: does not reproduce the recorded MAE on split 'test' in mode 'factual'"):
        compare_runs(pair, bootstrap=2)
    assert compare_runs(pair, bootstrap=0)["seeds"] == ["0", "1"]  # the recorded numbers alone need no model


def test_the_bootstrap_names_data_it_cannot_read(runs: dict[str, Path], tmp_path: Path) -> None:
    moved = tmp_path / "with=sign"  # a folder whose name holds '=' is a folder, not NAME=FOLDER
    shutil.copytree(runs["wide"], moved)
    config = yaml.safe_load((moved / "config.yaml").read_text())
    config["data"] = {"name": "mosi_csv", "params": {"path": str(tmp_path / "gone.csv")}}
    (moved / "config.yaml").write_text(yaml.safe_dump(config))
    run = read_run(moved)
    assert run.name == "with=sign" and run.folder == moved
    with pytest.raises(ConfigError, match="gone.csv.*\\(the bootstrap reads the data of run 'with=sign'; --bootstrap 0 compares the recorded metrics only\\)"):
        compare_runs([read_run(runs["base"]), run], bootstrap=2)


def test_the_output_folder_is_never_a_runs_own(runs: dict[str, Path], tmp_path: Path) -> None:
    pair = [read_run(runs["base"]), read_run(runs["wide"])]
    before = (runs["base"] / "results.json").read_text()
    with pytest.raises(ConfigError, match="--out is the folder of run 'base'"):
        write_comparison(pair, runs["base"], overwrite=True, bootstrap=0)
    assert (runs["base"] / "results.json").read_text() == before
    write_comparison(pair, tmp_path / "cmp", bootstrap=0)
    with pytest.raises(ConfigError, match="already exists"):
        write_comparison(pair, tmp_path / "cmp", bootstrap=0)


def test_compare_command(runs: dict[str, Path], tmp_path: Path) -> None:
    done = _cli("compare", "--run", f"plain={runs['base']}", "--run", str(runs["clue"]), "--out", str(tmp_path / "cmp"), "--bootstrap", "20", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "Reference: **plain**" in report and "| clue/tie − reference |" in report and "over 20 bootstrap draws of the test data" in report
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert results["bootstrap"]["resamples"] == 20 and "interval" in results["splits"]["test_ood"]["minus_reference"]["clue/te"]["Has0_acc_2"]
    assert (tmp_path / "cmp" / "differences.png").read_bytes()[:4] == b"\x89PNG"
    refused = _cli("compare", "--run", str(runs["base"]), "--out", str(tmp_path / "one"), cwd=tmp_path)
    assert refused.returncode == 2 and "at least two runs" in refused.stderr and "Traceback" not in refused.stderr


def test_a_classification_comparison(tmp_path: Path) -> None:
    data = "data: {name: synthetic_context, params: {n_train: 120, n_valid: 30, n_test: 30, n_valid_ood: 30, n_test_ood: 30}}\n"
    pair = [read_run(_train(tmp_path / name, f"backbone: {{name: two_stream, params: {{hidden: {hidden}}}}}\nseeds: [0, 1]\n", data)) for name, hidden in (("narrow", 4), ("wide", 16))]
    found = compare_runs(pair, bootstrap=3)
    assert found["validation"]["metric"] == "Weighted_F1"
    narrow, wide = (run.results["per_seed"] for run in pair)
    diffs = [wide[s]["metrics"]["test"]["factual"]["Acc"] - narrow[s]["metrics"]["test"]["factual"]["Acc"] for s in ("0", "1")]
    paired = found["splits"]["test"]["minus_reference"]["wide"]["Acc"]
    assert paired["mean"] == pytest.approx(np.mean(diffs)) and paired["better"] == sum(d > 0 for d in diffs)  # higher is better
    assert paired["interval"]["finite"] == 3 and paired["interval"]["low"] <= paired["interval"]["high"]


def test_interval_text_reads_as_the_report_shows_the_metric() -> None:
    from robustmsa.evaluation.compare import interval_text

    assert interval_text({"low": 0.0047, "high": 0.0301}, "Acc") == " [+0.47, +3.01]*"  # points, clear of 0
    assert interval_text({"low": -0.0711, "high": -0.0324}, "MAE") == " [-0.071, -0.032]*"
    assert interval_text({"low": -0.02, "high": 0.03}, "F1") == " [-2.00, +3.00]"
    assert interval_text(None, "Acc") == ""
