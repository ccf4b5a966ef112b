"""The one training path: fit, checkpoints, determinism, alternating phases."""

from __future__ import annotations

import dataclasses
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.errors import ConfigError, TrainingDiverged
from robustmsa.method import Method, Supervised, task_loss
from robustmsa.models.lf_dnn import LFDNN
from robustmsa.models.text_only import TextOnly
from robustmsa.training.fit import TrainConfig, evaluate, fit, load_checkpoint_state, predict, seeded

FAST = TrainConfig(max_epochs=10, patience=3, progress=False, batch_size=32, lr=5e-3)


def _lfdnn(bundle, seed: int = 0) -> Supervised:
    with seeded(seed):
        return Supervised(LFDNN(bundle.dims(), bundle.task, hidden=16))


def test_fit_learns_and_keeps_best_checkpoint_with_config(toy_bundle, tmp_path: Path) -> None:
    method = _lfdnn(toy_bundle)
    result = fit(method, toy_bundle, FAST, seed=0, out_dir=tmp_path, config={"note": "toy"})
    assert result.best_path == tmp_path / "best.ckpt" and result.best_path.exists()
    assert not list(tmp_path.glob("*.tmp*")), "temporary checkpoint files must be renamed away"
    state = load_checkpoint_state(result.best_path)
    assert state["robustmsa"]["config"]["note"] == "toy"
    assert state["robustmsa"]["config"]["train"]["max_epochs"] == 10
    metrics = evaluate(method, toy_bundle["test"])["factual"]
    assert metrics["Has0_acc_2"] >= 0.8
    # the weights in memory are the best checkpoint's
    restored = _lfdnn(toy_bundle, seed=5)
    restored.load_state_dict({k.removeprefix("method."): v for k, v in state["state_dict"].items()})
    np.testing.assert_allclose(predict(restored, toy_bundle["test"]), predict(method, toy_bundle["test"]), atol=1e-6)
    assert result.monitor == "MAE" and result.best_score == pytest.approx(min(result.history["val/MAE"]))


def test_fit_is_deterministic_and_leaves_global_rng_alone(toy_bundle) -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state().clone()
    preds = []
    for _ in range(2):
        method = _lfdnn(toy_bundle, seed=3)
        fit(method, toy_bundle, TrainConfig(max_epochs=2, progress=False), seed=3)
        preds.append(predict(method, toy_bundle["valid"]))
    np.testing.assert_array_equal(preds[0], preds[1])
    assert torch.equal(before, torch.random.get_rng_state())


@pytest.mark.parametrize("given", [True, False], ids=["given_train", "given_eval"])
def test_fit_trains_in_training_mode_whatever_mode_it_is_given_and_gives_that_mode_back(toy_bundle, given: bool) -> None:
    """A method left in eval mode (e.g. after a look at its predictions) still trains with dropout and its training-only
    losses; fit then hands it back in the caller's mode."""
    method = _lfdnn(toy_bundle)
    seen: list[bool] = []
    loss = method.training_loss

    def spy(batch, *args, **kwargs):
        seen.append(method.training and all(m.training for m in method.backbone.modules()))
        return loss(batch, *args, **kwargs)

    method.training_loss = spy
    method.train(given)
    fit(method, toy_bundle, TrainConfig(max_epochs=1, progress=False), seed=0)
    assert seen and all(seen)
    assert method.training is given


def test_early_stopping_stops_before_max_epochs(toy_bundle) -> None:
    method = _lfdnn(toy_bundle)
    # a learning rate of 0 cannot improve the validation metric, so patience 1 stops after 2 epochs
    result = fit(method, toy_bundle, TrainConfig(max_epochs=20, patience=1, lr=1e-12, progress=False), seed=0)
    assert result.epochs < 20


class DivergesAt(Supervised):
    """A supervised model whose predictions turn NaN from epoch ``at`` on (a run that diverges)."""

    def __init__(self, backbone: LFDNN, at: int) -> None:
        super().__init__(backbone)
        self.at = at

    def predict(self, batch: Batch, mode: str = "factual") -> Tensor:
        scores = super().predict(batch, mode)
        return scores * float("nan") if self.epoch >= self.at else scores


