"""Reader and writer of MMSA feature pickles (MOSI/MOSEI/SIMS ``aligned_50.pkl``, ``unaligned_50.pkl``).

Layout (what the MMSA toolkit publishes): a dict ``{'train': S, 'valid': S, 'test': S}``
where each ``S`` is a dict of arrays over the N samples of the split:

* ``id`` (N,) str (MMSA uses ``<video>$_$<clip>``), ``raw_text`` (N,) str
* ``text`` (N, L, Dt) float token features (GloVe 300 or BERT 768), and/or
  ``text_bert`` (N, 3, L): rows token ids, attention mask, segment ids
* ``audio`` (N, La, Da), ``vision`` (N, Lv, Dv) float; ``audio_lengths``,
  ``vision_lengths`` (N,) true lengths (unaligned files)
* ``regression_labels`` (N,) float; ``classification_labels`` (ignored here).
* ``regression_labels_T``, ``regression_labels_A``, ``regression_labels_V`` (N,) float (CH-SIMS only): the unimodal
  labels of text, audio and vision, on the label scale of ``regression_labels``. Read when a file has them (all
  three in every split, or none anywhere) into ``Sample.extras`` under :data:`UNIMODAL_LABELS` (``label_text``,
  ``label_audio``, ``label_vision``: float32 arrays of shape (), so ``batch.extras[...]`` is (B,)); the multi-task
  backbones (``mlf_dnn``, ``mtfn``, ``mlmf``) train on them. :func:`write_mmsa_pickle` writes them back when every
  sample has them.
  A file of new data to predict on (``robustmsa extract-features`` of clips
  without labels) has no ``regression_labels`` in any split; its splits are read
  as unlabelled. Any splits are read (training needs train and valid, evaluating
  other data only its test split).
* ``features_made_with`` (files written here): how the features were made, as
  JSON text (text encoder, contextual text, the clip extractor's settings); read
  back into ``bundle.meta``, so that a model is not applied to features made
  another way.

The file is loaded with :mod:`robustmsa.data.safe_pickle` (no code runs).
Cleaning: ``-inf`` values (a known artefact of COVAREP audio features in the
published files) are replaced by 0 exactly as MMSA does, and the count is
recorded in ``bundle.meta['neg_inf_replaced']``; NaN and ``+inf`` raise
:class:`DataError`.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from robustmsa.data.batch import Sample
from robustmsa.data.dataset import ASSUMED, TEXT_CONTEXTUAL, DataBundle, MultimodalSplit, TaskSpec, check_int, check_limit, default_metric_set, features_made_with, limited
from robustmsa.data.safe_pickle import safe_load
from robustmsa.errors import ConfigError, DataError
from robustmsa.features.cache import atomic_write

_MMSA_ID_SEP = "$_$"

#: CH-SIMS's unimodal labels: modality -> (field of the MMSA pickle, key of ``Sample.extras`` / ``batch.extras``).
UNIMODAL_LABELS: dict[str, tuple[str, str]] = {
    "text": ("regression_labels_T", "label_text"),
    "audio": ("regression_labels_A", "label_audio"),
    "vision": ("regression_labels_V", "label_vision"),
}


def read_mmsa_pickle(
    path: str | Path,
    *,
    text_field: Literal["auto", "text", "text_bert"] = "auto",
    max_text_len: int | None = None,
    label_range: tuple[float, float] | Literal["auto"] | None = "auto",
    limit: int | None = None,
    metric_set: Literal["auto", "mosi", "sims"] = "auto",
    text_contextual: bool | None = None,
) -> DataBundle:
    """Read an MMSA pickle into a regression :class:`DataBundle`.

    ``text_field='text'`` uses the float ``text`` features as ``Sample.text``;
    ``'text_bert'`` uses the (L, 3) rows [id, mask, segment] of ``text_bert`` as
    ``Sample.text`` (what MMSA's BERT models consume); ``'auto'`` picks ``text``
    when present. Whenever ``text_bert`` exists its mask gives the true text
    length, its ids fill ``Sample.text_ids`` and the first/last real tokens
    ([CLS]/[SEP]) are marked in ``Sample.text_special``; otherwise trailing
    all-zero rows of ``text`` are padding. Audio/vision lengths come from
    ``*_lengths`` (clipped to the array length); without them an aligned
    modality (same length as text) takes the text lengths, else its full length.
    Labels must lie in ``label_range``: MOSI/MOSEI (-3, 3), CH-SIMS (-1, 1); ``auto``: the range a file written by
    :func:`write_mmsa_pickle` records, else (-1, 1) for a pickle in CH-SIMS's layout (unimodal labels
    ``regression_labels_T`` beside ``regression_labels``), else (-3, 3).
    ``metric_set``: MMSA's metrics for ``mosi`` (MOSI / MOSEI) or ``sims`` (CH-SIMS); ``auto``: ``sims`` when
    ``label_range`` is (-1, 1), else ``mosi`` (see :mod:`robustmsa.metrics`).
    Splits other than train/valid/test (e.g. ``test_ood``) are read as well.
    ``text_contextual``: whether each token feature depends on the whole sentence (what missing-rate sweeps refuse);
    default: what a file written by :func:`write_mmsa_pickle` records (e.g. false for ``robustmsa extract-features``
    with static word vectors), else true for float ``text`` features (MMSA's are BERT's), false for ``text_bert``.
    """
    if text_field not in ("auto", "text", "text_bert"):
        raise ConfigError(f"text_field must be 'auto', 'text' or 'text_bert', got '{text_field}'")
    if max_text_len is not None and check_int(max_text_len, "max_text_len", "mmsa") < 1:
        raise ConfigError(f"mmsa: 'max_text_len' must be >= 1 (it counts the [CLS] and [SEP] tokens), got {max_text_len}")
    auto_range = isinstance(label_range, str) and label_range == "auto"
    label_range = None if auto_range else _label_range(label_range)
    if metric_set not in ("auto", "mosi", "sims"):
        raise ConfigError(f"mmsa: 'metric_set' must be 'auto', 'mosi' or 'sims', got {metric_set!r}")
    limit = check_limit(limit, "mmsa")
    path = Path(path)
    data = safe_load(path)
    if not isinstance(data, Mapping):
        raise DataError(path, None, f"expected a dict of splits, got {type(data).__name__}")
    labelled = _labelled(path, data)
    _unimodal_labelled(path, data, labelled)
    if len({str(name) for name in data}) < len(data):
        raise DataError(path, "split", f"two splits have the same name once read as text: {sorted(map(repr, data))}")
    first = data["train"] if "train" in data else next(iter(data.values()))
    made_with = _made_with(path, data)
    recorded_range = made_with.get("extraction", {}).get("settings", {}).get("label_range")
    if auto_range and recorded_range is not None:  # the scale the labels were declared on when the file was written
        label_range = _label_range(recorded_range)
    elif auto_range:  # CH-SIMS carries unimodal labels; scoring it on MOSI's scale would be meaningless
        label_range = (-1.0, 1.0) if isinstance(first, Mapping) and "regression_labels_T" in first else (-3.0, 3.0)
    if metric_set == "auto":
        metric_set = default_metric_set(label_range)
    task = TaskSpec(kind="regression", num_classes=1, label_range=label_range, metric_set=metric_set)
    meta: dict[str, Any] = {"source": str(path), "format": "mmsa", "neg_inf_replaced": {}}
    splits = {}
    for name, raw in data.items():
        if not isinstance(raw, Mapping):
            raise DataError(path, str(name), f"split must be a dict of arrays, got {type(raw).__name__}")
        samples, stats = _read_split(path, str(name), raw, text_field, max_text_len, label_range, limit)
        meta["neg_inf_replaced"].update(stats)
        splits[str(name)] = MultimodalSplit(samples, name=str(name), source=path, task=task, labelled=labelled)
    float_text = text_field == "text" or (text_field == "auto" and "text" in first)
    # how the file's features were made; its contextual-text flag is about the float text features
    meta.update({key: value for key, value in made_with.items() if key != TEXT_CONTEXTUAL or float_text})
    if text_contextual is not None:
        if not isinstance(text_contextual, bool):
            raise ConfigError(f"mmsa: 'text_contextual' must be true or false, got {text_contextual!r}")
        meta[TEXT_CONTEXTUAL] = text_contextual
    elif float_text and TEXT_CONTEXTUAL not in meta:
        meta[TEXT_CONTEXTUAL] = True
        meta[ASSUMED] = {TEXT_CONTEXTUAL: "the file does not record it; MMSA's released 'text' features are BERT hidden states: give the data parameter text_contextual=false if these are not"}
    return DataBundle(splits, task, name=path.stem, meta=meta)


#: Key of every split of a file written by :func:`write_mmsa_pickle`: how its features were made (JSON text), so that
#: a model is not applied to features made otherwise (MMSA's own files lack it; MMSA ignores it).
MADE_WITH = "features_made_with"


def _made_with(path: Path, data: Mapping[Any, Any]) -> dict[str, Any]:
    """The :data:`MADE_WITH` record of a file (``{}`` without one); DataError when it is unreadable or differs between splits."""
    records = [raw.get(MADE_WITH) if isinstance(raw, Mapping) else None for raw in data.values()]
    if any(not isinstance(record, str | None) or record != records[0] for record in records):
        raise DataError(path, MADE_WITH, "differs between splits, is missing in some, or is not text: the splits were not written together by write_mmsa_pickle")
    if records[0] is None:
        return {}
    try:
        made = json.loads(records[0])
    except json.JSONDecodeError:
        made = None
    extraction = made.get("extraction", {}) if isinstance(made, dict) else None
    if (
        not isinstance(extraction, dict)
        or not isinstance(extraction.get("settings", {}), dict)
        or not isinstance(made.get(TEXT_CONTEXTUAL, False), bool)
        or not isinstance(made.get("text_encoder", ""), str)
    ):
        raise DataError(path, MADE_WITH, f"is not the JSON record write_mmsa_pickle writes: {records[0][:80]!r}")
    if "label_range" in extraction.get("settings", {}):
        try:
            _label_range(extraction["settings"]["label_range"])
        except ConfigError as exc:
            raise DataError(path, f"{MADE_WITH}.label_range", str(exc).split(": ", 1)[-1]) from None
    return made


def _labelled(path: Path, data: Mapping[Any, Any]) -> bool:
    """Whether the file holds labels: in every split (training data), or in none (new data to predict on)."""
    if not data:
        raise DataError(path, None, "holds no split; expected a dict such as {'train': ..., 'valid': ..., 'test': ...}")
    has = {str(name): isinstance(raw, Mapping) and "regression_labels" in raw for name, raw in data.items()}
    if len(set(has.values())) > 1:
        without = next(name for name, on in has.items() if not on)
        raise DataError(f"{path} [{without}]", "regression_labels", f"missing; splits {sorted(n for n, on in has.items() if on)} have labels (a file is labelled in every split or in none)")
    return next(iter(has.values()))


def _unimodal_labelled(path: Path, data: Mapping[Any, Any], labelled: bool) -> bool:
    """Whether the file holds CH-SIMS's unimodal labels: all three in every split, or none in any (DataError otherwise)."""
    fields = [field for field, _ in UNIMODAL_LABELS.values()]
    has = {str(name): [isinstance(raw, Mapping) and field in raw for field in fields] for name, raw in data.items()}
    for name, present in has.items():
        if any(present) and not all(present):
            lacking = next(field for field, on in zip(fields, present) if not on)
            raise DataError(f"{path} [{name}]", lacking, f"missing; a split holds all of {fields} (CH-SIMS's unimodal labels) or none")
    if len({all(present) for present in has.values()}) > 1:
        without = next(name for name, present in has.items() if not all(present))
        raise DataError(f"{path} [{without}]", fields[0], f"missing; splits {sorted(n for n, p in has.items() if all(p))} have unimodal labels (a file has them in every split or in none)")
    unimodal = all(next(iter(has.values())))
    if unimodal and not labelled:
        raise DataError(path, fields[0], "unimodal labels without 'regression_labels': a file of new data to predict on holds no labels")
    return unimodal


