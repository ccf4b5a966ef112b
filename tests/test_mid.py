"""MID, sample categorisation, MCTD and the image-text protocol on small in-memory data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robustmsa.config import parse_config
from robustmsa.data.batch import Sample, collate
from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec
from robustmsa.debias.categorize import EXCLUDED, categorize, shortcut_mask, strategies_for
from robustmsa.debias.mctd import MCTD, reversed_targets
from robustmsa.debias.mid import MID
from robustmsa.debias.text_cf import make_counterfactual_bundle, split_words
from robustmsa.errors import ConfigError, DataError
from robustmsa.evaluation.compare import _units
from robustmsa.evaluation.mid_protocol import METHOD_NAMES, ImageTextProtocolConfig, f1_intervals, run_image_text_protocol
from robustmsa.features.text import HashEncoder, attach_text_features
from robustmsa.method import Supervised
from robustmsa.metrics import task_metrics
from robustmsa.models.base import Backbone, Output
from robustmsa.models.image_text import ImageText
from robustmsa.training.fit import TrainConfig, fit, predict, seeded

CORE = {0: ("dull", "plain", "sad"), 1: ("witty", "ironic", "great")}
CONTEXT = {0: ("monday", "coffee", "rain"), 1: ("<user>", "#love", "lol")}
FILLER = ("today", "we", "saw", "it", "again")
IMAGE_CORE = {0: "tree", 1: "clown", 2: "dog"}
IMAGE_CONTEXT = {0: "sky", 1: "shirt", 2: "car"}
CORE_WORDS = {w for words in CORE.values() for w in words} | {"meh", "fine"}


class CoreWords:
    """Stand-in core-word extractor: the label-bearing words."""

    key = "toy-core-words"

    def select(self, samples: list[Sample]) -> list[np.ndarray]:
        return [np.array([w in CORE_WORDS for w in split_words(s.raw_text or "")]) for s in samples]


class MaskCoreAttribute:
    """Stand-in image counterfactual: the core attribute token (position 0) zeroed, the context token kept."""

    key = "toy-image-cf"

    def transform(self, samples: list[Sample]) -> list[np.ndarray]:
        out = []
        for s in samples:
            tokens = np.array(s.image, dtype=np.float32)
            tokens[0] = 0.0
            out.append(tokens)
        return out


class Poisoned(MultimodalSplit):
    """A split that fails when read: proves that a step never touches it."""

    def __getitem__(self, index: int) -> Sample:
        raise AssertionError(f"split '{self.name}' must not be read")

    def labels(self) -> np.ndarray:
        raise AssertionError(f"labels of split '{self.name}' must not be read")


def toy_image_text_bundle(
    cache_dir: Path,
    *,
    sizes: tuple[int, int, int] = (160, 60, 60),
    image: bool = True,
    image_cf: bool = True,
    text_cf: bool = True,
    num_classes: int = 2,
    seed: int = 0,
) -> DataBundle:
    """Tweets with a label word (right 85 %), a context word tied to the label in train/valid (90 %) but not in test,
    optional image tokens (a core attribute and a biased context attribute), and counterfactual inputs (text; image
    unless ``image_cf=False``). Features: the 32-d hash encoder (the protocol's ``text_encoder: hash``)."""
    encoder = HashEncoder()
    rng = np.random.default_rng(seed)
    core = dict(CORE) if num_classes == 2 else {**CORE, 2: ("meh", "fine")}
    context = dict(CONTEXT) if num_classes == 2 else {**CONTEXT, 2: ("bus", "train")}
    vectors = {w: encoder.encode([w]).features[0][1] for w in (*IMAGE_CORE.values(), *IMAGE_CONTEXT.values())}
    task = TaskSpec(kind="classification", num_classes=num_classes, label_range=None, class_names=tuple(f"c{k}" for k in range(num_classes)))
    splits = {}
    for name, size, bias in zip(("train", "valid", "test"), sizes, (0.9, 0.9, 1.0 / num_classes)):
        samples = []
        for i in range(size):
            y = int(rng.integers(num_classes))
            shown = y if rng.random() < 0.85 else int(rng.integers(num_classes))
            ctx = y if rng.random() < bias else int(rng.integers(num_classes))
            words = [str(rng.choice(FILLER)), str(rng.choice(core[shown])), str(rng.choice(context[ctx])), str(rng.choice(FILLER))]
            tokens = np.stack([vectors[IMAGE_CORE[shown]], vectors[IMAGE_CONTEXT[ctx]]]) if image else None
            samples.append(Sample(id=f"{name}{i}", group=f"{name}{i}", raw_text=" ".join(words), label_class=y, image=tokens))
        splits[name] = MultimodalSplit(attach_text_features(samples, encoder), name=name, source="toy", task=task)
    bundle = DataBundle(splits, task, name="toy_image_text")
    text_maker, image_maker = CoreWords() if text_cf else None, MaskCoreAttribute() if image and image_cf else None
    if text_maker is None and image_maker is None:
        return bundle
    return make_counterfactual_bundle(bundle, text_maker, image_maker, encoder, cache_dir=cache_dir)


def tiny_backbone(bundle: DataBundle, seed: int = 0) -> ImageText:
    with seeded(seed):
        return ImageText(bundle.dims(), bundle.task, hidden=16, layers=1, heads=2, dropout=0.0)


QUICK = TrainConfig(max_epochs=2, batch_size=32, progress=False)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> DataBundle:
    return toy_image_text_bundle(tmp_path_factory.mktemp("cf"))


def test_mid_combine_is_factual_minus_weighted_counterfactuals(toy: DataBundle) -> None:
    mid = MID(tiny_backbone(toy))
    components = {"p0": torch.tensor([[0.7, 0.3]]), "p_img": torch.tensor([[0.6, 0.4]]), "p_txt": torch.tensor([[0.2, 0.8]])}
    # 0.7 - 0.5*0.6 - 0.25*0.2 = 0.35 ; 0.3 - 0.5*0.4 - 0.25*0.8 = -0.1
    out = mid.combine(components, "mid", {"alpha": 0.5, "beta": 0.25})
    assert torch.allclose(out, torch.tensor([[0.35, -0.1]]))
    assert torch.equal(mid.combine(components, "factual", {"alpha": 0.5, "beta": 0.25}), components["p0"])
    with pytest.raises(ConfigError):
        mid.combine(components, "tie", {})


def test_mid_runs_on_counterfactual_inputs_and_tunes_on_validation_only(toy: DataBundle) -> None:
    base = Supervised(tiny_backbone(toy))
    fit(base, toy, QUICK, seed=0)
    mid = MID.from_base(base, n_trials=6)
    assert mid.backbone is base.backbone and mid.modalities == ("image", "text")
    factual = predict(base, toy["test"])
    assert np.allclose(predict(mid, toy["test"], "mid"), factual, atol=1e-6)  # alpha = beta = 0 before tuning
    batch = collate(toy["test"].samples[:8])
    components = mid.components(batch)
    assert set(components) == {"p0", "p_img", "p_txt", "features"}
    assert not torch.allclose(components["p_txt"], components["p0"])  # the counterfactual input differs
    poisoned = DataBundle({**toy.splits, "test": Poisoned(toy["test"].samples, name="test", source="toy", task=toy.task)}, toy.task)
    chosen = mid.calibrate(poisoned)
    assert chosen["split"] == "valid" and chosen["trials"] == 6
    assert 0.0 <= mid.inference_params["alpha"] <= 1.0 and 0.0 <= mid.inference_params["beta"] <= 1.0
    assert mid.inference_params["alpha"] > 0.0 or mid.inference_params["beta"] > 0.0
    with pytest.raises(ConfigError, match="tune split .* cannot select inference weights: choose a validation split"):
        MID(base.backbone, tune_split="test")
    with pytest.raises(ConfigError, match="n_trials"):
        MID(base.backbone, n_trials=51)
    with pytest.raises(ConfigError, match=r"tune_metric 'bogus' is not a metric of a classification task; choose one of \['Acc'"):
        MID(base.backbone, tune_metric="bogus")


def test_methods_refuse_data_without_their_counterfactual_inputs_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning

    from robustmsa.debias.mctd import MCTD
    from robustmsa.debias.mrid import MRID

    plain = toy_image_text_bundle(tmp_path, sizes=(20, 10, 10), text_cf=False, image_cf=False)
    monkeypatch.setattr(lightning, "Trainer", None)  # any training attempt would fail with a TypeError
    for method, split in ((MID(tiny_backbone(plain)), "valid"), (MRID(tiny_backbone(plain)), "train"), (MCTD(tiny_backbone(plain)), "train")):
        with pytest.raises(ConfigError, match=rf"{type(method).__name__} needs 'image_cf' in the extras of every sample of split '{split}' .*make_counterfactual_bundle"):
            fit(method, plain, QUICK)
    # mode factual is the base model itself: it predicts without counterfactual inputs (MRID without a router too)
    base = tiny_backbone(plain)
    expected = predict(Supervised(base), plain["test"])
    for method in (MID(base), MRID(base)):
        np.testing.assert_array_equal(predict(method, plain["test"], "factual"), expected)
    assert MCTD(base, cf_weight=0.0).required_extras("train") == () and MID(base).required_extras("train") == ()


def test_optuna_search_starts_at_no_debiasing(toy: DataBundle) -> None:
    from robustmsa.tuning.inference import tune_inference_params

    base = Supervised(tiny_backbone(toy))
    fit(base, toy, QUICK, seed=0)
    mid = MID.from_base(base, n_trials=4)
    result = tune_inference_params(mid, toy["valid"], {"alpha": (0.0, 1.0), "beta": (0.0, 1.0)}, mode="mid", metric="F1", search="optuna", n_trials=4)
    assert len(result.trials) == 4 and (result.trials[0]["alpha"], result.trials[0]["beta"]) == (0.0, 0.0)
    assert result.value >= max(t["F1"] for t in result.trials) - 1e-12 >= result.trials[0]["F1"] - 1e-12


def test_mid_without_images_is_text_only(tmp_path: Path) -> None:
    bundle = toy_image_text_bundle(tmp_path, sizes=(60, 30, 30), image=False, num_classes=3)
    mid = MID(tiny_backbone(bundle), n_trials=3)
    assert mid.modalities == ("text",)
    assert set(mid.components(collate(bundle["valid"].samples[:4]))) == {"p0", "p_txt", "features"}
    mid.calibrate(bundle)
    assert mid.inference_params["alpha"] == 0.0
    with pytest.raises(ConfigError, match="missing"):
        MID(tiny_backbone(bundle), strict_modalities=True)
    assert strategies_for(mid.modalities) == (0, 2)


def test_categorize_hand_computed() -> None:
    # true class 0 everywhere; gains g = p0[y] - p_cf[y], eps = 0.1 (strictly greater helps)
    p0 = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6], [0.9, 0.1]])
    p_img = np.array([[0.5, 0.5], [0.85, 0.15], [0.5, 0.5], [0.95, 0.05], [0.45, 0.55], [0.2, 0.8], [0.8, 0.2]])
    p_txt = np.array([[0.85, 0.15], [0.3, 0.7], [0.6, 0.4], [0.95, 0.05], [0.9, 0.1], [0.9, 0.1], [0.8, 0.2]])
    y = np.zeros(7, dtype=np.int64)
    got = categorize(p0, p_img, p_txt, y, eps=0.1)
    # image only / text only / both / none (base right) / excluded (base wrong, nothing helps) / image (base wrong, image helps) / g exactly eps -> none
    assert got.tolist() == [1, 2, 3, 0, EXCLUDED, 1, 0]
    assert categorize(p0, None, p_txt, y, eps=0.1).tolist() == [0, 2, 2, 0, EXCLUDED, EXCLUDED, 0]
    with pytest.raises(ConfigError):
        categorize(p0, None, None, y)


