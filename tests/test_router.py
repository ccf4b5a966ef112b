"""Router: F-0.5 metric, losses, training with selection by validation F-0.5, analysis, oracle bound, MRID."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from robustmsa.data.batch import collate
from robustmsa.debias.categorize import EXCLUDED
from robustmsa.debias.mid import MID
from robustmsa.debias.mrid import MRID, fit_router
from robustmsa.debias.router import (
    Router,
    RouterConfig,
    RouterNet,
    inverse_frequency,
    oracle_choice,
    router_analysis,
    router_bundle,
    select_per_sample,
    strategy_params,
    train_router,
)
from robustmsa.errors import ConfigError
from robustmsa.method import Supervised
from robustmsa.metrics import classification_metrics, per_class_scores
from robustmsa.training.fit import fit, predict
from tests.test_mid import QUICK, tiny_backbone, toy_image_text_bundle


def test_f05_hand_computed() -> None:
    # binary: TP 2, FP 1, FN 2 -> P 2/3, R 1/2, F0.5 = 1.25 P R / (0.25 P + R)
    pred, truth = [1, 1, 1, 0, 0, 0], [1, 1, 0, 1, 1, 0]
    p, r = 2 / 3, 1 / 2
    assert classification_metrics(pred, truth, 2)["F0.5"] == pytest.approx(1.25 * p * r / (0.25 * p + r))
    scores = per_class_scores([0, 1, 1, 2], [0, 1, 2, 2], [0, 1, 2], beta=0.5)
    assert scores["precision"] == pytest.approx([1.0, 0.5, 1.0])
    assert scores["recall"] == pytest.approx([1.0, 1.0, 0.5])
    assert scores["fbeta"][1] == pytest.approx(1.25 * 0.5 / (0.25 * 0.5 + 1.0))
    assert scores["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_router_losses() -> None:
    features = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    data = router_bundle((features, np.array([0, 1, 1, 1])), (torch.zeros(2, 3), np.array([0, 1])), (0, 1))
    net = RouterNet({}, data.task, in_dim=3, dropout=0.0)
    batch = collate(data["train"].samples)
    logits = net(batch).logits
    ce = torch.nn.functional.cross_entropy(logits, batch.label_class)
    focal0 = Router(net, (0, 1), loss="focal", gamma=0.0).training_loss(batch)["loss"]
    assert focal0.item() == pytest.approx(ce.item(), rel=1e-5)  # gamma 0: plain cross-entropy
    focal2 = Router(net, (0, 1), loss="focal", gamma=2.0).training_loss(batch)["loss"]
    assert focal2.item() < ce.item()
    weights = inverse_frequency(np.array([0, 1, 1, 1]), 2)
    assert weights == pytest.approx([2.0, 2 / 3])  # n / (K n_k)
    weighted = Router(net, (0, 1), loss="weighted", class_weights=weights).training_loss(batch)["loss"]
    assert weighted.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, batch.label_class, weight=torch.tensor(weights)).item(), rel=1e-5)
    with pytest.raises(ConfigError):
        Router(net, (0, 1), loss="hinge")
    with pytest.raises(ConfigError):
        RouterConfig(losses=("plain", "bogus"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr": -1.0}, "router lr must be a finite number > 0, got -1.0"),
        ({"lr": float("nan")}, "router lr must be a finite number > 0, got nan"),
        ({"batch_size": 0}, "router batch_size must be an integer >= 1, got 0"),
        ({"hidden": -3}, "router hidden must be an integer >= 1, got -3"),
        ({"max_epochs": 0}, "router max_epochs must be an integer >= 1, got 0"),
        ({"patience": 1.5}, "router patience must be an integer >= 1, got 1.5"),
        ({"dropout": 1.0}, "router dropout must be in \\[0, 1\\), got 1.0"),
        ({"gamma": "2"}, "router gamma must be a finite number >= 0 .*got '2'"),
    ],
)
def test_router_training_settings_are_checked_when_the_config_is_read(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RouterConfig(**change)
    assert RouterConfig(hidden=1, max_epochs=1, batch_size=1, patience=1, lr=1e-4, dropout=0.0, gamma=0.0).hidden == 1


def test_train_router_learns_and_selects_by_validation_f05() -> None:
    rng = np.random.default_rng(0)

    def make(n: int) -> tuple[torch.Tensor, np.ndarray]:
        c = rng.choice([0, 1, 2, 3, EXCLUDED], size=n, p=[0.4, 0.2, 0.2, 0.1, 0.1])
        x = rng.normal(size=(n, 6)).astype(np.float32)
        x[np.arange(n), np.where(c >= 0, c, 4)] += 4.0  # the category is readable from the features
        return torch.as_tensor(x * 10 + 3), c  # far from standardised: the router standardises

    (tx, tc), (vx, vc) = make(300), make(100)
    data = router_bundle((tx, tc), (vx, vc), (0, 1, 2, 3))
    assert len(data["train"]) == int(np.sum(tc != EXCLUDED))
    result = train_router(data, (0, 1, 2, 3), RouterConfig(losses=("plain", "focal"), max_epochs=10, patience=10, hidden=16, batch_size=32, lr=0.01), seed=0)
    assert set(result.per_loss) == {"plain", "focal"}
    assert result.valid_f05 == max(result.per_loss.values()) and result.loss in result.per_loss
    routed = result.router.eval().route(vx).argmax(dim=-1).numpy()
    keep = vc != EXCLUDED
    assert np.mean(routed[keep] == vc[keep]) > 0.9
    assert torch.allclose(result.router.route(vx[:3]).sum(dim=-1), torch.ones(3))
    one_category = router_bundle((tx, np.where(tc == EXCLUDED, EXCLUDED, 2)), (vx, vc), (0, 1, 2, 3))
    constant = train_router(one_category, (0, 1, 2, 3), RouterConfig(losses=("plain",), max_epochs=10, lr=0.01), seed=0).router.eval()
    assert (constant.route(vx).argmax(dim=-1) == 2).all()  # one category in train: every sample is routed there


def test_router_analysis_hand_computed() -> None:
    predicted = np.array([0, 0, 1, 3, 3, 2, 0])
    category = np.array([0, 1, 1, 3, 2, 2, EXCLUDED])
    out = router_analysis(predicted, category, (0, 1, 2, 3))
    assert out["n"] == 6 and out["n_excluded"] == 1
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["per_category"]["none"]["Precision"] == pytest.approx(0.5)  # routed 'none' twice, right once
    assert out["per_category"]["image"]["Recall"] == pytest.approx(0.5)
    p, r = 0.5, 1.0  # 'both': routed twice, once right; its one sample found
    assert out["per_category"]["both"]["F0.5"] == pytest.approx(1.25 * p * r / (0.25 * p + r))
    assert out["confusion"]["text"] == {"none": 0, "image": 0, "text": 1, "both": 1}


def test_oracle_choice_and_selection() -> None:
    # strategies x samples x classes
    scores = torch.tensor(
        [
            [[0.9, 0.1], [0.6, 0.4], [0.7, 0.3]],  # strategy 0
            [[0.2, 0.8], [0.4, 0.6], [0.8, 0.2]],  # strategy 1
            [[0.1, 0.9], [0.1, 0.9], [0.9, 0.1]],  # strategy 2
        ]
    )
    truth = torch.tensor([0, 1, 1])
    # sample 0: strategy 0 right; sample 1: first right is 1; sample 2: none right -> 0
    assert oracle_choice(scores, truth, (0, 1, 2)).tolist() == [0, 1, 0]
    assert oracle_choice(scores, truth, (0, 2)).tolist() == [0, 2, 0]
    assert torch.equal(select_per_sample(scores, torch.tensor([2, 0, 1])), torch.tensor([[0.1, 0.9], [0.6, 0.4], [0.8, 0.2]]))
    assert strategy_params((0, 1, 2, 3)) == {"alpha_1": 0.0, "beta_2": 0.0, "alpha_3": 0.0, "beta_3": 0.0}
    assert strategy_params((0, 2)) == {"beta_2": 0.0}


def test_mrid_strategy_scores_and_routing(tmp_path: Path) -> None:
    bundle = toy_image_text_bundle(tmp_path, sizes=(120, 60, 40))
    base = Supervised(tiny_backbone(bundle))
    fit(base, bundle, QUICK, seed=0)
    result, record = fit_router(base.backbone, bundle, ("image", "text"), RouterConfig(losses=("plain",), max_epochs=2), seed=0)
    assert sum(record["categories_train"].values()) == len(bundle["train"])
    mrid = MRID.from_base(base, result.router, n_trials=4)
    assert set(mrid.inference_params) == {"alpha_1", "beta_2", "alpha_3", "beta_3"}
    components = {
        "p0": torch.tensor([[0.8, 0.2], [0.3, 0.7]]),
        "p_img": torch.tensor([[0.5, 0.5], [0.1, 0.9]]),
        "p_txt": torch.tensor([[0.9, 0.1], [0.6, 0.4]]),
        "route": torch.tensor([[0.1, 0.7, 0.1, 0.1], [0.0, 0.1, 0.2, 0.7]]),  # sample 0 -> image, sample 1 -> both
    }
    params = {"alpha_1": 0.5, "beta_2": 0.3, "alpha_3": 0.2, "beta_3": 0.4}
    routed = mrid.combine(components, "routed", params)
    expected = torch.tensor([[0.8 - 0.25, 0.2 - 0.25], [0.3 - 0.02 - 0.24, 0.7 - 0.18 - 0.16]])
    assert torch.allclose(routed, expected)
    assert torch.equal(mrid.combine(components, "factual", params), components["p0"])
    record = mrid.calibrate(bundle)
    assert record["split"] == "valid" and all(0.0 <= mrid.inference_params[k] <= 1.0 for k in params)
    routed_pred = predict(mrid, bundle["test"], "routed")
    assert routed_pred.shape == (len(bundle["test"]), 2)
    # a saved MRID is rebuilt with its fitted router (structure) before its weights are loaded
    reloaded = MRID.from_base(Supervised(tiny_backbone(bundle)), n_trials=4)
    assert mrid.structure()["router"]["strategies"] == list(result.router.strategies) and reloaded.structure() == {}
    reloaded.rebuild(mrid.structure())
    reloaded.load_state_dict(mrid.state_dict())
    reloaded.inference_params.update(mrid.inference_params)
    np.testing.assert_array_equal(predict(reloaded, bundle["test"], "routed"), routed_pred)
    with pytest.raises(ValueError, match="unknown parts"):
        reloaded.rebuild({"routr": {}})
    assert MRID.from_base(base).router is None
    with pytest.raises(ConfigError, match="no trained router"):
        MRID.from_base(base).components(collate(bundle["test"].samples[:2]))
    with torch.no_grad():
        mid_features = MID.from_base(base).components(collate(bundle["test"].samples[:2]))["features"]
    # router input: image and text representations on factual and counterfactual inputs (4 x hidden 16) + 3 probability vectors
    assert mid_features.shape == (2, 4 * 16 + 3 * 2) and math.isfinite(float(mid_features.sum()))
