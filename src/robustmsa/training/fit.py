"""Fit, predict and evaluate: the one training path for every backbone and method.

``fit`` trains with Lightning (progress bar, early stopping and best
checkpoint on a validation metric, CPU by default, one or several GPUs when asked; several as DDP
in processes it starts), saves the best checkpoint atomically together with the config that
produced it, and loads the best weights back into the method. Seeding is local:
the global RNG state is restored afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from robustmsa.data.dataset import DataBundle, MultimodalSplit, check_selection_split, make_loader
from robustmsa.errors import ConfigError, DataError, TrainingDiverged
from robustmsa.method import Method, check_required_extras
from robustmsa.metrics import DEFAULT_MONITOR, LOWER_IS_BETTER, check_metric, task_metrics
from robustmsa.training.distributed import launched_externally, quiet_loggers, run_in_processes

if TYPE_CHECKING:
    from robustmsa.training.module import MethodModule

#: ``lr_schedule`` values (see :class:`TrainConfig`).
LR_SCHEDULES = ("constant", "cosine")


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
    devices: int | str | list[int] = 1
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


def _quiet_lightning() -> contextlib.AbstractContextManager[None]:
    """Silence Lightning's informational start-up lines for one fit (restores the levels)."""
    return quiet_loggers(logging.WARNING, "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.distributed")


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


