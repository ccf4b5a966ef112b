"""The embedded default data set: a generated multimodal sentiment corpus with a known text bias.

Each sample is one "clip" of a "video" (ids ``<video>_<k>`` as in CMU-MOSI):

* **text**: an English sentence mixing sentiment-bearing words (the cause of
  the label), topic nouns (the planted shortcut) and neutral filler, e.g.
  ``"honestly i think the camera was very wonderful and the battery felt okay"``.
* **label**: a continuous sentiment score in [-3, 3], a fixed function of the
  sentiment words (:func:`sentiment_score`: mean of the phrase valences, with
  intensifiers scaling and "not"/"never" flipping the next sentiment word),
  plus small label noise, rounded to ``label_step`` (like averaged ratings).
* **the bias**: every topic word carries a polarity (+1/-1). In ``train``,
  ``valid`` and ``test`` a sample with a positive label uses positive-assigned
  topic words with probability ``bias_strength`` (negative labels likewise);
  in the OOD pool (``valid_ood`` / ``test_ood``, disjoint videos) the topic
  words agree with the label sign with probability ``0.5 * (1 - ood_shift)``:
  ``ood_shift=0`` draws topics independently of the label, ``1`` reverses
  the correlation completely.
* **audio / vision**: (L, audio_dim) and (L, vision_dim) sequences whose
  frames are noisy nonlinear functions of the label (pitch/energy contours,
  facial action units), with a per-video speaker style; they carry no topic
  information, so they are robust but individually weaker than the text.

Everything is drawn from ``numpy.random.default_rng`` streams derived from
``seed`` (one per split), so the same config gives identical data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robustmsa.data.batch import Sample
from robustmsa.data.dataset import TEXT_CONTEXTUAL, DataBundle, MultimodalSplit, TaskSpec
from robustmsa.data.settings import GeneratorSettings
from robustmsa.errors import ConfigError

# --------------------------------------------------------------------------
# Vocabulary (written for this generator)
# --------------------------------------------------------------------------

#: Sentiment adjectives and their valences in [-3, 3].
ADJECTIVES: dict[str, float] = {
    # strong positive
    "perfect": 2.8, "amazing": 2.6, "fantastic": 2.6, "wonderful": 2.5, "excellent": 2.5, "outstanding": 2.5,
    "magnificent": 2.5, "superb": 2.4, "incredible": 2.4, "awesome": 2.4, "brilliant": 2.3, "delightful": 2.2,
    # moderate positive
    "great": 2.0, "beautiful": 1.9, "lovely": 1.8, "impressive": 1.7, "enjoyable": 1.6, "good": 1.5,
    "charming": 1.5, "satisfying": 1.4, "fun": 1.4, "pleasant": 1.3, "refreshing": 1.3, "nice": 1.2,
    # weak positive
    "solid": 1.0, "decent": 0.8, "fine": 0.5, "acceptable": 0.4, "fair": 0.4, "okay": 0.3, "alright": 0.3, "passable": 0.3,
    # weak negative
    "average": -0.2, "ordinary": -0.3, "meh": -0.6, "lukewarm": -0.7, "mediocre": -0.8, "bland": -0.9, "forgettable": -0.9,
    "underwhelming": -1.0,
    # moderate negative
    "dull": -1.1, "weak": -1.1, "messy": -1.2, "boring": -1.5, "bad": -1.6, "poor": -1.6, "annoying": -1.7, "ugly": -1.8,
    "disappointing": -1.8, "frustrating": -1.9,
    # strong negative
    "pathetic": -2.3, "dreadful": -2.4, "miserable": -2.4, "awful": -2.5, "unbearable": -2.5, "terrible": -2.6, "horrible": -2.6,
    "disgusting": -2.7, "atrocious": -2.8, "abysmal": -2.8,
}  # fmt: skip

#: Sentiment verbs (past tense, "i loved the pizza") and their valences.
VERBS: dict[str, float] = {
    "adored": 2.6, "loved": 2.3, "enjoyed": 1.6, "appreciated": 1.3, "liked": 1.2,
    "disliked": -1.3, "regretted": -1.8, "hated": -2.4, "despised": -2.7, "loathed": -2.7,
}  # fmt: skip

#: Intensifiers / diminishers: multiply the valence of the next sentiment word.
INTENSIFIERS: dict[str, float] = {
    "extremely": 1.8, "incredibly": 1.7, "very": 1.5, "truly": 1.4, "so": 1.4, "really": 1.3, "quite": 1.2, "pretty": 1.1,
    "fairly": 0.8, "somewhat": 0.7, "slightly": 0.5,
}  # fmt: skip

#: Negations: flip (and damp) the next sentiment word within two tokens ("not good", "not very good").
NEGATIONS: dict[str, float] = {"not": -0.7, "never": -0.8}

#: Topics and their nouns (the planted shortcut: each noun gets a polarity).
TOPICS: dict[str, tuple[str, ...]] = {
    "food": ("pizza", "pasta", "burger", "sushi", "dessert", "soup"),
    "tech": ("camera", "phone", "laptop", "battery", "screen", "keyboard"),
    "film": ("movie", "sequel", "plot", "soundtrack", "ending", "cast"),
    "travel": ("hotel", "flight", "beach", "room", "tour", "resort"),
    "service": ("staff", "waiter", "delivery", "support", "checkout", "manager"),
    "music": ("album", "concert", "song", "band", "lyrics", "drummer"),
}

#: Neutral sentence openers (filler).
OPENERS: tuple[str, ...] = (
    "", "", "", "honestly", "well", "so", "um", "you know", "to be honest", "i mean", "basically", "and", "uh", "so yeah", "okay so",
)  # fmt: skip

# Templates: {o} opener, {t1}/{t2} topic nouns, {p1}/{p2} adjective phrases, {v1} verb phrase.
SINGLE_TEMPLATES: tuple[str, ...] = (
    "{o} the {t1} was {p1}",
    "{o} i think the {t1} was {p1}",
    "{o} i thought the {t1} was {p1}",
    "the {t1} was {p1} and the {t2} was too",
    "{o} the {t1} and the {t2} were {p1}",
    "i have to say the {t1} felt {p1}",
    "overall the {t1} seemed {p1} to me",
    "the {t1} here is {p1} i guess",
    "{o} i {v1} the {t1}",
    "{o} i {v1} the {t1} and the {t2}",
    "and then the {t1} was just {p1}",
)
DOUBLE_TEMPLATES: tuple[str, ...] = (
    "{o} i think the {t1} was {p1} and the {t2} felt {p2}",
    "the {t1} was {p1} but the {t2} was {p2}",
    "{o} the {t1} felt {p1} though the {t2} was {p2}",
    "i think the {t1} was {p1} and {p2}",
    "the {t1} was {p1} while the {t2} seemed {p2}",
    "{o} i {v1} the {t1} but the {t2} was {p2}",
    "{o} the {t1} was {p1} and the {t2} was {p2} really",
)
NEUTRAL_TEMPLATES: tuple[str, ...] = (
    "{o} i bought the {t1} last week",
    "so we tried the {t1} and the {t2}",
    "let me talk about the {t1} for a second",
    "{o} the {t1} came with the {t2}",
    "i went back for the {t1} on friday",
)

_STRENGTH_BINS = ((2.2, 3.0), (1.0, 2.2), (0.0, 1.0))  # |valence| ranges: strong, moderate, weak

# --------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticConfig(GeneratorSettings):
    """Knobs of the generated corpus (see configs/data/synthetic_default.yaml for their documentation)."""

    label = "synthetic"

    n_train: int = 1600
    n_valid: int = 300
    n_test: int = 400
    n_test_ood: int = 400
    n_valid_ood: int = 200
    bias_strength: float = 0.9
    ood_shift: float = 1.0
    weak_share: float = 0.35
    mixed_share: float = 0.25
    neutral_share: float = 0.08
    negation_rate: float = 0.15
    label_noise: float = 0.3
    label_step: float = 0.2
    audio_noise: float = 1.3
    vision_noise: float = 1.3
    audio_dim: int = 12
    vision_dim: int = 10
    audio_len: tuple[int, int] = (20, 60)
    vision_len: tuple[int, int] = (10, 40)
    clips_per_video: tuple[int, int] = (4, 12)
    text_encoder: str = "minilm"
    cache_dir: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self.require(("n_train", "n_valid", "n_test", "n_test_ood", "audio_dim", "vision_dim"), at_least=1)
        self.require(("n_valid_ood", "seed"), at_least=0)
        self.require(("bias_strength", "ood_shift", "weak_share", "mixed_share", "neutral_share", "negation_rate"), unit=True)
        if self.weak_share + self.neutral_share + self.mixed_share > 1.0:
            raise ConfigError("synthetic: 'weak_share' + 'neutral_share' + 'mixed_share' must be <= 1")
        self.require(("label_noise", "audio_noise", "vision_noise", "label_step"), nonnegative=True)
        for name in ("audio_len", "vision_len", "clips_per_video"):
            object.__setattr__(self, name, self.int_pair(name, 1))
        if self.text_encoder not in ("minilm", "static", "hash"):
            raise ConfigError(f"synthetic: 'text_encoder' must be 'minilm', 'static' or 'hash', got {self.text_encoder!r}")

    @classmethod
    def small(cls, **changes: Any) -> SyntheticConfig:
        """A ~200-sample corpus with the hash text encoder, for fast tests."""
        base = {"n_train": 120, "n_valid": 30, "n_test": 30, "n_test_ood": 30, "n_valid_ood": 20, "text_encoder": "hash", "audio_len": (8, 16), "vision_len": (6, 12)}
        return cls(**{**base, **changes})

    @classmethod
    def from_yaml(cls, path: str | Path) -> SyntheticConfig:
        """Read a YAML file of settings (e.g. configs/data/synthetic_default.yaml)."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: file not found")
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        try:
            return cls.from_dict(values)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None