def _label_range(value: object) -> tuple[float, float] | None:
    """``label_range`` as two finite floats ``lo < hi`` (or None); :class:`ConfigError` otherwise."""
    if value is None:
        return None
    numbers = isinstance(value, tuple | list) and len(value) == 2 and all(isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in value)
    if not numbers or not np.isfinite(value).all() or not value[0] < value[1]:  # type: ignore[index, arg-type]
        raise ConfigError(f"mmsa: 'label_range' must be two numbers [low, high] with low < high, or null; got {value!r}")
    return float(value[0]), float(value[1])  # type: ignore[index]


def _array(where: str, raw: Mapping[str, Any], key: str, ndim: int, n: int | None, dtype: type = np.float32, squeeze: bool = False) -> np.ndarray:
    """``raw[key]`` as an array of ``ndim`` dimensions and ``n`` rows (``squeeze`` drops a trailing axis of size 1)."""
    if key not in raw:
        raise DataError(where, key, f"missing; keys present: {sorted(map(str, raw))}")
    try:
        arr = np.asarray(raw[key], dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise DataError(where, key, f"cannot be read as {np.dtype(dtype).name} array: {exc}") from None
    if squeeze and arr.ndim == ndim + 1 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != ndim:
        raise DataError(where, key, f"has shape {arr.shape}; expected {ndim} dimensions")
    if n is not None and arr.shape[0] != n:
        raise DataError(where, key, f"has {arr.shape[0]} rows; expected {n} (one per sample)")
    return arr


def _clean(where: str, key: str, arr: np.ndarray, stats: dict[str, int], split: str) -> np.ndarray:
    """Replace -inf by 0 (counted); raise on NaN or +inf."""
    if np.isnan(arr).any():
        raise DataError(where, key, f"contains {int(np.isnan(arr).sum())} NaN values")
    if np.isposinf(arr).any():
        raise DataError(where, key, f"contains {int(np.isposinf(arr).sum())} +inf values")
    neg = np.isneginf(arr)
    if neg.any():
        arr = np.where(neg, 0.0, arr).astype(arr.dtype)
        stats[f"{split}/{key}"] = int(neg.sum())
    return arr


def _whole(where: str, key: str, values: np.ndarray, what: str) -> np.ndarray:
    """Float ``values`` as int64; :class:`DataError` naming ``key`` for NaN/inf, fractional or negative values (``what`` names them)."""
    bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)) | (values < 0))
    if bad.size:
        raise DataError(where, key, f"{bad.size} {what} are not whole numbers >= 0, e.g. {float(values.reshape(-1)[bad[0]])}")
    return values.astype(np.int64)


