"""OOD splits that expose text shortcuts: simulated annealing over word-label statistics (CLUE, Algorithm 1).

For every word ``w`` of the vocabulary, ``phi[w]`` is the distribution of
sentiment classes over the samples that contain ``w`` (add-``smoothing``
counts). Starting from a random split of the corpus into an IID part and an
OOD part, the annealer proposes, each round, three perturbations (swap one
group of each part, move one group into the OOD part, move one out) and
accepts each by the Metropolis rule on the energy

    V = || |phi_iid - phi_ood| - |phi_delta| ||_1   (sum over words and classes)

where ``phi_delta`` is the target shift (a constant ``target`` for every
entry). The temperature starts at ``temperature`` and is multiplied by
``decay`` after each round; the lowest-energy split seen is kept. Moving
whole classes is the cheapest way to shift every word's distribution, so an
unconstrained split is often mostly a label-prior shift: ``max_prior_shift``
bounds the total variation distance between the IID and OOD class
distributions (moves that widen it beyond the bound are refused; the split
records ``energy['prior_shift']`` either way). Moves are
made by whole groups (all clips of a video), so no video straddles IID and
OOD. The word-by-class counts of both parts are updated incrementally: a
proposal costs time proportional to the words of the moved groups.

Afterwards the IID part is cut at random (by groups) into train / valid /
test, and the OOD part into valid_ood / test_ood. The result is written as a
JSON split file (ids per split, parameters, target, energies and the
word-by-class counts of the parts) and applied to any corpus holding those
ids with :func:`apply_split`.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robustmsa.data.batch import Sample
from robustmsa.data.dataset import DataBundle, MultimodalSplit, check_seed
from robustmsa.data.labels import DROPPED, SCHEMES, classes_of
from robustmsa.data.text_corpora import read_utf8
from robustmsa.errors import ConfigError, DataError
from robustmsa.folders import holds_output, prepare_out_dir

SPLIT_FORMAT = "robustmsa-ood-split"
SPLIT_VERSION = 1
SPLIT_NAMES = ("train", "valid", "test", "valid_ood", "test_ood")
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
#: Function words left out of the label-ratio figure (they are kept in the energy).
STOPWORDS = frozenset(
    "a an the and or but so of to in on at for with from by as is was were be been are am it its it's this that these those i i'm me my we our you your he she "
    "they them his her their there here what which who whom do did does have has had not no um uh just like then than too very really um".split()
)


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens of a text (letters, digits and inner apostrophes; punctuation dropped)."""
    return _TOKEN_RE.findall(text.lower())


# --------------------------------------------------------------------------
# What the annealer needs: ids, groups, texts and classes
# --------------------------------------------------------------------------


