"""The Backbone interface and small shared building blocks.

A backbone maps a :class:`~robustmsa.data.batch.Batch` to an :class:`Output`.
It knows nothing about debiasing or reconstruction; methods wrap it.
Constructors share one signature: ``Backbone(dims, task, **hyper_parameters)``
where ``dims`` maps modality name to feature width (from the data) and
``task`` is the :class:`~robustmsa.data.dataset.TaskSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError


@dataclass
class Output:
    """What a backbone returns.

    * ``logits``: (B, out_dim); a regression score is ``logits[:, 0]``.
    * ``fused``: (B, H) fused multimodal representation.
    * ``modality``: name -> (B, H_m) per-modality representations, if any.
    * ``extras``: anything else a model's auxiliary losses need.
    """

    logits: Tensor
    fused: Tensor
    modality: dict[str, Tensor] = field(default_factory=dict)
    extras: dict[str, Tensor] = field(default_factory=dict)


class Backbone(nn.Module):
    """Base class of all backbones.

    Subclasses set ``modalities`` (the inputs they need), build their layers in
    ``__init__(dims, task, **hparams)`` and implement :meth:`forward`. Models
    with auxiliary objectives (MISA, Self-MM, ...) override
    :meth:`auxiliary_losses`; the training path adds them to the task loss.
    """

    modalities: tuple[str, ...] = ("text", "audio", "vision")
    #: True when training keeps per-sample state outside the parameters (Self-MM's generated labels): the processes
    #: of a run on several devices would each hold a different part of it, so such a model trains on one device.
    per_sample_state: bool = False

    def __init__(self, dims: dict[str, int], task: TaskSpec) -> None:
        super().__init__()
        missing = [m for m in self.modalities if m not in dims]
        if missing:
            raise ConfigError(f"backbone {type(self).__name__} needs modalities {list(self.modalities)}; the data has no {missing}")
        self.dims = dict(dims)
        self.task = task
        self.out_dim = task.out_dim
        self.register_forward_hook(_check_output)

    def forward(self, batch: Batch) -> Output:  # pragma: no cover - abstract
        raise NotImplementedError

    def auxiliary_losses(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        """Extra weighted training losses of this model (name -> scalar)."""
        return {}

    def required_extras(self, split: str) -> tuple[str, ...]:
        """``Sample.extras`` keys every sample of ``split`` must carry for this backbone (e.g. the unimodal labels the
        multi-task backbones train on); checked with the method's by :func:`robustmsa.method.check_required_extras`
        before any training. Default: none."""
        return ()

    #: How a user provides the extras of :meth:`required_extras` (completes the error message).
    extras_hint: str = ""


class ComposableBackbone(Protocol):
    """What LNLN and TCMR need beyond :class:`Backbone`: a backbone split into encoding and fusion, so that they can
    replace the text tokens before fusion (the built-in one is ``text_centric``).

    * ``dim``: the token width.
    * ``encode(batch) -> dict``: for m in text, audio, vision, ``{m}_tokens`` (B, L_m, dim) and a bool mask
      ``{m}_mask`` (B, L_m) (True at real positions).
    * ``fuse(text_tokens, audio_tokens, vision_tokens, masks) -> Output``: ``masks`` keyed text / audio / vision;
      ``forward(batch)`` must equal ``fuse`` of ``encode(batch)``.
    * TCMR also needs ``text_encoder``: a module called as ``text_encoder(features (B, L, D_text), mask (B, L))`` that
      returns (B, L, dim); it is copied into TCMR's text teachers.
    """

    dim: int

    def encode(self, batch: Batch) -> dict[str, Tensor]: ...

    def fuse(self, text_tokens: Tensor, audio_tokens: Tensor, vision_tokens: Tensor, masks: dict[str, Tensor]) -> Output: ...


def _check_output(module: Backbone, args: tuple[object, ...], output: object) -> None:
    """Refuse a ``forward`` result that is not an :class:`Output` with (B, out_dim) logits.

    A wrong shape would otherwise broadcast silently inside a method (e.g. (B,) against (B, 1) gives (B, B))."""
    name = type(module).__name__
    if not isinstance(output, Output):
        raise ConfigError(f"backbone {name}: forward returned a {type(output).__name__}; expected a robustmsa.models.base.Output")
    batch = args[0] if args else None
    expected = (len(batch), module.out_dim) if isinstance(batch, Batch) else (output.logits.shape[0], module.out_dim)
    if tuple(output.logits.shape) != expected:
        raise ConfigError(f"backbone {name}: forward returned logits of shape {tuple(output.logits.shape)}; expected (batch size, out_dim) = {expected} for this {module.task.kind} task")


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over the time axis of (B, L, D) ``x`` using a (B, L) bool mask; all-masked rows give 0."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def masked_max(x: Tensor, mask: Tensor) -> Tensor:
    """Max over the time axis of (B, L, D) ``x`` at the real positions of the (B, L) mask; rows without any give 0."""
    filled = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
    return torch.where(mask.any(dim=1, keepdim=True), filled, torch.zeros_like(filled))


def masked_mse(prediction: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean of (prediction - target)^2 over the real steps ((B, L) bool ``mask``) and features of (B, L, D) inputs.

    Padded steps are replaced before the difference, so whatever they hold (even NaN) reaches neither the value nor
    the gradient; no real step at all gives 0."""
    keep = mask.unsqueeze(-1)
    diff = prediction.masked_fill(~keep, 0.0) - target.masked_fill(~keep, 0.0)
    count = mask.sum() * prediction.shape[-1]
    return diff.pow(2).sum() / count.clamp_min(1)


