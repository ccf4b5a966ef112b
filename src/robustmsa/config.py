"""Typed experiment configuration, YAML in and out.

An experiment names a data source, a backbone and a method from the
registries, with their parameters, plus the training settings and seeds::

    data: {name: synthetic, params: {}}
    backbone: {name: tfn, params: {hidden: 64}}
    method: {name: supervised, params: {}}
    train: {max_epochs: 30, batch_size: 32, lr: 0.001, patience: 5}
    seeds: [0, 1, 2]
    eval: {splits: [test, test_ood], modes: null}

Unknown keys are errors (typos must not be silently ignored); messages name
the file and the field.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, StrictBool, StrictInt, ValidationError, field_validator, model_validator

from robustmsa.data.dataset import DataBundle, check_selection_split
from robustmsa.errors import ConfigError, DataError
from robustmsa.plugins import import_plugins
from robustmsa.registry import BACKBONES, DATASETS, METHODS, Registry
from robustmsa.training.fit import TrainConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=BaseModel)


#: numpy's and torch's seeds lie in [0, 2**32 - 1].
MAX_SEED = 2**32 - 1


def check_seeds(seeds: Sequence[object]) -> list[int]:
    """Seeds as a list of distinct integers in [0, 2**32 - 1] (ValueError otherwise): a repeated seed would be
    reported as if it were an independent run."""
    if not seeds:
        raise ValueError("at least one seed is required")
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED]
    if bad:
        raise ValueError(f"seeds must be integers in [0, {MAX_SEED}], got {bad[0]!r}")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})  # type: ignore[misc]
    if repeated:
        raise ValueError(f"seed {repeated[0]} is given more than once; the mean +- std over seeds needs distinct seeds")
    return list(seeds)  # type: ignore[arg-type]


def parse_numbers(text: str, option: str, kind: type) -> list[Any]:
    """A comma-separated command-line option as numbers of ``kind`` (ConfigError naming ``option`` for an empty or
    bad item: ``''``, ``0,,1``, ``a``)."""
    try:
        return [kind(item) for item in text.split(",")]
    except ValueError:
        raise ConfigError(f"{option} expects comma-separated {kind.__name__}s, got '{text}'") from None


def parse_seeds(text: str, option: str = "--seeds") -> list[int]:
    """A comma-separated seed option (``0,1,2``) as distinct seeds (:func:`check_seeds`; ConfigError naming ``option``)."""
    try:
        return check_seeds(parse_numbers(text, option, int))
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}") from None


#: The ``seeds`` field of every config: distinct integers (see :func:`check_seeds`).
Seeds = Annotated[list[Any], AfterValidator(check_seeds)]


class ComponentConfig(_Strict):
    """A registry name and the keyword parameters of its factory."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


def checked(check: Callable[[Any], None]) -> AfterValidator:
    """A validator running ``check`` on a field's value when a config is read; its ConfigError becomes an error of
    that field, so that a typo fails at once, naming the file and the field, instead of deep inside a run."""

    def validate(value: Any) -> Any:
        try:
            check(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    return AfterValidator(validate)


def _registered(registry: Registry[Any], supplied: int) -> AfterValidator:
    """The component names a factory of ``registry`` whose signature takes its parameters after the ``supplied``
    positional arguments the framework passes (:meth:`Registry.check`)."""
    return checked(lambda component: registry.check(component.name, component.params, supplied))


#: A backbone (``BACKBONES``, given the modality dims and the task) and a method (``METHODS``, given the backbone),
#: checked against its factory's parameters when the config is read. (A data source is checked when it is built,
#: which is the first step of every run; a bundle may also be given directly, under any name.)
BackboneComponent = Annotated[ComponentConfig, _registered(BACKBONES, 2)]
MethodComponent = Annotated[ComponentConfig, _registered(METHODS, 1)]


class TrainSection(_Strict):
    """The fields of :class:`robustmsa.training.fit.TrainConfig`."""

    max_epochs: StrictInt = Field(30, ge=1)
    min_epochs: StrictInt = Field(1, ge=0)
    batch_size: StrictInt = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False)
    grad_clip: float | None = Field(1.0, gt=0, allow_inf_nan=False)  # null: no clipping
    patience: StrictInt = Field(5, ge=1)
    monitor: str | None = None
    monitor_mode: Literal["min", "max"] | None = None
    valid_split: str = "valid"
    valid_mode: str | None = None  # default: the method's first inference mode (factual; te for CLUE / CLEF)
    accelerator: str = "cpu"
    devices: int | str | list[StrictInt] = 1  # a number of devices, "auto", or GPU ids ([0, 1] or "0,1"); several: DDP
    strategy: str = "auto"  # several devices: auto / ddp, or ddp_find_unused_parameters_false (see training.fit)
    num_workers: StrictInt = Field(0, ge=0)
    progress: StrictBool = True
    deterministic: StrictBool = True
    limit_train_batches: int | float = 1.0  # a number of batches per epoch (int >= 1), or a share of them (float in (0, 1])

    @field_validator("valid_split")
    @classmethod
    def _not_a_test_split(cls, value: str) -> str:
        try:
            return check_selection_split(value, "valid_split", "checkpoints")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("limit_train_batches", mode="before")
    @classmethod
    def _batches(cls, value: Any) -> Any:
        if isinstance(value, bool) or not (isinstance(value, int) and value >= 1 or isinstance(value, float) and 0 < value <= 1):
            raise ValueError(f"expected a number of batches (an integer >= 1) or a share of them (a float in (0, 1]), got {value!r}")
        return value

    @model_validator(mode="after")
    def _epochs(self) -> TrainSection:
        if self.min_epochs > self.max_epochs:
            raise ValueError(f"min_epochs ({self.min_epochs}) exceeds max_epochs ({self.max_epochs})")
        return self

    def to_train_config(self) -> TrainConfig:
        return TrainConfig(**self.model_dump())


