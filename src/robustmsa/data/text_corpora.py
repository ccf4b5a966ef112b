"""Readers of real text(-and-image-attribute) corpora into :class:`DataBundle` objects.

Each reader parses the published files, keeps ``raw_text``, and attaches
token features from a text encoder (:func:`robustmsa.features.text.build_text_encoder`;
``'minilm'`` by default, ``'hash'`` for quick tests, or an encoder object).
``limit`` keeps a random N items of every split (before encoding; :func:`~robustmsa.data.dataset.limited`).

* :func:`read_mosi_csv`: CMU-MOSI transcripts ``id,text,label,mode``.
* :func:`read_mvsa`: MVSA-Single ``{train,dev,test}.json`` (3 classes).
* :func:`read_vader`: VADER ``*_GroundTruth.txt`` (continuous ratings in [-4, 4]).
* :func:`read_mmsd2`: MMSD2.0 sarcasm ``{train,valid,test}.json`` with the
  five image attribute words per image as the visual modality.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from robustmsa.data.batch import Sample
from robustmsa.data.dataset import TEXT_CONTEXTUAL, DataBundle, MultimodalSplit, TaskSpec, check_limit, check_seed, limited
from robustmsa.errors import ConfigError, DataError, require_file
from robustmsa.features.text import TextEncoder, attach_text_features, build_text_encoder

EncoderArg = str | TextEncoder
VADER_DOMAINS = {
    "tweets": "tweets_GroundTruth.txt",
    "movies": "movieReviewSnippets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
}
_SPLIT_NAMES = {"train": "train", "valid": "valid", "dev": "valid", "test": "test"}


def _encoder(text_encoder: EncoderArg, cache_dir: str | Path | None) -> TextEncoder:
    return build_text_encoder(text_encoder, cache_dir) if isinstance(text_encoder, str) else text_encoder


def _finish(
    parsed: Mapping[str, list[Sample]],
    *,
    task: TaskSpec,
    name: str,
    source: object,
    encoder: TextEncoder,
    limit: int | None,
    meta: dict[str, Any],
) -> DataBundle:
    """Apply ``limit`` (already checked with :func:`check_limit`), encode all texts in one pass, and build validated splits."""
    kept = {split: limited(samples, limit) for split, samples in parsed.items()}
    flat = attach_text_features([s for samples in kept.values() for s in samples], encoder)
    splits, start = {}, 0
    for split, samples in kept.items():
        splits[split] = MultimodalSplit(flat[start : start + len(samples)], name=split, source=source, task=task)
        start += len(samples)
    meta = {"source": str(source), "text_encoder": encoder.name, TEXT_CONTEXTUAL: encoder.contextual, **meta}
    return DataBundle(splits, task, name=name, meta=meta)


def read_utf8(path: Path) -> str:
    """The whole file decoded as UTF-8 (newlines untranslated, a leading byte-order mark dropped); :class:`DataError` if missing or not UTF-8."""
    require_file(path)
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(path, f"line {line}", f"is not valid UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None


def utf8_lines(path: Path) -> io.StringIO:
    """The lines of :func:`read_utf8`, endings kept untranslated (like ``open(path, newline='')``)."""
    return io.StringIO(read_utf8(path), newline="")


def _read_json_list(path: Path) -> list[dict[str, Any]]:
    text = read_utf8(path)
    try:
        items = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, or an integer with more digits than Python converts
        raise DataError(path, None, f"not valid JSON: {exc}") from None
    except RecursionError:
        raise DataError(path, None, "not valid JSON: nested too deeply") from None
    if not isinstance(items, list):
        raise DataError(path, None, f"expected a JSON list of items, got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(path, f"item {i}", f"expected an object, got {type(item).__name__}")
    return items


def _field(path: Path, item: Mapping[str, Any], key: str, index: int) -> Any:
    if key not in item:
        raise DataError(path, key, f"missing in item {index}")
    return item[key]


def _string(path: Path, value: Any, key: str, where: str, *, is_id: bool = False) -> str:
    """A text field (``is_id``: a non-empty id; an integer id is accepted as its digits); :class:`DataError` naming the item otherwise."""
    if is_id and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or (is_id and not value.strip()):
        raise DataError(path, key, f"{where} has {value!r}; expected a {'non-empty string' if is_id else 'string'}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(path, key, f"{where} holds a lone surrogate escape (e.g. \\ud800), which is not a character") from None
    return value.strip() if is_id else value


def _number(path: Path, value: str, key: str, where: str) -> float:
    """A number written in a text file (``float`` syntax without Python's digit-grouping underscores)."""
    try:
        if "_" in value:
            raise ValueError(value)
        return float(value)
    except ValueError:
        raise DataError(path, key, f"{where} has '{value}'; expected a number") from None


def _class_label(path: Path, value: Any, key: str, index: int, num_classes: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < num_classes:
        raise DataError(path, key, f"item {index} has {value!r}; expected an integer in [0, {num_classes})")
    return value


def _existing_folder(folder: str | Path) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, None, "folder not found")
    return folder


def parse_labels_csv(path: str | Path, *, text: bool = True, unlabelled: bool = False) -> dict[str, list[Sample]]:
    """The rows of a CMU-MOSI-style labels CSV (``id,text,label,mode``) as samples per split, without features.

    ``mode`` train/valid/test (``dev`` is read as valid); ``group`` is the video id (the id without its trailing
    ``_<clip>``). ``text=False``: the ``text`` column is optional (``raw_text`` None where absent).
    ``unlabelled=True``: a file without a ``label`` column lists new clips to predict on: its samples have no label
    (``label`` None) and its ``mode`` column is optional too (without it every row is in ``test``).
    """
    path = Path(path)
    parsed: dict[str, list[Sample]] = {"train": [], "valid": [], "test": []}
    columns = ("id", "text", "label", "mode") if text else ("id", "label", "mode")
    reader = csv.DictReader(utf8_lines(path))
    try:
        header = reader.fieldnames or []
        if not header:
            raise DataError(path, None, f"the file is empty; expected a CSV with the header {','.join(columns)}")
        if unlabelled and "label" not in header:
            columns = tuple(c for c in columns if c != "label" and (c != "mode" or "mode" in header))
        missing = [c for c in columns if c not in header]
        if missing:
            hint = " (labelled clips need their split; a CSV of new clips to predict on has no label column)" if unlabelled and missing[0] == "mode" else ""
            raise DataError(path, missing[0], f"column missing; header is {reader.fieldnames}{hint}")
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
            raise DataError(path, repeated[0], f"column named more than once in the header {header}")
        if "text" in header and "text" not in columns:
            columns = (*columns, "text")
        for row in reader:
            row_no = reader.line_num
            short = [c for c in columns if row[c] is None]
            if short:
                fields = sum(v is not None for k, v in row.items() if k is not None)
                raise DataError(path, short[0], f"missing on line {row_no}: the row has {fields} fields, the header {len(header)} ({','.join(header)})")
            if None in row:  # csv.DictReader keeps the fields beyond the header under the key None
                raise DataError(path, f"line {row_no}", f"has {len(header) + len(row[None])} fields; the header has {len(header)} ({','.join(header)})")  # type: ignore[index]
            split = _SPLIT_NAMES.get(row["mode"].strip().lower()) if "mode" in columns else "test"
            if split is None:
                raise DataError(path, "mode", f"line {row_no} has '{row['mode']}'; expected train, valid/dev or test")
            label = _number(path, row["label"], "label", f"line {row_no}") if "label" in columns else None
            sid = _string(path, row["id"], "id", f"line {row_no}", is_id=True)
            parsed[split].append(Sample(id=sid, group=sid.rsplit("_", 1)[0], raw_text=row.get("text"), label=label))
    except csv.Error as exc:
        raise DataError(path, f"line {reader.line_num}", f"is not valid CSV: {exc}") from None
    return parsed


def read_mosi_csv(
    path: str | Path, *, text_encoder: EncoderArg = "minilm", cache_dir: str | Path | None = None, limit: int | None = None
) -> DataBundle:
    """CMU-MOSI transcripts CSV (``id,text,label,mode``, see :func:`parse_labels_csv`) -> text-only regression bundle, labels in [-3, 3].

    A split no row names is left out (a file of test rows only is data to score a trained run on; training names the
    split it lacks)."""
    path = Path(path)
    limit = check_limit(limit, "mosi_csv")
    parsed = {split: rows for split, rows in parse_labels_csv(path).items() if rows}
    if not parsed:
        raise DataError(path, None, "lists no rows under its header")
    task = TaskSpec(kind="regression", num_classes=1, label_range=(-3.0, 3.0))
    return _finish(parsed, task=task, name="mosi_csv", source=path, encoder=_encoder(text_encoder, cache_dir), limit=limit, meta={})


def read_mvsa(
    folder: str | Path, *, text_encoder: EncoderArg = "minilm", cache_dir: str | Path | None = None, limit: int | None = None
) -> DataBundle:
    """MVSA-Single ``train/dev/test.json`` items ``{"id", "text", "emotion_label"}`` -> 3-class bundle.

    Classes 0 positive, 1 neutral, 2 negative; ``dev`` becomes the ``valid`` split.
    """
    limit = check_limit(limit, "mvsa")
    folder = _existing_folder(folder)
    parsed: dict[str, list[Sample]] = {}
    for file_split, split in (("train", "train"), ("dev", "valid"), ("test", "test")):
        path = folder / f"{file_split}.json"
        samples = []
        for i, item in enumerate(_read_json_list(path)):
            sid = _string(path, _field(path, item, "id", i), "id", f"item {i}", is_id=True)
            label = _class_label(path, _field(path, item, "emotion_label", i), "emotion_label", i, 3)
            text = _string(path, _field(path, item, "text", i), "text", f"item {i}")
            samples.append(Sample(id=sid, group=sid, raw_text=text, label_class=label))
        parsed[split] = samples
    task = TaskSpec(kind="classification", num_classes=3, label_range=None, class_names=("positive", "neutral", "negative"))
    return _finish(parsed, task=task, name="mvsa_single", source=folder, encoder=_encoder(text_encoder, cache_dir), limit=limit, meta={})


def read_vader(
    path: str | Path,
    *,
    domain: str = "tweets",
    seed: int = 0,
    text_encoder: EncoderArg = "minilm",
    cache_dir: str | Path | None = None,
    limit: int | None = None,
) -> DataBundle:
    """VADER ground truth (``id<TAB>mean rating<TAB>text``) -> regression bundle, labels in [-4, 4].

    ``path`` is a ``*_GroundTruth.txt`` file or the folder holding them (then
    ``domain`` picks one of ``tweets``, ``movies``, ``amazon``, ``nyt``). There
    is no official split: groups (the id before ``_``, i.e. the source
    document of the Amazon/NYT snippets; the item itself otherwise) are shuffled
    with ``seed`` and cut 70/10/20 into train/valid/test, so snippets of one
    document never straddle splits.
    """
    seed = check_seed(seed, "vader")
    limit = check_limit(limit, "vader")
    path = Path(path)
    if path.is_dir():
        if domain not in VADER_DOMAINS:
            raise ConfigError(f"vader domain must be one of {sorted(VADER_DOMAINS)}, got '{domain}'")
        path = path / VADER_DOMAINS[domain]
    samples = []
    for line_no, line in enumerate(utf8_lines(path), start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise DataError(path, f"line {line_no}", "expected 'id<TAB>rating<TAB>text'")
        label = _number(path, parts[1], "rating", f"line {line_no}")
        sid = _string(path, parts[0], "id", f"line {line_no}", is_id=True)
        samples.append(Sample(id=sid, group=sid.split("_", 1)[0], raw_text=parts[2], label=label))
    if not samples:
        raise DataError(path, None, "the file has no items")
    groups = sorted({s.group for s in samples})
    order = np.random.default_rng(seed).permutation(len(groups))
    n_train, n_valid = int(round(0.7 * len(groups))), int(round(0.1 * len(groups)))
    assign = {}
    for rank, g in enumerate(order):
        assign[groups[g]] = "train" if rank < n_train else "valid" if rank < n_train + n_valid else "test"
    parsed: dict[str, list[Sample]] = {"train": [], "valid": [], "test": []}
    for s in samples:
        parsed[assign[s.group]].append(s)
    empty = [name for name, part in parsed.items() if not part]
    if empty:
        raise DataError(path, None, f"{len(groups)} items (documents) are too few for the 70/10/20 train/valid/test split: split '{empty[0]}' gets none")
    task = TaskSpec(kind="regression", num_classes=1, label_range=(-4.0, 4.0))
    meta = {"domain": domain, "split_seed": seed}
    return _finish(parsed, task=task, name=f"vader_{path.name.split('_')[0]}", source=path, encoder=_encoder(text_encoder, cache_dir), limit=limit, meta=meta)


def read_image_attributes(path: str | Path) -> dict[str, list[str]]:
    """MMSD2.0 ``image_attributes.txt``: one Python list literal ``['<image id>', w1, ..., w5]`` per line.

    Parsed with :func:`ast.literal_eval` (never ``eval``). Returns image id -> 5 words.
    """
    path = Path(path)
    out: dict[str, list[str]] = {}
    for line_no, line in enumerate(utf8_lines(path), start=1):
        if not line.strip():
            continue
        try:
            value = ast.literal_eval(line.strip())
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise DataError(path, f"line {line_no}", "is not a Python list literal") from None
        if not isinstance(value, list | tuple) or len(value) != 6 or not all(isinstance(v, str) for v in value):
            raise DataError(path, f"line {line_no}", "expected ['<image id>', five attribute words]")
        if value[0] in out:
            raise DataError(path, f"line {line_no}", f"image '{value[0]}' already has attributes on an earlier line")
        out[value[0]] = list(value[1:])
    return out


def _word_vectors(words: Sequence[str], encoder: TextEncoder) -> dict[str, np.ndarray]:
    """One (D,) vector per word: the mean of its non-special token features (all tokens if none)."""
    encoded = encoder.encode(list(words))
    out = {}
    for word, feats, special in zip(words, encoded.features, encoded.special):
        rows = feats[~special] if (~special).any() else feats
        out[word] = rows.mean(axis=0).astype(np.float32)
    return out


def read_mmsd2(
    folder: str | Path,
    *,
    missing_image: Literal["raise", "drop"] = "raise",
    text_encoder: EncoderArg = "minilm",
    cache_dir: str | Path | None = None,
    limit: int | None = None,
) -> DataBundle:
    """MMSD2.0 ``train/valid/test.json`` items ``{"image_id", "text", "label"}`` -> binary bundle (1 = sarcastic).

    Visual modality: the image's five attribute words from ``image_attributes.txt``,
    each encoded with the same text encoder (mean of its word-piece features),
    as ``Sample.image`` (5, D). An image id without attributes raises
    :class:`DataError` unless ``missing_image='drop'`` (dropped items are
    counted in ``bundle.meta['dropped_missing_image']``).
    """
    if missing_image not in ("raise", "drop"):
        raise ConfigError(f"missing_image must be 'raise' or 'drop', got '{missing_image}'")
    limit = check_limit(limit, "mmsd2")
    folder = _existing_folder(folder)
    attr_path = folder / "image_attributes.txt"
    attributes = read_image_attributes(attr_path)
    parsed: dict[str, list[Sample]] = {}
    dropped: dict[str, int] = {}
    for split in ("train", "valid", "test"):
        path = folder / f"{split}.json"
        samples = []
        for i, item in enumerate(_read_json_list(path)):
            sid = _string(path, _field(path, item, "image_id", i), "image_id", f"item {i}", is_id=True)
            if sid not in attributes:
                if missing_image == "raise":
                    raise DataError(attr_path, "image_id", f"no attributes for image '{sid}' (item {i} of {path.name}); pass missing_image='drop' to skip such items")
                dropped[split] = dropped.get(split, 0) + 1
                continue
            label = _class_label(path, _field(path, item, "label", i), "label", i, 2)
            text = _string(path, _field(path, item, "text", i), "text", f"item {i}")
            samples.append(Sample(id=sid, group=sid, raw_text=text, label_class=label))
        parsed[split] = samples
    parsed = {split: limited(samples, limit) for split, samples in parsed.items()}
    encoder = _encoder(text_encoder, cache_dir)
    words = sorted({w for samples in parsed.values() for s in samples for w in attributes[s.id]})
    vectors = _word_vectors(words, encoder)
    parsed = {split: [dataclasses.replace(s, image=np.stack([vectors[w] for w in attributes[s.id]])) for s in samples] for split, samples in parsed.items()}
    task = TaskSpec(kind="classification", num_classes=2, label_range=None, class_names=("not_sarcastic", "sarcastic"))
    meta = {"dropped_missing_image": dropped, "image": "five attribute words per image, encoded with the text encoder"}
    return _finish(parsed, task=task, name="mmsd2", source=folder, encoder=encoder, limit=None, meta=meta)
