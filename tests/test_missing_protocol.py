"""The missing-rate sweep, the sentiment-clue sensitivity analysis and the real-data views."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from robustmsa.config import ComponentConfig
from robustmsa.data.batch import Batch, Sample, collate
from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec
from robustmsa.errors import ConfigError, DataError, TrainingDiverged
from robustmsa.evaluation.missing_protocol import (
    MissingSweepConfig,
    _only_models,
    _shared_settings,
    combine_sweeps,
    evaluate_missing,
    evaluate_sweep,
    image_as_vision,
    load_sweep_config,
    load_sweep_data,
    load_sweep_method,
    natural_missing_text,
    sentiment_clue_sensitivity,
    standardize,
    subsample,
    sweep_missing,
    sweep_report,
    views_on_other_data,
)
from robustmsa.evaluation.protocols import mean_std
from robustmsa.evaluation.report import write_json
from robustmsa.method import Method
from robustmsa.metrics import regression_metrics
from robustmsa.models.base import Backbone
from robustmsa.provenance import environment
from robustmsa.reconstruct.corruption import missing_rates
from tests.conftest import make_toy_split

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "missing"


#: A one-model sweep that trains for one epoch (no sensitivity analysis).
ONE_EPOCH_BASELINE = {
    "data": {"name": "toy"},
    "backbone": {"name": "text_centric", "params": {"dim": 8, "heads": 2, "av_tokens": 2, "levels": 1}},
    "models": {"baseline": {"name": "missing_robust"}},
    "train": {"max_epochs": 1, "batch_size": 64},
    "sensitivity": {"enabled": False},
}


class SumOfFirstFeature(Method):
    """Score = sum over text tokens of feature 0 (no training): masking a token removes its contribution."""

    def __init__(self, dims: dict[str, int]) -> None:
        super().__init__(Backbone(dims, TaskSpec()))

    def predict(self, batch: Batch, mode: str = "factual") -> Tensor:
        return (batch.text[..., 0] * batch.text_mask).sum(dim=1)


def _word_split(texts: list[tuple[str, float]]) -> MultimodalSplit:
    lexicon = {"bad": -3.0, "awful": -2.0, "good": 1.0, "great": 2.0}
    samples = []
    for i, (text, label) in enumerate(texts):
        words = text.split()
        feats = np.zeros((len(words), 2), np.float32)
        feats[:, 0] = [lexicon.get(w, 0.1) for w in words]
        feats[:, 1] = 1.0
        samples.append(Sample(id=f"w{i}", raw_text=text, text=feats, audio=np.ones((3, 2), np.float32), vision=np.ones((2, 2), np.float32), label=label))
    return MultimodalSplit(samples, name="test", source="words", task=TaskSpec())


def test_sensitivity_counts_flips_per_token() -> None:
    split = _word_split([("the food was bad", -1.0), ("good and great", 2.0), ("good but awful", -1.0), ("bad", 1.0)])
    method = SumOfFirstFeature({"text": 2, "audio": 2, "vision": 2})
    out = sentiment_clue_sensitivity(method, split, top_k=5)
    # correct: texts 0 (score -2.7), 1 (3.1), 2 (-0.9); text 3 (score -3, label +1) is wrong and skipped
    assert out["n_correct"] == 3 and out["n_masked"] == 4 + 3 + 3
    top = {t["token"]: (t["flips"], t["count"]) for t in out["top"]}
    # flips by hand: "bad" in text 0 (-2.7 -> 0.3), "awful" in text 2 (-0.9 -> 1.1); nothing in text 1
    assert top == {"bad": (1, 1), "awful": (1, 1)}
    assert out["flip_rate"] == pytest.approx(2 / 10)


def test_evaluate_missing_clean_rate_matches_plain_metrics_and_is_deterministic() -> None:
    split = _word_split([("good day", 1.0), ("bad day", -2.0), ("great great day", 2.5), ("awful", -1.5), ("good bad good", 0.5)])
    method = SumOfFirstFeature({"text": 2, "audio": 2, "vision": 2})
    out = evaluate_missing(method, split, [0.0, 0.5, 1.0], seed=3, batch_size=2)
    clean = regression_metrics(method.predict(collate(split.samples)).numpy(), split.labels())
    assert out["rates"]["0.0"] == pytest.approx(clean)
    assert out["rates"]["1.0"]["MAE"] == pytest.approx(float(np.mean(np.abs(split.labels()))))  # all tokens gone: score 0
    assert out["mean"]["MAE"] == pytest.approx(np.mean([out["rates"][r]["MAE"] for r in ("0.0", "0.5", "1.0")]))
    assert evaluate_missing(method, split, [0.5], seed=3)["rates"]["0.5"] == out["rates"]["0.5"]  # batch size does not matter
    with pytest.raises(ConfigError):
        evaluate_missing(method, split, [1.5], seed=0)
    # a finer grid keeps one entry per rate (0.05 and 0.25 once shared the keys of 0.1 and 0.2)
    fine = evaluate_missing(method, split, [0.0, 0.05, 0.1, 0.2, 0.25], seed=3)
    assert list(fine["rates"]) == ["0.0", "0.05", "0.1", "0.2", "0.25"]
    assert fine["mean"]["MAE"] == pytest.approx(np.mean([m["MAE"] for m in fine["rates"].values()]))
    with pytest.raises(ConfigError, match="distinct"):
        evaluate_missing(method, split, [0.1, 0.1], seed=0)


def _cmu_like() -> DataBundle:
    rng = np.random.default_rng(0)
    task = TaskSpec(kind="regression", label_range=(1.0, 5.0))

    def split(name: str, n: int, text: bool) -> MultimodalSplit:
        samples = [
            Sample(
                id=f"{name}{i}",
                text=rng.normal(size=(4, 3)).astype(np.float32) if text else None,
                audio=rng.normal(size=(int(rng.integers(2, 6)), 2)).astype(np.float32),
                vision=rng.normal(size=(int(rng.integers(2, 6)), 2)).astype(np.float32),
                label=float(rng.uniform(1, 5)),
            )
            for i in range(n)
        ]
        return MultimodalSplit(samples, name=name, source="cmu", task=task)

    return DataBundle({"train": split("train", 20, False), "valid": split("valid", 10, True), "test": split("test", 10, True)}, task, name="mmmo", meta={"missing_text_splits": ["train"]})


def test_natural_missing_text_fills_zero_text_and_resplits_the_text_pool() -> None:
    raw = _cmu_like()
    out = natural_missing_text(raw, train_share=0.4, valid_share=0.2, label_shift=3.0, seed=1)
    assert {n: len(s) for n, s in out.splits.items()} == {"train": 20 + 8, "valid": 4, "test": 8}
    textless = [s for s in out["train"] if s.id.startswith("train")]
    assert len(textless) == 20 and all(not s.text.any() and s.text.shape[0] == max(s.audio.shape[0], s.vision.shape[0]) for s in textless)
    assert torch.all(missing_rates(collate(textless), "text") == 1.0)
    pool = set(out["train"].ids[20:]) | set(out["valid"].ids) | set(out["test"].ids)
    assert pool == set(raw["valid"].ids) | set(raw["test"].ids)
    originals = {s.id: s.label for n in raw.splits for s in raw[n]}
    assert all(s.label == pytest.approx(originals[s.id] - 3.0) for s in out["test"])
    assert out.task.label_range == (-2.0, 2.0)
    with pytest.raises(DataError):
        natural_missing_text(DataBundle(dict(raw.splits), raw.task, meta={}))
    # standardised audio: zero mean / unit variance over the non-empty training frames; empty frames stay zero
    first = out["train"][0]
    out["train"].samples[0] = dataclasses.replace(first, audio=np.concatenate([np.zeros((1, 2), np.float32), first.audio * 100]))
    scaled = standardize(out, ["audio"])
    frames = np.concatenate([s.audio for s in scaled["train"]])
    real = frames[np.any(frames != 0, axis=1)]
    assert np.allclose(real.mean(0), 0, atol=1e-5) and np.allclose(real.std(0), 1, atol=1e-4)
    assert not scaled["train"][0].audio[0].any() and np.array_equal(scaled["test"][0].vision, out["test"][0].vision)


def test_image_as_vision_moves_image_tokens() -> None:
    task = TaskSpec(kind="classification", num_classes=2, label_range=None)
    samples = [Sample(id=f"m{i}", text=np.ones((3, 4), np.float32), image=np.full((5, 4), i + 1.0, np.float32), label_class=i % 2) for i in range(4)]
    bundle = DataBundle({"train": MultimodalSplit(samples, name="train", source="mmsd", task=task)}, task)
    out = image_as_vision(bundle)
    s = out["train"][2]
    assert s.image is None and np.all(s.vision == 3.0) and s.audio.shape == (0, 1)
    batch = collate(out["train"].samples)
    assert batch.audio_lengths.tolist() == [0, 0, 0, 0]
    small = subsample(bundle, 3, seed=0)
    assert len(small["train"]) == 3 and set(small["train"].ids) <= set(bundle["train"].ids)
    assert small["train"].ids == subsample(bundle, 3, seed=0)["train"].ids


def test_a_stopped_sweep_resumes_with_the_finished_models_and_refuses_other_settings(toy_bundle: DataBundle, tmp_path: Path) -> None:
    config = MissingSweepConfig.model_validate(
        {
            "data": {"name": "toy"},
            "backbone": {"name": "text_centric", "params": {"dim": 8, "heads": 2, "av_tokens": 2, "levels": 1}},
            "models": {"a": {"name": "missing_robust"}, "b": {"name": "missing_robust", "params": {"complete_share": 0.5}}},
            "train": {"max_epochs": 1, "batch_size": 64},
            "sensitivity": {"enabled": False},
        }
    )
    out = tmp_path / "sweep"
    first = sweep_missing(config, out, seeds=[0, 1], rates=[0.0, 0.9], bundle=toy_bundle)
    # stopped while training b on seed 1: no results.json, no record of (1, b)
    (out / "results.json").unlink()
    (out / "seed_1" / "b" / "sweep_result.json").unlink()
    kept = {(seed, m): (out / f"seed_{seed}" / m / "best.ckpt").stat().st_mtime_ns for seed in (0, 1) for m in ("a", "b")}
    resumed = sweep_missing(config, out, seeds=[0, 1], rates=[0.0, 0.9], bundle=toy_bundle)
    assert resumed["per_seed"] == json.loads(json.dumps(first["per_seed"]))  # b retrained on seed 1 gives the same numbers
    after = {key: (out / f"seed_{key[0]}" / key[1] / "best.ckpt").stat().st_mtime_ns for key in kept}
    assert [key for key in kept if after[key] != kept[key]] == [(1, "b")]  # only the unfinished model was trained again
    # other settings in that folder are refused before anything is trained; --overwrite trains afresh
    (out / "results.json").unlink()
    with pytest.raises(ConfigError, match="sweep/run_settings.json: this folder holds a run made with other settings"):
        sweep_missing(config, out, seeds=[0, 1], rates=[0.0, 0.5], bundle=toy_bundle)
    assert (out / "seed_0" / "a" / "best.ckpt").stat().st_mtime_ns == after[0, "a"] and not (out / "results.json").exists()
    record = json.loads((out / "seed_1" / "a" / "sweep_result.json").read_text())
    del record["result"]["mean"]
    (out / "seed_1" / "a" / "sweep_result.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match=r"seed_1/a/sweep_result.json: field 'result.mean' is missing"):
        sweep_missing(config, out, seeds=[0, 1], rates=[0.0, 0.9], bundle=toy_bundle)
    assert not (out / "results.json").exists()
    (out / "seed_0" / "a" / "sweep_result.json").write_text("{not json")
    with pytest.raises(DataError, match="sweep_result.json.*cannot be read as JSON"):
        sweep_missing(config, out, seeds=[0], rates=[0.0, 0.9], bundle=toy_bundle)
    again = sweep_missing(config, out, seeds=[0], rates=[0.0, 0.5], bundle=toy_bundle, overwrite=True)
    assert again["rates"] == [0.0, 0.5] and json.loads((out / "seed_0" / "a" / "sweep_result.json").read_text())["settings"]["rates"] == [0.0, 0.5]
    finished = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    with pytest.raises(ConfigError, match="sweep model 'a': monitor 'Acc' is not a metric of a regression task"):  # checked before --overwrite removes anything
        sweep_missing(config.model_copy(update={"train": config.train.model_copy(update={"monitor": "Acc"})}), out, seeds=[0], rates=[0.0, 0.5], bundle=toy_bundle, overwrite=True)
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == finished
    # a results.json edited by hand is named by sweep-combine / sweep-evaluate instead of crashing them
    saved = json.loads((out / "results.json").read_text())
    assert saved["environment"] == environment() == json.loads((out / "seed_0" / "a" / "sweep_result.json").read_text())["environment"]
    for edit, message in (
        (lambda r: r["per_seed"]["0"]["a"]["mean"].update(MAE="oops"), r"field 'per_seed.0.a.mean.MAE' is 'oops'; expected a number"),
        (lambda r: r["per_seed"]["0"]["b"]["rates"].pop("0.5"), r"field 'per_seed.0.b.rates' has the rates \['0.0'\]; expected \['0.0', '0.5'\]"),
    ):
        edited = json.loads(json.dumps(saved))
        edit(edited)
        (out / "results.json").write_text(json.dumps(edited))
        with pytest.raises(DataError, match=message):
            combine_sweeps([out], tmp_path / "combined")
        assert not (tmp_path / "combined").exists()


def test_a_diverging_model_does_not_stop_the_others_and_is_named(toy_bundle: DataBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from robustmsa.evaluation import missing_protocol as module

    config = MissingSweepConfig.model_validate(
        {
            "data": {"name": "toy"},
            "backbone": {"name": "text_centric", "params": {"dim": 8, "heads": 2, "av_tokens": 2, "levels": 1}},
            "models": {"bad": {"name": "missing_robust", "params": {"complete_share": 0.5}}, "good": {"name": "missing_robust"}},
            "train": {"max_epochs": 1, "batch_size": 64},
            "sensitivity": {"enabled": False},
        }
    )
    train = module.train_sweep_model

    def diverging(config: MissingSweepConfig, name: str, *args: object):  # type: ignore[no-untyped-def]
        if name == "bad":
            raise TrainingDiverged("diverged")
        return train(config, name, *args)

    monkeypatch.setattr(module, "train_sweep_model", diverging)
    out = tmp_path / "sweep"
    with pytest.raises(ConfigError, match="training diverged .* for 'bad' on seed 0, 'bad' on seed 1; no results.json"):
        sweep_missing(config, out, seeds=[0, 1], rates=[0.0], bundle=toy_bundle)
    assert not (out / "results.json").exists() and all((out / f"seed_{s}" / "good" / "sweep_result.json").is_file() for s in (0, 1))
    monkeypatch.setattr(module, "train_sweep_model", train)
    good = {s: (out / f"seed_{s}" / "good" / "best.ckpt").stat().st_mtime_ns for s in (0, 1)}
    results = sweep_missing(config, out, seeds=[0, 1], rates=[0.0], bundle=toy_bundle)  # resumes: only 'bad' trains
    assert set(results["per_seed"]["1"]) == {"bad", "good"}
    assert good == {s: (out / f"seed_{s}" / "good" / "best.ckpt").stat().st_mtime_ns for s in (0, 1)}


def test_a_model_without_the_sweeps_modes_fails_before_any_training(toy_bundle: DataBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from robustmsa.evaluation import missing_protocol as module

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model trained before every model was checked")

    monkeypatch.setattr(module, "fit", no_training)
    config = MissingSweepConfig.model_validate(
        {
            "data": {"name": "toy"},
            "backbone": {"name": "text_centric", "params": {"dim": 8, "heads": 2, "av_tokens": 2, "levels": 1}},
            "models": {"baseline": {"name": "missing_robust"}, "odd": {"name": "clue", "params": {"text_branch": {"input": "features"}}}},
            "sensitivity": {"enabled": False},
        }
    )
    with pytest.raises(ConfigError, match="sweep model 'odd': CLUE has no inference mode 'missing'"):
        sweep_missing(config, tmp_path / "sweep", seeds=[0], rates=[0.0], bundle=toy_bundle)


def test_contextual_text_features_are_refused_unless_allowed_and_then_marked(toy_bundle: DataBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from robustmsa.data.dataset import TEXT_CONTEXTUAL
    from robustmsa.evaluation import missing_protocol as module

    contextual = DataBundle(toy_bundle.splits, toy_bundle.task, name="toy", meta={TEXT_CONTEXTUAL: True, "text_encoder": "minilm"})
    config = MissingSweepConfig.model_validate(ONE_EPOCH_BASELINE)
    with monkeypatch.context() as patch:
        patch.setattr(module, "fit", lambda *a, **k: pytest.fail("trained on contextual text features"))
        with pytest.raises(ConfigError, match=r"data 'toy' has contextual text features \(minilm\).*text_encoder: static.*allow_contextual_text: true"):
            sweep_missing(config, tmp_path / "refused", seeds=[0], rates=[0.0], bundle=contextual)
    assert not (tmp_path / "refused").exists()  # refused before the output folder is made
    allowed = config.model_copy(update={"allow_contextual_text": True})
    results = sweep_missing(allowed, tmp_path / "allowed", seeds=[0], rates=[0.0], bundle=contextual)
    assert results["data"][TEXT_CONTEXTUAL] is True
    assert "**Contextual text features**" in (tmp_path / "allowed" / "report.md").read_text()
    plain = sweep_missing(config, tmp_path / "static", seeds=[0], rates=[0.0], bundle=toy_bundle)  # unknown features: run
    assert TEXT_CONTEXTUAL not in plain["data"] and "Contextual" not in (tmp_path / "static" / "report.md").read_text()


def test_sweep_writes_results_report_and_plots(toy_bundle: DataBundle, tmp_path: Path) -> None:
    config = MissingSweepConfig.model_validate(
        {
            "data": {"name": "toy"},
            "backbone": {"name": "text_centric", "params": {"dim": 8, "heads": 2, "av_tokens": 2, "levels": 1}},
            "models": {"baseline": {"name": "missing_robust"}},
            "train": {"max_epochs": 1, "batch_size": 64},
            "sensitivity": {"max_samples": 5},
        }
    )
    assert config.train.valid_mode == "missing"
    results = sweep_missing(config, tmp_path / "sweep", seeds=[0], rates=[0.0, 0.9], bundle=toy_bundle)
    saved = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert saved["per_seed"]["0"]["baseline"]["rates"].keys() == {"0.0", "0.9"}
    assert results["aggregate"]["baseline"]["mean"]["MAE"]["n"] == 1
    assert "sensitivity" in saved["per_seed"]["0"]["baseline"]
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "| baseline |" in report and "| 0.9 |" in report
    assert (tmp_path / "sweep" / "missing_MAE.png").stat().st_size > 0
    flips = saved["per_seed"]["0"]["baseline"]["sensitivity"]["top"]
    assert (tmp_path / "sweep" / "sensitivity_baseline.png").exists() == bool(flips)
    # the analysis belongs to the config's first seed, not to whichever --seeds come first: a folder run seed by seed
    # resumes with more seeds (before, seed 1 run alone carried the analysis and was refused as "other settings")
    alone = sweep_missing(config, tmp_path / "by_seed", seeds=[1], rates=[0.0, 0.9], bundle=toy_bundle)
    assert "sensitivity" not in alone["per_seed"]["1"]["baseline"] and "Sentiment-clue" not in (tmp_path / "by_seed" / "report.md").read_text()
    assert "No sentiment-clue sensitivity analysis here: it runs on the models of the config's first seed" in (tmp_path / "by_seed" / "report.md").read_text()
    with pytest.raises(ConfigError, match=r"field 'sensitivity.seed': 9 is not one of the config's seeds \[0, 1, 2\]"):
        sweep_missing(config.model_copy(update={"sensitivity": config.sensitivity.model_copy(update={"seed": 9})}), tmp_path / "never", seeds=[0], bundle=toy_bundle)
    (tmp_path / "by_seed" / "results.json").unlink()
    both = sweep_missing(config, tmp_path / "by_seed", seeds=[0, 1], rates=[0.0, 0.9], bundle=toy_bundle)
    assert both["per_seed"]["1"] == json.loads(json.dumps(alone["per_seed"]["1"])) and "sensitivity" in both["per_seed"]["0"]["baseline"]
    assert "## Sentiment-clue sensitivity: baseline (seed 0)" in (tmp_path / "by_seed" / "report.md").read_text()
    assert ("No masked token flipped the predicted polarity" in report) == (not flips)  # not a table of headers only
    none_flipped = json.loads(json.dumps(saved))
    none_flipped["per_seed"]["0"]["baseline"]["sensitivity"]["top"] = []
    assert "No masked token flipped the predicted polarity" in sweep_report(none_flipped, "regression")
    with pytest.raises(ConfigError):  # never overwrite results silently
        sweep_missing(config, tmp_path / "sweep", seeds=[0], rates=[0.0], bundle=toy_bundle)
    method, _ = load_sweep_method(tmp_path / "sweep", "baseline", 0, bundle=toy_bundle)  # reload the best checkpoint
    reloaded = evaluate_missing(method, toy_bundle["test"], [0.0, 0.9], seed=0)
    assert reloaded["mean"]["MAE"] == pytest.approx(results["per_seed"]["0"]["baseline"]["mean"]["MAE"], rel=1e-5)
    # a second seed run separately, then merged: mean +- std over both seeds
    other = sweep_missing(config.model_copy(update={"sensitivity": config.sensitivity.model_copy(update={"enabled": False})}), tmp_path / "s1", seeds=[1], rates=[0.0, 0.9], bundle=toy_bundle)
    merged = combine_sweeps([tmp_path / "sweep", tmp_path / "s1"], tmp_path / "both")
    mae = [results["per_seed"]["0"]["baseline"]["mean"]["MAE"], other["per_seed"]["1"]["baseline"]["mean"]["MAE"]]
    assert merged["seeds"] == [0, 1]
    assert merged["aggregate"]["baseline"]["mean"]["MAE"]["mean"] == pytest.approx(np.mean(mae))
    assert merged["aggregate"]["baseline"]["mean"]["MAE"]["std"] == pytest.approx(np.std(mae, ddof=1))
    with pytest.raises(DataError):  # the same seed twice
        combine_sweeps([tmp_path / "sweep", tmp_path / "sweep"], tmp_path / "twice")
    # the finished sweeps' checkpoints evaluated on another split; the sweep folders stay as they were
    before = (tmp_path / "sweep" / "results.json").read_bytes()
    shifted = evaluate_sweep([tmp_path / "s1", tmp_path / "sweep"], "valid", tmp_path / "valid", bundle=toy_bundle)
    assert shifted["seeds"] == [0, 1] and shifted["data"]["split"] == "valid" and saved["data"]["split"] == "test"
    expected = evaluate_missing(method, toy_bundle["valid"], [0.0, 0.9], seed=0)["mean"]["MAE"]
    assert shifted["per_seed"]["0"]["baseline"]["mean"]["MAE"] == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(reloaded["mean"]["MAE"], rel=1e-3)
    report = (tmp_path / "valid" / "report.md").read_text()
    assert "(valid split)" in report and (tmp_path / "sweep" / "results.json").read_bytes() == before
    assert "**Not a test result**: evaluated on the 'valid' split, the one the models were selected on" in report
    assert "Not a test result" not in (tmp_path / "sweep" / "report.md").read_text()
    assert shifted["per_seed"]["0"]["baseline"]["best_valid"] == saved["per_seed"]["0"]["baseline"]["best_valid"]  # what selected it
    with pytest.raises(DataError, match="no split named"):
        evaluate_sweep([tmp_path / "sweep"], "test_od", tmp_path / "typo", bundle=toy_bundle)


def test_sweep_checkpoints_evaluated_on_other_data(toy_bundle: DataBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another data set with the same features: scored with the sweep's checkpoints, rates and masks; data the models
    cannot be applied to is refused before anything is written."""
    sweep_missing(MissingSweepConfig.model_validate(ONE_EPOCH_BASELINE), tmp_path / "sweep", seeds=[0], rates=[0.0, 0.9], bundle=toy_bundle)
    run = [tmp_path / "sweep"]
    other = DataBundle({"train": make_toy_split(30, "train", 7), "test": make_toy_split(50, "test", 8)}, TaskSpec(), name="toy_shifted")
    out = evaluate_sweep(run, "train", tmp_path / "other", bundle=toy_bundle, source="toy_shifted", other=other)
    method, _ = load_sweep_method(tmp_path / "sweep", "baseline", 0, bundle=toy_bundle)
    expected = evaluate_missing(method, other["train"], [0.0, 0.9], seed=0)
    assert out["per_seed"]["0"]["baseline"]["mean"]["MAE"] == pytest.approx(expected["mean"]["MAE"], rel=1e-6)
    assert expected["mean"]["MAE"] != pytest.approx(evaluate_missing(method, toy_bundle["train"], [0.0, 0.9], seed=0)["mean"]["MAE"], rel=1e-3)
    assert out["data"]["trained_on"] == "toy" and out["data"]["name"] == "toy_shifted" and out["data"]["source"] == {"name": "toy_shifted", "params": {}}
    assert out["data"]["fingerprints"] == {"train": other["train"].fingerprint()} and out["data"]["sizes"] == {"train": 30, "test": 50}
    report = (tmp_path / "other" / "report.md").read_text()
    assert "**Other data**: models trained on 'toy', evaluated on data source 'toy_shifted'" in report
    assert "Not a test result" not in report  # the other data's train split is not the one the models were trained on
    enabled = json.loads(json.dumps(out))
    enabled["config"]["sensitivity"]["enabled"] = True  # evaluations never run the analysis, whatever the config says
    assert "sweep-evaluate scores the checkpoints at the missing rates only" in sweep_report(enabled, "regression")
    itself = evaluate_sweep(run, "train", tmp_path / "itself", bundle=toy_bundle, source="copy", other=toy_bundle)  # its own data under another name
    assert itself["data"]["same_content_as"] == "train"
    assert "the 'train' split evaluated holds the same samples as the 'train' split the models were trained on" in (tmp_path / "itself" / "report.md").read_text()
    unlabelled = MultimodalSplit([dataclasses.replace(s, label=None) for s in other["test"]], name="test", source="new", task=TaskSpec(), labelled=False)
    wide = DataBundle({"test": make_toy_split(20, "test", 7, dims=(16, 6, 4))}, TaskSpec(), name="wide")
    classes = DataBundle({"test": make_toy_split(20, "test", 7, task=TaskSpec(kind="classification", num_classes=2))}, TaskSpec(kind="classification", num_classes=2), name="two")
    for data, message in (
        (wide, r"sweep[/\\]results.json: the model was trained on audio features of width 5; data 'wide' has width 6"),
        (classes, "the model was trained for regression in"),
        (DataBundle({"test": unlabelled}, TaskSpec(), name="new"), "split 'test' of data 'new' has no labels"),
    ):
        with pytest.raises(ConfigError, match=message):
            evaluate_sweep(run, "test", tmp_path / "refused", bundle=toy_bundle, source=data.name, other=data)
    with pytest.raises(ConfigError, match="needs the name of its data source"):
        evaluate_sweep(run, "test", tmp_path / "refused", bundle=toy_bundle, other=other)
    # a folder whose results would be replaced, or a sweep's own folder: refused before any model is evaluated
    from robustmsa.evaluation import missing_protocol

    monkeypatch.setattr(missing_protocol, "evaluate_missing", None)
    with pytest.raises(ConfigError, match=r"other[/\\]results.json already exists; choose another --out folder or pass --overwrite"):
        evaluate_sweep(run, "test", tmp_path / "other", bundle=toy_bundle, source="toy_shifted", other=other)
    (tmp_path / "s1").mkdir()
    with pytest.raises(ConfigError, match="is the folder of a sweep"):  # its results.json would be replaced beside its checkpoints
        evaluate_sweep([tmp_path / "s1"], "test", tmp_path / "sweep", bundle=toy_bundle, overwrite=True)
    monkeypatch.undo()
    unreadable = _fake_sweep(tmp_path / "fake", {"plain": [0.6]})  # trained on data source 'toy', which is not registered
    with pytest.raises(ConfigError, match="the data these checkpoints were trained on cannot be read .*unknown dataset 'toy'"):
        evaluate_sweep([unreadable], "test", tmp_path / "refused", source="toy_shifted", other=other)
    assert not (tmp_path / "refused").exists()