def _lengths(where: str, raw: Mapping[str, Any], key: str, n: int, max_len: int) -> np.ndarray:
    lengths = _whole(where, key, _array(where, raw, key, 1, n, dtype=np.float64), "lengths")
    return np.minimum(lengths, max_len)


def _bert_text_lengths(where: str, bert: np.ndarray) -> np.ndarray:
    """Text lengths from the attention mask of ``text_bert`` (N, 3, L), which must be a run of 1s then 0s; token ids must be whole numbers."""
    mask = bert[:, 1, :]
    if not np.isin(mask, (0, 1)).all():
        raise DataError(where, "text_bert", f"attention mask (row 1) holds {mask[~np.isin(mask, (0, 1))][0]}; expected only 0 and 1")
    lengths = mask.sum(axis=1).astype(np.int64)
    holes = np.flatnonzero((mask != (np.arange(mask.shape[1]) < lengths[:, None])).any(axis=1))
    if holes.size:
        raise DataError(where, "text_bert", f"attention mask (row 1) of sample {holes[0]} is not a run of 1s followed by 0s (padding)")
    _whole(where, "text_bert", bert[:, 0, :], "token ids (row 0)")
    return lengths


def _strings(where: str, values: np.ndarray, key: str, *, allow_empty: bool) -> list[str]:
    """The entries of ``values`` as strings (numpy strings accepted); :class:`DataError` naming ``key`` and the row otherwise."""
    out = []
    for i, value in enumerate(values):
        if not isinstance(value, str) or not (allow_empty or value.strip()):
            raise DataError(where, key, f"row {i} holds {value!r}; expected a {'' if allow_empty else 'non-empty '}string")
        out.append(str(value))
    return out