class EvalSection(_Strict):
    splits: list[str] | None = Field(None, min_length=1)  # default: every split whose name starts with 'test'
    modes: list[str] | None = Field(None, min_length=1)  # default: every inference mode of the method


class PluginConfig(_Strict):
    """A whole config file. ``plugins``: modules that register a user's own components, imported before the rest
    of the file is read so that it can name them (see :mod:`robustmsa.plugins`)."""

    plugins: list[str] = Field(default_factory=list)
    _source: str = PrivateAttr("<config>")  # the file it was read from, for errors found later (set by parse_config)

    def build_data(self) -> DataBundle:
        """The configured data source (``self.data``), a parameter problem named as this file's field ``data``
        (data sources are checked when they are built; their files' own errors name those files)."""
        component: ComponentConfig = self.data  # type: ignore[attr-defined]
        try:
            bundle = DATASETS.build(component.name, **component.params)
        except ConfigError as exc:
            raise ConfigError(f"{self._source}: field 'data': {exc}") from None
        except DataError as exc:
            source = Path(str(exc.source))
            if source.is_absolute() or source.exists():  # the hint is for a relative path that is not there
                raise
            where = f"named by {self._source}, field 'data'; relative data paths are read from the working directory {Path.cwd()}"
            raise DataError(exc.source, exc.field, f"{exc.problem} ({where})") from None
        if not isinstance(bundle, DataBundle):  # a user's data source (plugin) returning something else
            raise ConfigError(f"{self._source}: field 'data': data source '{component.name}' returned a {type(bundle).__name__}; expected a robustmsa DataBundle")
        return bundle

    @contextlib.contextmanager
    def naming_errors(self) -> Iterator[None]:
        """Checks run against the data (a monitor the task lacks, a mode the method lacks, a one-class train split):
        their ConfigError names this config file too."""
        try:
            yield
        except ConfigError as exc:
            if str(exc).startswith(self._source):
                raise
            raise ConfigError(f"{self._source}: {exc}") from None

    def check_split_names(self, bundle: DataBundle) -> None:
        """Every split this config names (``train.valid_split``, ``eval.splits``, ``tau_split``, ``iid_test``, ...)
        must be one of ``bundle``'s: a ConfigError naming this file and the field otherwise (call it on the bundle
        as the run will use it, after splits are added or renamed)."""
        for where, name in _named_splits(self.model_dump(mode="json")):
            if name not in bundle:
                raise ConfigError(f"{self._source}: field '{where}': no split named '{name}' in data '{bundle.name}'; available: {sorted(bundle.splits)}")


#: Config keys whose values name splits of the data (besides keys ending in ``_split``).
_SPLIT_KEYS = frozenset({"splits", "iid_test", "ood_test"})