def test_other_data_goes_through_the_sweep_views_with_the_training_statistics(toy_bundle: DataBundle) -> None:
    config = MissingSweepConfig.model_validate({**ONE_EPOCH_BASELINE, "views": [{"name": "standardize", "params": {"modalities": ["audio"]}}]})
    trained = standardize(toy_bundle, ["audio"])
    other = DataBundle({"test": make_toy_split(30, "test", 9)}, TaskSpec(), name="o")  # no train split of its own
    viewed = views_on_other_data(config, other, trained)
    stats = trained.meta["standardized"][0]["audio"]
    train_frames = np.concatenate([s.audio for s in toy_bundle["train"]])
    assert np.allclose(stats["mean"], train_frames.mean(0), atol=1e-5) and np.allclose(stats["std"], train_frames.std(0), atol=1e-5)
    raw = other["test"][3]
    assert np.allclose(viewed["test"][3].audio, (raw.audio - np.array(stats["mean"])) / np.array(stats["std"]), atol=1e-5)
    assert np.array_equal(viewed["test"][3].vision, raw.vision)
    assert not np.allclose(viewed["test"][3].audio, standardize(DataBundle({"train": other["test"]}, TaskSpec()), ["audio"])["train"][3].audio)
    with pytest.raises(ConfigError, match="was not standardised as views.0 says"):
        views_on_other_data(config, other, toy_bundle)
    no_audio = DataBundle({"test": MultimodalSplit([dataclasses.replace(s, audio=None) for s in other["test"]], name="test", source="o", task=TaskSpec())}, TaskSpec(), name="o")
    assert views_on_other_data(config, no_audio, trained)["test"][0].audio is None  # left to the backbone, which refuses such data
    natural = MissingSweepConfig.model_validate({**ONE_EPOCH_BASELINE, "views": [{"name": "natural_missing_text"}]})
    with pytest.raises(ConfigError, match=r"views.0 \(natural_missing_text\) of the sweep, applied to data 'o': .*no split misses its text"):
        views_on_other_data(natural, other, toy_bundle)