def test_a_diverging_run_stops_and_keeps_its_last_finite_epoch_or_is_a_clear_error(toy_bundle) -> None:
    with seeded(0):
        late = DivergesAt(LFDNN(toy_bundle.dims(), toy_bundle.task, hidden=16), at=2)
    result = fit(late, toy_bundle, dataclasses.replace(FAST, patience=10), seed=0)
    assert result.epochs < 10 and len(result.history["val/MAE"]) == 3  # epochs 0 and 1 finite, epoch 2 NaN stops training
    assert result.best_score == pytest.approx(min(result.history["val/MAE"][:2]))
    with seeded(0):
        at_once = DivergesAt(LFDNN(toy_bundle.dims(), toy_bundle.task, hidden=16), at=0)
    with pytest.raises(TrainingDiverged, match="DivergesAt \\(seed 0\\) diverged: no epoch reached a finite validation MAE"):
        fit(at_once, toy_bundle, FAST, seed=0)


class TwoPhase(Method):
    """Phase 'a' trains the encoder only, phase 'b' the head only; epoch 0 runs only 'a'."""

    phases = ("a", "b")

    def __init__(self, backbone: TextOnly) -> None:
        super().__init__(backbone)
        self.calls: list[tuple[int, str]] = []

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        part = self.backbone.encoder if phase == "a" else self.backbone.head
        return list(part.parameters())

    def active_phases(self, epoch: int) -> tuple[str, ...]:
        return ("a",) if epoch == 0 else ("a", "b")

    def training_loss(self, batch: Batch, phase: str = "main") -> dict[str, Tensor]:
        self.calls.append((self.epoch, phase))
        return {"loss": task_loss(self.backbone(batch).logits, batch, self.task)}

    def predict(self, batch: Batch, mode: str = "factual") -> Tensor:
        return self.backbone(batch).logits[:, 0]


def test_alternating_phases_use_their_own_optimisers(toy_bundle) -> None:
    with seeded(0):
        method = TwoPhase(TextOnly(toy_bundle.dims(), toy_bundle.task, hidden=8))
    head_before = [p.detach().clone() for p in method.backbone.head.parameters()]
    fit(method, toy_bundle, TrainConfig(max_epochs=1, progress=False, limit_train_batches=2), seed=0)
    assert {phase for _, phase in method.calls} == {"a"}
    for before, after in zip(head_before, method.backbone.head.parameters()):
        assert torch.equal(before, after), "phase 'b' did not run in epoch 0, so the head must be unchanged"
    method.calls.clear()
    fit(method, toy_bundle, TrainConfig(max_epochs=2, progress=False, limit_train_batches=2), seed=0)
    assert (1, "b") in method.calls and method.calls[:2] == [(0, "a"), (0, "a")]


@pytest.mark.parametrize("two_phase", [False, True])
def test_cosine_schedule_anneals_every_optimiser(toy_bundle, two_phase: bool) -> None:
    with seeded(0):
        method = TwoPhase(TextOnly(toy_bundle.dims(), toy_bundle.task, hidden=8)) if two_phase else _lfdnn(toy_bundle)
    cfg = TrainConfig(max_epochs=4, patience=10, lr=1e-2, lr_schedule="cosine", progress=False, limit_train_batches=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(method, toy_bundle, cfg, seed=0).history
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]  # phase 'b' idle in epoch 0: on schedule, unwarned
    expected = [1e-2 * 0.5 * (1 + np.cos(np.pi * e / 4)) for e in range(4)]
    for phase in method.phases:
        np.testing.assert_allclose(history[f"lr/{phase}"], expected, rtol=1e-6)
    constant = fit(_lfdnn(toy_bundle), toy_bundle, dataclasses.replace(cfg, lr_schedule="constant"), seed=0).history
    assert constant["lr/main"] == [1e-2] * 4
    with pytest.raises(ConfigError, match="lr_schedule"):
        fit(_lfdnn(toy_bundle), toy_bundle, dataclasses.replace(cfg, lr_schedule="step"), seed=0)


def test_unknown_valid_mode_is_a_config_error(toy_bundle) -> None:
    with pytest.raises(ConfigError, match="valid_mode 'tie'"):
        fit(_lfdnn(toy_bundle), toy_bundle, TrainConfig(valid_mode="tie", progress=False))


def test_classification_training(toy_bundle) -> None:
    from robustmsa.data.dataset import DataBundle, TaskSpec
    from tests.conftest import make_toy_split

    task = TaskSpec(kind="classification", num_classes=2, label_range=None)
    bundle = DataBundle({n: make_toy_split(k, n, s, task=task) for n, k, s in (("train", 240, 0), ("valid", 60, 1), ("test", 60, 2))}, task)
    method = _lfdnn(bundle)
    result = fit(method, bundle, FAST, seed=0)
    assert result.monitor == "Weighted_F1"
    scores = predict(method, bundle["test"])
    assert scores.shape == (60, 2) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    assert evaluate(method, bundle["test"])["factual"]["Acc"] >= 0.8


