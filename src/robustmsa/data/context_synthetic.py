"""A generated context-aware emotion recognition corpus with a known scene-context bias (CAER-S-like).

Each sample is a person in a scene, labelled with one of seven emotions (the
CAER-S classes), as feature tokens like those an image encoder gives:

* **subject** (``vision``, (Ls, subject_dim)): face / body tokens of the
  person, noisy nonlinear functions of an emotion prototype: the cause of the
  label, individually weak.
* **context** (``image``, (Lc, context_dim)): scene tokens with the subject
  masked out. They carry the scene type (a strong feature) and a weak genuine
  emotion cue (bystanders' expressions: the *good* context prior that CLEF
  keeps).
* **the bias**: every emotion has a typical scene. In ``train``, ``valid``
  and ``test`` a sample is shown in its emotion's typical scene with
  probability ``bias_strength`` and in a uniformly drawn scene otherwise; in
  the OOD pool (``valid_ood`` / ``test_ood``) the typical scene is avoided
  with probability ``ood_shift`` (0: scenes independent of the emotion, 1:
  never the typical scene), so a model that reads the emotion off the scene
  fails there.

The task is 7-class classification (``Acc``, ``Macro_F1``, ``Weighted_F1``).
Everything is drawn from ``numpy.random.default_rng`` streams derived from
``seed`` (one per split), so the same settings give identical data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from robustmsa.data.batch import Sample
from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec
from robustmsa.data.settings import GeneratorSettings

EMOTIONS = ("anger", "disgust", "fear", "happy", "neutral", "sad", "surprise")
SPLITS = ("train", "valid", "test", "valid_ood", "test_ood")


@dataclass(frozen=True)
class ContextCorpusConfig(GeneratorSettings):
    """Knobs of the generated context corpus (sizes, bias, noise, token counts and widths)."""

    label = "synthetic_context"

    n_train: int = 2000
    n_valid: int = 400
    n_test: int = 800
    n_valid_ood: int = 400
    n_test_ood: int = 800
    n_scenes: int = 7
    bias_strength: float = 0.75
    ood_shift: float = 1.0
    subject_noise: float = 1.5
    context_noise: float = 0.8
    context_prior: float = 0.6
    subject_tokens: tuple[int, int] = (2, 5)
    context_tokens: tuple[int, int] = (4, 8)
    subject_dim: int = 16
    context_dim: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        self.require(("n_train", "n_valid", "n_test", "n_test_ood"), at_least=1)
        self.require(("n_valid_ood", "seed"), at_least=0)
        self.require(("n_scenes", "subject_dim", "context_dim"), at_least=2)
        self.require(("bias_strength", "ood_shift"), unit=True)
        self.require(("subject_noise", "context_noise", "context_prior"), nonnegative=True)
        for name in ("subject_tokens", "context_tokens"):
            object.__setattr__(self, name, self.int_pair(name, 1))


@dataclass(frozen=True)
class _World:
    """The fixed generative parameters: emotion prototypes, scene embeddings and the token mixing matrices."""

    subject_proto: np.ndarray  # (K, subject_dim)
    subject_mix: np.ndarray  # (subject_dim, subject_dim)
    scene_embed: np.ndarray  # (n_scenes, context_dim)
    prior_embed: np.ndarray  # (K, context_dim)


def _unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _make_world(cfg: ContextCorpusConfig) -> _World:
    rng = np.random.default_rng([cfg.seed, 1000])
    return _World(
        subject_proto=1.5 * _unit_rows(rng, len(EMOTIONS), cfg.subject_dim),
        subject_mix=rng.standard_normal((cfg.subject_dim, cfg.subject_dim)) / math.sqrt(cfg.subject_dim),
        scene_embed=2.0 * _unit_rows(rng, cfg.n_scenes, cfg.context_dim),
        prior_embed=_unit_rows(rng, len(EMOTIONS), cfg.context_dim),
    )


def typical_scene(emotion: int, n_scenes: int) -> int:
    """The scene an emotion is typically shown in (emotions share scenes when there are fewer scenes than emotions)."""
    return emotion % n_scenes


def _scene(rng: np.random.Generator, cfg: ContextCorpusConfig, emotion: int, ood: bool) -> int:
    typical = typical_scene(emotion, cfg.n_scenes)
    if not ood:
        return typical if rng.random() < cfg.bias_strength else int(rng.integers(cfg.n_scenes))
    if rng.random() < cfg.ood_shift:
        return int(rng.choice([s for s in range(cfg.n_scenes) if s != typical]))
    return int(rng.integers(cfg.n_scenes))


def _generate_split(cfg: ContextCorpusConfig, world: _World, name: str) -> tuple[list[Sample], list[int]]:
    rng = np.random.default_rng([cfg.seed, SPLITS.index(name)])
    size = int(getattr(cfg, f"n_{name}"))
    samples, scenes = [], []
    for i in range(size):
        emotion = int(rng.integers(len(EMOTIONS)))
        scene = _scene(rng, cfg, emotion, name.endswith("_ood"))
        n_s = int(rng.integers(cfg.subject_tokens[0], cfg.subject_tokens[1] + 1))
        n_c = int(rng.integers(cfg.context_tokens[0], cfg.context_tokens[1] + 1))
        subject = np.tanh((world.subject_proto[emotion] + cfg.subject_noise * rng.standard_normal((n_s, cfg.subject_dim))) @ world.subject_mix)
        context = world.scene_embed[scene] + cfg.context_prior * world.prior_embed[emotion] + cfg.context_noise * rng.standard_normal((n_c, cfg.context_dim))
        samples.append(Sample(id=f"{name}_{i:05d}", vision=subject.astype(np.float32), image=context.astype(np.float32), label_class=emotion))
        scenes.append(scene)
    return samples, scenes


def generate_context_corpus(config: ContextCorpusConfig | None = None) -> DataBundle:
    """The corpus as a 7-class :class:`DataBundle`; ``meta`` records each sample's scene and each split's bias."""
    cfg = config or ContextCorpusConfig()
    world = _make_world(cfg)
    task = TaskSpec(kind="classification", num_classes=len(EMOTIONS), label_range=None, class_names=EMOTIONS)
    splits: dict[str, MultimodalSplit] = {}
    scene_of: dict[str, int] = {}
    typical_share: dict[str, float] = {}
    for name in SPLITS:
        if not getattr(cfg, f"n_{name}"):
            continue
        samples, scenes = _generate_split(cfg, world, name)
        splits[name] = MultimodalSplit(samples, name=name, source="synthetic_context", task=task)
        scene_of.update({s.id: scene for s, scene in zip(samples, scenes)})
        typical_share[name] = float(np.mean([scene == typical_scene(int(s.label_class), cfg.n_scenes) for s, scene in zip(samples, scenes)]))
    meta = {
        "generator": "robustmsa.data.context_synthetic",
        "config": cfg.to_dict(),
        "typical_scene": {emotion: typical_scene(k, cfg.n_scenes) for k, emotion in enumerate(EMOTIONS)},
        "typical_scene_share": typical_share,
        "sample_scene": scene_of,
    }
    return DataBundle(splits, task, name="synthetic_context", meta=meta)
