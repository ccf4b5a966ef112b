"""The backbone zoo: shapes, masking, gradients, learning and determinism of every registered backbone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robustmsa.config import load_config
from robustmsa.data.batch import Sample, collate
from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.method import Supervised
from robustmsa.metrics import regression_metrics
from robustmsa.models.align import resample
from robustmsa.models.base import Backbone, Output
from robustmsa.models.misa import cmd, soft_orthogonality
from robustmsa.registry import BACKBONES
from robustmsa.training.fit import TrainConfig, fit, predict, seeded
from tests.conftest import make_toy_split

# small sizes so that the whole file stays fast on one thread
SMALL: dict[str, dict] = {
    "text_only": {"hidden": 16},
    "lf_dnn": {"hidden": 16},
    "tfn": {"text_hidden": 8, "av_hidden": 4, "hidden": 16},
    "ef_lstm": {"hidden": 16},
    "lmf": {"text_hidden": 16, "av_hidden": 8, "hidden": 16, "rank": 2},
    "mult": {"dim": 16, "heads": 2, "layers": 1},
    "misa": {"hidden": 16, "text_hidden": 16, "av_hidden": 8},
    "self_mm": {"text_hidden": 16, "av_hidden": 8, "fusion_hidden": 16, "text_post": 16, "av_post": 8},
    "tetfn": {"dim": 8, "heads": 2, "layers": 1, "audio_hidden": 4, "vision_hidden": 4, "text_post": 8, "audio_post": 4, "vision_post": 4, "fusion_hidden": 16},
    "mag": {"dim": 16, "heads": 2, "layers": 1},
    "text_centric": {"dim": 16, "heads": 2, "av_tokens": 4, "levels": 2},
    "mfn": {"text_hidden": 8, "audio_hidden": 4, "vision_hidden": 4, "mem_dim": 8, "attn_hidden": 16, "mem_hidden": 16, "gate_hidden": 16, "hidden": 16},
    "graph_mfn": {
        "text_hidden": 8,
        "audio_hidden": 4,
        "vision_hidden": 4,
        "mem_dim": 8,
        "attn_hidden": 16,
        "vertex_dim": 4,
        "tau_dim": 8,
        "graph_hidden": 8,
        "efficacy_hidden": 8,
        "mem_hidden": 16,
        "gate_hidden": 16,
        "hidden": 16,
    },
    "mmim": {"text_hidden": 16, "av_hidden": 8, "av_out": 8, "hidden": 16},
    "bbfn": {"dim": 16, "heads": 2, "layers": 2},
    "mctn": {"hidden": 8, "second_hidden": 8, "predictor_hidden": 8},
    "mfm": {
        "text_hidden": 8,
        "audio_hidden": 4,
        "vision_hidden": 4,
        "mem_dim": 8,
        "attn_hidden": 16,
        "mem_hidden": 16,
        "gate_hidden": 16,
        "zy_dim": 8,
        "za_dim": 8,
        "fy_dim": 8,
        "fa_dim": 4,
        "decoder_hidden": 8,
        "hidden": 16,
    },
    "cenet": {"dim": 8, "heads": 2},
    "tfr_net": {"dim": 8, "heads": 2, "layers": 1, "fusion_hidden": 8, "fusion_layers": 1, "classifier_hidden": 16},
}
NAMES = sorted(SMALL)
# backbones that generate unimodal labels from continuous scores: they refuse classification tasks
REGRESSION_ONLY = ("self_mm", "tetfn")
REGRESSION = TaskSpec()
CLASSIFICATION = TaskSpec(kind="classification", num_classes=7, label_range=None)


def _build(name: str, dims: dict[str, int], task: TaskSpec, seed: int = 0):
    with seeded(seed):
        return BACKBONES.build(name, dims, task, **SMALL[name])


def _aligned_split(n: int, seed: int, task: TaskSpec, dims: tuple[int, int, int]) -> MultimodalSplit:
    """Word-aligned samples: audio and vision have the text's length in every sample."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        length = int(rng.integers(3, 10))
        y = float(rng.uniform(-3, 3))
        t, a, v = (rng.normal(size=(length, d)).astype(np.float32) for d in dims)
        samples.append(Sample(id=f"a{i}", label=y if task.kind == "regression" else None, label_class=None if task.kind == "regression" else i % 7, text=t, audio=a, vision=v))
    return MultimodalSplit(samples, name="aligned", source="toy", task=task)


