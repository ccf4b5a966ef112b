"""CAER-S (Lee et al., ICCV 2019): static frames of TV shows, 7 emotions, read from the release's class folders.

The release holds ``train/<Emotion>/<file>`` and ``test/<Emotion>/<file>``
(Anger, Disgust, Fear, Happy, Neutral, Sad, Surprise). CAER-S has no person
annotation: the subject is the face, found by a face detector. This reader
takes the faces from a CSV file (``boxes``) with the header
``image,x1,y1,x2,y2``: ``image`` is a path relative to the release folder
(``train/Happy/0001.png``), the box is in pixels. Any detector can write it.

Every image becomes one 7-class sample:

* ``vision``: EfficientNet-Lite0 tokens of the face crop (the subject);
* ``image``: tokens of the frame with the face blacked out (the context with
  the subject masked, as CAER-Net's context stream and CLEF's context branch see it).

Splits: ``train`` and ``test`` from the release, and ``valid`` carved from
train (``valid_fraction`` of each class, seeded): CAER-S ships no validation
split, and a test split must never choose a checkpoint.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from robustmsa.data.batch import Sample
from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec, check_limit, check_seed, limited
from robustmsa.data.text_corpora import utf8_lines
from robustmsa.errors import ConfigError, DataError

EMOTIONS = ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_face_boxes(path: str | Path) -> dict[str, tuple[float, float, float, float]]:
    """``image -> (x1, y1, x2, y2)`` from a UTF-8 CSV file with the header ``image,x1,y1,x2,y2`` (one row per image)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "face box file not found (a CSV with the header image,x1,y1,x2,y2)")
    reader = csv.DictReader(utf8_lines(path))
    boxes = {}
    try:
        missing = [c for c in ("image", "x1", "y1", "x2", "y2") if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(path, "header", f"missing columns {missing}; expected image,x1,y1,x2,y2")
        for line, row in enumerate(reader, start=2):
            if None in row:  # more values than the header names (a misplaced comma)
                raise DataError(path, f"line {line}", f"has {len(reader.fieldnames or []) + len(row[None])} values; the header names {len(reader.fieldnames or [])}")
            try:
                box = tuple(float(row[c]) for c in ("x1", "y1", "x2", "y2"))
            except (TypeError, ValueError):
                raise DataError(path, f"line {line}", f"the box of '{row['image']}' is not four numbers") from None
            if not np.all(np.isfinite(box)):
                raise DataError(path, f"line {line}", f"the box of '{row['image']}' is not finite")
            image = Path(row["image"]).as_posix()
            if image in boxes:
                raise DataError(path, f"line {line}", f"'{image}' has a box on an earlier line already (one face box per image)")
            boxes[image] = box
    except csv.Error as exc:
        raise DataError(path, f"line {reader.line_num}", f"is not valid CSV: {exc}") from None
    return boxes  # type: ignore[return-value]


def list_caer_images(folder: str | Path, split: str) -> list[tuple[str, int]]:
    """``(relative image path, class index)`` of one release split, sorted (DataError naming a missing class folder)."""
    root = Path(folder)
    items = []
    for index, emotion in enumerate(EMOTIONS):
        class_dir = root / split / emotion
        if not class_dir.is_dir():
            raise DataError(class_dir, None, f"CAER-S class folder not found (expected {split}/<{'|'.join(EMOTIONS)}>)")
        for p in sorted(class_dir.iterdir()):
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if p.is_dir():
                raise DataError(p, None, "is a directory; expected an image file")
            items.append((p.relative_to(root).as_posix(), index))
    if not items:
        raise DataError(root / split, None, "no images in the class folders")
    return items


def read_caer_s(
    folder: str | Path,
    boxes: str | Path,
    valid_fraction: float = 0.1,
    seed: int = 0,
    tokens: str = "pooled",
    limit: int | None = None,
    missing_faces: str = "error",
    cache_dir: str | Path | None = None,
    encoder: Any = None,
) -> DataBundle:
    """CAER-S as a 7-class :class:`DataBundle` of face-crop (``vision``) and face-masked frame (``image``) tokens.

    ``boxes``: the face CSV (``robustmsa detect-faces`` writes one); ``limit``: at most this many images per class
    and release split (a random subset); ``missing_faces``: ``'error'`` when an image has no box, or ``'skip'`` to
    leave such images out (their number is recorded in ``meta['without_face']``).
    """
    from robustmsa.features.image import build_image_encoder, encode_person_views

    folder = Path(folder)
    if not 0.0 < valid_fraction < 1.0:
        raise ConfigError(f"caer_s: 'valid_fraction' must be in (0, 1), got {valid_fraction}")
    limit = check_limit(limit, "caer_s")
    seed = check_seed(seed, "caer_s")
    if missing_faces not in ("error", "skip"):
        raise ConfigError(f"caer_s: 'missing_faces' must be 'error' or 'skip', got '{missing_faces}'")
    faces = read_face_boxes(boxes)
    encoder = encoder or build_image_encoder(cache_dir=cache_dir, tokens=tokens)
    task = TaskSpec(kind="classification", num_classes=len(EMOTIONS), label_range=None, class_names=EMOTIONS)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[tuple[str, int]]] = {"train": [], "valid": [], "test": []}
    for split in ("train", "test"):
        listed = list_caer_images(folder, split)
        for index in range(len(EMOTIONS)):
            of_class = limited([item for item in listed if item[1] == index], limit)
            if split == "test":
                parts["test"] += of_class
                continue
            order = rng.permutation(len(of_class))
            n_valid = max(1, int(round(valid_fraction * len(of_class)))) if len(of_class) > 1 else 0
            parts["valid"] += [of_class[i] for i in sorted(order[:n_valid])]
            parts["train"] += [of_class[i] for i in sorted(order[n_valid:])]
    without = [image for items in parts.values() for image, _ in items if image not in faces]
    if without and missing_faces == "error":
        raise DataError(boxes, "image", f"no face box for '{without[0]}' (and {len(without) - 1} more images); give every image one, or missing_faces: skip")
    parts = {name: [item for item in items if item[0] in faces] for name, items in parts.items()}
    splits = {}
    for name, items in parts.items():
        if not items:
            raise DataError(folder, name, "no image falls in this split")
        views = encode_person_views(encoder, [(folder / image, faces[image]) for image, _ in items])
        samples = [Sample(id=image, vision=face, image=context, label_class=label) for (image, label), (face, context) in zip(items, views)]
        splits[name] = MultimodalSplit(samples, name=name, source=f"caer_s:{folder}", task=task)
    meta = {
        "source": "CAER-S",
        "valid": f"{valid_fraction} of each train class (seed {seed})",
        "without_face": len(without),
        "image": f"{encoder.name} tokens ({encoder.tokens}) of the face crop (vision) and the face-masked frame (image)",
    }
    return DataBundle(splits, task, name="caer_s", meta=meta)