def _named_splits(node: Any, where: str = "") -> list[tuple[str, str]]:
    """``(field, split name)`` for every split a dumped config names, wherever it is nested (method parameters too)."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            field = f"{where}.{key}" if where else str(key)
            if str(key).endswith("_split") or key in _SPLIT_KEYS:
                names = value if isinstance(value, list) else [value]
                found.extend((field, name) for name in names if isinstance(name, str))
            else:
                found.extend(_named_splits(value, field))
    return found


class ExperimentConfig(PluginConfig):
    data: ComponentConfig
    backbone: BackboneComponent
    method: MethodComponent = Field(default_factory=lambda: ComponentConfig(name="supervised"))
    train: TrainSection = Field(default_factory=TrainSection)
    seeds: Seeds = Field(default_factory=lambda: [0])
    eval: EvalSection = Field(default_factory=EvalSection)


# Keep TrainSection and TrainConfig in step (a mismatch is a programming error).
assert set(TrainSection.model_fields) == {f.name for f in dataclasses.fields(TrainConfig)}, "TrainSection and TrainConfig differ"


def parse_config(data: Any, source: str = "<config>", model: type[M] = ExperimentConfig, base: Path | None = None) -> M:  # type: ignore[assignment]
    """Validate a mapping as an :class:`ExperimentConfig` (or another config ``model``; ConfigError naming source and field).

    The ``plugins`` of a :class:`PluginConfig` are imported first (``.py`` files relative to ``base``, default the
    working directory)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    if issubclass(model, PluginConfig) and "plugins" in data:
        plugins = data["plugins"]
        if not isinstance(plugins, list) or not all(isinstance(p, str) and p.strip() for p in plugins):
            raise ConfigError(f"{source}: field 'plugins': expected a list of .py files or module names, got {plugins!r}")
        try:
            data = {**data, "plugins": import_plugins(plugins, base)}
        except ConfigError as exc:
            raise ConfigError(f"{source}: field 'plugins': {exc}") from None
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # a misspelt key, not the key it lacks
        where = ".".join(str(p) for p in first["loc"]) or "<top>"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            known = _keys_at(model, first["loc"][:-1])
            close = _closest(str(first["loc"][-1]), known)
            message = f"unknown key; did you mean {' or '.join(map(repr, close))}?" if close else f"unknown key; expected one of {known}" if known else "unknown key"
        raise ConfigError(f"{source}: field '{where}': {message}") from None
    if "_source" in type(config).__private_attributes__:  # a whole file's config: PluginConfig, a search's settings
        config._source = source
    return config


def _closest(key: str, known: Sequence[str]) -> list[str]:
    """The known keys most like ``key`` (all that tie: ``epochs`` is as near ``min_epochs`` as ``max_epochs``)."""
    scores = {k: difflib.SequenceMatcher(None, key, k).ratio() for k in known}
    best = max(scores.values(), default=0.0)
    return [k for k, score in scores.items() if score == best] if best >= 0.6 else []


def _keys_at(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """The keys a config section at ``loc`` accepts (``[]`` where it is not a section of fixed keys)."""
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        sections = [a for a in (field.annotation, *typing.get_args(field.annotation)) if isinstance(a, type) and issubclass(a, BaseModel)] if field else []
        if not sections:
            return []
        model = sections[0]
    return list(model.model_fields)


def load_config(path: Path | str, model: type[M] = ExperimentConfig) -> M:  # type: ignore[assignment]
    """Read and validate a YAML experiment config (or another config ``model``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found" if not path.is_dir() else f"{path}: is a directory; expected a YAML config file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); a config is a YAML text file") from None
    data = read_yaml(text, str(path))
    if data is None:
        raise ConfigError(f"{path}: the file is empty; expected a YAML mapping (see configs/ for examples)")
    return parse_config(data, str(path), model, base=path.parent)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader, except that a key given twice in one mapping is an error (YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key '{key}' is given twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str, source: str) -> Any:
    """YAML text as Python data (safe: plain types only; a repeated key is an error); ConfigError naming ``source``,
    the line and column and the problem."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None


def dump_config(config: ExperimentConfig) -> str:
    """The config as YAML text (round-trips through :func:`parse_config`)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def parse_pairs(items: Sequence[str] | None, option: str) -> dict[str, Any]:
    """Command-line ``KEY=VALUE`` items as a dict, values parsed as YAML scalars (ConfigError naming ``option``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} expects KEY=VALUE, got '{item}'")
        if key.strip() in out:
            raise ConfigError(f"{option} gives '{key.strip()}' twice; give each key once")
        out[key.strip()] = read_yaml(value, f"{option} {key.strip()}")
    return out
