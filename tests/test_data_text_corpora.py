"""Text corpora readers (MOSI csv, MVSA-Single, VADER, MMSD2.0) with the cheap hash encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from robustmsa.data.text_corpora import read_image_attributes, read_mmsd2, read_mosi_csv, read_mvsa, read_vader
from robustmsa.errors import ConfigError, DataError
from robustmsa.features.text import build_text_encoder
from robustmsa.registry import DATASETS

HASH = build_text_encoder("hash")


def _tokens(text: str) -> int:
    """Number of tokens the hash encoder makes of a text, [CLS] and [SEP] included."""
    return len(HASH.encode([text]).tokens[0])


# ------------------------------------------------------------------ MOSI csv


def _mosi_csv(path: Path, extra_row: str = "") -> Path:
    path.write_text(
        "id,text,label,mode\n"
        "vidA_1,it was really good,2.4,train\n"
        "vidA_2,they didnt do a whole bunch,-0.8,train\n"
        "vid_B_1,not bad at all,1.0,dev\n"
        "vidC_3,awful,-3.0,test\n" + extra_row,
        encoding="utf-8",
    )
    return path


def test_mosi_csv(tmp_path: Path) -> None:
    bundle = read_mosi_csv(_mosi_csv(tmp_path / "t.csv"), text_encoder="hash")
    assert {k: len(v) for k, v in bundle.splits.items()} == {"train": 2, "valid": 1, "test": 1}
    s = bundle["valid"][0]
    assert s.id == "vid_B_1" and s.group == "vid_B" and s.label == 1.0 and s.raw_text == "not bad at all"
    assert s.text.shape == (_tokens("not bad at all"), HASH.dim) and s.text_special.tolist() == [True, False, False, False, False, True]
    assert np.allclose(s.text, HASH.encode(["not bad at all"]).features[0])
    assert bundle.task.label_range == (-3.0, 3.0) and bundle.meta["text_encoder"] == "hash" and bundle.meta["text_contextual"] is False
    assert len(read_mosi_csv(tmp_path / "t.csv", text_encoder=HASH, limit=1)["train"]) == 1


@pytest.mark.parametrize(("row", "field"), [("vidD_1,oops,4.5,train\n", "label"), ("vidD_1,oops,x,train\n", "label"), ("vidD_1,oops,1,holdout\n", "mode")])
def test_mosi_csv_errors(tmp_path: Path, row: str, field: str) -> None:
    path = _mosi_csv(tmp_path / "t.csv", row)
    with pytest.raises(DataError) as info:
        read_mosi_csv(path, text_encoder="hash")
    assert str(path) in str(info.value) and f"field '{field}'" in str(info.value)


def test_mosi_csv_short_row(tmp_path: Path) -> None:
    path = _mosi_csv(tmp_path / "t.csv", "a_1,hi\n")
    with pytest.raises(DataError) as info:
        read_mosi_csv(path, text_encoder="hash")
    assert str(path) in str(info.value) and "field 'label'" in str(info.value) and "line 6" in str(info.value)


def test_mosi_csv_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match=r"empty.csv: the file is empty; expected a CSV with the header id,text,label,mode"):
        read_mosi_csv(path, text_encoder="hash")
    path.write_text("id,text,label,mode\n")
    with pytest.raises(DataError, match=r"empty.csv: lists no rows under its header"):
        read_mosi_csv(path, text_encoder="hash")
    path.write_text("id,text,label,mode\nvidC_3,awful,-3.0,test\n")  # test rows only: data to score a trained run on
    assert list(read_mosi_csv(path, text_encoder="hash").splits) == ["test"]


def test_invalid_utf8_names_file_and_line(tmp_path: Path) -> None:
    path = _mosi_csv(tmp_path / "t.csv")
    path.write_bytes(path.read_bytes() + b"vidD_1,caf\xe9,1.0,train\n")
    with pytest.raises(DataError) as info:
        read_mosi_csv(path, text_encoder="hash")
    assert str(path) in str(info.value) and "field 'line 6'" in str(info.value) and "UTF-8" in str(info.value)
    folder = _mvsa(tmp_path / "mvsa")
    (folder / "test.json").write_bytes(b'[{"id": "1", "text": "\xff\xfe", "emotion_label": 0}]')
    with pytest.raises(DataError, match=r"test\.json: field 'line 1'.*not valid UTF-8"):
        read_mvsa(folder, text_encoder="hash")
    vader = tmp_path / "tweets_GroundTruth.txt"
    vader.write_bytes(b"1\t0.5\tok\n2\t1.0\t\x80bad\n")
    with pytest.raises(DataError, match=r"tweets_GroundTruth\.txt: field 'line 2'.*not valid UTF-8"):
        read_vader(vader, text_encoder="hash")
    attributes = tmp_path / "image_attributes.txt"
    attributes.write_bytes(b"['1', 'a', 'b', 'c', 'd', '\xc3']\n")
    with pytest.raises(DataError, match=r"image_attributes\.txt: field 'line 1'.*not valid UTF-8"):
        read_image_attributes(attributes)


# ------------------------------------------------------------------ MVSA


def _mvsa(folder: Path) -> Path:
    folder.mkdir()
    items = {
        "train": [{"id": "5", "text": "great day", "emotion_label": 0}, {"id": "7", "text": "meh", "emotion_label": 1}],
        "dev": [{"id": "9", "text": "terrible", "emotion_label": 2}],
        "test": [{"id": "11", "text": "fine", "emotion_label": 0}],
    }
    for split, rows in items.items():
        (folder / f"{split}.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return folder


def test_mvsa(tmp_path: Path) -> None:
    bundle = read_mvsa(_mvsa(tmp_path / "mvsa"), text_encoder="hash")
    assert set(bundle.splits) == {"train", "valid", "test"} and bundle.task.num_classes == 3
    assert bundle["train"].labels().tolist() == [0, 1] and bundle["valid"][0].id == "9" and bundle["valid"][0].label_class == 2
    assert bundle.task.class_names == ("positive", "neutral", "negative")


def test_mvsa_errors(tmp_path: Path) -> None:
    folder = _mvsa(tmp_path / "mvsa")
    (folder / "dev.json").write_text(json.dumps([{"id": "9", "text": "x", "emotion_label": 3}]))
    with pytest.raises(DataError, match=r"dev\.json: field 'emotion_label'"):
        read_mvsa(folder, text_encoder="hash")
    (folder / "dev.json").write_text(json.dumps([{"id": "9", "emotion_label": 1}]))
    with pytest.raises(DataError, match=r"dev\.json: field 'text'"):
        read_mvsa(folder, text_encoder="hash")
    (folder / "dev.json").write_text("[{")
    with pytest.raises(DataError, match=r"dev\.json.*not valid JSON"):
        read_mvsa(folder, text_encoder="hash")
    (folder / "dev.json").unlink()
    with pytest.raises(DataError, match=r"dev\.json.*not found"):
        read_mvsa(folder, text_encoder="hash")


# ------------------------------------------------------------------ VADER


def test_vader_split_is_seeded_and_grouped(tmp_path: Path) -> None:
    lines = [f"{doc}_{k}\t{((doc + k) % 9 - 4) * 0.9:.2f}\tsnippet {doc} {k}" for doc in range(1, 21) for k in range(1, 4)]
    path = tmp_path / "amazonReviewSnippets_GroundTruth.txt"
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    a = read_vader(path, seed=3, text_encoder="hash")
    b = DATASETS.build("vader", path=tmp_path, domain="amazon", seed=3, text_encoder="hash")
    c = read_vader(path, seed=4, text_encoder="hash")
    assert {k: v.ids for k, v in a.splits.items()} == {k: v.ids for k, v in b.splits.items()}
    assert a["test"].ids != c["test"].ids
    groups = {name: {s.group for s in split} for name, split in a.splits.items()}
    assert {name: len(g) for name, g in groups.items()} == {"train": 14, "valid": 2, "test": 4}  # 70/10/20 of 20 documents
    assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["valid"])
    s = a["train"][0]
    assert s.raw_text.startswith("snippet") and not s.raw_text.endswith("\r") and a.task.label_range == (-4.0, 4.0)


def test_vader_errors(tmp_path: Path) -> None:
    path = tmp_path / "tweets_GroundTruth.txt"
    path.write_text("1\t0.5\tok\n2\tnot-a-number\tbad\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"tweets_GroundTruth\.txt: field 'rating'.*line 2"):
        read_vader(path, text_encoder="hash")
    path.write_text("1\t0.5\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"field 'line 1'"):
        read_vader(path, text_encoder="hash")
    with pytest.raises(ConfigError):
        read_vader(tmp_path, domain="blogs", text_encoder="hash")


# ------------------------------------------------------------------ MMSD2.0


def _mmsd2(folder: Path, *, attributes_for: tuple[int, ...] = (11, 12, 13, 14)) -> Path:
    folder.mkdir()
    items = {"train": [(11, "oh great another monday", 1), (12, "nice sunset", 0)], "valid": [(13, "love waiting", 1)], "test": [(14, "lunch", 0)]}
    for split, rows in items.items():
        (folder / f"{split}.json").write_text(json.dumps([{"image_id": i, "text": t, "label": y} for i, t, y in rows]))
    words = {
        11: ["person", "glasses", "wine", "holding", "hands"],
        12: ["sky", "orange", "sun", "water", "clouds"],
        13: ["man", "bed", "bed", "looking", "standing"],
        14: ["plate", "food", "table", "fork", "white"],
    }
    (folder / "image_attributes.txt").write_text("".join(f"{[str(i), *words[i]]!r}\n" for i in attributes_for))
    return folder


def test_mmsd2_attribute_words_as_image_tokens(tmp_path: Path) -> None:
    bundle = read_mmsd2(_mmsd2(tmp_path / "mmsd2"), text_encoder="hash")
    assert bundle.task.num_classes == 2 and bundle["train"].labels().tolist() == [1, 0]
    s = bundle["train"][0]
    assert s.id == "11" and s.image.shape == (5, HASH.dim) and bundle.dims() == {"text": HASH.dim, "image": HASH.dim}
    # each attribute word is the mean of its non-special token vectors: one word -> that word's vector
    word_vectors = HASH.encode(["glasses"]).features[0]
    assert np.allclose(s.image[1], word_vectors[1])
    assert np.allclose(bundle["valid"][0].image[1], bundle["valid"][0].image[2])  # 'bed' twice


def test_mmsd2_missing_attributes(tmp_path: Path) -> None:
    folder = _mmsd2(tmp_path / "mmsd2", attributes_for=(11, 13, 14))
    with pytest.raises(DataError, match=r"image_attributes\.txt: field 'image_id'.*'12'"):
        read_mmsd2(folder, text_encoder="hash")
    bundle = read_mmsd2(folder, text_encoder="hash", missing_image="drop")
    assert bundle["train"].ids == ["11"] and bundle.meta["dropped_missing_image"] == {"train": 1}


def test_image_attributes_are_literals_not_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "image_attributes.txt"
    path.write_text(f"['1', 'a', 'b', 'c', 'd', 'e']\n__import__('pathlib').Path({str(marker)!r}).touch()\n")
    with pytest.raises(DataError, match=r"field 'line 2'"):
        read_image_attributes(path)
    assert not marker.exists()
    path.write_text("['1', 'a', 'b']\n")
    with pytest.raises(DataError, match=r"field 'line 1'.*five attribute words"):
        read_image_attributes(path)


# ------------------------------------------------------------------ bad values, parameters and layouts


def test_limit_and_seed_must_be_positive_integers(tmp_path: Path) -> None:
    mosi = _mosi_csv(tmp_path / "t.csv")
    mmsd2 = _mmsd2(tmp_path / "mmsd2")
    for limit in (0, -1, "2", 1.5):
        with pytest.raises(ConfigError, match="'limit' must be a positive number"):
            read_mmsd2(mmsd2, text_encoder="hash", limit=limit)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="'limit' must be a positive number"):
            read_mosi_csv(mosi, text_encoder="hash", limit=limit)  # type: ignore[arg-type]
    assert {k: len(v) for k, v in read_mmsd2(mmsd2, text_encoder="hash", limit=1).splits.items()} == {"train": 1, "valid": 1, "test": 1}
    vader = tmp_path / "tweets_GroundTruth.txt"
    vader.write_text("".join(f"{i}\t0.5\tok {i}\n" for i in range(20)), encoding="utf-8")
    for seed in ("x", 1.5, -1):
        with pytest.raises(ConfigError, match="'seed'"):
            read_vader(vader, seed=seed, text_encoder="hash")  # type: ignore[arg-type]


def test_text_and_ids_must_be_strings(tmp_path: Path) -> None:
    folder = _mvsa(tmp_path / "mvsa")
    for item, field in (({"id": "9", "text": None}, "text"), ({"id": "9", "text": ["a", "b"]}, "text"), ({"id": None, "text": "x"}, "id"), ({"id": " ", "text": "x"}, "id")):
        (folder / "dev.json").write_text(json.dumps([{**item, "emotion_label": 1}]))
        with pytest.raises(DataError, match=rf"dev\.json: field '{field}': item 0 has"):
            read_mvsa(folder, text_encoder="hash")
    mmsd2 = _mmsd2(tmp_path / "mmsd2")
    (mmsd2 / "test.json").write_text(json.dumps([{"image_id": 14, "text": None, "label": 0}]))
    with pytest.raises(DataError, match=r"test\.json: field 'text': item 0 has None"):
        read_mmsd2(mmsd2, text_encoder="hash")
    with pytest.raises(DataError, match=r"field 'id': line 6 has ''"):
        read_mosi_csv(_mosi_csv(tmp_path / "t.csv", ",empty id,1.0,train\n"), text_encoder="hash")
    vader = tmp_path / "tweets_GroundTruth.txt"
    vader.write_text("".join(f"{i}\t0.5\tok {i}\n" for i in range(20)) + " \t0.5\tno id\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"field 'id': line 21 has ' '"):
        read_vader(vader, text_encoder="hash")


def test_json_that_python_cannot_hold(tmp_path: Path) -> None:
    folder = _mvsa(tmp_path / "mvsa")
    (folder / "dev.json").write_text('[{"id": "9", "text": "x", "emotion_label": ' + "1" * 5000 + "}]")
    with pytest.raises(DataError, match=r"dev\.json: not valid JSON"):
        read_mvsa(folder, text_encoder="hash")
    (folder / "dev.json").write_text('[{"id": "9", "text": "x\\ud800y", "emotion_label": 1}]')
    with pytest.raises(DataError, match=r"dev\.json: field 'text': item 0 holds a lone surrogate"):
        read_mvsa(folder, text_encoder="hash")


def test_repeated_keys_are_refused(tmp_path: Path) -> None:
    attributes = tmp_path / "image_attributes.txt"
    attributes.write_text("['1', 'a', 'b', 'c', 'd', 'e']\n['2', 'a', 'b', 'c', 'd', 'e']\n['1', 'v', 'w', 'x', 'y', 'z']\n")
    with pytest.raises(DataError, match=r"field 'line 3': image '1' already has attributes"):
        read_image_attributes(attributes)
    path = tmp_path / "dup.csv"
    path.write_text("id,text,label,mode,label\nvidA_1,good,2.0,train,-2.0\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"field 'label': column named more than once"):
        read_mosi_csv(path, text_encoder="hash")


def test_mosi_rows_longer_than_the_header_and_odd_numbers(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"field 'line 6': has 6 fields; the header has 4"):
        read_mosi_csv(_mosi_csv(tmp_path / "a.csv", "vidD_1,good,1.0,train,EXTRA,MORE\n"), text_encoder="hash")
    with pytest.raises(DataError, match=r"field 'label': line 6 has '0_1'; expected a number"):
        read_mosi_csv(_mosi_csv(tmp_path / "b.csv", "vidD_1,good,0_1,train\n"), text_encoder="hash")


def test_an_id_in_two_splits_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"t\.csv: field 'id': sample id 'vidA_1' is in split 'train' and in split 'test'"):
        read_mosi_csv(_mosi_csv(tmp_path / "t.csv", "vidA_1,it was really good,2.4,test\n"), text_encoder="hash")
    folder = _mvsa(tmp_path / "mvsa")
    (folder / "test.json").write_text(json.dumps([{"id": 5, "text": "great day", "emotion_label": 0}]))  # the train id, as a number
    with pytest.raises(DataError, match=r"sample id '5' is in split 'train' and in split 'test'"):
        read_mvsa(folder, text_encoder="hash")


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = _mosi_csv(tmp_path / "t.csv")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert read_mosi_csv(path, text_encoder="hash")["train"].ids == ["vidA_1", "vidA_2"]
    folder = _mvsa(tmp_path / "mvsa")
    (folder / "train.json").write_bytes(b"\xef\xbb\xbf" + (folder / "train.json").read_bytes())
    assert read_mvsa(folder, text_encoder="hash")["train"].ids == ["5", "7"]
    vader = tmp_path / "tweets_GroundTruth.txt"
    vader.write_bytes(b"\xef\xbb\xbf" + "".join(f"{i}\t0.5\tok {i}\n" for i in range(1, 21)).encode())
    assert "1" in [s.id for split in read_vader(vader, text_encoder="hash").splits.values() for s in split]


def test_vader_too_small_for_its_split(tmp_path: Path) -> None:
    path = tmp_path / "tweets_GroundTruth.txt"
    path.write_text("1\t0.5\tok\n2\t1.0\tfine\n3\t-1.0\tbad\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"3 items .* too few for the 70/10/20 train/valid/test split: split 'valid' gets none"):
        read_vader(path, text_encoder="hash")


def test_a_directory_where_a_file_belongs(tmp_path: Path) -> None:
    folder = _mvsa(tmp_path / "mvsa")
    (folder / "dev.json").unlink()
    (folder / "dev.json").mkdir()
    with pytest.raises(DataError, match=r"dev\.json: is a directory; expected a file"):
        read_mvsa(folder, text_encoder="hash")


# ------------------------------------------------------------------ real files


@pytest.mark.realdata
def test_real_text_corpora(shared_data: Path) -> None:
    mosi = read_mosi_csv(shared_data / "mosi" / "transcripts_labels.csv", text_encoder=HASH, limit=20)
    assert {k: len(v) for k, v in mosi.splits.items()} == {"train": 20, "valid": 20, "test": 20}
    full = read_mosi_csv(shared_data / "mosi" / "transcripts_labels.csv", text_encoder=HASH)
    order = {s.id: k for k, s in enumerate(full["train"])}
    kept = [order[s.id] for s in mosi["train"]]
    assert kept == sorted(kept) and kept != list(range(20))  # a random subset in file order, not the first 20
    mvsa = read_mvsa(shared_data / "mvsa_single", text_encoder=HASH, limit=15)
    assert set(mvsa.splits) == {"train", "valid", "test"} and all(len(v) == 15 for v in mvsa.splits.values())
    # MVSA's train.json lists every positive post first: a limit must not give a one-class training split
    assert len(set(read_mvsa(shared_data / "mvsa_single", text_encoder=HASH, limit=1000)["train"].labels().tolist())) == 3
    # MMSD2.0's train.json comes in blocks of one label: the first 3,000 are 58 % sarcastic (48 % in the whole split)
    sarcastic = read_mmsd2(shared_data / "mmsd2", text_encoder=HASH, limit=3000)["train"].labels().mean()
    assert abs(sarcastic - 9576 / 19816) < 0.03
    vader = read_vader(shared_data / "vader", domain="tweets", text_encoder=HASH, limit=10)
    assert len(vader["test"]) == 10 and all(-4 <= s.label <= 4 for s in vader["train"])
    mmsd2 = read_mmsd2(shared_data / "mmsd2", text_encoder=HASH, limit=10)
    assert mmsd2.dims() == {"text": HASH.dim, "image": HASH.dim} and mmsd2["test"][0].image.shape == (5, HASH.dim)


@pytest.mark.realdata
def test_real_full_sizes(shared_data: Path) -> None:
    """Full-size parsing (hash features are cheap): the split sizes published with the data."""
    mosi = read_mosi_csv(shared_data / "mosi" / "transcripts_labels.csv", text_encoder=HASH)
    assert [len(mosi[s]) for s in ("train", "valid", "test")] == [1281, 229, 685]
    mvsa = read_mvsa(shared_data / "mvsa_single", text_encoder=HASH)
    assert [len(mvsa[s]) for s in ("train", "valid", "test")] == [3611, 450, 450]
    vader = read_vader(shared_data / "vader" / "tweets_GroundTruth.txt", text_encoder=HASH)
    assert sum(len(v) for v in vader.splits.values()) == 4200
