"""Decoding audio and video files with PyAV (FFmpeg's libraries; ``pip install robustmsa[extract]``).

Everything a clip extractor needs from a media file, and nothing more:

* :func:`probe`: which streams a file has and how long it lasts;
* :func:`load_audio`: the first audio stream as mono float32 samples in [-1, 1]
  at a fixed rate (any container: WAV, FLAC, MP3, MP4, MKV, ...);
* :func:`video_frames`: RGB frames (H, W, 3) uint8 sampled at a fixed rate,
  each with its presentation time in seconds.

Files that FFmpeg cannot open or decode are a :class:`DataError` naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robustmsa.errors import ConfigError, DataError, require_file

INSTALL = "pip install 'robustmsa[extract]'"


def _av() -> Any:
    try:
        import av
    except ImportError as exc:
        raise ConfigError(f"decoding media files needs PyAV ({INSTALL})") from exc
    return av


@dataclass(frozen=True)
class MediaInfo:
    """The streams of a media file: ``has_audio``, ``has_video`` and the duration in seconds (0.0 when unknown)."""

    has_audio: bool
    has_video: bool
    duration: float


def _open(path: Path) -> Any:
    av = _av()
    require_file(path, "a media file")
    try:
        return av.open(str(path))
    except (av.FFmpegError, ValueError) as exc:
        raise DataError(path, None, f"FFmpeg cannot open the file as audio or video ({exc})") from None


def probe(path: str | Path) -> MediaInfo:
    """The streams of ``path`` (a :class:`DataError` if FFmpeg cannot open it)."""
    path = Path(path)
    with _open(path) as container:
        duration = float(container.duration) / 1e6 if container.duration is not None else 0.0
        return MediaInfo(bool(container.streams.audio), bool(container.streams.video), duration)


def load_audio(path: str | Path, rate: int = 16000) -> np.ndarray:
    """The first audio stream of ``path`` as mono float32 samples (n,) at ``rate`` Hz.

    Mono and stereo: the channels' mean (a tone on both channels keeps its level). More channels (5.1, ...):
    FFmpeg's standard downmix, which keeps the centre channel, where films put speech, at its level.
    """
    if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1000:
        raise ConfigError(f"audio sample rate must be an integer >= 1000 Hz, got {rate!r}")
    av = _av()
    path = Path(path)
    with _open(path) as container:
        if not container.streams.audio:
            raise DataError(path, None, "has no audio stream")
        surround = len(container.streams.audio[0].codec_context.layout.channels) > 2
        # planar with the channels kept, averaged below: FFmpeg's stereo downmix would scale a tone on both by 1.41
        resampler = av.AudioResampler(format="fltp", layout="mono" if surround else None, rate=rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(audio=0):
                chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(None))
        except av.FFmpegError as exc:
            raise DataError(path, None, f"the audio stream cannot be decoded ({exc})") from None
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, dtype=np.float32)
    if not np.isfinite(samples).all():
        raise DataError(path, None, "the decoded audio holds NaN or infinite samples")
    return samples


def video_frames(path: str | Path, fps: float) -> Iterator[tuple[float, np.ndarray]]:
    """``(time in s, RGB frame (H, W, 3) uint8)`` of the first video stream, sampled at ``fps`` frames per second.

    For each sampling time ``k / fps`` (k = 0, 1, ...) the first frame shown at or after it is taken, and no frame
    twice: a file with fewer frames per second than ``fps`` yields each of its frames once. Frames are turned as
    a player shows them: a phone's portrait video, stored sideways with a rotation flag, comes out upright.
    """
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps <= 1000:
        raise ConfigError(f"frames per second must be a number in (0, 1000], got {fps!r}")
    av = _av()
    path = Path(path)
    step, eps = 1.0 / fps, 1e-6
    with _open(path) as container:
        if not container.streams.video:
            raise DataError(path, None, "has no video stream")
        stream = container.streams.video[0]
        next_time, last = 0.0, -1.0
        try:
            for frame in container.decode(stream):
                time = float(frame.pts * frame.time_base) if frame.pts is not None else last + step
                if time + eps >= next_time and time > last:
                    rgb = frame.to_ndarray(format="rgb24")
                    turn = int(round(getattr(frame, "rotation", 0) / 90)) % 4
                    yield time, np.ascontiguousarray(np.rot90(rgb, turn)) if turn else rgb  # PyAV: -90 = stored turned 90° counter-clockwise
                    next_time = (np.floor(time / step + eps) + 1) * step
                last = max(last, time)
        except av.FFmpegError as exc:
            raise DataError(path, None, f"the video stream cannot be decoded ({exc})") from None
