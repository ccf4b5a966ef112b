"""Multi-seed aggregation and the report writers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from robustmsa.errors import ConfigError
from robustmsa.evaluation.protocols import mean_std, paired_differences, run_seeds
from robustmsa.evaluation.report import bar_plot, format_value, line_plot, markdown_table, write_json
from robustmsa.folders import LOCK, holds_output, output_lock, prepare_out_dir


def test_mean_std_nested_sample_std() -> None:
    runs = [{"test": {"Acc": 0.5, "name": "x"}}, {"test": {"Acc": 0.7, "name": "y"}}, {"test": {"Acc": 0.9, "name": "z"}}]
    agg = mean_std(runs)
    assert agg["test"]["Acc"]["mean"] == pytest.approx(0.7)
    assert agg["test"]["Acc"]["std"] == pytest.approx(0.2)  # sample std (ddof=1) of 0.5, 0.7, 0.9
    assert agg["test"]["Acc"]["n"] == 3
    assert "name" not in agg["test"]
    with pytest.raises(ValueError, match=r"'test.Acc' is a number in some runs and not in others: \[0.5, 'abc'\]"):
        mean_std([{"test": {"Acc": 0.5}}, {"test": {"Acc": "abc"}}])  # never a silently dropped metric
    with pytest.raises(ValueError, match=r"'test.F0.5' is a number in some runs and missing in others"):
        mean_std([{"test": {"MAE": 1.0, "F0.5": 0.5}}, {"test": {"MAE": 2.0}}])  # e.g. records of two code versions
    assert mean_std([{"a": 1.0, "note": "x"}, {"a": 2.0}]) == {"a": {"mean": 1.5, "std": pytest.approx(0.7071, abs=1e-4), "n": 2}}


def test_mean_std_of_results_read_back_from_json(tmp_path: Path) -> None:
    """A NaN metric is written as null; aggregating results read back must give NaN, as in memory, whichever seed had it."""
    runs = [{"test": {"Non0_acc_2": float("nan"), "MAE": 1.0}}, {"test": {"Non0_acc_2": 0.5, "MAE": 2.0}}]
    for order in (runs, runs[::-1]):
        write_json(tmp_path / "r.json", order)
        read = json.loads((tmp_path / "r.json").read_text())
        assert None in (read[0]["test"]["Non0_acc_2"], read[1]["test"]["Non0_acc_2"])
        for agg in (mean_std(order), mean_std(read)):
            assert math.isnan(agg["test"]["Non0_acc_2"]["mean"]) and agg["test"]["Non0_acc_2"]["n"] == 2
            assert agg["test"]["MAE"]["mean"] == 1.5
    assert mean_std([{"tau": None}, {"tau": None}]) == {}  # leaves that are never numbers are dropped
    every = mean_std([{"r0.9": {"Corr": None, "MAE": 1.0}}] * 3)  # a metric NaN in every seed (constant predictions)
    assert math.isnan(every["r0.9"]["Corr"]["mean"]) and every["r0.9"]["Corr"]["n"] == 3  # stays, as NaN


def test_run_seeds_calls_each_seed() -> None:
    out = run_seeds(lambda seed: {"m": float(seed)}, [1, 3])
    assert out["seeds"] == [1, 3] and out["per_seed"]["3"] == {"m": 3.0}
    assert out["aggregate"]["m"]["mean"] == 2.0
    with pytest.raises(ValueError):
        run_seeds(lambda seed: {}, [])


def test_paired_differences_subtract_the_reference_seed_by_seed() -> None:
    # seed 1 is harder for both models: paired, the shared shift cancels
    per_seed = {
        "0": {"base": {"mean": {"MAE": 0.50, "Acc": 0.80}}, "new": {"mean": {"MAE": 0.45, "Acc": 0.79}}},
        "1": {"base": {"mean": {"MAE": 0.70, "Acc": 0.60}}, "new": {"mean": {"MAE": 0.66, "Acc": 0.62}}},
        "2": {"base": {"mean": {"MAE": 0.60, "Acc": None}}, "new": {"mean": {"MAE": 0.61, "Acc": 0.70}}},
    }
    out = paired_differences(per_seed, "base", ["MAE", "Acc"])
    assert set(out) == {"new"}
    assert out["new"]["MAE"]["mean"] == pytest.approx((-0.05 - 0.04 + 0.01) / 3)
    assert out["new"]["MAE"]["std"] == pytest.approx(0.0321455, rel=1e-4)
    assert out["new"]["MAE"]["better"] == 2  # lower MAE is better
    assert out["new"]["Acc"]["better"] == 1 and math.isnan(out["new"]["Acc"]["mean"])  # undefined on seed 2
    assert out["new"]["MAE"]["per_seed"] == pytest.approx([-0.05, -0.04, 0.01]) and math.isnan(out["new"]["Acc"]["per_seed"][2])
    with pytest.raises(ValueError, match="reference model 'other'"):
        paired_differences(per_seed, "other", ["MAE"])


def test_prepare_out_dir_never_overwrites_results(tmp_path: Path) -> None:
    out = prepare_out_dir(tmp_path / "run")
    write_json(out / "results.json", {})
    with pytest.raises(ConfigError, match="already exists"):
        prepare_out_dir(out)
    assert prepare_out_dir(out, overwrite=True) == out
    assert json.loads((out / "results.json").read_text()) == {}


@holds_output
def _write_results(out_dir: Path, value: int = 1) -> int:
    write_json(Path(out_dir) / "results.json", {"value": value})
    return value


def test_an_output_folder_is_held_by_one_run_at_a_time(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    holder = subprocess.Popen(  # another process runs into the folder (e.g. the same sweep with other --seeds)
        [sys.executable, "-c", "import sys, time; from robustmsa.folders import output_lock\nwith output_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)", str(busy)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match="busy: another run is writing into this folder now"):
            _write_results(busy, value=2)
    finally:
        holder.kill()
        holder.wait()
    assert not (busy / "results.json").exists()
    assert _write_results(out_dir=busy, value=3) == 3  # free again once the other run has ended
    assert sorted(p.name for p in busy.iterdir()) == ["results.json"]  # the lock file is removed after the run
    with output_lock(busy), pytest.raises(ConfigError, match="another run"):
        _write_results(busy)  # also within one process


def test_a_folder_that_cannot_be_locked_still_runs_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import filelock

    def unsupported(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(38, "Function not implemented")  # ENOSYS: flock on some network file systems

    monkeypatch.setattr(filelock.FileLock, "acquire", unsupported)
    with pytest.warns(UserWarning, match="cannot lock this folder"):
        assert _write_results(tmp_path / "nfs", value=4) == 4
    assert sorted(p.name for p in (tmp_path / "nfs").iterdir()) == ["results.json"]


def test_a_run_refused_before_writing_leaves_no_folder(tmp_path: Path) -> None:
    @holds_output
    def refused(out_dir: Path) -> None:
        raise ConfigError("a check failed")

    with pytest.raises(ConfigError, match="a check failed"):
        refused(tmp_path / "new" / "run")
    assert not (tmp_path / "new").exists()  # nor the parent it made
    (tmp_path / "mine").mkdir()
    with pytest.raises(ConfigError):
        refused(tmp_path / "mine")
    assert (tmp_path / "mine").is_dir() and not (tmp_path / "mine" / LOCK).exists()  # a folder the user made stays


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_results_are_written_with_the_users_usual_file_mode(tmp_path: Path) -> None:
    import os

    umask = os.umask(0o022)
    try:
        paths = [write_json(tmp_path / "r.json", {}), bar_plot(tmp_path / "p.png", {"m": {"a": 1.0}}, ylabel="y", title="t")]
    finally:
        os.umask(umask)
    assert [oct(p.stat().st_mode & 0o777) for p in paths] == ["0o644", "0o644"]  # the temporary file's 0o600 was kept before


def test_write_json_nan_as_null(tmp_path: Path) -> None:
    path = write_json(tmp_path / "r.json", {"a": float("nan"), "b": [1.0, math.inf]})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None]}


def test_markdown_table_percent_and_mean_std() -> None:
    table = markdown_table({"m": {"Has0_acc_2": {"mean": 0.8123, "std": 0.01, "n": 3}, "MAE": 0.71234}}, ["Has0_acc_2", "MAE", "Corr"])
    assert "| m | 81.23 ± 1.00 | 0.712 | n/a |" in table
    assert format_value({"mean": 0.5, "std": 0.0, "n": 1}, "Acc") == "50.00"
    assert format_value({"mean": 0.2738, "std": 0.0, "n": 1}, "mAP") == "27.38"  # like the accuracies next to it


def test_plots_are_png(tmp_path: Path) -> None:
    bar = bar_plot(tmp_path / "b.png", {"A": {"IID": 80.0, "OOD": 60.0}}, ylabel="acc", title="t")
    line = line_plot(tmp_path / "l.png", {"A": ([0.0, 0.5], [1.0, 2.0])}, xlabel="r", ylabel="MAE", title="t", errors={"A": [0.1, 0.1]})
    for path in (bar, line):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
