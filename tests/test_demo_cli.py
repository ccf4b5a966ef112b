"""The demo and the command line, end to end on a small generated corpus."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest

import robustmsa
from robustmsa.data.synthetic import SyntheticConfig, generate_corpus
from robustmsa.demo import DemoEntry, _supervised, run_demo
from robustmsa.provenance import environment


@pytest.fixture(scope="module")
def small_corpus():
    return generate_corpus(SyntheticConfig.small())


def test_demo_writes_results_report_and_plot(small_corpus, tmp_path: Path) -> None:
    from robustmsa.debias.clue import demo_entry

    clue = demo_entry("lf_dnn", name="CLUE 2-class", backbone_params={"hidden": 16}, text_branch={"input": "hash", "encoder": "mean"})
    entries = [
        DemoEntry("Text-only", _supervised("text_only", hidden=16)),
        DemoEntry("LF-DNN", _supervised("lf_dnn", hidden=16)),
        DemoEntry("LF-DNN 2-class", _supervised("lf_dnn", hidden=16), scheme="has0"),
        DemoEntry(**clue, scheme="has0"),
    ]
    results = run_demo(tmp_path / "demo", corpus=small_corpus, entries=entries, max_epochs=2, seeds=(0, 1))
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert list(saved["models"]) == ["Text-only", "LF-DNN", "LF-DNN 2-class", "CLUE 2-class"]
    for model in saved["models"].values():
        assert set(model["aggregate"]) == {"test", "test_ood"}
        assert model["aggregate"]["test"]["Has0_acc_2"]["n"] == 2
    two_class = saved["models"]["CLUE 2-class"]
    assert two_class["labels"] == "has0" and set(two_class["aggregate"]["test_ood"]) == {"Has0_acc_2", "Has0_F1_score"}
    assert "MAE" in saved["models"]["LF-DNN"]["aggregate"]["test"]
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "![Acc-2 IID vs OOD](acc2_iid_vs_ood.png)" in report and "## OOD drop" in report
    assert (tmp_path / "demo" / "acc2_iid_vs_ood.png").read_bytes()[:4] == b"\x89PNG"
    iid = results["models"]["LF-DNN"]["aggregate"]["test"]["Has0_acc_2"]["mean"] * 100
    assert f"| LF-DNN | continuous | {iid:.2f} |" in report
    acc = {m: {s: results["models"][m]["aggregate"][s]["Has0_acc_2"]["mean"] * 100 for s in ("test", "test_ood")} for m in ("LF-DNN 2-class", "CLUE 2-class")}
    gain = acc["CLUE 2-class"]["test_ood"] - acc["LF-DNN 2-class"]["test_ood"]
    assert f"**CLUE 2-class** vs **LF-DNN 2-class**: OOD Has0 Acc-2 {gain:+.2f} points" in report


def _cli(*args: str, cwd: Path, process: bool = False) -> subprocess.CompletedProcess[str]:
    """``robustmsa ARGS`` run in ``cwd``: its exit status, stdout and stderr. In this process by default, through the
    console entry point as a child process would run it (a child process pays the import of torch and Lightning,
    about 3 s, on every call); ``process=True``: in a child process."""
    command = [sys.executable, "-c", "from robustmsa.cli import main; main()", *args]
    if process:
        return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=300)
    from robustmsa.cli import main

    out, err = io.StringIO(), io.StringIO()
    here, argv = os.getcwd(), sys.argv
    try:
        os.chdir(cwd)
        sys.argv = ["robustmsa", *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exc:  # as the interpreter ends a process: None is 0, a message is printed and is 1
                code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
                if isinstance(exc.code, str):
                    print(exc.code, file=sys.stderr)
            except Exception:  # what a child process would die of, with its traceback
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(here)
        sys.argv = argv
    return subprocess.CompletedProcess(command, code, out.getvalue(), err.getvalue())


def test_cli_help_and_user_errors(tmp_path: Path) -> None:
    assert "demo" in _cli("--help", cwd=tmp_path, process=True).stdout  # the console entry point in a process of its own
    version = _cli("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith(f"robustmsa {robustmsa.__version__}") and f"torch {importlib.metadata.version('torch')}" in version.stdout
    missing = _cli("train", "--config", "absent.yaml", cwd=tmp_path)
    assert missing.returncode == 2 and "absent.yaml: config file not found" in missing.stderr and "Traceback" not in missing.stderr
    brackets = _cli("train", "--config", "dir[/x]/[train].yaml", cwd=tmp_path)  # printed as text, never as Rich markup
    assert brackets.returncode == 2 and "dir[/x]/[train].yaml: config file not found" in brackets.stderr and "Traceback" not in brackets.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {name: synthetic}\nbackbone: {name: tfn}\ntrain: {epochs: 3}\n")
    result = _cli("train", "--config", str(bad), cwd=tmp_path)
    assert result.returncode == 2 and "field 'train.epochs'" in result.stderr and "Traceback" not in result.stderr
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("data: {name: synthetic, params: {n_train: -5}}\nbackbone: {name: tfn}\n")
    result = _cli("train", "--config", str(unknown), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert result.returncode == 2 and "n_train" in result.stderr and "Traceback" not in result.stderr


def test_cli_seeds_and_out_folders_are_checked_before_anything_runs(tmp_path: Path) -> None:
    for seeds, message in (("0,0", "--seeds: seed 0 is given more than once"), ("", "--seeds expects comma-separated ints, got ''"), ("0,,1", "--seeds expects comma-separated ints")):
        result = _cli("demo", "--seeds", seeds, "--out", str(tmp_path / "d"), cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    (tmp_path / "afile").write_text("mine")
    for out, message in ((tmp_path / "afile", "afile: --out must be a folder; this is a file"), (tmp_path / "afile" / "sub", "cannot create the --out folder")):
        result = _cli("demo", "--out", str(out), cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert (tmp_path / "afile").read_text() == "mine" and not (tmp_path / "d").exists()


def test_cli_train_then_evaluate(tmp_path: Path) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text(
        "data: {name: synthetic, params: {n_train: 80, n_valid: 20, n_test: 20, n_test_ood: 20, n_valid_ood: 10, text_encoder: hash}}\n"
        "backbone: {name: lf_dnn, params: {hidden: 8}}\n"
        "train: {max_epochs: 1, progress: false}\n"
        "seeds: [0]\n"
    )
    run = tmp_path / "run"
    trained = _cli("train", "--config", str(config), "--out", str(run), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    saved = json.loads((run / "results.json").read_text())
    assert saved["environment"] == environment() == json.loads((run / "seed_0" / "result.json").read_text())["environment"]
    evaluated = _cli("evaluate", "--run", str(run), cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert metrics["0"]["test_ood"]["factual"]["MAE"] == pytest.approx(saved["per_seed"]["0"]["metrics"]["test_ood"]["factual"]["MAE"], rel=1e-5)
    again = _cli("train", "--config", str(config), "--out", str(run), cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr
    written = _cli("evaluate", "--run", str(run), "--split", "test_ood", "--predictions", str(tmp_path / "pred"), cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    table = np.loadtxt(tmp_path / "pred" / "seed_0" / "test_ood.csv", delimiter=",", skiprows=1, usecols=(2, 3))
    assert table.shape == (20, 2)
    assert np.abs(table[:, 1] - table[:, 0]).mean() == pytest.approx(json.loads(written.stdout)["0"]["test_ood"]["factual"]["MAE"], rel=1e-4)
    kept = (tmp_path / "pred" / "seed_0" / "test_ood.csv").read_bytes()
    refused = _cli("evaluate", "--run", str(run), "--split", "test_ood", "--predictions", str(tmp_path / "pred"), cwd=tmp_path)
    assert refused.returncode == 2 and "test_ood.csv already exists" in refused.stderr and "Traceback" not in refused.stderr
    assert (tmp_path / "pred" / "seed_0" / "test_ood.csv").read_bytes() == kept
    replaced = _cli("evaluate", "--run", str(run), "--split", "test_ood", "--predictions", str(tmp_path / "pred"), "--overwrite", cwd=tmp_path)
    assert replaced.returncode == 0, replaced.stderr
    into_a_file = _cli("evaluate", "--run", str(run), "--predictions", str(config), cwd=tmp_path)
    assert into_a_file.returncode == 2 and "--predictions must be a folder" in into_a_file.stderr and "Traceback" not in into_a_file.stderr
    typo = _cli("evaluate", "--run", str(run), "--split", "tset", cwd=tmp_path)
    assert typo.returncode == 2 and "--split 'tset': no split named 'tset' in data 'synthetic'; available: [" in typo.stderr


def test_a_run_stopped_by_sigterm_does_not_exit_as_a_success(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning turns SIGTERM during training into SystemExit() (status 0): a scheduler would take it for a success."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from robustmsa import cli

    def stopped() -> None:
        raise SIGTERMException()

    monkeypatch.setattr(cli, "app", stopped)
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 143
    monkeypatch.setattr(cli, "app", lambda: sys.exit(0))
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 0  # other exits pass through


def test_configs_are_read_and_checked_without_importing_lightning(tmp_path: Path) -> None:
    """A typo in a config is reported within a few seconds: reading and checking every kind of config (each
    component's name and parameters) and importing the modules the commands start with load neither Lightning (with
    torchmetrics, about 4 s) nor scikit-learn (about 2 s); they are imported when a model trains or is scored."""
    configs = {
        "load_config": "data: {name: synthetic}\nbackbone: {name: tfn, params: {hiden: 8}}\n",
        "load_protocol_config": "data: {name: synthetic}\nbackbone: {name: lf_dnn, params: {hiden: 8}}\n",
        "load_sweep_config": "data: {name: synthetic}\nmodels: {a: {name: lnln, params: {w_tsk: 1}}}\n",
    }
    for name, text in configs.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    code = """
import sys
import robustmsa.cli, robustmsa.experiment, robustmsa.evaluation.mid_protocol
from robustmsa.config import load_config
from robustmsa.errors import ConfigError
from robustmsa.evaluation.clue_protocol import load_protocol_config
from robustmsa.evaluation.missing_protocol import load_sweep_config
for load in (load_config, load_protocol_config, load_sweep_config):
    try:
        load(load.__name__ + ".yaml")
    except ConfigError as exc:
        print("refused:", exc)
print("heavy:", sorted(m for m in ("lightning", "torchmetrics", "sklearn") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("refused:") == 3 and "'hiden'" in done.stdout and "'w_tsk'" in done.stdout
    assert "heavy: []" in done.stdout
