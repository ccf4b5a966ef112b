"""A restricted unpickler for feature pickles (MMSA ``aligned_50.pkl`` etc.).

``pickle.load`` runs arbitrary code named in the file; feature pickles from
the internet must never be loaded that way. :class:`SafeUnpickler` resolves
only the globals needed to rebuild numpy arrays and plain containers, and
refuses everything else *before* it is called, so a crafted file cannot run
code.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import pickle
from pathlib import Path
from typing import Any

from robustmsa.errors import DataError, require_file

# (module, name) pairs a numpy-array pickle needs. numpy >= 2 moved
# ``numpy.core`` to ``numpy._core``; pickles written by either are accepted.
_NUMPY_GLOBALS = {
    ("multiarray", "_reconstruct"),
    ("multiarray", "scalar"),
    ("numeric", "_frombuffer"),  # protocol-5 array pickles
}
_NUMPY_PREFIXES = ("numpy.core.", "numpy._core.")
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # bytes in protocol 0-2 pickles (a pure str -> bytes conversion)
    *(("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "str", "int", "float", "bool", "complex", "bytes")),
}


def _is_allowed(module: str, name: str) -> bool:
    if (module, name) in _ALLOWED:
        return True
    for prefix in _NUMPY_PREFIXES:
        if module.startswith(prefix) and (module[len(prefix) :], name) in _NUMPY_GLOBALS:
            return True
    return False


def _import_numpy_global(module: str, name: str) -> Any:
    """Import ``module.name``, mapping between ``numpy.core`` and ``numpy._core``."""
    for prefix in _NUMPY_PREFIXES:
        if module.startswith(prefix):
            tail = module[len(prefix) :]
            for candidate in ("numpy._core.", "numpy.core."):
                try:
                    return getattr(importlib.import_module(candidate + tail), name)
                except (ImportError, AttributeError):
                    continue
    return getattr(importlib.import_module(module), name)


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that admits only numpy arrays/dtypes/scalars and builtin containers."""

    def __init__(self, file: Any, *, source: object) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        # Python-2 names (protocol 0-2 pickles) mapped as pickle.Unpickler does; Python-3 names are never keys
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if not _is_allowed(module, name):
            raise DataError(self.source, None, f"refusing to unpickle {module}.{name}: only numpy arrays and plain containers are allowed")
        return _import_numpy_global(module, name)


def safe_load(path: str | Path) -> Any:
    """Load a pickle file with :class:`SafeUnpickler`; errors name the file."""
    path = Path(path)
    require_file(path, "a pickle file")
    try:
        with path.open("rb") as fh:
            return SafeUnpickler(fh, source=path).load()
    except DataError:
        raise
    # LookupError: an unknown codec for _codecs.encode, or a bad memo key; MemoryError / OverflowError: absurd sizes
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, LookupError, MemoryError, OverflowError) as exc:
        raise DataError(path, None, f"not a readable pickle: {type(exc).__name__}: {exc}") from None
