"""The generated corpus: determinism, splits, the label function, the planted bias, A/V signal, knobs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from robustmsa.data.synthetic import ADJECTIVES, TOPICS, VERBS, SyntheticConfig, generate_corpus, generate_raw, sentiment_score
from robustmsa.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small():
    return generate_corpus(SyntheticConfig.small())


@pytest.fixture(scope="module")
def medium_raw():
    """A larger corpus without text features (fast): enough samples for rates and probes."""
    return generate_raw(SyntheticConfig(n_train=2000, n_valid=50, n_test=600, n_test_ood=1000, n_valid_ood=50, audio_len=(8, 20), vision_len=(6, 16)))


def _arrays(bundle):
    return {(name, s.id): (s.raw_text, s.label, s.text, s.audio, s.vision) for name, split in bundle.splits.items() for s in split}


def test_same_seed_same_data_other_seed_differs(small) -> None:
    again = generate_corpus(SyntheticConfig.small())
    a, b = _arrays(small), _arrays(again)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key][:2] == b[key][:2]
        for x, y in zip(a[key][2:], b[key][2:]):
            np.testing.assert_array_equal(x, y)
    other = generate_raw(SyntheticConfig.small(seed=1))[0]
    assert [s.raw_text for s in other["train"]] != [s.raw_text for s in small["train"]]
    assert small.meta["topic_polarity"] != generate_raw(SyntheticConfig.small(seed=1))[1]["topic_polarity"]


def test_splits_sizes_groups_and_fields(small) -> None:
    cfg = SyntheticConfig.small()
    sizes = {n: len(s) for n, s in small.splits.items()}
    assert sizes == {"train": cfg.n_train, "valid": cfg.n_valid, "test": cfg.n_test, "test_ood": cfg.n_test_ood, "valid_ood": cfg.n_valid_ood}
    owner: dict[str, str] = {}
    for name, split in small.splits.items():
        for s in split:
            assert re.fullmatch(r"[A-Za-z0-9_-]{11}_\d+", s.id) and s.id.rsplit("_", 1)[0] == s.group
            assert owner.setdefault(s.group, name) == name, f"video {s.group} is in two splits"
            assert s.text.shape == (len(s.raw_text.split()) + 2, 32) and s.text_special[[0, -1]].all()
            assert s.audio.shape[1] == cfg.audio_dim and cfg.audio_len[0] <= len(s.audio) <= cfg.audio_len[1]
            assert s.vision.shape[1] == cfg.vision_dim and cfg.vision_len[0] <= len(s.vision) <= cfg.vision_len[1]
    assert small.task.kind == "regression" and small.task.label_range == (-3.0, 3.0)
    assert small.dims() == {"text": 32, "audio": cfg.audio_dim, "vision": cfg.vision_dim}
    assert small.meta["config"]["seed"] == 0 and small.meta["text_encoder"] == "hash"
    assert small.meta["text_contextual"] is False  # hash word vectors; the default MiniLM features are contextual


def test_label_function_by_hand() -> None:
    assert sentiment_score("the pizza was very good") == pytest.approx(1.5 * 1.5)
    assert sentiment_score("um the soup was not bad") == pytest.approx(-1.6 * -0.7)
    assert sentiment_score("the plot was not very good") == pytest.approx(1.5 * 1.5 * -0.7)  # negation reaches 2 tokens back
    assert sentiment_score("the pizza was good but the soup was awful") == pytest.approx((1.5 - 2.5) / 2)
    assert sentiment_score("i loved the album") == pytest.approx(2.3)
    assert sentiment_score("i bought the camera last week") == 0.0
    assert sentiment_score("extremely perfect") == 3.0  # clipped


def test_labels_follow_the_words() -> None:
    raw, _ = generate_raw(SyntheticConfig.small(label_noise=0.0, label_step=0.0))
    for s in raw["train"]:
        assert s.label == pytest.approx(sentiment_score(s.raw_text), abs=1e-6)
    raw, meta = generate_raw(SyntheticConfig.small())
    labels = np.array([s.label for split in raw.values() for s in split])
    assert labels.min() >= -3 and labels.max() <= 3
    np.testing.assert_allclose(labels / 0.2, np.round(labels / 0.2), atol=1e-6)
    scores = np.array([sentiment_score(s.raw_text) for split in raw.values() for s in split])
    assert np.abs(labels - scores).max() < 5 * 0.3 + 0.1  # only small label noise on top of the words
    words = set(ADJECTIVES) | set(VERBS)
    assert all(any(w in words for w in s.raw_text.split()) for s in raw["train"] if meta["sample_kind"][s.id] != "neutral")


def _aligned_rate(samples, polarity: dict[str, int]) -> float:
    """Share of non-zero-label samples whose topic words' polarity equals the label sign (recomputed from the text)."""
    hits = []
    for s in samples:
        pols = {polarity[w] for w in s.raw_text.split() if w in polarity}
        assert len(pols) == 1, f"topic words of one sample must share a polarity: {s.raw_text}"
        if s.label != 0:
            hits.append(pols.pop() == np.sign(s.label))
    return float(np.mean(hits))