def _group_of(sample_id: str) -> str:
    if _MMSA_ID_SEP in sample_id:
        return sample_id.split(_MMSA_ID_SEP)[0]
    return sample_id.rsplit("_", 1)[0] if "_" in sample_id else sample_id


def _read_split(
    path: Path,
    split: str,
    raw: Mapping[str, Any],
    text_field: str,
    max_text_len: int | None,
    label_range: tuple[float, float] | None,
    limit: int | None,
) -> tuple[list[Sample], dict[str, int]]:
    where = f"{path} [{split}]"
    stats: dict[str, int] = {}
    ids = _strings(where, _array(where, raw, "id", 1, None, dtype=object), "id", allow_empty=False)
    n = len(ids)
    labels = _array(where, raw, "regression_labels", 1, n, squeeze=True) if "regression_labels" in raw else None  # None: new data
    if labels is not None and not np.isfinite(labels).all():
        raise DataError(where, "regression_labels", f"contains {int((~np.isfinite(labels)).sum())} NaN/inf values")
    if labels is not None and label_range is not None:
        lo, hi = label_range
        bad = np.flatnonzero((labels < lo) | (labels > hi))
        if bad.size:
            raise DataError(where, "regression_labels", f"{bad.size} labels outside [{lo}, {hi}], e.g. {float(labels[bad[0]])} for id '{ids[bad[0]]}'")
    unimodal = {key: _unimodal_label(where, raw, field, n, ids, label_range) for field, key in UNIMODAL_LABELS.values() if field in raw}

    bert = _array(where, raw, "text_bert", 3, n) if "text_bert" in raw else None
    if bert is not None and bert.shape[1] != 3:
        raise DataError(where, "text_bert", f"has shape {bert.shape}; expected (N, 3, L) rows ids/mask/segment")
    field = text_field if text_field != "auto" else ("text" if "text" in raw else "text_bert")
    if field == "text":
        text = _clean(where, "text", _array(where, raw, "text", 3, n), stats, split)
    else:
        if bert is None:
            raise DataError(where, "text_bert", f"missing; keys present: {sorted(raw)}")
        text = np.transpose(bert, (0, 2, 1)).copy()
    if bert is not None:
        if bert.shape[2] != text.shape[1]:
            raise DataError(where, "text_bert", f"length {bert.shape[2]} differs from text length {text.shape[1]}")
        text_len = _bert_text_lengths(where, bert)
    else:
        nonzero = np.any(text != 0, axis=2)
        text_len = np.where(nonzero.any(axis=1), text.shape[1] - np.argmax(nonzero[:, ::-1], axis=1), 0)

    seqs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for mod in ("audio", "vision"):
        arr = _clean(where, mod, _array(where, raw, mod, 3, n), stats, split)
        if f"{mod}_lengths" in raw:
            lengths = _lengths(where, raw, f"{mod}_lengths", n, arr.shape[1])
        elif arr.shape[1] == text.shape[1]:
            lengths = text_len.copy()
        else:
            lengths = np.full(n, arr.shape[1], dtype=np.int64)
        seqs[mod] = (arr, lengths)

    raw_text = _strings(where, _array(where, raw, "raw_text", 1, n, dtype=object), "raw_text", allow_empty=True) if "raw_text" in raw else None
    samples = []
    for i in limited(range(n), limit):
        length = int(text_len[i])
        special = None
        ids_row = None
        if bert is not None:
            ids_row = bert[i, 0, :length].astype(np.int64)
            special = np.zeros(length, dtype=bool)
            if length:
                special[[0, length - 1]] = True
        t = text[i, :length]
        if max_text_len is not None:
            t = t[:max_text_len]
            special = None if special is None else special[:max_text_len]
            ids_row = None if ids_row is None else ids_row[:max_text_len]
        sid = ids[i]
        samples.append(
            Sample(
                id=sid,
                group=_group_of(sid),
                raw_text=None if raw_text is None else raw_text[i],
                text=np.ascontiguousarray(t, dtype=np.float32),
                text_special=special,
                text_ids=ids_row,
                audio=np.ascontiguousarray(seqs["audio"][0][i, : seqs["audio"][1][i]], dtype=np.float32),
                vision=np.ascontiguousarray(seqs["vision"][0][i, : seqs["vision"][1][i]], dtype=np.float32),
                label=None if labels is None else float(labels[i]),
                extras={key: np.asarray(values[i], dtype=np.float32) for key, values in unimodal.items()},
            )
        )
    return samples, stats