def test_shortcut_mask_hand_computed() -> None:
    p0 = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.2, 0.8]])
    p_cf = torch.tensor([[0.85, 0.15], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    y = torch.tensor([0, 0, 0, 1])
    # kept truth within eps / dropped by 0.3 / flipped / kept truth more confidently
    assert shortcut_mask(p0, p_cf, y, eps=0.1).tolist() == [True, False, False, True]


def test_reversed_targets() -> None:
    assert reversed_targets(torch.tensor([0, 1]), 2).tolist() == [[0.0, 1.0], [1.0, 0.0]]
    assert reversed_targets(torch.tensor([2]), 3).tolist() == [[0.5, 0.5, 0.0]]
    with pytest.raises(ConfigError):
        reversed_targets(torch.tensor([0]), 1)


class LogitsInText(Backbone):
    """Stub: the logits are the first text token times a learnable scale."""

    modalities = ("text",)

    def __init__(self, dims: dict[str, int], task: TaskSpec) -> None:
        super().__init__(dims, task)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, batch):  # type: ignore[no-untyped-def]
        logits = self.scale * batch.text[:, 0, : self.out_dim]
        return Output(logits=logits, fused=logits)


def test_mctd_loss_uses_only_selected_counterfactuals() -> None:
    task = TaskSpec(kind="classification", num_classes=2, label_range=None)
    rows = [(0, [2.0, 0.0], [1.5, 0.0]), (1, [0.0, 2.0], [1.0, 0.0]), (0, [3.0, 0.0], [0.5, 0.0])]
    samples = [
        Sample(
            id=str(i),
            label_class=y,
            text=np.array([f], dtype=np.float32),
            extras={"text_cf": np.array([c], dtype=np.float32), "text_cf_mask": np.ones(1, bool), "text_cf_special": np.zeros(1, bool)},
        )
        for i, (y, f, c) in enumerate(rows)
    ]
    method = MCTD(LogitsInText({"text": 2}, task), modalities=("text",), cf_weight=2.0, eps=0.1)
    losses = method.training_loss(collate(samples))
    # only sample 0 is selected (its counterfactual still says class 0, p 0.818 vs 0.881); its reversed target is class 1
    expected_cf = 2.0 * math.log(1 + math.exp(1.5)) / 3
    expected_task = (2 * math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-3.0))) / 3
    assert losses["selected_text"].item() == pytest.approx(1 / 3)
    assert losses["cf_text"].item() == pytest.approx(expected_cf, rel=1e-5)
    assert losses["loss"].item() == pytest.approx(expected_cf + expected_task, rel=1e-5)
    losses["loss"].backward()
    assert method.backbone.scale.grad is not None
    warm = MCTD(LogitsInText({"text": 2}, task), modalities=("text",), warmup_epochs=1)
    assert "cf_text" not in warm.training_loss(collate(samples))


