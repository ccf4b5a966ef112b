"""EMOTIC (Kosti et al., TPAMI 2019): people in context, 26 emotion categories, read from the official release.

The release is a folder holding ``Annotations/Annotations.mat`` (a MATLAB
struct file with the arrays ``train``, ``val`` and ``test``, one entry per
image) and the images under ``emotic/<folder>/<filename>``. Each image entry
has ``filename``, ``folder`` and ``person`` (one struct or an array of them);
each person has ``body_bbox`` (``x1 y1 x2 y2`` in pixels), the categories
(``annotations_categories.categories`` in train, one annotator; in val/test
the annotators' consensus ``combined_categories``, or else the union over
the annotators) and the continuous valence / arousal / dominance
(``annotations_continuous`` or ``combined_continuous``, 1-10).

Every annotated person becomes one multi-label sample (the 26 categories):

* ``vision``: EfficientNet-Lite0 tokens of the body crop (the subject);
* ``image``: tokens of the whole picture with the body box blacked out (the
  context with the person masked, what CLEF's context branch sees);
* ``extras['vad']``: (3,) valence, arousal, dominance (NaN when absent);
  a value that is present must be a number in [1, 10];
* ``group``: the image, so people of one picture stay together.

Splits: ``train``, ``valid`` (EMOTIC's val) and ``test``. Features are cached
on disk by file content, box and view (:mod:`robustmsa.features.image`).
The .mat file is read with :func:`scipy.io.loadmat` (no pickle involved).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robustmsa.data.batch import Sample
from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec, check_limit, limited
from robustmsa.errors import ConfigError, DataError, require_file

CATEGORIES = (
    "Affection", "Anger", "Annoyance", "Anticipation", "Aversion", "Confidence", "Disapproval", "Disconnection", "Disquietment",
    "Doubt/Confusion", "Embarrassment", "Engagement", "Esteem", "Excitement", "Fatigue", "Fear", "Happiness", "Pain", "Peace",
    "Pleasure", "Sadness", "Sensitivity", "Suffering", "Surprise", "Sympathy", "Yearning",
)  # fmt: skip
#: EMOTIC's split names -> ours.
SPLITS = {"train": "train", "val": "valid", "test": "test"}
VAD = ("valence", "arousal", "dominance")


@dataclass(frozen=True)
class EmoticPerson:
    """One annotated person: the image (relative to the image root), the body box, the categories and VAD."""

    id: str
    image: str
    box: tuple[float, float, float, float]
    categories: tuple[str, ...]
    vad: tuple[float, float, float]


def _items(value: Any) -> list[Any]:
    """A MATLAB array read with ``squeeze_me`` as a list (one element arrives unwrapped, none as an empty array)."""
    if isinstance(value, np.ndarray):
        return list(value.reshape(-1))
    return [] if value is None else [value]


def _strings(value: Any) -> list[str]:
    return [str(v) for v in _items(value) if str(v).strip()]


def _field(struct: Any, name: str) -> Any:
    return getattr(struct, name, None) if struct is not None and not isinstance(struct, np.ndarray) else None


def _categories(person: Any) -> list[str]:
    combined = _field(person, "combined_categories")
    if combined is not None and _strings(combined):
        return _strings(combined)
    names: list[str] = []
    for annotation in _items(_field(person, "annotations_categories")):
        names += _strings(_field(annotation, "categories"))
    return list(dict.fromkeys(names))


def _absent(value: Any) -> bool:
    """A continuous value nobody gave: no field, an empty MATLAB array, or NaN."""
    if value is None or (isinstance(value, np.ndarray) and value.size == 0):
        return True
    return isinstance(value, float | np.floating) and bool(np.isnan(value))


def _vad(path: Path, where: str, person: Any) -> tuple[float, float, float]:
    """Valence, arousal, dominance: the consensus, else the mean over the annotators; NaN when none is given.

    An annotation with all three values absent is skipped; any other must hold three numbers in [1, 10]."""
    for name in ("combined_continuous", "annotations_continuous"):
        rows = []
        for k, annotation in enumerate(_items(_field(person, name))):
            values = [_field(annotation, dim) for dim in VAD]
            if all(_absent(v) for v in values):
                continue
            for dim, v in zip(VAD, values):
                if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.number) or not 1 <= v <= 10:
                    raise DataError(path, f"{where}.{name}[{k}].{dim}", f"has {v!r}; expected a number in [1, 10]")
            rows.append([float(v) for v in values])
        if rows:
            return tuple(float(v) for v in np.mean(rows, axis=0))  # type: ignore[return-value]
    return (float("nan"),) * 3


def read_emotic_annotations(path: str | Path, splits: Sequence[str] = tuple(SPLITS)) -> dict[str, list[EmoticPerson]]:
    """The annotated people of each EMOTIC split (keys: ``train``, ``val``, ``test``) from ``Annotations.mat``.

    People without any category carry no target and are left out (:func:`read_emotic` counts them)."""
    return _read_annotations(path, splits)[0]


def _read_annotations(path: str | Path, splits: Sequence[str]) -> tuple[dict[str, list[EmoticPerson]], dict[str, int]]:
    """:func:`read_emotic_annotations` and the number of people left out per split for having no category."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    path = Path(path)
    require_file(
        path, "the EMOTIC annotation file Annotations/Annotations.mat", missing="EMOTIC annotation file not found (expected Annotations/Annotations.mat of the official release)"
    )
    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
    # NotImplementedError: a v7.3 (HDF5) file; IndexError: a file cut inside its header
    except (MatReadError, ValueError, OSError, NotImplementedError, IndexError) as exc:
        raise DataError(path, None, f"not a readable MATLAB file ({exc})") from None
    out: dict[str, list[EmoticPerson]] = {}
    unlabelled: dict[str, int] = {}
    known = {c.lower(): c for c in CATEGORIES}
    for split in splits:
        if split not in SPLITS:
            raise ConfigError(f"EMOTIC has the splits {list(SPLITS)}, not '{split}'")
        if split not in mat:
            raise DataError(path, split, f"no '{split}' array; the file holds {sorted(k for k in mat if not k.startswith('__'))}")
        people = []
        for i, entry in enumerate(_items(mat[split])):
            filename, folder = _field(entry, "filename"), _field(entry, "folder")
            if not isinstance(filename, str) or not isinstance(folder, str):
                raise DataError(path, f"{split}[{i}].filename", "every image entry needs the strings 'filename' and 'folder'")
            if _field(entry, "person") is None:
                raise DataError(path, f"{split}[{i}].person", "missing; every image entry lists its annotated people")
            for j, person in enumerate(_items(_field(entry, "person"))):
                where = f"{split}[{i}].person[{j}]"
                try:
                    box = np.asarray(_field(person, "body_bbox"), dtype=np.float64).reshape(-1)
                except (TypeError, ValueError):
                    raise DataError(path, f"{where}.body_bbox", f"expected four finite numbers x1 y1 x2 y2, got {_field(person, 'body_bbox')!r}") from None
                if box.shape != (4,) or not np.all(np.isfinite(box)):
                    raise DataError(path, f"{where}.body_bbox", f"expected four finite numbers x1 y1 x2 y2, got {box.tolist()}")
                names = _categories(person)
                unknown = [n for n in names if n.lower() not in known]
                if unknown:
                    raise DataError(path, f"{where}.categories", f"unknown categories {unknown}; EMOTIC has {list(CATEGORIES)}")
                if not names:
                    unlabelled[split] = unlabelled.get(split, 0) + 1  # a person nobody labelled carries no target
                    continue
                vad = _vad(path, where, person)
                people.append(EmoticPerson(f"{split}_{i:05d}_{j}", f"{folder}/{filename}", tuple(box.tolist()), tuple(known[n.lower()] for n in names), vad))  # type: ignore[arg-type]
        out[split] = people
    return out, unlabelled


