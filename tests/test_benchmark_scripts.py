"""The benchmark scripts never replace stored results unless told to (checked before anything trains)."""

from __future__ import annotations

import importlib.util
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