@dataclass
class SplitSource:
    """A pooled corpus as seen by the splitter: per sample id, group, raw text and class (-1: unlabelled for the statistics)."""

    ids: list[str]
    groups: list[str]
    texts: list[str]
    classes: np.ndarray
    class_names: tuple[str, ...]
    name: str = "corpus"
    label_scheme: str = "classes"

    def __post_init__(self) -> None:
        self.classes = np.asarray(self.classes, dtype=np.int64)
        n = len(self.ids)
        if not n:
            raise DataError(self.name, None, "the corpus to split is empty")
        if not (len(self.groups) == len(self.texts) == len(self.classes) == n):
            raise DataError(self.name, None, "ids, groups, texts and classes differ in length")
        if len(set(self.ids)) != n:
            dup = next(i for i, c in Counter(self.ids).items() if c > 1)
            raise DataError(self.name, "id", f"duplicate sample id '{dup}'")
        bad = (self.classes < DROPPED) | (self.classes >= len(self.class_names))
        if bad.any():
            raise DataError(self.name, "label", f"sample '{self.ids[int(np.argmax(bad))]}' has class {self.classes[bad][0]}; expected [0, {len(self.class_names)})")

    @classmethod
    def from_samples(cls, samples: Sequence[Sample], *, kind: str, class_names: Sequence[str] = (), scheme: str = "has0", name: str = "corpus") -> SplitSource:
        """From samples with ``raw_text`` and labels: regression labels are binned by ``scheme``, classes used as they are."""
        for s in samples:
            if s.raw_text is None:
                raise DataError(name, "raw_text", f"sample '{s.id}' has no raw text; the OOD split needs the words of every sample")
        if kind == "regression":
            if scheme not in SCHEMES:
                raise ConfigError(f"unknown label scheme '{scheme}'; choose one of {sorted(SCHEMES)}")
            classes = classes_of([s.label for s in samples], scheme)
            names: tuple[str, ...] = SCHEMES[scheme]
        elif kind == "classification":
            classes = np.array([s.label_class for s in samples], dtype=np.int64)
            names = tuple(class_names) or tuple(str(c) for c in range(int(classes.max()) + 1))
            scheme = "classes"
        else:
            raise DataError(name, "task", f"cannot split a '{kind}' corpus by sentiment classes")
        return cls([s.id for s in samples], [s.group or s.id for s in samples], [s.raw_text or "" for s in samples], classes, names, name, scheme)

    @classmethod
    def from_bundle(cls, bundle: DataBundle, scheme: str = "has0") -> SplitSource:
        """All splits of a bundle pooled (each id once, first occurrence kept)."""
        seen: dict[str, Sample] = {}
        for split in bundle.splits.values():
            for s in split.samples:
                seen.setdefault(s.id, s)
        return cls.from_samples(list(seen.values()), kind=bundle.task.kind, class_names=bundle.task.class_names, scheme=scheme, name=bundle.name)


def load_split_source(name: str, scheme: str = "has0", **params: Any) -> SplitSource:
    """A corpus by data-source name, read cheaply (raw texts only matter): ``synthetic`` or a registered loader.

    ``synthetic`` takes :class:`~robustmsa.data.synthetic.SyntheticConfig`
    fields and is generated without text features; registered loaders
    (``mosi_csv``, ``mmsd2``, ...) are called with the hash text encoder
    unless ``text_encoder`` is given.
    """
    if name == "synthetic":
        from robustmsa.data.synthetic import SyntheticConfig, generate_raw

        raw, _ = generate_raw(SyntheticConfig.from_dict(params))
        samples = [s for split in raw.values() for s in split]
        return SplitSource.from_samples(samples, kind="regression", scheme=scheme, name="synthetic")
    from robustmsa.registry import DATASETS

    if not DATASETS.accepts(name, "text_encoder"):
        raise ConfigError(f"data source '{name}' has no text (it takes no 'text_encoder'); split-ood anneals over the words of raw texts")
    bundle = DATASETS.build(name, **{"text_encoder": "hash", **params})
    return SplitSource.from_bundle(bundle, scheme)


def word_class_counts(texts: Sequence[str], classes: Sequence[int], num_classes: int) -> dict[str, np.ndarray]:
    """Per word, the number of samples of each class (C,) that contain it (document frequency; class -1 skipped)."""
    out: dict[str, np.ndarray] = {}
    for text, c in zip(texts, classes):
        if int(c) == DROPPED:
            continue
        for w in set(tokenize(text)):
            out.setdefault(w, np.zeros(num_classes, dtype=np.int64))[int(c)] += 1
    return out


# --------------------------------------------------------------------------
# Word-by-class counts per group
# --------------------------------------------------------------------------