def test_all_backbones_registered() -> None:
    assert set(NAMES) <= set(BACKBONES.names())


@pytest.mark.parametrize("aligned", [True, False], ids=["aligned", "unaligned"])
@pytest.mark.parametrize("kind", ["regression", "classification"])
@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes_and_padding_invariance(name: str, kind: str, aligned: bool) -> None:
    task = REGRESSION if kind == "regression" else CLASSIFICATION
    # token widths of GloVe / BERT with MOSI-like audio/vision widths
    dims = (300, 74, 35) if aligned else (768, 33, 20)
    split = _aligned_split(6, 0, task, dims) if aligned else make_toy_split(6, "u", 0, task=task, dims=dims)
    if name in REGRESSION_ONLY and kind == "classification":
        with pytest.raises(ConfigError, match="regression"):
            _build(name, split.dims(), task)
        return
    model = _build(name, split.dims(), task).eval()
    batch = collate(split.samples)
    with torch.no_grad():
        out = model(batch)
        alone = model(collate(split.samples[:1]))
    assert out.logits.shape == (6, task.out_dim)
    assert out.fused.ndim == 2 and out.fused.shape[0] == 6
    assert all(r.ndim == 2 and r.shape[0] == 6 for r in out.modality.values())
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.fused).all()
    # padding must not change a sample's output: sample 0 alone vs. in the padded batch
    torch.testing.assert_close(alone.logits, out.logits[:1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("name", "kind"), [(n, k) for n in NAMES for k in ("regression", "classification") if n not in REGRESSION_ONLY or k == "regression"])
def test_gradients_reach_every_parameter(name: str, kind: str) -> None:
    task = REGRESSION if kind == "regression" else CLASSIFICATION
    split = make_toy_split(12, "g", 3, task=task)
    method = Supervised(_build(name, split.dims(), task)).train()
    losses = method.training_loss(collate(split.samples))
    losses["loss"].backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing


#: The training-only auxiliary losses of the backbones that have some: none of them in eval mode.
TRAINING_ONLY = {
    "bbfn": {"bbfn_separator"},
    "mctn": {"mctn_translate_vision", "mctn_cycle_text", "mctn_translate_audio"},
    "mfm": {"mfm_recon_text", "mfm_recon_audio", "mfm_recon_vision", "mfm_mmd"},
    "mmim": {"mmim_fit", "mmim_lld", "mmim_cpc", "mmim_entropy"},
    "self_mm": {"selfmm_text", "selfmm_audio", "selfmm_vision"},
    "tetfn": {"tetfn_text", "tetfn_audio", "tetfn_vision"},
}


@pytest.mark.parametrize("name", sorted(TRAINING_ONLY))
def test_training_only_losses_are_absent_in_eval_mode(name: str) -> None:
    split = make_toy_split(6, "e", 4)
    batch = collate(split.samples)
    method = Supervised(_build(name, split.dims(), REGRESSION)).eval()
    assert method.backbone.auxiliary_losses(batch, method.backbone(batch)) == {}
    assert set(method.training_loss(batch)) == {"task", "loss"}
    method.train()
    assert set(method.training_loss(batch)) == {"task", "loss"} | TRAINING_ONLY[name]


@pytest.mark.parametrize(("name", "kind"), [(n, k) for n in NAMES for k in ("regression", "classification") if n not in REGRESSION_ONLY or k == "regression"])
def test_a_training_batch_of_one_sample_gives_finite_losses_and_gradients(name: str, kind: str) -> None:
    """Batch statistics (variances, contrastive terms, centres) must not turn into NaN for a last batch of one sample."""
    task = REGRESSION if kind == "regression" else CLASSIFICATION
    split = make_toy_split(1, "one", 9, task=task)
    method = Supervised(_build(name, split.dims(), task)).train()
    losses = method.training_loss(collate(split.samples))
    assert all(bool(torch.isfinite(v)) for v in losses.values()), {k: float(v.detach()) for k, v in losses.items()}
    losses["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in method.parameters() if p.grad is not None)


FIT = TrainConfig(max_epochs=6, patience=6, batch_size=32, lr=5e-3, progress=False)


@pytest.mark.parametrize("name", NAMES)
def test_learns_toy_task_deterministically(name: str, toy_bundle: DataBundle) -> None:
    preds = []
    for _ in range(2):
        method = Supervised(_build(name, toy_bundle.dims(), toy_bundle.task))
        fit(method, toy_bundle, FIT, seed=0)
        preds.append(predict(method, toy_bundle["test"]))
    np.testing.assert_array_equal(preds[0], preds[1])
    assert regression_metrics(preds[0], toy_bundle["test"].labels())["Has0_acc_2"] >= 0.8


CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*/*.yaml"))


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.parent.name in ("backbones", "mmsa")], ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_backbone_configs_build(path: Path) -> None:
    config = load_config(path)
    assert config.backbone.name == path.stem
    BACKBONES.build(config.backbone.name, {"text": 768, "audio": 5, "vision": 20}, TaskSpec(), **config.backbone.params)


def test_an_empty_sequence_summary_does_not_read_its_padding() -> None:
    """A sample whose audio or vision has length 0 (a batch built by hand may pad with anything)."""
    from robustmsa.models.base import SequenceEncoder

    with seeded(0):
        encoder = SequenceEncoder(4, 8, kind="lstm").eval()
    x, mask = torch.zeros(2, 3, 4), torch.tensor([[False, False, False], [True, True, False]])
    clean = encoder(x, mask)
    x[0, 0] = 5.0  # padding of the empty sample
    x[1, 2] = -3.0  # padding of the other
    assert torch.equal(encoder(x, mask), clean)


def test_resample_interpolates_over_true_lengths() -> None:
    x = torch.zeros(3, 4, 1)
    x[0, :2, 0] = torch.tensor([0.0, 10.0])  # length 2 -> 3 steps
    x[1, :3, 0] = torch.tensor([0.0, 1.0, 2.0])  # length 3 -> 4 steps (padded to 4)
    out = resample(x, torch.tensor([2, 3, 0]), torch.tensor([3, 4, 2]), 4)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([0.0, 5.0, 10.0, 0.0]))
    torch.testing.assert_close(out[1, :, 0], torch.tensor([0.0, 2 / 3, 4 / 3, 2.0]))
    assert out[2].abs().sum() == 0  # empty source sequence
    same = torch.randn(2, 5, 3)
    torch.testing.assert_close(resample(same, torch.tensor([5, 5]), torch.tensor([5, 5]), 5), same)


def test_cmd_of_shifted_samples_is_the_mean_distance() -> None:
    x = torch.randn(20, 4)
    assert float(cmd(x, x)) < 1e-4
    # equal central moments, means differ by 0.5 in each of 4 dims: ||0.5 * 1||_2 = 1
    assert abs(float(cmd(x, x + 0.5)) - 1.0) < 1e-4


def test_misa_refuses_a_moment_count_below_one_and_negative_loss_weights() -> None:
    from robustmsa.registry import BACKBONES

    dims = {"text": 8, "audio": 4, "vision": 3}
    with pytest.raises(ConfigError, match=r"misa cmd_moments must be an integer >= 1 .*got -5"):
        BACKBONES.build("misa", dims, TaskSpec(), cmd_moments=-5)
    with pytest.raises(ConfigError, match=r"misa diff_weight must be a finite number >= 0, got nan"):
        BACKBONES.build("misa", dims, TaskSpec(), diff_weight=float("nan"))
    assert BACKBONES.build("misa", dims, TaskSpec(), cmd_moments=1).cmd_moments == 1


def test_difference_loss_does_not_shrink_representations() -> None:
    x1, x2 = torch.randn(16, 6), torch.randn(16, 6)
    scale = torch.ones((), requires_grad=True)
    loss = soft_orthogonality(x1 * scale, x2)
    loss.backward()
    assert float(loss.detach()) > 0 and abs(float(scale.grad)) < 1e-5  # scale-invariant: no force towards collapse
    # features uncorrelated over the batch give no loss; perfectly correlated ones do
    a = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, -1.0], [0.0, -1.0]])
    assert float(soft_orthogonality(a, b)) < 1e-10 < float(soft_orthogonality(a, a))


def test_self_mm_generates_unimodal_labels(toy_bundle: DataBundle) -> None:
    model = _build("self_mm", toy_bundle.dims(), toy_bundle.task)
    fit(Supervised(model), toy_bundle, TrainConfig(max_epochs=3, patience=3, lr=5e-3, progress=False), seed=0)
    ids = toy_bundle["train"].ids
    labels = model.unimodal_labels(ids).numpy()
    truth = toy_bundle["train"].labels()
    np.testing.assert_allclose(labels[:, 0], truth)  # the fusion label is the true label
    moved = np.abs(labels[:, 1:] - truth[:, None])
    assert moved.max() > 0.01 and np.abs(labels).max() <= 3.0
    # the unimodal branches now get a weighted loss
    method = Supervised(model).train()
    losses = method.training_loss(collate(toy_bundle["train"].samples[:32]))
    assert all(float(losses[f"selfmm_{m}"].detach()) > 0 for m in ("text", "audio", "vision"))


def test_text_centric_fuse_uses_the_given_text_tokens() -> None:
    split = make_toy_split(4, "c", 5)
    model = _build("text_centric", split.dims(), REGRESSION).eval()
    batch = collate(split.samples)
    with torch.no_grad():
        enc = model.encode(batch)
        assert enc["text_tokens"].shape == (4, batch.text.shape[1], 16) and enc["audio_tokens"].shape == (4, 4, 16)
        masks = {m: enc[f"{m}_mask"] for m in ("text", "audio", "vision")}
        same = model.fuse(enc["text_tokens"], enc["audio_tokens"], enc["vision_tokens"], masks)
        torch.testing.assert_close(same.logits, model(batch).logits)
        assert same.extras["text_tokens"] is enc["text_tokens"]
        replaced = model.fuse(torch.zeros_like(enc["text_tokens"]), enc["audio_tokens"], enc["vision_tokens"], masks)
    assert not torch.allclose(replaced.logits, same.logits)


class _Flat(Backbone):
    """A user backbone with a common mistake: (B,) regression logits, or a tuple instead of an Output."""

    def __init__(self, dims: dict[str, int], task: TaskSpec, as_tuple: bool = False) -> None:
        super().__init__(dims, task)
        self.proj = torch.nn.Linear(dims["text"], 1)
        self.as_tuple = as_tuple

    def forward(self, batch):
        fused = batch.text.mean(dim=1)
        score = self.proj(fused)[:, 0]
        return (score, fused) if self.as_tuple else Output(logits=score, fused=fused)


def test_a_backbone_output_of_the_wrong_shape_or_type_is_refused_at_once() -> None:
    from robustmsa.debias.clue import CLUE

    split = make_toy_split(6, "test", 0)
    batch = collate(split.samples)
    flat = _Flat(split.dims(), REGRESSION)
    with pytest.raises(ConfigError, match=r"backbone _Flat: forward returned logits of shape \(6,\); expected .* \(6, 1\)"):
        flat(batch)
    # wrapped by CLUE, (B,) against the text branch's (B, 1) would broadcast to (B, B) without the check
    with pytest.raises(ConfigError, match="forward returned logits of shape"):
        CLUE(flat).predict(batch, "te")
    with pytest.raises(ConfigError, match="forward returned a tuple; expected a robustmsa.models.base.Output"):
        _Flat(split.dims(), REGRESSION, as_tuple=True)(batch)
