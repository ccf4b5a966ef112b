"""In-memory data splits, their validation, and the Lightning data module.

Every reader (MMSA pickle, CMU-SDK, CSV/JSON corpora, the generated corpus)
produces a :class:`DataBundle`: named :class:`MultimodalSplit` objects plus a
:class:`TaskSpec`. Splits are validated once on construction so that bad input
fails early with a message naming the file and the field, never deep inside a
tensor op.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np
from torch.utils.data import DataLoader, Dataset

from robustmsa.data.batch import Batch, Sample, collate
from robustmsa.errors import ConfigError, DataError

TaskKind = Literal["regression", "classification", "multilabel"]


@dataclass(frozen=True)
class TaskSpec:
    """What is predicted.

    ``regression``: ``Sample.label`` is a score in ``label_range``; the model
    outputs one value. ``classification``: ``Sample.label_class`` in
    ``[0, num_classes)``; the model outputs ``num_classes`` logits.
    ``multilabel``: ``Sample.label_multi`` of width ``num_classes``.
    ``metric_set`` (regression): MMSA's ``mosi`` metrics (MOSI / MOSEI scale, Has0 / Non0 Acc-2, Acc-5, Acc-7) or
    its ``sims`` metrics (CH-SIMS, [-1, 1]: Acc-2, Acc-3, Acc-5 on SIMS's bins); see :mod:`robustmsa.metrics`.
    """

    kind: TaskKind = "regression"
    num_classes: int = 1
    label_range: tuple[float, float] | None = (-3.0, 3.0)
    class_names: tuple[str, ...] = ()
    metric_set: Literal["mosi", "sims"] = "mosi"

    def __post_init__(self) -> None:
        if self.metric_set not in ("mosi", "sims") or (self.metric_set == "sims" and self.kind != "regression"):
            raise ConfigError(f"metric_set must be 'mosi' or 'sims' (regression tasks only), got '{self.metric_set}' for a {self.kind} task")

    @property
    def signed(self) -> bool:
        """Whether regression labels have a sentiment zero (negative < 0 < positive), as the MOSI / SIMS metrics and the
        class schemes assume: a label range around 0, or no known range."""
        return self.label_range is None or self.label_range[0] < 0 < self.label_range[1]

    def check_signed(self, what: str) -> None:
        """ConfigError naming ``what`` when the labels have no sentiment zero (e.g. MMMO's ratings in [1, 5])."""
        if self.kind == "regression" and not self.signed:
            raise ConfigError(
                f"{what} split sentiment at 0, but these labels lie in {list(self.label_range or ())}: shift them so that 0 is neutral "
                "(e.g. the view natural_missing_text's label_shift: 3.0 for MMMO's ratings 1-5)"
            )

    @property
    def out_dim(self) -> int:
        return 1 if self.kind == "regression" else self.num_classes

    @property
    def label_names(self) -> list[str]:
        """The class (or label) names; the indices as strings where the source names none."""
        return list(self.class_names) if len(self.class_names) == self.num_classes else [str(k) for k in range(self.num_classes)]


def default_metric_set(label_range: tuple[float, float] | None) -> Literal["mosi", "sims"]:
    """MMSA's metrics for regression labels on this scale: CH-SIMS's for [-1, 1], MOSI / MOSEI's otherwise."""
    return "sims" if label_range is not None and tuple(label_range) == (-1.0, 1.0) else "mosi"


class MultimodalSplit(Dataset[Sample]):
    """A named list of samples from one source, validated on construction.

    ``labelled=False``: new data to predict on; its samples need no label (``predict`` takes it, ``evaluate`` not)."""

    def __init__(self, samples: Sequence[Sample], *, name: str, source: object, task: TaskSpec, labelled: bool = True) -> None:
        self.samples = list(samples)
        self.name = name
        self.source = source
        self.task = task
        self.labelled = labelled
        validate_samples(self.samples, source=f"{source} [{name}]", task=task, labelled=labelled)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    def fingerprint(self) -> str:
        """sha256 hex digest of the split's contents (ids, arrays with their shapes, labels): equal digests, same data."""
        digest = hashlib.sha256()
        for s in self.samples:
            digest.update(f"{s.id}\x1f{s.label!r}\x1f{s.label_class!r}".encode())
            for name in ("text", "text_special", "text_ids", "audio", "vision", "image", "label_multi"):
                array = getattr(s, name)
                digest.update(f"\x1e{name}:{None if array is None else (array.shape, array.dtype.str)}".encode())
                if array is not None:
                    digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def subset(self, indices: Sequence[int], name: str | None = None) -> MultimodalSplit:
        return MultimodalSplit([self.samples[i] for i in indices], name=name or self.name, source=self.source, task=self.task, labelled=self.labelled)

    def select_ids(self, ids: Sequence[str], name: str) -> MultimodalSplit:
        """The samples with the given ids, in that order (error on unknown ids)."""
        index = {s.id: i for i, s in enumerate(self.samples)}
        unknown = [i for i in ids if i not in index]
        if unknown:
            raise DataError(self.source, "id", f"{len(unknown)} unknown ids, e.g. {unknown[:3]}")
        return self.subset([index[i] for i in ids], name=name)

    def labels(self) -> np.ndarray:
        """Targets as an array: scores (N,), class indices (N,) or multi-label (N, K)."""
        if not self.labelled:
            raise DataError(f"{self.source} [{self.name}]", "label", "this split holds unlabelled samples (labelled=False): it can be predicted on, not scored")
        if self.task.kind == "regression":
            return np.array([s.label for s in self.samples], dtype=np.float32)
        if self.task.kind == "classification":
            return np.array([s.label_class for s in self.samples], dtype=np.int64)
        return np.stack([s.label_multi for s in self.samples]).astype(np.float32)

    def dims(self) -> dict[str, int]:
        """Feature width of each modality present (e.g. {'text': 384, 'audio': 74})."""
        first = self.samples[0]
        return {m: int(getattr(first, m).shape[-1]) for m in ("text", "audio", "vision", "image") if getattr(first, m) is not None}


T = TypeVar("T")


def check_selection_split(name: str, what: str, chooses: str) -> str:
    """``name`` when it may be used to choose something (checkpoints, tau, weights): a ConfigError naming ``what`` for a
    test split (``test*``) or the training split. Every choice is made on validation data."""
    if name.startswith("test") or name == "train":
        raise ConfigError(f"{what} '{name}' cannot select {chooses}: choose a validation split (never a test split, nor the training data)")
    return name


def limited(items: Sequence[T], limit: int | None) -> list[T]:
    """``limit`` of a split's ``items`` chosen at random (fixed seed 0; file order kept), or all of them.

    A random subset, not the first ones: published files are often sorted or clustered by label (MVSA-Single's
    ``train.json`` holds every positive post first, MMSD2.0's comes in blocks of one label), so the first N can be one class.
    """
    if limit is None or len(items) <= limit:
        return list(items)
    chosen = np.sort(np.random.default_rng(0).choice(len(items), size=limit, replace=False))
    return [items[int(i)] for i in chosen]


def check_limit(limit: object, reader: str) -> int | None:
    """``limit`` (at most this many samples per split) as an int, or None; :class:`ConfigError` unless a positive integer."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1:
        raise ConfigError(f"{reader}: 'limit' must be a positive number of samples per split, got {limit!r}")
    return int(limit)


def check_int(value: object, name: str, reader: str) -> int:
    """An integer parameter (not a bool, float or string); :class:`ConfigError` naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{reader}: '{name}' must be an integer, got {value!r}")
    return int(value)


def check_seed(value: object, reader: str) -> int:
    """A random seed parameter: an integer >= 0 (what numpy's generators take); :class:`ConfigError` naming it otherwise."""
    seed = check_int(value, "seed", reader)
    if seed < 0:
        raise ConfigError(f"{reader}: 'seed' must be >= 0, got {seed}")
    return seed


def validate_samples(samples: Sequence[Sample], *, source: str, task: TaskSpec, labelled: bool = True) -> None:
    """Raise :class:`DataError` naming the source and field for any bad sample (labels only checked if ``labelled``)."""
    if not samples:
        raise DataError(source, None, "the split is empty (expected at least one sample)")
    seen: set[str] = set()
    widths: dict[str, int] = {}
    for s in samples:
        if s.id in seen:
            raise DataError(source, "id", f"duplicate sample id '{s.id}'")
        seen.add(s.id)
        for name in ("text", "audio", "vision", "image"):
            value = getattr(s, name)
            if value is None:
                if name in widths:
                    raise DataError(source, name, f"missing for sample '{s.id}' but present for other samples")
                continue
            if value.ndim != 2:
                raise DataError(source, name, f"sample '{s.id}' has shape {value.shape}; expected (length, features)")
            if not np.isfinite(value).all():
                raise DataError(source, name, f"sample '{s.id}' contains NaN or inf values")
            width = widths.setdefault(name, value.shape[1])
            if value.shape[1] != width:
                raise DataError(source, name, f"sample '{s.id}' has feature width {value.shape[1]}; expected {width}")
        if s.text is not None and s.text_special is not None and s.text_special.shape[0] != s.text.shape[0]:
            raise DataError(source, "text_special", f"sample '{s.id}' length {s.text_special.shape[0]} != text length {s.text.shape[0]}")
        if labelled:
            _validate_label(s, source, task)
    for name in ("text", "audio", "vision", "image"):
        if name in widths and any(getattr(s, name) is None for s in samples):
            raise DataError(source, name, "present for some samples only")


def _validate_label(s: Sample, source: str, task: TaskSpec) -> None:
    if task.kind == "regression":
        if s.label is None or not np.isfinite(s.label):
            raise DataError(source, "label", f"sample '{s.id}' has no finite label")
        if task.label_range is not None:
            lo, hi = task.label_range
            if not lo <= s.label <= hi:
                raise DataError(source, "label", f"sample '{s.id}' has label {s.label}; expected a value in [{lo}, {hi}]")
    elif task.kind == "classification":
        if s.label_class is None or not 0 <= int(s.label_class) < task.num_classes:
            raise DataError(source, "label", f"sample '{s.id}' has class {s.label_class}; expected an integer in [0, {task.num_classes})")
    else:
        if s.label_multi is None or s.label_multi.shape != (task.num_classes,):
            raise DataError(source, "label", f"sample '{s.id}' needs a multi-label vector of width {task.num_classes}")


#: ``DataBundle.meta`` key: whether the text features are contextual (True: e.g. MiniLM / BERT hidden states, where a
#: token's vector carries information about the other tokens; False: static word vectors such as GloVe; absent:
#: unknown). The missing-rate protocol zeroes token vectors, which removes a word only from static features.
TEXT_CONTEXTUAL = "text_contextual"

#: ``DataBundle.meta`` key: ``{meta key: why}`` for values a reader assumed instead of reading them from the data
#: (e.g. contextual text for an MMSA file that does not say), so that an error about such a value can say so.
ASSUMED = "assumed"


def features_made_with(meta: Mapping[str, object]) -> dict[str, object]:
    """What a bundle's meta says of how its features were made (what a model trained on them depends on): text encoder,
    contextual text, the clip extractor's record (settings, text source, models, feature names; not its counts,
    which describe one extraction's clips)."""
    made = {key: meta[key] for key in ("text_encoder", TEXT_CONTEXTUAL) if key in meta}
    extraction = meta.get("extraction")
    if isinstance(extraction, Mapping):
        made["extraction"] = {key: value for key, value in extraction.items() if key != "counts"}
    return made


@dataclass
class DataBundle:
    """Named splits of one data set with their task.

    Conventional split names: ``train``, ``valid``, ``test`` (IID), and for
    OOD protocols ``test_ood`` and optionally ``valid_ood`` (carved from the
    OOD pool, disjoint from ``test_ood``).
    """

    splits: dict[str, MultimodalSplit]
    task: TaskSpec
    name: str = "data"
    meta: dict[str, object] = field(default_factory=dict)
    disjoint_ids: bool = True

    def __post_init__(self) -> None:
        """Split names are plain names (no path); a modality must have one feature width in every split; with ``disjoint_ids`` (default) no sample id may be
        in two splits: a shared id is train/test leakage. Only bundles that number their samples per split turn it off
        (the router data of MRID / MME-JD: ids '0', '1', ... in both train and valid)."""
        for name in self.splits:  # names become file names (predictions, reports): never a path
            if not isinstance(name, str) or not name or name in (".", "..") or any(c in name for c in '/\\\0') or len(name.encode()) > 200:
                raise DataError(self.meta.get("source", self.name), "split", f"split name {name[:80]!r} cannot name a file; expected a plain name such as 'test'")
        widths: dict[str, tuple[str, int]] = {}
        for name, split in self.splits.items():
            if not len(split):
                continue
            for modality, width in split.dims().items():
                first, expected = widths.setdefault(modality, (name, width))
                if width != expected:
                    raise DataError(split.source, modality, f"split '{name}' has feature width {width}; split '{first}' has {expected}")
        if self.disjoint_ids:
            owner: dict[str, str] = {}
            for name, split in self.splits.items():
                for sid in split.ids:
                    other = owner.setdefault(sid, name)
                    if other != name:
                        raise DataError(split.source, "id", f"sample id '{sid}' is in split '{other}' and in split '{name}' (a sample must belong to one split)")

    def __getitem__(self, name: str) -> MultimodalSplit:
        if name not in self.splits:
            raise DataError(self.name, "split", f"no split named '{name}'; available: {sorted(self.splits)}")
        return self.splits[name]

    def __contains__(self, name: str) -> bool:
        return name in self.splits

    def dims(self) -> dict[str, int]:
        """Feature width of each modality (every split has the same): the training split's, or the first split's in
        data without one (new data to predict on)."""
        return (self.splits["train"] if "train" in self.splits else self[next(iter(self.splits), "train")]).dims()

    def test_splits(self) -> list[str]:
        return [n for n in self.splits if n.startswith("test")]


def make_loader(
    split: Dataset[Sample], batch_size: int, *, shuffle: bool = False, num_workers: int = 0, seed: int = 0, shard: tuple[int, int] | None = None
) -> DataLoader[Batch]:
    """A DataLoader that collates samples into :class:`Batch` objects.

    ``shard=(rank, world)``: the share of process ``rank`` of ``world`` in a run on several devices. Each epoch the
    processes draw the same permutation (from ``seed`` and the epoch, which the trainer sets) and take every
    ``world``-th sample of it, so together they see every sample once; when ``world`` does not divide the split,
    the first few of the permutation are repeated to even the shares (torch's DistributedSampler)."""
    import torch
    from torch.utils.data.distributed import DistributedSampler

    # An explicit generator also for unshuffled loaders: otherwise iterating draws from the global RNG. Each epoch's
    # iterator draws the workers' base seed from it before the shuffle order; persistent workers would draw it once
    # only, so the order from the second epoch on (and every result) would depend on num_workers.
    generator = torch.Generator().manual_seed(seed)
    sampler = None if shard is None else DistributedSampler(split, num_replicas=shard[1], rank=shard[0], shuffle=shuffle, seed=seed)
    return DataLoader(
        split,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        generator=generator,
        persistent_workers=False,
    )