def mlp(in_dim: int, hidden: int, out_dim: int, dropout: float = 0.0, layers: int = 2) -> nn.Sequential:
    """A plain ReLU MLP with ``layers`` linear layers."""
    mods: list[nn.Module] = []
    width = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden
    mods.append(nn.Linear(width, out_dim))
    return nn.Sequential(*mods)


def run_packed(rnn: nn.RNNBase, x: Tensor, mask: Tensor, state: object = None) -> tuple[Tensor, object]:
    """A batch-first ``nn.LSTM`` / ``nn.GRU`` over each sample's true length ((B, L) bool ``mask``, real steps first),
    from ``state`` (None: zeros): its outputs (B, L, H), 0 at padded steps, and its final state. Padded inputs are
    zeroed first, so whatever the padding holds reaches nothing; an empty sequence reads one zero frame (its outputs
    are masked, its final state is that of the zero frame)."""
    keep = mask.unsqueeze(-1)
    packed = nn.utils.rnn.pack_padded_sequence(x.masked_fill(~keep, 0.0), mask.sum(dim=1).clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
    out, final = rnn(packed, state)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out.masked_fill(~keep, 0.0), final


class SequenceEncoder(nn.Module):
    """Summarise a padded (B, L, D) sequence into (B, H).

    ``kind='lstm'``: a (bi)LSTM over the packed true lengths, last hidden
    states; ``kind='mean'``: masked mean then a linear projection.
    """

    def __init__(self, in_dim: int, hidden: int, kind: str = "lstm", bidirectional: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if kind not in ("lstm", "mean"):
            raise ConfigError(f"sequence encoder kind must be 'lstm' or 'mean', got '{kind}'")
        self.kind = kind
        self.out_dim = hidden
        if kind == "lstm":
            self.rnn = nn.LSTM(in_dim, hidden // 2 if bidirectional else hidden, batch_first=True, bidirectional=bidirectional)
        else:
            self.proj = nn.Linear(in_dim, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        if self.kind == "mean":
            return self.dropout(torch.relu(self.proj(masked_mean(x, mask))))
        return self.dropout(self.states(x, mask)[1])

    def states(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``kind='lstm'`` only: the per-step outputs (B, L, H) of the (bi)LSTM (both directions concatenated; zero at
        padded steps) and the summary (B, H) that :meth:`forward` returns, before the dropout (neither is dropped)."""
        if self.kind != "lstm":
            raise ConfigError("per-step states need a sequence encoder of kind 'lstm'")
        out, (h, _) = run_packed(self.rnn, x, mask)  # an empty sequence: the state after one zero frame
        return out, torch.cat([h[-2], h[-1]], dim=-1) if self.rnn.bidirectional else h[-1]