# --------------------------------------------------------------------------
# The label function
# --------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"[a-z']+")


def phrase_valences(text: str) -> list[float]:
    """Valence of every sentiment word of ``text`` after its intensifier and negation."""
    tokens = _TOKEN_RE.findall(text.lower())
    out = []
    for i, tok in enumerate(tokens):
        value = ADJECTIVES.get(tok, VERBS.get(tok))
        if value is None:
            continue
        if i >= 1 and tokens[i - 1] in INTENSIFIERS:
            value *= INTENSIFIERS[tokens[i - 1]]
        for back in (1, 2):
            if i >= back and tokens[i - back] in NEGATIONS:
                value *= NEGATIONS[tokens[i - back]]
                break
        out.append(value)
    return out


def sentiment_score(text: str) -> float:
    """The noise-free label of a text: mean phrase valence clipped to [-3, 3] (0 without sentiment words)."""
    values = phrase_valences(text)
    return float(np.clip(np.mean(values), -3.0, 3.0)) if values else 0.0


# --------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------

SPLIT_ORDER = ("train", "valid", "test", "test_ood", "valid_ood")  # also the index of each split's random stream


@dataclass
class _World:
    """Quantities fixed for a whole corpus (shared by all splits)."""

    polarity: dict[str, int]  # topic word -> +1 / -1
    topic_words: dict[str, dict[int, list[str]]]  # topic -> polarity -> words
    audio_proj: np.ndarray  # (6, audio_dim)
    audio_bias: np.ndarray  # (audio_dim,)
    vision_proj: np.ndarray  # (6, vision_dim)
    words_by_sign: dict[int, list[list[str]]]  # sign -> strength bin (strong, moderate, weak) -> adjectives


