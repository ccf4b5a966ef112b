"""Features from raw clips: a labels CSV and a folder of audio / video files -> a :class:`DataBundle`.

What MMSA's feature-extraction toolkit does for its users, offline and cached:

* **labels**: a CMU-MOSI-style CSV ``id,label,mode[,text]``
  (:func:`~robustmsa.data.text_corpora.parse_labels_csv`; the group of a clip is
  its id without the trailing ``_<clip>``); without ``label`` (``id[,mode][,text]``):
  new clips to predict on;
* **media**: every file under ``media`` (searched recursively) whose name
  without suffix is a clip id. A clip may have an audio file (``.wav``,
  ``.flac``, ...), a video file (``.mp4``, ``.avi``, ...) or both; without an
  audio file its audio comes from the video's sound track;
* **audio**: openSMILE descriptors (:mod:`robustmsa.features.audio`);
* **vision**: MediaPipe face blendshapes and head pose, one row per sampled
  frame (:func:`robustmsa.features.faces.face_video_features`);
* **text**: the CSV's transcript, or Whisper's (``text: asr``, or ``auto``
  without a ``text`` column), encoded by a text encoder
  (:func:`robustmsa.features.text.build_text_encoder`).

A clip without a video file, or without any sound, gets an empty (length 0)
vision or audio sequence: the modality is missing, never filled with made-up
values; the counts are in ``bundle.meta['extraction']`` and printed by the
command. A clip id with no media file at all is a :class:`DataError`.

Per-clip features are cached under ``cache_dir/clips`` keyed by the file's
content and every setting that changes the features, so a re-run (or a run
with another text encoder) decodes nothing again.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from robustmsa.data.batch import Sample
from robustmsa.data.dataset import TEXT_CONTEXTUAL, DataBundle, MultimodalSplit, TaskSpec, check_limit, default_metric_set, limited
from robustmsa.data.text_corpora import parse_labels_csv
from robustmsa.errors import ConfigError, DataError
from robustmsa.features.audio import check_audio_settings, smile_features
from robustmsa.features.cache import atomic_write, cache_root, content_key, file_digest
from robustmsa.features.text import attach_text_features, build_text_encoder
from robustmsa.features.transcribe import WHISPER_RATE, Transcriber
from robustmsa.provenance import package_version

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".flv")
TEXT_SOURCES = ("auto", "labels", "asr")


@dataclass(frozen=True)
class ClipSettings:
    """How clips become features (each file's cache key holds every field that changes what is computed from it).

    ``text``: ``labels`` (the CSV's ``text`` column), ``asr`` (Whisper), ``auto`` (``labels`` when the CSV has a
    ``text`` column); ``text_encoder``: ``minilm`` (contextual token features), ``static`` (one vector per word,
    what missing-modality sweeps need), ``hash``. Audio: openSMILE ``audio_features`` at ``audio_level``, averaged
    to ``audio_fps`` rows per second (``None``: every 10 ms); ``sample_rate`` of the decoded sound. Vision:
    ``vision_fps`` sampled frames per second. ``label_range``: the labels' scale (MOSI / MOSEI: -3 .. 3; -1 .. 1 is scored with CH-SIMS's metrics, as in MMSA pickles).
    ``face_model`` / ``asr_model``: own model files instead of the wheels' ones.
    """

    text: Literal["auto", "labels", "asr"] = "auto"
    text_encoder: str = "minilm"
    audio_features: str = "eGeMAPSv02"
    audio_level: Literal["lld", "functionals"] = "lld"
    audio_fps: float | None = 10.0
    vision_fps: float = 10.0
    sample_rate: int = 16000
    label_range: tuple[float, float] = (-3.0, 3.0)
    face_model: str | None = None
    asr_model: str | None = None

    def __post_init__(self) -> None:
        if self.text not in TEXT_SOURCES:
            raise ConfigError(f"clip text must be one of {', '.join(TEXT_SOURCES)}; got {self.text!r}")
        check_audio_settings(self.audio_features, self.audio_level, self.audio_fps)
        if self.audio_level == "functionals":
            object.__setattr__(self, "audio_fps", None)  # one row per clip: a frame rate means nothing (nor in the cache key)
        if isinstance(self.vision_fps, bool) or not isinstance(self.vision_fps, int | float) or not 0 < self.vision_fps <= 100:
            raise ConfigError(f"vision frames per second must be a number in (0, 100]; got {self.vision_fps!r}")
        if isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, int) or not 8000 <= self.sample_rate <= 48000:
            raise ConfigError(f"sample_rate must be an integer in [8000, 48000] Hz; got {self.sample_rate!r}")
        bounds = self.label_range
        if not isinstance(bounds, tuple | list) or len(bounds) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bounds) or not bounds[0] < bounds[1]:
            raise ConfigError(f"label_range must be [low, high] with low < high; got {bounds!r}")
        object.__setattr__(self, "label_range", (float(bounds[0]), float(bounds[1])))


@dataclass(frozen=True)
class ClipMedia:
    """The files of one clip: ``audio`` (a sound file) and / or ``video``."""

    audio: Path | None = None
    video: Path | None = None


def find_media(folder: str | Path, ids: list[str]) -> dict[str, ClipMedia]:
    """The media files of each clip id under ``folder`` (recursively), by file name without suffix.

    Linked folders are followed (each real folder once). A :class:`DataError` names a clip with no file, or with two
    audio (or two video) files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, None, "media folder not found")
    wanted = set(ids)
    found: dict[str, dict[str, Path]] = {}
    for path in _walk(folder):
        suffix = path.suffix.lower()
        kind = "audio" if suffix in AUDIO_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None
        if kind is None or path.stem not in wanted or not path.is_file():
            continue
        files = found.setdefault(path.stem, {})
        if kind in files:
            raise DataError(path, None, f"clip '{path.stem}' has two {kind} files: {files[kind]} and {path}; keep one")
        files[kind] = path
    absent = [i for i in ids if i not in found]
    if absent:
        raise DataError(folder, None, f"no audio or video file for {len(absent)} of {len(ids)} clips (e.g. '{absent[0]}'); expected <id>{AUDIO_SUFFIXES[0]} or <id>{VIDEO_SUFFIXES[0]}")
    return {i: ClipMedia(found[i].get("audio"), found[i].get("video")) for i in ids}


