"""MMSA pickle reader/writer on small files written in the published layout."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from robustmsa.data.batch import Sample, collate
from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec
from robustmsa.data.mmsa import UNIMODAL_LABELS, read_mmsa_pickle, write_mmsa_pickle
from robustmsa.errors import ConfigError, DataError
from robustmsa.registry import DATASETS

L, DT, LA, DA, LV, DV = 6, 8, 7, 5, 4, 3


def _split(n: int, seed: int, prefix: str) -> dict[str, np.ndarray]:
    """One split as MMSA publishes it (text features, text_bert, unaligned audio/vision with lengths)."""
    rng = np.random.default_rng(seed)
    text_len = rng.integers(3, L + 1, size=n)
    text = np.zeros((n, L, DT))
    bert = np.zeros((n, 3, L))
    for i, length in enumerate(text_len):
        text[i, :length] = rng.normal(size=(length, DT))
        bert[i, 0, :length] = [101, *rng.integers(1000, 2000, size=length - 2), 102]
        bert[i, 1, :length] = 1
    audio = rng.normal(size=(n, LA, DA))
    vision = rng.normal(size=(n, LV, DV))
    return {
        "raw_text": np.array([f"{prefix} words {i}" for i in range(n)], dtype=object),
        "text": text.astype(np.float32),
        "text_bert": bert,
        "audio": audio.astype(np.float32),
        "vision": vision.astype(np.float32),
        "audio_lengths": rng.integers(1, LA + 3, size=n),  # some exceed the array length: clipped
        "vision_lengths": rng.integers(1, LV + 1, size=n),
        "regression_labels": rng.uniform(-3, 3, size=n),
        "classification_labels": rng.integers(0, 3, size=n),
        "id": np.array([f"{prefix}vid{i // 2}$_${i % 2 + 1}" for i in range(n)], dtype=object),
    }


def _data() -> dict[str, dict[str, np.ndarray]]:
    return {"train": _split(6, 0, "tr"), "valid": _split(3, 1, "va"), "test": _split(4, 2, "te")}


def _write(path: Path, data: object) -> Path:
    path.write_bytes(pickle.dumps(data, protocol=4))
    return path


def test_read_lengths_ids_and_text(tmp_path: Path) -> None:
    data = _data()
    bundle = read_mmsa_pickle(_write(tmp_path / "unaligned_50.pkl", data))
    assert {k: len(v) for k, v in bundle.splits.items()} == {"train": 6, "valid": 3, "test": 4}
    assert bundle.meta["text_contextual"] is True  # MMSA's 'text' features are BERT hidden states
    assert bundle.dims() == {"text": DT, "audio": DA, "vision": DV} and bundle.task.kind == "regression"
    raw = data["train"]
    for i, s in enumerate(bundle["train"]):
        n = int(raw["text_bert"][i, 1].sum())
        assert s.text.shape == (n, DT) and np.allclose(s.text, raw["text"][i, :n])
        assert s.text_ids.tolist() == raw["text_bert"][i, 0, :n].astype(int).tolist()
        assert s.text_special.tolist() == [True] + [False] * (n - 2) + [True]
        la = min(int(raw["audio_lengths"][i]), LA)
        assert s.audio.shape == (la, DA) and np.allclose(s.audio, raw["audio"][i, :la])
        assert s.vision.shape[0] == raw["vision_lengths"][i]
        assert s.label == pytest.approx(raw["regression_labels"][i])
        assert s.raw_text == f"tr words {i}"
    assert bundle["train"][3].id == "trvid1$_$2" and bundle["train"][3].group == "trvid1"


def test_neg_inf_replaced_and_counted(tmp_path: Path) -> None:
    data = _data()
    data["train"]["audio"][0, 0, :2] = -np.inf
    data["test"]["vision"][1, 0, 0] = -np.inf
    bundle = read_mmsa_pickle(_write(tmp_path / "a.pkl", data))
    assert bundle.meta["neg_inf_replaced"] == {"train/audio": 2, "test/vision": 1}
    assert bundle["train"][0].audio[0, :2].tolist() == [0.0, 0.0]


def test_text_without_bert_strips_trailing_zero_rows(tmp_path: Path) -> None:
    data = _data()
    for split in data.values():
        del split["text_bert"]
    data["train"]["text"][0, 1] = 0.0  # an interior zero row is kept
    bundle = read_mmsa_pickle(_write(tmp_path / "glove.pkl", data))
    expected = [int((np.abs(row).sum(axis=1) != 0).nonzero()[0].max()) + 1 for row in data["train"]["text"]]
    assert [s.text.shape[0] for s in bundle["train"]] == expected
    assert bundle["train"][0].text_ids is None and bundle["train"][0].text_special is None


def test_text_field_bert_and_aligned_lengths(tmp_path: Path) -> None:
    data = _data()
    for split in data.values():  # aligned file: no *_lengths, modalities as long as the text
        del split["audio_lengths"], split["vision_lengths"]
        n = len(split["id"])
        split["audio"] = np.ones((n, L, DA), np.float32)
        split["vision"] = np.ones((n, L, DV), np.float32)
    bundle = read_mmsa_pickle(_write(tmp_path / "aligned_50.pkl", data), text_field="text_bert", max_text_len=4)
    assert "text_contextual" not in bundle.meta  # token ids: whether a model reads them in context is the model's matter
    s = bundle["valid"][0]
    n = int(data["valid"]["text_bert"][0, 1].sum())
    assert s.text.shape == (min(n, 4), 3) and s.text[:, 0].tolist() == data["valid"]["text_bert"][0, 0, : min(n, 4)].tolist()
    assert s.audio.shape == (n, DA) and s.vision.shape == (n, DV)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["train"].pop("audio"), "audio"),
        (lambda d: d["valid"].__setitem__("vision", np.ones((3, 4), np.float32)), "vision"),
        (lambda d: d["test"]["text"].__setitem__((0, 0, 0), np.nan), "text"),
        (lambda d: d["test"]["audio"].__setitem__((0, 0, 0), np.inf), "audio"),
        (lambda d: d["train"]["regression_labels"].__setitem__(2, 3.4), "regression_labels"),
        (lambda d: d["train"].__setitem__("regression_labels", np.zeros(5)), "regression_labels"),
        (lambda d: d["train"].__setitem__("text_bert", np.zeros((6, 2, L))), "text_bert"),
        (lambda d: d["train"].__setitem__("audio_lengths", -np.ones(6, int)), "audio_lengths"),
        # feature width of a modality differs between splits
        (lambda d: d["valid"].__setitem__("audio", np.ones((3, LA, DA + 1), np.float32)), "audio"),
        # the same sample in train and test
        (lambda d: d["test"]["id"].__setitem__(0, d["train"]["id"][0]), "id"),
        # token ids and attention mask of text_bert: NaN, negative, not 0/1, holes, fractional ids
        (lambda d: d["train"]["text_bert"].__setitem__((0, 1, 0), np.nan), "text_bert"),
        (lambda d: d["train"]["text_bert"].__setitem__((0, 1, slice(None)), -1), "text_bert"),
        (lambda d: d["train"]["text_bert"].__setitem__((0, 1, slice(None)), 2), "text_bert"),
        (lambda d: d["train"]["text_bert"].__setitem__((0, 1, slice(None)), [0, 1, 1, 0, 1, 0]), "text_bert"),
        (lambda d: d["train"]["text_bert"].__setitem__((0, 0, 1), np.nan), "text_bert"),
        (lambda d: d["train"]["text_bert"].__setitem__((0, 0, 1), 1.7), "text_bert"),
        (lambda d: d["train"].__setitem__("audio_lengths", np.array([2.7, 1, 1, 1, 1, 1])), "audio_lengths"),
        (lambda d: d["train"].__setitem__("vision_lengths", np.array([np.nan, 1, 1, 1, 1, 1])), "vision_lengths"),
        # ids and raw text that are not strings, or an empty id
        (lambda d: d["train"]["id"].__setitem__(0, None), "id"),
        (lambda d: d["train"]["id"].__setitem__(0, ""), "id"),
        (lambda d: d["train"].__setitem__("id", np.arange(6)), "id"),
        (lambda d: d["train"]["raw_text"].__setitem__(0, ["a", "b"]), "raw_text"),
        # a missing key next to a key that is not a string (the message lists the keys)
        (lambda d: (d["train"].pop("audio"), d["train"].__setitem__(0, 1)), "audio"),
    ],
)
def test_bad_files_name_file_and_field(tmp_path: Path, mutate: object, field: str) -> None:
    data = _data()
    mutate(data)  # type: ignore[operator]
    path = _write(tmp_path / "bad.pkl", data)
    with pytest.raises(DataError) as info:
        read_mmsa_pickle(path)
    assert str(path) in str(info.value) and f"field '{field}'" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": "five"}, "limit"),
        ({"max_text_len": 0}, "max_text_len"),
        ({"max_text_len": -1}, "max_text_len"),
        ({"max_text_len": "5"}, "max_text_len"),
        ({"label_range": [3]}, "label_range"),
        ({"label_range": "ab"}, "label_range"),
        ({"label_range": (3, -3)}, "label_range"),
    ],
)
def test_bad_parameters_are_config_errors(tmp_path: Path, kwargs: dict[str, object], name: str) -> None:
    path = _write(tmp_path / "a.pkl", _data())
    with pytest.raises(ConfigError, match=f"'{name}'"):
        read_mmsa_pickle(path, **kwargs)  # type: ignore[arg-type]
    assert [len(s) for s in read_mmsa_pickle(path, limit=2, max_text_len=1, label_range=[-3, 3]).splits.values()] == [2, 2, 2]  # type: ignore[arg-type]


def test_label_range_is_an_argument(tmp_path: Path) -> None:
    data = _data()
    for split in data.values():
        split["regression_labels"] = split["regression_labels"] / 3.0  # SIMS-like, in [-1, 1]
    path = _write(tmp_path / "sims.pkl", data)
    assert read_mmsa_pickle(path, label_range=(-1.0, 1.0)).task.label_range == (-1.0, 1.0)
    # SIMS's label range selects MMSA's SIMS metrics unless the metric set is given
    assert read_mmsa_pickle(path, label_range=(-1.0, 1.0)).task.metric_set == "sims"
    assert read_mmsa_pickle(path, label_range=(-1.0, 1.0), metric_set="mosi").task.metric_set == "mosi"
    assert read_mmsa_pickle(path).task.metric_set == "mosi"  # MOSI's layout: no unimodal labels
    for split in data.values():  # CH-SIMS's layout carries unimodal labels: its scale and metrics are found without asking
        split.update({f"regression_labels_{m}": split["regression_labels"] for m in "TAV"})
    sims = read_mmsa_pickle(_write(tmp_path / "sims_layout.pkl", data)).task
    assert (sims.label_range, sims.metric_set) == ((-1.0, 1.0), "sims")
    assert read_mmsa_pickle(tmp_path / "sims_layout.pkl", label_range=(-3.0, 3.0)).task.metric_set == "mosi"  # given: kept
    with pytest.raises(ConfigError, match="metric_set"):
        read_mmsa_pickle(path, metric_set="chsims")  # type: ignore[arg-type]
    data["train"]["regression_labels"][0] = 1.5
    with pytest.raises(DataError, match="regression_labels"):
        read_mmsa_pickle(_write(tmp_path / "sims2.pkl", data), label_range=(-1.0, 1.0))
    with pytest.raises(ConfigError):
        read_mmsa_pickle(path, text_field="glove")  # type: ignore[arg-type]


def test_round_trip(tmp_path: Path, toy_bundle: DataBundle) -> None:
    path = tmp_path / "out" / "toy.pkl"
    write_mmsa_pickle(toy_bundle, path)
    back = read_mmsa_pickle(path)
    assert set(back.splits) == set(toy_bundle.splits)
    for name, split in toy_bundle.splits.items():
        for a, b in zip(split, back[name]):
            assert a.id == b.id and b.label == pytest.approx(a.label)
            for m in ("text", "audio", "vision"):
                assert np.array_equal(getattr(a, m), getattr(b, m)), (name, a.id, m)
    # and the registered loader reads the same file
    assert len(DATASETS.build("mmsa_pickle", path=path)["test"]) == len(toy_bundle["test"])


def test_round_trip_with_token_ids_and_extra_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    task = TaskSpec()

    def split(name: str, n: int) -> MultimodalSplit:
        samples = []
        for i in range(n):
            length = int(rng.integers(3, 7))
            special = np.zeros(length, bool)
            special[[0, -1]] = True
            samples.append(
                Sample(
                    id=f"{name}_v{i}_1",
                    raw_text=f"text {i}",
                    text=rng.normal(size=(length, 4)).astype(np.float32),
                    text_ids=rng.integers(1, 50, size=length),
                    text_special=special,
                    audio=rng.normal(size=(int(rng.integers(0, 5)), 2)).astype(np.float32),
                    vision=rng.normal(size=(3, 2)).astype(np.float32),
                    label=float(rng.uniform(-3, 3)),
                )
            )
        return MultimodalSplit(samples, name=name, source="mem", task=task)

    bundle = DataBundle({n: split(n, 4) for n in ("train", "valid", "test", "test_ood")}, task)
    path = tmp_path / "ids.pkl"
    write_mmsa_pickle(bundle, path)
    raw = pickle.loads(path.read_bytes())
    assert raw["train"]["text_bert"].shape == (4, 3, raw["train"]["text"].shape[1])
    back = read_mmsa_pickle(path)
    for name in bundle.splits:
        for i, (a, b) in enumerate(zip(bundle[name], back[name])):
            assert np.array_equal(a.text_ids, b.text_ids) and np.array_equal(a.text_special, b.text_special)
            assert np.array_equal(a.audio, b.audio) and a.raw_text == b.raw_text and b.group == f"{name}_v{i}"


def test_writer_refuses_classification(tmp_path: Path) -> None:
    task = TaskSpec(kind="classification", num_classes=2, label_range=None)
    splits = {n: MultimodalSplit([Sample(id=n, text=np.ones((1, 2), np.float32), label_class=1)], name=n, source="mem", task=task) for n in ("train", "valid", "test")}
    with pytest.raises(DataError, match="regression_labels"):
        write_mmsa_pickle(DataBundle(splits, task), tmp_path / "x.pkl")


def _sims() -> dict[str, dict[str, np.ndarray]]:
    """CH-SIMS's layout: labels in [-1, 1] and one unimodal label per modality."""
    data = _data()
    rng = np.random.default_rng(7)
    for split in data.values():
        split["regression_labels"] = split["regression_labels"] / 3.0
        n = len(split["id"])
        split.update({f"regression_labels_{m}": np.round(rng.uniform(-1, 1, size=n), 1) for m in "TAV"})
    return data