@dataclass
class GroupCounts:
    """Sparse word-by-class counts of each group: entries ``w * C + c`` and their counts (document frequency)."""

    vocab: list[str]
    num_classes: int
    group_names: list[str]
    entries: list[np.ndarray]
    values: list[np.ndarray]
    sizes: np.ndarray  # samples per group
    members: list[list[int]]  # sample indices per group
    classes: np.ndarray  # (groups, C) labelled samples per class in each group

    @classmethod
    def build(cls, source: SplitSource, min_count: int = 5, max_words: int | None = 2000) -> GroupCounts:
        """Vocabulary: words in at least ``min_count`` labelled samples (the ``max_words`` most frequent)."""
        words = [sorted(set(tokenize(t))) for t in source.texts]
        df = Counter(w for ws, c in zip(words, source.classes) if c != DROPPED for w in ws)
        ranked = sorted((w for w, n in df.items() if n >= min_count), key=lambda w: (-df[w], w))
        vocab = ranked[:max_words] if max_words else ranked
        if not vocab:
            raise DataError(source.name, "raw_text", f"no word occurs in {min_count} or more labelled samples; lower min_count")
        index = {w: i for i, w in enumerate(vocab)}
        order: dict[str, int] = {}
        members: list[list[int]] = []
        for i, g in enumerate(source.groups):
            if g not in order:
                order[g] = len(members)
                members.append([])
            members[order[g]].append(i)
        C = len(source.class_names)
        entries, values = [], []
        classes = np.zeros((len(members), C), dtype=np.int64)
        for g, idx in enumerate(members):
            counter: Counter[int] = Counter()
            for i in idx:
                c = int(source.classes[i])
                if c != DROPPED:
                    counter.update(index[w] * C + c for w in words[i] if w in index)
                    classes[g, c] += 1
            keys = np.array(sorted(counter), dtype=np.int64)
            entries.append(keys)
            values.append(np.array([counter[k] for k in keys.tolist()], dtype=np.float64))
        return cls(vocab, C, list(order), entries, values, np.array([len(m) for m in members], dtype=np.int64), members, classes)

    def total(self, chosen: np.ndarray) -> np.ndarray:
        """Word-by-class counts (W, C) summed over the groups where ``chosen`` is True (a full recount)."""
        out = np.zeros(len(self.vocab) * self.num_classes)
        for g in np.flatnonzero(chosen):
            np.add.at(out, self.entries[g], self.values[g])
        return out.reshape(len(self.vocab), self.num_classes)


def prior_shift(iid: np.ndarray, ood: np.ndarray) -> float:
    """Total variation distance (0: same label prior, 1: disjoint classes) between two parts' class counts."""
    a, b = np.asarray(iid, dtype=np.float64), np.asarray(ood, dtype=np.float64)
    if a.sum() == 0 or b.sum() == 0:
        return 0.0
    return float(0.5 * np.abs(a / a.sum() - b / b.sum()).sum())


def word_energy(counts: np.ndarray, target: float, smoothing: float) -> np.ndarray:
    """Per-word energy ``sum_c | |phi_iid - phi_ood| - target |`` from counts (2, k, C) -> (k,)."""
    C = counts.shape[-1]
    phi = (counts + smoothing) / (counts.sum(axis=-1, keepdims=True) + C * smoothing)
    return np.abs(np.abs(phi[0] - phi[1]) - abs(target)).sum(axis=-1)


