"""User-facing error types.

Every error a user can cause (bad file, bad field, bad config) is raised as a
:class:`RobustMSAError` subclass with a one-line message that names the file and
the field. The CLI prints the message and exits non-zero without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class RobustMSAError(Exception):
    """Base class of user errors (printed without traceback by the CLI)."""


class DataError(RobustMSAError):
    """Bad or missing input data."""

    def __init__(self, source: object, field: str | None, problem: str) -> None:
        where = f"{source}" if field is None else f"{source}: field '{field}'"
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.field = field
        self.problem = problem

    def __reduce__(self) -> tuple[type, tuple[object, str | None, str]]:
        """Picklable with its three parts, so an error raised in a worker process reaches the caller intact."""
        return type(self), (self.source, self.field, self.problem)


def require_file(path: Path, expected: str = "a file", field: str | None = None, missing: str | None = None) -> Path:
    """``path`` if it is a file; else a :class:`DataError` naming it: ``is a directory; expected <expected>`` or
    ``missing`` (default: ``<expected without its article> not found``)."""
    if path.is_dir():
        raise DataError(path, field, f"is a directory; expected {expected}")
    if not path.is_file():
        article, _, rest = expected.partition(" ")
        raise DataError(path, field, missing or f"{rest if article in ('a', 'an') else expected} not found")
    return path


class ConfigError(RobustMSAError):
    """Bad configuration value or file."""


class TrainingDiverged(ConfigError):
    """No epoch of a training run reached a finite validation score (its predictions became NaN or infinite)."""
