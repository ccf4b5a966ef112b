"""The EMOTIC reader on a small Annotations.mat written here in the official release's structure, with real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from robustmsa.data.emotic import CATEGORIES, read_emotic, read_emotic_annotations
from robustmsa.errors import DataError
from robustmsa.features.image import build_image_encoder, person_views
from robustmsa.registry import DATASETS

PERSON = [("body_bbox", "O"), ("annotations_categories", "O"), ("annotations_continuous", "O"), ("gender", "O"), ("age", "O")]
PERSON_EVAL = [*PERSON, ("combined_categories", "O"), ("combined_continuous", "O")]
ENTRY = [("filename", "O"), ("folder", "O"), ("image_size", "O"), ("original_database", "O"), ("person", "O")]


def _cell(names: list[str]) -> np.ndarray:
    cell = np.empty((len(names),), dtype=object)
    cell[:] = names
    return cell


def _split(images: list[tuple[str, list[tuple[list[float], list[str]]]]], evaluation: bool, continuous: dict[str, object] | None = None) -> np.ndarray:
    """A 1 x N struct array of image entries; in val/test each person has two annotators and the combined fields."""
    entries = np.zeros((1, len(images)), dtype=ENTRY)
    for i, (filename, people) in enumerate(images):
        persons = np.zeros((1, len(people)), dtype=PERSON_EVAL if evaluation else PERSON)
        for j, (box, names) in enumerate(people):
            continuous = continuous or {"valence": 6, "arousal": 4, "dominance": 7}
            if evaluation:
                annotators = np.zeros((1, 2), dtype=[("categories", "O")])
                annotators[0, 0], annotators[0, 1] = (_cell(names[:1]),), (_cell(names),)
                persons[0, j] = (np.array(box, float), annotators, continuous, "Male", "Adult", _cell(names), {"valence": 5, "arousal": 5, "dominance": 5})
            else:
                persons[0, j] = (np.array(box, float), {"categories": _cell(names)}, continuous, "Female", "Adult")
        entries[0, i] = (filename, "mscoco/images", {"n_col": 64, "n_row": 48}, {"name": "mscoco"}, persons)
    return entries


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """A tiny EMOTIC release: Annotations/Annotations.mat and four 64 x 48 images under emotic/mscoco/images."""
    from PIL import Image

    images = tmp_path / "emotic" / "mscoco" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(4):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(images / f"im{k}.jpg")
    two = [([5, 5, 30, 40], ["Happiness", "Pleasure"]), ([32, 2, 60, 46], ["Fatigue"])]
    one = [([10, 8, 50, 44], ["Anger"])]
    (tmp_path / "Annotations").mkdir()
    savemat(
        tmp_path / "Annotations" / "Annotations.mat",
        {"train": _split([("im0.jpg", two), ("im1.jpg", one)], False), "val": _split([("im2.jpg", one)], True), "test": _split([("im3.jpg", two)], True)},
    )
    return tmp_path


def test_annotations_are_read_per_person_with_categories_and_vad(release: Path) -> None:
    people = read_emotic_annotations(release / "Annotations" / "Annotations.mat")
    assert [len(people[s]) for s in ("train", "val", "test")] == [3, 1, 2]
    first, single = people["train"][0], people["train"][2]
    assert first.image == "mscoco/images/im0.jpg" and first.box == (5.0, 5.0, 30.0, 40.0) and first.categories == ("Happiness", "Pleasure")
    assert single.categories == ("Anger",) and single.vad == (6.0, 4.0, 7.0)  # one person per image arrives unwrapped
    assert people["test"][0].categories == ("Happiness", "Pleasure") and people["test"][0].vad == (5.0, 5.0, 5.0)  # the combined fields


def test_read_emotic_gives_body_and_masked_context_tokens(release: Path, tmp_path: Path) -> None:
    bundle = DATASETS.build("emotic", folder=str(release), cache_dir=str(tmp_path / "cache"))
    assert {n: len(s) for n, s in bundle.splits.items()} == {"train": 3, "valid": 1, "test": 2}
    assert bundle.task.kind == "multilabel" and bundle.task.num_classes == 26 and bundle.dims() == {"vision": 1280, "image": 1280}
    sample = bundle["train"][0]
    assert sample.vision.shape == (1, 1280) and sample.image.shape == (1, 1280) and sample.group == "mscoco/images/im0.jpg"
    assert sample.label_multi[CATEGORIES.index("Happiness")] == 1 and sample.label_multi.sum() == 2
    assert not np.allclose(sample.vision, sample.image)  # two different views
    second = bundle["train"][1]  # another person of the same picture: another body, another masked scene
    assert not np.allclose(sample.vision, second.vision) and not np.allclose(sample.image, second.image)
    np.testing.assert_array_equal(sample.extras["vad"], np.array([6, 4, 7], np.float32))
    encoder = build_image_encoder(cache_dir=tmp_path / "cache", tokens="pooled")
    again = read_emotic(release, encoder=encoder)  # the cache serves every view: no network batch runs
    assert encoder.forward_calls == 0 and np.array_equal(again["test"][1].image, bundle["test"][1].image)


def test_person_views_crop_the_body_and_black_it_out_of_the_scene(release: Path) -> None:
    path = release / "emotic" / "mscoco" / "images" / "im0.jpg"
    body, context = person_views(path, [0, 0, 32, 48], size=32)
    assert body.shape == context.shape == (3, 32, 32)
    assert context[:, :, :14].max() < 0.1 and context[:, :, 18:].mean() > 0.2  # left half masked, right half kept
    with pytest.raises(DataError, match="holds no pixel"):
        person_views(path, [70, 50, 90, 60])


def test_bad_releases_are_named(release: Path, tmp_path: Path) -> None:
    mat = release / "Annotations" / "Annotations.mat"
    (release / "emotic" / "mscoco" / "images" / "im3.jpg").unlink()
    with pytest.raises(DataError, match=r"im3.jpg.*image file not found"):
        read_emotic(release, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="annotation file not found"):
        read_emotic_annotations(tmp_path / "nope.mat")
    savemat(mat, {"train": _split([("im0.jpg", [([1, 2, 3], ["Anger"])])], False)})
    with pytest.raises(DataError, match=r"train\[0\].person\[0\].body_bbox.*four finite numbers"):
        read_emotic_annotations(mat, ["train"])
    with pytest.raises(DataError, match="no 'val' array"):
        read_emotic_annotations(mat, ["val"])
    savemat(mat, {"train": _split([("im0.jpg", [([1, 2, 30, 40], ["Joy"])])], False)})
    with pytest.raises(DataError, match=r"unknown categories \['Joy'\]"):
        read_emotic_annotations(mat, ["train"])
    mat.write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="not a readable MATLAB file"):
        read_emotic_annotations(mat)


def test_bad_annotations_are_named(tmp_path: Path) -> None:
    mat = tmp_path / "Annotations.mat"
    one = [([5, 5, 30, 40], ["Anger"])]
    for continuous, value in (({"valence": 99, "arousal": 4, "dominance": 7}, "99"), ({"valence": "high", "arousal": 4, "dominance": 7}, "'high'")):
        savemat(mat, {"train": _split([("im0.jpg", one)], False, continuous)})
        with pytest.raises(DataError, match=rf"train\[0\].person\[0\].annotations_continuous\[0\].valence': has {value}; expected a number in \[1, 10\]"):
            read_emotic_annotations(mat, ["train"])
    split = _split([("im0.jpg", one)], False)
    split[0, 0]["person"][0, 0]["body_bbox"] = "abcd"  # a box of characters
    savemat(mat, {"train": split})
    with pytest.raises(DataError, match=r"train\[0\].person\[0\].body_bbox': expected four finite numbers"):
        read_emotic_annotations(mat, ["train"])
    entry = np.zeros((1, 1), dtype=[("filename", "O"), ("folder", "O")])
    entry[0, 0] = ("im0.jpg", "mscoco/images")
    savemat(mat, {"train": entry})
    with pytest.raises(DataError, match=r"train\[0\].person': missing"):
        read_emotic_annotations(mat, ["train"])
    savemat(mat, {"train": _split([("im0.jpg", one)], False)})
    mat.write_bytes(mat.read_bytes()[:50])  # cut inside the header
    with pytest.raises(DataError, match="not a readable MATLAB file"):
        read_emotic_annotations(mat, ["train"])
    with pytest.raises(DataError, match="is a directory"):
        read_emotic_annotations(tmp_path, ["train"])


def test_people_without_categories_are_counted(release: Path, tmp_path: Path) -> None:
    mat = release / "Annotations" / "Annotations.mat"
    two = [([5, 5, 30, 40], ["Happiness"]), ([32, 2, 60, 46], [])]  # the second person has no category
    one = [([10, 8, 50, 44], ["Anger"])]
    savemat(mat, {"train": _split([("im0.jpg", two), ("im1.jpg", one)], False), "val": _split([("im2.jpg", one)], True), "test": _split([("im3.jpg", one)], True)})
    bundle = read_emotic(release, cache_dir=tmp_path / "cache")
    assert len(bundle["train"]) == 2 and bundle.meta["without_category"] == {"train": 1}
