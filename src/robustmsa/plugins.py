"""User components for configs and the command line: modules imported before a config is read.

A config's ``plugins:`` list names Python modules that register a user's own backbones, methods or data sources
(``@BACKBONES.register("my_net")``), so that the rest of the same config can name them::

    plugins: [my_models.py]          # a file, relative to the config file's folder (or absolute)
    backbone: {name: my_net, params: {hidden: 32}}

An entry is a ``.py`` file or an importable dotted module name (``my_package.models``). A file is imported under a
module name derived from its absolute path, so importing it again (a second config, ``robustmsa evaluate`` on the
run) re-registers the same definitions instead of clashing. Files are recorded by absolute path, so a run folder's
``config.yaml`` finds them from anywhere.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from robustmsa.errors import ConfigError
from robustmsa.registry import load_builtins

_PREFIX = "robustmsa_plugin_"


def _module_name(path: Path) -> str:
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"{_PREFIX}{stem}_{digest}"


def loaded_plugin_files() -> list[Path]:
    """The plugin files imported in this process (by :func:`import_file`), for processes that must import them too."""
    return [Path(module.__file__) for name, module in list(sys.modules.items()) if name.startswith(_PREFIX) and getattr(module, "__file__", None)]


def import_file(path: Path) -> str:
    """Import the Python file ``path`` (absolute) as a module; its module name."""
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses, pickling and deepcopy look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return name


def import_plugins(entries: Sequence[str], base: Path | None = None) -> list[str]:
    """Import each entry (see the module docstring); returns them normalised (files as absolute paths).

    A missing file or module, a file that is not valid Python and a name registered twice are ConfigErrors naming the
    entry. Errors raised when the plugin's own code runs pass through with their traceback: they are bugs in that
    code, not in the config. The built-in components are registered first, so that a plugin re-using one of their
    names is the one refused."""
    load_builtins()
    resolved = []
    for entry in entries:
        if entry.endswith(".py"):
            path = Path(entry).expanduser()
            path = (path if path.is_absolute() else (base or Path.cwd()) / path).resolve()
            if not path.is_file():
                raise ConfigError(f"plugin file {path} not found")
            try:
                import_file(path)
            except SyntaxError as exc:
                raise ConfigError(f"plugin file {path}, line {exc.lineno}: {exc.msg} (not valid Python)") from None
            resolved.append(str(path))
            continue
        try:
            importlib.import_module(entry)
        except ModuleNotFoundError as exc:
            if exc.name is None or not entry.startswith(exc.name):
                raise  # the plugin itself imports something missing: its own error
            raise ConfigError(f"plugin module '{entry}' not found ({exc}); give a .py file or put the module on PYTHONPATH") from None
        resolved.append(entry)
    return resolved
