"""The one mini-batch schema and the collate function that builds it.

A :class:`Sample` is one item as numpy arrays of its *true* length; a
:class:`Batch` is a padded mini-batch of torch tensors with lengths and masks.
Missing parts are ``None`` (never silently zero-filled).

Shapes (B = batch, L* = padded length, D* = feature width):

* ``text``           (B, Lt, Dt) float token features (may include [CLS]/[SEP])
* ``text_mask``      (B, Lt) bool, True for real tokens (special tokens included)
* ``text_special``   (B, Lt) bool, True for [CLS]/[SEP]-like positions that
  corruption must leave untouched
* ``text_ids``       (B, Lt) long token ids (optional, aligned with ``text``)
* ``audio``          (B, La, Da) float, ``audio_lengths`` (B,) long
* ``vision``         (B, Lv, Dv) float, ``vision_lengths`` (B,) long
* ``image``          (B, Li, Di) float visual tokens (image regions, image
  attribute words, scene context), ``image_mask`` (B, Li) bool
* ``label``          (B,) float continuous score (regression tasks)
* ``label_class``    (B,) long class index (classification tasks)
* ``label_multi``    (B, K) float multi-label targets
* ``ids`` / ``groups`` / ``raw_text``: python lists of length B
* ``extras``         name -> tensor with leading dim B (method-specific inputs;
  ragged per-sample arrays are zero-padded along their first axis)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

SEQUENCE_FIELDS = ("text", "audio", "vision", "image")


@dataclass
class Sample:
    """One item: numpy arrays of true length (no padding)."""

    id: str
    group: str | None = None
    raw_text: str | None = None
    text: np.ndarray | None = None  # (Lt, Dt)
    text_special: np.ndarray | None = None  # (Lt,) bool
    text_ids: np.ndarray | None = None  # (Lt,) int
    audio: np.ndarray | None = None  # (La, Da)
    vision: np.ndarray | None = None  # (Lv, Dv)
    image: np.ndarray | None = None  # (Li, Di)
    label: float | None = None
    label_class: int | None = None
    label_multi: np.ndarray | None = None  # (K,)
    extras: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Batch:
    """A padded mini-batch; see the module docstring for shapes."""

    ids: list[str]
    groups: list[str | None] = field(default_factory=list)
    raw_text: list[str | None] = field(default_factory=list)
    text: Tensor | None = None
    text_mask: Tensor | None = None
    text_special: Tensor | None = None
    text_ids: Tensor | None = None
    audio: Tensor | None = None
    audio_lengths: Tensor | None = None
    vision: Tensor | None = None
    vision_lengths: Tensor | None = None
    image: Tensor | None = None
    image_mask: Tensor | None = None
    label: Tensor | None = None
    label_class: Tensor | None = None
    label_multi: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def size(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> Batch:
        """Move every tensor to ``device`` (Lightning calls this)."""

        def move(value: object) -> object:
            if isinstance(value, Tensor):
                return value.to(device)
            if isinstance(value, dict):
                return {k: move(v) for k, v in value.items()}
            return value

        return dataclasses.replace(self, **{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def replace(self, **changes: object) -> Batch:
        """A shallow copy with some fields replaced (batches are treated as immutable)."""
        return dataclasses.replace(self, **changes)

    def lengths(self, modality: str) -> Tensor:
        """True lengths (B,) of a sequence modality."""
        if modality == "text":
            assert self.text_mask is not None
            return self.text_mask.sum(dim=1)
        if modality == "image":
            assert self.image_mask is not None
            return self.image_mask.sum(dim=1)
        value = getattr(self, f"{modality}_lengths")
        if value is None:
            raise KeyError(f"batch has no '{modality}' modality")
        return value

    def mask(self, modality: str) -> Tensor:
        """Boolean (B, L) mask of real positions of a sequence modality."""
        if modality == "text":
            assert self.text_mask is not None
            return self.text_mask
        if modality == "image":
            assert self.image_mask is not None
            return self.image_mask
        seq = getattr(self, modality)
        lengths = self.lengths(modality)
        positions = torch.arange(seq.shape[1], device=seq.device)
        return positions.unsqueeze(0) < lengths.unsqueeze(1)

    def modalities(self) -> tuple[str, ...]:
        """Names of the sequence modalities present in this batch."""
        return tuple(m for m in SEQUENCE_FIELDS if getattr(self, m) is not None)


def _pad(arrays: Sequence[np.ndarray], dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Pad arrays of shape (L_i, ...) to (B, max L, ...); return (padded, lengths)."""
    lengths = torch.tensor([a.shape[0] for a in arrays], dtype=torch.long)
    max_len = max(1, int(lengths.max())) if len(arrays) else 1
    tail = arrays[0].shape[1:]
    out = torch.zeros((len(arrays), max_len, *tail), dtype=dtype)
    for i, a in enumerate(arrays):
        if a.shape[0]:
            out[i, : a.shape[0]] = torch.as_tensor(np.asarray(a), dtype=dtype)
    return out, lengths


