"""MME-JD: expert combination, expert and router training, validation-only tuning, text-only data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robustmsa.data.batch import collate
from robustmsa.data.dataset import DataBundle
from robustmsa.debias.experts import MMEJD, expert_train_config
from robustmsa.errors import ConfigError
from robustmsa.method import Supervised
from robustmsa.training.fit import fit, predict
from tests.test_mid import QUICK, Poisoned, tiny_backbone, toy_image_text_bundle

FAST = {"n_trials": 4, "expert_train": {"max_epochs": 1, "batch_size": 32, "progress": False}, "router_config": {"losses": ["plain"], "max_epochs": 2}}


def test_expert_combination_hand_computed(tmp_path: Path) -> None:
    bundle = toy_image_text_bundle(tmp_path, sizes=(20, 10, 10))
    mme = MMEJD(tiny_backbone(bundle))
    assert set(mme.experts) == {"image", "text"} and set(mme.inference_params) == {"alpha_1", "beta_2", "alpha_3", "beta_3"}
    components = {
        "p0": torch.tensor([[0.6, 0.4], [0.3, 0.7], [0.5, 0.5]]),
        "e_img": torch.tensor([[0.2, 0.8], [0.9, 0.1], [0.4, 0.6]]),
        "e_txt": torch.tensor([[0.7, 0.3], [0.1, 0.9], [0.8, 0.2]]),
        "route": torch.tensor([[0.0, 0.9, 0.1, 0.0], [0.1, 0.0, 0.8, 0.1], [0.7, 0.1, 0.1, 0.1]]),  # image / text / keep
    }
    params = {"alpha_1": 2.0, "beta_2": 0.5, "alpha_3": 1.0, "beta_3": 1.0}
    expected = torch.tensor([[0.6 + 0.4, 0.4 + 1.6], [0.3 + 0.05, 0.7 + 0.45], [0.5, 0.5]])
    assert torch.allclose(mme.combine(components, "routed", params), expected)
    both = mme.strategy_scores(components, 3, params)
    assert torch.allclose(both, components["p0"] + components["e_img"] + components["e_txt"])
    with pytest.raises(ConfigError):
        expert_train_config({"epochs": 3})
    # the experts' checkpoints, like every choice, are never selected on a test split (nor the router's)
    with pytest.raises(ConfigError, match=r"expert_train: valid_split 'test' cannot select checkpoints: choose a validation split"):
        MMEJD(tiny_backbone(bundle), expert_train={"valid_split": "test"})
    from robustmsa.debias.mrid import fit_router

    with pytest.raises(ConfigError, match=r"router valid_split 'test_ood' cannot select the router's checkpoint and loss"):
        fit_router(tiny_backbone(bundle), bundle, ("image", "text"), mme.router_cfg, valid_split="test_ood")


def test_mme_jd_trains_experts_and_router_on_train_and_valid_only(tmp_path: Path) -> None:
    bundle = toy_image_text_bundle(tmp_path, sizes=(120, 60, 40))
    base = Supervised(tiny_backbone(bundle))
    fit(base, bundle, QUICK, seed=0)
    mme = MMEJD.from_base(base, **FAST)
    general = {k: v.clone() for k, v in base.backbone.state_dict().items()}
    poisoned = DataBundle({**bundle.splits, "test": Poisoned(bundle["test"].samples, name="test", source="toy", task=bundle.task)}, bundle.task)
    record = mme.calibrate(poisoned)
    assert mme.experts_trained and mme.router is not None
    assert set(record) >= {"expert_image_valid", "expert_text_valid", "router_loss", "categories_train", "split", "value"}
    for name, expert in mme.experts.items():
        assert expert is not base.backbone
        changed = any(not torch.equal(v, general[k]) for k, v in expert.state_dict().items())
        assert changed, f"the {name} expert was not trained"
    assert all(torch.equal(v, general[k]) for k, v in base.backbone.state_dict().items())  # the general expert is untouched
    assert all(0.0 <= v <= 2.0 for v in mme.inference_params.values())
    pred = predict(mme, bundle["test"], "routed")
    assert pred.shape == (len(bundle["test"]), 2) and np.isfinite(pred).all()
    with torch.no_grad():
        components = mme.eval().components(collate(bundle["test"].samples[:5]))
    assert set(components) == {"p0", "features", "route", "e_img", "e_txt"}


def test_mme_jd_without_images_has_a_text_expert_only(tmp_path: Path) -> None:
    bundle = toy_image_text_bundle(tmp_path, sizes=(90, 45, 30), image=False, num_classes=3)
    base = Supervised(tiny_backbone(bundle))
    fit(base, bundle, QUICK, seed=0)
    mme = MMEJD.from_base(base, **FAST)
    assert mme.strategies == (0, 2) and set(mme.experts) == {"text"} and set(mme.inference_params) == {"beta_2"}
    record = mme.calibrate(bundle)
    assert record["categories_train"]["image"] == 0 and record["categories_train"]["both"] == 0
    assert mme.router is not None and mme.router.strategies == (0, 2)
    assert predict(mme, bundle["test"], "routed").shape == (len(bundle["test"]), 3)
