"""Output folders: checked before a run, held by one run at a time, never holding another run's results silently."""

from __future__ import annotations

import contextlib
import functools
import inspect
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from robustmsa.errors import ConfigError

T = TypeVar("T")


def ensure_folder(path: Path, option: str = "--out") -> Path:
    """Create the folder ``path`` (and its parents); a ConfigError naming ``option`` when it is a file or cannot be made."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path}: {option} must be a folder; this is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the {option} folder ({exc.strerror or exc})") from None
    return path


def check_out_dir(path: Path, overwrite: bool = False, marker: str = "results.json") -> None:
    """Refuse (ConfigError) an output folder that already holds ``marker``, unless ``overwrite``: a command calls it
    before its work, so that a result it could not write is not computed first."""
    if (Path(path) / marker).exists() and not overwrite:
        raise ConfigError(f"{Path(path) / marker} already exists; choose another --out folder or pass --overwrite")


def prepare_out_dir(path: Path, overwrite: bool = False, marker: str = "results.json") -> Path:
    """Create ``path``; refuse (ConfigError) if it already holds ``marker`` and not ``overwrite``."""
    check_out_dir(path, overwrite, marker)
    return ensure_folder(path)


#: The file by which a run holds its output folder (:func:`output_lock`).
LOCK = ".robustmsa.lock"


@contextlib.contextmanager
def output_lock(path: Path) -> Iterator[Path]:
    """Hold the output folder ``path`` for one run. A second run into it at the same time (another process, e.g.
    the same sweep with other ``--seeds``) is refused, instead of both writing results.json and the last one
    silently dropping the other's seeds. Folders this run created and left empty (it was refused by a check) are
    removed again, parents included."""
    path = Path(path)
    made = [folder for folder in (path, *path.parents) if not folder.exists()]  # what this run creates, innermost first
    ensure_folder(path)
    lock = FileLock(path / LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(f"{path}: another run is writing into this folder now; wait for it to finish or choose another --out folder") from None
    except (OSError, NotImplementedError) as exc:  # a file system without file locks: run, but say what is not guarded
        warnings.warn(f"{path}: cannot lock this folder ({exc}); a second run into it at the same time would not be detected", stacklevel=3)
    try:
        yield path
    finally:
        if lock.is_locked:
            lock.release()
        (path / LOCK).unlink(missing_ok=True)
        for folder in made:
            if any(folder.iterdir()):
                break
            folder.rmdir()


def holds_output(function: Callable[..., T]) -> Callable[..., T]:
    """Decorator: ``function`` runs holding :func:`output_lock` on its ``out_dir`` argument."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> T:
        with output_lock(signature.bind(*args, **kwargs).arguments["out_dir"]):
            return function(*args, **kwargs)

    return run
