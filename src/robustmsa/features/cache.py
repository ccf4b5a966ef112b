"""A content-addressed on-disk cache of per-text token features.

Layout: ``<directory>/<chunk>.npz``; every chunk holds, for each text
key ``k``, the arrays ``k.f`` (L, D) float32 features, ``k.s`` (L,) bool
special-token mask, ``k.t`` (L,) str tokens and optionally ``k.i`` (L,)
int64 token ids. Chunks are written to a
temporary file and renamed into place, so concurrent writers never leave a
half-written file and readers never see one. A chunk's name is a hash of its
keys, so two processes that compute the same texts write the same file.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import platformdirs

from robustmsa.errors import ConfigError


def default_cache_root() -> Path:
    """The per-user cache folder of robustmsa (``platformdirs.user_cache_dir``)."""
    return Path(platformdirs.user_cache_dir("robustmsa"))


def cache_root(cache_dir: str | Path | None) -> Path:
    """The feature cache folder: ``cache_dir``, or :func:`default_cache_root`; a ConfigError when it is a file."""
    root = Path(cache_dir) if cache_dir else default_cache_root()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root}: cache_dir must be a folder; this is a file")
    return root


def content_key(*parts: str) -> str:
    """A sha256 hex digest of the given strings (NUL-separated, so parts cannot run together)."""
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


def file_digest(path: Path) -> str:
    """The sha256 hex digest of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class CachedText:
    """The cached features of one text: (L, D) float32, (L,) bool, L tokens, optional (L,) int64 token ids."""

    features: np.ndarray
    special: np.ndarray
    tokens: list[str]
    ids: np.ndarray | None = None


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a file via a temporary sibling and ``os.replace`` (readers never see partial files)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class FeatureCache:
    """Per-text feature arrays in one directory, looked up by content key; ``info`` is saved as info.json."""

    def __init__(self, directory: str | Path, info: Mapping[str, object] | None = None) -> None:
        self.dir = Path(directory)
        self.info = dict(info or {})
        self._index: dict[str, Path] = {}
        self._seen: set[Path] = set()

    def _refresh(self) -> None:
        """Index the keys of chunks written since the last refresh (also by other processes)."""
        if not self.dir.is_dir():
            return
        for chunk in sorted(self.dir.glob("*.npz")):
            if chunk in self._seen:
                continue
            try:
                with zipfile.ZipFile(chunk) as archive:
                    names = archive.namelist()
            except (zipfile.BadZipFile, OSError):
                continue  # unreadable chunk: treat its texts as misses, they are recomputed
            self._seen.add(chunk)
            for name in names:
                if name.endswith(".f.npy"):
                    self._index.setdefault(name[: -len(".f.npy")], chunk)

    def get(self, keys: Iterable[str]) -> dict[str, CachedText]:
        """The cached entries among ``keys`` (missing keys are simply absent)."""
        wanted = list(dict.fromkeys(keys))
        if any(k not in self._index for k in wanted):
            self._refresh()
        by_chunk: dict[Path, list[str]] = {}
        for key in wanted:
            if key in self._index:
                by_chunk.setdefault(self._index[key], []).append(key)
        found: dict[str, CachedText] = {}
        for chunk, chunk_keys in by_chunk.items():
            try:
                with np.load(chunk, allow_pickle=False) as data:
                    for key in chunk_keys:
                        ids = data[f"{key}.i"].astype(np.int64) if f"{key}.i" in data.files else None
                        found[key] = CachedText(data[f"{key}.f"].astype(np.float32), data[f"{key}.s"].astype(bool), [str(t) for t in data[f"{key}.t"]], ids)
            except (zipfile.BadZipFile, OSError, KeyError, ValueError):
                for key in chunk_keys:  # damaged chunk: forget it, the caller recomputes
                    self._index.pop(key, None)
        return found

    def put(self, entries: Mapping[str, CachedText]) -> None:
        """Write ``entries`` as one new chunk (atomic rename; safe with concurrent writers)."""
        if not entries:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        info_path = self.dir / "info.json"
        if self.info and not info_path.exists():
            atomic_write(info_path, lambda h: h.write(json.dumps(self.info, indent=2, sort_keys=True).encode("utf-8")))
        arrays: dict[str, np.ndarray] = {}
        for key, entry in entries.items():
            arrays[f"{key}.f"] = np.ascontiguousarray(entry.features, dtype=np.float32)
            arrays[f"{key}.s"] = np.asarray(entry.special, dtype=bool)
            arrays[f"{key}.t"] = np.array(entry.tokens, dtype=str) if entry.tokens else np.zeros(0, dtype="<U1")
            if entry.ids is not None:
                arrays[f"{key}.i"] = np.asarray(entry.ids, dtype=np.int64)
        chunk = self.dir / f"{content_key(*sorted(entries))[:32]}.npz"
        atomic_write(chunk, lambda h: np.savez(h, **arrays))
        self._seen.add(chunk)
        for key in entries:
            self._index[key] = chunk
