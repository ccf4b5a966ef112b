"""Reader of CMU-MultimodalSDK computational sequences (``.csd`` HDF5 files).

Layout: one root group named after the sequence (e.g. ``Opinion Segment
Labels``) holding ``data/<video id>/features`` (n, k) and
``data/<video id>/intervals`` (n, 2) start/end seconds, plus ``metadata``.

Segment ids: the SDK labels file lists the opinion segments of a video in
their *row order* and the field's segment ids are ``<video>_<k>`` with ``k``
the 1-based row index. Checked on the real CMU-MOSI label file against
``transcripts_labels.csv``: all 2,195 csv ids agree with this mapping; sorting
the rows by start time instead breaks 42 of them (two videos list segments out
of time order), so the row order, not the time order, is the id order. The
label file has 2,199 segments; 4 of them have no row in the csv.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from robustmsa.errors import DataError, require_file


def h5_numeric(path: Path, node: object, field: str) -> np.ndarray:
    """The values of HDF5 dataset ``node`` (named ``field`` in errors), which must hold numbers.

    Shared by the HDF5 readers: a group, a string or compound dataset, or an
    unreadable one raises :class:`DataError` naming ``path`` and ``field``.
    """
    if not isinstance(node, h5py.Dataset):
        kind = "a group" if isinstance(node, h5py.Group) else f"a {type(node).__name__}"
        raise DataError(path, field, f"is {kind}; expected a numeric dataset")
    dtype = node.dtype
    if dtype.kind not in "biuf":
        held = "strings" if dtype.kind in "SU" or h5py.check_string_dtype(dtype) is not None else f"{dtype} values"
        raise DataError(path, field, f"holds {held}; expected numbers")
    try:
        return np.asarray(node[()])
    except OSError as exc:
        raise DataError(path, field, f"cannot be read: {exc}") from None


def to_float32(path: Path, values: np.ndarray, field: str) -> np.ndarray:
    """``values`` as float32; :class:`DataError` when finite values lie beyond the float32 range (they would become inf)."""
    if values.dtype.kind == "f" and values.dtype.itemsize > 4:
        big = np.isfinite(values) & (np.abs(values) > np.finfo(np.float32).max)
        if big.any():
            raise DataError(path, field, f"{int(big.sum())} values lie beyond the float32 range, e.g. {float(values[big][0]):g}")
    return values.astype(np.float32)


def h5_child(path: Path, group: h5py.Group, key: str, field: str) -> object | None:
    """``group[key]``, or None when ``group`` has no such name; :class:`DataError` for a link that leads nowhere."""
    if group.get(key, getlink=True) is None:
        return None
    try:
        return group[key]
    except KeyError as exc:  # a soft link to a missing object, or an external link to a missing file
        raise DataError(path, field, f"is a link to an object that cannot be opened ({exc})") from None


def _group(path: Path, node: object, field: str) -> h5py.Group:
    if not isinstance(node, h5py.Group):
        raise DataError(path, field, f"is a {type(node).__name__}; expected a group")
    return node


def _root(path: Path, fh: h5py.File) -> h5py.Group:
    roots = [g for g in (fh.get(k) for k in fh) if isinstance(g, h5py.Group) and g.get("data", getlink=True) is not None]
    if len(roots) != 1:
        raise DataError(path, "data", f"expected one root group with a 'data' group, found {[k for k in fh]}")
    return roots[0]


def read_csd(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read a ``.csd`` file: video id -> (features (n, k) float32, intervals (n, 2) float32)."""
    path = Path(path)
    require_file(path, "a .csd file")
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(path, None, f"not a readable HDF5 computational sequence: {exc}") from None
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with fh:
        data = _group(path, h5_child(path, _root(path, fh), "data", "data"), "data")
        for vid in data:
            group = _group(path, h5_child(path, data, vid, f"data/{vid}"), f"data/{vid}")
            nodes = {key: h5_child(path, group, key, f"data/{vid}/{key}") for key in ("features", "intervals")}
            for key, node in nodes.items():
                if node is None:
                    raise DataError(path, f"data/{vid}/{key}", "missing")
            feats = to_float32(path, h5_numeric(path, nodes["features"], f"data/{vid}/features"), f"data/{vid}/features")
            intervals = to_float32(path, h5_numeric(path, nodes["intervals"], f"data/{vid}/intervals"), f"data/{vid}/intervals")
            if feats.ndim != 2:
                raise DataError(path, f"data/{vid}/features", f"has shape {feats.shape}; expected (n, k)")
            if intervals.shape != (feats.shape[0], 2):
                raise DataError(path, f"data/{vid}/intervals", f"has shape {intervals.shape}; expected ({feats.shape[0]}, 2)")
            if not np.isfinite(intervals).all():
                raise DataError(path, f"data/{vid}/intervals", "contains NaN or inf times")
            out[vid] = (feats, intervals)
    if not out:
        raise DataError(path, "data", "contains no videos")
    return out


def csd_segment_labels(path: str | Path) -> dict[str, float]:
    """Segment labels of a one-dimensional ``.csd`` label file: ``'<video>_<k>'`` -> score.

    ``k`` is the 1-based row index of the segment within its video (see the
    module doc for why row order, not time order).
    """
    labels: dict[str, float] = {}
    for vid, (feats, _) in read_csd(path).items():
        if feats.shape[1] != 1:
            raise DataError(path, f"data/{vid}/features", f"has {feats.shape[1]} columns; a label file has one")
        if not np.isfinite(feats).all():
            raise DataError(path, f"data/{vid}/features", "contains NaN or inf labels")
        for k, value in enumerate(feats[:, 0], start=1):
            labels[f"{vid}_{k}"] = float(value)
    return labels