def _walk(folder: Path) -> list[Path]:
    """Every file under ``folder``, sorted, following linked folders but entering each real folder once."""
    seen: set[Path] = set()
    paths: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = Path(root).resolve()
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        paths += [Path(root) / name for name in files]
    return sorted(paths)


class ClipCache:
    """One ``.npz`` per (file content, what was computed from it), in ``directory``; written atomically."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._digests: dict[Path, str] = {}

    def __call__(self, path: Path, recipe: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The arrays ``compute()`` returns for ``path`` under ``recipe``, from the cache when present."""
        if path not in self._digests:
            self._digests[path] = file_digest(path)
        entry = self.dir / f"{content_key(self._digests[path], recipe)[:40]}.npz"
        if entry.is_file():
            try:
                with np.load(entry, allow_pickle=False) as data:
                    return {key: data[key] for key in data.files}
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                pass  # a damaged entry is recomputed and replaced
        arrays = compute()
        self.dir.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write(entry, lambda handle: handle.write(buffer.getvalue()))
        return arrays


def _finite(path: Path, what: str, values: np.ndarray) -> np.ndarray:
    if not np.isfinite(values).all():
        raise DataError(path, None, f"its {what} features hold NaN or infinite values")
    return values.astype(np.float32)


def _version(package: str) -> str:
    return package_version(package) or "unknown"


