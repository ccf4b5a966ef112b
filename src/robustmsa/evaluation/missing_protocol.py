"""Robustness to incomplete inputs: the missing-rate sweep and the sentiment-clue sensitivity analysis.

* :func:`sweep_missing`: for each seed and each model of a
  :class:`MissingSweepConfig`, train with ``fit`` (checkpoints selected on
  validation data at r = 0.5, mode ``missing``), then evaluate the test split
  with every modality corrupted at r = 0.0, 0.1, ..., 0.9 (the same masks for
  every model: mask seed = training seed); the mean over r; mean +- std over
  seeds. Writes ``results.json``, ``report.md`` and ``missing_<metric>.png``
  (metric vs r, one curve per model). Each finished (seed, model) is also
  recorded in ``seed_<k>/<model>/sweep_result.json`` with the settings it was
  made with, so a sweep that stopped part-way resumes where it stopped when
  run again into the same folder with the same settings (another setting is
  refused there unless ``overwrite``). Every model is built on the config's
  ``backbone`` unless ``backbones`` gives it its own (display name -> backbone,
  e.g. a method that comes with its own network); a model's own backbone is
  part of its record's settings only, so adding such a model to a finished
  sweep keeps the records of the others. ``corrupted`` corrupts some
  modalities only and leaves the others complete. :func:`evaluate_sweep`
  scores finished sweeps' checkpoints again (another split, other data, other
  modalities or rates), :func:`modality_removal` with each subset of the
  modalities removed entirely.
* :func:`sentiment_clue_sensitivity`: mask one text token at a time in the
  correctly classified test texts and count, per token, how often the polarity
  of the prediction flips (``sensitivity_<model>.png``: the most
  error-triggering tokens).
* Data views for real data: :func:`natural_missing_text` (CMU word-aligned
  sets whose train text is missing by nature), :func:`image_as_vision`
  (MMSD2.0: image attribute words as the visual stream, no audio),
  :func:`subsample` (a random subset of each split) and :func:`standardize`
  (z-scored audio/vision features, all-zero frames kept at zero).
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field, StrictBool, ValidationInfo, field_validator

from robustmsa.config import BackboneComponent, ComponentConfig, ExperimentConfig, MethodComponent, PluginConfig, Seeds, TrainSection, _Strict, check_seeds, checked, load_config, parse_config
from robustmsa.data.batch import Sample, collate
from robustmsa.data.dataset import ASSUMED, TEXT_CONTEXTUAL, DataBundle, MultimodalSplit, TaskSpec, make_loader
from robustmsa.errors import ConfigError, DataError, TrainingDiverged
from robustmsa.evaluation.compare import bootstrap_differences, difference_text, recorded_predictions
from robustmsa.evaluation.protocols import RUN_SETTINGS, Resumable, check_numbers, mean_std, paired_differences, read_json_file, run_seeds, split_fingerprints
from robustmsa.evaluation.report import PERCENT_METRICS, bar_plot, format_value, line_plot, markdown_table, write_bytes_atomic, write_results, write_text_atomic
from robustmsa.experiment import build_method, check_same_data, data_record, other_data
from robustmsa.folders import check_out_dir, holds_output, prepare_out_dir
from robustmsa.method import Method, target_of
from robustmsa.metrics import REGRESSION_METRICS, SIMS_METRICS, task_metrics
from robustmsa.reconstruct.corruption import CORRUPTIBLE, EVAL_RATES, corrupt_batch, drop_positions
from robustmsa.registry import check_parameters
from robustmsa.training.fit import FitResult, check_fit, fit, load_checkpoint_state

# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


class SensitivitySection(_Strict):
    enabled: bool = True
    top_k: int = Field(20, ge=1)
    max_samples: int | None = Field(300, ge=1)
    # The seed whose models are analysed (default: the config's first seed). It depends on the config only, not on
    # --seeds, so that a sweep run seed by seed records each seed's models as a whole run would.
    seed: int | None = Field(None, ge=0)


class SweepTrainSection(TrainSection):
    """Training settings of a sweep: checkpoints are selected at r = 0.5 (mode ``missing``) unless told otherwise."""

    valid_mode: str = "missing"
    progress: StrictBool = False


def rate_key(rate: float) -> str:
    """How a missing rate names its results: '0.0', '0.1', ..., with the decimals a finer rate needs ('0.05')."""
    digits = next((d for d in range(1, 10) if abs(round(rate, d) - rate) < 1e-12), 12)
    return f"{rate:.{digits}f}"


def check_rates(rates: Sequence[float]) -> list[float]:
    """Distinct rates in [0, 1], in increasing order (-0.0 is 0.0; ConfigError otherwise)."""
    if any(isinstance(r, bool) or not isinstance(r, int | float | np.integer | np.floating) for r in rates):
        raise ConfigError(f"missing rates must be numbers in [0, 1], got {list(rates)}")
    rates = [float(r) + 0.0 for r in rates]
    if not rates or any(not 0.0 <= r <= 1.0 for r in rates) or len({rate_key(r) for r in rates}) < len(rates):
        raise ConfigError(f"missing rates must be a non-empty list of distinct values in [0, 1], got {rates}")
    return sorted(rates)


def check_corrupted(modalities: Sequence[str] | None) -> None:
    """None (every modality) or a non-empty list of distinct modalities that corruption knows (ConfigError otherwise)."""
    if modalities is None:
        return
    unknown = [m for m in modalities if m not in CORRUPTIBLE]
    if unknown or not modalities or len(set(modalities)) < len(modalities):
        raise ConfigError(f"corrupted modalities must be a non-empty list of distinct names from {list(CORRUPTIBLE)}, got {list(modalities)}")


def check_corrupted_data(modalities: Sequence[str] | None, split: MultimodalSplit, where: str = "corrupted") -> None:
    """Refuse, before anything is evaluated, to corrupt a modality that ``split`` does not have."""
    if not modalities or not len(split):
        return
    present = [m for m in split.dims() if m in CORRUPTIBLE]
    absent = [m for m in modalities if m not in present]
    if absent:
        raise ConfigError(f"{where}: the '{split.name}' split has no '{absent[0]}' to corrupt (it has {present})")


def _check_view(view: ComponentConfig) -> None:
    if view.name not in VIEWS:
        raise ConfigError(f"unknown data view '{view.name}'; choose one of {sorted(VIEWS)}")
    check_parameters(VIEWS[view.name], view.params, 1, f"data view '{view.name}'")


#: A data view (:data:`VIEWS`, given the bundle), checked against its parameters when the config is read.
ViewComponent = Annotated[ComponentConfig, checked(_check_view)]


class MissingSweepConfig(PluginConfig):
    """A missing-rate sweep: one data set and backbone, several methods (display name -> method); a model named in
    ``backbones`` is built on its own backbone instead (e.g. a method that comes with its own network)."""

    data: ComponentConfig
    views: list[ViewComponent] = Field(default_factory=list)  # applied in order; names in VIEWS
    backbone: BackboneComponent = Field(default_factory=lambda: ComponentConfig(name="text_centric"))
    models: dict[str, MethodComponent] = Field(min_length=1)
    backbones: dict[str, BackboneComponent] = Field(default_factory=dict)  # model display name -> its own backbone
    reference: str | None = None  # the model the others are compared with, seed by seed (default: the first)
    train: SweepTrainSection = Field(default_factory=SweepTrainSection)
    seeds: Seeds = Field(default_factory=lambda: [0, 1, 2])
    rates: Annotated[list[float], checked(check_rates)] = Field(default_factory=lambda: list(EVAL_RATES))
    eval_split: str = "test"
    #: The modalities the evaluation corrupts at each r (default: every one the data has); the others stay complete,
    #: e.g. [text] for a text-only sweep, or with rates [1.0] whole-modality removal. Training and checkpoint
    #: selection corrupt every modality whatever this says (the methods' protocol).
    corrupted: Annotated[list[str] | None, checked(check_corrupted)] = None
    sensitivity: SensitivitySection = Field(default_factory=SensitivitySection)
    #: Draws of the test split for the bootstrap intervals of the paired differences (mean over r; see
    #: sweep_intervals); 0: none. Not a training setting: finished records are kept.
    bootstrap: int = Field(1000, ge=0)
    # Run on contextual text features (MiniLM / BERT hidden states) although zeroing their tokens does not remove the
    # text (see check_text_features); off by default, and marked in the report when on.
    allow_contextual_text: StrictBool = False

    @field_validator("reference")
    @classmethod
    def _reference_is_a_model(cls, value: str | None, info: ValidationInfo) -> str | None:
        models = info.data.get("models", {})
        if value is not None and value not in models:
            raise ValueError(f"'{value}' is not one of the models {sorted(models)}")
        return value

    @field_validator("backbones")
    @classmethod
    def _backbones_are_models(cls, value: dict[str, ComponentConfig], info: ValidationInfo) -> dict[str, ComponentConfig]:
        models = info.data.get("models", {})
        unknown = [name for name in value if name not in models]
        if unknown:
            raise ValueError(f"'{unknown[0]}' is not one of the models {sorted(models)}")
        return value

    def reference_model(self) -> str:
        return self.reference or next(iter(self.models))

    def backbone_of(self, name: str) -> ComponentConfig:
        """The backbone model ``name`` is built on: its own (``backbones``) or the shared one."""
        if name not in self.models:
            raise ConfigError(f"{self._source}: no model '{name}'; the sweep has {sorted(self.models)}")
        return self.backbones.get(name, self.backbone)


def load_sweep_config(path: Path | str) -> MissingSweepConfig:
    """Read and validate a sweep YAML (configs/missing/*.yaml); ConfigError naming file and field."""
    return load_config(path, MissingSweepConfig)


# --------------------------------------------------------------------------
# Data views
# --------------------------------------------------------------------------


def natural_missing_text(bundle: DataBundle, *, train_share: float = 0.4, valid_share: float = 0.2, label_shift: float = 0.0, seed: int = 0) -> DataBundle:
    """CMU word-aligned sets (YouTube, MMMO) whose train split has no text: keep the natural gap.

    Samples of splits without text get text missing by nature: zero token
    vectors, one per word step (max of the audio/vision lengths, at least 1),
    which the corruption protocol counts as missing. The samples that have
    text (the original valid and test splits) are pooled and re-split at
    random (``seed``) into ``train_share`` for training (added to the
    text-less training samples), ``valid_share`` for validation and the rest
    for test. ``label_shift`` is subtracted from regression labels (MMMO: 3,
    so that the rating's midpoint is 0 as the MMSA metrics assume).
    """
    missing = set(bundle.meta.get("missing_text_splits", []))
    if not missing:
        raise DataError(bundle.name, "text", "no split misses its text; natural_missing_text applies to CMU sets such as MMMO and YouTube")
    if len(missing) == len(bundle.splits):
        raise DataError(bundle.name, "text", "every split misses its text; a text-centric model cannot be evaluated")
    if not (0 < train_share and 0 < valid_share and train_share + valid_share < 1):
        raise ConfigError(f"natural_missing_text needs 0 < train_share, valid_share and train_share + valid_share < 1, got {train_share}, {valid_share}")
    dim = bundle.dims()["text"] if "text" in bundle.dims() else next(s.text.shape[1] for n in bundle.splits if n not in missing for s in bundle[n])
    task = bundle.task
    if task.kind == "regression" and label_shift:
        lo, hi = task.label_range or (None, None)
        task = dataclasses.replace(task, label_range=None if lo is None else (lo - label_shift, hi - label_shift))

    def shifted(s: Sample) -> Sample:
        return dataclasses.replace(s, label=s.label - label_shift) if task.kind == "regression" and s.label is not None else s

    textless = [shifted(dataclasses.replace(s, text=np.zeros((max(s.audio.shape[0], s.vision.shape[0], 1), dim), np.float32))) for n in sorted(missing) for s in bundle[n]]
    pool = [shifted(s) for n in bundle.splits if n not in missing for s in bundle[n]]
    order = np.random.default_rng(seed).permutation(len(pool))
    a, b = int(round(train_share * len(pool))), int(round((train_share + valid_share) * len(pool)))
    parts = {"train": textless + [pool[i] for i in order[:a]], "valid": [pool[i] for i in order[a:b]], "test": [pool[i] for i in order[b:]]}
    splits = {name: MultimodalSplit(samples, name=name, source=bundle[name].source if name in bundle else bundle.name, task=task) for name, samples in parts.items()}
    meta = {**bundle.meta, "view": "natural_missing_text", "textless_train": len(textless), "pool_with_text": len(pool), "label_shift": label_shift, "resplit_seed": seed}
    return DataBundle(splits, task, name=bundle.name, meta=meta)


def image_as_vision(bundle: DataBundle) -> DataBundle:
    """Text + image data (MMSD2.0): the image tokens become the visual stream; audio is absent (length 0)."""
    splits = {}
    for name, split in bundle.splits.items():
        if any(s.image is None for s in split):
            raise DataError(split.source, "image", f"split '{name}' has samples without image tokens")
        samples = [dataclasses.replace(s, vision=s.image, image=None, audio=np.zeros((0, 1), np.float32)) for s in split]
        splits[name] = MultimodalSplit(samples, name=name, source=split.source, task=split.task)
    return DataBundle(splits, bundle.task, name=bundle.name, meta={**bundle.meta, "view": "image_as_vision"})


def subsample(bundle: DataBundle, max_per_split: int, seed: int = 0) -> DataBundle:
    """At most ``max_per_split`` samples of each split, drawn at random (``seed``), in their original order."""
    if max_per_split < 1:
        raise ConfigError(f"max_per_split must be >= 1, got {max_per_split}")
    rng = np.random.default_rng(seed)
    splits = {name: split.subset(sorted(rng.choice(len(split), size=min(max_per_split, len(split)), replace=False).tolist())) for name, split in bundle.splits.items()}
    return DataBundle(splits, bundle.task, name=bundle.name, meta={**bundle.meta, "subsample": {"max_per_split": max_per_split, "seed": seed}})


def standardize(bundle: DataBundle, modalities: Sequence[str] = ("audio", "vision"), *, statistics: Mapping[str, Mapping[str, Sequence[float]]] | None = None) -> DataBundle:
    """Z-score each feature of ``modalities`` with statistics of the training frames (raw COVAREP reaches 255).

    All-zero frames (missing by nature, or padding-like steps) stay all-zero
    so that they still count as missing; they are left out of the statistics.
    ``statistics``: ``{modality: {'mean': [...], 'std': [...]}}`` to use instead (those of the data models were
    trained on, for other data they are evaluated on). The ones used are appended to ``meta['standardized']``.
    """
    stats = {}
    for m in modalities:
        if statistics is not None:
            if m not in statistics:
                raise DataError(bundle.name, m, f"no standardisation statistics given for it (they cover {sorted(statistics)})")
            stats[m] = (np.asarray(statistics[m]["mean"], np.float32), np.asarray(statistics[m]["std"], np.float32))
            continue
        frames = [f for s in bundle["train"] for f in (getattr(s, m),) if f is not None]
        if not frames:
            raise DataError(bundle.name, m, "no training frames to standardise")
        x = np.concatenate(frames)
        x = x[np.any(x != 0, axis=1)]
        if x.shape[0] < 2:
            raise DataError(bundle.name, m, "fewer than two non-empty training frames to standardise")
        std = x.std(axis=0)
        stats[m] = (x.mean(axis=0).astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32))

    def scaled(s: Sample, source: str) -> Sample:
        changes = {}
        for m, (mean, std) in stats.items():
            x = getattr(s, m)
            if x is None:  # the data has no such modality: nothing to scale (a model that reads it refuses the data)
                continue
            if x.shape[1] != mean.shape[0]:
                raise DataError(source, m, f"sample '{s.id}' has {x.shape[1]} features; the standardisation statistics have {mean.shape[0]}")
            changes[m] = np.where(np.any(x != 0, axis=1, keepdims=True), (x - mean) / std, 0.0).astype(np.float32)
        return dataclasses.replace(s, **changes)

    splits = {name: MultimodalSplit([scaled(s, split.source) for s in split], name=name, source=split.source, task=split.task) for name, split in bundle.splits.items()}
    used = {m: {"mean": mean.tolist(), "std": std.tolist()} for m, (mean, std) in stats.items()}
    return DataBundle(splits, bundle.task, name=bundle.name, meta={**bundle.meta, STANDARDIZED: [*bundle.meta.get(STANDARDIZED, []), used]})  # type: ignore[list-item]


#: ``meta`` key of a standardised bundle: the statistics of each :func:`standardize` applied, in order.
STANDARDIZED = "standardized"


VIEWS: dict[str, Callable[..., DataBundle]] = {"natural_missing_text": natural_missing_text, "image_as_vision": image_as_vision, "subsample": subsample, "standardize": standardize}


def load_sweep_data(config: MissingSweepConfig) -> DataBundle:
    """The configured data source, through its views in order."""
    bundle = config.build_data()
    for i, view in enumerate(config.views):  # names and parameters were checked with the config; values here
        try:
            bundle = VIEWS[view.name](bundle, **view.params)
        except ConfigError as exc:
            raise ConfigError(f"{config._source}: field 'views.{i}': {exc}") from None
    return bundle


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------


@torch.no_grad()
def evaluate_missing(
    method: Method, split: MultimodalSplit, rates: Sequence[float], seed: int, batch_size: int = 128, *, keep_predictions: bool = False, modalities: Sequence[str] | None = None
) -> dict[str, Any]:
    """``{'rates': {'0.0': metrics, ...}, 'mean': metrics averaged over r}`` with every modality (or ``modalities``) corrupted at r;
    for methods that estimate something from the input (``estimates``, e.g. LNLN's completeness, TCMR's
    confidence) also ``'estimates': {'0.0': {name: mean over the samples}, ...}``; with ``keep_predictions`` also
    ``'predictions': {'0.0': array of the per-sample outputs, ...}`` (for :func:`sweep_intervals`)."""
    rates = check_rates(rates)
    check_corrupted(modalities)
    check_corrupted_data(modalities, split, "evaluate_missing(modalities=...)")
    task = method.task
    was_training = method.training
    method.eval()
    preds: dict[float, list[torch.Tensor]] = {r: [] for r in rates}
    estimates: dict[float, list[dict[str, torch.Tensor]]] = {r: [] for r in rates}
    estimate = getattr(method, "estimates", None)
    truth = []
    try:
        for batch in make_loader(split, batch_size):
            truth.append(target_of(batch, task))
            for r in rates:
                corrupted = corrupt_batch(batch, r if modalities is None else dict.fromkeys(modalities, r), seed)
                preds[r].append(method.predict(corrupted, "factual").cpu())
                if estimate is not None and (values := estimate(corrupted)):
                    estimates[r].append(values)
    finally:
        method.train(was_training)
    y = torch.cat(truth).numpy()
    outputs = {rate_key(r): torch.cat(preds[r]).numpy() for r in rates}
    per_rate = {key: task_metrics(pred, y, task) for key, pred in outputs.items()}
    mean = {k: float(np.mean([m[k] for m in per_rate.values()])) for k in next(iter(per_rate.values()))}
    result: dict[str, Any] = {"rates": per_rate, "mean": mean}
    if estimates[rates[0]]:
        result["estimates"] = {rate_key(r): {k: float(torch.cat([e[k] for e in estimates[r]]).mean()) for k in estimates[r][0]} for r in rates}
    if keep_predictions:
        result["predictions"] = outputs
    return result


def _polarity(pred: torch.Tensor, task: TaskSpec) -> torch.Tensor:
    """Decision of predictions: sign for regression scores, argmax for class scores."""
    return torch.sign(pred) if task.kind == "regression" else pred.argmax(dim=-1)


def token_strings(sample: Sample) -> list[str]:
    """Token string per text position: the raw text's words when they match the non-special positions, else '#j'."""
    n = sample.text.shape[0]
    special = sample.text_special if sample.text_special is not None else np.zeros(n, bool)
    words = (sample.raw_text or "").split()
    out = [f"#{j}" for j in range(n)]
    positions = np.flatnonzero(~special)
    if len(words) == len(positions):
        for j, word in zip(positions, words):
            out[j] = word.lower()
    return out


@torch.no_grad()
def sentiment_clue_sensitivity(
    method: Method,
    split: MultimodalSplit,
    *,
    top_k: int = 20,
    max_samples: int | None = None,
    tokens_of: Callable[[Sample], list[str]] = token_strings,
) -> dict[str, Any]:
    """Mask one text token at a time in correctly classified texts; count polarity flips per token.

    Correct: the sign of a regression prediction equals the sign of a non-zero
    label (the argmax equals the class otherwise). Returns counts, the flip
    rate over all masked tokens and the ``top_k`` tokens by number of flips.
    """
    task = method.task
    if task.kind == "multilabel":
        raise ConfigError("the sentiment-clue sensitivity analysis needs a regression or single-label classification task")
    was_training = method.training
    method.eval()
    flips: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    n_correct = 0
    try:
        for sample in split:
            if max_samples is not None and n_correct >= max_samples:
                break
            single = collate([sample])
            truth = target_of(single, task)
            clean = _polarity(method.predict(single, "factual"), task)
            if (task.kind == "regression" and (truth[0] == 0 or clean[0] != torch.sign(truth[0]))) or (task.kind != "regression" and clean[0] != truth[0]):
                continue
            mask = single.text_mask[0] & ~single.text_special[0].bool()
            positions = torch.nonzero(mask).flatten()
            if positions.numel() == 0:
                continue
            n_correct += 1
            batch = collate([sample] * positions.numel())
            dropped = torch.zeros_like(batch.text_mask)
            dropped[torch.arange(positions.numel()), positions] = True
            masked = _polarity(method.predict(drop_positions(batch, "text", dropped), "factual"), task)
            tokens = tokens_of(sample)
            for j, flipped in zip(positions.tolist(), (masked != clean[0]).tolist()):
                counts[tokens[j]] += 1
                flips[tokens[j]] += int(flipped)
    finally:
        method.train(was_training)
    total = sum(counts.values())
    top = [{"token": t, "flips": k, "count": counts[t], "rate": k / counts[t]} for t, k in flips.most_common(top_k) if k > 0]
    return {"n_correct": n_correct, "n_masked": total, "flip_rate": sum(flips.values()) / total if total else float("nan"), "top": top}


# --------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------


def _columns(kind: str) -> list[str]:
    """The metric columns of a sweep report; ``kind``: what :func:`_metric_kind` tells from the results."""
    return {"regression": list(REGRESSION_METRICS), "sims": list(SIMS_METRICS)}.get(kind, ["Acc", "F1", "Macro_F1", "Weighted_F1"])


#: The metrics plotted against the missing rate, per :func:`_metric_kind`.
PLOTTED = {"regression": ("MAE", "Non0_acc_2", "Mult_acc_7", "Corr"), "sims": ("MAE", "Mult_acc_2", "Mult_acc_5", "Corr"), "classification": ("Acc", "F1", "Macro_F1", "Weighted_F1")}


def _metric_kind(results: dict[str, Any]) -> str:
    """'regression' (MOSI metrics), 'sims' (SIMS metrics) or 'classification', from the metrics a sweep reported."""
    reported = next(iter(results["aggregate"].values()))["mean"]
    return "sims" if "Mult_acc_3" in reported else "regression" if "MAE" in reported else "classification"


def train_sweep_model(
    config: MissingSweepConfig, name: str, component: ComponentConfig, bundle: DataBundle, seed: int, out_dir: Path | None, callbacks: Sequence[Any] = ()
) -> tuple[Method, FitResult]:
    """Build ``component`` (model ``name`` of the sweep, or a variant of it) on that model's backbone
    (:meth:`MissingSweepConfig.backbone_of`) and train it with the sweep's settings (``callbacks``: see
    :func:`fit`); the checkpoint is selected on validation (``config.train``), never on a test set."""
    experiment = ExperimentConfig(data=config.data, backbone=config.backbone_of(name), method=component, train=config.train, seeds=[seed])
    method = build_method(experiment, bundle, seed)
    fitted = fit(method, bundle, config.train.to_train_config(), seed=seed, out_dir=out_dir, config={"sweep_model": name, **experiment.model_dump(mode="json")}, callbacks=callbacks)
    return method, fitted


def check_text_features(config: MissingSweepConfig, bundle: DataBundle) -> None:
    """Refuse data whose text features are contextual (``bundle.meta[TEXT_CONTEXTUAL]``) unless the sweep allows them.

    The protocol zeroes the vectors of dropped tokens. In a contextual encoder's output (MiniLM, BERT) every kept
    vector, [CLS] and [SEP] included, was computed from the whole sentence, so the text is still readable at r = 1:
    a linear probe on what survives at r = 1.0 scores the sentiment as well as on the complete text. The sweep
    would then measure robustness to a corruption that removes no information."""
    if bundle.meta.get(TEXT_CONTEXTUAL) and not config.allow_contextual_text:
        assumed = (bundle.meta.get(ASSUMED) or {}).get(TEXT_CONTEXTUAL)  # type: ignore[attr-defined]
        raise ConfigError(
            f"data '{bundle.name}' has contextual text features ({assumed or bundle.meta.get('text_encoder', 'e.g. BERT / MiniLM hidden states')}): "
            "zeroing a dropped token's vector leaves its information in the kept tokens, [CLS] and [SEP], so the text "
            "would not really be missing. Use static word features (data parameter text_encoder: static; the CMU "
            "GloVe features), or set allow_contextual_text: true in the sweep config to run the feature-level protocol anyway"
        )


def check_sweep_models(config: MissingSweepConfig, bundle: DataBundle) -> None:
    """Check the data's text features (:func:`check_text_features`), then build every model once and check it has
    the modes the sweep uses (``train.valid_mode`` for the checkpoint, ``factual`` on the corrupted inputs) and
    passes what :func:`fit` checks, so that a model unfit for the sweep fails before any training."""
    check_text_features(config, bundle)
    for name, component in config.models.items():
        try:
            method = build_method(ExperimentConfig(data=config.data, backbone=config.backbone_of(name), method=component, train=config.train), bundle, 0)
            for mode in (config.train.valid_mode, "factual"):
                method.check_mode(mode)
            check_fit(method, bundle, config.train.to_train_config())  # monitor, hardware, splits: before the folder is claimed
        except ConfigError as exc:
            raise ConfigError(f"sweep model '{name}': {exc}") from None


#: A finished (seed, model) of a sweep: its settings and its result (see module doc).
RECORD = "sweep_result.json"


def _shared_settings(config: MissingSweepConfig, data: dict[str, str], rates: list[float]) -> dict[str, Any]:
    """What every (seed, model) result of a sweep depends on; ``data``: the content fingerprints of the splits used.
    ``corrupted`` only where set, so that the records of sweeps made before it existed stay valid."""
    shared = {**config.model_dump(mode="json", include={"data", "views", "backbone", "train", "eval_split"}), "splits": data, "rates": rates}
    return shared if config.corrupted is None else {**shared, "corrupted": config.corrupted}


def _analysed(config: MissingSweepConfig, seed: int) -> bool:
    """Whether the sentiment-clue sensitivity analysis runs on ``seed``'s models."""
    return config.sensitivity.enabled and seed == (config.sensitivity.seed if config.sensitivity.seed is not None else config.seeds[0])


def _settings(config: MissingSweepConfig, shared: dict[str, Any], name: str, seed: int) -> dict[str, Any]:
    """Everything a (seed, model) result of a sweep depends on: the shared settings, the model and the seed, and the
    model's own backbone if it has one (``model_backbone``; only then, so that the records of the models on the shared
    backbone keep the settings they were written with: a model with its own backbone added to a finished sweep leaves
    them valid, and records written before sweeps had ``backbones`` still match)."""
    sensitivity = config.sensitivity.model_dump(mode="json") if _analysed(config, seed) else None
    settings = {**shared, "model": name, "method": config.models[name].model_dump(mode="json"), "seed": seed, "sensitivity": sensitivity}
    if name in config.backbones:
        settings["model_backbone"] = config.backbones[name].model_dump(mode="json")
    return settings


@holds_output
def sweep_missing(
    config: MissingSweepConfig,
    out_dir: Path,
    seeds: Sequence[int] | None = None,
    rates: Sequence[float] | None = None,
    *,
    overwrite: bool = False,
    bundle: DataBundle | None = None,
) -> dict[str, Any]:
    """Train every model of ``config`` per seed and evaluate it at every missing rate (see module doc).

    ``seeds`` / ``rates`` override the config's. Returns (and writes to
    ``out_dir/results.json``) ``{'seeds', 'per_seed': {seed: {model: {'rates',
    'mean', 'best_valid', 'epochs', 'sensitivity'?}}}, 'aggregate', 'config'}``.
    """
    seeds = list(seeds) if seeds is not None else list(config.seeds)
    rates = check_rates(rates if rates is not None else config.rates)
    if config.sensitivity.enabled and config.sensitivity.seed not in (None, *config.seeds):
        raise ConfigError(f"{config._source}: field 'sensitivity.seed': {config.sensitivity.seed} is not one of the config's seeds {config.seeds}; the analysis would never run")
    out = prepare_out_dir(out_dir, overwrite)
    bundle = bundle if bundle is not None else load_sweep_data(config)
    config.check_split_names(bundle)
    split = bundle[config.eval_split]
    check_corrupted_data(config.corrupted, split, f"{config._source}: field 'corrupted'")
    prints = split_fingerprints(bundle, ["train", config.train.valid_split, config.eval_split])
    shared = _shared_settings(config, prints, rates)
    settings = {(seed, name): _settings(config, shared, name, seed) for seed in seeds for name in config.models}
    with config.naming_errors():
        check_sweep_models(config, bundle)
    records = {key: out / f"seed_{key[0]}" / key[1] / RECORD for key in settings}
    units = Resumable(records, settings, overwrite, folder=out, shared=shared, check=lambda result: check_sweep_unit(result, rates, trained=True))
    diverged: list[str] = []
    recorded: dict[str, dict[str, Any]] = {}  # seed -> model -> its record's per-sample outputs (None: none recorded)

    def train_and_evaluate(seed: int, name: str) -> dict[str, Any]:
        method, fitted = train_sweep_model(config, name, config.models[name], bundle, seed, out / f"seed_{seed}" / name)
        # the per-sample outputs stay in the record (for the bootstrap, also when the sweep resumes), not in results.json
        result = {**evaluate_missing(method, split, rates, seed, keep_predictions=True, modalities=config.corrupted), "best_valid": fitted.best_score, "epochs": fitted.epochs}
        if _analysed(config, seed):
            result["sensitivity"] = sentiment_clue_sensitivity(method, split, top_k=config.sensitivity.top_k, max_samples=config.sensitivity.max_samples)
        return result

    def one_seed(seed: int) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for name in config.models:
            try:
                result = dict(units.run((seed, name), lambda name=name: train_and_evaluate(seed, name)))
            except TrainingDiverged:  # the other models still train
                diverged.append(f"'{name}' on seed {seed}")
                continue
            recorded.setdefault(str(seed), {})[name] = result.pop("predictions", None)
            results[name] = result
        return results

    per_seed = run_seeds(one_seed, seeds)["per_seed"]
    if diverged:
        raise ConfigError(
            f"{out}: training diverged (no epoch with a finite validation score) for {', '.join(diverged)}; no results.json "
            "was written. The finished models are recorded there and reused when the sweep runs again with the same settings"
        )
    data = {"name": bundle.name, "sizes": {n: len(s) for n, s in bundle.splits.items()}, "views": [v.name for v in config.views], "split": config.eval_split}
    data[FINGERPRINTS] = prints
    if TEXT_CONTEXTUAL in bundle.meta:
        data[TEXT_CONTEXTUAL] = bool(bundle.meta[TEXT_CONTEXTUAL])
    outputs = _recorded_outputs(recorded, split, rates, records)
    lacking = "" if outputs else f"{out}: records written by an earlier version hold no per-sample outputs; rerun with --overwrite, or score the checkpoints again with sweep-evaluate"
    return _write_sweep(out, per_seed, config.model_dump(mode="json"), rates, data, outputs, lacking=lacking, overwrite=True)  # out was checked above


def load_sweep_method(run_dir: Path, model: str, seed: int, bundle: DataBundle | None = None) -> tuple[Method, DataBundle]:
    """A trained model of a sweep folder (best checkpoint of ``model`` for ``seed``) and its data, e.g. for
    :func:`sentiment_clue_sensitivity` on another split."""
    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    config = sweep_config_of(read_sweep_results(run_dir), results_path)
    if model not in config.models:
        raise ConfigError(f"{results_path}: no model '{model}'; the sweep has {sorted(config.models)}")
    checkpoint = run_dir / f"seed_{seed}" / model / "best.ckpt"
    if not checkpoint.is_file():
        raise DataError(checkpoint, None, "checkpoint not found")
    bundle = bundle if bundle is not None else load_sweep_data(config)
    method = build_method(ExperimentConfig(data=config.data, backbone=config.backbone_of(model), method=config.models[model], train=config.train, seeds=[seed]), bundle, seed)
    state = load_checkpoint_state(checkpoint)["state_dict"]
    method.load_state_dict({k.removeprefix("method."): v for k, v in state.items()})
    return method, bundle


def read_sweep_results(run_dir: Path) -> dict[str, Any]:
    """The ``results.json`` of a finished sweep folder, checked for what combining and re-evaluating read from it
    (DataError naming the file and the field; the stored config must be a valid sweep config)."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise DataError(path, None, "file not found (not a sweep folder?)")
    try:
        part = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, None, f"is not valid JSON ({exc}); expected the results.json a sweep writes") from None
    if not isinstance(part, dict):
        raise DataError(path, None, f"holds a {type(part).__name__}; expected the mapping a sweep writes")
    for field, kind in (("config", dict), ("per_seed", dict), ("rates", list), ("data", dict)):
        if not isinstance(part.get(field), kind):
            raise DataError(path, field, f"is missing or not a {kind.__name__}; expected the results.json a sweep writes")
    bad = next((seed for seed, models in part["per_seed"].items() if not isinstance(models, dict)), None)
    if bad is not None:
        raise DataError(path, f"per_seed.{bad}", "is not a mapping of model -> results")
    try:
        for seed, models in part["per_seed"].items():
            for model, result in models.items():
                check_sweep_unit(result, part["rates"], where=f"per_seed.{seed}.{model}")
    except ValueError as exc:
        raise DataError(path, None, f"{exc}; expected the results.json a sweep writes") from None
    part["config"] = parse_config(part["config"], f"{path} (config)", MissingSweepConfig).model_dump(mode="json")
    part["data"].setdefault("split", part["config"]["eval_split"])  # results written before 'split' was recorded
    return part


def check_sweep_unit(result: Mapping[str, Any], rates: Sequence[float], *, where: str = "result", trained: bool = False) -> None:
    """A model's result for one seed: numbers at exactly the sweep's ``rates`` and their mean (and, for a record the
    sweep resumes from, ``trained``: the checkpoint's validation score and epochs); a ValueError naming the field."""
    check_numbers(result, "rates", "mean", *(("best_valid", "epochs") if trained else ()), where=where)
    expected = [rate_key(r) for r in rates]
    if sorted(result["rates"]) != sorted(expected):
        raise ValueError(f"field '{where}.rates' has the rates {sorted(result['rates'])}; expected {expected}")


def sweep_config_of(results: dict[str, Any], source: Path | str = "<results.json>") -> MissingSweepConfig:
    """The sweep config stored in a results.json read by :func:`read_sweep_results` (``source``: that file, which
    errors found later, e.g. a data path that is not there, name)."""
    config = MissingSweepConfig.model_validate(results["config"])
    config._source = f"{source} (config)"
    return config


#: Settings that sweeps must share to be combined (models and seeds may differ).
_SHARED_SETTINGS = ("data", "views", "backbone", "train", "eval_split", "corrupted")


def _read_sweeps(run_dirs: Sequence[Path], out_dir: Path, overwrite: bool) -> list[tuple[Path, dict[str, Any]]]:
    """``(folder, results.json)`` of sweeps run with the same data, backbone, training and rates. ``out_dir``, where
    the result goes, is checked first: it may not be one of them nor any sweep's folder (the result would replace
    that sweep's results.json beside its checkpoints), nor hold results unless ``overwrite``."""
    if any(Path(run).resolve() == Path(out_dir).resolve() for run in run_dirs):
        raise ConfigError(f"--out {out_dir} is one of the --run folders; write the result into another folder")
    if next(Path(out_dir).glob("seed_*/*/best.ckpt"), None) is not None:
        raise ConfigError(f"--out {out_dir} is the folder of a sweep (it holds its checkpoints); write the result into another folder")
    check_out_dir(out_dir, overwrite)
    parts: list[tuple[Path, dict[str, Any]]] = []
    for run in map(Path, run_dirs):
        path = run / "results.json"
        part = read_sweep_results(run)
        if parts:
            first = parts[0][1]
            differs = [k for k in _SHARED_SETTINGS if part["config"].get(k) != first["config"].get(k)] + ["rates"] * (part["rates"] != first["rates"])
            differs += [f"data.{k}" for k in _data_differences(part["data"], first["data"])]
            if differs:
                raise DataError(path, differs[0], f"differs from {parts[0][0] / 'results.json'}; sweeps run with other settings or data cannot be combined")
        parts.append((run, part))
    if not parts:
        raise ConfigError("no sweep folders given")
    return parts


#: Per-seed records that sweeps before the selection column did not keep (see :func:`_pool`).
RECORDED_LATER = ("best_valid", "epochs")

#: ``data`` key of a sweep's results: the content fingerprints of the splits it trained, selected and tested on.
FINGERPRINTS = "fingerprints"
#: ``data`` key of the results of :func:`evaluate_sweep` (finished sweeps' checkpoints scored again): true.
EVALUATED = "evaluated"


def _data_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The keys of two results' ``data`` that disagree. Fingerprints are compared split by split where both sweeps
    recorded them; a key that only one of them has and that older sweeps did not record (fingerprints, text_contextual,
    evaluated) is no difference, so sweeps run before those were recorded still combine with newer ones."""
    optional = {FINGERPRINTS, TEXT_CONTEXTUAL, EVALUATED}
    differs = [k for k in dict.fromkeys([*a, *b]) if k != FINGERPRINTS and (a.get(k) != b.get(k) if k in a and k in b else k not in optional)]
    prints_a, prints_b = a.get(FINGERPRINTS) or {}, b.get(FINGERPRINTS) or {}
    return differs + [f"{FINGERPRINTS}.{name}" for name in prints_a if name in prints_b and prints_a[name] != prints_b[name]]


def _check_trained_on(run: Path, part: dict[str, Any], bundle: DataBundle) -> None:
    """Refuse to evaluate a sweep's checkpoints on data whose training or validation split is not the one they were
    trained and selected on (content fingerprints recorded in ``results.json``, or ``run_settings.json`` for sweeps
    run before they were; sweeps older still cannot be checked)."""
    recorded = part["data"].get(FINGERPRINTS) or (read_json_file(run / RUN_SETTINGS) or {}).get("splits") or {}
    valid = part["config"].get("train", {}).get("valid_split", "valid")
    for name in dict.fromkeys(("train", valid)):
        if name in recorded and name in bundle and bundle[name].fingerprint() != recorded[name]:
            raise ConfigError(
                f"{run}: the '{name}' split read now differs in content from the one these checkpoints were trained or selected on "
                "(was a data file changed, or a relative data path in the config resolved from another working directory?)"
            )


def _pool(parts: Sequence[tuple[Path, dict[str, Any]]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The per-seed results of several sweeps in one grid (every seed x every model, each from one run only) and
    the config with every model (and every model's own backbone)."""
    models: dict[str, Any] = {}
    backbones: dict[str, Any] = {}  # model -> its own backbone, None: the shared one
    pooled: dict[str, dict[str, Any]] = {}
    for run, part in parts:
        own = part["config"].get("backbones") or {}  # results.json written before sweeps had 'backbones': none
        for model, component in part["config"]["models"].items():
            if models.setdefault(model, component) != component:
                raise DataError(run / "results.json", f"config.models.{model}", "is configured differently in another run; give it another name")
            if backbones.setdefault(model, own.get(model)) != own.get(model):
                shown = [_backbone_shown(b) if b else "the shared backbone" for b in (own.get(model), backbones[model])]
                raise DataError(run / "results.json", f"config.backbones.{model}", f"the model is built on {shown[0]} here and on {shown[1]} in another run; give it another name")
        for seed, results in part["per_seed"].items():
            for model, result in results.items():
                if model in pooled.setdefault(seed, {}):
                    raise DataError(run / "results.json", "per_seed", f"seed {seed} of model '{model}' appears in more than one run")
                pooled[seed][model] = result
    for seed in pooled:
        lacking = [m for m in models if m not in pooled[seed]]
        if lacking:
            raise DataError(parts[0][0], "per_seed", f"seed {seed} has no results of model '{lacking[0]}'; every seed needs every model (combine only the seeds all of them have: --seeds)")
    per_seed = {seed: {m: pooled[seed][m] for m in models} for seed in sorted(pooled, key=int)}
    for model in models:  # a record older sweeps did not keep: left out for a model unless every seed has it
        partial = [k for k in RECORDED_LATER if 0 < sum(k in per_seed[s][model] for s in per_seed) < len(per_seed)]
        for seed in per_seed:
            per_seed[seed][model] = {k: v for k, v in per_seed[seed][model].items() if k not in partial}
    references = list(dict.fromkeys(ref for _, part in parts if (ref := part["config"].get("reference")) is not None))
    if len(references) > 1:
        raise DataError(parts[0][0] / "results.json", "config.reference", f"the runs name different reference models {references}; combine runs that agree")
    own_backbones = {m: b for m, b in backbones.items() if b is not None}
    return per_seed, {**parts[0][1]["config"], "models": models, "backbones": own_backbones, "reference": references[0] if references else None}


def _backbone_shown(backbone: Mapping[str, Any]) -> str:
    """A backbone component as the errors name it: its name, with its parameters if it has any."""
    return f"backbone '{backbone['name']}'" + (f" with {dict(backbone['params'])}" if backbone.get("params") else "")


#: The metrics whose paired differences get bootstrap intervals, per :func:`_metric_kind` (each computed alone, fast:
#: :func:`~robustmsa.metrics.single_metric`).
INTERVAL_METRICS = {"regression": ("Has0_acc_2", "Non0_acc_2", "Mult_acc_7", "MAE"), "sims": ("Mult_acc_2", "Mult_acc_5", "MAE"), "classification": ("Acc", "F1")}
#: Beside a sweep's results.json: its models' per-sample outputs at each rate (:class:`SweepOutputs`), so that runs
#: combined later are bootstrapped together. Holds the test labels: not a file to publish for licensed data.
OUTPUTS = "predictions.npz"


@dataclasses.dataclass
class SweepOutputs:
    """What the bootstrap of a sweep draws from: the evaluated split's labels and groups (videos; '' for none), its task,
    the rates, and per seed and model the outputs at each rate, an array of shape (rates, samples[, classes])."""

    truth: np.ndarray
    groups: list[str]
    task: TaskSpec
    rates: list[float]
    outputs: dict[str, dict[str, np.ndarray]]

    @classmethod
    def of(cls, split: MultimodalSplit, rates: Sequence[float], outputs: dict[str, dict[str, np.ndarray]]) -> SweepOutputs:
        return cls(split.labels(), [s.group or "" for s in split], split.task, list(rates), outputs)


def _recorded_outputs(recorded: Mapping[str, Mapping[str, Any]], split: MultimodalSplit, rates: Sequence[float], records: Mapping[tuple[int, str], Path]) -> SweepOutputs | None:
    """The per-sample outputs the sweep's records hold (:func:`evaluate_missing`'s ``predictions``), checked; None when
    a record holds none (written before they were recorded)."""
    if any(values is None for by_model in recorded.values() for values in by_model.values()):
        return None

    def stacked(values: Any, record: Path) -> np.ndarray:
        by_rate = values if isinstance(values, dict) else {}
        return np.stack([recorded_predictions(by_rate.get(rate_key(r)), len(split), record, f"result.predictions.{rate_key(r)}", split.name) for r in rates])

    outputs = {seed: {model: stacked(values, records[(int(seed), model)]) for model, values in by_model.items()} for seed, by_model in recorded.items()}
    return SweepOutputs.of(split, rates, outputs)


def write_outputs(path: Path, outputs: SweepOutputs) -> Path:
    """``outputs`` as a NumPy archive (arrays only: it is read back without unpickling anything)."""
    index = [(seed, model) for seed, by_model in outputs.outputs.items() for model in by_model]
    task = outputs.task
    arrays = {
        "truth": outputs.truth, "groups": np.asarray(outputs.groups, dtype=str), "rates": np.asarray(outputs.rates, dtype=np.float64),
        "task": np.asarray([task.kind, str(task.num_classes), task.metric_set]), "index": np.asarray(index, dtype=str).reshape(-1, 2),
        **{f"outputs_{i}": outputs.outputs[seed][model] for i, (seed, model) in enumerate(index)},
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return write_bytes_atomic(path, buffer.getvalue())


def read_outputs(path: Path) -> SweepOutputs:
    """A :data:`OUTPUTS` file written by :func:`write_outputs`; DataError naming the file and the entry otherwise."""

    def bad(field: str | None, what: str) -> DataError:
        return DataError(path, field, f"{what}; expected the {OUTPUTS} a sweep writes (delete it and the intervals are left out)")

    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise bad(None, f"cannot be read as a NumPy archive ({exc})") from None
    for key in ("truth", "groups", "rates", "task", "index"):
        if key not in arrays:
            raise bad(key, "is missing")
    truth, index = arrays["truth"], arrays["index"]
    if truth.dtype.kind not in "fiub":
        raise bad("truth", f"holds {truth.dtype} values, not numbers")
    try:
        kind, num_classes, metric_set = (str(v) for v in arrays["task"])
        task = TaskSpec(kind=kind, num_classes=int(num_classes), label_range=None, metric_set=metric_set)  # type: ignore[arg-type]
    except (ValueError, ConfigError):
        raise bad("task", f"is not [kind, classes, metric set] of a task: {arrays['task'].tolist()}") from None
    rates = [float(r) for r in arrays["rates"]]
    if index.ndim != 2 or index.shape[1] != 2 or len(arrays["groups"]) != len(truth):
        raise bad("index", "does not match the archive's arrays")
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for i, (seed, model) in enumerate(index.tolist()):
        values = arrays.get(f"outputs_{i}")
        if values is None or values.dtype.kind not in "fiu" or values.shape[:2] != (len(rates), len(truth)) or not np.isfinite(values).all():
            raise bad(f"outputs_{i}", f"is not finite outputs of shape ({len(rates)} rates, {len(truth)} samples) for model '{model}' on seed {seed}")
        outputs.setdefault(str(seed), {})[str(model)] = values
    return SweepOutputs(truth, [str(g) for g in arrays["groups"]], task, rates, outputs)


def sweep_intervals(outputs: SweepOutputs, per_seed: Mapping[str, Mapping[str, Any]], reference: str, resamples: int, level: float = 0.95) -> dict[str, Any]:
    """Bootstrap intervals of each model's mean over r minus ``reference``'s, averaged over the seeds of ``per_seed``,
    over ``resamples`` draws of the evaluated split's samples (whole videos where grouped; the same draws for every
    rate, model and seed, whose masks stay as they were): the test-sampling noise the spread over seeds misses.
    Returns ``{'models': {model: {metric: {'low', 'high', 'finite'}}}, 'metrics', 'unit', 'count', 'resamples',
    'level'}`` for :data:`INTERVAL_METRICS`."""
    kind = "sims" if outputs.task.metric_set == "sims" and outputs.task.kind == "regression" else outputs.task.kind
    metrics = INTERVAL_METRICS[kind]
    models = list(next(iter(per_seed.values())))
    predictions = {m: [outputs.outputs[seed][m] for seed in per_seed] for m in models}
    rng = np.random.default_rng(0)
    intervals, units = bootstrap_differences(predictions, outputs.truth, outputs.groups, outputs.task, reference, resamples, level, rng, metrics=metrics, conditions=True)
    return {"models": intervals, "metrics": list(metrics), **units, "resamples": resamples, "level": level}


def _write_sweep(
    out_dir: Path, per_seed: dict[str, Any], config: dict[str, Any], rates: list[float], data: dict[str, Any], outputs: SweepOutputs | None = None, *, lacking: str = "", overwrite: bool
) -> dict[str, Any]:
    """Aggregate per-seed results (mean +- std over seeds) and write results.json, report.md and the plots; with the
    models' ``outputs`` also :data:`OUTPUTS` and the bootstrap intervals of the paired differences (``intervals``),
    otherwise the reason there are none (``lacking``, recorded as ``no_intervals``)."""
    config = {**config, "seeds": [int(s) for s in per_seed], "rates": rates}  # what was run, not what the config first said
    results = {"seeds": [int(s) for s in per_seed], "per_seed": per_seed, "aggregate": mean_std(per_seed.values()), "config": config, "rates": rates, "data": data}
    out = prepare_out_dir(out_dir, overwrite)
    sweep = MissingSweepConfig.model_validate(config)
    if outputs is not None:  # holds exactly the (seed, model) pairs of per_seed: each caller builds both from the same runs
        write_outputs(out / OUTPUTS, outputs)
    else:
        (out / OUTPUTS).unlink(missing_ok=True)  # another run's, replaced
    if sweep.bootstrap and len(sweep.models) > 1:
        if outputs is not None:
            results["intervals"] = sweep_intervals(outputs, per_seed, sweep.reference_model(), sweep.bootstrap)
        else:
            results["no_intervals"] = lacking
    kind = _metric_kind(results)
    write_text_atomic(out / "report.md", sweep_report(results, kind))
    write_sweep_plots(out, results, kind)
    write_results(out / "results.json", results)  # last: a folder with results.json holds a finished run
    return results


def _with_reference(config: dict[str, Any], reference: str | None) -> dict[str, Any]:
    """A pooled sweep config whose models are paired with ``reference`` instead of the runs' own reference (ConfigError
    unless it names one of the models); unchanged for None."""
    if reference is None:
        return config
    if reference not in config["models"]:
        raise ConfigError(f"--reference '{reference}': not one of the models {list(config['models'])}")
    return {**config, "reference": reference}


@holds_output
def combine_sweeps(
    run_dirs: Sequence[Path], out_dir: Path, *, overwrite: bool = False, reference: str | None = None, seeds: Sequence[int] | None = None
) -> dict[str, Any]:
    """Merge sweeps run separately into one result: other seeds of the same models (e.g. one process per seed),
    other models on the same seeds (a variant added later), or both.

    The runs must share data, backbone, training settings and rates, and a
    model must be on the same backbone (its own, ``backbones``, or the shared
    one) in every run that has it; each (seed, model) may come from one run
    only and every seed needs every model.
    The pooled results are re-aggregated (mean +- std over seeds) and written
    with the report and plots to ``out_dir``; ``reference``: the model the
    others are paired with (default: the runs' ``reference``, or the first model);
    ``seeds``: only these seeds of the runs (e.g. the 3 seeds a 3-seed run shares
    with a 5-seed one), each in at least one run.
    """
    parts = _only_seeds(_read_sweeps(run_dirs, out_dir, overwrite), seeds)
    per_seed, config = _pool(parts)
    config = _with_reference(config, reference)
    first = parts[0][1]
    data = dict(first["data"])
    for _, part in parts[1:]:  # what older runs did not record, from the newer ones (equal where both did)
        data.update({k: v for k, v in part["data"].items() if k not in data})
    outputs, lacking = _pooled_outputs(parts)
    return _write_sweep(out_dir, per_seed, config, first["rates"], data, outputs, lacking=lacking, overwrite=overwrite)


def _only_seeds(parts: list[tuple[Path, dict[str, Any]]], seeds: Sequence[int] | None) -> list[tuple[Path, dict[str, Any]]]:
    """The runs' results with only ``seeds`` kept (all for None; ConfigError for a seed that no run has). A run left
    without any of them still counts with its models, so that a model it alone has is named as lacking."""
    if seeds is None:
        return parts
    try:
        wanted = [str(seed) for seed in check_seeds(list(seeds))]
    except ValueError as exc:
        raise ConfigError(f"--seeds: {exc}") from None
    absent = [seed for seed in wanted if not any(seed in part["per_seed"] for _, part in parts)]
    if absent:
        held = sorted({int(seed) for _, part in parts for seed in part["per_seed"]})
        raise ConfigError(f"--seeds: seed {absent[0]} is in none of the runs (they hold the seeds {held})")
    return [(run, {**part, "per_seed": {seed: part["per_seed"][seed] for seed in wanted if seed in part["per_seed"]}}) for run, part in parts]


def _pooled_outputs(parts: Sequence[tuple[Path, dict[str, Any]]]) -> tuple[SweepOutputs | None, str]:
    """The per-sample outputs of every (seed, model) of the runs, from their :data:`OUTPUTS` files, or None and why
    (a run without the file). A file that does not hold the outputs of its run's models on the same test samples as
    the others is refused (DataError naming it)."""
    pooled: SweepOutputs | None = None
    for run, part in parts:
        path = run / OUTPUTS
        if not path.is_file():
            return None, f"{run} has no {OUTPUTS} (a sweep written by an earlier version); score its checkpoints with sweep-evaluate for it"
        outputs = read_outputs(path)
        if outputs.rates != part["rates"]:
            raise DataError(path, "rates", f"holds the rates {outputs.rates}, the run's results.json {part['rates']}")
        lacking = next((f"model '{m}' on seed {seed}" for seed, models in part["per_seed"].items() for m in models if m not in outputs.outputs.get(seed, {})), None)
        if lacking:
            raise DataError(path, "index", f"holds no outputs of {lacking}, which the run's results.json has")
        if pooled is None:
            pooled = dataclasses.replace(outputs, outputs={})
        elif not (np.array_equal(outputs.truth, pooled.truth) and outputs.groups == pooled.groups and outputs.task == pooled.task):
            raise DataError(path, "truth", f"holds other test samples than {parts[0][0] / OUTPUTS}; the runs cannot be bootstrapped together")
        for seed, models in part["per_seed"].items():
            pooled.outputs.setdefault(seed, {}).update({m: outputs.outputs[seed][m] for m in models})
    return pooled, ""


@holds_output
def evaluate_sweep(
    run_dirs: Sequence[Path],
    split: str,
    out_dir: Path,
    *,
    overwrite: bool = False,
    bundle: DataBundle | None = None,
    data_params: dict[str, Any] | None = None,
    models: Sequence[str] | None = None,
    source: str | None = None,
    other: DataBundle | None = None,
    reference: str | None = None,
    corrupted: Sequence[str] | None = None,
    rates: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Evaluate the best checkpoints of finished sweeps on another ``split`` (e.g. ``test_ood``), same rates and masks.

    Nothing is retrained and the sweep folders are left untouched; the result
    (same layout as :func:`sweep_missing`'s, ``data.split`` = ``split``) is
    written to ``out_dir``. The runs are pooled as by :func:`combine_sweeps`.
    ``bundle``: the sweeps' data (default: loaded from their config).
    ``data_params``: data-source parameters changed for this evaluation only
    (e.g. ``{"n_test": 4000}``: a larger test split of the generated corpus),
    see :func:`evaluation_data`; recorded as ``data.data_params``.
    ``source``: evaluate on other data instead (another data set with the same
    features): data source ``source`` with ``data_params`` as its parameters,
    or ``other`` when given, through the sweep's views
    (:func:`views_on_other_data`); recorded as ``data.source``.
    ``models``: evaluate these models only (default: every model of the runs).
    ``reference``: as for :func:`combine_sweeps`.
    ``corrupted`` / ``rates``: corrupt these modalities only, at these rates (default: the runs' own), e.g.
    ``corrupted=['text']`` for a text-only sweep, ``rates=[1.0]`` for whole-modality removal; recorded in the
    result's config.
    """
    rates = check_rates(rates) if rates is not None else None
    check_corrupted(corrupted)
    parts = _read_sweeps(run_dirs, out_dir, overwrite)
    if models is not None:
        parts = [(run, _only_models(run, part, models)) for run, part in parts]
    _with_reference(_pool(parts)[1], reference)  # refuse an incomplete or ambiguous grid, or an unknown reference, before evaluating anything
    first = parts[0][1]
    sweep = sweep_config_of(first, parts[0][0] / "results.json")
    if source is None and other is not None:
        raise ConfigError("other data needs the name of its data source (source=...)")
    if source is not None:
        bundle = _sweep_other_data(sweep, parts, other if other is not None else other_data(sweep.data, source, dict(data_params or {})), bundle)
        data = {"name": bundle.name, "source": {"name": source, "params": dict(data_params or {})}, "trained_on": first["data"]["name"], "views": first["data"].get("views", [])}
        data.update(sizes={n: len(s) for n, s in bundle.splits.items()}, split=split)
        if TEXT_CONTEXTUAL in bundle.meta:
            data[TEXT_CONTEXTUAL] = bool(bundle.meta[TEXT_CONTEXTUAL])
    else:
        bundle = bundle if bundle is not None else load_sweep_data(sweep)
        data = {**first["data"], "split": split}
        if data_params:
            bundle = evaluation_data(sweep, bundle, data_params)
            data.update(sizes={n: len(s) for n, s in bundle.splits.items()}, data_params=dict(data_params))
        for run, part in parts:
            _check_trained_on(run, part, bundle)
    data[EVALUATED] = True
    target = bundle[split]
    if not target.labelled:
        raise ConfigError(f"split '{split}' of data '{bundle.name}' has no labels: a sweep scores its models at each missing rate, which needs them")
    rates = rates if rates is not None else first["rates"]
    corrupted = list(corrupted) if corrupted is not None else sweep.corrupted
    check_corrupted_data(corrupted, target, "corrupted modalities")
    recorded = [] if source is not None else list(first["data"].get(FINGERPRINTS) or {})
    data[FINGERPRINTS] = split_fingerprints(bundle, [*recorded, split])
    if source is not None:  # other data whose split is, by content, the one the models were trained or selected on
        trained_prints = first["data"].get(FINGERPRINTS) or {}
        same = [name for name in ("train", sweep.train.valid_split) if trained_prints.get(name) == data[FINGERPRINTS][split]]
        if same:
            data["same_content_as"] = same[0]
    evaluated, outputs = [], SweepOutputs.of(target, rates, {})
    for run, part in parts:
        per_seed: dict[str, dict[str, Any]] = {}
        for seed, models in part["per_seed"].items():
            for m, res in models.items():
                result = evaluate_missing(load_sweep_method(run, m, int(seed), bundle)[0], target, rates, int(seed), keep_predictions=True, modalities=corrupted)
                by_rate = result.pop("predictions")
                outputs.outputs.setdefault(seed, {})[m] = np.stack([by_rate[rate_key(r)] for r in rates])
                per_seed.setdefault(seed, {})[m] = {**result, **_training_record(res)}
        evaluated.append((run, {"config": part["config"], "per_seed": per_seed}))
    per_seed, config = _pool(evaluated)
    config = {**_with_reference(config, reference), "corrupted": corrupted}
    return _write_sweep(out_dir, per_seed, config, rates, data, outputs, overwrite=overwrite)


def removable_modalities(split: MultimodalSplit) -> list[str]:
    """The modalities of ``split`` that corruption can remove: present, with a real position in at least one sample."""
    return [m for m in split.dims() if m in CORRUPTIBLE and any(len(getattr(s, m)) for s in split)]


def removal_conditions(modalities: Sequence[str]) -> dict[str, list[str]]:
    """Whole-modality removal: ``{'complete': [], 'without_<m>[_<m>...]': the modalities removed}`` for every non-empty
    proper subset of ``modalities`` (at least one modality stays), fewest removed first."""
    subsets = [list(c) for k in range(1, len(modalities)) for c in itertools.combinations(modalities, k)]
    return {"complete": [], **{"without_" + "_".join(removed): removed for removed in subsets}}


@holds_output
def modality_removal(
    run_dirs: Sequence[Path],
    split: str,
    out_dir: Path,
    *,
    overwrite: bool = False,
    bundle: DataBundle | None = None,
    data_params: dict[str, Any] | None = None,
    models: Sequence[str] | None = None,
    reference: str | None = None,
) -> dict[str, Any]:
    """Whole-modality removal: the best checkpoints of finished sweeps on ``split`` with each non-empty proper subset of
    the modalities removed (r = 1 for them; the others complete), and complete.

    Each condition is an :func:`evaluate_sweep` into ``out_dir/<condition>`` (:func:`removal_conditions`; its report
    with the paired differences and their bootstrap intervals); ``out_dir/removal.json`` and ``report.md`` gather the
    headline metrics of every condition, and ``removal_<metric>.png`` plots them. Nothing is retrained.
    ``data_params``, ``models`` and ``reference`` as for :func:`evaluate_sweep`.
    """
    check_out_dir(out_dir, overwrite, marker="removal.json")
    parts = _read_sweeps(run_dirs, out_dir, overwrite)
    sweep = sweep_config_of(parts[0][1], parts[0][0] / "results.json")
    bundle = bundle if bundle is not None else load_sweep_data(sweep)
    evaluated = evaluation_data(sweep, bundle, data_params) if data_params else bundle
    present = removable_modalities(evaluated[split])
    if len(present) < 2:
        raise ConfigError(f"the '{split}' split has {present or 'no modality'} to remove; whole-modality removal needs two modalities or more (one stays)")
    conditions: dict[str, Any] = {}
    for name, removed in removal_conditions(present).items():
        result = evaluate_sweep(
            run_dirs, split, Path(out_dir) / name, overwrite=overwrite, bundle=bundle, data_params=data_params, models=models, reference=reference,
            corrupted=removed or None, rates=[1.0] if removed else [0.0],
        )
        conditions[name] = {"removed": removed, "kept": [m for m in present if m not in removed], "results": result}
    first = next(iter(conditions.values()))["results"]
    kind = _metric_kind(first)
    ref = MissingSweepConfig.model_validate(first["config"]).reference_model()
    metrics = list(INTERVAL_METRICS[kind])
    summary = {
        "split": split, "modalities": present, "seeds": first["seeds"], "reference": ref, "metrics": metrics, "data": first["data"],
        "conditions": {
            name: {
                "removed": c["removed"], "kept": c["kept"], "folder": name, "aggregate": {m: agg["mean"] for m, agg in c["results"]["aggregate"].items()},
                "paired": _paired(c["results"], ref, metrics),
            }
            for name, c in conditions.items()
        },
    }
    out = Path(out_dir)
    write_text_atomic(out / "report.md", removal_report(summary))
    for metric in metrics:
        scale = 100.0 if metric in PERCENT_METRICS else 1.0
        bars = {m: {", ".join(c["kept"]): c["aggregate"][m][metric]["mean"] * scale for c in summary["conditions"].values()} for m in first["aggregate"]}
        errors = {m: {", ".join(c["kept"]): c["aggregate"][m][metric]["std"] * scale for c in summary["conditions"].values()} for m in first["aggregate"]}
        label = f"{metric} (%)" if metric in PERCENT_METRICS else metric
        bar_plot(out / f"removal_{metric}.png", bars, errors=errors, ylabel=label, title=f"{metric} with the modalities kept ({split})")
    write_results(out / "removal.json", summary)
    return summary


def removal_report(summary: Mapping[str, Any]) -> str:
    """Markdown of :func:`modality_removal`: per headline metric, per condition (the modalities kept) each model's
    mean +- std over seeds and its paired difference to the reference, with the bootstrap interval where there is one."""
    ref = summary["reference"]
    conditions = summary["conditions"]
    models = list(next(iter(conditions.values()))["aggregate"])
    lines = [
        f"# Whole-modality removal on {summary['data']['name']} ({summary['split']} split)\n",
        f"Seeds: {summary['seeds']}. Each row keeps the modalities named and removes the others entirely (every position zeroed, "
        f"text tokens [UNK]: r = 1); 'complete': nothing removed. Nothing is retrained: the checkpoints of the sweep. "
        f"Columns: mean ± std over seeds; '− {ref}': the paired difference seed by seed (on how many seeds better), with its "
        "bootstrap interval over the test samples in brackets where the metric has one (* where it excludes 0). "
        "Each row's own report is in the folder named in the last column.\n",
    ]
    others = [m for m in models if m != ref]
    for metric in summary["metrics"]:
        columns = [*models, *(f"{m} − {ref}" for m in others), "folder"]
        rows = {}
        for c in conditions.values():
            row: dict[str, Any] = {m: format_value(c["aggregate"][m][metric], metric) for m in models}
            row.update({f"{m} − {ref}": difference_text(c["paired"][m][metric], metric) for m in others})
            rows[", ".join(c["kept"])] = {**row, "folder": c["folder"]}
        lines.append(f"\n## {metric}\n")
        lines.append(markdown_table(rows, columns, row_header="kept"))
    return "\n".join(lines)


def _sweep_other_data(config: MissingSweepConfig, parts: Sequence[tuple[Path, dict[str, Any]]], other: DataBundle, trained: DataBundle | None) -> DataBundle:
    """``other`` through the sweeps' views (:func:`views_on_other_data`), checked to be data their checkpoints can be
    applied to: as the data they were trained on (``trained``, default: read from the config; refused when it cannot
    be read or is not the data they were trained on), see :func:`check_same_data`."""
    run = parts[0][0]
    if trained is None:
        try:
            trained = load_sweep_data(config)
        except (ConfigError, DataError) as exc:
            raise ConfigError(
                f"{run}: the data these checkpoints were trained on cannot be read ({exc}); it is needed to check that the other data "
                "was made the same way, and for the statistics of a standardize view"
            ) from None
    for path, part in parts:
        _check_trained_on(path, part, trained)
    bundle = views_on_other_data(config, other, trained)
    check_same_data(data_record(trained), bundle, run / "results.json")  # the sweeps share their data (_read_sweeps)
    check_text_features(config, bundle)
    return bundle


def views_on_other_data(config: MissingSweepConfig, other: DataBundle, trained: DataBundle) -> DataBundle:
    """``other`` through the sweep's views in order, as its training data (``trained``, already through them) went:
    a ``standardize`` view scales with the statistics of the training data, not of ``other``'s own train split; a
    view that cannot apply names itself (e.g. ``natural_missing_text`` on data that does not miss text by nature)."""
    statistics = list(trained.meta.get(STANDARDIZED, []))  # type: ignore[call-overload]
    bundle = other
    for index, view in enumerate(config.views):
        params = dict(view.params)
        if view.name == "standardize":
            if not statistics:
                raise ConfigError(f"the training data '{trained.name}' was not standardised as views.{index} says: give it through the sweep's views")
            params["statistics"] = statistics.pop(0)
        try:
            bundle = VIEWS[view.name](bundle, **params)
        except (ConfigError, DataError) as exc:
            raise ConfigError(f"views.{index} ({view.name}) of the sweep, applied to data '{other.name}': {exc}") from None
    return bundle


def _only_models(run: Path, part: dict[str, Any], models: Sequence[str]) -> dict[str, Any]:
    """``part`` (a results.json) restricted to ``models`` (DataError for a name no model of the run has)."""
    unknown = [m for m in models if m not in part["config"]["models"]]
    if unknown:
        raise DataError(run / "results.json", "config.models", f"has no model '{unknown[0]}' (it has {sorted(part['config']['models'])})")
    keep = dict.fromkeys(models)
    config = {**part["config"], "models": {m: c for m, c in part["config"]["models"].items() if m in keep}}
    config["backbones"] = {m: b for m, b in (part["config"].get("backbones") or {}).items() if m in keep}
    if config.get("reference") not in keep:
        config["reference"] = None  # the reference model was left out: the first kept model is the reference
    return {**part, "config": config, "per_seed": {seed: {m: r for m, r in res.items() if m in keep} for seed, res in part["per_seed"].items()}}


def evaluation_data(config: MissingSweepConfig, trained_on: DataBundle, data_params: dict[str, Any]) -> DataBundle:
    """The sweep's data source with ``data_params`` changed, to evaluate its checkpoints on other data.

    Refused (ConfigError) when that changes the training split or the
    validation split the checkpoints were selected on (compared by content,
    :meth:`MultimodalSplit.fingerprint`): only the other splits may differ.
    """
    changed = config.model_copy(update={"data": config.data.model_copy(update={"params": {**config.data.params, **data_params}})})
    changed._source = f"data parameters {dict(data_params)}"  # what a data-source error names (--data of sweep-evaluate)
    bundle = load_sweep_data(changed)
    for name in dict.fromkeys(("train", config.train.valid_split)):
        if name in trained_on.splits and (name not in bundle.splits or bundle[name].fingerprint() != trained_on[name].fingerprint()):
            raise ConfigError(
                f"data parameters {dict(data_params)} change the '{name}' split the checkpoints were trained or selected on; "
                "only the other splits may change (e.g. the size of the test split)"
            )
    return bundle


def _training_record(result: dict[str, Any]) -> dict[str, Any]:
    """What a sweep result keeps of the training run (the validation score of the checkpoint, the epochs)."""
    return {k: result[k] for k in ("best_valid", "epochs") if k in result}


def sweep_report(results: dict[str, Any], kind: str) -> str:
    """Markdown: mean over r per model (with the validation score each checkpoint was selected by), then per model
    the metrics at each r (mean +- std over seeds)."""
    aggregate = results["aggregate"]
    columns = _columns(kind)
    config = MissingSweepConfig.model_validate(results["config"])
    monitor = config.train.to_train_config().monitor_spec("regression" if kind == "sims" else kind)[0]
    split = f" ({results['data']['split']} split)" if "split" in results["data"] else ""
    lines = [f"# Missing-rate sweep on {results['data']['name']}{split}\n", f"Seeds: {results['seeds']}; rates: {results['rates']}; data: {results['data']['sizes']}\n"]
    if config.corrupted is not None:
        lines.append(
            f"**Corrupted at each r: {' and '.join(config.corrupted)} only**; the other modalities stay complete (training and checkpoint "
            "selection corrupted every modality, as the methods' protocol does).\n"
        )
    if config.backbones:  # the models on their own backbone (without any, every model is on the shared one)
        own = ", ".join(f"{name} ({config.backbones[name].name})" for name in config.models if name in config.backbones)
        lines.append(f"Backbones: every model on {config.backbone.name} except {own}.\n" if len(config.backbones) < len(config.models) else f"Backbones: {own}.\n")
    if results["data"].get(TEXT_CONTEXTUAL):
        lines.append(
            "**Contextual text features** (allow_contextual_text): a dropped token's vector is zeroed, but the kept vectors "
            "were computed from the whole text, so the text is not fully removed; these curves overstate robustness to missing text.\n"
        )
    if "trained_on" in results["data"]:
        given = results["data"].get("source", {})
        params = f" with {given['params']}" if given.get("params") else ""
        views = f", through the sweep's views {results['data']['views']}" if results["data"].get("views") else ""
        lines.append(f"**Other data**: models trained on '{results['data']['trained_on']}', evaluated on data source '{given.get('name')}'{params}{views}.\n")
    roles = {"train": "trained", config.train.valid_split: "selected"}
    if "trained_on" not in results["data"]:
        role = roles.get(results["data"].get("split"))
        if role:
            lines.append(f"**Not a test result**: evaluated on the '{results['data']['split']}' split, the one the models were {role} on.\n")
    elif results["data"].get("same_content_as") in roles:
        same = results["data"]["same_content_as"]
        lines.append(f"**Not a test result**: the '{results['data']['split']}' split evaluated holds the same samples as the '{same}' split the models were {roles[same]} on.\n")
    if results["data"].get("data_params"):
        lines.append(f"Evaluated with the data parameters {results['data']['data_params']} changed (training and validation data unchanged).\n")
    lines.append("## Mean over missing rates\n")
    selection = f"valid {monitor} (selection)"
    if all("best_valid" in agg for agg in aggregate.values()):
        lines.append(
            f"'{selection}': the validation score each checkpoint was selected by ({config.train.valid_mode} mode; "
            "'missing': corrupted at the method's valid_missing_rate, 0.5 by default), mean over seeds. "
            "Choose between models or variants by this column, never by the test columns.\n"
        )
        rows = {name: {selection: format_value(agg["best_valid"], monitor), **agg["mean"]} for name, agg in aggregate.items()}
        lines.append(markdown_table(rows, [selection, *columns]))
    else:
        lines.append(markdown_table({name: agg["mean"] for name, agg in aggregate.items()}, columns))
    if len(aggregate) > 1:
        reference = config.reference_model()
        paired = _paired(results, reference, columns)
        intervals = results.get("intervals")
        lines.append(f"\n## Paired with {reference}, seed by seed (mean over r)\n")
        lines.append(f"Model minus {reference} on the same seed and masks: mean ± std of the difference over seeds; in parentheses, on how many seeds the model is better.\n")
        lines.append(markdown_table({name: {c: difference_text(d[c], c) for c in columns} for name, d in paired.items()}, columns))
        if intervals:
            unit = "videos" if intervals["unit"] == "group" else "samples"
            lines.append(
                f"\nIn brackets ({', '.join(intervals['metrics'])}): the {intervals['level']:.0%} interval of the difference (mean over r, averaged over the seeds) "
                f"over {intervals['resamples']} bootstrap draws of the {results['data'].get('split', 'evaluated')} split ({intervals['count']} {unit}; the same masks): "
                "the test-sampling noise, which the spread over seeds does not show; * where it excludes 0.\n"
            )
        elif results.get("no_intervals"):
            lines.append(f"\nNo bootstrap interval: {results['no_intervals']}.\n")
    for name, agg in aggregate.items():
        lines.append(f"\n## {name}\n")
        lines.append(markdown_table(agg["rates"], columns, row_header="r"))
        if "estimates" in agg:
            lines.append(f"\nWhat {name} estimates from the corrupted input, mean over the samples (target: what it is trained towards; error: mean |estimate - target|):\n")
            lines.append(markdown_table(agg["estimates"], list(next(iter(agg["estimates"].values()))), row_header="r"))
    seed, analysed = _sensitivity_results(results)
    if config.sensitivity.enabled and seed is None and results["data"].get(EVALUATED):
        lines.append("\nNo sentiment-clue sensitivity analysis here: sweep-evaluate scores the checkpoints at the missing rates only (the analysis is in the sweep's own report).\n")
    elif config.sensitivity.enabled and seed is None:
        lines.append(
            "\nNo sentiment-clue sensitivity analysis here: it runs on the models of the config's first seed (or "
            "sensitivity.seed), which this run did not train; sweep-combine with that seed's run shows it.\n"
        )
    for name, res in analysed.items():
        if "sensitivity" in res:
            sens = res["sensitivity"]
            lines.append(f"\n## Sentiment-clue sensitivity: {name} (seed {seed})\n")
            lines.append(f"{sens['n_correct']} correctly classified texts, {sens['n_masked']} tokens masked one at a time, flip rate {sens['flip_rate']:.3f}.\n\n")
            if sens["top"]:
                lines.append("| token | flips | count | rate |\n|---|---|---|---|\n" + "".join(f"| {t['token']} | {t['flips']} | {t['count']} | {t['rate']:.2f} |\n" for t in sens["top"]))
            else:
                lines.append("No masked token flipped the predicted polarity (so there is no sensitivity plot for this model).\n")
    return "\n".join(lines)


def _paired(results: Mapping[str, Any], reference: str, columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each model of a sweep result minus ``reference`` (mean over r, seed by seed), with the bootstrap intervals of
    the result where it has them (``interval``)."""
    paired = paired_differences(results["per_seed"], reference, columns)
    intervals = results.get("intervals")
    for name, d in paired.items():
        for metric, interval in (intervals["models"][name] if intervals else {}).items():
            if metric in d:
                d[metric]["interval"] = interval
    return paired


def _sensitivity_results(results: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The seed whose models the sensitivity analysis ran on, and their results (``(None, {})`` if it did not run)."""
    return next(((seed, res) for seed, res in results["per_seed"].items() if any("sensitivity" in r for r in res.values())), (None, {}))


def write_sweep_plots(out: Path, results: dict[str, Any], kind: str) -> list[Path]:
    """``missing_<metric>.png`` (metric vs r, one curve per model, +- std band; none for a single rate) and
    ``sensitivity_<model>.png``."""
    paths = []
    rates = results["rates"]
    where = f" ({results['data']['split']})" if "split" in results["data"] else ""
    corrupted = results["config"].get("corrupted")
    xlabel = "missing rate r" + (f" ({' and '.join(corrupted)} only)" if corrupted else "")
    for metric in PLOTTED[kind] if len(rates) > 1 else ():
        curves, errors = {}, {}
        for name, agg in results["aggregate"].items():
            cells = [agg["rates"][rate_key(r)][metric] for r in rates]
            scale = 100.0 if metric in PERCENT_METRICS else 1.0  # as in the report's tables
            curves[name] = (rates, [c["mean"] * scale for c in cells])
            errors[name] = [c["std"] * scale for c in cells]
        label = f"{metric} (%)" if metric in PERCENT_METRICS else metric
        paths.append(line_plot(out / f"missing_{metric}.png", curves, xlabel=xlabel, ylabel=label, title=f"{metric} vs missing rate{where}", errors=errors))
    for name, res in _sensitivity_results(results)[1].items():
        top = res.get("sensitivity", {}).get("top", [])
        if top:
            flips = {name: {t["token"]: t["flips"] for t in top[:12]}}
            paths.append(bar_plot(out / f"sensitivity_{name}.png", flips, ylabel="polarity flips", title=f"Most error-triggering tokens ({name})", counts=True))
    return paths