def test_a_sweep_on_sims_scaled_data_reports_the_sims_metrics(toy_bundle: DataBundle, tmp_path: Path) -> None:
    task = TaskSpec(label_range=(-1.0, 1.0), metric_set="sims")
    scaled = {name: MultimodalSplit([dataclasses.replace(s, label=s.label / 3) for s in split], name=name, source="toy", task=task) for name, split in toy_bundle.splits.items()}
    config = MissingSweepConfig.model_validate(ONE_EPOCH_BASELINE)
    results = sweep_missing(config, tmp_path / "sims", seeds=[0], rates=[0.0, 0.9], bundle=DataBundle(scaled, task, name="sims_like"))
    assert set(results["aggregate"]["baseline"]["mean"]) == {"Mult_acc_2", "F1_score", "Mult_acc_3", "Mult_acc_5", "MAE", "Corr"}
    report = (tmp_path / "sims" / "report.md").read_text()
    assert "Mult_acc_3" in report and "Has0_acc_2" not in report
    assert (tmp_path / "sims" / "missing_Mult_acc_2.png").is_file() and not (tmp_path / "sims" / "missing_Non0_acc_2.png").exists()


def test_shipped_sweep_configs_parse_and_typos_fail(tmp_path: Path) -> None:
    names = sorted(p.name for p in CONFIGS.glob("*.yaml"))
    assert "synthetic.yaml" in names
    for path in CONFIGS.glob("*.yaml"):
        config = load_sweep_config(path)
        assert config.models and config.train.valid_mode == "missing"
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {name: synthetic}\nmodels: {a: {name: lnln}}\nrates: [0.0]\nseeds: [0]\nsensitivty: {}\n")
    with pytest.raises(ConfigError, match="sensitivty"):
        load_sweep_config(bad)
    # a typo in any model's, the backbone's or a view's parameters fails when the config is read, before any training
    for text, message in (
        ("models: {a: {name: missing_robust}, b: {name: lnln, params: {w_tsk: 1.0}}}", r"field 'models.b': method 'lnln': unknown parameter\(s\) 'w_tsk'"),
        ("models: {a: {name: lnnl}}", "field 'models.a': unknown method 'lnnl'"),
        ("models: {}", "field 'models'"),
        ("models: {a: {name: lnln}}\nbackbone: {name: text_centric, params: {dimm: 8}}", r"field 'backbone': backbone 'text_centric': unknown parameter\(s\) 'dimm'"),
        ("models: {a: {name: lnln}}\nviews: [{name: subsample, params: {max_per_split: 3}}, {name: standardise}]", "field 'views.1': unknown data view 'standardise'"),
        ("models: {a: {name: lnln}}\nviews: [{name: natural_missing_text, params: {train_shar: 0.5}}]", r"field 'views.0': data view 'natural_missing_text': unknown parameter\(s\) 'train_shar'"),
        ("models: {a: {name: lnln}}\nseeds: []", "field 'seeds'"),
        ("models: {a: {name: lnln}}\nrates: [0.0, 0.5, 0.5]", r"field 'rates': missing rates must be a non-empty list of distinct values in \[0, 1\]"),
        ("models: {a: {name: lnln}}\nrates: [0.0, 1.5]", "field 'rates': missing rates"),
    ):
        bad.write_text(f"data: {{name: synthetic}}\n{text}\n")
        with pytest.raises(ConfigError, match=message):
            load_sweep_config(bad)
    # a view's value that only the view can judge fails when the data is loaded, before any training, naming the field
    data = "data: {name: synthetic, params: {n_train: 20, n_valid: 10, n_test: 10, n_test_ood: 10, n_valid_ood: 0, text_encoder: hash}}"
    bad.write_text(f"{data}\nmodels: {{a: {{name: lnln}}}}\nviews: [{{name: subsample, params: {{max_per_split: 0}}}}]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: field 'views.0': max_per_split must be >= 1, got 0$"):
        load_sweep_data(load_sweep_config(bad))


