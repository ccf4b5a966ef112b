"""What software and machine produced a result, recorded beside it.

The same seed can give slightly different numbers on another machine or with
another version of a dependency, so every finished unit of a run (a seed, a
seed's model) and every results file records :func:`environment`: the versions
of robustmsa and the libraries whose numerics it depends on, Python, the
platform, the GPU torch can see (the config records whether training used it),
and, for a robustmsa running from a git checkout, the commit and whether the
checkout had uncommitted changes.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

#: The distributions whose versions are recorded (``None`` where one is not installed).
PACKAGES = ("torch", "lightning", "numpy", "scikit-learn", "transformers", "sentence-transformers")


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, None if it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """``{'robustmsa', 'git', 'python', 'platform', 'processor', 'packages', 'cuda'}`` of this process.

    ``git`` is ``{'commit', 'dirty'}`` when this robustmsa is imported from a
    git checkout of its own source (an editable install), otherwise None;
    ``cuda`` is the name of the CUDA device torch sees, None when there is none or torch was not used.
    """
    from robustmsa import __version__

    return {
        "robustmsa": __version__,
        "git": source_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "packages": {name: package_version(name) for name in PACKAGES},
        "cuda": _cuda(),
    }


def source_commit() -> dict[str, Any] | None:
    """``{'commit', 'dirty'}`` of the git checkout robustmsa is imported from, None when it is not imported from
    one (an installed wheel; a checkout of another project that merely holds the installed package is not taken
    for it) or git cannot tell."""
    package = Path(__file__).resolve().parent
    top = _git(package, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() / "src" / "robustmsa" != package:
        return None
    commit = _git(package, "rev-parse", "HEAD")
    changes = _git(package, "status", "--porcelain", "--untracked-files=no")
    if commit is None or changes is None:
        return None
    return {"commit": commit, "dirty": bool(changes)}


def _git(folder: Path, *args: str) -> str | None:
    """The stripped output of ``git -C folder args``, None if git is absent, fails or takes over 10 s."""
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _cuda() -> str | None:
    torch = sys.modules.get("torch")  # not imported here: a process that did not use torch computed nothing with it
    return torch.cuda.get_device_name() if torch is not None and torch.cuda.is_available() else None
