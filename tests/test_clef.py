"""CLEF: the generated context corpus, the two-stream backbone, the context branch, TE/TIE, multi-label, the protocol."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from robustmsa.data.batch import Sample, collate
from robustmsa.data.context_synthetic import EMOTIONS, ContextCorpusConfig, generate_context_corpus, typical_scene
from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec
from robustmsa.debias.clef import CLEF
from robustmsa.debias.direct_effect import build_debiased, train_debiased
from robustmsa.errors import ConfigError, DataError
from robustmsa.evaluation.clue_protocol import parse_protocol_config, run_clue_protocol
from robustmsa.metrics import mean_average_precision, per_class_results, task_metrics
from robustmsa.registry import BACKBONES, DATASETS, METHODS
from robustmsa.training.fit import TrainConfig, evaluate, seeded

FAST = TrainConfig(max_epochs=2, patience=2, batch_size=32, progress=False)
SMALL = {"n_train": 240, "n_valid": 60, "n_test": 60, "n_valid_ood": 60, "n_test_ood": 60}


@pytest.fixture(scope="module")
def small() -> DataBundle:
    return generate_context_corpus(ContextCorpusConfig(**SMALL))


def _batch(data: DataBundle, split: str = "test", n: int = 8):
    return collate([data[split][i] for i in range(n)])


# --- the corpus -------------------------------------------------------------


def test_corpus_plants_the_scene_bias_and_breaks_it_in_the_ood_pool() -> None:
    data = generate_context_corpus(ContextCorpusConfig(**SMALL, bias_strength=0.9, ood_shift=1.0))
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 240, "valid": 60, "test": 60, "valid_ood": 60, "test_ood": 60}
    assert data.dims() == {"vision": 16, "image": 16} and data.task.num_classes == 7 and data.task.class_names[3] == "happy"
    share = data.meta["typical_scene_share"]
    assert share["train"] > 0.85 and share["test"] > 0.8 and share["valid_ood"] == 0.0 and share["test_ood"] == 0.0
    scenes = data.meta["sample_scene"]
    assert all(scenes[s.id] != typical_scene(s.label_class, 7) for s in data["test_ood"])
    independent = generate_context_corpus(ContextCorpusConfig(**SMALL, bias_strength=0.0, ood_shift=0.0))
    assert independent.meta["typical_scene_share"]["train"] < 0.3  # 1/7 expected


def test_corpus_is_deterministic_and_seeded() -> None:
    a, b = (generate_context_corpus(ContextCorpusConfig(**SMALL)) for _ in range(2))
    c = generate_context_corpus(ContextCorpusConfig(**SMALL, seed=1))
    assert a["train"].fingerprint() == b["train"].fingerprint() != c["train"].fingerprint()
    first = a["train"][0]
    assert first.vision.shape[1] == 16 and 2 <= first.vision.shape[0] <= 5 and 4 <= first.image.shape[0] <= 8


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bias_strength": 1.5}, "'bias_strength' must be in"),
        ({"n_scenes": 1}, "'n_scenes' must be >= 2"),
        ({"seed": -1}, "'seed' must be >= 0, got -1"),
        ({"context_tokens": [3, 2]}, "'context_tokens'"),
        ({"colour": 1}, "unknown parameter\\(s\\) 'colour'"),
    ],
)
def test_corpus_settings_are_checked(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DATASETS.build("synthetic_context", **change)


# --- the two-stream backbone and the context branch -----------------------------


def test_two_stream_backbone_shapes_fusion_weights_and_padding(small: DataBundle) -> None:
    with seeded(0):
        model = BACKBONES.build("two_stream", small.dims(), small.task, hidden=16).eval()
    batch = _batch(small)
    out = model(batch)
    assert out.logits.shape == (8, 7) and out.fused.shape == (8, 32) and set(out.modality) == {"subject", "context"}
    torch.testing.assert_close(out.extras["fusion_weights"].sum(-1), torch.ones(8))
    # a sample's output does not depend on the padding its batch adds (masks are honoured)
    alone = model(collate([small["test"][0]])).logits
    torch.testing.assert_close(alone[0], out.logits[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="needs modalities"):
        BACKBONES.build("two_stream", {"vision": 16}, small.task)
    with seeded(0):  # the EMOTIC baseline: plain concatenation, no guidance
        concat = BACKBONES.build("two_stream", small.dims(), small.task, hidden=16, guided=False, fusion="concat").eval()
    out = concat(batch)
    assert concat.guide is None and concat.stream_scores is None and torch.all(out.extras["fusion_weights"] == 1)
    torch.testing.assert_close(out.fused, torch.cat([out.modality["subject"], out.modality["context"]], dim=-1))
    with pytest.raises(ConfigError, match="fusion must be 'adaptive' or 'concat'"):
        BACKBONES.build("two_stream", small.dims(), small.task, fusion="sum")


def test_context_branch_sees_only_the_masked_scene_unless_asked(small: DataBundle) -> None:
    batch = _batch(small)
    other_person = batch.replace(vision=torch.randn_like(batch.vision))
    for branch_input, depends_on_person in (("context", False), ("full", True)):
        method = build_debiased("clef", small, "two_stream", {"hidden": 16}, context_branch={"input": branch_input, "hidden": 16}).eval()
        y_c, y_c_other = method.components(batch)["y_c"], method.components(other_person)["y_c"]
        assert (not torch.allclose(y_c, y_c_other)) is depends_on_person
    with pytest.raises(ConfigError, match="context_branch.input"):
        build_debiased("clef", small, "two_stream", context_branch={"input": "scene"})
    with pytest.raises(ConfigError, match="method 'clef': 'context_branch': unknown parameter\\(s\\) 'hiden'"):  # also when built in code
        CLEF(BACKBONES.build("two_stream", small.dims(), small.task), context_branch={"hiden": 8})
    method = build_debiased("clef", small, "two_stream", {"hidden": 16}, context_branch={"hidden": 16})
    with pytest.raises(DataError, match="image"):
        method.components(batch.replace(image=None))


# --- CLEF: components, modes, ablations, training -------------------------------


def test_clef_components_modes_and_ablations(small: DataBundle) -> None:
    method = build_debiased("clef", small, "two_stream", {"hidden": 16}, context_branch={"hidden": 16}, counterfactual="vector")
    assert isinstance(method, CLEF) and method.modes == ("te", "tie", "context", "ensemble")
    method.y_cf.data.fill_(0.3)
    comps = method.components(_batch(small))
    torch.testing.assert_close(comps["te"], torch.nn.functional.logsigmoid(comps["y_c"] + comps["y_e"]))
    torch.testing.assert_close(comps["nde"], torch.nn.functional.logsigmoid(comps["y_c"] + 0.3))
    tie = method.combine(comps, "tie", {"tau": 1.5})
    torch.testing.assert_close(tie, (comps["te"] - 1.5 * comps["nde"]).softmax(-1))
    torch.testing.assert_close(method.combine(comps, "context", {}), comps["y_c"].softmax(-1))
    with pytest.raises(ConfigError, match="no inference mode 'text'"):
        method.combine(comps, "text", {})
    no_context = build_debiased("clef", small, "two_stream", {"hidden": 16}, use_context=False)
    assert no_context.bias_branch is None and torch.all(no_context.components(_batch(small))["y_c"] == 0)
    with pytest.raises(ConfigError, match="at least one of its two branches"):
        build_debiased("clef", small, "two_stream", use_context=False, use_ensemble=False)
    with pytest.raises(ConfigError, match="unknown parameter\\(s\\) 'bias_branch'"):  # filled by CLEF itself, not a config
        METHODS.check("clef", {"bias_branch": {}}, 1)
    with pytest.raises(ConfigError, match="does not remove a direct effect"):
        build_debiased("supervised", small, "two_stream")


def test_clef_losses_reach_the_right_parameters(small: DataBundle) -> None:
    method = build_debiased("clef", small, "two_stream", {"hidden": 16}, context_branch={"hidden": 16}, alpha=0.0, beta=1.0, gamma=0.0)
    method.training_loss(_batch(small))["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.bias_branch.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in method.backbone.parameters())  # beta trains the context branch only
    assert method.y_cf.grad is None or method.y_cf.grad.abs().sum() == 0


def _multilabel_bundle() -> DataBundle:
    """4 labels; label 0 shows in the scene tokens, label 1 in the person tokens (EMOTIC-shaped, tiny)."""
    task = TaskSpec(kind="multilabel", num_classes=4, label_range=None)
    rng = np.random.default_rng(0)

    def split(name: str, n: int) -> MultimodalSplit:
        samples = []
        for i in range(n):
            labels = (rng.random(4) < 0.4).astype(np.float32)
            image = rng.normal(size=(5, 6)).astype(np.float32) + labels[:1]
            vision = rng.normal(size=(3, 6)).astype(np.float32) + labels[1:2]
            samples.append(Sample(id=f"{name}{i}", vision=vision, image=image, label_multi=labels))
        return MultimodalSplit(samples, name=name, source="toy", task=task)

    return DataBundle({"train": split("train", 96), "valid": split("valid", 32), "test": split("test", 32)}, task)


def test_clef_on_a_multilabel_task_uses_binary_losses_and_map() -> None:
    data = _multilabel_bundle()
    with pytest.raises(ConfigError, match="on a multilabel task the fusion is 'sum'"):
        build_debiased("clef", data, "two_stream", fusion="hm")
    method, chosen = train_debiased("clef", data, "two_stream", {"hidden": 16}, FAST, 0, context_branch={"hidden": 16}, tau_grid=[1.0, 2.0])
    assert chosen["metric"] == "mAP" and chosen["tau"] in (1.0, 2.0)
    scores = evaluate(method, data["test"], ("te", "tie"))
    assert set(scores["tie"]) >= {"mAP", "Macro_F1"} and 0.0 <= scores["te"]["mAP"] <= 1.0
    losses = method.training_loss(collate(list(data["train"])[:8]))
    assert set(losses) == {"fused", "bias", "kl", "loss"} and torch.isfinite(losses["loss"])


def test_mean_average_precision_matches_scikit_learn_and_skips_labels_without_positives() -> None:
    rng = np.random.default_rng(1)
    truth = (rng.random((40, 3)) < 0.3).astype(int)
    truth[:, 2] = 0
    scores = rng.random((40, 3))
    expected = np.mean([average_precision_score(truth[:, k], scores[:, k]) for k in (0, 1)])
    assert mean_average_precision(scores, truth) == pytest.approx(expected)
    assert task_metrics(scores, truth, TaskSpec(kind="multilabel", num_classes=truth.shape[1], label_range=None))["mAP"] == pytest.approx(expected)
    assert np.isnan(mean_average_precision(scores, np.zeros_like(truth)))
    with pytest.raises(ValueError, match="one shape"):
        mean_average_precision(scores, truth[:, :2])
    names = ["a", "b", "c"]
    by_label = {name: average_precision_score(truth[:, k], scores[:, k]) for k, name in enumerate(names[:2])}
    assert per_class_results(scores, truth, "multilabel", names) == pytest.approx(by_label)  # 'c' has no positive
    classes = np.array([0, 0, 1, 1, 1])
    votes = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0]], dtype=float)
    assert per_class_results(votes, classes, "classification", names) == {"a": 0.5, "b": 2 / 3}  # 'c' has no sample
    with pytest.raises(ValueError, match="class labels"):
        per_class_results(votes[:, 0], classes, "regression", names)


def test_clef_removes_the_scene_shortcut_on_the_ood_test() -> None:
    """Trained on a strongly biased corpus, TIE beats the plain model on the OOD test (scene never typical)."""
    data = generate_context_corpus(ContextCorpusConfig(n_train=800, n_valid=150, n_test=200, n_valid_ood=150, n_test_ood=300, bias_strength=0.85))
    cfg = TrainConfig(max_epochs=12, patience=4, batch_size=64, lr=0.002, progress=False)
    from robustmsa.method import Supervised
    from robustmsa.training.fit import fit

    with seeded(0):
        base = Supervised(BACKBONES.build("two_stream", data.dims(), data.task, hidden=32))
    fit(base, data, cfg, seed=0)
    clef, _ = train_debiased("clef", data, "two_stream", {"hidden": 32}, cfg, 0, context_branch={"hidden": 32}, tau_split="valid_ood")
    base_ood = evaluate(base, data["test_ood"])["factual"]["Acc"]
    tie_ood = evaluate(clef, data["test_ood"], ("tie",))["tie"]["Acc"]
    assert tie_ood > base_ood + 0.05, (base_ood, tie_ood)


# --- the protocol --------------------------------------------------------------------


def test_protocol_runs_clef_with_its_ablations(small: DataBundle, tmp_path) -> None:
    config = parse_protocol_config(
        {
            "method": "clef",
            "data": {"name": "synthetic_context"},
            "backbone": {"name": "two_stream", "params": {"hidden": 16}},
            "clef": {"context_branch": {"hidden": 16}, "tau_split": "valid_ood"},
            "train": {"max_epochs": 1, "patience": 1, "progress": False},
            "seeds": [0],
        }
    )
    results = run_clue_protocol(config, tmp_path, bundle=small)
    row = results["schemes"]["classes"]["per_seed"]["0"]
    assert {"base", "clef", "w/o context branch", "w/o KL", "w/o masking"} <= set(row) and "case_study" not in row
    assert row["clef"]["calibration"]["split"] == "valid_ood"
    report = (tmp_path / "report.md").read_text()
    assert "# CLEF protocol: two_stream vs two_stream + CLEF" in report and "+CLEF w/o masking — OOD test (TIE)" in report
    per_class = row["per_class"]
    assert set(per_class) == {"base", "clef"} and set(per_class["clef"]) <= set(EMOTIONS) and all(0 <= v <= 1 for v in per_class["base"].values())
    assert "## Per class on OOD test (recall, %, mean over seeds)" in report and "| happy |" in report


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "clef", "clue": {"gamma": 0.0}}, r"field 'clue': parameters of 'clue' given, but the protocol's method is 'clef'"),
        ({"method": "clef", "clef": {"use_text": False}}, r"field 'clef': method 'clef': unknown parameter\(s\) 'use_text'"),
        ({"method": "clef", "ablations": {"no text": {"use_text": False}}}, r"field 'ablations': 'no text': method 'clef': unknown parameter\(s\) 'use_text'"),
        ({"method": "clefs"}, r"field 'method'"),
        ({"method": "clef", "clef": {"context_branch": {"hiden": 8}}}, r"field 'clef': method 'clef': 'context_branch': unknown parameter\(s\) 'hiden' \(parameters: input, hidden, dropout\)"),
        ({"method": "clef", "case_study": {"n": 3}}, r"case_study is CLUE's word-level case study; CLEF has none"),
        ({"method": "clef", "ablation_schemes": ["hsa0"]}, r"field 'ablation_schemes.0'"),
        ({"method": "clef", "schemes": []}, r"field 'schemes'"),
        ({"method": "clef", "clef": {"tau_grid": [-1.0, 0.0]}}, None),  # the type is right; the method refuses the value when built
    ],
)
def test_protocol_config_checks_the_methods_parameters(change: dict, message: str | None) -> None:
    if message is None:
        parse_protocol_config({"data": {"name": "synthetic_context"}, "backbone": {"name": "two_stream"}, **change})
        return
    with pytest.raises(ConfigError, match=message):
        parse_protocol_config({"data": {"name": "synthetic_context"}, "backbone": {"name": "two_stream"}, **change})


def test_ablations_for_schemes_the_run_lacks_are_refused_before_training(tmp_path) -> None:
    config = parse_protocol_config({"method": "clef", "data": {"name": "synthetic_context"}, "backbone": {"name": "two_stream"}, "ablation_schemes": ["has0"]}, "clef.yaml")
    bundle = generate_context_corpus(ContextCorpusConfig(**SMALL))
    with pytest.raises(ConfigError, match=r"^clef.yaml: field 'ablation_schemes': \['has0'\]: none is among the run's schemes \['classes'\]"):
        run_clue_protocol(config, tmp_path / "out", bundle=bundle)
    with pytest.raises(ConfigError, match=r"^clef.yaml: field 'schemes': data .* has class labels; schemes must be \['classes'\]"):
        run_clue_protocol(config.model_copy(update={"schemes": ["has0"]}), tmp_path / "out", bundle=bundle)
    assert not (tmp_path / "out").exists()


def test_protocol_on_multilabel_data_with_one_test_split(tmp_path) -> None:
    """EMOTIC's setting: no OOD split, TE and TIE both on 'test'; the table shows mAP and names the split."""
    config = parse_protocol_config(
        {
            "method": "clef",
            "data": {"name": "emotic", "params": {"folder": "unused"}},
            "backbone": {"name": "two_stream", "params": {"hidden": 8}},
            "clef": {"context_branch": {"hidden": 8}},
            "ablations": {},
            "iid_test": "test",
            "ood_test": "test",
            "train": {"max_epochs": 1, "patience": 1, "progress": False},
            "seeds": [0],
            "bootstrap": 100,
        }
    )
    results = run_clue_protocol(config, tmp_path, bundle=_multilabel_bundle())
    assert list(results["schemes"]) == ["classes"] and "mAP" in results["schemes"]["classes"]["per_seed"]["0"]["clef"]["ood"]
    gain = results["schemes"]["classes"]["intervals"]["ood"]["interval"]  # the interval of the headline: mAP
    assert list(gain) == ["mAP"] and 0 < gain["mAP"]["finite"] <= 100 and gain["mAP"]["low"] <= gain["mAP"]["high"]
    report = (tmp_path / "report.md").read_text()
    assert "| model — test set | mAP | Macro_F1 | Micro_F1 | Acc |" in report
    assert "+CLEF — test (TIE)" in report and "## Gain of +CLEF over the base (mAP" in report and "OOD" not in report
    assert "## Per class on test (average precision" in report


def test_a_missing_calibration_split_fails_before_training(small: DataBundle) -> None:
    without = DataBundle({name: split for name, split in small.splits.items() if name != "valid_ood"}, small.task)
    method = build_debiased("clef", without, "two_stream", {"hidden": 8}, context_branch={"hidden": 8}, tau_split="valid_ood")
    assert method.calibration_splits() == ("valid_ood",)
    before = [p.detach().clone() for p in method.parameters()]
    with pytest.raises(DataError, match="no split named 'valid_ood'"):
        train_debiased("clef", without, "two_stream", {"hidden": 8}, FAST, 0, context_branch={"hidden": 8}, tau_split="valid_ood")
    from robustmsa.training.fit import fit

    with pytest.raises(DataError, match="no split named 'valid_ood'"):
        fit(method, without, dataclasses.replace(FAST, valid_mode="te"))
    assert all(torch.equal(a, b) for a, b in zip(before, method.parameters()))  # nothing was trained
