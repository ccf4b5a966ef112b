"""CENET: the cross-modal enhancement of the text tokens by audio and vision."""

from __future__ import annotations

import math

import pytest
import torch

from robustmsa.data.batch import collate
from robustmsa.data.dataset import DataBundle
from robustmsa.errors import ConfigError
from robustmsa.models.cenet import TextQuery
from robustmsa.registry import BACKBONES
from robustmsa.training.fit import seeded


def _net(bundle: DataBundle, **params: object):
    with seeded(0):
        return BACKBONES.build("cenet", bundle.dims(), bundle.task, **{"dim": 8, "heads": 2, "dropout": 0.0, **params}).eval()


def test_text_query_is_masked_scaled_attention_and_zero_without_keys() -> None:
    torch.manual_seed(0)
    attend = TextQuery(4, scale=0.5)
    text, source = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    mask = torch.tensor([[True, True, False, False, False], [False] * 5])
    out = attend(text, source, mask)
    q, k, v = attend.query(text[0]), attend.key(source[0, :2]), attend.value(source[0, :2])
    assert torch.allclose(out[0], torch.softmax(0.5 * q @ k.T, dim=-1) @ v, atol=1e-6)
    assert torch.equal(out[1], torch.zeros(3, 4))


def test_a_large_score_scale_makes_the_attention_pick_one_frame() -> None:
    torch.manual_seed(0)
    attend = TextQuery(4, scale=1e4)
    text, source = torch.randn(1, 3, 4), torch.randn(1, 6, 4)
    out = attend(text, source, torch.ones(1, 6, dtype=torch.bool))
    best = (attend.query(text[0]) @ attend.key(source[0]).T).argmax(dim=-1)
    assert torch.allclose(out[0], attend.value(source[0])[best], atol=1e-5)


def test_audio_and_vision_shift_the_text_after_the_first_layers_only(toy_bundle: DataBundle) -> None:
    net = _net(toy_bundle)
    batch = collate(toy_bundle["train"].samples[:6])
    out = net(batch)
    for m in ("audio", "vision"):
        other = net(batch.replace(**{m: getattr(batch, m) * 2.0 + 1.0}))
        assert torch.equal(other.modality["text"], out.modality["text"])  # Z: the text layers before the injection
        assert not torch.allclose(other.extras["ce_shift"], out.extras["ce_shift"])
        assert not torch.allclose(other.logits, out.logits)


def test_the_default_scale_is_one_over_sqrt_dim_and_mmsas_can_be_asked_for(toy_bundle: DataBundle) -> None:
    assert _net(toy_bundle).attend["audio"].scale == pytest.approx(1 / math.sqrt(8))
    assert _net(toy_bundle, score_scale=8).attend["vision"].scale == 8.0


@pytest.mark.parametrize("scale", [0, -1.0, True, float("nan"), "8"])
def test_a_bad_score_scale_is_refused(toy_bundle: DataBundle, scale: object) -> None:
    with pytest.raises(ConfigError, match="score_scale"):
        _net(toy_bundle, score_scale=scale)