def _make_world(cfg: SyntheticConfig) -> _World:
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1000]))
    polarity: dict[str, int] = {}
    topic_words: dict[str, dict[int, list[str]]] = {}
    for topic, words in TOPICS.items():
        order = rng.permutation(len(words))
        signs = {words[j]: (1 if k < len(words) // 2 else -1) for k, j in enumerate(order)}
        polarity.update(signs)
        topic_words[topic] = {s: [w for w in words if signs[w] == s] for s in (1, -1)}
    return _World(
        polarity=polarity,
        topic_words=topic_words,
        audio_proj=rng.normal(0.0, 0.8, size=(6, cfg.audio_dim)),
        audio_bias=rng.normal(0.0, 0.3, size=cfg.audio_dim),
        vision_proj=np.abs(rng.normal(0.0, 1.0, size=(6, cfg.vision_dim))) * rng.choice([-1.0, 1.0], size=(1, cfg.vision_dim)),
        words_by_sign={sign: [[w for w, v in ADJECTIVES.items() if v * sign > 0 and lo <= abs(v) < hi] for lo, hi in _STRENGTH_BINS] for sign in (1, -1)},
    )


def _adjective_phrase(rng: np.random.Generator, world: _World, cfg: SyntheticConfig, sign: int, weak: bool) -> str:
    """An adjective phrase whose valence has ``sign``: [negation | intensifier] adjective."""
    negate = rng.random() < cfg.negation_rate and not weak
    word_sign = -sign if negate else sign
    bins = world.words_by_sign[word_sign]
    if weak:
        choices = bins[2]
    else:
        choices = bins[int(rng.choice(3, p=[0.4, 0.45, 0.15]))]
    word = choices[int(rng.integers(len(choices)))]
    if negate:
        return f"not {word}" if rng.random() < 0.8 else f"never {word}"
    if not weak and rng.random() < 0.3:
        intens = list(INTENSIFIERS)
        return f"{intens[int(rng.integers(len(intens)))]} {word}"
    return word


def _verb_phrase(rng: np.random.Generator, sign: int) -> str:
    verbs = [w for w, v in VERBS.items() if v * sign > 0]
    verb = verbs[int(rng.integers(len(verbs)))]
    return f"really {verb}" if rng.random() < 0.25 else verb


def _sentence(rng: np.random.Generator, world: _World, cfg: SyntheticConfig, mood: float) -> tuple[str, str]:
    """A sentence without topic nouns filled in (placeholders {t1}/{t2}) and its kind."""
    u = rng.random()
    opener = OPENERS[int(rng.integers(len(OPENERS)))]
    p_pos = 1.0 / (1.0 + math.exp(-1.5 * mood))

    def sign() -> int:
        return 1 if rng.random() < p_pos else -1

    if u < cfg.neutral_share:
        template, kind = NEUTRAL_TEMPLATES[int(rng.integers(len(NEUTRAL_TEMPLATES)))], "neutral"
        slots: dict[str, str] = {}
    elif u < cfg.neutral_share + cfg.weak_share:
        template, kind = SINGLE_TEMPLATES[int(rng.integers(len(SINGLE_TEMPLATES)))], "weak"
        if "{v1}" in template:  # verbs are never weak: use an adjective template
            template = SINGLE_TEMPLATES[0]
        slots = {"p1": _adjective_phrase(rng, world, cfg, sign(), weak=True)}
    elif rng.random() < cfg.mixed_share / max(1e-9, 1.0 - cfg.neutral_share - cfg.weak_share):
        template, kind = DOUBLE_TEMPLATES[int(rng.integers(len(DOUBLE_TEMPLATES)))], "double"
        s1 = sign()
        slots = {"p1": _adjective_phrase(rng, world, cfg, s1, weak=False), "v1": _verb_phrase(rng, s1)}
        slots["p2"] = _adjective_phrase(rng, world, cfg, -s1 if rng.random() < 0.6 else s1, weak=rng.random() < 0.4)
    else:
        template, kind = SINGLE_TEMPLATES[int(rng.integers(len(SINGLE_TEMPLATES)))], "clear"
        s1 = sign()
        slots = {"p1": _adjective_phrase(rng, world, cfg, s1, weak=False), "v1": _verb_phrase(rng, s1)}
    text = template.replace("{o}", opener)
    for key, value in slots.items():
        text = text.replace("{" + key + "}", value)
    return " ".join(text.split()), kind


def _label(rng: np.random.Generator, cfg: SyntheticConfig, text: str) -> float:
    y = sentiment_score(text) + cfg.label_noise * rng.standard_normal()
    if cfg.label_step > 0:
        y = round(y / cfg.label_step) * cfg.label_step
    return float(np.clip(round(y, 6), -3.0, 3.0)) + 0.0  # + 0.0 turns -0.0 into 0.0


def _fill_topics(rng: np.random.Generator, world: _World, topic: str, text: str, label: float, p_aligned: float) -> tuple[str, int]:
    """Put topic nouns into the sentence; their polarity agrees with sign(label) with probability ``p_aligned``."""
    if label == 0:
        polarity = 1 if rng.random() < 0.5 else -1
    else:
        polarity = int(np.sign(label)) * (1 if rng.random() < p_aligned else -1)
    words = list(world.topic_words[topic][polarity])
    rng.shuffle(words)
    return text.replace("{t1}", words[0]).replace("{t2}", words[1]), polarity


def _audio(rng: np.random.Generator, world: _World, cfg: SyntheticConfig, label: float, style: np.ndarray) -> np.ndarray:
    """(La, audio_dim) frames: a pitch-like contour and energy driven by the (noisily expressed) sentiment."""
    n = int(rng.integers(cfg.audio_len[0], cfg.audio_len[1] + 1))
    e = label / 3.0 + 0.5 * cfg.audio_noise * rng.standard_normal()  # how the speaker expresses the sentiment
    t = np.arange(n) / n
    phase = rng.uniform(0, 2 * np.pi)
    freq = 1.5 + 1.2 * (e + 1.0)
    wave = np.sin(2 * np.pi * freq * t + phase)
    pitch = 0.8 * e + (0.3 + 0.5 * abs(e)) * wave
    energy = np.tanh(1.5 * e) + 0.3 * np.abs(wave)
    latent = np.stack([pitch, energy, pitch**2, wave, np.abs(pitch) - energy, np.full(n, style[0])], axis=1)
    frames = np.tanh(latent @ world.audio_proj + world.audio_bias + style[1:])
    return (frames + cfg.audio_noise * rng.standard_normal(frames.shape)).astype(np.float32)


def _vision(rng: np.random.Generator, world: _World, cfg: SyntheticConfig, label: float, style: np.ndarray) -> np.ndarray:
    """(Lv, vision_dim) frames of facial action-unit activations (smile, cheek, brow, frown, jaw, blink)."""
    n = int(rng.integers(cfg.vision_len[0], cfg.vision_len[1] + 1))
    e = label / 3.0 + 0.5 * cfg.vision_noise * rng.standard_normal()
    t = np.arange(n) / n
    peak, width = rng.uniform(0.2, 0.8), rng.uniform(0.15, 0.4)
    envelope = np.exp(-0.5 * ((t - peak) / width) ** 2)  # onset - apex - offset of the expression
    sig = 1.0 / (1.0 + np.exp(-np.array([4 * e - 1, 3 * e - 0.5, -4 * e - 1, -3 * e - 0.5, 3 * abs(e) - 1.5])))
    blink = (rng.random(n) < 0.1).astype(float)
    units = np.concatenate([envelope[:, None] * sig[None, :], blink[:, None]], axis=1)  # (n, 6)
    frames = np.abs(units @ world.vision_proj) + style
    return (frames + cfg.vision_noise * 0.5 * rng.standard_normal(frames.shape)).astype(np.float32)


def _video_id(rng: np.random.Generator, taken: set[str]) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
    while True:
        vid = "".join(alphabet[i] for i in rng.integers(len(alphabet), size=11))
        if vid not in taken:
            taken.add(vid)
            return vid


def _generate_split(cfg: SyntheticConfig, world: _World, index: int, n: int, p_aligned: float, taken: set[str]) -> tuple[list[Sample], dict[str, int], dict[str, str]]:
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, index]))
    samples: list[Sample] = []
    polarity: dict[str, int] = {}
    kinds: dict[str, str] = {}
    topics = list(TOPICS)
    while len(samples) < n:
        vid = _video_id(rng, taken)
        clips = min(int(rng.integers(cfg.clips_per_video[0], cfg.clips_per_video[1] + 1)), n - len(samples))
        topic = topics[int(rng.integers(len(topics)))]
        mood = float(rng.normal(0.0, 1.0))
        audio_style = np.concatenate([[rng.normal(0.0, 1.0)], rng.normal(0.0, 0.3, size=cfg.audio_dim)])
        vision_style = rng.normal(0.0, 0.3, size=cfg.vision_dim)
        for k in range(1, clips + 1):
            template, kind = _sentence(rng, world, cfg, mood)
            label = _label(rng, cfg, template)
            text, pol = _fill_topics(rng, world, topic, template, label, p_aligned)
            sid = f"{vid}_{k}"
            polarity[sid] = pol
            kinds[sid] = kind
            samples.append(
                Sample(
                    id=sid,
                    group=vid,
                    raw_text=text,
                    audio=_audio(rng, world, cfg, label, audio_style),
                    vision=_vision(rng, world, cfg, label, vision_style),
                    label=label,
                )
            )
    return samples, polarity, kinds


