"""TCMR: text-centric missing-modality reconstruction with text confidence estimation.

Stage 1 (:meth:`TCMR.prepare`, run by ``fit`` before the main stage; both
models trained with ``fit`` on the clean training samples that have text,
selected on clean validation data, then frozen):

* a text regression model (text encoder of the backbone's architecture + a
  head): its token features of the *complete* text are the reconstruction
  target, and its encoder initialises the backbone's text encoder;
* a 3-class polarity classifier (negative / neutral / positive, MMSA's
  3-class convention ``round(clip(y, -1, 1))``, or SIMS's bins at -0.1 / 0.1
  for a task with SIMS metrics; for classification tasks the task's classes):
  the pseudo-confidence label of an incomplete text is the probability it gives
  the true class.

Stage 2, per batch (corrupted as in :mod:`.base`):

* TCE: ConfNet (MLP + sigmoid on the mean text vector) predicts the text
  confidence c (B,), trained with MSE to the pseudo-confidence labels
  (``confidence='missing_rate'``: to ``1 - r_text`` instead, the w/o TCE ablation);
* IPFG: H_p = alpha * H_at + (1 - alpha) * H_vt from audio-to-text and
  vision-to-text generators and a gate alpha in [0, 1] (``proxy='joint'``:
  one generator over audio+vision, the w/o IPFG ablation);
* reconstruction H = c * H_t + (1 - c) * H_p, MSE to the teacher's
  complete-text features; auxiliary audio/vision frame reconstruction; task
  loss (MSE on the score, cross-entropy for classification) on fuse(H, ...).

Loss weights: ``alpha`` (confidence), ``beta`` (text reconstruction),
``gamma`` (audio/vision reconstruction), ``sigma`` (task): 0.1, 0.8, 0.1, 1.0.

Optimisation (``schedule``): ``aos`` (alternating: each step, phase
``confidence`` updates ConfNet and the text encoder on the confidence loss,
then phase ``main`` updates everything but ConfNet on the other losses, one
optimiser each; c is detached in ``main``), ``end2end`` (one phase, all
losses, all parameters), ``confnet_first`` (``confidence`` only for the first
``switch_epoch`` epochs, then ``main`` only), ``confnet_later`` (the reverse).

``text_encoder_phase``: ``both`` (default) lets the text encoder learn in
both phases; ``confidence`` keeps it out of ``main`` (H_t detached there), the
literal reading of AOS, which leaves the text encoder trained only to predict
confidence, never for the task on incomplete text (on the generated default
corpus, seed 0, mean over r = 0..0.9, earlier 25-epoch protocol: MAE 0.671 /
Non0 Acc-2 81.4 against 0.598 / 84.0 with ``both``); ``main`` keeps it out of
``confidence`` (ConfNet reads a detached text summary). Each phase has its own
Adam optimiser, and Adam is invariant to a constant loss scale: under AOS the
weight ``alpha`` does not shrink the confidence phase's steps on the text
encoder, which ``main`` avoids (``benchmarks/missing.py ablations``).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustmsa.data.batch import Batch, Sample
from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec
from robustmsa.errors import ConfigError, DataError
from robustmsa.method import Supervised, target_of
from robustmsa.metrics import SIMS_BINS
from robustmsa.models.base import Backbone, Output, masked_mean, masked_mse, mlp
from robustmsa.reconstruct.base import MissingAwareMethod, blend_text, check_blend, encode_checked, loss_weights, token_dim, with_target
from robustmsa.reconstruct.proxy import FrameReconstructor, ProxyGenerator
from robustmsa.registry import METHODS

SCHEDULES = ("aos", "end2end", "confnet_first", "confnet_later")
TEXT_ENCODER_PHASES = ("both", "confidence", "main")
POLARITY_TASK = TaskSpec(kind="classification", num_classes=3, label_range=None, class_names=("negative", "neutral", "positive"))


def polarity_classes(labels: np.ndarray | Tensor, metric_set: str = "mosi") -> np.ndarray | Tensor:
    """Negative / neutral / positive class (0 / 1 / 2) of sentiment scores: ``round(clip(y, -1, 1)) + 1`` (MOSI's
    3 classes); ``metric_set='sims'``: SIMS's Acc-3 bins [-1, -0.1], (-0.1, 0.1], (0.1, 1] (:mod:`robustmsa.metrics`)."""
    if metric_set == "sims":
        edges = SIMS_BINS["Mult_acc_3"]
        if isinstance(labels, Tensor):
            return torch.bucketize(labels, torch.tensor(edges, dtype=labels.dtype, device=labels.device), right=False)
        return np.searchsorted(edges, labels, side="left").astype(np.int64)
    if isinstance(labels, Tensor):
        return (torch.round(labels.clamp(-1.0, 1.0)) + 1).long()
    return (np.round(np.clip(labels, -1.0, 1.0)) + 1).astype(np.int64)