def test_protocol_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toy = toy_image_text_bundle(tmp_path / "cf", image_cf=False)  # the protocol makes the image counterfactuals with each seed's base
    cfg = ImageTextProtocolConfig.model_validate(
        {
            "data": {"name": "toy", "params": {"text_encoder": "hash"}},
            "backbone": {"name": "image_text", "params": {"hidden": 16, "layers": 1, "heads": 2, "dropout": 0.0}},
            "train": {"max_epochs": 2, "batch_size": 32, "progress": False},
            "counterfactual": {"text": None, "image": {"name": "attribute_mask", "params": {"ratio": 0.5}}},
            "methods": {"n_trials": 3, "router": {"losses": ["weighted"], "max_epochs": 3}, "finetune": {"max_epochs": 1, "batch_size": 32, "progress": False}},
            "seeds": [0],
        }
    )
    results = run_image_text_protocol(cfg, tmp_path, bundle=toy)
    saved = json.loads((tmp_path / "image_text_toy.json").read_text())
    assert saved["seeds"] == [0]
    metrics = saved["aggregate"]["metrics"]
    assert set(metrics) == {"base", "base+FT", "MID", "MCTD", "MME-JD", "MRID"}
    assert all(0.0 <= metrics[m]["F1"]["mean"] <= 1.0 for m in metrics)
    cost = results["per_seed"]["0"]["cost"]
    n_test = len(toy["test"])
    # forwards per test sample: base 1; MCTD 1; MID / MRID factual + 2 counterfactuals, plus 3 to make the image
    # counterfactual (occlusion of 2 attribute tokens: 1 + 2 passes); MME-JD those 6 + 2 experts
    assert [cost[m]["infer_forwards_per_sample"] for m in ("base", "base+FT", "MCTD", "MID", "MRID", "MME-JD")] == [1.0, 1.0, 1.0, 6.0, 6.0, 8.0]
    # the control is the base fine-tuned with MCTD's settings and no counterfactual term: trained from the base's weights
    assert results["per_seed"]["0"]["epochs"]["base+FT"] == results["per_seed"]["0"]["epochs"]["MCTD"] == 1
    assert 1.0 < cost["base+FT"]["train_forwards_rel"] < cost["MCTD"]["train_forwards_rel"]
    report = (tmp_path / "image_text_toy.md").read_text()
    assert "| method | ΔF1 (mean) | std of method | std of base | Δ > both stds | ΔF1 vs base+FT |" in report
    delta = 100 * (metrics["MCTD"]["F1"]["mean"] - metrics["base+FT"]["F1"]["mean"])
    assert any(line.startswith("| MCTD |") and f"| {delta:+.2f} [" in line for line in report.splitlines())
    # the bootstrap: every method's test predictions kept in the seed's record (not in the results) reproduce its F1
    record = json.loads((tmp_path / "seed_0.json").read_text())["result"]["predictions"]
    assert "predictions" not in results["per_seed"]["0"]
    for name in METHOD_NAMES:
        assert task_metrics(np.array(record[name]), toy["test"].labels(), toy.task)["F1"] == pytest.approx(results["per_seed"]["0"]["metrics"][name]["F1"])
    assert set(results["intervals"]["vs_base"]) == set(METHOD_NAMES) - {"base"} and results["intervals"]["resamples"] == 1000
    assert "In brackets: the 95% interval of the difference (averaged over the seeds) over 1000 bootstrap draws of the test split" in report
    one = f1_intervals({0: record}, toy["test"], 1, {0: tmp_path / "seed_0.json"})
    units, _ = _units([s.group for s in toy["test"]])
    idx = np.concatenate([units[k] for k in np.random.default_rng(0).integers(len(units), size=len(units))])
    f1 = {name: task_metrics(np.array(record[name])[idx], toy["test"].labels()[idx], toy.task)["F1"] for name in METHOD_NAMES}
    assert one["vs_base"]["MCTD"]["low"] == pytest.approx(f1["MCTD"] - f1["base"]) and one["vs_control"]["MCTD"]["high"] == pytest.approx(f1["MCTD"] - f1["base+FT"])
    with pytest.raises(DataError, match="seed_0.json: field 'result.predictions.MID': is not one finite prediction per sample of split 'test'"):
        f1_intervals({0: {**record, "MID": record["MID"][:-1]}}, toy["test"], 1, {0: tmp_path / "seed_0.json"})
    assert cost["MID"]["train_forwards_rel"] > 1.0 and cost["base"]["train_forwards_rel"] == 1.0
    router = results["per_seed"]["0"]["router"]
    assert sum(router["categories"]["test"].values()) == n_test
    assert router["test"]["n"] + router["test"]["n_excluded"] == n_test
    assert set(router["test"]["per_category"]) == {"none", "image", "text", "both"}
    oracle = router["oracle"]["MRID"]["Acc"]
    assert oracle >= metrics["MRID"]["Acc"]["mean"] - 1e-9 and oracle >= metrics["base"]["Acc"]["mean"] - 1e-9
    report = (tmp_path / "image_text_toy.md").read_text()
    assert "Oracle router" in report and "ΔF1" in report
    with pytest.raises(ConfigError, match="already exists"):
        run_image_text_protocol(cfg, tmp_path, bundle=toy)
    # a run that stopped before its results file resumes from the seed records, training nothing again
    from robustmsa.evaluation import mid_protocol

    (tmp_path / "image_text_toy.json").unlink()
    monkeypatch.setattr(mid_protocol, "_run_seed", lambda *args: pytest.fail("a finished seed was run again"))
    again = run_image_text_protocol(cfg, tmp_path, bundle=toy)
    assert again["per_seed"] == json.loads(json.dumps(results["per_seed"]))


