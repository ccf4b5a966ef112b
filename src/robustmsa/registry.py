"""Name -> factory registries for data sources, backbones and methods.

Registries are filled by decorators at import time of the defining modules;
:func:`load_builtins` imports them so that ``BACKBONES.get("tfn")`` works from
configs and the CLI. Registries hold classes and functions only (no state).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from robustmsa.errors import ConfigError

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """A mapping from lower-case names to factories."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        key = name.lower()

        def decorator(obj: T) -> T:
            if key in self._items and self._items[key] is not obj:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        load_builtins()
        key = name.lower()
        if key not in self._items:
            raise ConfigError(f"unknown {self.kind} '{name}'; available: {', '.join(self.names())}")
        return self._items[key]

    def build(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call the factory; parameters that do not fit its signature are a ConfigError naming them (other errors pass through)."""
        factory = self.get(name)
        try:
            inspect.signature(factory).bind(*args, **kwargs)
        except TypeError as exc:
            accepted = [p for p in inspect.signature(factory).parameters if p not in ("self", "args", "kwargs")]
            raise ConfigError(f"{self.kind} '{name}': {exc} (parameters: {', '.join(accepted)})") from None
        return factory(*args, **kwargs)

    def names(self) -> list[str]:
        load_builtins()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        load_builtins()
        return name.lower() in self._items


DATASETS: Registry[Callable[..., Any]] = Registry("dataset")
BACKBONES: Registry[Callable[..., Any]] = Registry("backbone")
METHODS: Registry[Callable[..., Any]] = Registry("method")

# Modules whose import registers built-in components. Missing optional modules
# are skipped so that partial installs still work.
BUILTIN_MODULES = (
    "robustmsa.method",
    "robustmsa.models.zoo",
    "robustmsa.data.sources",
    "robustmsa.debias.zoo",
    "robustmsa.reconstruct.zoo",
)


def load_builtins() -> None:
    for name in BUILTIN_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