class _Extractor:
    """The per-modality features of one clip's files, through the cache; checks its models before the first clip."""

    def __init__(self, settings: ClipSettings, cache: ClipCache, asr: bool, video: bool) -> None:
        from robustmsa.features import faces

        self.settings = settings
        self.cache = cache
        # every recipe names the library version that computes it: an upgrade recomputes instead of mixing versions
        smile = _version("opensmile")
        self.audio_recipe = f"smile-1:{smile}:{settings.audio_features}:{settings.audio_level}:{settings.audio_fps}:{settings.sample_rate}"
        self.audio_names: list[str] = []
        self.transcriber = None
        self.models: dict[str, str] = {}  # the models by content (what a trained model's features depend on)
        if asr:  # faster-whisper and the model load before hours of work start, as MediaPipe's below
            self.transcriber = Transcriber(settings.asr_model)
            self.transcriber.load()
            self.asr_recipe = f"asr-1:{_version('faster-whisper')}:{self.transcriber.identity}"
            self.models["asr"] = self.transcriber.identity
        if video:
            faces.open_landmarker(settings.face_model, video=True)[1].close()
            model = file_digest(faces.face_landmarker_path(settings.face_model))
            self.vision_recipe = f"faces-1:{_version('mediapipe')}:{settings.vision_fps}:{model}"
            self.models["face"] = f"face-landmarker:{model}"

    def sound(self, path: Path) -> tuple[np.ndarray, str | None]:
        """Acoustic features (T, D) of a file's sound, and its transcript when ASR is on (decoded at most once)."""
        from robustmsa.features.media import load_audio

        decoded: dict[int, np.ndarray] = {}

        def signal(rate: int) -> np.ndarray:
            if rate not in decoded:
                decoded[rate] = load_audio(path, rate)
            return decoded[rate]

        def acoustic() -> dict[str, np.ndarray]:
            s = self.settings
            values, names = smile_features(signal(s.sample_rate), s.sample_rate, s.audio_features, s.audio_level, s.audio_fps)
            return {"features": values, "names": np.array(names)}

        arrays = self.cache(path, self.audio_recipe, acoustic)
        self.audio_names = [str(n) for n in arrays["names"]]
        transcript = None
        if self.transcriber is not None:
            transcript = str(self.cache(path, self.asr_recipe, lambda: {"text": np.array(self.transcriber(signal(WHISPER_RATE)))})["text"])
        return _finite(path, "audio", arrays["features"]), transcript

    def faces(self, path: Path) -> np.ndarray:
        """Face features (T, 56) of a video (:func:`robustmsa.features.faces.face_video_features`)."""
        from robustmsa.features.faces import face_video_features

        features = self.cache(path, self.vision_recipe, lambda: {"features": face_video_features(path, self.settings.vision_fps, self.settings.face_model)})
        return _finite(path, "vision", features["features"])

    def clip(self, job: _Job) -> _Done:
        """``(id, audio or None, vision or None, transcript or None, audio feature names)`` of one clip."""
        clip_id, sound, picture = job
        audio, transcript = self.sound(sound) if sound is not None else (None, None)
        return clip_id, audio, self.faces(picture) if picture is not None else None, transcript, self.audio_names


#: One clip to extract: its id, the file to take the sound from, the file to take the picture from (None: absent).
_Job = tuple[str, Path | None, Path | None]
_Done = tuple[str, np.ndarray | None, np.ndarray | None, str | None, list[str]]


def _extract_jobs(settings: ClipSettings, cache_dir: Path, asr: bool, video: bool, jobs: list[_Job]) -> list[_Done]:
    """The features of ``jobs`` in a worker process, with its own models and the shared (atomic) cache."""
    extractor = _Extractor(settings, ClipCache(cache_dir), asr=asr, video=video)
    return [extractor.clip(job) for job in jobs]