def complete_text_bundle(bundle: DataBundle, task: TaskSpec | None = None) -> DataBundle:
    """Train (samples that have text) and valid splits, optionally relabelled with polarity classes.

    Training samples whose text is missing by nature (every token vector
    zero, see :func:`robustmsa.evaluation.missing_protocol.natural_missing_text`)
    are left out; single zero vectors (out-of-vocabulary words) are kept.
    """

    def keep(s: Sample) -> bool:
        return s.text is not None and bool(np.any(s.text != 0))

    def relabel(samples: list[Sample]) -> list[Sample]:
        if task is None:
            return samples
        classes = polarity_classes(np.array([s.label for s in samples], dtype=np.float64), bundle.task.metric_set)
        return [dataclasses.replace(s, label_class=int(c)) for s, c in zip(samples, classes)]

    out = {}
    for name in ("train", "valid"):
        split = bundle[name]
        samples = [s for s in split if keep(s)] if name == "train" else list(split)
        if len(samples) < 2:
            raise DataError(split.source, "text", f"TCMR needs training samples with complete text; split '{name}' has {len(samples)}")
        out[name] = MultimodalSplit(relabel(samples), name=name, source=split.source, task=task or bundle.task)
    return DataBundle(out, task or bundle.task, name=f"{bundle.name}-complete-text")


class TextModel(Backbone):
    """A text-only model around a given token encoder: (B, Lt, Dt) -> H (B, Lt, d) -> mean -> head."""

    modalities = ("text",)

    def __init__(self, dims: dict[str, int], task: TaskSpec, encoder: nn.Module, dim: int, dropout: float = 0.1) -> None:
        super().__init__(dims, task)
        self.encoder = encoder
        self.head = mlp(dim, dim, self.out_dim, dropout)

    def tokens(self, batch: Batch) -> Tensor:
        return self.encoder(batch.text, batch.mask("text"))

    def forward(self, batch: Batch) -> Output:
        h = self.tokens(batch)
        pooled = masked_mean(h, batch.mask("text"))
        return Output(logits=self.head(pooled), fused=pooled, modality={"text": pooled}, extras={"text_tokens": h})


