"""What every missing-robust method shares: training-time corruption and the validation mode.

* Training: ``training_loss`` corrupts its batch with
  :func:`~robustmsa.reconstruct.corruption.corrupt_for_training` (per sample
  and modality ``r ~ U(0, 1)``, a share ``complete_share`` kept complete, per
  sample or per modality (``complete_per``), redrawn every epoch from
  ``(corruption_seed, epoch, sample id)``). The datasets are never modified.
  ``corruption_seed`` is drawn from torch's RNG when the method is built
  (build it inside ``seeded(seed)``) and saved with the weights.
* Validation / checkpoint selection: inference mode ``missing`` corrupts the
  input at ``valid_missing_rate`` (default 0.5) with the fixed seed
  ``valid_seed`` before predicting, so ``TrainConfig(valid_mode='missing')``
  selects checkpoints on validation data at r = 0.5, with the same masks for
  every model and every epoch. Mode ``factual`` predicts on the input as given
  (the sweep corrupts test inputs itself).

``missing_robust`` is the reference: the backbone trained on the same
corrupted inputs, without any reconstruction.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustmsa.data.batch import Batch
from robustmsa.errors import ConfigError
from robustmsa.method import Method, scores_from_logits, task_loss
from robustmsa.models.base import Backbone, Output
from robustmsa.reconstruct.corruption import DEFAULT_UNK_ID, check_complete_per, corrupt_batch, corrupt_for_training, missing_positions
from robustmsa.registry import METHODS


class MissingAwareMethod(Method):
    """Base class: corrupts training batches; ``predict`` = scores of :meth:`logits` (see module doc)."""

    modes = ("factual", "missing")
    #: What the checkpoint criterion is measured at (mode ``missing``): fixed for every model a search or sweep compares.
    selection_parameters = ("valid_missing_rate", "valid_seed")

    def __init__(
        self,
        backbone: Backbone,
        *,
        complete_share: float = 0.1,
        complete_per: str = "sample",
        valid_missing_rate: float = 0.5,
        valid_seed: int = 0,
        regression_loss: str = "mse",
        unk_id: int = DEFAULT_UNK_ID,
    ) -> None:
        super().__init__(backbone)
        if not 0.0 <= complete_share <= 1.0:
            raise ConfigError(f"complete_share must lie in [0, 1], got {complete_share}")
        if not 0.0 <= valid_missing_rate <= 1.0:
            raise ConfigError(f"valid_missing_rate must lie in [0, 1], got {valid_missing_rate}")
        if regression_loss not in ("l1", "mse"):
            raise ConfigError(f"regression_loss must be 'l1' or 'mse', got '{regression_loss}'")
        self.complete_share = float(complete_share)
        self.complete_per = check_complete_per(complete_per)
        self.valid_missing_rate = float(valid_missing_rate)
        self.valid_seed = int(valid_seed)
        self.regression_loss = regression_loss
        self.unk_id = int(unk_id)
        self.register_buffer("corruption_seed", torch.randint(0, 2**31 - 1, ()))

    def corrupt(self, batch: Batch) -> Batch:
        """The training-time corruption of ``batch`` for the current epoch."""
        return corrupt_for_training(batch, int(self.corruption_seed), self.epoch, complete_share=self.complete_share, complete_per=self.complete_per, unk_id=self.unk_id)

    def task_term(self, logits: Tensor, batch: Batch) -> Tensor:
        return task_loss(logits, batch, self.task, self.regression_loss)

    def logits(self, batch: Batch) -> Tensor:  # pragma: no cover - abstract
        """(B, out_dim) logits of the method on ``batch`` as given."""
        raise NotImplementedError

    def estimates(self, batch: Batch) -> dict[str, Tensor]:
        """Per-sample (B,) quantities the method estimates from ``batch`` as given (e.g. text completeness), with
        their targets and absolute errors where the batch records them; reported per missing rate by the sweep."""
        return {}

    def predict(self, batch: Batch, mode: str = "factual") -> Tensor:
        self.check_mode(mode)
        if mode == "missing":
            batch = corrupt_batch(batch, self.valid_missing_rate, self.valid_seed, unk_id=self.unk_id)
        return scores_from_logits(self.logits(batch), self.task)


#: Where the proxy replaces the text: ``sample`` (every token, the published H = w * H_t + (1 - w) * H_p) or
#: ``missing`` (the missing tokens only; the tokens that survived keep H_t).
BLENDS = ("sample", "missing")


def check_blend(blend: str, method: str) -> str:
    if blend not in BLENDS:
        raise ConfigError(f"{method} blend must be one of {list(BLENDS)}, got '{blend}'")
    return blend


def blend_text(batch: Batch, text_tokens: Tensor, proxy: Tensor, weight: Tensor, blend: str) -> Tensor:
    """H = w * H_t + (1 - w) * H_p (B, Lt, d) with a per-sample weight w (B,); ``blend='missing'``: only at the
    missing text positions of ``batch`` (all-zero features), H = H_t elsewhere."""
    w = weight[:, None].expand(text_tokens.shape[:2])
    if blend == "missing":
        w = torch.where(missing_positions(batch, "text"), w, torch.ones_like(w))
    w = w.unsqueeze(-1)
    return w * text_tokens + (1.0 - w) * proxy


def with_target(name: str, estimate: Tensor, target: Tensor | None) -> dict[str, Tensor]:
    """``{name, name_target, name_error}`` (B,) for :meth:`MissingAwareMethod.estimates` (the estimate alone without a target)."""
    if target is None:
        return {name: estimate}
    target = target.to(estimate)
    return {name: estimate, f"{name}_target": target, f"{name}_error": (estimate - target).abs()}


def token_dim(backbone: Backbone) -> int:
    """Width of the token representations of a composable text-centric backbone (ConfigError otherwise)."""
    if not (hasattr(backbone, "encode") and hasattr(backbone, "fuse")):
        raise ConfigError(
            f"LNLN/TCMR need a composable backbone with encode() and fuse() (e.g. 'text_centric'; see robustmsa.models.base.ComposableBackbone), got {type(backbone).__name__}"
        )
    dim = getattr(backbone, "dim", None) or getattr(getattr(backbone, "text_encoder", None), "dim", None)
    if not isinstance(dim, int):
        raise ConfigError(f"cannot tell the token width of backbone {type(backbone).__name__}")
    return dim


def loss_weights(method: str, **weights: float) -> dict[str, float]:
    """Loss weights as floats; ConfigError for a negative one (it would maximise that loss)."""
    negative = {k: v for k, v in weights.items() if not v >= 0}
    if negative:
        raise ConfigError(f"{method} loss weights must be >= 0, got {negative}")
    return {k: float(v) for k, v in weights.items()}


def encode_checked(backbone: Backbone, batch: Batch) -> dict[str, Tensor]:
    """``backbone.encode(batch)``, checked against the composable contract (see
    :class:`robustmsa.models.base.ComposableBackbone`): for m in text, audio, vision, ``{m}_tokens`` (B, L_m, dim)
    and a bool ``{m}_mask`` (B, L_m). A user backbone that breaks it fails here, naming what is wrong."""
    enc = backbone.encode(batch)  # type: ignore[operator]
    dim, name = token_dim(backbone), type(backbone).__name__
    if not isinstance(enc, dict):
        raise ConfigError(f"backbone {name}: encode() returned a {type(enc).__name__}; expected a dict of tensors")
    for m in ("text", "audio", "vision"):
        tokens, mask = enc.get(f"{m}_tokens"), enc.get(f"{m}_mask")
        if not isinstance(tokens, Tensor) or not isinstance(mask, Tensor):
            raise ConfigError(f"backbone {name}: encode() must return a dict with tensors '{m}_tokens' and '{m}_mask'")
        if tokens.dim() != 3 or tokens.shape[0] != len(batch) or tokens.shape[2] != dim:
            raise ConfigError(f"backbone {name}: encode()['{m}_tokens'] has shape {tuple(tokens.shape)}; expected (batch size {len(batch)}, length, dim {dim})")
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(tokens.shape[:2]):
            raise ConfigError(f"backbone {name}: encode()['{m}_mask'] must be a bool tensor of shape {tuple(tokens.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")
    return enc


@METHODS.register("missing_robust")
class MissingRobust(MissingAwareMethod):
    """The backbone trained on randomly corrupted inputs, without reconstruction (the reference for LNLN/TCMR)."""

    def training_loss(self, batch: Batch, phase: str = "main") -> dict[str, Tensor]:
        noisy = self.corrupt(batch)
        out = self.backbone(noisy)
        losses = {"task": self.task_term(out.logits, noisy), **self.extra_losses(batch, noisy, out)}
        losses.update(self.backbone.auxiliary_losses(noisy, out))
        losses["loss"] = torch.stack(list(losses.values())).sum()
        return losses

    def extra_losses(self, clean: Batch, noisy: Batch, output: Output) -> dict[str, Tensor]:
        """Weighted losses a subclass adds to the task loss, from the complete batch, its corruption and the backbone's
        output on it (none here)."""
        return {}

    def logits(self, batch: Batch) -> Tensor:
        return self.backbone(batch).logits