def test_protocol_makes_attribution_text_counterfactuals_with_the_base_model(tmp_path: Path) -> None:
    from robustmsa.evaluation.mid_protocol import _model_counterfactuals, attach_model_free_counterfactuals

    toy = toy_image_text_bundle(tmp_path / "cf", image_cf=False, text_cf=False)
    cfg = ImageTextProtocolConfig.model_validate(
        {
            "data": {"name": "toy", "params": {"text_encoder": "hash", "cache_dir": str(tmp_path / "cache")}},
            "counterfactual": {"text": {"name": "attribution", "params": {"ratio": 0.25}}, "image": None},
        }
    )
    assert attach_model_free_counterfactuals(cfg, toy) is toy  # attribution needs the trained base model: made per seed
    base = Supervised(tiny_backbone(toy))
    fit(base, toy, QUICK, seed=0)
    data = _model_counterfactuals(cfg, toy, base, ("valid",))
    assert all("text_cf" in s.extras for s in data["valid"]) and "text_cf" not in data["test"][0].extras
    assert all(s.extras["text_cf"].ndim == 2 and s.extras["text_cf"].shape[1] == s.text.shape[1] for s in data["valid"])
    assert any(s.extras["text_cf"].shape != s.text.shape or not np.allclose(s.extras["text_cf"], s.text) for s in data["valid"])
    with pytest.raises(ConfigError, match=r"field 'counterfactual.text': must be one of \['attribution', 'lexicon_pos', 'local_lm'\], got 'nope'"):
        parse_config({"data": {"name": "toy"}, "counterfactual": {"text": {"name": "nope"}}}, "it.yaml", ImageTextProtocolConfig)  # refused when read


