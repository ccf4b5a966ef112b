"""Shared plumbing of the generated corpora's settings (frozen dataclasses read from YAML mappings)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar

from robustmsa.errors import ConfigError

S = TypeVar("S", bound="GeneratorSettings")


class GeneratorSettings:
    """Mixin for a frozen settings dataclass: ``from_dict`` (unknown keys refused) and ``to_dict`` (for the record).

    Error messages start with the class's ``label`` (the data source's name)."""

    label: ClassVar[str] = "settings"

    @classmethod
    def from_dict(cls: type[S], values: Mapping[str, Any]) -> S:
        """Build from a plain mapping (YAML), rejecting unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{cls.label}: unknown settings {unknown}; known: {sorted(known)}")
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{cls.label}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values (pairs as lists)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def int_pair(self, name: str, lo: int) -> tuple[int, int]:
        """The setting ``name`` as a pair (min, max) of integers with ``lo <= min <= max`` (ConfigError otherwise)."""
        value = getattr(self, name)
        try:
            a, b = (int(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigError(f"{self.label}: '{name}' must be a pair (min, max) of integers, got {value!r}") from None
        if not lo <= a <= b:
            raise ConfigError(f"{self.label}: '{name}' must satisfy {lo} <= min <= max, got {value!r}")
        return a, b

    def require(self, names: Iterable[str], *, at_least: int | None = None, unit: bool = False, nonnegative: bool = False) -> None:
        """ConfigError naming the first of ``names`` that is not an integer >= ``at_least``, not in [0, 1]
        (``unit``) or not a finite number >= 0 (``nonnegative``)."""
        for name in names:
            value = getattr(self, name)
            if at_least is not None and int(value) < at_least:
                raise ConfigError(f"{self.label}: '{name}' must be >= {at_least}, got {value}")
            if unit and not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"{self.label}: '{name}' must be in [0, 1], got {float(value)}")
            if nonnegative and not (math.isfinite(float(value)) and float(value) >= 0.0):
                raise ConfigError(f"{self.label}: '{name}' must be a finite number >= 0, got {float(value)}")
