"""Cost measurement: forward passes counted with hooks, stage sums and the table relative to the base."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from robustmsa.data.batch import collate
from robustmsa.debias.mid import MID
from robustmsa.debias.router import RouterNet
from robustmsa.errors import ConfigError
from robustmsa.evaluation.cost import CostMeter, StageCost, cost_table, tracked_backbones
from robustmsa.method import Supervised
from robustmsa.training.fit import predict
from tests.test_mid import tiny_backbone, toy_image_text_bundle


def test_forward_passes_counted_per_sample(tmp_path: Path) -> None:
    bundle = toy_image_text_bundle(tmp_path, sizes=(10, 10, 23))
    base = Supervised(tiny_backbone(bundle))
    mid = MID.from_base(base)
    meter = CostMeter()
    with meter.measure("base_infer", base):
        predict(base, bundle["test"], batch_size=5)
    with meter.measure("mid_infer", mid):
        predict(mid, bundle["test"], "mid", batch_size=5)
    assert meter.stages["base_infer"].forwards == 23 and meter.stages["base_infer"].calls == 5  # ceil(23 / 5) batches
    assert meter.stages["mid_infer"].forwards == 3 * 23  # factual + image and text counterfactuals
    with meter.measure("base_infer", base):
        predict(base, bundle["test"], batch_size=50)
    assert meter.stages["base_infer"].forwards == 46 and meter.stages["base_infer"].calls == 6  # stages accumulate
    assert all(s.seconds > 0 for s in meter.stages.values())
    with meter.measure("nothing", base):
        pass
    assert meter.stages["nothing"].forwards == 0
    base.backbone(collate(bundle["test"].samples[:4]))
    assert meter.stages["nothing"].forwards == 0  # hooks are removed after the stage


def test_tracked_backbones_skip_router_and_shared_modules(tmp_path: Path) -> None:
    bundle = toy_image_text_bundle(tmp_path, sizes=(10, 10, 10))
    base = Supervised(tiny_backbone(bundle))
    router = RouterNet({}, bundle.task, in_dim=4)
    container = torch.nn.ModuleList([base, MID.from_base(base), router])
    assert tracked_backbones(container, base) == [base.backbone]


def test_cost_table_relative_to_base() -> None:
    meter = CostMeter()
    meter.stages = {"train": StageCost(10.0, 1000, 10), "tune": StageCost(2.0, 300, 3), "infer": StageCost(1.0, 100, 1), "infer3": StageCost(2.5, 300, 3)}
    recipes = {"base": {"train": ["train"], "infer": ["infer"]}, "mid": {"train": ["train", "tune"], "infer": ["infer3"]}}
    rows = cost_table(meter, recipes, base="base", n_test=100)
    assert rows["base"]["train_forwards_rel"] == 1.0 and rows["base"]["infer_forwards_per_sample"] == 1.0
    assert rows["mid"]["train_forwards_rel"] == pytest.approx(1.3) and rows["mid"]["train_time_rel"] == pytest.approx(1.2)
    assert rows["mid"]["infer_forwards_per_sample"] == 3.0 and rows["mid"]["infer_time_rel"] == pytest.approx(2.5)
    meter.stages["zero"] = StageCost()
    assert math.isnan(cost_table(meter, {"base": {"train": ["zero"], "infer": ["zero"]}}, base="base", n_test=1)["base"]["train_time_rel"])
    with pytest.raises(ConfigError, match="not measured"):
        cost_table(meter, {"base": {"train": ["missing"], "infer": ["infer"]}}, base="base", n_test=1)
    with pytest.raises(ConfigError, match="base"):
        cost_table(meter, recipes, base="clue", n_test=1)