@METHODS.register("tcmr")
class TCMR(MissingAwareMethod):
    """Text-confidence-aware missing-modality reconstruction (see module doc)."""

    def __init__(
        self,
        backbone: Backbone,
        *,
        alpha: float = 0.1,
        beta: float = 0.8,
        gamma: float = 0.1,
        sigma: float = 1.0,
        schedule: str = "aos",
        switch_epoch: int = 3,
        confidence: str = "tce",
        proxy: str = "ipfg",
        proxy_query: str = "position",
        text_encoder_phase: str = "both",
        blend: str = "sample",
        init_text_from_teacher: bool = True,
        teacher_epochs: int | None = None,
        heads: int = 4,
        proxy_layers: int = 1,
        dropout: float = 0.1,
        **base: Any,
    ) -> None:
        super().__init__(backbone, **base)
        if schedule not in SCHEDULES:
            raise ConfigError(f"tcmr schedule must be one of {list(SCHEDULES)}, got '{schedule}'")
        if confidence not in ("tce", "missing_rate"):
            raise ConfigError(f"tcmr confidence must be 'tce' or 'missing_rate', got '{confidence}'")
        if text_encoder_phase not in TEXT_ENCODER_PHASES:
            raise ConfigError(f"tcmr text_encoder_phase must be one of {list(TEXT_ENCODER_PHASES)}, got '{text_encoder_phase}'")
        if switch_epoch < 0:
            raise ConfigError(f"tcmr switch_epoch must be >= 0, got {switch_epoch}")
        encoder = getattr(backbone, "text_encoder", None)
        if not isinstance(encoder, nn.Module):
            raise ConfigError(f"TCMR needs a backbone with a 'text_encoder' module (e.g. 'text_centric'), got {type(backbone).__name__}")
        try:  # the teachers call it as text_encoder(features (B, L, D), mask (B, L)) -> (B, L, dim)
            inspect.signature(encoder.forward).bind(None, None)
        except TypeError:
            raise ConfigError(
                f"TCMR calls {type(backbone).__name__}.text_encoder(features, mask); its forward{inspect.signature(encoder.forward)} does not take those two arguments"
            ) from None
        dim = token_dim(backbone)
        self.weights = loss_weights("tcmr", confidence=alpha, text_reconstruction=beta, av_reconstruction=gamma, task=sigma)
        self.schedule = schedule
        self.phases = ("main",) if schedule == "end2end" else ("confidence", "main")
        self.switch_epoch = int(switch_epoch)
        self.text_encoder_phase = text_encoder_phase
        self.blend = check_blend(blend, "tcmr")
        self.confidence = confidence
        self.init_text_from_teacher = bool(init_text_from_teacher)
        self.teacher_epochs = teacher_epochs
        self.confnet = nn.Sequential(mlp(dim, dim, 1, dropout), nn.Sigmoid())
        self.proxy = ProxyGenerator(dim, heads, proxy_layers, dropout, kind=proxy, query=proxy_query)
        self.reconstructor = FrameReconstructor(backbone.dims, dim, heads, proxy_layers, dropout)
        text_dims = {"text": backbone.dims["text"]}
        self.text_teacher = TextModel(text_dims, self.task, copy.deepcopy(backbone.text_encoder), dim, dropout)
        self.polarity = None
        if confidence == "tce" and self.task.kind == "regression":
            self.polarity = TextModel(text_dims, POLARITY_TASK, copy.deepcopy(backbone.text_encoder), dim, dropout)
        self.register_buffer("teachers_ready", torch.zeros((), dtype=torch.bool))
        self._freeze_teachers()

    # --- stage 1 ----------------------------------------------------------
    def _teachers(self) -> list[TextModel]:
        return [m for m in (self.text_teacher, self.polarity) if m is not None]

    def _freeze_teachers(self) -> None:
        for model in self._teachers():
            model.requires_grad_(False)
            model.eval()

    def train(self, mode: bool = True) -> TCMR:
        super().train(mode)
        for model in self._teachers():
            model.eval()
        return self

    def prepare(self, bundle: DataBundle, cfg: Any, *, seed: int, out_dir: Path | None = None) -> dict[str, Any]:
        """Train the text teacher and the polarity classifier with ``fit`` (once), freeze them, initialise H_t's encoder."""
        from robustmsa.training.fit import fit

        if bool(self.teachers_ready):
            return {}
        stage_cfg = dataclasses.replace(cfg, valid_mode="factual", monitor=None, monitor_mode=None, max_epochs=self.teacher_epochs or cfg.max_epochs)
        record: dict[str, Any] = {}
        jobs = [("text_teacher", self.text_teacher, complete_text_bundle(bundle))]
        if self.polarity is not None:
            jobs.append(("polarity", self.polarity, complete_text_bundle(bundle, POLARITY_TASK)))
        for name, model, data in jobs:
            model.requires_grad_(True).train()
            result = fit(Supervised(model, regression_loss="mse"), data, stage_cfg, seed=seed, out_dir=None if out_dir is None else out_dir / name)
            record[name] = {"best_valid": result.best_score, "monitor": result.monitor, "epochs": result.epochs}
        self._freeze_teachers()
        if self.init_text_from_teacher:
            self.backbone.text_encoder.load_state_dict(self.text_teacher.encoder.state_dict())
        self.teachers_ready.fill_(True)
        return record

    # --- optimisation -----------------------------------------------------
    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        trainable = [p for p in self.parameters() if p.requires_grad]
        if len(self.phases) == 1:
            return trainable
        text = {id(p) for p in self.backbone.text_encoder.parameters()}
        confnet = {id(p) for p in self.confnet.parameters()}
        if phase == "confidence":
            shared = text if self._text_encoder_in("confidence") else set()
            return [p for p in trainable if id(p) in confnet | shared]
        excluded = confnet | (set() if self._text_encoder_in("main") else text)
        return [p for p in trainable if id(p) not in excluded]

    def _text_encoder_in(self, phase: str) -> bool:
        return self.text_encoder_phase in (phase, "both")

    def active_phases(self, epoch: int) -> tuple[str, ...]:
        if self.schedule == "confnet_first":
            return ("confidence",) if epoch < self.switch_epoch else ("main",)
        if self.schedule == "confnet_later":
            return ("main",) if epoch < self.switch_epoch else ("confidence",)
        return self.phases

    # --- model ------------------------------------------------------------
    def confidence_target(self, noisy: Batch) -> Tensor:
        """(B,) pseudo-confidence labels: the frozen classifier's true-class probability (or 1 - r_text)."""
        if self.confidence == "missing_rate":
            return 1.0 - noisy.extras["missing_rate_text"]
        classifier = self.polarity if self.polarity is not None else self.text_teacher
        truth = polarity_classes(noisy.label, self.task.metric_set) if self.polarity is not None else target_of(noisy, self.task)
        with torch.no_grad():
            probs = classifier(noisy).logits.softmax(dim=-1)
        return probs.gather(1, truth.view(-1, 1))[:, 0]

    def reconstruct(self, enc: dict[str, Tensor], c: Tensor, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """H = c * H_t + (1 - c) * H_p (B, Lt, d) (see :func:`~.base.blend_text` for ``blend``) and the IPFG gate (B,) or None."""
        h_p, gate = self.proxy(enc["text_mask"], enc)
        return blend_text(batch, enc["text_tokens"], h_p, c, self.blend), gate

    def _fuse(self, h: Tensor, enc: dict[str, Tensor]) -> Output:
        return self.backbone.fuse(h, enc["audio_tokens"], enc["vision_tokens"], {m: enc[f"{m}_mask"] for m in ("text", "audio", "vision")})

    def _confidence(self, enc: dict[str, Tensor]) -> Tensor:
        return self.confnet(masked_mean(enc["text_tokens"], enc["text_mask"]))[:, 0]

    def logits(self, batch: Batch) -> Tensor:
        enc = encode_checked(self.backbone, batch)
        return self._fuse(self.reconstruct(enc, self._confidence(enc), batch)[0], enc).logits

    def estimates(self, batch: Batch) -> dict[str, Tensor]:
        """ConfNet's confidence c against its pseudo-label (``confidence_target``) and, with IPFG, the gate alpha
        (the audio share of the proxy)."""
        enc = encode_checked(self.backbone, batch)
        has_target = self.confidence == "tce" or "missing_rate_text" in batch.extras
        out = with_target("confidence", self._confidence(enc), self.confidence_target(batch) if has_target else None)
        gate = self.proxy(enc["text_mask"], enc)[1]
        return out if gate is None else {**out, "ipfg_alpha": gate}

    def training_loss(self, batch: Batch, phase: str = "main") -> dict[str, Tensor]:
        if not bool(self.teachers_ready):
            raise ConfigError("TCMR's stage-1 models are not trained: train it with robustmsa.training.fit.fit (which runs TCMR.prepare)")
        noisy = self.corrupt(batch)
        enc = encode_checked(self.backbone, noisy)
        mask = enc["text_mask"]
        combined = len(self.phases) == 1
        summary = masked_mean(enc["text_tokens"], mask)
        if combined or (phase == "confidence" and self._text_encoder_in("confidence")):
            c = self._confidence(enc)
        else:  # ConfNet learns in the confidence phase only; the text encoder in the phases text_encoder_phase names
            c = self.confnet(summary.detach())[:, 0]
            if phase == "main":
                c = c.detach()
                if not self._text_encoder_in("main"):
                    enc = {**enc, "text_tokens": enc["text_tokens"].detach()}
        terms: dict[str, Tensor] = {}
        if combined or phase == "confidence":
            terms["confidence"] = F.mse_loss(c, self.confidence_target(noisy).to(c))
        if combined or phase == "main":
            h, _ = self.reconstruct(enc, c, noisy)
            with torch.no_grad():
                target = self.text_teacher.tokens(batch)
            terms["text_reconstruction"] = masked_mse(h, target, mask)
            terms["av_reconstruction"] = self.reconstructor(enc, batch)
            terms["task"] = self.task_term(self._fuse(h, enc).logits, noisy)
        losses = {name: self.weights[name] * value for name, value in terms.items()}
        losses["loss"] = torch.stack(list(losses.values())).sum()
        return losses