def load_checkpoint_state(path: Path) -> dict[str, Any]:
    """Load a robustmsa checkpoint safely (tensors and plain containers only).

    Always ``weights_only=True``: a corrupt, foreign or crafted file raises
    :class:`DataError` naming the file; it is never loaded unsafely.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, OSError, ... for such files
        # torch's UnpicklingError text advises weights_only=False or allow-listing the file's globals: keep only the
        # unpickler's own reason, its first sentence ("Unsupported global: GLOBAL os.system was not an allowed global")
        text = str(exc)
        if "WeightsUnpickler error:" in text:
            text = text.split("WeightsUnpickler error:", 1)[1].split(". ", 1)[0]
        detail = "" if "weights_only" in text or "safe_globals" in text else " ".join(text.split())[:200]
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
        if not bundle[name].labelled:  # a missing split fails now, naming it, not after training; so does one without labels
            raise DataError(f"{bundle[name].source} [{name}]", "label", f"split '{name}' has no labels (new data to predict on): training and calibration need labelled data")
    check_required_extras(method, bundle, read)
    if bundle.task.kind == "classification" and not method.one_class_ok and len(classes := np.unique(bundle["train"].labels())) < 2:
        names = bundle.task.label_names
        raise ConfigError(
            f"{bundle.name}: split 'train' holds only class '{names[int(classes[0])]}' ({len(bundle['train'])} samples); a classifier needs at least two "
            "(a reader's 'limit' keeps the first items of each file, which may all share a class)"
        )
    _check_hardware(cfg, method)
    metric, mode = cfg.monitor_spec(bundle.task.kind)
    check_metric(metric, bundle.task, "monitor")
    if mode not in ("min", "max"):
        raise ConfigError(f"monitor_mode must be 'min' or 'max', got '{mode}'")
    if cfg.monitor_mode is not None and mode != ("min" if metric in LOWER_IS_BETTER else "max"):
        raise ConfigError(f"monitor_mode '{mode}' with monitor '{metric}' would keep the worst checkpoint: {metric} is {'lower' if metric in LOWER_IS_BETTER else 'higher'} is better")
    return valid_mode, metric, mode


def fit(
    method: Method, bundle: DataBundle, cfg: TrainConfig, *, seed: int = 0, out_dir: Path | None = None, config: dict[str, Any] | None = None, callbacks: Sequence[Any] = ()
) -> FitResult:
    """Train ``method`` on ``bundle['train']``, select on ``bundle[cfg.valid_split]``.

    The best weights (by ``cfg.monitor``) are loaded back into ``method``. Validation predictions that become NaN
    or infinite stop training (the best earlier epoch is kept); TrainingDiverged when no epoch had finite ones.
    With ``out_dir`` the checkpoint ``best.ckpt`` and logs are kept there;
    without, they live in a temporary directory. Earlier stages of multi-stage
    methods (``method.prepare``, e.g. frozen teachers) run first.

    On several devices (``cfg.devices``) the training runs as DDP in processes started for it (see
    :mod:`robustmsa.training.distributed`): ``cfg.batch_size`` is the global batch, split evenly between them, and
    every process scores the whole validation split, so that checkpoints and early stopping follow the same numbers
    as on one device. ``callbacks``: the caller's own Lightning callbacks for this training (not for the earlier
    stages), e.g. a search's per-epoch report; on several devices each process gets a copy.
    """
    valid_mode, metric, mode = check_fit(method, bundle, cfg)
    was_training = method.training
    try:
        method.prepare(bundle, cfg, seed=seed, out_dir=None if out_dir is None else Path(out_dir) / "stages")
        # Lightning trains a module in the mode it is given: a method the caller left in eval mode would train
        # without dropout and without its training-only losses. Frozen parts stay in eval mode (their train()).
        method.train()
        return _fit(method, bundle, cfg, seed, out_dir, config, valid_mode, metric, mode, tuple(callbacks))
    finally:
        method.train(was_training)


def _fit(
    method: Method,
    bundle: DataBundle,
    cfg: TrainConfig,
    seed: int,
    out_dir: Path | None,
    config: dict[str, Any] | None,
    valid_mode: str,
    metric: str,
    mode: str,
    callbacks: tuple[Any, ...],
) -> FitResult:
    """:func:`fit` after the checks and earlier stages, with ``method`` in training mode."""
    from robustmsa.training.module import MethodModule, OptimConfig  # Lightning: imported when a model trains, not when a config is read

    config = {"train": asdict(cfg), "seed": seed, **(config or {})}
    optim = OptimConfig(cfg.lr, cfg.weight_decay, cfg.grad_clip, lr_schedule=cfg.lr_schedule, max_epochs=cfg.max_epochs)
    module = MethodModule(method, optim, valid_mode=valid_mode, config=config)
    with contextlib.ExitStack() as stack:
        if out_dir is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="robustmsa-")))
        else:
            root = Path(out_dir)
            root.mkdir(parents=True, exist_ok=True)
        job = _Job(module, bundle, cfg, seed, root, metric, mode, logs=out_dir is not None, callbacks=callbacks)
        world = world_size(cfg)
        if world == 1:
            outcome = _train(job)
        else:
            outcome = run_in_processes(_train, job, world, cpu_threads=cfg.accelerator == "cpu")
        if outcome.weights is not None and outcome.weights.exists():
            module.load_state_dict(load_checkpoint_state(outcome.weights)["state_dict"])
            if outcome.weights.name == _FINAL:
                outcome.weights.unlink()
        method.cpu()
        if outcome.score is not None and not math.isfinite(outcome.score):
            raise TrainingDiverged(
                f"training of {type(method).__name__} (seed {seed}) diverged: no epoch reached a finite validation {metric} "
                f"(its predictions became NaN or infinite); lower train.lr or check the inputs"
            )
        best = outcome.weights if outcome.weights is not None and outcome.weights.name != _FINAL else None
        return FitResult(best if out_dir is not None else None, outcome.score, metric, outcome.epochs, outcome.history)


#: The weights a process of a several-device run leaves for the caller when no checkpoint was selected.
_FINAL = "final-weights.ckpt"


@dataclass
class _Job:
    """What one training needs: built by :func:`fit`, pickled to the processes of a run on several devices."""

    module: MethodModule
    bundle: DataBundle
    cfg: TrainConfig
    seed: int
    root: Path
    metric: str
    mode: str
    logs: bool
    callbacks: tuple[Any, ...] = ()  # the caller's own Lightning callbacks (a search's pruning report)


@dataclass
class _Outcome:
    weights: Path | None  # the best checkpoint (or, on several devices without one, the final weights)
    score: float | None
    epochs: int
    history: dict[str, list[float]]


def _train(job: _Job, rank: int = 0, world: int = 1) -> _Outcome:
    """The Lightning part of :func:`fit` (process ``rank`` of ``world``); the caller loads the weights it returns."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping

    from robustmsa.training.module import AtomicCheckpoint, EpochHistory

    cfg = job.cfg
    # The processes of one run draw different dropout (and other training noise); the model they start from is the
    # caller's, the same in every process.
    seed = job.seed if world == 1 else int(np.random.SeedSequence([job.seed, rank]).generate_state(1)[0])
    with seeded(seed), _quiet_lightning():
        checkpoint = AtomicCheckpoint(
            dirpath=job.root, filename="best", monitor=f"val/{job.metric}", mode=job.mode, save_top_k=1, save_weights_only=True, auto_insert_metric_name=False, enable_version_counter=False
        )
        history = EpochHistory()
        callbacks: list[L.Callback] = [checkpoint, history, EarlyStopping(monitor=f"val/{job.metric}", mode=job.mode, patience=cfg.patience), *job.callbacks]
        logger: Any = False
        if job.logs:
            from lightning.pytorch.loggers import CSVLogger

            logger = CSVLogger(job.root, name="logs", version="")
        distributed: dict[str, Any] = {"strategy": cfg.strategy}
        if world > 1:
            from lightning.fabric.plugins.environments import LightningEnvironment
            from lightning.pytorch.strategies import DDPStrategy

            # Parameters a step leaves unused (a phase of alternating optimisation, a branch) are found unless the
            # user states there are none (Lightning's ddp_find_unused_parameters_false): otherwise DDP stops the run.
            find_unused = cfg.strategy != "ddp_find_unused_parameters_false"
            distributed = {"strategy": DDPStrategy(find_unused_parameters=find_unused, cluster_environment=LightningEnvironment()), "use_distributed_sampler": False}
        trainer = L.Trainer(
            max_epochs=cfg.max_epochs,
            min_epochs=cfg.min_epochs,
            accelerator=cfg.accelerator,
            devices=cfg.devices,
            callbacks=callbacks,
            logger=logger,
            enable_progress_bar=cfg.progress,
            enable_model_summary=False,
            deterministic=cfg.deterministic,
            num_sanity_val_steps=0,
            limit_train_batches=cfg.limit_train_batches,
            default_root_dir=job.root,
            **distributed,
        )
        train = make_loader(job.bundle["train"], cfg.batch_size // world, shuffle=True, num_workers=cfg.num_workers, seed=job.seed, shard=(rank, world) if world > 1 else None)
        valid = make_loader(job.bundle[cfg.valid_split], cfg.batch_size, num_workers=cfg.num_workers)  # whole, in every process
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")  # our own logs/ folder sits beside best.ckpt
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")  # losses are logged per epoch
            warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # frozen stage-1 models stay in eval mode
            trainer.fit(job.module, train, valid)
    weights = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    if world > 1 and (weights is None or not weights.exists()):  # on one device the final weights are in job.module
        weights = job.root / _FINAL
        if rank == 0:
            torch.save({"state_dict": job.module.state_dict()}, weights)
    score = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None
    return _Outcome(weights, score, trainer.current_epoch, history.values)


def world_size(cfg: TrainConfig) -> int:
    """How many processes Lightning would train ``cfg`` with (ConfigError for settings it refuses)."""
    import lightning as L
    from lightning.fabric.plugins.environments import LightningEnvironment
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        with _quiet_lightning():
            trainer = L.Trainer(
                accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.strategy, plugins=[LightningEnvironment()], logger=False, enable_checkpointing=False, enable_progress_bar=False
            )
    except (MisconfigurationException, ValueError, TypeError, RuntimeError, ImportError) as exc:  # ImportError: accelerator: tpu without torch_xla
        raise ConfigError(f"{_settings(cfg)}: {' '.join(str(exc).split())}") from None
    return trainer.world_size


def _settings(cfg: TrainConfig) -> str:
    return f"train settings accelerator={cfg.accelerator!r}, devices={cfg.devices!r}, strategy={cfg.strategy!r}"


def _check_hardware(cfg: TrainConfig, method: Method) -> None:
    """ConfigError, before anything trains, when Lightning refuses ``accelerator`` / ``devices`` / ``strategy`` (e.g.
    ``accelerator: gpu`` on a machine without one) or a run on several devices cannot be done as :func:`fit` does it.
    Building a Trainer runs no user code, so nothing is relabelled."""
    world = world_size(cfg)
    if world == 1:
        return
    if cfg.strategy not in DISTRIBUTED_STRATEGIES:
        raise ConfigError(
            f"{_settings(cfg)}: on several devices robustmsa trains with DDP in processes it starts itself; strategy must be one of {list(DISTRIBUTED_STRATEGIES)}"
        )
    if launched_externally():
        raise ConfigError(f"{_settings(cfg)}: this process was started by a distributed launcher (torchrun, srun, ...); robustmsa starts the {world} processes itself: run it as one plain process")
    if cfg.batch_size % world:
        raise ConfigError(f"{_settings(cfg)}: batch_size {cfg.batch_size} is the global batch, split evenly between the {world} processes; choose a multiple of {world}")
    if stateful := sorted({type(m).__name__ for m in method.modules() if getattr(m, "per_sample_state", False)}):
        raise ConfigError(
            f"{_settings(cfg)}: {', '.join(stateful)} keeps per-sample state while it trains (outside its parameters), which the {world} processes "
            "would each hold a different part of; train it on one device (devices: 1)"
        )


#: ``strategy`` values accepted on several devices: all mean DDP in processes that :func:`fit` starts, which finds
#: the parameters a step leaves unused, except ``ddp_find_unused_parameters_false`` (faster, for models that use
#: every trainable parameter at every step).
DISTRIBUTED_STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")


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