def _unimodal_label(where: str, raw: Mapping[str, Any], field: str, n: int, ids: list[str], label_range: tuple[float, float] | None) -> np.ndarray:
    """A unimodal label field (N,), checked like ``regression_labels``: finite and inside ``label_range``."""
    values = _array(where, raw, field, 1, n, squeeze=True)
    if not np.isfinite(values).all():
        raise DataError(where, field, f"contains {int((~np.isfinite(values)).sum())} NaN/inf values")
    if label_range is not None:
        lo, hi = label_range
        bad = np.flatnonzero((values < lo) | (values > hi))
        if bad.size:
            raise DataError(where, field, f"{bad.size} labels outside [{lo}, {hi}], e.g. {float(values[bad[0]])} for id '{ids[bad[0]]}'")
    return values


def _pad_stack(arrays: list[np.ndarray], dtype: type) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([a.shape[0] for a in arrays], dtype=np.int64)
    out = np.zeros((len(arrays), max(1, int(lengths.max())), *arrays[0].shape[1:]), dtype=dtype)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
    return out, lengths


def write_mmsa_pickle(bundle: DataBundle, path: str | Path) -> None:
    """Write a regression bundle in the MMSA pickle layout (see module doc).

    Every split of the bundle is written (train/valid/test, e.g. ``test_ood``,
    or only those a bundle of evaluation data has; unlabelled splits without labels). Text features are zero-padded to the split's maximum length;
    ``text_bert`` (ids, mask, zero segment ids) is written only when every
    sample has ``text_ids``. Audio/vision are zero-padded with
    ``*_lengths``; a missing ``raw_text`` is written as ``''``. ``text_special`` is not part of the format: on reading it
    is rebuilt from ``text_bert`` (first/last real token) or left empty. How the features were made
    (:func:`~robustmsa.data.dataset.features_made_with`) goes to every split's :data:`MADE_WITH`, which :func:`read_mmsa_pickle` puts back
    into the bundle's meta (and its ``label_range`` is the file's default scale). CH-SIMS's unimodal labels
    (``regression_labels_T/A/V`` from the extras :data:`UNIMODAL_LABELS`) are written when every sample of every
    labelled split has all three; a bundle that has them only in part is refused (the file would be unreadable).
    """
    path = Path(path)
    if bundle.task.kind != "regression":
        raise DataError(path, "regression_labels", f"the MMSA format stores regression labels; bundle '{bundle.name}' is {bundle.task.kind}")
    labelled = {split.labelled for split in bundle.splits.values()}
    if len(labelled) > 1:
        raise DataError(path, "regression_labels", f"bundle '{bundle.name}' mixes labelled and unlabelled splits; a file is labelled in every split or in none")
    unimodal = _unimodal_to_write(path, bundle)
    out: dict[str, dict[str, Any]] = {}
    made_with = features_made_with(bundle.meta)
    for name, split in bundle.splits.items():
        samples = split.samples
        for field in ("text", "audio", "vision"):
            if any(getattr(s, field) is None for s in samples):
                raise DataError(path, field, f"split '{name}' of bundle '{bundle.name}' has samples without {field}; the MMSA format needs it")
        entry: dict[str, Any] = {
            "id": np.array([s.id for s in samples], dtype=object),
            "raw_text": np.array([s.raw_text or "" for s in samples], dtype=object),
        }
        if split.labelled:
            entry["regression_labels"] = np.array([s.label for s in samples], dtype=np.float32)
        for field, key in UNIMODAL_LABELS.values() if unimodal else ():
            entry[field] = np.array([float(np.asarray(s.extras[key]).reshape(())) for s in samples], dtype=np.float32)
        if made_with:
            entry[MADE_WITH] = json.dumps(made_with)
        entry["text"], text_len = _pad_stack([s.text for s in samples], np.float32)
        if all(s.text_ids is not None for s in samples):
            bert = np.zeros((len(samples), 3, entry["text"].shape[1]), dtype=np.float32)
            for i, s in enumerate(samples):
                bert[i, 0, : text_len[i]] = s.text_ids
                bert[i, 1, : text_len[i]] = 1
            entry["text_bert"] = bert
        for mod in ("audio", "vision"):
            entry[mod], entry[f"{mod}_lengths"] = _pad_stack([getattr(s, mod) for s in samples], np.float32)
        out[name] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: pickle.dump(out, handle, protocol=4))  # never a half-written file


