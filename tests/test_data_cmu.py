"""CMU-MultimodalSDK .csd labels and the CMU word-aligned h5 feature sets."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest

from robustmsa.data.cmu_h5 import read_cmu_h5
from robustmsa.data.cmu_sdk import csd_segment_labels, read_csd
from robustmsa.errors import ConfigError, DataError
from robustmsa.registry import DATASETS

# ----------------------------------------------------------------- .csd files


def _write_csd(path: Path, videos: dict[str, tuple[np.ndarray, np.ndarray]], root: str = "Opinion Segment Labels") -> Path:
    with h5py.File(path, "w") as fh:
        group = fh.create_group(root)
        data = group.create_group("data")
        for vid, (feats, intervals) in videos.items():
            g = data.create_group(vid)
            g.create_dataset("features", data=feats)
            g.create_dataset("intervals", data=intervals)
        meta = group.create_group("metadata")
        meta.create_dataset("root name", data=np.array([root.encode()], dtype=object), dtype=h5py.special_dtype(vlen=bytes))
    return path


def test_csd_labels_follow_row_order(tmp_path: Path) -> None:
    videos = {
        "abc": (np.array([[1.5], [-2.0], [0.25]], np.float32), np.array([[0, 2], [5, 6], [2, 5]], np.float32)),  # rows out of time order
        "x_y": (np.array([[3.0]], np.float32), np.array([[1, 2]], np.float32)),
    }
    path = _write_csd(tmp_path / "labels.csd", videos)
    seqs = read_csd(path)
    assert set(seqs) == {"abc", "x_y"} and seqs["abc"][1].shape == (3, 2)
    assert csd_segment_labels(path) == {"abc_1": 1.5, "abc_2": -2.0, "abc_3": 0.25, "x_y_1": 3.0}


def test_csd_errors_name_file_and_field(tmp_path: Path) -> None:
    bad = _write_csd(tmp_path / "bad.csd", {"v": (np.ones((3, 1), np.float32), np.ones((2, 2), np.float32))})
    with pytest.raises(DataError, match=r"bad\.csd: field 'data/v/intervals'"):
        read_csd(bad)
    wide = _write_csd(tmp_path / "wide.csd", {"v": (np.ones((2, 3), np.float32), np.ones((2, 2), np.float32))})
    assert read_csd(wide)["v"][0].shape == (2, 3)
    with pytest.raises(DataError, match="data/v/features"):
        csd_segment_labels(wide)
    with h5py.File(tmp_path / "empty.csd", "w") as fh:
        fh.create_group("nothing")
    with pytest.raises(DataError, match=r"empty\.csd: field 'data'"):
        read_csd(tmp_path / "empty.csd")
    (tmp_path / "text.csd").write_text("not hdf5")
    with pytest.raises(DataError, match="text.csd"):
        read_csd(tmp_path / "text.csd")


def test_csd_string_features(tmp_path: Path) -> None:
    path = tmp_path / "strings.csd"
    with h5py.File(path, "w") as fh:
        g = fh.create_group("Opinion Segment Labels").create_group("data").create_group("v")
        g.create_dataset("features", data=np.array([["good"], ["bad"]], dtype=object), dtype=h5py.string_dtype())
        g.create_dataset("intervals", data=np.ones((2, 2), np.float32))
    with pytest.raises(DataError, match=r"strings\.csd: field 'data/v/features'.*holds strings; expected numbers"):
        read_csd(path)


def test_csd_links_that_lead_nowhere_nan_times_and_directories(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "soft.csd", "w") as fh:
        fh.create_group("Labels")["data"] = h5py.SoftLink("/nowhere")
    with pytest.raises(DataError, match=r"soft\.csd: field 'data': is a link to an object that cannot be opened"):
        read_csd(tmp_path / "soft.csd")
    with h5py.File(tmp_path / "ext.csd", "w") as fh:
        video = fh.create_group("Labels").create_group("data").create_group("v")
        video["features"] = h5py.ExternalLink("missing.h5", "/x")
        video.create_dataset("intervals", data=np.ones((1, 2)))
    with pytest.raises(DataError, match=r"ext\.csd: field 'data/v/features': is a link to an object that cannot be opened"):
        read_csd(tmp_path / "ext.csd")
    nan = _write_csd(tmp_path / "nan.csd", {"v": (np.ones((1, 1), np.float32), np.array([[np.nan, 1]], np.float32))})
    with pytest.raises(DataError, match=r"nan\.csd: field 'data/v/intervals': contains NaN or inf"):
        csd_segment_labels(nan)
    with pytest.raises(DataError, match="is a directory; expected a .csd file"):
        read_csd(tmp_path)


@pytest.mark.realdata
def test_real_mosi_csd_agrees_with_transcript_csv(shared_data: Path) -> None:
    labels = csd_segment_labels(shared_data / "mosi" / "CMU_MOSI_Opinion_Labels.csd")
    with open(shared_data / "mosi" / "transcripts_labels.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(labels) == 2199 and len(rows) == 2195
    agree = sum(r["id"] in labels and abs(labels[r["id"]] - float(r["label"])) < 1e-3 for r in rows)
    assert agree == len(rows)


# ------------------------------------------------------------------ h5 sets


def _write_d1(path: Path, array: np.ndarray) -> None:
    with h5py.File(path, "w") as fh:
        fh.create_dataset("d1", data=array)


def _write_cmu(root: Path, dataset: str, sizes: dict[str, int], *, text_splits: tuple[str, ...], seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    folder = root / dataset
    folder.mkdir(parents=True)
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for split, n in sizes.items():
        arrays[split] = {
            "audio": rng.normal(size=(n, 20, 6)),
            "video": rng.normal(size=(n, 20, 4)),
            "text": rng.normal(size=(n, 20, 5)),
        }
        if dataset == "youtube":
            arrays[split]["y"] = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=n)]
        elif dataset == "mmmo":
            arrays[split]["y"] = rng.integers(2, 11, size=n) / 2.0
        else:
            arrays[split]["y"] = rng.uniform(1, 7, size=(n, 17))
        for mod in ("audio", "video"):
            _write_d1(folder / f"{mod}_{split}.h5", arrays[split][mod])
        if split in text_splits:
            _write_d1(folder / f"text_{split}_emb.h5", arrays[split]["text"])
        _write_d1(folder / f"y_{split}.h5", arrays[split]["y"])
    return arrays


SIZES = {"train": 5, "valid": 3, "test": 4}


def test_youtube_layout_missing_train_text_and_trimming(tmp_path: Path) -> None:
    arrays = _write_cmu(tmp_path, "youtube", SIZES, text_splits=("valid", "test"))
    folder = tmp_path / "youtube"
    # left padding of every modality, right padding of one, an interior zero step, an all-zero sequence, and a face
    # missing for the first words: step t is the same word in every modality, so one window per sample is cut
    arrays["train"]["audio"][0, :7] = 0
    arrays["train"]["video"][0, :7] = 0
    arrays["train"]["audio"][1, 15:] = 0
    arrays["train"]["audio"][2, 10] = 0
    arrays["train"]["video"][3] = 0
    arrays["train"]["audio"][4, :2] = 0
    arrays["train"]["video"][4, :4] = 0
    _write_d1(folder / "audio_train.h5", arrays["train"]["audio"])
    _write_d1(folder / "video_train.h5", arrays["train"]["video"])
    bundle = read_cmu_h5(tmp_path, "youtube")
    assert bundle.task.kind == "classification" and bundle.task.num_classes == 3
    assert bundle.meta["missing_text_splits"] == ["train"] and bundle.meta["text_contextual"] is False  # GloVe words
    train = bundle["train"]
    assert all(s.text is None for s in train) and train.dims() == {"audio": 6, "vision": 4}
    assert bundle["valid"].dims() == {"text": 5, "audio": 6, "vision": 4}
    assert [s.audio.shape[0] for s in train] == [13, 20, 20, 20, 18]
    assert [s.vision.shape[0] for s in train] == [13, 20, 20, 0, 18]
    assert np.allclose(train[0].audio, arrays["train"]["audio"][0, 7:])
    assert np.allclose(train[4].audio, arrays["train"]["audio"][4, 2:]) and np.allclose(train[4].vision, arrays["train"]["video"][4, 2:])
    assert np.count_nonzero(train[1].audio[15:]) == 0  # the words after the audio ends keep their place
    assert np.count_nonzero(train[2].audio[10]) == 0  # interior zero step kept
    assert train[3].vision.shape == (0, 4) and bundle.meta["empty_sequences"] == {"train/vision": 1}
    assert train.labels().tolist() == arrays["train"]["y"].argmax(axis=1).tolist()
    assert bundle["test"][0].id == "youtube_test_0"
    # trim='none' keeps all 20 steps; the collection folder or the data set folder both work
    untrimmed = read_cmu_h5(folder, "youtube", trim="none", limit=2)
    assert [s.audio.shape[0] for s in untrimmed["train"]] == [20, 20] and len(untrimmed["test"]) == 2


def test_mmmo_and_pom_labels(tmp_path: Path) -> None:
    mmmo = _write_cmu(tmp_path, "mmmo", SIZES, text_splits=("valid", "test"))
    bundle = DATASETS.build("cmu_mfn", folder=tmp_path, dataset="mmmo")
    assert bundle.task.kind == "regression" and bundle.task.label_range == (1.0, 5.0)
    assert np.allclose(bundle["valid"].labels(), mmmo["valid"]["y"])
    pom = _write_cmu(tmp_path, "pom", SIZES, text_splits=())
    bundle = read_cmu_h5(tmp_path, "pom", pom_trait=4)
    assert bundle.meta["missing_text_splits"] == ["train", "valid", "test"] and bundle.meta["pom_trait"] == 4
    assert np.allclose(bundle["test"].labels(), pom["test"]["y"][:, 4])
    with pytest.raises(DataError, match="field 'd1'"):
        read_cmu_h5(tmp_path, "pom", pom_trait=17)


def test_h5_errors_and_nan_policy(tmp_path: Path) -> None:
    arrays = _write_cmu(tmp_path, "youtube", SIZES, text_splits=("valid", "test"))
    folder = tmp_path / "youtube"
    audio = arrays["valid"]["audio"].copy()
    audio[1, 3, 2] = np.nan
    audio[2, 4, 0] = np.inf
    _write_d1(folder / "audio_valid.h5", audio)
    with pytest.raises(DataError, match=r"audio_valid\.h5: field 'd1': contains 2 NaN/inf values \(pass nan_policy='zero' to replace them by 0\)"):
        read_cmu_h5(tmp_path, "youtube")
    bundle = read_cmu_h5(tmp_path, "youtube", nan_policy="zero")
    assert bundle.meta["nonfinite_replaced"] == {"valid/audio": 2} and bundle["valid"][1].audio[3, 2] == 0.0
    _write_d1(folder / "audio_valid.h5", arrays["valid"]["audio"])
    y = arrays["valid"]["y"].copy()
    y[0] = np.nan
    _write_d1(folder / "y_valid.h5", y)
    for policy in ("raise", "zero"):  # labels are never replaced, so the hint is not given for them
        with pytest.raises(DataError, match=r"y_valid\.h5: field 'd1': contains \d+ NaN/inf values; labels must be finite$"):
            read_cmu_h5(tmp_path, "youtube", nan_policy=policy)
    _write_d1(folder / "y_valid.h5", arrays["valid"]["y"])

    y = arrays["test"]["y"].copy()
    y[0] = [1, 1, 0]
    _write_d1(folder / "y_test.h5", y)
    with pytest.raises(DataError, match=r"y_test\.h5: field 'd1'.*one-hot"):
        read_cmu_h5(tmp_path, "youtube")
    _write_d1(folder / "y_test.h5", arrays["test"]["y"])

    _write_d1(folder / "video_test.h5", arrays["test"]["video"][:3])
    with pytest.raises(DataError, match=r"video_test\.h5: field 'd1'"):
        read_cmu_h5(tmp_path, "youtube")
    (folder / "video_test.h5").unlink()
    with pytest.raises(DataError, match=r"video_test\.h5: field 'vision'.*not found"):
        read_cmu_h5(tmp_path, "youtube")
    with pytest.raises(ConfigError):
        read_cmu_h5(tmp_path, "mosi")  # type: ignore[arg-type]


def test_h5_d1_group_or_strings(tmp_path: Path) -> None:
    _write_cmu(tmp_path, "youtube", SIZES, text_splits=("valid", "test"))
    path = tmp_path / "youtube" / "audio_valid.h5"
    with h5py.File(path, "w") as fh:
        fh.create_group("d1")
    with pytest.raises(DataError, match=r"audio_valid\.h5: field 'd1'.*is a group; expected a numeric dataset"):
        read_cmu_h5(tmp_path, "youtube")
    path = tmp_path / "youtube" / "y_test.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("d1", data=np.array(["a", "b", "c", "d"], dtype=object), dtype=h5py.string_dtype())
    _write_d1(tmp_path / "youtube" / "audio_valid.h5", np.ones((3, 20, 6)))
    with pytest.raises(DataError, match=r"y_test\.h5: field 'd1'.*holds strings; expected numbers"):
        read_cmu_h5(tmp_path, "youtube")


def test_h5_links_overflow_directories_and_parameters(tmp_path: Path) -> None:
    arrays = _write_cmu(tmp_path, "youtube", SIZES, text_splits=("valid", "test"))
    folder = tmp_path / "youtube"
    with h5py.File(folder / "audio_train.h5", "w") as fh:
        fh["d1"] = h5py.SoftLink("/nowhere")
    with pytest.raises(DataError, match=r"audio_train\.h5: field 'd1': is a link to an object that cannot be opened"):
        read_cmu_h5(tmp_path, "youtube")
    with h5py.File(folder / "audio_train.h5", "w") as fh:
        fh["d1"] = h5py.ExternalLink("missing.h5", "/d1")
    with pytest.raises(DataError, match=r"audio_train\.h5: field 'd1': is a link to an object that cannot be opened"):
        read_cmu_h5(tmp_path, "youtube")
    audio = arrays["train"]["audio"].copy()
    audio[0, 0, 0] = 1e39  # finite in float64, inf in float32
    _write_d1(folder / "audio_train.h5", audio)
    with pytest.raises(DataError, match=r"youtube/audio_train\.h5: field 'd1': 1 values lie beyond the float32 range"):
        read_cmu_h5(tmp_path, "youtube")
    (folder / "audio_train.h5").unlink()
    (folder / "audio_train.h5").mkdir()
    with pytest.raises(DataError, match=r"audio_train\.h5: field 'audio': is a directory"):
        read_cmu_h5(tmp_path, "youtube")
    for kwargs in ({"limit": 0}, {"limit": -1}, {"limit": "2"}, {"pom_trait": "x"}, {"pom_trait": 1.0}):
        with pytest.raises(ConfigError, match=f"'{next(iter(kwargs))}'"):
            read_cmu_h5(tmp_path, "youtube", **kwargs)  # type: ignore[arg-type]


@pytest.mark.realdata
def test_real_cmu_h5(shared_data: Path) -> None:
    root = shared_data / "cmu_mfn"
    expected = {"youtube": (173, 36, 60), "mmmo": (220, 40, 80), "pom": (600, 100, 203)}
    dims = {"youtube": {"audio": 74, "vision": 36}, "mmmo": {"audio": 74, "vision": 36}, "pom": {"audio": 43, "vision": 41}}
    for name, sizes in expected.items():
        bundle = read_cmu_h5(root, name)  # nan_policy='raise': the published files hold no NaN/inf
        assert tuple(len(bundle[s]) for s in ("train", "valid", "test")) == sizes
        assert bundle.dims() == dims[name] and bundle.meta["nonfinite_replaced"] == {}
        assert all(len(s.audio) <= 20 for s in bundle["train"])
        for split in ("train", "valid", "test"):  # one word window for every modality of a sample
            for sample in bundle[split]:
                lengths = {len(x) for x in (sample.text, sample.audio, sample.vision) if x is not None and len(x)}
                assert len(lengths) <= 1, (sample.id, lengths)
    youtube = read_cmu_h5(root, "youtube")
    assert youtube.meta["missing_text_splits"] == ["train"] and youtube["valid"].dims()["text"] == 300
    assert sorted(set(youtube["train"].labels().tolist())) == [0, 1, 2]