# --------------------------------------------------------------------------
# Simulated annealing
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class AnnealParams:
    """Settings of :func:`anneal_split` (defaults: CLUE's 800 rounds, temperature 0.5, decay 0.99)."""

    rounds: int = 800
    temperature: float = 0.5
    decay: float = 0.99
    target: float = 0.5
    ood_fraction: float = 0.3
    tolerance: float = 0.05
    valid_ood_fraction: float = 0.2
    iid_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    min_count: int = 5
    max_words: int | None = 2000
    smoothing: float = 1.0
    seed: int = 0
    max_prior_shift: float | None = None

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ConfigError(f"rounds must be >= 0, got {self.rounds}")
        if not (self.temperature > 0 and 0 < self.decay <= 1):
            raise ConfigError(f"temperature must be > 0 and decay in (0, 1], got {self.temperature}, {self.decay}")
        if not 0 <= self.target <= 1:
            raise ConfigError(f"target (|phi_delta|) must be in [0, 1], got {self.target}")
        if not (0 < self.ood_fraction < 1 and 0 <= self.tolerance < min(self.ood_fraction, 1 - self.ood_fraction)):
            raise ConfigError(f"need 0 < ood_fraction < 1 and 0 <= tolerance < min(ood_fraction, 1 - ood_fraction), got {self.ood_fraction}, {self.tolerance}")
        if not 0 <= self.valid_ood_fraction < 1:
            raise ConfigError(f"valid_ood_fraction must be in [0, 1), got {self.valid_ood_fraction}")
        fr = tuple(float(f) for f in self.iid_fractions)
        if len(fr) != 3 or min(fr) <= 0 or not math.isclose(sum(fr), 1.0, abs_tol=1e-6):
            raise ConfigError(f"iid_fractions must be three positive shares (train, valid, test) summing to 1, got {self.iid_fractions}")
        object.__setattr__(self, "iid_fractions", fr)
        if self.max_prior_shift is not None and not 0 <= self.max_prior_shift <= 1:
            raise ConfigError(f"max_prior_shift (a total variation distance) must be in [0, 1] or null, got {self.max_prior_shift}")
        if self.min_count < 1 or self.smoothing <= 0:
            raise ConfigError(f"min_count must be >= 1 and smoothing > 0, got {self.min_count}, {self.smoothing}")
        check_seed(self.seed, "annealing settings")


def anneal_params(params: Mapping[str, Any], what: str = "annealing settings") -> AnnealParams:
    """:class:`AnnealParams` from a mapping; a ConfigError naming ``what`` for an unknown name, a value of the wrong
    type (``min_count: abc``) or one out of range."""
    from robustmsa.registry import check_parameters

    check_parameters(AnnealParams, params, 0, what)
    try:
        return AnnealParams(**params)
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from None


@dataclass
class OODSplit:
    """An OOD split: sample ids per split name plus the statistics it was built from."""

    splits: dict[str, list[str]]
    params: dict[str, Any]
    energy: dict[str, float]
    vocab: list[str]
    class_names: list[str]
    counts: dict[str, np.ndarray]  # part ('iid', 'ood', 'train', 'test_ood', ...) -> (W, C) counts
    source: str = "corpus"
    history: list[float] = field(default_factory=list)
    class_counts: dict[str, list[int]] = field(default_factory=dict)  # split -> samples per class

    def distribution(self, part: str) -> np.ndarray:
        """Unsmoothed class distribution (W, C) of every vocabulary word in ``part`` (NaN rows where absent)."""
        counts = self.counts[part]
        total = counts.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, counts / np.maximum(total, 1), np.nan)