def extract_clips(
    labels: str | Path,
    media: str | Path,
    settings: ClipSettings | None = None,
    *,
    cache_dir: str | Path | None = None,
    limit: int | None = None,
    workers: int = 1,
    on_clip: Callable[[int, int, str], None] | None = None,
) -> DataBundle:
    """A regression :class:`DataBundle` (train / valid / test from the CSV's ``mode``) of every clip in ``labels``.

    A CSV without a ``label`` column lists new clips to predict on: its splits (``test`` alone without a ``mode``
    column) are unlabelled (``labelled=False``); a split that lists no clip is left out.

    ``limit``: a random N clips of each split (fixed seed, file order kept; :func:`~robustmsa.data.dataset.limited`),
    chosen before anything is decoded. ``workers``: processes extracting clips at once (each loads its own models;
    the features do not depend on it). ``on_clip(done, total, clip_id)`` is called as clips finish (progress display).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"clips: 'workers' must be an integer >= 1, got {workers!r}")
    from robustmsa.features.faces import FACE_FEATURES
    from robustmsa.features.media import probe

    settings = settings or ClipSettings()
    labels = Path(labels)
    limit = check_limit(limit, "clips")
    parsed = {split: limited(samples, limit) for split, samples in parse_labels_csv(labels, text=settings.text == "labels", unlabelled=True).items() if samples}
    samples = [s for split in parsed.values() for s in split]
    if not samples:
        raise DataError(labels, None, "lists no clips")
    labelled = samples[0].label is not None  # a CSV without a label column lists new clips to predict on
    # everything that can be wrong with the inputs is found before hours of decoding, not after
    low, high = settings.label_range
    outside = next((s for s in samples if labelled and not low <= s.label <= high), None)
    if outside is not None:
        raise DataError(labels, "label", f"clip '{outside.id}' has label {outside.label}; expected a value in [{low}, {high}] (set label_range)")
    seen: dict[str, str] = {}
    for name, split in parsed.items():
        for sample in split:
            if sample.id in seen:
                raise DataError(labels, "id", f"clip '{sample.id}' is listed twice (in split '{seen[sample.id]}' and in split '{name}')")
            seen[sample.id] = name
    encoder = build_text_encoder(settings.text_encoder, cache_dir)
    has_text = all(s.raw_text is not None for s in samples)
    text_source = ("labels" if has_text else "asr") if settings.text == "auto" else settings.text
    files = find_media(media, [s.id for s in samples])
    streams = {clip.video: probe(clip.video) for clip in files.values() if clip.video is not None}  # an .mp4 may hold sound only
    jobs: list[_Job] = []
    for sample in samples:
        clip = files[sample.id]
        video = streams[clip.video] if clip.video is not None else None
        sound = clip.audio if clip.audio is not None else clip.video if video is not None and video.has_audio else None
        jobs.append((sample.id, sound, clip.video if video is not None and video.has_video else None))
    cache_folder = cache_root(cache_dir) / "clips"
    asr, faces = text_source == "asr", any(job[2] is not None for job in jobs)
    extractor = _Extractor(settings, ClipCache(cache_folder), asr=asr, video=faces)  # also checks the models, in this process
    if workers == 1:
        done_jobs: Iterable[_Done] = map(extractor.clip, jobs)
    else:
        size = -(-len(jobs) // (4 * workers))  # about 4 chunks per worker: an even load, a progress display that moves
        chunks = [jobs[start : start + size] for start in range(0, len(jobs), size)]
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))  # no fork of a process with threads
        done_jobs = (done for chunk in pool.map(partial(_extract_jobs, settings, cache_folder, asr, faces), chunks) for done in chunk)
    counts = {"clips": len(samples), "without_audio": 0, "without_video": 0, "frames": 0, "frames_without_face": 0}
    features: dict[str, tuple[np.ndarray | None, np.ndarray | None, str]] = {}
    texts = {sample.id: sample.raw_text for sample in samples}
    audio_names: list[str] = []
    try:
        for done, (clip_id, audio, vision, transcript, names) in enumerate(done_jobs, 1):
            audio_names = names or audio_names
            counts["without_audio"] += audio is None or len(audio) == 0
            counts["without_video"] += vision is None or len(vision) == 0
            if vision is not None:
                counts["frames"] += len(vision)
                counts["frames_without_face"] += int((vision[:, -1] == 0).sum())
            features[clip_id] = (audio, vision, (texts[clip_id] if text_source == "labels" else transcript) or "")
            if on_clip is not None:
                on_clip(done, len(samples), clip_id)
    finally:
        if workers > 1:
            pool.shutdown(cancel_futures=True)
    s = settings
    audio_names = audio_names or smile_features(np.zeros(s.sample_rate, np.float32), s.sample_rate, s.audio_features, s.audio_level, s.audio_fps)[1]
    empty = {"audio": np.zeros((0, len(audio_names)), np.float32), "vision": np.zeros((0, len(FACE_FEATURES)), np.float32)}
    for split in parsed.values():
        for i, sample in enumerate(split):
            audio, vision, text = features[sample.id]
            audio, vision = empty["audio"] if audio is None else audio, empty["vision"] if vision is None else vision
            split[i] = Sample(sample.id, sample.group, text, audio=audio, vision=vision, label=sample.label)
    task = TaskSpec(kind="regression", num_classes=1, label_range=settings.label_range, metric_set=default_metric_set(settings.label_range))  # as read back from its MMSA pickle
    encoded = attach_text_features([s for split in parsed.values() for s in split], encoder)
    splits, start = {}, 0
    for name, split in parsed.items():
        splits[name] = MultimodalSplit(encoded[start : start + len(split)], name=name, source=labels, task=task, labelled=labelled)
        start += len(split)
    extraction = {
        "settings": asdict(settings),
        "text_source": text_source,
        "models": extractor.models,  # by content, those used
        "counts": counts,
        "audio_features": audio_names,
        "vision_features": list(FACE_FEATURES),
    }
    meta: dict[str, Any] = {"source": str(labels), "media": str(media), "text_encoder": encoder.name, TEXT_CONTEXTUAL: encoder.contextual, "extraction": extraction}
    return DataBundle(splits, task, name=labels.stem, meta=meta)