def _unimodal_to_write(path: Path, bundle: DataBundle) -> bool:
    """Whether every sample of every labelled split carries the three unimodal labels (DataError when only some do)."""
    keys = [key for _, key in UNIMODAL_LABELS.values()]
    samples = [(name, s) for name, split in bundle.splits.items() if split.labelled for s in split.samples]
    present = [(name, s, [key in s.extras for key in keys]) for name, s in samples]
    if not any(any(on) for _, _, on in present):
        return False
    lacking = next(((name, s, key) for name, s, on in present for key, has in zip(keys, on) if not has), None)
    if lacking is not None:
        name, s, key = lacking
        field = UNIMODAL_LABELS[key.removeprefix("label_")][0]
        message = f"sample '{s.id}' of split '{name}' of bundle '{bundle.name}' has no extras['{key}'] while other samples have unimodal labels"
        raise DataError(path, field, f"{message}; the MMSA format holds them for every sample or none")
    for name, s in samples:
        for key in keys:
            value = np.asarray(s.extras[key], dtype=np.float64)
            if value.size != 1 or not np.isfinite(value).all():
                raise DataError(path, UNIMODAL_LABELS[key.removeprefix("label_")][0], f"sample '{s.id}' of split '{name}' has extras['{key}'] = {value!r}; expected one finite number")
    return True
