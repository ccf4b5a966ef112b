"""Registries: lookup, errors and double registration."""

from __future__ import annotations

import pytest

from robustmsa.errors import ConfigError
from robustmsa.registry import BACKBONES, METHODS, Registry


def test_builtins_are_registered() -> None:
    assert {"text_only", "lf_dnn", "tfn"} <= set(BACKBONES.names())
    assert "supervised" in METHODS


def test_unknown_name_lists_available() -> None:
    with pytest.raises(ConfigError, match="unknown backbone 'nope'; available: .*lf_dnn"):
        BACKBONES.get("nope")


def test_bad_parameters_are_config_errors(toy_bundle) -> None:
    with pytest.raises(ConfigError, match="backbone 'tfn'.*no_such_param.*parameters: .*hidden"):
        BACKBONES.build("tfn", toy_bundle.dims(), toy_bundle.task, no_such_param=1)


def test_errors_inside_a_factory_are_not_relabelled() -> None:
    registry: Registry = Registry("thing")

    @registry.register("broken")
    def broken(x: int) -> None:
        raise TypeError("a bug inside the factory")

    with pytest.raises(TypeError, match="a bug inside"):
        registry.build("broken", 1)
    with pytest.raises(ConfigError, match="thing 'broken'.*parameters: x"):
        registry.build("broken", 1, 2)


def test_double_registration_is_refused() -> None:
    registry: Registry = Registry("thing")
    registry.register("a")(int)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("A")(float)