#: ONE_EPOCH_BASELINE with a second model, 'own', on a backbone of its own (a small EF-LSTM) instead of the shared text_centric.
WITH_OWN_BACKBONE = {
    **ONE_EPOCH_BASELINE,
    "models": {"baseline": {"name": "missing_robust"}, "own": {"name": "missing_robust"}},
    "backbones": {"own": {"name": "ef_lstm", "params": {"hidden": 8}}},
}


def test_a_models_own_backbone_must_name_a_model_and_be_a_valid_backbone(tmp_path: Path) -> None:
    config = MissingSweepConfig.model_validate(WITH_OWN_BACKBONE)
    assert config.backbone_of("own") == ComponentConfig(name="ef_lstm", params={"hidden": 8}) and config.backbone_of("baseline") == config.backbone
    with pytest.raises(ConfigError, match=r"no model 'ownn'; the sweep has \['baseline', 'own'\]"):
        config.backbone_of("ownn")
    bad = tmp_path / "bad.yaml"
    for text, message in (
        ("backbones: {tfr: {name: ef_lstm}}", r"bad.yaml: field 'backbones': 'tfr' is not one of the models \['a', 'b'\]"),
        ("backbones: {b: {name: ef_lstmm}}", "field 'backbones.b': unknown backbone 'ef_lstmm'"),
        ("backbones: {b: {name: ef_lstm, params: {hiden: 8}}}", r"field 'backbones.b': backbone 'ef_lstm': unknown parameter\(s\) 'hiden'"),
    ):
        bad.write_text(f"data: {{name: synthetic}}\nmodels: {{a: {{name: lnln}}, b: {{name: missing_robust}}}}\n{text}\n")
        with pytest.raises(ConfigError, match=message):
            load_sweep_config(bad)