def multi_hot(categories: Sequence[str]) -> np.ndarray:
    """(26,) float32 targets of a person's categories."""
    return np.array([c in categories for c in CATEGORIES], dtype=np.float32)


def read_emotic(
    folder: str | Path,
    annotations: str | Path | None = None,
    image_root: str | Path | None = None,
    tokens: str = "pooled",
    limit: int | None = None,
    cache_dir: str | Path | None = None,
    encoder: Any = None,
) -> DataBundle:
    """EMOTIC as a 26-label multi-label :class:`DataBundle` of body-crop (``vision``) and masked-context (``image``) tokens.

    ``annotations`` defaults to ``<folder>/Annotations/Annotations.mat`` and ``image_root`` to ``<folder>/emotic``;
    ``tokens``: ``'pooled'`` (one 1280-d token per view) or ``'grid'`` (49, for spatial attention; 49 x the memory);
    ``limit``: at most this many people per split (a random subset, :func:`~robustmsa.data.dataset.limited`), for quick runs.
    People without any category are left out; ``meta['without_category']`` counts them per split.
    """
    from robustmsa.features.image import build_image_encoder, encode_person_views

    folder = Path(folder)
    limit = check_limit(limit, "emotic")
    people, unlabelled = _read_annotations(Path(annotations) if annotations else folder / "Annotations" / "Annotations.mat", tuple(SPLITS))
    root = Path(image_root) if image_root else folder / "emotic"
    encoder = encoder or build_image_encoder(cache_dir=cache_dir, tokens=tokens)
    task = TaskSpec(kind="multilabel", num_classes=len(CATEGORIES), label_range=None, class_names=CATEGORIES)
    splits = {}
    for split, name in SPLITS.items():
        chosen = limited(people[split], limit)
        if not chosen:
            raise DataError(folder, split, "no annotated person in this split")
        views = encode_person_views(encoder, [(root / p.image, p.box) for p in chosen])
        samples = [
            Sample(id=p.id, group=p.image, vision=body, image=context, label_multi=multi_hot(p.categories), extras={"vad": np.array(p.vad, dtype=np.float32)})
            for p, (body, context) in zip(chosen, views)
        ]
        splits[name] = MultimodalSplit(samples, name=name, source=f"emotic:{folder}", task=task)
    meta = {
        "source": "EMOTIC",
        "image_root": str(root),
        "without_category": {SPLITS[k]: n for k, n in unlabelled.items()},
        "image": f"{encoder.name} tokens ({encoder.tokens}) of the body crop (vision) and the masked scene (image)",
    }
    return DataBundle(splits, task, name="emotic", meta=meta)
