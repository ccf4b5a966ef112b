"""The benchmark scripts never replace stored results unless told to (checked before anything trains); what they compute."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from robustmsa.errors import ConfigError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_clue_script_keeps_stored_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stored = tmp_path / "clue_synthetic.json"
    stored.write_text('{"stored": true}', encoding="utf-8")
    assert _script("clue").main(["synthetic", "--seeds", "0", "--epochs", "1", "--out", str(tmp_path)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err and stored.read_text(encoding="utf-8") == '{"stored": true}'


def test_backbones_script_keeps_stored_results(tmp_path: Path) -> None:
    stored = tmp_path / "backbones.json"
    stored.write_text('{"stored": true}', encoding="utf-8")
    script = _script("backbones")
    with pytest.raises(ConfigError, match="already exists: pass --update"):
        script.main(["--quick", "--models", "text_only", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="already exists"):
        script.main(["--merge", str(tmp_path), "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="seed 0 is given more than once"):
        script.main(["--quick", "--models", "text_only", "--seeds", "0", "0", "--out", str(tmp_path / "new")])
    assert stored.read_text(encoding="utf-8") == '{"stored": true}'


def test_search_script_compares_the_searched_config_with_the_shipped_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    small = "{n_train: 120, n_valid: 30, n_test: 30, n_test_ood: 30, n_valid_ood: 20, text_encoder: hash}"
    experiment = f"data: {{name: synthetic, params: {small}}}\nbackbone: {{name: lf_dnn, params: {{hidden: 8}}}}\n"
    (tmp_path / "experiment.yaml").write_text(experiment + "train: {max_epochs: 1, progress: false}\nseeds: [0, 1]\n")
    (tmp_path / "search.yaml").write_text("experiment: experiment.yaml\nn_trials: 2\nstartup_trials: 2\nspace: {train.lr: {low: 0.0001, high: 0.05, log: true}}\n")
    out = tmp_path / "out"
    args = ["--config", str(tmp_path / "search.yaml"), "--out", str(out), "--bootstrap", "5"]
    assert _script("search").main(args) == 0
    comparison = json.loads((out / "comparison.json").read_text())
    assert set(comparison["splits"]) == {"test", "test_ood"} and comparison["search"]["n_trials"] == 2 and comparison["reference"] == "default"
    runs = {name: json.loads((out / "runs" / name / "results.json").read_text())["per_seed"] for name in ("default", "tuned")}
    assert runs["tuned"]["0"]["best_valid"] == json.loads((out / "search" / "search.json").read_text())["trials"][comparison["search"]["best"]["number"]]["per_seed"]["0"]
    diffs = [runs["tuned"][s]["metrics"]["test"]["factual"]["MAE"] - runs["default"][s]["metrics"]["test"]["factual"]["MAE"] for s in ("0", "1")]
    tuned = comparison["splits"]["test"]["minus_reference"]["tuned"]["MAE"]
    assert tuned["mean"] == pytest.approx(sum(diffs) / 2) and "interval" in tuned
    valid = [runs["tuned"][s]["best_valid"] - runs["default"][s]["best_valid"] for s in ("0", "1")]
    assert comparison["validation"]["minus_reference"]["tuned"]["MAE"]["better"] == sum(d < 0 for d in valid)  # lower MAE is better
    assert tuned["better"] == sum(d < 0 for d in diffs)
    report = (out / "comparison.md").read_text()
    assert "## test_ood" in report and "best trial" in report and "over 5 bootstrap draws" in report
    assert (out / "differences.png").is_file()
    capsys.readouterr()
    assert _script("search").main(args) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    # a rerun after the comparison was removed reads the finished search and runs back instead of training again
    (out / "comparison.json").unlink()
    script = _script("search")
    script.run_experiment = lambda *args, **kwargs: pytest.fail("a finished run was trained again")
    assert script.main(args) == 0
    assert json.loads((out / "comparison.json").read_text()) == comparison


RESULTS = BENCHMARKS / "results"
INDEX = RESULTS / "README.md"
RUN_LEFTOVERS = re.compile(r"README\.md$|seed_\d+\.json$|run_settings\.json$|tmp")  # git-ignored files of unfinished runs


def _index_rows() -> list[tuple[str, str]]:
    """(first cell, command cell) of every table row of benchmarks/results/README.md."""
    rows = [line.split("|") for line in INDEX.read_text().splitlines() if line.startswith("| `")]
    return [(cells[1], cells[-2]) for cells in rows]


def test_the_results_index_names_every_stored_result_and_nothing_else() -> None:
    indexed = set()
    for entry, _ in _index_rows():
        base = ""
        for name in re.findall(r"`(\w+)`", entry):  # `missing_synthetic` (+`_ood`, `_vs_lnln`): a name, then its suffixes
            if name.startswith("_"):
                indexed.add(base + name)
            else:
                base = name
                indexed.add(name)
    stored = {re.sub(r"\.(json|md|png)$", "", p.name) for p in RESULTS.iterdir() if not RUN_LEFTOVERS.match(p.name)}
    assert sorted(stored - indexed) == [], "stored results that benchmarks/results/README.md does not name"
    assert sorted(indexed - stored) == [], "results that benchmarks/results/README.md names but are not there"


def test_the_results_index_commands_name_what_the_scripts_accept() -> None:
    missing = _script("missing")
    accepted = {
        "clue": set(_script("clue").RUNS),
        "image_text": set(_script("image_text").CONFIGS),
        "search": set(_script("search").SEARCHES),
        "missing": {*missing.CONFIGS, *missing.SEARCHES, "combine", "evaluate", "removal"},
    }
    commands = [found for _, command in _index_rows() for found in re.findall(r"(\w+)\.py (\w+)", command)]
    assert {script for script, _ in commands} == set(accepted)
    assert [(script, which) for script, which in commands if which not in accepted[script]] == []
