"""The README's Python examples run as written (documentation that drifts from the code is a defect)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_python_api_example_runs(capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "the README has no Python example"
    for code in blocks:
        namespace: dict = {"__name__": "readme_example"}
        exec(compile(code, str(README), "exec"), namespace)
    base_acc, clue_acc = (float(v) for v in capsys.readouterr().out.split())
    assert 0.0 <= base_acc <= 1.0 and 0.0 <= clue_acc <= 1.0
    assert namespace["scores"].shape == (len(namespace["bundle"]["test_ood"]),) and np.isfinite(namespace["scores"]).all()
