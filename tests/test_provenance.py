"""The environment recorded beside every result: versions, and the commit of a robustmsa run from a checkout."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
from pathlib import Path

import pytest

import robustmsa
from robustmsa import provenance
from robustmsa.evaluation.report import write_results

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def test_the_environment_names_the_installed_versions() -> None:
    env = provenance.environment()
    assert env["robustmsa"] == robustmsa.__version__ == importlib.metadata.version("robustmsa")
    assert env["packages"]["torch"] == importlib.metadata.version("torch") and env["packages"]["numpy"] == importlib.metadata.version("numpy")
    assert provenance.package_version("no-such-distribution-robustmsa") is None
    assert json.loads(json.dumps(env)) == env  # written as it is


def test_a_results_file_records_the_environment_that_wrote_it(tmp_path: Path) -> None:
    results = {"MAE": 0.5}
    write_results(tmp_path / "results.json", results)
    assert json.loads((tmp_path / "results.json").read_text()) == {"MAE": 0.5, "environment": provenance.environment()} == results


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True, capture_output=True, text=True).stdout.strip()


def _checkout(root: Path, package: str) -> Path:
    """A git repository at ``root`` holding a committed copy of this module at ``package``; the copy's path."""
    module = root / package / "provenance.py"
    module.parent.mkdir(parents=True)
    module.write_text("# a stand-in\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "first")
    return module


@needs_git
def test_the_commit_of_a_checkout_and_whether_it_has_uncommitted_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _checkout(tmp_path, "src/robustmsa")
    monkeypatch.setattr(provenance, "__file__", str(module))
    commit = _git(tmp_path, "rev-parse", "HEAD")
    assert provenance.source_commit() == {"commit": commit, "dirty": False}
    (tmp_path / "notes.txt").write_text("untracked: not a change of the source")
    assert provenance.source_commit() == {"commit": commit, "dirty": False}
    module.write_text("# edited\n")
    assert provenance.source_commit() == {"commit": commit, "dirty": True}
    assert provenance.environment()["git"] == {"commit": commit, "dirty": True}


@needs_git
def test_another_projects_repository_is_not_taken_for_robustmsas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provenance, "__file__", str(_checkout(tmp_path / "project", ".venv/lib/site-packages/robustmsa")))
    assert provenance.source_commit() is None  # an installed robustmsa inside a user's own repository
    bare = tmp_path / "bare" / "src" / "robustmsa" / "provenance.py"
    bare.parent.mkdir(parents=True)
    monkeypatch.setattr(provenance, "__file__", str(bare))
    assert provenance.source_commit() is None  # not in a repository at all