def test_planted_topic_bias_iid_and_ood(medium_raw) -> None:
    raw, meta = medium_raw
    polarity = meta["topic_polarity"]
    assert sorted(polarity) == sorted(w for ws in TOPICS.values() for w in ws) and set(polarity.values()) == {-1, 1}
    for name in ("train", "test"):
        rate = _aligned_rate(raw[name], polarity)
        assert rate == pytest.approx(0.9, abs=0.03)
        assert meta["splits"][name]["aligned_rate"] == pytest.approx(rate)
        assert meta["splits"][name]["topic_label_corr"] > 0.7
    assert _aligned_rate(raw["test_ood"], polarity) == 0.0  # ood_shift=1: fully reversed
    assert meta["splits"]["test_ood"]["topic_label_corr"] < -0.99
    half, half_meta = generate_raw(SyntheticConfig(n_train=20, n_valid=20, n_test=20, n_test_ood=1000, n_valid_ood=0, ood_shift=0.0))
    assert "valid_ood" not in half
    assert _aligned_rate(half["test_ood"], half_meta["topic_polarity"]) == pytest.approx(0.5, abs=0.05)


def _pooled(samples) -> np.ndarray:
    return np.array([np.concatenate([s.audio.mean(0), np.abs(s.audio).mean(0), s.vision.mean(0)]) for s in samples])


def test_audio_vision_carry_the_label_but_not_the_topic(medium_raw) -> None:
    raw, meta = medium_raw
    x_train, x_test = _pooled(raw["train"]), _pooled(raw["test_ood"])
    y_train = np.array([s.label for s in raw["train"]])
    y_test = np.array([s.label for s in raw["test_ood"]])
    design = np.c_[x_train, np.ones(len(x_train))]
    coef = np.linalg.lstsq(design, y_train, rcond=None)[0]
    pred = np.c_[x_test, np.ones(len(x_test))] @ coef
    assert np.corrcoef(pred, y_test)[0, 1] > 0.4  # a linear probe on pooled A/V features transfers to OOD
    # given the label, the topic is not readable from A/V: fit on half of the positive train clips, test on the rest
    positive = [s for s in raw["train"] if s.label > 0]
    half = len(positive) // 2
    x_pos = np.c_[_pooled(positive), np.ones(len(positive))]
    topic = np.array([meta["sample_topic_polarity"][s.id] for s in positive], dtype=float)
    coef = np.linalg.lstsq(x_pos[:half], topic[:half], rcond=None)[0]
    assert abs(np.corrcoef(x_pos[half:] @ coef, topic[half:])[0, 1]) < 0.15


def test_knobs_are_validated(tmp_path: Path) -> None:
    bad_values = [{"bias_strength": 1.5}, {"ood_shift": -0.1}, {"n_train": 0}, {"audio_len": (5, 2)}, {"clips_per_video": (0, 3)}, {"text_encoder": "bert"}]
    for bad in [*bad_values, {"label_noise": float("nan")}, {"weak_share": 0.6, "mixed_share": 0.5}]:
        with pytest.raises(ConfigError):
            SyntheticConfig(**bad)
    with pytest.raises(ConfigError, match="synthetic: 'seed' must be >= 0, got -1"):
        SyntheticConfig(seed=-1)
    with pytest.raises(ConfigError, match="unknown settings"):
        SyntheticConfig.from_dict({"n_trian": 5})
    with pytest.raises(ConfigError, match="pair"):
        SyntheticConfig.from_dict({"audio_len": 5})
    bad_yaml = tmp_path / "s.yaml"
    bad_yaml.write_text("bias_strength: 2\n")
    with pytest.raises(ConfigError, match="s.yaml"):
        SyntheticConfig.from_yaml(bad_yaml)


def test_default_yaml_matches_the_code() -> None:
    assert SyntheticConfig.from_yaml(ROOT / "configs" / "data" / "synthetic_default.yaml") == SyntheticConfig()


def test_registered_loader_and_mmsa_round_trip(tmp_path: Path) -> None:
    from robustmsa.data.mmsa import read_mmsa_pickle, write_mmsa_pickle
    from robustmsa.registry import DATASETS

    bundle = DATASETS.build("synthetic", n_train=20, n_valid=10, n_test=10, n_test_ood=10, n_valid_ood=10, text_encoder="hash", seed=5)
    assert len(bundle["train"]) == 20 and bundle.name == "synthetic"
    write_mmsa_pickle(bundle, tmp_path / "synthetic.pkl")
    back = read_mmsa_pickle(tmp_path / "synthetic.pkl")
    assert set(back.splits) == set(bundle.splits)
    for name, split in bundle.splits.items():
        for a, b in zip(split, back[name]):
            assert (a.id, a.group, a.raw_text) == (b.id, b.group, b.raw_text) and a.label == pytest.approx(b.label)
            for field in ("text", "audio", "vision"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
