"""Name -> factory registries for data sources, backbones and methods.

Registries are filled by decorators at import time of the defining modules;
:func:`load_builtins` imports them so that ``BACKBONES.get("tfn")`` works from
configs and the CLI. Registries hold classes and functions only (no state).
"""

from __future__ import annotations

import collections.abc
import importlib
import inspect
import os
import pathlib
import traceback
import types
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from robustmsa.errors import ConfigError

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """A mapping from lower-case names to factories."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, *, forwards: Callable[..., Any] | None = None) -> Callable[[T], T]:
        """Decorator registering a factory; ``forwards``: the callable a factory's ``**kwargs`` are passed on to
        (their names are then accepted parameters, see :func:`check_parameters`)."""
        key = name.lower()

        def decorator(obj: T) -> T:
            known = self._items.get(key)
            # the same definition run again (a notebook cell, a reloaded module) replaces itself; another one is refused
            if known is not None and known is not obj and _origin(known) != _origin(obj):
                raise ConfigError(
                    f"{self.kind} '{key}' is registered twice: by {'.'.join(_origin(known))} and by {'.'.join(_origin(obj))}; give the second another name"
                )
            if forwards is not None:
                obj.forwards = forwards  # type: ignore[attr-defined]
            self._items[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        load_builtins()
        key = name.lower()
        if key not in self._items:
            raise ConfigError(f"unknown {self.kind} '{name}'; available: {', '.join(self.names())} (a {self.kind} of your own: list its module under 'plugins:' in the config)")
        return self._items[key]

    def check(self, name: str, params: Mapping[str, Any], supplied: int = 0) -> None:
        """ConfigError unless ``name`` is registered and its factory, given ``supplied`` positional arguments,
        accepts the keyword ``params`` (names and required ones; values are the factory's to check)."""
        check_parameters(self.get(name), params, supplied, f"{self.kind} '{name}'")

    def accepts(self, name: str, parameter: str) -> bool:
        """Whether the factory ``name`` takes a keyword ``parameter`` (see :func:`_signatures`)."""
        signatures, open_ended = _signatures(self.get(name))
        return open_ended or any(parameter in sig.parameters for sig in signatures)

    def build(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call the factory after :meth:`check`, refusing out-of-range values as :func:`call_checked` does."""
        self.check(name, kwargs, len(args))
        return call_checked(self.get(name), args, kwargs, f"{self.kind} '{name}'")

    def names(self) -> list[str]:
        load_builtins()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        load_builtins()
        return name.lower() in self._items


def _at_most_zero(params: Mapping[str, Any]) -> str:
    """``"; values <= 0 given: hidden=-8, ..."`` for the integer values <= 0 in ``params`` (nested mappings as
    ``part.key``), or ``""``."""
    suspects = [f"{key}={value}" for key, value in _flatten(params) if isinstance(value, int) and not isinstance(value, bool) and value <= 0]
    return f"; values <= 0 given: {', '.join(suspects)}" if suspects else ""


def _flatten(params: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(``part.key``, value) for the leaves of nested mappings."""
    return [item for key, value in params.items() for item in (_flatten(value, f"{prefix}{key}.") if isinstance(value, Mapping) else [(f"{prefix}{key}", value)])]


def _origin(obj: Callable[..., Any]) -> tuple[str, str]:
    return getattr(obj, "__module__", "?"), getattr(obj, "__qualname__", repr(obj))


_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _callables(factory: Callable[..., Any]) -> list[Callable[..., Any]]:
    """What a call of ``factory`` passes its keywords to, in order: a class's ``__init__`` and, while they take
    ``**kwargs``, those up its hierarchy (``object`` and torch's base classes take none of ours); a function and its
    ``forwards``."""
    if inspect.isclass(factory):
        return [c.__dict__["__init__"] for c in factory.__mro__ if "__init__" in c.__dict__ and c is not object and c.__module__.split(".")[0] != "torch"]
    return [factory, *([factory.forwards] if getattr(factory, "forwards", None) is not None else [])]  # type: ignore[attr-defined]


def _signatures(factory: Callable[..., Any]) -> tuple[list[inspect.Signature], bool]:
    """The signatures whose named parameters a call of ``factory`` accepts as keywords, and whether it accepts
    any name at all (see :func:`_callables`)."""
    signatures = []
    for init in _callables(factory):
        signatures.append(inspect.signature(init))
        if not any(p.kind is p.VAR_KEYWORD for p in signatures[-1].parameters.values()):
            return signatures, False
    # every signature takes **kwargs: a class's chain has ended (the bases left take none of ours); a function's
    # last callable takes any name
    return signatures, not signatures or not inspect.isclass(factory)


def _annotations(factory: Callable[..., Any]) -> dict[str, Any]:
    """Parameter name -> type annotation, from the first callable (see :func:`_callables`) that declares it; a
    callable whose annotations cannot be resolved is skipped."""
    out: dict[str, Any] = {}
    for init in _callables(factory):
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # noqa: BLE001 - annotations naming what only a type checker imports: no type check then
            continue
        for name, hint in hints.items():
            out.setdefault(name, hint)
    return out


def value_fits(value: Any, hint: Any) -> bool:
    """Whether a config value (YAML: numbers, strings, booleans, lists, mappings, null) fits a plain annotation:
    int, float, bool, str, Literal, unions and Optional of them, sequences and mappings. Any other annotation (a
    class, a callable) is not judged here: True."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        judged = [a for a in args if _judged(a)]
        return len(judged) < len(args) or any(value_fits(value, a) for a in judged)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is pathlib.Path:
        return isinstance(value, str | os.PathLike)
    if origin is typing.Literal:
        return value in args
    if origin in (list, collections.abc.Sequence) or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        return isinstance(value, list | tuple) and all(value_fits(v, args[0]) for v in value)
    if origin is tuple:
        return isinstance(value, list | tuple) and len(value) == len(args) and all(value_fits(v, a) for v, a in zip(value, args))
    if origin in (dict, collections.abc.Mapping) or hint in (dict, collections.abc.Mapping):
        return isinstance(value, Mapping)
    return True


def _judged(hint: Any) -> bool:
    """Whether :func:`value_fits` judges values of ``hint`` (plain types) rather than letting them through."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return all(_judged(a) for a in typing.get_args(hint))
    return hint in (type(None), bool, int, float, str, pathlib.Path, dict, collections.abc.Mapping) or origin in (typing.Literal, list, tuple, collections.abc.Sequence, dict, collections.abc.Mapping)


def check_parameters(factory: Callable[..., Any], params: Mapping[str, Any], supplied: int, what: str) -> None:
    """ConfigError naming ``what`` when ``factory(<supplied positional arguments>, **params)`` would not fit its
    signature: too many positional arguments, unknown keyword names (see :func:`_signatures`; a class lists the
    base-class parameters that it fills itself in ``internal_parameters``), missing required ones, values that do
    not fit a parameter's declared type (:func:`value_fits`; ranges are the factory's to check)."""
    signatures, open_ended = _signatures(factory)
    own = [p for p in inspect.signature(factory).parameters.values() if p.name != "self"]
    positional = [p for p in own if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    internal = {"self", *getattr(factory, "internal_parameters", ())}
    accepted = list(dict.fromkeys(p.name for sig in signatures for p in sig.parameters.values() if p.kind in _NAMED and p.name not in internal))
    problems = []
    if supplied > len(positional) and not any(p.kind is p.VAR_POSITIONAL for p in own):
        problems.append(f"takes {len(positional)} positional argument(s), got {supplied}")
    taken = {p.name for p in positional[:supplied]}
    if not open_ended and (unknown := [k for k in params if k not in accepted or k in taken]):
        problems.append(f"unknown parameter(s) {', '.join(map(repr, unknown))}")
    missing = [p.name for p in own[supplied:] if p.kind in _NAMED and p.default is p.empty and p.name not in params]
    if missing:
        problems.append(f"missing required parameter(s) {', '.join(map(repr, missing))}")
    hints = _annotations(factory)
    for name, value in params.items():
        if name in hints and name in accepted and not value_fits(value, hints[name]):
            quote = _QUOTE_HINT if _accepts_text(hints[name]) and not isinstance(value, str) else ""
            problems.append(f"'{name}' is {value!r}; expected {_describe(hints[name])}{quote}")
    if problems:
        names = [n for n in accepted if n not in taken]
        raise ConfigError(f"{what}: {'; '.join(problems)} (parameters: {', '.join(names) or 'none'})")
    # a mapping passed on as the keyword arguments of a part the factory builds (``nested_parameters``:
    # name -> (the part's factory, how many positional arguments the factory gives it))
    for name, (part, part_supplied) in getattr(factory, "nested_parameters", {}).items():
        if isinstance(params.get(name), Mapping):
            check_parameters(part, params[name], part_supplied, f"{what}: '{name}'")


_QUOTE_HINT = " (a name YAML reads as a number, date, boolean or null goes in quotes: \"2024\"; on the command line '--param KEY=\"2024\"')"


def _accepts_text(hint: Any) -> bool:
    """Whether a parameter of annotation ``hint`` takes a string (a name, a path)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_accepts_text(a) for a in typing.get_args(hint))
    return hint in (str, pathlib.Path)


def _describe(hint: Any) -> str:
    """An annotation as a reader would say it (``int``, ``float or None``, ``list of float``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if hint is type(None):
        return "None"
    if hint is pathlib.Path:
        return "a path"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (list, tuple, collections.abc.Sequence):
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin in (dict, collections.abc.Mapping) or hint in (dict, collections.abc.Mapping):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def build_part(factory: Callable[..., Any], params: Mapping[str, Any] | None, *args: Any, what: str) -> Any:
    """``factory(*args, **params)`` after :func:`check_parameters` (a part a component builds from a nested mapping)."""
    check_parameters(factory, dict(params or {}), len(args), what)
    return call_checked(factory, args, dict(params or {}), what)


def call_checked(factory: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any], what: str) -> Any:
    """``factory(*args, **kwargs)``. Errors raised inside the factory pass through unchanged, except a torch layer
    refusing an argument (``nn.Dropout(1.5)``, an LSTM of width 0, a layer of negative width): a parameter value out
    of range, reported as a ConfigError naming ``what`` (and the values <= 0 given). A built module with an empty
    weight (a layer of width 0, which torch accepts and which trains into a constant) is refused the same way."""
    try:
        with warnings.catch_warnings():  # torch's notice on a layer of width 0, which is refused below instead
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
            built = factory(*args, **kwargs)
    except (ValueError, TypeError, RuntimeError) as exc:
        if exc.__traceback__ is None or "/torch/nn/" not in traceback.extract_tb(exc.__traceback__)[-1].filename.replace("\\", "/"):
            raise
        raise ConfigError(f"{what}: a parameter value is out of range ({exc}){_at_most_zero(kwargs)}") from exc
    empty = next((n for n, p in getattr(built, "named_parameters", lambda: ())() if p.numel() == 0), None)
    if empty is not None:
        raise ConfigError(f"{what}: its weight '{empty}' is empty, a layer of width 0{_at_most_zero(kwargs)}; every width must be >= 1")
    return built


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
