"""Reader of the CMU word-aligned h5 feature sets (YouTube, MMMO, POM) used by MFN.

Layout of ``<folder>/<dataset>/``: ``audio_{split}.h5`` (COVAREP), ``video_{split}.h5``
(FACET), ``text_{split}_emb.h5`` (GloVe 300-d) and ``y_{split}.h5`` for split in
train/valid/test; each file holds one dataset ``d1`` of shape (N, 20, dim) for
features. Some text files do not exist (YouTube/MMMO: no train text; POM: no
text at all): such a split gets *no* text modality (``Sample.text is None``,
never zero-filled) and is listed in ``bundle.meta['missing_text_splits']``.

Labels (checked on the published files):

* ``youtube``: one-hot over 3 classes -> classification, 3 classes.
* ``mmmo``: a rating in [1, 5] in steps of 0.5 -> regression, ``label_range`` (1, 5).
* ``pom``: 17 continuous trait scores per sample -> regression on column
  ``pom_trait`` (default 0). Columns use different scales (most reach 7,
  columns 8-13 stop at 5, and one test score is 0.67): ``label_range`` (0, 7)
  bounds them all. The files carry no trait names.

MMMO's and POM's scores have no sentiment zero: the MOSI metrics and the class
schemes refuse them (``TaskSpec.signed``) until a view shifts them (e.g.
``natural_missing_text``'s ``label_shift: 3.0`` for MMMO).

Padding: the 20 steps are zero-padded at the front (POM), at the back
(YouTube) or both (MMMO). Step t of every modality is the same word. With
``trim='edges'`` (default) the steps before the first and after the last word
where any modality is non-zero are dropped, one window per sample for all
modalities, so the word alignment is kept (zero steps inside it stay: words
with no detected face etc.); ``trim='none'`` keeps all 20 steps. A modality
that is entirely zero gets length 0 (common: e.g. most YouTube train audio and
video); counts are in ``bundle.meta['empty_sequences']``.
The files contain no sample ids; ids are ``<dataset>_<split>_<index>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from robustmsa.data.batch import Sample
from robustmsa.data.cmu_sdk import h5_child, h5_numeric, to_float32
from robustmsa.data.dataset import TEXT_CONTEXTUAL, DataBundle, MultimodalSplit, TaskSpec, check_int, check_limit, limited
from robustmsa.errors import ConfigError, DataError, require_file

CMU_DATASETS = ("youtube", "mmmo", "pom")
SPLITS = ("train", "valid", "test")
_FILES = {"audio": "audio_{}.h5", "vision": "video_{}.h5", "text": "text_{}_emb.h5"}


def _load_d1(path: Path) -> np.ndarray:
    try:
        with h5py.File(path, "r") as fh:
            node = h5_child(path, fh, "d1", "d1")
            if node is None:
                raise DataError(path, "d1", f"missing; datasets present: {list(fh)}")
            return h5_numeric(path, node, "d1")
    except OSError as exc:
        raise DataError(path, None, f"not a readable HDF5 file: {exc}") from None


def _clean(path: Path, arr: np.ndarray, nan_policy: str, counts: dict[str, int], key: str) -> np.ndarray:
    """``arr`` with NaN/inf replaced by 0 (``nan_policy='zero'``, counted in ``counts[key]``), else a DataError
    ('raise': features, with the hint of the other policy; 'labels': labels, which are never replaced)."""
    bad = ~np.isfinite(arr)
    if bad.any():
        if nan_policy != "zero":
            hint = " (pass nan_policy='zero' to replace them by 0)" if nan_policy == "raise" else "; labels must be finite"
            raise DataError(path, "d1", f"contains {int(bad.sum())} NaN/inf values{hint}")
        counts[key] = int(bad.sum())
        arr = np.where(bad, 0.0, arr)
    return arr


def _trim(seqs: dict[str, np.ndarray], trim: str) -> dict[str, np.ndarray]:
    """One sample's (T, D) sequences per modality, cut to one common window with ``trim='edges'``: from the first to
    the last step where any modality is non-zero, so step t stays the same word in every modality. A modality that is
    zero throughout gets length 0."""
    if trim == "none":
        return seqs
    used = {mod: np.any(seq != 0, axis=1) for mod, seq in seqs.items()}
    steps = np.flatnonzero(np.any(np.stack(list(used.values())), axis=0))
    window = slice(int(steps[0]), int(steps[-1]) + 1) if steps.size else slice(0, 0)
    return {mod: seq[window] if used[mod].any() else seq[:0] for mod, seq in seqs.items()}


def _labels(path: Path, y: np.ndarray, dataset: str, n: int, pom_trait: int) -> np.ndarray:
    """Class indices (youtube) or scores (mmmo, pom) of shape (n,)."""
    if y.ndim == 0:
        raise DataError(path, "d1", "is a single value; expected one label (row) per sample")
    if y.shape[0] != n:
        raise DataError(path, "d1", f"has {y.shape[0]} labels; the feature files have {n} samples")
    if dataset == "youtube":
        if y.ndim != 2 or y.shape[1] != 3:
            raise DataError(path, "d1", f"has shape {y.shape}; expected (N, 3) one-hot labels")
        if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
            raise DataError(path, "d1", "rows are not one-hot over 3 classes")
        return y.argmax(axis=1)
    if dataset == "mmmo":
        y = y.reshape(n, -1)
        if y.shape[1] != 1:
            raise DataError(path, "d1", f"has shape {y.shape}; expected one rating per sample")
        y = y[:, 0]
        bad = np.flatnonzero((y < 1) | (y > 5))
        if bad.size:
            raise DataError(path, "d1", f"{bad.size} ratings outside [1, 5], e.g. {float(y[bad[0]])}")
        return y
    if y.ndim != 2 or not 0 <= pom_trait < y.shape[1]:
        raise DataError(path, "d1", f"has shape {y.shape}; cannot take trait column {pom_trait}")
    return y[:, pom_trait]


def read_cmu_h5(
    folder: str | Path,
    dataset: Literal["youtube", "mmmo", "pom"] = "youtube",
    *,
    pom_trait: int = 0,
    nan_policy: Literal["raise", "zero"] = "raise",
    trim: Literal["edges", "none"] = "edges",
    limit: int | None = None,
) -> DataBundle:
    """Read one CMU h5 data set into a :class:`DataBundle` (see module doc).

    ``folder`` is either the collection folder holding ``youtube/``, ``mmmo/``,
    ``pom/`` or the data set's own folder. NaN/inf features raise
    :class:`DataError` unless ``nan_policy='zero'``. ``limit`` keeps a random
    N samples of each split (:func:`~robustmsa.data.dataset.limited`). Sequences: audio (La, 74|43), vision (Lv, 36|41),
    text (Lt, 300), each La/Lv/Lt <= 20.
    """
    if dataset not in CMU_DATASETS:
        raise ConfigError(f"dataset must be one of {CMU_DATASETS}, got '{dataset}'")
    if nan_policy not in ("raise", "zero"):
        raise ConfigError(f"nan_policy must be 'raise' or 'zero', got '{nan_policy}'")
    if trim not in ("edges", "none"):
        raise ConfigError(f"trim must be 'edges' or 'none', got '{trim}'")
    pom_trait = check_int(pom_trait, "pom_trait", "cmu_mfn")
    limit = check_limit(limit, "cmu_mfn")
    folder = Path(folder)
    root = folder / dataset if (folder / dataset).is_dir() else folder
    if not root.is_dir():
        raise DataError(root, None, "folder not found")
    if dataset == "youtube":
        task = TaskSpec(kind="classification", num_classes=3, label_range=None)
    else:
        task = TaskSpec(kind="regression", num_classes=1, label_range=(1.0, 5.0) if dataset == "mmmo" else (0.0, 7.0))

    meta: dict[str, Any] = {"source": str(root), "format": "cmu_h5", "missing_text_splits": [], "nonfinite_replaced": {}, "empty_sequences": {}, "trim": trim, TEXT_CONTEXTUAL: False}
    if dataset == "pom":
        meta["pom_trait"] = pom_trait
    splits: dict[str, MultimodalSplit] = {}
    widths: dict[str, int] = {}
    for split in SPLITS:
        arrays: dict[str, np.ndarray] = {}
        for mod, pattern in _FILES.items():
            path = root / pattern.format(split)
            if mod == "text" and not path.exists():
                meta["missing_text_splits"].append(split)
                continue
            require_file(path, "an HDF5 file", mod)
            arr = to_float32(path, _load_d1(path), "d1")
            if arr.ndim != 3:
                raise DataError(path, "d1", f"has shape {arr.shape}; expected (N, steps, features)")
            if arr.shape[0] == 0:
                raise DataError(path, "d1", f"has shape {arr.shape}: no samples")
            if mod in widths and arr.shape[2] != widths[mod]:
                raise DataError(path, "d1", f"has feature width {arr.shape[2]}; other splits have {widths[mod]}")
            widths[mod] = arr.shape[2]
            arrays[mod] = _clean(path, arr, nan_policy, meta["nonfinite_replaced"], f"{split}/{mod}").astype(np.float32)
        n = arrays["audio"].shape[0]
        for mod, arr in arrays.items():
            if arr.shape[:2] != arrays["audio"].shape[:2]:
                raise DataError(root / _FILES[mod].format(split), "d1", f"has shape {arr.shape}; audio has {arrays['audio'].shape[:2]} (samples, steps)")
        y_path = require_file(root / f"y_{split}.h5", "an HDF5 file", "label")
        y = _load_d1(y_path)
        y = _clean(y_path, y, "labels", meta["nonfinite_replaced"], f"{split}/y")  # never replaced
        labels = _labels(y_path, y, dataset, n, pom_trait)
        samples = []
        for i in limited(range(n), limit):
            seqs = _trim({mod: arr[i] for mod, arr in arrays.items()}, trim)
            for mod, seq in seqs.items():
                if seq.shape[0] == 0:
                    key = f"{split}/{mod}"
                    meta["empty_sequences"][key] = meta["empty_sequences"].get(key, 0) + 1
            samples.append(
                Sample(
                    id=f"{dataset}_{split}_{i}",
                    text=seqs.get("text"),
                    audio=seqs["audio"],
                    vision=seqs["vision"],
                    label=float(labels[i]) if task.kind == "regression" else None,
                    label_class=int(labels[i]) if task.kind == "classification" else None,
                )
            )
        splits[split] = MultimodalSplit(samples, name=split, source=root, task=task)
    return DataBundle(splits, task, name=dataset, meta=meta)