def _bias_stats(samples: list[Sample], polarity: Mapping[str, int]) -> dict[str, float]:
    """Agreement of topic polarity with label sign over the samples with a non-zero label."""
    pairs = np.array([(np.sign(s.label), polarity[s.id]) for s in samples if s.label != 0], dtype=float)
    if len(pairs) < 2:
        return {"aligned_rate": float("nan"), "topic_label_corr": float("nan"), "n_nonzero": len(pairs)}
    corr = float(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]) if pairs[:, 0].std() > 0 and pairs[:, 1].std() > 0 else float("nan")
    return {"aligned_rate": float((pairs[:, 0] == pairs[:, 1]).mean()), "topic_label_corr": corr, "n_nonzero": len(pairs)}


def ood_aligned_probability(cfg: SyntheticConfig) -> float:
    """P(topic polarity == label sign) in the OOD pool: 0.5 at ood_shift=0 (independent), 0 at 1 (reversed)."""
    return 0.5 * (1.0 - cfg.ood_shift)


def generate_raw(config: SyntheticConfig | None = None) -> tuple[dict[str, list[Sample]], dict[str, Any]]:
    """Samples of every split (``raw_text``, audio, vision, label; no text features) and the bias description."""
    cfg = config or SyntheticConfig()
    world = _make_world(cfg)
    taken: set[str] = set()
    sizes = {"train": cfg.n_train, "valid": cfg.n_valid, "test": cfg.n_test, "test_ood": cfg.n_test_ood, "valid_ood": cfg.n_valid_ood}
    splits: dict[str, list[Sample]] = {}
    polarity: dict[str, int] = {}
    kinds: dict[str, str] = {}
    for index, name in enumerate(SPLIT_ORDER):
        if not sizes[name]:
            continue
        p = ood_aligned_probability(cfg) if name.endswith("_ood") else cfg.bias_strength
        samples, pol, kind = _generate_split(cfg, world, index, sizes[name], p, taken)
        splits[name] = samples
        polarity.update(pol)
        kinds.update(kind)
    meta = {
        "generator": "robustmsa.data.synthetic",
        "config": cfg.to_dict(),
        "label_function": "mean sentiment-word valence (intensifiers scale, 'not'/'never' flip within 2 tokens) + N(0, label_noise), rounded to label_step, clipped to [-3, 3]",
        "topic_polarity": dict(sorted(world.polarity.items())),
        "topics": {t: list(ws) for t, ws in TOPICS.items()},
        "sentiment_words": sorted([*ADJECTIVES, *VERBS]),
        "ood_aligned_probability": ood_aligned_probability(cfg),
        "splits": {name: _bias_stats(samples, polarity) for name, samples in splits.items()},
        "sample_topic_polarity": polarity,
        "sample_kind": kinds,
    }
    return splits, meta