def test_protocol_configs_and_train_limit(toy: DataBundle, tmp_path: Path) -> None:
    from robustmsa.evaluation.mid_protocol import limit_train, load_protocol_config

    root = Path(__file__).resolve().parents[1] / "configs" / "image_text"
    mmsd2, mvsa = load_protocol_config(root / "mmsd2.yaml"), load_protocol_config(root / "mvsa.yaml")
    assert mmsd2.seeds == [0, 1, 2] and mmsd2.methods.n_trials <= 50 and mmsd2.counterfactual.image is not None
    assert mvsa.methods.modalities == ["text"] and mvsa.counterfactual.image is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {name: mvsa}\nmethods: {n_trials: 80}\n")
    with pytest.raises(ConfigError, match="n_trials"):
        load_protocol_config(bad)
    for text, message in (  # checked when the config is read, not after the base model was trained
        ("methods: {router: {hiden: 8}}", "field 'methods.router': router config: .*hiden"),
        ("backbone: {name: image_text, params: {hiden: 8}}", r"field 'backbone': backbone 'image_text': unknown parameter\(s\) 'hiden'"),
    ):
        bad.write_text(f"data: {{name: mvsa}}\n{text}\n")
        with pytest.raises(ConfigError, match=message):
            load_protocol_config(bad)
    small = limit_train(toy, 50)
    assert len(small["train"]) == 50 and small["test"] is toy["test"] and small.meta["train_size_full"] == len(toy["train"])
    assert set(small["train"].ids) <= set(toy["train"].ids) and limit_train(toy, 50)["train"].ids == small["train"].ids


def test_prediction_csv_names_debiased_scores_as_scores(toy: DataBundle) -> None:
    from robustmsa.evaluation.predictions import prediction_table

    mid = MID(tiny_backbone(toy))
    mid.set_inference_params(alpha=0.5, beta=0.5)
    header, rows = prediction_table(mid, toy["test"], ["factual", "mid"])
    assert header[3:] == ["factual", "factual:p(c0)", "factual:p(c1)", "mid", "mid:score(c0)", "mid:score(c1)"]
    scores = np.array([[float(r[7]), float(r[8])] for r in rows])
    assert scores.sum(axis=1).max() < 0.5  # p0 - 0.5 p_img - 0.5 p_txt: not a probability (rows sum to about 0)
    from robustmsa.debias.experts import MMEJD
    from robustmsa.debias.mrid import MRID

    assert MRID.score_modes == MMEJD.score_modes == ("routed",)  # a routed strategy may subtract counterfactuals
