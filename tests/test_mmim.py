"""MMIM: the InfoNCE and Gaussian formulas, the gradient routing of its two training stages, eval-mode behaviour."""

from __future__ import annotations

import math

import pytest
import torch

from robustmsa.data.batch import collate
from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.method import Supervised
from robustmsa.models.mmim import MMIM, GaussianEstimator, gaussian_entropy, gaussian_log_likelihood, info_nce
from robustmsa.registry import BACKBONES
from robustmsa.training.fit import seeded
from tests.conftest import make_toy_split

SMALL = {"text_hidden": 16, "av_hidden": 8, "av_out": 8, "hidden": 16}


def _model(task: TaskSpec | None = None, **extra) -> MMIM:
    split = make_toy_split(2, "m", 0, task=task)
    with seeded(0):
        return BACKBONES.build("mmim", split.dims(), task or TaskSpec(), **SMALL, **extra)


def test_info_nce_known_values() -> None:
    b = 4
    same = torch.ones(b, 3)
    assert abs(float(info_nce(same, 2 * same)) - math.log(b)) < 1e-6  # every candidate scores 1: log B
    eye = torch.eye(b)
    matched = float(info_nce(eye, 3 * eye))  # cosine 1 with the own target, 0 with the others
    assert abs(matched - (math.log(math.e + b - 1) - 1)) < 1e-6
    shuffled = float(info_nce(eye, eye[torch.tensor([1, 2, 3, 0])]))
    assert matched < math.log(b) < shuffled
    assert float(info_nce(torch.randn(1, 3), torch.randn(1, 3))) == 0.0  # a single sample has no negatives
    assert torch.isfinite(info_nce(torch.zeros(2, 3), torch.zeros(2, 3)))


def test_gaussian_log_likelihood_and_entropy_known_values() -> None:
    y = torch.tensor([[1.0, 0.0, 3.0]])
    mu = torch.tensor([[0.0, 0.0, 1.0]])
    logvar = torch.tensor([[0.0, math.log(2.0), math.log(4.0)]])
    expected = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(y).sum(-1)
    torch.testing.assert_close(gaussian_log_likelihood(y, mu, logvar), expected)
    # by hand, first dimension: -(1/2)(1 + 0 + log 2 pi)
    assert abs(float(gaussian_log_likelihood(y[:, :1], mu[:, :1], logvar[:, :1])) + 0.5 * (1 + math.log(2 * math.pi))) < 1e-6
    # samples -1 and 1 have variance 1: the entropy of N(0, 1) per dimension, 1/2 log(2 pi e)
    pair = torch.tensor([[-1.0, -1.0], [1.0, 1.0]])
    assert abs(float(gaussian_entropy(pair, eps=0.0)) - math.log(2 * math.pi * math.e)) < 1e-6
    assert float(gaussian_entropy(2 * pair, eps=0.0)) > float(gaussian_entropy(pair, eps=0.0))


def test_the_estimator_fits_a_conditional_gaussian() -> None:
    with seeded(0):
        x = torch.randn(128, 2)
        y = torch.cat([2 * x[:, :1], torch.randn(128, 1)], dim=1)  # dim 0: predictable from x; dim 1: noise of variance 1
        estimator = GaussianEstimator(2, 2)
        opt = torch.optim.Adam(estimator.parameters(), lr=1e-2)
        start = float(gaussian_log_likelihood(y, *estimator(x)).mean().detach())
        for _ in range(300):
            opt.zero_grad()
            (-gaussian_log_likelihood(y, *estimator(x)).mean()).backward()
            opt.step()
    with torch.no_grad():
        mu, logvar = estimator(x)
    assert float(gaussian_log_likelihood(y, mu, logvar).mean()) > start + 1.0
    assert float((mu[:, 0] - y[:, 0]).abs().mean()) < 0.3
    assert float(logvar[:, 0].mean()) < -0.8  # towards tanh's floor -1 (variance 1/e) for the predictable dimension
    assert abs(float(logvar[:, 1].mean())) < 0.3  # log 1 for the noise


def _reached(loss: torch.Tensor, model: MMIM) -> set[str]:
    named = [(n, p) for n, p in model.named_parameters()]
    grads = torch.autograd.grad(loss, [p for _, p in named], retain_graph=True, allow_unused=True)
    return {n for (n, _), g in zip(named, grads) if g is not None and bool(g.abs().sum() > 0)}


def _under(model: MMIM, *prefixes: str) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(prefixes)}


def test_each_stage_term_updates_exactly_its_parameters() -> None:
    model = _model(add_va=True).train()
    batch = collate(make_toy_split(12, "r", 1).samples)
    with seeded(1):
        losses = model.auxiliary_losses(batch, model(batch))
    assert set(losses) == {"mmim_fit", "mmim_lld", "mmim_cpc", "mmim_entropy"}
    # stage 1: the estimator fit reaches every estimator parameter and nothing else
    assert _reached(losses["mmim_fit"], model) == _under(model, "estimators.")
    # stage 2: the bound moves the encoders (of x and y) with the estimators fixed
    assert _reached(losses["mmim_lld"], model) == _under(model, "encoders.", "av_out.")
    # the entropy of the targets (audio, vision) moves their encoders only
    assert _reached(losses["mmim_entropy"], model) == _under(model, "encoders.audio", "encoders.vision", "av_out.")
    # CPC: encoders, fusion and the predictors; never the head or the estimators
    assert _reached(losses["mmim_cpc"], model) == _under(model, "encoders.", "av_out.", "fusion.", "cpc.")
    # both stages evaluate the same log-likelihood: only the routing (and the weight) differs
    torch.testing.assert_close(losses["mmim_lld"] / model.beta, losses["mmim_fit"] / model.fit_weight)


def test_each_weight_scales_its_terms_only() -> None:
    batch = collate(make_toy_split(8, "w", 2).samples)
    model = _model().train()
    with seeded(3):
        base = model.auxiliary_losses(batch, model(batch))
    model.alpha, model.beta, model.fit_weight = 0.2, 0.3, 0.05
    with seeded(3):
        scaled = model.auxiliary_losses(batch, model(batch))
    torch.testing.assert_close(scaled["mmim_cpc"], 2 * base["mmim_cpc"])
    torch.testing.assert_close(scaled["mmim_lld"], 3 * base["mmim_lld"])
    torch.testing.assert_close(scaled["mmim_entropy"], 3 * base["mmim_entropy"])
    torch.testing.assert_close(scaled["mmim_fit"], 5 * base["mmim_fit"])  # stage 1: fit_weight (default 0.01), not beta
    assert "mmim_entropy" not in _model(entropy=False).train().auxiliary_losses(batch, model(batch))


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_a_training_batch_of_one_sample(kind: str) -> None:
    task = TaskSpec() if kind == "regression" else TaskSpec(kind="classification", num_classes=7, label_range=None)
    method = Supervised(_model(task)).train()
    losses = method.training_loss(collate(make_toy_split(1, "o", 5, task=task).samples))
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    assert float(losses["mmim_cpc"].detach()) == 0.0 and float(losses["mmim_entropy"].detach()) == 0.0
    losses["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in method.parameters() if p.grad is not None)


def test_bad_text_encoder_is_refused() -> None:
    with pytest.raises(ConfigError, match="text_encoder"):
        _model(text_encoder="gru")
    assert set(_model(text_encoder="mean", add_va=True).estimators) == {"text_audio", "text_vision", "vision_audio"}