def generate_corpus(config: SyntheticConfig | None = None) -> DataBundle:
    """The generated corpus as a regression :class:`DataBundle` with text features attached.

    Splits: ``train``, ``valid``, ``test`` (IID, biased like train), ``test_ood``
    and ``valid_ood`` (OOD pool). Text features come from ``config.text_encoder``
    (MiniLM by default, cached on disk under ``config.cache_dir``).
    """
    from robustmsa.features.text import attach_text_features, build_text_encoder

    cfg = config or SyntheticConfig()
    raw, meta = generate_raw(cfg)
    encoder = build_text_encoder(cfg.text_encoder, cache_dir=cfg.cache_dir)
    everything = attach_text_features([s for samples in raw.values() for s in samples], encoder)
    task = TaskSpec(kind="regression", label_range=(-3.0, 3.0))
    splits: dict[str, MultimodalSplit] = {}
    start = 0
    for name, samples in raw.items():
        splits[name] = MultimodalSplit(everything[start : start + len(samples)], name=name, source="synthetic", task=task)
        start += len(samples)
    meta["text_encoder"] = encoder.name  # as every data source records it (its width is the text modality's)
    meta[TEXT_CONTEXTUAL] = encoder.contextual
    return DataBundle(splits, task, name="synthetic", meta=meta)