class _Annealer:
    """Mutable state of one annealing run: assignment, incremental counts and per-word energies."""

    def __init__(self, counts: GroupCounts, in_ood: np.ndarray, params: AnnealParams) -> None:
        self.g = counts
        self.p = params
        self.in_ood = in_ood.copy()
        W, C = len(counts.vocab), counts.num_classes
        self.flat = np.zeros((2, W * C))
        self.flat[0] = counts.total(~in_ood).reshape(-1)
        self.flat[1] = counts.total(in_ood).reshape(-1)
        self.word = word_energy(self.flat.reshape(2, W, C), params.target, params.smoothing)
        self.energy = float(self.word.sum())
        self.ood_size = int(counts.sizes[in_ood].sum())
        self.prior = np.stack([counts.classes[~in_ood].sum(axis=0), counts.classes[in_ood].sum(axis=0)]).astype(np.float64)
        total = int(counts.sizes.sum())
        self.bounds = ((params.ood_fraction - params.tolerance) * total, (params.ood_fraction + params.tolerance) * total)

    def _shift(self, group: int, to_ood: bool) -> None:
        src, dst = (0, 1) if to_ood else (1, 0)
        np.subtract.at(self.flat[src], self.g.entries[group], self.g.values[group])
        np.add.at(self.flat[dst], self.g.entries[group], self.g.values[group])
        self.in_ood[group] = to_ood
        self.ood_size += int(self.g.sizes[group]) * (1 if to_ood else -1)
        self.prior[src] -= self.g.classes[group]
        self.prior[dst] += self.g.classes[group]

    @property
    def prior_shift(self) -> float:
        """Total variation distance between the class distributions of the IID and the OOD part."""
        return prior_shift(self.prior[0], self.prior[1])

    def prior_allowed(self) -> bool:
        return self.p.max_prior_shift is None or self.prior_shift <= self.p.max_prior_shift + 1e-12

    def propose(self, moves: list[tuple[int, bool]], temperature: float, rng: np.random.Generator) -> bool:
        """Apply ``moves`` [(group, to_ood)], keep them by the Metropolis rule; only the moved groups' words are re-scored."""
        size = self.ood_size + sum(int(self.g.sizes[g]) * (1 if to else -1) for g, to in moves)
        if not self.bounds[0] <= size <= self.bounds[1]:
            return False
        C = self.g.num_classes
        words = np.unique(np.concatenate([self.g.entries[g] for g, _ in moves]) // C)
        before = self.prior_shift
        for g, to in moves:
            self._shift(g, to)
        if not self.prior_allowed() and self.prior_shift > before:  # a move may not widen a class-prior gap beyond the bound
            for g, to in reversed(moves):
                self._shift(g, not to)
            return False
        rows = self.flat.reshape(2, -1, C)[:, words, :]
        new = word_energy(rows, self.p.target, self.p.smoothing)
        delta = float(new.sum() - self.word[words].sum())
        if delta <= 0 or rng.random() < math.exp(-delta / temperature):
            self.word[words] = new
            self.energy += delta
            return True
        for g, to in reversed(moves):
            self._shift(g, not to)
        return False


def anneal_split(source: SplitSource, params: AnnealParams | None = None) -> OODSplit:
    """Split ``source`` into train/valid/test (IID) and valid_ood/test_ood by simulated annealing (deterministic per seed)."""
    p = params or AnnealParams()
    rng = np.random.default_rng(p.seed)
    gc = GroupCounts.build(source, p.min_count, p.max_words)
    n_groups = len(gc.group_names)
    if n_groups < 5:
        raise DataError(source.name, "group", f"only {n_groups} groups; the OOD split needs at least 5 (train, valid, test, valid_ood, test_ood)")
    # random initial split: groups in random order fill the OOD part up to ood_fraction of the samples
    in_ood = np.zeros(n_groups, dtype=bool)
    goal = p.ood_fraction * gc.sizes.sum()
    filled = 0
    for g in rng.permutation(n_groups):
        if filled >= goal:
            break
        in_ood[g] = True
        filled += int(gc.sizes[g])
    state = _Annealer(gc, in_ood, p)
    initial, start_shift = state.energy, state.prior_shift
    best_energy, best = (state.energy, state.in_ood.copy()) if state.prior_allowed() else (math.inf, None)
    history = [state.energy]
    temperature = p.temperature
    accepted = 0
    for _ in range(p.rounds):
        for kind in ("swap", "move_in", "move_out"):
            iid, ood = np.flatnonzero(~state.in_ood), np.flatnonzero(state.in_ood)
            if kind == "swap":
                moves = [(int(rng.choice(iid)), True), (int(rng.choice(ood)), False)]
            elif kind == "move_in":
                moves = [(int(rng.choice(iid)), True)] if len(iid) > 1 else []
            else:
                moves = [(int(rng.choice(ood)), False)] if len(ood) > 1 else []
            if moves and state.propose(moves, temperature, rng):
                accepted += 1
                if state.energy < best_energy - 1e-12 and state.prior_allowed():
                    best_energy, best = state.energy, state.in_ood.copy()
        temperature *= p.decay
        history.append(state.energy)
    if best is None:
        raise DataError(source.name, "label", f"no split within max_prior_shift {p.max_prior_shift} was reached (the random start's shift: {start_shift:.3f}); raise it or add rounds")
    parts = _cut(gc, best, p, rng)
    W, C = len(gc.vocab), gc.num_classes
    splits = {name: [source.ids[i] for g in groups for i in gc.members[g]] for name, groups in parts.items()}
    counts = {"iid": gc.total(~best), "ood": gc.total(best)}
    for name, groups in parts.items():
        chosen = np.zeros(n_groups, dtype=bool)
        chosen[groups] = True
        counts[name] = gc.total(chosen)
    exact = float(word_energy(np.stack([counts["iid"], counts["ood"]]), p.target, p.smoothing).sum())
    shift = prior_shift(gc.classes[~best].sum(axis=0), gc.classes[best].sum(axis=0))
    energy = {"initial": initial, "final": exact, "mean_per_entry": exact / (W * C), "accepted": accepted, "proposals": 3 * p.rounds, "prior_shift": shift}
    params_out = {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in p.__dict__.items()}, "label_scheme": source.label_scheme, "phi_delta": f"constant {p.target} for every word and class"}
    class_of = dict(zip(source.ids, source.classes.tolist()))
    class_counts = {name: np.bincount(np.array([class_of[i] for i in ids if class_of[i] != DROPPED], dtype=np.int64), minlength=C).tolist() for name, ids in splits.items()}
    return OODSplit(splits, params_out, energy, gc.vocab, list(source.class_names), {k: v.astype(np.int64) for k, v in counts.items()}, source.name, history, class_counts)


