"""Missing-data corruption: determinism, nesting, untouched specials/padding, independence, removal, purity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustmsa.data.batch import Sample, collate
from robustmsa.errors import ConfigError, DataError
from robustmsa.reconstruct.corruption import corrupt_batch, corrupt_for_training, drop_masks, training_rates


def _samples(n: int = 6, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        lt = int(rng.integers(6, 30))
        special = np.zeros(lt, bool)
        special[[0, lt - 1]] = True
        out.append(
            Sample(
                id=f"s{i}",
                text=rng.normal(size=(lt, 8)).astype(np.float32) + 5.0,  # never exactly zero
                text_special=special,
                text_ids=rng.integers(1000, 2000, size=lt),
                audio=rng.normal(size=(int(rng.integers(5, 40)), 3)).astype(np.float32) + 5.0,
                vision=rng.normal(size=(int(rng.integers(5, 40)), 4)).astype(np.float32) + 5.0,
                label=0.0,
            )
        )
    return out


def _zero_rows(x: torch.Tensor) -> torch.Tensor:
    return (x == 0).all(dim=-1)


def test_deterministic_and_independent_of_batch_composition() -> None:
    samples = _samples(8)
    a = corrupt_batch(collate(samples), 0.4, seed=3)
    b = corrupt_batch(collate(samples), 0.4, seed=3)
    assert torch.equal(a.text, b.text) and torch.equal(a.audio, b.audio) and torch.equal(a.text_ids, b.text_ids)
    # the same sample in another batch (other neighbours, other padding) gets the same mask
    alone = corrupt_batch(collate([samples[2], samples[5]]), 0.4, seed=3)
    n = samples[2].audio.shape[0]
    assert torch.equal(alone.audio[0, :n], a.audio[2, :n])
    n = samples[5].text.shape[0]
    assert torch.equal(alone.text[1, :n], a.text[5, :n])
    # another seed gives another mask
    c = corrupt_batch(collate(samples), 0.4, seed=4)
    assert not torch.equal(_zero_rows(a.audio), _zero_rows(c.audio))


def test_masks_nested_across_rates() -> None:
    batch = collate(_samples(8))
    previous = {m: torch.zeros_like(batch.mask(m)) for m in ("text", "audio", "vision")}
    for r in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9):
        for m in previous:
            dropped = drop_masks(batch, m, r, seed=11)
            assert not (previous[m] & ~dropped).any(), f"{m}: a position dropped at a smaller rate is kept at {r}"
            previous[m] = dropped
    assert previous["audio"].any()


def test_specials_and_padding_untouched_and_rates_recorded() -> None:
    batch = collate(_samples(8))
    out = corrupt_batch(batch, {"text": 1.0}, seed=0, unk_id=7)
    special = batch.text_special
    padding = ~batch.text_mask
    assert torch.equal(out.text[special], batch.text[special])
    assert torch.equal(out.text_ids[special], batch.text_ids[special])
    assert torch.equal(out.text[padding], batch.text[padding])  # padding stays as it was (zeros)
    real = batch.text_mask & ~special
    assert _zero_rows(out.text)[real].all() and (out.text_ids[real] == 7).all()
    assert torch.equal(out.text_mask, batch.text_mask)
    assert torch.allclose(out.extras["missing_rate_text"], torch.ones(len(batch)))
    assert torch.equal(out.audio, batch.audio)  # only text was asked for
    partial = corrupt_batch(batch, {"text": 0.5}, seed=0)
    dropped = _zero_rows(partial.text) & real
    expected = dropped.sum(1).float() / real.sum(1).float()
    assert torch.allclose(partial.extras["missing_rate_text"], expected)


def test_audio_vision_frames_within_length_and_full_removal() -> None:
    samples = _samples(6)
    batch = collate(samples)
    out = corrupt_batch(batch, {"audio": 0.5, "vision": 1.0}, seed=2)
    for i, s in enumerate(samples):
        n = s.audio.shape[0]
        zero = _zero_rows(out.audio[i, :n])
        kept = ~zero
        assert torch.equal(out.audio[i, :n][kept], batch.audio[i, :n][kept])  # whole frames: kept ones intact
        assert 0 < int(zero.sum()) < n
        assert _zero_rows(out.vision[i, : s.vision.shape[0]]).all()
    assert torch.equal(out.audio_lengths, batch.audio_lengths)
    assert torch.allclose(out.extras["missing_rate_vision"], torch.ones(len(batch)))


def test_modalities_get_independent_streams() -> None:
    # identical lengths in every modality: a shared stream would give identical masks
    rng = np.random.default_rng(0)
    samples = [Sample(id=f"x{i}", text=rng.normal(size=(40, 2)).astype(np.float32) + 3, audio=rng.normal(size=(40, 2)).astype(np.float32) + 3, label=0.0) for i in range(4)]
    batch = collate(samples)
    text = drop_masks(batch, "text", 0.5, seed=0)
    audio = drop_masks(batch, "audio", 0.5, seed=0)
    assert not torch.equal(text, audio)
    assert not torch.equal(text[0], text[1])  # nor do samples


def test_input_batch_not_mutated() -> None:
    batch = collate(_samples(5))
    before = {k: v.clone() for k, v in (("text", batch.text), ("audio", batch.audio), ("vision", batch.vision), ("ids", batch.text_ids))}
    out = corrupt_batch(batch, 0.8, seed=1)
    assert out is not batch and "missing_rate_text" not in batch.extras
    assert torch.equal(batch.text, before["text"]) and torch.equal(batch.audio, before["audio"])
    assert torch.equal(batch.vision, before["vision"]) and torch.equal(batch.text_ids, before["ids"])


def test_training_rates_redrawn_per_epoch_with_complete_share() -> None:
    ids = [f"s{i}" for i in range(400)]
    e0 = training_rates(ids, ("text", "audio"), seed=0, epoch=0, complete_share=0.25)
    e0b = training_rates(ids, ("text", "audio"), seed=0, epoch=0, complete_share=0.25)
    e1 = training_rates(ids, ("text", "audio"), seed=0, epoch=1, complete_share=0.25)
    assert np.array_equal(e0["text"], e0b["text"])
    assert not np.array_equal(e0["text"], e1["text"])
    complete = (e0["text"] == 0) & (e0["audio"] == 0)
    assert 0.17 < complete.mean() < 0.33
    assert not np.array_equal(e0["text"][~complete], e0["audio"][~complete])
    assert 0.4 < e0["text"][~complete].mean() < 0.6
    batch = collate(_samples(6))
    a = corrupt_for_training(batch, seed=0, epoch=0)
    b = corrupt_for_training(batch, seed=0, epoch=1)
    assert not torch.equal(a.text, b.text)


def test_complete_share_one_never_corrupts() -> None:
    # configs/missing/baseline_complete.yaml relies on it: the backbone trained on complete inputs only
    batch = collate(_samples(6))
    for epoch in range(3):
        assert all((rates == 0).all() for rates in training_rates(batch.ids, ("text", "audio", "vision"), seed=0, epoch=epoch, complete_share=1.0).values())
        out = corrupt_for_training(batch, seed=0, epoch=epoch, complete_share=1.0)
        assert torch.equal(out.text, batch.text) and torch.equal(out.audio, batch.audio) and torch.equal(out.vision, batch.vision)
        assert torch.equal(out.text_ids, batch.text_ids)


def test_complete_per_modality_keeps_each_modality_complete_on_its_own() -> None:
    # the LNLN authors' protocol (configs/missing/synthetic_authors_protocol.yaml): half the samples complete per modality
    ids = [f"s{i}" for i in range(2000)]
    modalities = ("text", "audio", "vision")
    rates = training_rates(ids, modalities, seed=0, epoch=0, complete_share=0.5, complete_per="modality")
    complete = {m: rates[m] == 0 for m in modalities}
    for m in modalities:
        assert 0.45 < complete[m].mean() < 0.55
        assert 0.4 < rates[m][~complete[m]].mean() < 0.6
    # independent draws: all three complete for about 1/8 of the samples (per sample it would be half)
    assert 0.09 < (complete["text"] & complete["audio"] & complete["vision"]).mean() < 0.16
    assert 0.2 < (complete["text"] & ~complete["audio"]).mean() < 0.3
    # a modality's rate does not depend on whether the others are complete, and "sample" is unchanged by the option
    per_sample = training_rates(ids, modalities, seed=0, epoch=0, complete_share=0.5)
    assert np.array_equal(per_sample["text"], training_rates(ids, modalities, seed=0, epoch=0, complete_share=0.5, complete_per="sample")["text"])
    both = ~complete["text"] & (per_sample["text"] > 0)
    assert both.any() and np.array_equal(rates["text"][both], per_sample["text"][both])
    batch = collate(_samples(8))
    out = corrupt_for_training(batch, seed=0, epoch=0, complete_share=0.5, complete_per="modality")
    expected = training_rates(batch.ids, ("text", "audio", "vision"), seed=0, epoch=0, complete_share=0.5, complete_per="modality")
    for m in modalities:
        assert torch.equal(getattr(out, m)[expected[m] == 0], getattr(batch, m)[expected[m] == 0])
        assert not torch.equal(getattr(out, m)[expected[m] > 0], getattr(batch, m)[expected[m] > 0])
    with pytest.raises(ConfigError, match=r"complete_per must be one of \['sample', 'modality'\], got 'batch'"):
        training_rates(ids, modalities, seed=0, epoch=0, complete_per="batch")


def test_bad_rates_are_config_errors() -> None:
    batch = collate(_samples(3))
    with pytest.raises(ConfigError):
        corrupt_batch(batch, 1.5, seed=0)
    with pytest.raises(ConfigError):
        corrupt_batch(batch, {"image": 0.5}, seed=0)
    with pytest.raises(ConfigError):
        corrupt_batch(batch, {"text": np.array([0.1, 0.2])}, seed=0)
    for rate in (True, "0.5", np.array([True, False, True])):
        with pytest.raises(ConfigError, match="must be a number"):
            corrupt_batch(batch, {"text": rate}, seed=0)
    # masks are keyed by the seed's digits: 0.0 or True would silently give other masks than 0
    for seed in (0.0, True, None, torch.Generator()):
        with pytest.raises(ConfigError, match="seed must be an integer"):
            corrupt_batch(batch, 0.5, seed=seed)  # type: ignore[arg-type]
    assert torch.equal(corrupt_batch(batch, 0.5, seed=np.int64(3)).text, corrupt_batch(batch, 0.5, seed=3).text)
    with pytest.raises(ConfigError, match="epoch must be an integer"):
        corrupt_for_training(batch, 0, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"cannot corrupt modalities \['smell'\]"):
        corrupt_for_training(batch, 0, 1, modalities=["smell"])
    with pytest.raises(DataError, match="field 'audio_lengths': must lie in"):
        corrupt_batch(batch.replace(audio_lengths=batch.audio_lengths + 100), 0.5, seed=0)