def test_a_classifier_with_one_class_in_train_is_refused_before_training() -> None:
    from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec
    from tests.conftest import make_toy_split

    task = TaskSpec(kind="classification", num_classes=2, label_range=None, class_names=("no", "yes"))
    splits = {name: make_toy_split(20, name, seed, task=task) for name, seed in (("train", 0), ("valid", 1))}
    one_class = [dataclasses.replace(s, label_class=1) for s in splits["train"]]
    bundle = DataBundle({**splits, "train": MultimodalSplit(one_class, name="train", source="toy", task=task)}, task, name="toy")
    with pytest.raises(ConfigError, match=r"toy: split 'train' holds only class 'yes' \(20 samples\); a classifier needs at least two"):
        fit(Supervised(LFDNN(bundle.dims(), task, hidden=8)), bundle, TrainConfig(max_epochs=1, progress=False))


def test_monitor_and_hardware_settings_are_checked_before_training(toy_bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning

    method = Supervised(LFDNN(toy_bundle.dims(), toy_bundle.task, hidden=8))
    with pytest.raises(ConfigError, match=r"monitor 'bogus' is not a metric of a regression task \(mosi metrics\); choose one of \['Has0_acc_2'"):
        fit(method, toy_bundle, TrainConfig(max_epochs=1, progress=False, monitor="bogus"))
    with pytest.raises(ConfigError, match="monitor_mode must be 'min' or 'max', got 'up'"):
        fit(method, toy_bundle, TrainConfig(max_epochs=1, progress=False, monitor="MAE", monitor_mode="up"))
    for monitor, mode in (("MAE", "max"), ("Corr", "min")):
        with pytest.raises(ConfigError, match=rf"monitor_mode '{mode}' with monitor '{monitor}' would keep the worst checkpoint"):
            fit(method, toy_bundle, TrainConfig(max_epochs=1, progress=False, monitor=monitor, monitor_mode=mode))
    real_trainer = lightning.Trainer
    calls = []
    monkeypatch.setattr(lightning, "Trainer", lambda **kw: calls.append(kw) or real_trainer(**kw))
    with pytest.raises(ConfigError, match=r"train settings accelerator='tpuz'.*invalid accelerator name"):
        fit(method, toy_bundle, TrainConfig(max_epochs=1, progress=False, accelerator="tpuz"))
    assert len(calls) == 1 and "callbacks" not in calls[0]  # only the settings check was built: nothing trained
    if importlib.util.find_spec("torch_xla") is None:  # Lightning raises ModuleNotFoundError for a TPU without torch_xla
        with pytest.raises(ConfigError, match=r"train settings accelerator='tpu'"):
            fit(method, toy_bundle, TrainConfig(max_epochs=1, progress=False, accelerator="tpu"))
    for split in ("test", "test_ood", "train"):  # also through the API, not only a config file
        with pytest.raises(ConfigError, match=rf"valid_split '{split}' cannot select checkpoints: choose a validation split"):
            TrainConfig(valid_split=split)


def test_metric_names_match_what_task_metrics_reports() -> None:
    from robustmsa.data.dataset import TaskSpec
    from robustmsa.metrics import metric_names, task_metrics

    tasks = {
        "regression": TaskSpec(),
        "sims": TaskSpec(label_range=(-1.0, 1.0), metric_set="sims"),
        "classification": TaskSpec(kind="classification", num_classes=3, label_range=None),
        "multilabel": TaskSpec(kind="multilabel", num_classes=2, label_range=None),
    }
    pred = {"regression": np.array([-1.0, 0.5, 2.0]), "classification": np.eye(3), "multilabel": np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.7]])}
    truth = {"regression": np.array([-2.0, 1.0, 1.5]), "classification": np.array([0, 1, 2]), "multilabel": np.array([[1, 0], [0, 1], [1, 1]])}
    pred["sims"], truth["sims"] = pred["regression"] / 3, truth["regression"] / 3
    names = {kind: metric_names(task) for kind, task in tasks.items()}
    assert len(set(names.values())) == 4
    for kind, task in tasks.items():
        assert tuple(task_metrics(pred[kind], truth[kind], task)) == names[kind]
