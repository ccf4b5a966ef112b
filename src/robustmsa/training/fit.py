"""Fit, predict and evaluate: the one training path for every backbone and method.

``fit`` trains with Lightning (progress bar, early stopping and best
checkpoint on a validation metric, CPU by default, one GPU when asked; a run
on several devices is refused), saves the best checkpoint atomically together with the config that
produced it, and loads the best weights back into the method. Seeding is local:
the global RNG state is restored afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from robustmsa.data.dataset import DataBundle, MultimodalSplit, check_selection_split, make_loader
from robustmsa.errors import ConfigError, TrainingDiverged
from robustmsa.method import Method, check_required_extras
from robustmsa.metrics import DEFAULT_MONITOR, LOWER_IS_BETTER, check_metric, task_metrics
from robustmsa.training.module import LR_SCHEDULES, MethodModule, OptimConfig


@dataclass(frozen=True)
class TrainConfig:
    """Training settings shared by every backbone and method."""

    max_epochs: int = 30
    min_epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-3
    lr_schedule: str = "constant"  # or "cosine": annealed per epoch to 0 over max_epochs
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    patience: int = 5
    monitor: str | None = None  # default: MAE (regression) or Weighted_F1 (classification)
    monitor_mode: str | None = None  # "min" / "max"; default from the metric
    valid_split: str = "valid"
    valid_mode: str | None = None  # inference mode scored on valid_split; default: the method's first (factual; te for CLUE / CLEF)
    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    num_workers: int = 0
    progress: bool = True
    deterministic: bool = True
    limit_train_batches: int | float = 1.0

    def __post_init__(self) -> None:
        check_selection_split(self.valid_split, "valid_split", "checkpoints")

    def monitor_spec(self, task_kind: str) -> tuple[str, str]:
        metric, mode = DEFAULT_MONITOR[task_kind]
        if self.monitor is not None:
            metric = self.monitor
            mode = self.monitor_mode or ("min" if metric in LOWER_IS_BETTER else "max")
        return metric, mode


@dataclass
class FitResult:
    best_path: Path | None
    best_score: float | None
    monitor: str
    epochs: int
    history: dict[str, list[float]] = field(default_factory=dict)


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's informational start-up lines for one fit (restores the level)."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch / numpy seeded, restoring the previous RNG state afterwards."""
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(np_state)


class AtomicCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that writes to a temporary file and renames it into place."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        tmp = f"{filepath}.tmp-{os.getpid()}"
        trainer.save_checkpoint(tmp, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(tmp, filepath)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath


class _History(L.Callback):
    """Per-epoch logged metrics, and ``lr/<phase>``: the learning rate each epoch trained with."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for phase, optimizer in zip(pl_module.method.phases, trainer.optimizers):
            self.values.setdefault(f"lr/{phase}", []).append(float(optimizer.param_groups[0]["lr"]))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for key, value in trainer.callback_metrics.items():
            self.values.setdefault(key, []).append(float(value))


def load_checkpoint_state(path: Path) -> dict[str, Any]:
    """Load a robustmsa checkpoint safely (tensors and plain containers only).

    Always ``weights_only=True``: a corrupt, foreign or crafted file raises
    :class:`DataError` naming the file; it is never loaded unsafely.
    """
    from robustmsa.errors import DataError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, OSError, ... for such files
        # torch's UnpicklingError text advises weights_only=False: keep only the unpickler's own reason
        text = str(exc)
        if "WeightsUnpickler error:" in text:
            text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
        detail = "" if "weights_only" in text else " ".join(text.split())[:200]
        raise DataError(str(path), None, f"not a robustmsa checkpoint ({type(exc).__name__}{': ' + detail if detail else ''})") from None
    if not isinstance(state, dict):
        raise DataError(str(path), None, f"not a robustmsa checkpoint (holds a {type(state).__name__}, expected a dict)")
    return state


def check_fit(method: Method, bundle: DataBundle, cfg: TrainConfig) -> tuple[str, str, str]:
    """What :func:`fit` checks before it trains (the splits it reads, the method's modes and extras, the classes, the
    hardware, the monitor), so that a run can check its first seed before it writes anything; a ConfigError naming
    the setting. Returns ``(valid_mode, monitor metric, monitor mode)``."""
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got '{cfg.lr_schedule}'")
    valid_mode = cfg.valid_mode or method.modes[0]
    if valid_mode not in method.modes:
        raise ConfigError(f"valid_mode '{valid_mode}' is not an inference mode of {type(method).__name__}: {list(method.modes)}")
    read = ("train", cfg.valid_split, *method.calibration_splits())
    for name in dict.fromkeys(read):
        bundle[name]  # a missing split fails now, naming it, not after training
    check_required_extras(method, bundle, read)
    if bundle.task.kind == "classification" and not method.one_class_ok and len(classes := np.unique(bundle["train"].labels())) < 2:
        names = bundle.task.label_names
        raise ConfigError(
            f"{bundle.name}: split 'train' holds only class '{names[int(classes[0])]}' ({len(bundle['train'])} samples); a classifier needs at least two "
            "(a reader's 'limit' keeps the first items of each file, which may all share a class)"
        )
    _check_hardware(cfg)
    metric, mode = cfg.monitor_spec(bundle.task.kind)
    check_metric(metric, bundle.task, "monitor")
    if mode not in ("min", "max"):
        raise ConfigError(f"monitor_mode must be 'min' or 'max', got '{mode}'")
    if cfg.monitor_mode is not None and mode != ("min" if metric in LOWER_IS_BETTER else "max"):
        raise ConfigError(f"monitor_mode '{mode}' with monitor '{metric}' would keep the worst checkpoint: {metric} is {'lower' if metric in LOWER_IS_BETTER else 'higher'} is better")
    return valid_mode, metric, mode


def fit(method: Method, bundle: DataBundle, cfg: TrainConfig, *, seed: int = 0, out_dir: Path | None = None, config: dict[str, Any] | None = None) -> FitResult:
    """Train ``method`` on ``bundle['train']``, select on ``bundle[cfg.valid_split]``.

    The best weights (by ``cfg.monitor``) are loaded back into ``method``. Validation predictions that become NaN
    or infinite stop training (the best earlier epoch is kept); TrainingDiverged when no epoch had finite ones.
    With ``out_dir`` the checkpoint ``best.ckpt`` and logs are kept there;
    without, they live in a temporary directory. Earlier stages of multi-stage
    methods (``method.prepare``, e.g. frozen teachers) run first.
    """
    valid_mode, metric, mode = check_fit(method, bundle, cfg)
    method.prepare(bundle, cfg, seed=seed, out_dir=None if out_dir is None else Path(out_dir) / "stages")
    config = {"train": asdict(cfg), "seed": seed, **(config or {})}
    optim = OptimConfig(cfg.lr, cfg.weight_decay, cfg.grad_clip, lr_schedule=cfg.lr_schedule, max_epochs=cfg.max_epochs)
    module = MethodModule(method, optim, valid_mode=valid_mode, config=config)
    with contextlib.ExitStack() as stack:
        if out_dir is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="robustmsa-")))
        else:
            root = Path(out_dir)
            root.mkdir(parents=True, exist_ok=True)
        stack.enter_context(seeded(seed))
        stack.enter_context(_quiet_lightning())
        checkpoint = AtomicCheckpoint(
            dirpath=root, filename="best", monitor=f"val/{metric}", mode=mode, save_top_k=1, save_weights_only=True, auto_insert_metric_name=False, enable_version_counter=False
        )
        history = _History()
        callbacks: list[L.Callback] = [checkpoint, history, EarlyStopping(monitor=f"val/{metric}", mode=mode, patience=cfg.patience)]
        logger: Any = False
        if out_dir is not None:
            from lightning.pytorch.loggers import CSVLogger

            logger = CSVLogger(root, name="logs", version="")
        trainer = L.Trainer(
            max_epochs=cfg.max_epochs,
            min_epochs=cfg.min_epochs,
            accelerator=cfg.accelerator,
            devices=cfg.devices,
            strategy=cfg.strategy,
            callbacks=callbacks,
            logger=logger,
            enable_progress_bar=cfg.progress,
            enable_model_summary=False,
            deterministic=cfg.deterministic,
            num_sanity_val_steps=0,
            limit_train_batches=cfg.limit_train_batches,
            default_root_dir=root,
        )
        loaders = _loaders(bundle, cfg, seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")  # our own logs/ folder sits beside best.ckpt
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")  # losses are logged per epoch
            warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # frozen stage-1 models stay in eval mode
            trainer.fit(module, *loaders)
        best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
        if best is not None and best.exists():
            state = load_checkpoint_state(best)
            module.load_state_dict(state["state_dict"])
        score = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None
        method.cpu()
        if score is not None and not math.isfinite(score):
            raise TrainingDiverged(
                f"training of {type(method).__name__} (seed {seed}) diverged: no epoch reached a finite validation {metric} "
                f"(its predictions became NaN or infinite); lower train.lr or check the inputs"
            )
        return FitResult(best if out_dir is not None else None, score, metric, trainer.current_epoch, history.values)


def _check_hardware(cfg: TrainConfig) -> None:
    """ConfigError, before anything trains, when Lightning refuses ``accelerator`` / ``devices`` / ``strategy`` (e.g.
    ``accelerator: gpu`` on a machine without one). Building a Trainer runs no user code, so nothing is relabelled."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    settings = f"train settings accelerator={cfg.accelerator!r}, devices={cfg.devices!r}, strategy={cfg.strategy!r}"
    try:
        with _quiet_lightning():
            trainer = L.Trainer(accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.strategy, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    except (MisconfigurationException, ValueError, RuntimeError, ImportError) as exc:  # ImportError: accelerator: tpu without torch_xla
        raise ConfigError(f"{settings}: {' '.join(str(exc).split())}") from None
    if trainer.world_size > 1:
        # Under DDP each process would select checkpoints and stop early on its own share of the validation split,
        # and every process runs the whole command (its own temporary checkpoint folder, its own result files).
        raise ConfigError(
            f"{settings}: {trainer.world_size} processes; a run trains on one device (devices: 1). "
            "To use several GPUs, run one process per GPU (CUDA_VISIBLE_DEVICES) with its own --seeds and --out"
        )


def _loaders(bundle: DataBundle, cfg: TrainConfig, seed: int) -> tuple[Any, Any]:
    train = make_loader(bundle["train"], cfg.batch_size, shuffle=True, num_workers=cfg.num_workers, seed=seed)
    valid = make_loader(bundle[cfg.valid_split], cfg.batch_size, num_workers=cfg.num_workers)
    return train, valid


@torch.no_grad()
def predict(method: Method, split: MultimodalSplit, mode: str = "factual", batch_size: int = 128) -> np.ndarray:
    """Predictions of ``method`` in inference ``mode`` over a whole split (eval mode, CPU)."""
    method.check_mode(mode)
    was_training = method.training
    method.eval()
    try:
        outputs = [method.predict(batch, mode).cpu() for batch in make_loader(split, batch_size)]
    finally:
        method.train(was_training)
    return torch.cat(outputs).numpy()


def evaluate(method: Method, split: MultimodalSplit, modes: tuple[str, ...] | None = None, batch_size: int = 128) -> dict[str, dict[str, float]]:
    """Metrics of every inference mode on one split: ``{mode: {metric: value}}``."""
    task = method.task
    truth = split.labels()  # a DataError for a split of unlabelled samples
    return {m: task_metrics(predict(method, split, m, batch_size), truth, task) for m in (modes or method.modes)}