def test_a_model_on_its_own_backbone_is_built_on_it_and_resumes_apart_from_the_others(toy_bundle: DataBundle, tmp_path: Path) -> None:
    from robustmsa.models.ef_lstm import EFLSTM
    from robustmsa.models.text_centric import TextCentric

    out = tmp_path / "sweep"
    sweep_missing(MissingSweepConfig.model_validate(ONE_EPOCH_BASELINE), out, seeds=[0], rates=[0.0, 0.9], bundle=toy_bundle)
    assert "Backbones" not in (out / "report.md").read_text()  # every model on the shared backbone: nothing to say
    record, checkpoint = out / "seed_0" / "baseline" / "sweep_result.json", out / "seed_0" / "baseline" / "best.ckpt"
    # a model on the shared backbone has the settings records had before sweeps had 'backbones' (they stay valid)
    assert set(json.loads(record.read_text())["settings"]) == {"data", "views", "backbone", "train", "eval_split", "splits", "rates", "model", "method", "seed", "sensitivity"}
    written = record.read_bytes(), checkpoint.stat().st_mtime_ns
    # (a) a model with its own backbone added to the finished sweep: only that model trains, on that backbone
    (out / "results.json").unlink()
    config = MissingSweepConfig.model_validate(WITH_OWN_BACKBONE)
    results = sweep_missing(config, out, seeds=[0], rates=[0.0, 0.9], bundle=toy_bundle)
    assert (record.read_bytes(), checkpoint.stat().st_mtime_ns) == written
    assert json.loads((out / "seed_0" / "own" / "sweep_result.json").read_text())["settings"]["model_backbone"] == {"name": "ef_lstm", "params": {"hidden": 8}}
    assert results["config"]["backbones"] == {"own": {"name": "ef_lstm", "params": {"hidden": 8}}}
    assert isinstance(load_sweep_method(out, "own", 0, bundle=toy_bundle)[0].backbone, EFLSTM)
    assert isinstance(load_sweep_method(out, "baseline", 0, bundle=toy_bundle)[0].backbone, TextCentric)
    assert "Backbones: every model on text_centric except own (ef_lstm).\n" in (out / "report.md").read_text()
    # (b) another backbone for that model, or the shared one, is another setting: refused in that folder, nothing trains
    trained = {m: (out / "seed_0" / m / "best.ckpt").stat().st_mtime_ns for m in config.models}
    (out / "results.json").unlink()
    for backbones in ({"own": {"name": "ef_lstm", "params": {"hidden": 6}}}, {}):
        changed = MissingSweepConfig.model_validate({**WITH_OWN_BACKBONE, "backbones": backbones})
        with pytest.raises(ConfigError, match=r"seed_0[/\\]own[/\\]sweep_result.json: this folder holds a run made with other settings"):
            sweep_missing(changed, out, seeds=[0], rates=[0.0, 0.9], bundle=toy_bundle)
    assert trained == {m: (out / "seed_0" / m / "best.ckpt").stat().st_mtime_ns for m in config.models} and not (out / "results.json").exists()