def _cut(gc: GroupCounts, in_ood: np.ndarray, p: AnnealParams, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Cut the IID groups into train/valid/test and the OOD groups into valid_ood/test_ood (group indices), at random by sample share."""

    def share(groups: np.ndarray, fractions: Sequence[float], names: Sequence[str]) -> dict[str, np.ndarray]:
        groups = groups[rng.permutation(len(groups))]
        total = gc.sizes[groups].sum()
        bounds = np.cumsum(fractions)[:-1] * total
        cum = np.cumsum(gc.sizes[groups]) - gc.sizes[groups]  # samples before each group
        part = np.searchsorted(bounds, cum, side="right")
        # every part gets at least one group when there are enough groups
        for k in range(len(names)):
            if not (part == k).any() and len(groups) >= len(names):
                donor = int(np.argmax(np.bincount(part, minlength=len(names))))
                part[np.flatnonzero(part == donor)[-1 if k > donor else 0]] = k
        return {name: groups[part == k] for k, name in enumerate(names)}

    iid = share(np.flatnonzero(~in_ood), p.iid_fractions, ("train", "valid", "test"))
    ood_groups = np.flatnonzero(in_ood)
    if p.valid_ood_fraction > 0 and len(ood_groups) >= 2:
        ood = share(ood_groups, (p.valid_ood_fraction, 1 - p.valid_ood_fraction), ("valid_ood", "test_ood"))
    else:
        ood = {"test_ood": ood_groups}
    out = {**iid, **ood}
    for name, groups in out.items():
        if not len(groups):
            raise DataError("ood split", name, "no group landed in this split; use a larger corpus or other fractions")
    return out


# --------------------------------------------------------------------------
# Split files
# --------------------------------------------------------------------------


def write_split_file(path: str | Path, split: OODSplit) -> Path:
    """Write the split as JSON (atomic): ids per split, parameters, energies, per-word counts and distributions."""
    from robustmsa.evaluation.report import write_results

    words = {
        part: {"counts": split.counts[part].tolist(), "distribution": np.round(np.nan_to_num(split.distribution(part), nan=-1.0), 4).tolist()}
        for part in split.counts
    }
    data = {
        "format": SPLIT_FORMAT,
        "version": SPLIT_VERSION,
        "source": split.source,
        "params": split.params,
        "target": split.params.get("target"),
        "energy": split.energy,
        "sizes": {name: len(ids) for name, ids in split.splits.items()},
        "class_counts": split.class_counts,
        "splits": split.splits,
        "class_names": split.class_names,
        "vocab": split.vocab,
        "words": words,
        "history": [round(float(v), 6) for v in split.history],
    }
    return write_results(Path(path), data)


def read_split_file(path: str | Path) -> OODSplit:
    """Read and validate a split file written by :func:`write_split_file` (a DataError naming the file and the field)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(path, None, "is a folder; expected a split file (the split.json that split-ood writes)")
    if not path.is_file():
        raise DataError(path, None, "split file not found")
    try:
        data = json.loads(read_utf8(path))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, an over-long integer; nesting too deep
        raise DataError(path, None, f"not valid JSON: {exc if isinstance(exc, ValueError) else 'nested too deeply'}") from None
    if not isinstance(data, dict) or data.get("format") != SPLIT_FORMAT:
        raise DataError(path, "format", f"expected '{SPLIT_FORMAT}'")
    if data.get("version", SPLIT_VERSION) != SPLIT_VERSION:
        raise DataError(path, "version", f"is {data['version']!r}; this robustmsa reads split files of version {SPLIT_VERSION}")
    splits = data.get("splits")
    if not isinstance(splits, dict) or not splits:
        raise DataError(path, "splits", "missing or empty")
    owner: dict[str, str] = {}
    for name, ids in splits.items():
        if name not in SPLIT_NAMES:
            raise DataError(path, f"splits.{name}", f"unknown split name; expected one of {list(SPLIT_NAMES)}")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise DataError(path, f"splits.{name}", "expected a non-empty list of sample ids (strings)")
        for i in ids:
            if i in owner:
                raise DataError(path, f"splits.{name}", f"id '{i}' is listed twice" if owner[i] == name else f"id '{i}' is also in split '{owner[i]}'")
            owner[i] = name
    if "train" not in splits:
        raise DataError(path, "splits.train", "missing")

    def typed(key: str, kind: type, default: Any, item: Any = None, expected: str = "") -> Any:
        value = data.get(key, default)
        items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        if not isinstance(value, kind) or (item is not None and not all(item(v) for v in items)):
            raise DataError(path, key, f"expected {expected}, got {json.dumps(value)[:80]}")
        return value

    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    def count_list(v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in v)

    vocab = typed("vocab", list, [], lambda w: isinstance(w, str), "a list of words")
    words = typed("words", dict, {}, lambda v: isinstance(v, dict), "a mapping of part -> {'counts': ...}")
    bad_counts = DataError(path, "words", "expected per-part word-by-class 'counts' (whole numbers >= 0) matching 'vocab'")
    try:
        counts = {part: np.asarray(v["counts"]).reshape(len(vocab), -1) for part, v in words.items()}
    except (KeyError, ValueError):  # no counts, ragged lists, a shape that does not match the vocabulary
        raise bad_counts from None
    if any(c.dtype.kind not in "iu" or c.min(initial=0) < 0 for c in counts.values()):  # not whole numbers >= 0 fitting int64
        raise bad_counts
    return OODSplit(
        splits,
        dict(typed("params", dict, {}, expected="a mapping of annealing parameters")),
        dict(typed("energy", dict, {}, number, "a mapping of part -> number")),
        list(vocab),
        list(typed("class_names", list, [], lambda c: isinstance(c, str), "a list of class names")),
        {part: c.astype(np.int64) for part, c in counts.items()},
        typed("source", str, "", expected="a string"),
        list(typed("history", list, [], number, "a list of numbers")),
        dict(typed("class_counts", dict, {}, count_list, "a mapping of split -> counts per class")),
    )


def apply_split(split: OODSplit | str | Path, corpus: DataBundle) -> DataBundle:
    """The corpus re-split by a split file: a bundle with the file's splits (train/valid/test/valid_ood/test_ood)."""
    where = str(split) if isinstance(split, (str, Path)) else "ood split"
    if isinstance(split, (str, Path)):
        split = read_split_file(split)
    pool: dict[str, Sample] = {}
    for part in corpus.splits.values():
        for s in part.samples:
            pool.setdefault(s.id, s)
    splits: dict[str, MultimodalSplit] = {}
    for name, ids in split.splits.items():
        missing = [i for i in ids if i not in pool]
        if missing:
            raise DataError(where, f"splits.{name}", f"{len(missing)} ids are not in corpus '{corpus.name}', e.g. {missing[:3]}")
        splits[name] = MultimodalSplit([pool[i] for i in ids], name=name, source=f"{corpus.name}+{Path(where).name}", task=corpus.task)
    meta = {**corpus.meta, "ood_split": {"file": where, "energy": split.energy, "params": split.params}}
    return DataBundle(splits, corpus.task, name=corpus.name, meta=meta)


# --------------------------------------------------------------------------
# Figure and the one-call entry point
# --------------------------------------------------------------------------


def positive_share(counts: np.ndarray) -> np.ndarray:
    """Share (W,) of samples in the upper half of the classes (non-negative / positive / sarcastic), NaN where absent."""
    C = counts.shape[1]
    total = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts[:, C // 2 :].sum(axis=1) / np.maximum(total, 1), np.nan)


def plot_label_ratios(split: OODSplit, path: str | Path, top_k: int = 20, parts: tuple[str, str] = ("train", "test_ood")) -> Path:
    """CLUE figure 3: label ratio of the most frequent (non-function) words in train vs OOD test."""
    from robustmsa.evaluation.report import _save, plt

    freq = split.counts[parts[0]].sum(axis=1) + split.counts[parts[1]].sum(axis=1)
    order = [i for i in np.argsort(-freq, kind="stable") if split.vocab[i] not in STOPWORDS][:top_k]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(order) + 2), 3.8))
    xs = np.arange(len(order))
    for k, part in enumerate(parts):
        share = positive_share(split.counts[part])[order]
        ax.bar(xs + (k - 0.5) * 0.4, np.nan_to_num(share), width=0.4, label=part)
    upper = "/".join(split.class_names[len(split.class_names) // 2 :]) if split.class_names else "upper classes"
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(xs, [split.vocab[i] for i in order], rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"share labelled {upper}")
    ax.set_title(f"Label ratio of frequent words: {parts[0]} vs {parts[1]} ({split.source})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(path))


@holds_output
def split_ood(
    source: DataBundle | SplitSource | str,
    out_dir: str | Path,
    *,
    rounds: int = 800,
    temperature: float = 0.5,
    decay: float = 0.99,
    seed: int = 0,
    scheme: str = "has0",
    source_params: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    **params: Any,
) -> dict[str, Path]:
    """``robustmsa split-ood``: anneal an OOD split and write ``split.json`` and ``label_ratios.png`` to ``out_dir``.

    ``source``: a bundle, a :class:`SplitSource`, or a data-source name
    (``synthetic``, ``mosi_csv``, ``mmsd2``...) read with ``source_params``.
    Other keyword arguments are :class:`AnnealParams` fields (target,
    ood_fraction, min_count, ...). Returns ``{'split': path, 'figure': path}``.
    """
    out = prepare_out_dir(Path(out_dir), overwrite, marker="split.json")
    if isinstance(source, str):
        source = load_split_source(source, scheme, **dict(source_params or {}))
    elif isinstance(source, DataBundle):
        source = SplitSource.from_bundle(source, scheme)
    result = anneal_split(source, anneal_params({"rounds": rounds, "temperature": temperature, "decay": decay, "seed": seed, **params}, "split-ood"))
    return {"split": write_split_file(out / "split.json", result), "figure": plot_label_ratios(result, out / "label_ratios.png")}
