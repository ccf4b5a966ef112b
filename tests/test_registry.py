"""Registries: lookup, errors and double registration."""

from __future__ import annotations

import datetime
import re

import pytest

from robustmsa.errors import ConfigError
from robustmsa.registry import BACKBONES, DATASETS, METHODS, Registry, check_parameters


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
    with pytest.raises(ConfigError, match="thing 'broken': takes 1 positional argument"):
        registry.build("broken", 1, 2)


def test_double_registration_is_refused_but_a_rerun_definition_replaces_itself() -> None:
    registry: Registry = Registry("thing")
    registry.register("a")(int)
    with pytest.raises(ConfigError, match="thing 'a' is registered twice: by builtins.int and by builtins.float; give the second another name"):
        registry.register("A")(float)

    def define(value: int):  # the same cell of a notebook run twice: a new class of the same module and name
        class Cell:
            answer = value

        return registry.register("cell")(Cell)

    define(1)
    assert registry.get("cell").answer == 1
    define(2)
    assert registry.get("cell").answer == 2


class _Base:
    def __init__(self, *, shared: int = 0) -> None:
        self.shared = shared


class _Child(_Base):
    def __init__(self, needed: int, *, own: int = 1, **base: int) -> None:
        super().__init__(**base)


def test_parameters_passed_on_to_a_base_class_or_a_forwarded_callable_are_accepted_and_others_refused() -> None:
    registry: Registry = Registry("thing")
    registry.register("child")(_Child)
    registry.check("child", {"own": 2, "shared": 3}, supplied=1)
    assert registry.build("child", 1, shared=3).shared == 3
    with pytest.raises(ConfigError, match=r"thing 'child': unknown parameter\(s\) 'shraed' \(parameters: own, shared\)"):
        registry.check("child", {"shraed": 3}, supplied=1)
    with pytest.raises(ConfigError, match=r"missing required parameter\(s\) 'needed'"):
        registry.check("child", {})

    def reader(path: str, limit: int | None = None) -> str:
        return path

    @registry.register("wrapped", forwards=reader)
    def wrapped(path: str, **kwargs: int) -> str:
        return reader(path, **kwargs)

    @registry.register("open")
    def open_ended(**kwargs: int) -> dict:
        return kwargs

    registry.check("wrapped", {"path": "p", "limit": 2})
    with pytest.raises(ConfigError, match="unknown parameter.*'limt'"):
        registry.build("wrapped", path="p", limt=2)
    assert registry.build("open", anything=1) == {"anything": 1}


def test_data_source_parameters_are_checked_before_reading(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"dataset 'mosi_csv': unknown parameter\(s\) 'text_encodr' \(parameters: path, text_encoder"):
        DATASETS.build("mosi_csv", path=tmp_path / "absent.csv", text_encodr="hash")
    with pytest.raises(ConfigError, match="dataset 'synthetic': unknown parameter.*'n_trian'"):
        DATASETS.build("synthetic", n_trian=10)
    with pytest.raises(ConfigError, match=r"method 'lnln': unknown parameter\(s\) 'w_tsk'"):
        METHODS.check("lnln", {"w_tsk": 1.0, "complete_share": 0.2}, supplied=1)
    # a path YAML reads as something else (a folder named 2024, a date, null): named, with the remedy
    for value in (2024, datetime.date(2024, 5, 1), None, {"a": "b.pkl"}):
        hint = """(a name YAML reads as a number, date, boolean or null goes in quotes: "2024"; on the command line '--param KEY="2024"')"""
        with pytest.raises(ConfigError, match=r"dataset 'clips': 'media' is .*; expected str or a path " + re.escape(hint)):
            DATASETS.build("clips", labels="labels.csv", media=value)


def test_parameters_of_a_part_the_factory_builds_are_checked_too() -> None:
    class Part:
        def __init__(self, width: int, *, depth: int = 1) -> None:
            self.width, self.depth = width, depth

    class Whole:
        nested_parameters = {"part": (Part, 1)}

        def __init__(self, part: dict | None = None, scale: float = 1.0) -> None:
            self.part = Part(3, **(part or {}))

    check_parameters(Whole, {"part": {"depth": 2}, "scale": 2.0}, 0, "whole")
    with pytest.raises(ConfigError, match=r"whole: 'part': unknown parameter\(s\) 'dpth' \(parameters: depth\)"):
        check_parameters(Whole, {"part": {"dpth": 2}}, 0, "whole")
    check_parameters(Whole, {"part": None}, 0, "whole")  # not a mapping: nothing nested to check


def test_value_fits_plain_annotations_and_lets_classes_through() -> None:
    from collections.abc import Mapping as MappingABC
    from collections.abc import Sequence
    from typing import Any, Literal

    from robustmsa.registry import value_fits

    assert value_fits(3, int) and not value_fits(True, int) and not value_fits(3.5, int) and not value_fits("3", int)
    assert value_fits(3, float) and not value_fits("0.1", float) and value_fits(None, float | None)
    assert value_fits([0.0, 1], tuple[float, float]) and not value_fits([0.0], tuple[float, float]) and value_fits([1, 2, 3], Sequence[int])
    assert not value_fits("text", Sequence[str]) and value_fits(["text"], list[str]) and value_fits([], tuple[str, ...])
    assert value_fits("sum", Literal["sum", "hm"]) and not value_fits("avg", Literal["sum", "hm"])
    assert value_fits({"a": 1}, MappingABC[str, Any] | None) and not value_fits([1, 2], MappingABC[str, Any] | None)
    assert value_fits("anything", Registry) and value_fits(object(), Registry | str)  # classes are not judged


def test_a_torch_layer_refusing_a_value_is_a_config_error_naming_the_component() -> None:
    from robustmsa.data.dataset import TaskSpec
    from robustmsa.registry import BACKBONES

    dims = {"text": 8, "audio": 4, "vision": 3}
    with pytest.raises(ConfigError, match=r"backbone 'lf_dnn': a parameter value is out of range \(dropout probability has to be between 0 and 1, but got 1.5\)"):
        BACKBONES.build("lf_dnn", dims, TaskSpec(), dropout=1.5)
    with pytest.raises(ConfigError, match="backbone 'lf_dnn': a parameter value is out of range"):
        BACKBONES.build("lf_dnn", dims, TaskSpec(), hidden=0)
    # a negative width: torch fails inside the layer (RuntimeError); the values <= 0 are named
    with pytest.raises(ConfigError, match=r"backbone 'tfn': a parameter value is out of range \(.*negative dimension -8.*\); values <= 0 given: hidden=-8$"):
        BACKBONES.build("tfn", dims, TaskSpec(), hidden=-8)
    # a width of 0: torch builds an empty layer (a constant predictor), refused after the build
    with pytest.raises(ConfigError, match=r"backbone 'tfn': its weight '.*' is empty, a layer of width 0; values <= 0 given: hidden=0, av_hidden=0"):
        BACKBONES.build("tfn", dims, TaskSpec(), hidden=0, av_hidden=0, text_hidden=4)
    BACKBONES.build("tfn", dims, TaskSpec(), hidden=1, av_hidden=1, text_hidden=1)


def test_values_at_most_zero_are_listed_with_their_nested_keys() -> None:
    from robustmsa.registry import _at_most_zero

    assert _at_most_zero({"a": 1, "b": 0, "c": {"d": -2, "e": True, "f": -0.5}, "g": "x"}) == "; values <= 0 given: b=0, c.d=-2"
    assert _at_most_zero({"a": 1, "b": False}) == ""