def test_combine_carries_each_models_own_backbone_and_refuses_a_model_on_another_one(tmp_path: Path) -> None:
    ef_lstm = {"name": "ef_lstm", "params": {}}
    first = _fake_sweep(tmp_path / "first", {"plain": [0.6, 0.9]})
    results = json.loads((first / "results.json").read_text())
    del results["config"]["backbones"]  # a results.json written before sweeps had 'backbones'
    (first / "results.json").write_text(json.dumps(results))
    own = _fake_sweep(tmp_path / "own", {"tfr": [0.5, 0.8]}, backbones={"tfr": ef_lstm})
    merged = combine_sweeps([first, own], tmp_path / "all")
    assert merged["config"]["backbones"] == {"tfr": ef_lstm} and list(merged["config"]["models"]) == ["plain", "tfr"]
    assert "Backbones: every model on text_centric except tfr (ef_lstm).\n" in (tmp_path / "all" / "report.md").read_text()
    alone = combine_sweeps([own], tmp_path / "alone")  # no model on the shared backbone
    assert "Backbones: tfr (ef_lstm).\n" in (tmp_path / "alone" / "report.md").read_text() and alone["config"]["backbones"] == {"tfr": ef_lstm}
    assert _only_models(own, json.loads((own / "results.json").read_text()), ["tfr"])["config"]["backbones"] == {"tfr": ef_lstm}
    both = _fake_sweep(tmp_path / "both", {"plain": [0.6, 0.9], "tfr": [0.5, 0.8]}, backbones={"tfr": ef_lstm})
    only = _only_models(both, json.loads((both / "results.json").read_text()), ["plain"])
    assert only["config"]["backbones"] == {} and MissingSweepConfig.model_validate(only["config"]).backbones == {}
    for k, (other, message) in enumerate(
        (
            ({"tfr": {"name": "lf_dnn"}}, "built on backbone 'lf_dnn' here and on backbone 'ef_lstm' in another run"),
            ({"tfr": {"name": "ef_lstm", "params": {"hidden": 8}}}, r"built on backbone 'ef_lstm' with \{'hidden': 8\} here and on backbone 'ef_lstm' in another run"),
            ({}, "built on the shared backbone here and on backbone 'ef_lstm' in another run"),
        )
    ):
        later = _fake_sweep(tmp_path / f"later{k}", {"tfr": [0.5, 0.8]}, backbones=other)
        with pytest.raises(DataError, match=rf"later{k}[/\\]results.json: field 'config.backbones.tfr': the model is {message}; give it another name"):
            combine_sweeps([own, later], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def _fake_sweep(
    out: Path, maes: dict[str, list[float]], reference: str | None = None, split: str | None = None, valid: dict[str, list[float]] | None = None, data: dict | None = None, **changes: object
) -> Path:
    """A sweep folder whose results.json holds ``maes[model][seed]`` (other metrics fixed) and, if given, the
    validation scores ``valid[model][seed]`` of the checkpoints, as sweep_missing writes it."""
    metrics = regression_metrics(np.array([0.1, -0.2, 0.3]), np.array([0.0, -1.0, 1.0]))
    per_seed = {
        str(seed): {m: {"mean": {**metrics, "MAE": v[seed]}, "rates": {"0.0": {**metrics, "MAE": v[seed]}}, **({"best_valid": valid[m][seed]} if valid else {})} for m, v in maes.items()}
        for seed in range(len(next(iter(maes.values()))))
    }
    config = MissingSweepConfig.model_validate({"data": {"name": "toy"}, "models": {m: {"name": "missing_robust"} for m in maes}, "reference": reference, **changes})
    results = {"seeds": [int(s) for s in per_seed], "per_seed": per_seed, "aggregate": mean_std(per_seed.values()), "config": config.model_dump(mode="json")}
    results.update(rates=[0.0], data={"name": "toy", "sizes": {}, **({"split": split} if split else {}), **(data or {})})  # no split: an older results.json
    out.mkdir(parents=True)
    write_json(out / "results.json", results)
    return out


def test_evaluate_sweep_restricted_to_some_models(toy_bundle: DataBundle, tmp_path: Path) -> None:
    run = _fake_sweep(tmp_path / "run", {"plain": [0.6, 0.5], "lnln": [0.7, 0.4]})
    part = json.loads((run / "results.json").read_text())
    only = _only_models(run, part, ["lnln"])
    assert list(only["config"]["models"]) == ["lnln"] and all(list(res) == ["lnln"] for res in only["per_seed"].values())
    assert list(part["config"]["models"]) == ["plain", "lnln"]  # the run's results are not modified
    with pytest.raises(DataError, match="has no model 'tcmr'"):
        evaluate_sweep([run], "test", tmp_path / "x", bundle=toy_bundle, models=["lnln", "tcmr"])
    assert not (tmp_path / "x").exists()


def test_sweeps_on_other_data_are_neither_combined_nor_re_evaluated(toy_bundle: DataBundle, tmp_path: Path) -> None:
    """The content fingerprints a sweep records: runs on other data (a changed file, a relative path read from another
    folder) are refused by sweep-combine and sweep-evaluate; runs from before fingerprints were recorded still combine."""
    prints = {name: toy_bundle[name].fingerprint() for name in ("train", "valid", "test")}
    a = _fake_sweep(tmp_path / "a", {"plain": [0.6, 0.5]}, data={"fingerprints": prints, "text_contextual": False})
    older = _fake_sweep(tmp_path / "older", {"tcmr": [0.5, 0.4]})  # no fingerprints, no text_contextual
    merged = combine_sweeps([older, a], tmp_path / "merged")
    assert merged["data"]["fingerprints"] == prints and merged["data"]["text_contextual"] is False
    other = _fake_sweep(tmp_path / "other", {"tcmr": [0.5, 0.4]}, data={"fingerprints": {**prints, "test": "0" * 16}})
    with pytest.raises(DataError, match=r"'data.fingerprints.test'.*other settings or data"):
        combine_sweeps([a, other], tmp_path / "x")
    trained_elsewhere = _fake_sweep(tmp_path / "elsewhere", {"plain": [0.6, 0.5]}, data={"fingerprints": {**prints, "train": "0" * 16}})
    with pytest.raises(ConfigError, match=r"the 'train' split read now differs in content from the one these checkpoints were trained"):
        evaluate_sweep([trained_elsewhere], "test", tmp_path / "x", bundle=toy_bundle)
    assert not (tmp_path / "x").exists()


def test_evaluating_some_models_without_the_reference_and_combining_keeps_the_configured_reference(tmp_path: Path) -> None:
    run = _fake_sweep(tmp_path / "run", {"plain": [0.6, 0.5], "lnln": [0.7, 0.4]}, reference="lnln")
    only = _only_models(run, json.loads((run / "results.json").read_text()), ["plain"])
    assert only["config"]["reference"] is None
    MissingSweepConfig.model_validate(only["config"])  # a valid sweep config (before: 'lnln' is not one of the models)
    later = _fake_sweep(tmp_path / "later", {"tcmr": [0.5, 0.8]})
    for order in ([run, later], [later, run]):  # the run that names a reference decides, whatever the order
        merged = combine_sweeps(order, tmp_path / f"m{order[0].name}")
        assert merged["config"]["reference"] == "lnln" and merged["config"]["seeds"] == [0, 1]
    with pytest.raises(DataError, match="different reference models"):
        combine_sweeps([run, _fake_sweep(tmp_path / "ref2", {"tcmr": [0.5, 0.8]}, reference="tcmr")], tmp_path / "x")


def test_rates_are_sorted_and_minus_zero_is_zero() -> None:
    from robustmsa.evaluation.missing_protocol import check_rates

    assert check_rates([0.9, -0.0, 0.5]) == [0.0, 0.5, 0.9] and str(check_rates([-0.0])[0]) == "0.0"
    for bad in ([True], ["0.5"], [0.0, -0.0]):
        with pytest.raises(ConfigError, match="missing rates"):
            check_rates(bad)


def test_a_damaged_results_file_is_named_with_its_field(toy_bundle: DataBundle, tmp_path: Path) -> None:
    run = _fake_sweep(tmp_path / "run", {"plain": [0.6, 0.5]})
    good = json.loads((run / "results.json").read_text())
    for content, error, message in (
        ("{not json", DataError, "results.json: is not valid JSON"),
        ("[1, 2]", DataError, "results.json: holds a list"),
        (json.dumps({k: v for k, v in good.items() if k != "per_seed"}), DataError, "field 'per_seed': is missing"),
        (json.dumps({**good, "per_seed": {"0": [1]}}), DataError, "field 'per_seed.0': is not a mapping"),
        (json.dumps({**good, "config": {**good["config"], "models": {"plain": {"name": "lnnl"}}}}), ConfigError, "results.json \\(config\\): field 'models.plain': unknown method 'lnnl'"),
    ):
        (run / "results.json").write_text(content)
        for call in (lambda: combine_sweeps([run], tmp_path / "out"), lambda: evaluate_sweep([run], "test", tmp_path / "out", bundle=toy_bundle)):
            with pytest.raises(error, match=message):
                call()
    assert not (tmp_path / "out").exists()


def _mae_cell(report: str, reference: str, row: str) -> str:
    paired = report.split(f"## Paired with {reference}")[1].split("## ")[0]
    assert f"| {reference} |" not in paired
    return next(x for x in paired.splitlines() if x.startswith(f"| {row} |")).split(" | ")[7]  # the MAE column


def test_report_pairs_every_model_with_the_reference_seed_by_seed(tmp_path: Path) -> None:
    maes = {"plain": [0.6, 0.9], "tcmr": [0.5, 0.8], "lnln": [0.7, 0.7]}
    for reference, shown, row, cell in (("plain", "plain", "tcmr", "-0.100 ± 0.000 (2/2)"), ("lnln", "lnln", "plain", "+0.050 ± 0.212 (1/2)"), (None, "plain", "lnln", "-0.050 ± 0.212 (1/2)")):
        results = json.loads((_fake_sweep(tmp_path / str(reference), maes, reference) / "results.json").read_text())
        assert _mae_cell(sweep_report(results, "regression"), shown, row) == cell
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {name: synthetic}\nmodels: {tcmr: {name: tcmr}}\nreference: tcmx\n")
    with pytest.raises(ConfigError, match="reference.*'tcmx' is not one of the models"):
        load_sweep_config(bad)


def test_report_shows_the_validation_score_models_are_selected_by(tmp_path: Path) -> None:
    results = json.loads((_fake_sweep(tmp_path / "v", {"plain": [0.6, 0.9], "tcmr": [0.5, 0.8]}, valid={"plain": [0.7, 0.5], "tcmr": [0.4, 0.4]}) / "results.json").read_text())
    table = sweep_report(results, "regression").split("## Mean over missing rates")[1].split("## ")[0]
    assert "| model | valid MAE (selection) | Has0_acc_2 |" in table and "never by the test columns" in table
    assert "| plain | 0.600 ± 0.141 |" in table and "| tcmr | 0.400 ± 0.000 |" in table
    older = json.loads((_fake_sweep(tmp_path / "old", {"plain": [0.6, 0.9]}) / "results.json").read_text())  # no validation record
    assert "(selection)" not in sweep_report(older, "regression")


def test_combine_adds_models_run_later_on_the_same_seeds(tmp_path: Path) -> None:
    first = _fake_sweep(tmp_path / "first", {"plain": [0.6, 0.9], "lnln": [0.7, 0.7]})
    later = _fake_sweep(tmp_path / "later", {"tcmr": [0.5, 0.8]})
    merged = combine_sweeps([first, later], tmp_path / "all")
    assert list(merged["config"]["models"]) == ["plain", "lnln", "tcmr"] and merged["seeds"] == [0, 1]
    assert merged["aggregate"]["tcmr"]["mean"]["MAE"]["mean"] == pytest.approx(0.65)
    assert _mae_cell((tmp_path / "all" / "report.md").read_text(), "plain", "tcmr") == "-0.100 ± 0.000 (2/2)"
    with pytest.raises(DataError, match="seed 1 has no results of model 'tcmr'"):
        combine_sweeps([first, _fake_sweep(tmp_path / "one_seed", {"tcmr": [0.5]})], tmp_path / "x")
    with pytest.raises(DataError, match="config.models.lnln.*configured differently"):
        combine_sweeps([first, _fake_sweep(tmp_path / "renamed", {"lnln": [0.5, 0.8]}, models={"lnln": {"name": "lnln"}})], tmp_path / "x")
    assert combine_sweeps([first, _fake_sweep(tmp_path / "split", {"tcmr": [0.5, 0.8]}, split="test")], tmp_path / "s")["data"]["split"] == "test"
    with pytest.raises(DataError, match="'data.split'.*differs"):
        combine_sweeps([first, _fake_sweep(tmp_path / "valid", {"tcmr": [0.5, 0.8]}, split="valid")], tmp_path / "x")
    with pytest.raises(DataError, match="'train'.*differs"):
        combine_sweeps([first, _fake_sweep(tmp_path / "longer", {"tcmr": [0.5, 0.8]}, train={"max_epochs": 99})], tmp_path / "x")
    assert not (tmp_path / "x").exists()
    kept = (first / "results.json").read_bytes()
    with pytest.raises(ConfigError, match="is one of the --run folders"):  # it would replace that sweep's own results
        combine_sweeps([first, later], tmp_path / "first" / ".", overwrite=True)
    assert (first / "results.json").read_bytes() == kept


def test_combine_only_some_seeds_of_the_runs(tmp_path: Path) -> None:
    """A 3-seed run combines with a 5-seed one on the seeds they share (before: refused, every seed needs every model)."""
    five = _fake_sweep(tmp_path / "five", {"plain": [0.6, 0.9, 0.7, 0.8, 0.5]})
    three = _fake_sweep(tmp_path / "three", {"tcmr": [0.5, 0.8, 0.6]})
    with pytest.raises(DataError, match=r"seed 3 has no results of model 'tcmr'.*--seeds"):
        combine_sweeps([five, three], tmp_path / "x")
    merged = combine_sweeps([five, three], tmp_path / "shared", seeds=[2, 0, 1])
    assert merged["seeds"] == [0, 1, 2] and merged["config"]["seeds"] == [0, 1, 2]
    assert merged["aggregate"]["plain"]["mean"]["MAE"]["mean"] == pytest.approx(0.7333333)  # not 0.7, the mean of all five
    assert combine_sweeps([five], tmp_path / "last", seeds=[4])["aggregate"]["plain"]["mean"]["MAE"]["mean"] == pytest.approx(0.5)
    for seeds, message in (([7], r"--seeds: seed 7 is in none of the runs \(they hold the seeds \[0, 1, 2, 3, 4\]\)"), ([0, 0], "given more than once"), ([], "at least one seed")):
        with pytest.raises(ConfigError, match=message):
            combine_sweeps([five, three], tmp_path / "x", seeds=seeds)
    with pytest.raises(DataError, match="seed 3 has no results of model 'tcmr'"):
        combine_sweeps([five, three], tmp_path / "x", seeds=[0, 3])
    assert not (tmp_path / "x").exists() and json.loads((five / "results.json").read_text())["seeds"] == [0, 1, 2, 3, 4]


def test_a_stored_sweeps_data_not_found_names_its_results_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = CONFIGS.parents[1] / "benchmarks" / "results" / "missing_mmsd2"  # data path ../shared/data/mmsd2, relative
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=rf"named by {re.escape(str(run / 'results.json'))} \(config\), field 'data'; relative data paths are read from"):
        evaluate_sweep([run], "test", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_combine_runs_recorded_before_and_after_the_selection_score(tmp_path: Path) -> None:
    """Seeds run before sweeps kept each checkpoint's validation score combine with seeds run after: the score is
    left out for a model unless every seed has it (before: a ValueError traceback from the aggregation)."""
    older = _fake_sweep(tmp_path / "older", {"plain": [0.6, 0.9]})
    newer = _fake_sweep(tmp_path / "newer", {"plain": [0.5, 0.7]}, valid={"plain": [0.4, 0.3]})
    results = json.loads((newer / "results.json").read_text())
    results["per_seed"] = {str(int(seed) + 2): value for seed, value in results["per_seed"].items()}
    results["seeds"] = [2, 3]
    (newer / "results.json").write_text(json.dumps(results))
    merged = combine_sweeps([older, newer], tmp_path / "all")
    assert merged["seeds"] == [0, 1, 2, 3] and merged["aggregate"]["plain"]["mean"]["MAE"]["mean"] == pytest.approx(0.675)
    assert all("best_valid" not in merged["per_seed"][s]["plain"] for s in merged["per_seed"])
    assert "(selection)" not in (tmp_path / "all" / "report.md").read_text()


def test_sweep_bootstrap_intervals_from_the_outputs_kept_with_each_run(toy_bundle: DataBundle, tmp_path: Path) -> None:
    """The paired differences of the mean over r get bootstrap intervals over test videos, from the per-sample outputs
    a sweep keeps (in its records, to resume, and in predictions.npz, to combine runs later)."""
    from robustmsa.evaluation.compare import _units
    from robustmsa.evaluation.missing_protocol import INTERVAL_METRICS, OUTPUTS, read_outputs, write_outputs

    config = MissingSweepConfig.model_validate({**ONE_EPOCH_BASELINE, "models": {"a": {"name": "missing_robust"}, "b": {"name": "missing_robust", "params": {"complete_share": 0.5}}}, "bootstrap": 1})
    out, rates = tmp_path / "sweep", [0.0, 0.5]
    results = sweep_missing(config, out, seeds=[0, 1], rates=rates, bundle=toy_bundle)
    outputs = read_outputs(out / OUTPUTS)
    test = toy_bundle["test"]
    assert outputs.rates == rates and np.array_equal(outputs.truth, test.labels()) and outputs.groups == [s.group for s in test]
    for seed in ("0", "1"):  # the kept outputs are those the reported metrics were computed from
        for model in ("a", "b"):
            for i, r in enumerate(("0.0", "0.5")):
                assert regression_metrics(outputs.outputs[seed][model][i], outputs.truth) == pytest.approx(results["per_seed"][seed][model]["rates"][r])
    assert "predictions" not in results["per_seed"]["0"]["a"] and "predictions" in json.loads((out / "seed_0" / "a" / "sweep_result.json").read_text())["result"]
    # the one draw, recomputed: the same videos for every rate, model and seed
    units, kind = _units(outputs.groups)
    assert kind == "group" and results["intervals"]["count"] == len(units) and results["intervals"]["unit"] == "group"
    idx = np.concatenate([units[k] for k in np.random.default_rng(0).integers(len(units), size=len(units))])

    def mean_over_r(model: str, seed: str, metric: str) -> float:
        return float(np.mean([regression_metrics(outputs.outputs[seed][model][i][idx], outputs.truth[idx])[metric] for i in range(len(rates))]))

    interval = results["intervals"]["models"]["b"]
    assert set(interval) == set(INTERVAL_METRICS["regression"]) and "a" not in results["intervals"]["models"]
    for metric in INTERVAL_METRICS["regression"]:
        drawn = np.mean([mean_over_r("b", s, metric) - mean_over_r("a", s, metric) for s in ("0", "1")])
        assert interval[metric]["low"] == pytest.approx(drawn) and interval[metric]["high"] == pytest.approx(drawn)
    report = (out / "report.md").read_text()
    assert "In brackets (Has0_acc_2, Non0_acc_2, Mult_acc_7, MAE): the 95% interval" in report and f"({len(units)} videos; the same masks)" in report
    row = next(line for line in report.split("## Paired with a")[1].splitlines() if line.startswith("| b |"))
    assert row.count("[") == len(INTERVAL_METRICS["regression"])
    # resumed with more draws: the records' outputs, nothing trained again
    checkpoints = {p: p.stat().st_mtime_ns for p in out.rglob("best.ckpt")}
    (out / "results.json").unlink()
    more = sweep_missing(config.model_copy(update={"bootstrap": 200}), out, seeds=[0, 1], rates=rates, bundle=toy_bundle)
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == checkpoints and more["per_seed"] == json.loads(json.dumps(results["per_seed"]))
    low, high = more["intervals"]["models"]["b"]["MAE"]["low"], more["intervals"]["models"]["b"]["MAE"]["high"]
    assert low < high and more["intervals"]["resamples"] == 200
    # the checkpoints scored again give the same outputs and intervals; runs of some models each combine into the same
    again = evaluate_sweep([out], "test", tmp_path / "again", bundle=toy_bundle)
    assert again["intervals"]["models"]["b"]["MAE"] == pytest.approx(more["intervals"]["models"]["b"]["MAE"])
    for model in ("a", "b"):
        evaluate_sweep([out], "test", tmp_path / model, bundle=toy_bundle, models=[model])
    pooled = combine_sweeps([tmp_path / "a", tmp_path / "b"], tmp_path / "pooled")
    assert pooled["intervals"] == again["intervals"] and (tmp_path / "pooled" / OUTPUTS).is_file()
    # paired with another model: the same draws, so a minus b is b minus a negated
    turned = combine_sweeps([tmp_path / "a", tmp_path / "b"], tmp_path / "turned", reference="b")
    assert turned["config"]["reference"] == "b" and "## Paired with b, seed by seed" in (tmp_path / "turned" / "report.md").read_text()
    for metric, interval in turned["intervals"]["models"]["a"].items():
        forward = pooled["intervals"]["models"]["b"][metric]
        assert (interval["low"], interval["high"]) == pytest.approx((-forward["high"], -forward["low"]))
    assert evaluate_sweep([out], "test", tmp_path / "turned_again", bundle=toy_bundle, reference="b")["intervals"] == turned["intervals"]
    # one seed of them: its outputs only, and intervals from that seed alone
    one = combine_sweeps([tmp_path / "a", tmp_path / "b"], tmp_path / "one", seeds=[1])
    assert one["seeds"] == [1] and list(read_outputs(tmp_path / "one" / OUTPUTS).outputs) == ["1"]
    assert one["intervals"]["models"]["b"]["MAE"] != pooled["intervals"]["models"]["b"]["MAE"] and one["intervals"]["count"] == pooled["intervals"]["count"]
    with pytest.raises(ConfigError, match=r"--reference 'c': not one of the models \['a', 'b'\]"):
        evaluate_sweep([out], "test", tmp_path / "x", bundle=toy_bundle, reference="c")
    # a run without outputs (an earlier version): combined without intervals, and the report says why
    (tmp_path / "b" / OUTPUTS).unlink()
    lacking = combine_sweeps([tmp_path / "a", tmp_path / "b"], tmp_path / "lacking")
    assert "intervals" not in lacking and not (tmp_path / "lacking" / OUTPUTS).exists()
    assert f"No bootstrap interval: {tmp_path / 'b'} has no predictions.npz" in (tmp_path / "lacking" / "report.md").read_text()
    # outputs of other test samples, or a damaged file, are named
    other = read_outputs(tmp_path / "a" / OUTPUTS)
    write_outputs(tmp_path / "b" / OUTPUTS, dataclasses.replace(other, truth=other.truth + 1.0, outputs={"0": {"b": other.outputs["0"]["a"]}, "1": {"b": other.outputs["1"]["a"]}}))
    with pytest.raises(DataError, match=r"b/predictions.npz: field 'truth': holds other test samples than .*a/predictions.npz"):
        combine_sweeps([tmp_path / "a", tmp_path / "b"], tmp_path / "x")
    write_outputs(tmp_path / "b" / OUTPUTS, dataclasses.replace(other, outputs={"0": {"b": other.outputs["0"]["a"]}}))
    with pytest.raises(DataError, match=r"field 'index': holds no outputs of model 'b' on seed 1"):
        combine_sweeps([tmp_path / "a", tmp_path / "b"], tmp_path / "x")
    write_outputs(tmp_path / "b" / OUTPUTS, dataclasses.replace(other, outputs={"0": {"b": np.full((2, len(other.truth)), "x")}, "1": {"b": other.outputs["1"]["a"]}}))
    with pytest.raises(DataError, match=r"field 'outputs_0': is not finite outputs of shape \(2 rates"):  # text, not numbers
        combine_sweeps([tmp_path / "a", tmp_path / "b"], tmp_path / "x")
    (tmp_path / "b" / OUTPUTS).write_bytes(b"not an archive")
    with pytest.raises(DataError, match=r"b/predictions.npz: cannot be read as a NumPy archive"):
        combine_sweeps([tmp_path / "a", tmp_path / "b"], tmp_path / "x")
    assert not (tmp_path / "x").exists()
    # records written before the outputs were kept: no intervals, and how to get them
    for seed in (0, 1):
        path = out / f"seed_{seed}" / "b" / "sweep_result.json"
        record = json.loads(path.read_text())
        del record["result"]["predictions"]
        path.write_text(json.dumps(record))
    (out / "results.json").unlink()
    old = sweep_missing(config, out, seeds=[0, 1], rates=rates, bundle=toy_bundle)
    assert "intervals" not in old and not (out / OUTPUTS).exists()
    assert "rerun with --overwrite, or score the checkpoints again with sweep-evaluate" in (out / "report.md").read_text()
    (out / "results.json").unlink()
    none = sweep_missing(config.model_copy(update={"bootstrap": 0}), out, seeds=[0, 1], rates=rates, bundle=toy_bundle)
    assert "intervals" not in none and "no_intervals" not in none and "bootstrap" not in (out / "report.md").read_text()


def test_evaluation_corrupts_only_the_modalities_named() -> None:
    """``modalities``: the others stay complete; each modality keeps its own masks (the same as when all are corrupted)."""
    split = _word_split([("good day", 1.0), ("bad day", -2.0), ("great great day", 2.5), ("awful", -1.5), ("good bad good", 0.5)])
    method = SumOfFirstFeature({"text": 2, "audio": 2, "vision": 2})  # reads the text only
    every = evaluate_missing(method, split, [0.0, 0.5, 1.0], seed=3)
    assert evaluate_missing(method, split, [0.0, 0.5, 1.0], seed=3, modalities=["text"])["rates"] == every["rates"]
    untouched = evaluate_missing(method, split, [0.5, 1.0], seed=3, modalities=["audio", "vision"])
    assert untouched["rates"]["1.0"] == every["rates"]["0.0"] and untouched["rates"]["0.5"] == every["rates"]["0.0"]
    assert every["rates"]["1.0"]["MAE"] == pytest.approx(float(np.mean(np.abs(split.labels()))))  # the text removed entirely
    for modalities, message in (([], "non-empty list"), (["text", "text"], "distinct"), (["txt"], r"from \['text', 'audio', 'vision', 'image'\]"), (["image"], "has no 'image' to corrupt")):
        with pytest.raises(ConfigError, match=message):
            evaluate_missing(method, split, [0.5], seed=3, modalities=modalities)
    with pytest.raises(ValueError, match="corrupted"):  # a typo in a sweep config names the field
        MissingSweepConfig.model_validate({**ONE_EPOCH_BASELINE, "corrupted": ["txt"]})


def _replaced(bundle: DataBundle, change: Callable[[Sample], Sample]) -> DataBundle:
    """``bundle`` with every sample changed by ``change``."""
    return DataBundle({n: MultimodalSplit([change(s) for s in bundle[n]], name=n, source="t", task=bundle.task) for n in bundle.splits}, bundle.task, name=bundle.name)


def test_a_text_only_sweep_records_what_it_corrupted_and_does_not_combine_with_a_full_one(toy_bundle: DataBundle, tmp_path: Path) -> None:
    config = MissingSweepConfig.model_validate({**ONE_EPOCH_BASELINE, "corrupted": ["text"]})
    text_only = sweep_missing(config, tmp_path / "text", seeds=[0], rates=[0.0, 1.0], bundle=toy_bundle)
    method, _ = load_sweep_method(tmp_path / "text", "baseline", 0, bundle=toy_bundle)
    expected = evaluate_missing(method, toy_bundle["test"], [0.0, 1.0], seed=0, modalities=["text"])
    assert text_only["per_seed"]["0"]["baseline"]["mean"]["MAE"] == pytest.approx(expected["mean"]["MAE"], rel=1e-6)
    assert expected["mean"]["MAE"] != pytest.approx(evaluate_missing(method, toy_bundle["test"], [0.0, 1.0], seed=0)["mean"]["MAE"], rel=1e-3)
    assert "**Corrupted at each r: text only**" in (tmp_path / "text" / "report.md").read_text()
    record = json.loads((tmp_path / "text" / "seed_0" / "baseline" / "sweep_result.json").read_text())
    assert record["settings"]["corrupted"] == ["text"]
    full = MissingSweepConfig.model_validate(ONE_EPOCH_BASELINE)
    assert "corrupted" not in _shared_settings(full, {}, [0.0])  # the records of sweeps made before 'corrupted' still match
    _fake_sweep(tmp_path / "full", {"baseline": [0.6]}, **full.model_dump(include={"backbone", "train", "sensitivity"}))
    assert "Corrupted at each r" not in sweep_report(json.loads((tmp_path / "full" / "results.json").read_text()), "regression")
    with pytest.raises(DataError, match="'corrupted'.*other settings or data"):
        combine_sweeps([tmp_path / "text", tmp_path / "full"], tmp_path / "x")
    one_modality = _replaced(toy_bundle, lambda s: dataclasses.replace(s, audio=None, vision=None))
    with pytest.raises(ConfigError, match="field 'corrupted': the 'test' split has no 'audio' to corrupt"):
        sweep_missing(config.model_copy(update={"corrupted": ["audio"]}), tmp_path / "x", seeds=[0], bundle=one_modality)
    assert not (tmp_path / "x").exists()


def test_checkpoints_evaluated_with_some_modalities_corrupted_and_with_whole_modalities_removed(toy_bundle: DataBundle, tmp_path: Path) -> None:
    from robustmsa.evaluation.missing_protocol import modality_removal, removal_conditions

    models = {"a": {"name": "missing_robust"}, "b": {"name": "missing_robust", "params": {"complete_share": 0.5}}}
    sweep_missing(MissingSweepConfig.model_validate({**ONE_EPOCH_BASELINE, "models": models, "bootstrap": 20}), tmp_path / "run", seeds=[0, 1], rates=[0.0, 0.5], bundle=toy_bundle)
    run = [tmp_path / "run"]
    methods = {(seed, m): load_sweep_method(tmp_path / "run", m, seed, bundle=toy_bundle)[0] for seed in (0, 1) for m in models}
    test = toy_bundle["test"]
    # sweep-evaluate: the text alone, at other rates; recorded, reported, no curve for one rate
    text = evaluate_sweep(run, "test", tmp_path / "text", bundle=toy_bundle, corrupted=["text"], rates=[0.3, 1.0])
    assert text["rates"] == [0.3, 1.0] and text["config"]["corrupted"] == ["text"] and "intervals" in text
    expected = evaluate_missing(methods[(1, "b")], test, [0.3, 1.0], seed=1, modalities=["text"])["rates"]
    assert {r: m["MAE"] for r, m in text["per_seed"]["1"]["b"]["rates"].items()} == pytest.approx({r: m["MAE"] for r, m in expected.items()}, rel=1e-6)
    assert "**Corrupted at each r: text only**" in (tmp_path / "text" / "report.md").read_text() and (tmp_path / "text" / "missing_MAE.png").is_file()
    gone = evaluate_sweep(run, "test", tmp_path / "gone", bundle=toy_bundle, corrupted=["audio", "vision"], rates=[1.0])
    assert not list((tmp_path / "gone").glob("missing_*.png")) and gone["config"]["corrupted"] == ["audio", "vision"]
    with pytest.raises(ConfigError, match="distinct"):
        evaluate_sweep(run, "test", tmp_path / "x", bundle=toy_bundle, corrupted=["text", "text"])
    # whole-modality removal: every non-empty proper subset removed, and complete
    conditions = removal_conditions(["text", "audio", "vision"])
    assert conditions == {
        "complete": [], "without_text": ["text"], "without_audio": ["audio"], "without_vision": ["vision"],
        "without_text_audio": ["text", "audio"], "without_text_vision": ["text", "vision"], "without_audio_vision": ["audio", "vision"],
    }
    summary = modality_removal(run, "test", tmp_path / "removal", bundle=toy_bundle)
    assert list(summary["conditions"]) == list(conditions) and summary["reference"] == "a"
    for name, removed in conditions.items():
        mae = {(seed, m): evaluate_missing(methods[(seed, m)], test, [1.0 if removed else 0.0], seed=seed, modalities=removed or None)["mean"]["MAE"] for seed in (0, 1) for m in models}
        recorded = json.loads((tmp_path / "removal" / name / "results.json").read_text())["per_seed"]
        assert {(seed, m): recorded[str(seed)][m]["mean"]["MAE"] for seed, m in mae} == pytest.approx(mae, rel=1e-6)
        assert summary["conditions"][name]["aggregate"]["a"]["MAE"]["mean"] == pytest.approx(np.mean([mae[(0, "a")], mae[(1, "a")]]), rel=1e-6)
        assert summary["conditions"][name]["paired"]["b"]["MAE"]["mean"] == pytest.approx(np.mean([mae[(s, "b")] - mae[(s, "a")] for s in (0, 1)]), rel=1e-5)
        interval = summary["conditions"][name]["paired"]["b"]["MAE"]["interval"]
        assert interval == json.loads((tmp_path / "removal" / name / "results.json").read_text())["intervals"]["models"]["b"]["MAE"]
    assert summary["conditions"]["without_text"]["kept"] == ["audio", "vision"]
    report = (tmp_path / "removal" / "report.md").read_text()
    assert "| kept | a | b | b − a | folder |" in report and "| audio, vision |" in report and report.count("| text, audio, vision |") == len(summary["metrics"])
    assert (tmp_path / "removal" / "removal_MAE.png").stat().st_size > 0 and json.loads((tmp_path / "removal" / "removal.json").read_text())["modalities"] == ["text", "audio", "vision"]
    with pytest.raises(ConfigError, match=r"removal[/\\]removal.json already exists"):
        modality_removal(run, "test", tmp_path / "removal", bundle=toy_bundle)
    text_only = _replaced(toy_bundle, lambda s: dataclasses.replace(s, audio=s.audio[:0], vision=None))
    with pytest.raises(ConfigError, match=r"has \['text'\] to remove; whole-modality removal needs two modalities or more"):  # empty audio is not a modality to remove
        modality_removal(run, "test", tmp_path / "x", bundle=text_only)
    assert not (tmp_path / "x").exists()