def test_unimodal_labels_are_read_into_extras_and_batch_to_one_value_per_sample(tmp_path: Path) -> None:
    data = _sims()
    data["valid"]["regression_labels_A"] = data["valid"]["regression_labels_A"][:, None]  # (N, 1) as some files store them
    bundle = read_mmsa_pickle(_write(tmp_path / "unaligned_39.pkl", data), limit=5)
    assert bundle.task.label_range == (-1.0, 1.0)
    for name, split in bundle.splits.items():
        for s in split:  # limit keeps a random subset: rows found by id
            i = list(data[name]["id"]).index(s.id)
            assert set(s.extras) == {"label_text", "label_audio", "label_vision"}
            for m, (field, key) in UNIMODAL_LABELS.items():
                assert s.extras[key].dtype == np.float32 and s.extras[key].shape == ()
                assert float(s.extras[key]) == pytest.approx(float(np.ravel(data[name][field])[i])), (name, m)
    batch = collate(bundle["train"].samples)
    assert {k: tuple(v.shape) for k, v in batch.extras.items()} == {"label_audio": (5,), "label_text": (5,), "label_vision": (5,)}
    assert read_mmsa_pickle(_write(tmp_path / "mosi.pkl", _data()))["train"][0].extras == {}  # MOSI's layout: none


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        (lambda d: d["train"]["regression_labels_T"].__setitem__(0, np.nan), "regression_labels_T", "NaN"),
        (lambda d: d["valid"]["regression_labels_V"].__setitem__(1, 1.5), "regression_labels_V", r"outside \[-1.0, 1.0\]"),
        (lambda d: d["test"].__setitem__("regression_labels_A", np.zeros(3)), "regression_labels_A", "rows"),
        (lambda d: d["test"].__setitem__("regression_labels_A", np.zeros((4, 2))), "regression_labels_A", "shape"),
        (lambda d: d["train"].pop("regression_labels_V"), "regression_labels_V", "all of"),
        (lambda d: [d["test"].pop(f"regression_labels_{m}") for m in "TAV"], "regression_labels_T", "every split or in none"),
        (lambda d: [s.pop("regression_labels") for s in d.values()], "regression_labels_T", "without 'regression_labels'"),
    ],
)
def test_bad_unimodal_labels_name_file_split_and_field(tmp_path: Path, mutate: object, field: str, message: str) -> None:
    data = _sims()
    mutate(data)  # type: ignore[operator]
    path = _write(tmp_path / "bad_sims.pkl", data)
    with pytest.raises(DataError, match=message) as info:
        read_mmsa_pickle(path)
    assert str(path) in str(info.value) and f"field '{field}'" in str(info.value)


def test_unimodal_labels_round_trip(tmp_path: Path) -> None:
    bundle = read_mmsa_pickle(_write(tmp_path / "sims.pkl", _sims()))
    write_mmsa_pickle(bundle, tmp_path / "again.pkl")
    raw = pickle.loads((tmp_path / "again.pkl").read_bytes())
    assert raw["test"]["regression_labels_V"].shape == (4,) and raw["test"]["regression_labels_V"].dtype == np.float32
    back = read_mmsa_pickle(tmp_path / "again.pkl")
    assert back.task.label_range == (-1.0, 1.0)
    for name, split in bundle.splits.items():
        for a, b in zip(split, back[name]):
            assert a.extras.keys() == b.extras.keys() and all(np.array_equal(a.extras[k], b.extras[k]) for k in a.extras)
    # a bundle with unimodal labels on some samples only would make a file that cannot be read: refused
    bundle["test"].samples[2].extras.pop("label_audio")
    with pytest.raises(DataError, match=r"sample 'tevid1\$_\$1' of split 'test' .* no extras\['label_audio'\]"):
        write_mmsa_pickle(bundle, tmp_path / "partial.pkl")