def _all_or_none(samples: Sequence[Sample], name: str) -> list | None:
    values = [getattr(s, name) for s in samples]
    present = [v is not None for v in values]
    if not any(present):
        return None
    if not all(present):
        missing = [s.id for s, p in zip(samples, present) if not p][:3]
        raise ValueError(f"field '{name}' is missing for samples {missing} but present for others in the batch")
    return values


def collate(samples: Sequence[Sample]) -> Batch:
    """Pad a list of samples into a :class:`Batch`, keeping lengths and masks."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    batch = Batch(
        ids=[s.id for s in samples],
        groups=[s.group for s in samples],
        raw_text=[s.raw_text for s in samples],
    )
    text = _all_or_none(samples, "text")
    if text is not None:
        batch.text, lengths = _pad(text, torch.float32)
        batch.text_mask = torch.arange(batch.text.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
        special = _all_or_none(samples, "text_special")
        if special is not None:
            batch.text_special = _pad([np.asarray(s, dtype=bool) for s in special], torch.bool)[0]
        else:
            batch.text_special = torch.zeros_like(batch.text_mask)
        ids = _all_or_none(samples, "text_ids")
        if ids is not None:
            batch.text_ids = _pad(ids, torch.long)[0]
    for name in ("audio", "vision"):
        seqs = _all_or_none(samples, name)
        if seqs is not None:
            padded, lengths = _pad(seqs, torch.float32)
            setattr(batch, name, padded)
            setattr(batch, f"{name}_lengths", lengths)
    image = _all_or_none(samples, "image")
    if image is not None:
        batch.image, lengths = _pad(image, torch.float32)
        batch.image_mask = torch.arange(batch.image.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    labels = _all_or_none(samples, "label")
    if labels is not None:
        batch.label = torch.tensor(labels, dtype=torch.float32)
    classes = _all_or_none(samples, "label_class")
    if classes is not None:
        batch.label_class = torch.tensor(classes, dtype=torch.long)
    multi = _all_or_none(samples, "label_multi")
    if multi is not None:
        batch.label_multi = torch.as_tensor(np.stack(multi), dtype=torch.float32)
    keys = set().union(*(s.extras.keys() for s in samples))
    for key in sorted(keys):
        values = _all_or_none([_ExtraView(s, key) for s in samples], "value")
        assert values is not None
        batch.extras[key] = _stack_extra(values)
    return batch


def _stack_extra(values: Sequence[np.ndarray]) -> Tensor:
    """Stack equal-shaped extras; zero-pad ragged ones (same trailing shape) along their first axis."""
    arrays = [np.asarray(v) for v in values]
    if all(a.shape == arrays[0].shape for a in arrays):
        return torch.as_tensor(np.stack(arrays))
    return _pad(arrays, torch.as_tensor(arrays[0][:0]).dtype)[0]


@dataclass
class _ExtraView:
    sample: Sample
    key: str

    @property
    def id(self) -> str:
        return self.sample.id

    @property
    def value(self) -> np.ndarray | None:
        return self.sample.extras.get(self.key)
