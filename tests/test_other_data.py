"""Trained models applied to other data than their own: another data set with the same features, new clips to predict on."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest

from robustmsa.config import parse_config
from robustmsa.data.dataset import TEXT_CONTEXTUAL, DataBundle, MultimodalSplit, TaskSpec
from robustmsa.data.mmsa import read_mmsa_pickle, write_mmsa_pickle
from robustmsa.data.text_corpora import parse_labels_csv
from robustmsa.errors import ConfigError, DataError
from robustmsa.experiment import check_same_data, data_record, evaluate_run, load_model, run_experiment
from robustmsa.method import check_required_extras
from robustmsa.training.fit import load_checkpoint_state, predict
from tests.conftest import make_toy_split

CONFIG = {"data": {"name": "toy"}, "backbone": {"name": "lf_dnn", "params": {"hidden": 8}}, "train": {"max_epochs": 1, "progress": False}, "seeds": [0, 1]}


def _other(name: str = "other", **meta: object) -> DataBundle:
    """Labelled data the toy models can be applied to: same widths and task, other samples (only a test split)."""
    return DataBundle({"test": make_toy_split(30, "other", 7)}, TaskSpec(), name=name, meta=dict(meta))


def _unlabelled(split: MultimodalSplit, task: TaskSpec | None = None) -> MultimodalSplit:
    return MultimodalSplit([dataclasses.replace(s, label=None) for s in split], name=split.name, source="new", task=task or split.task, labelled=False)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    splits = {name: make_toy_split(n, name, seed) for seed, (name, n) in enumerate((("train", 120), ("valid", 30), ("test", 30)))}
    bundle = DataBundle(splits, TaskSpec(), name="toy", meta={TEXT_CONTEXTUAL: False})
    run = tmp_path_factory.mktemp("runs") / "toy"
    run_experiment(parse_config(CONFIG), run, bundle=bundle)
    return run


def test_other_labelled_data_is_scored_as_the_models_predict_it(toy_run: Path, tmp_path: Path) -> None:
    other = _other(**{TEXT_CONTEXTUAL: False})
    metrics = evaluate_run(toy_run, data=other, predictions=tmp_path / "pred")
    config = parse_config(CONFIG)
    for seed in ("0", "1"):
        scores = predict(load_model(toy_run / f"seed_{seed}" / "model.pt", config, other), other["test"])
        assert metrics[seed]["test"]["factual"]["MAE"] == pytest.approx(np.abs(scores - other["test"].labels()).mean(), rel=1e-5)
        table = np.loadtxt(tmp_path / "pred" / f"seed_{seed}" / "test.csv", delimiter=",", skiprows=1, usecols=(2, 3))
        np.testing.assert_allclose(table[:, 1], scores, rtol=1e-6)
    assert metrics["0"] != metrics["1"]  # each seed's own model
    record = load_checkpoint_state(toy_run / "seed_0" / "model.pt")["data"]
    assert record["dims"] == {"text": 16, "audio": 5, "vision": 4} and record["task"]["kind"] == "regression" and record["features"] == {TEXT_CONTEXTUAL: False}


def test_new_data_without_labels_is_predicted_never_scored(toy_run: Path, tmp_path: Path) -> None:
    labelled = _other()["test"]
    new = DataBundle({"clips": _unlabelled(labelled)}, TaskSpec(), name="new")
    assert new.dims() == labelled.dims()  # the feature widths of data without a training split
    with pytest.raises(ConfigError, match="split 'clips' of data 'new' has no labels: it can only be predicted on; pass --predictions DIR"):
        evaluate_run(toy_run, data=new)
    assert evaluate_run(toy_run, data=new, predictions=tmp_path / "pred") == {"0": {}, "1": {}}  # no split to score
    header = (tmp_path / "pred" / "seed_0" / "clips.csv").read_text().splitlines()[0]
    assert header == "id,group,factual"  # no truth column
    scored = evaluate_run(toy_run, data=DataBundle({"test": labelled}, TaskSpec(), name="same"), predictions=tmp_path / "scored")
    assert (tmp_path / "scored" / "seed_1" / "test.csv").read_text().splitlines()[1].split(",")[-1] == (tmp_path / "pred" / "seed_1" / "clips.csv").read_text().splitlines()[1].split(",")[-1]
    assert "test" in scored["1"]


def test_data_the_models_cannot_be_applied_to_is_refused_before_anything_is_written(toy_run: Path, tmp_path: Path) -> None:
    wider = DataBundle({"test": make_toy_split(10, "w", 3, dims=(16, 7, 4))}, TaskSpec(), name="wider")
    with pytest.raises(ConfigError, match="seed_0/model.pt: the model was trained on audio features of width 5; data 'wider' has width 7"):
        evaluate_run(toy_run, data=wider)
    classes = TaskSpec(kind="classification", num_classes=2, label_range=None, class_names=("neg", "pos"))
    with pytest.raises(ConfigError, match=r"trained for regression in \[-3.0, 3.0\] \(mosi metrics\); data 'cls' is classification over \['neg', 'pos'\]"):
        evaluate_run(toy_run, data=DataBundle({"test": make_toy_split(10, "c", 3, task=classes)}, classes, name="cls"))
    with pytest.raises(ConfigError, match="made with text_contextual = False; those of data 'bert' were made with True: make them as the training data's were$"):
        evaluate_run(toy_run, data=_other("bert", **{TEXT_CONTEXTUAL: True}), predictions=tmp_path / "p")
    # an MMSA pickle that does not record how its features were made is read as BERT features: the error says it assumed
    write_mmsa_pickle(_other("plain"), tmp_path / "plain.pkl")
    raw = pickle.loads((tmp_path / "plain.pkl").read_bytes())
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({name: {k: v for k, v in split.items() if k != "features_made_with"} for name, split in raw.items()}))
    with pytest.raises(ConfigError, match=r"were made with True: make them as the training data's were \(assumed: the file does not record it; .*text_contextual=false"):
        evaluate_run(toy_run, data=read_mmsa_pickle(tmp_path / "plain.pkl"), predictions=tmp_path / "p")
    from robustmsa.evaluation.missing_protocol import MissingSweepConfig, check_text_features

    sweep = MissingSweepConfig.model_validate({"data": {"name": "toy"}, "models": {"a": {"name": "missing_robust"}}})
    with pytest.raises(ConfigError, match=r"data 'plain' has contextual text features \(the file does not record it; .*text_contextual=false"):
        check_text_features(sweep, read_mmsa_pickle(tmp_path / "plain.pkl"))
    no_audio = [dataclasses.replace(s, audio=None) for s in make_toy_split(10, "n", 3)]
    with pytest.raises(ConfigError, match="needs modalities \\['text', 'audio', 'vision'\\]; the data has no \\['audio'\\]"):
        evaluate_run(toy_run, data=DataBundle({"test": MultimodalSplit(no_audio, name="test", source="x", task=TaskSpec())}, TaskSpec(), name="silent"))
    with pytest.raises(ConfigError, match="--split 'valid': no split named 'valid' in data 'other'"):
        evaluate_run(toy_run, data=_other(), splits=["valid"])
    assert not (tmp_path / "p").exists() or not any((tmp_path / "p").rglob("*.csv"))


def test_a_labels_csv_without_labels_lists_new_clips(tmp_path: Path) -> None:
    path = tmp_path / "new.csv"
    path.write_text("id,text\nclipA_1,fine\nclipB_2,awful\n", encoding="utf-8")
    parsed = parse_labels_csv(path, unlabelled=True)
    assert [s.id for s in parsed["test"]] == ["clipA_1", "clipB_2"] and parsed["train"] == [] and parsed["test"][0].label is None
    with pytest.raises(DataError, match="label.*column missing"):
        parse_labels_csv(path)  # training data needs its labels
    path.write_text("id,mode\nclipA_1,valid\nclipB_2,exam\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 3 has 'exam'; expected train, valid/dev or test"):
        parse_labels_csv(path, text=False, unlabelled=True)


def test_mmsa_pickles_without_labels_round_trip_and_mixed_files_are_refused(tmp_path: Path) -> None:
    new = DataBundle({"test": _unlabelled(make_toy_split(6, "n", 3))}, TaskSpec(), name="new")
    path = tmp_path / "new.pkl"
    write_mmsa_pickle(new, path)
    read = read_mmsa_pickle(path, text_contextual=False)
    assert list(read.splits) == ["test"] and not read["test"].labelled and read["test"].ids == new["test"].ids
    np.testing.assert_array_equal(read["test"].samples[2].audio, new["test"].samples[2].audio)
    mixed = DataBundle({"train": make_toy_split(6, "t", 1), "valid": make_toy_split(6, "v", 2), "test": _unlabelled(make_toy_split(6, "n", 3))}, TaskSpec(), name="mixed")
    with pytest.raises(DataError, match="mixes labelled and unlabelled splits"):
        write_mmsa_pickle(mixed, tmp_path / "mixed.pkl")
    labelled = DataBundle({k: make_toy_split(6, k, i) for i, k in enumerate(("train", "valid", "test"))}, TaskSpec(), name="l")
    write_mmsa_pickle(labelled, tmp_path / "l.pkl")
    raw = pickle.loads((tmp_path / "l.pkl").read_bytes())
    del raw["valid"]["regression_labels"]
    (tmp_path / "broken.pkl").write_bytes(pickle.dumps(raw))
    with pytest.raises(DataError, match=r"broken.pkl \[valid\].*regression_labels.*missing; splits \['test', 'train'\] have labels"):
        read_mmsa_pickle(tmp_path / "broken.pkl")
    del raw["valid"], raw["train"]
    (tmp_path / "test_only.pkl").write_bytes(pickle.dumps(raw))
    assert list(read_mmsa_pickle(tmp_path / "test_only.pkl").splits) == ["test"]  # labelled data to evaluate on
    for split in raw.values():
        del split["regression_labels"]
    (tmp_path / "new.pkl").write_bytes(pickle.dumps(raw))
    assert not read_mmsa_pickle(tmp_path / "new.pkl")["test"].labelled
    with pytest.raises(DataError, match="empty.pkl: holds no split"):
        (tmp_path / "empty.pkl").write_bytes(pickle.dumps({}))
        read_mmsa_pickle(tmp_path / "empty.pkl")


def test_features_are_compared_as_they_were_made() -> None:
    settings = {"text": "auto", "text_encoder": "static", "audio_fps": 10.0, "label_range": [-3.0, 3.0]}
    trained = _other(text_encoder="static", extraction={"settings": settings, "text_source": "labels", "counts": {"clips": 9}})
    record = data_record(trained)
    assert record["features"] == {"text_encoder": "static", "text": "labels", "audio_fps": 10.0}  # 'auto' as it took effect; no counts
    same = _other(text_encoder="static", extraction={"settings": {**settings, "text": "labels"}, "text_source": "labels", "counts": {"clips": 2}})
    check_same_data(record, same, "m.pt")
    transcribed = _other("asr", text_encoder="static", extraction={"settings": settings, "text_source": "asr"})
    with pytest.raises(ConfigError, match="m.pt: the model was trained on features made with text = 'labels'; those of data 'asr' were made with 'asr'"):
        check_same_data(record, transcribed, "m.pt")
    check_same_data(record, _other(), "m.pt")  # data that records nothing of how it was made: widths and task only
    # models by content where used, not by the path they were given as
    faces = {"settings": {**settings, "face_model": "/opt/models/face.task"}, "text_source": "labels", "models": {"face": "face-landmarker:ab12"}}
    assert data_record(_other(extraction=faces))["features"]["face_model"] == "face-landmarker:ab12"
    check_same_data(data_record(_other(extraction=faces)), _other(extraction={**faces, "settings": settings}), "m.pt")
    with pytest.raises(ConfigError, match="face_model = 'face-landmarker:ab12'; those of data 'other' were made with 'face-landmarker:cd34'"):
        check_same_data(data_record(_other(extraction=faces)), _other(extraction={**faces, "models": {"face": "face-landmarker:cd34"}}), "m.pt")
    check_same_data(None, transcribed, "old.pt")  # a model file from before the record


def test_mmsa_pickles_record_how_their_features_were_made(tmp_path: Path) -> None:
    settings = {"text": "auto", "text_encoder": "static", "audio_fps": 10.0, "label_range": [-1.0, 1.0]}
    meta = {"text_encoder": "static", TEXT_CONTEXTUAL: False, "extraction": {"settings": settings, "text_source": "labels", "counts": {"clips": 6}}}
    task = TaskSpec(label_range=(-1.0, 1.0), metric_set="sims")
    clips = DataBundle({"test": _unlabelled(make_toy_split(6, "test", 3), task)}, task, name="clips", meta=meta)
    write_mmsa_pickle(clips, tmp_path / "f.pkl")
    read = read_mmsa_pickle(tmp_path / "f.pkl")
    assert read.meta["text_encoder"] == "static" and read.meta[TEXT_CONTEXTUAL] is False and read.task.label_range == (-1.0, 1.0)
    assert read.meta["extraction"] == {"settings": settings, "text_source": "labels"} and data_record(read) == data_record(clips)
    assert read_mmsa_pickle(tmp_path / "f.pkl", text_contextual=True, label_range=[-3, 3]).meta[TEXT_CONTEXTUAL] is True  # parameters win
    raw = pickle.loads((tmp_path / "f.pkl").read_bytes())
    raw["other"] = dict(raw["test"], id=np.array([f"o{i}" for i in range(6)], dtype=object), features_made_with="{}")
    (tmp_path / "two.pkl").write_bytes(pickle.dumps(raw))
    with pytest.raises(DataError, match="features_made_with.*differs between splits"):
        read_mmsa_pickle(tmp_path / "two.pkl")
    raw["other"]["features_made_with"] = raw["test"]["features_made_with"] = "not json"
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps(raw))
    with pytest.raises(DataError, match="features_made_with.*is not the JSON record write_mmsa_pickle writes: 'not json'"):
        read_mmsa_pickle(tmp_path / "bad.pkl")
    for record, match in (
        ({"a": 1}, "differs between splits, is missing in some, or is not text"),
        ('{"text_contextual": "yes"}', "is not the JSON record"),
        ('{"extraction": {"settings": {"label_range": [3, -3]}}}', "features_made_with.label_range.*low < high"),
    ):
        raw["other"]["features_made_with"] = raw["test"]["features_made_with"] = record
        (tmp_path / "bad.pkl").write_bytes(pickle.dumps(raw))
        with pytest.raises(DataError, match=match):
            read_mmsa_pickle(tmp_path / "bad.pkl")


def test_split_names_never_name_a_path_and_other_data_checks_the_extras_of_test_data(tmp_path: Path) -> None:
    for name in ("../escaped", "/tmp/victim", "a\\b", "..", "", "t" * 201):
        with pytest.raises(DataError, match="cannot name a file; expected a plain name"):
            DataBundle({name: make_toy_split(3, "x", 0)}, TaskSpec(), name="evil")
    labelled = DataBundle({"test": make_toy_split(4, "a", 0)}, TaskSpec(), name="l")
    write_mmsa_pickle(labelled, tmp_path / "one.pkl")
    raw = pickle.loads((tmp_path / "one.pkl").read_bytes())
    raw = {1: raw["test"], "1": dict(raw["test"], id=np.array([f"b{i}" for i in range(4)], dtype=object))}
    (tmp_path / "twice.pkl").write_bytes(pickle.dumps(raw))
    with pytest.raises(DataError, match="two splits have the same name once read as text"):
        read_mmsa_pickle(tmp_path / "twice.pkl")

    class NeedsCounterfactuals:
        def required_extras(self, split: str) -> tuple[str, ...]:
            return () if split == "train" else ("cf",)

        extras_hint = ""

    new = DataBundle({"train": _unlabelled(make_toy_split(3, "x", 0))}, TaskSpec(), name="new")
    check_required_extras(NeedsCounterfactuals(), new, ["train"])  # as training data: nothing needed
    with pytest.raises(ConfigError, match="needs 'cf' in the extras of every sample of split 'train'"):
        check_required_extras(NeedsCounterfactuals(), new, ["train"], as_split="test")


def test_training_needs_labelled_train_and_valid_splits_and_a_split_to_score(tmp_path: Path) -> None:
    config = parse_config({**CONFIG, "seeds": [0]})
    splits = {"train": make_toy_split(40, "train", 0), "valid": make_toy_split(10, "valid", 1), "test": make_toy_split(10, "test", 2)}
    unlabelled = DataBundle({**splits, "train": _unlabelled(splits["train"])}, TaskSpec(), name="new")
    with pytest.raises(DataError, match=r"new \[train\].*split 'train' has no labels \(new data to predict on\): training and calibration need labelled data"):
        run_experiment(config, tmp_path / "unlabelled", bundle=unlabelled)
    with pytest.raises(ConfigError, match="data 'nothing' has no test split .*: name the splits to score in eval.splits"):
        run_experiment(config, tmp_path / "untested", bundle=DataBundle({k: splits[k] for k in ("train", "valid")}, TaskSpec(), name="nothing"))
    assert not (tmp_path / "unlabelled").exists() and not (tmp_path / "untested").exists()
