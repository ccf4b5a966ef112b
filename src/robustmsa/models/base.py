"""The Backbone interface and small shared building blocks.

A backbone maps a :class:`~robustmsa.data.batch.Batch` to an :class:`Output`.
It knows nothing about debiasing or reconstruction; methods wrap it.
Constructors share one signature: ``Backbone(dims, task, **hyper_parameters)``
where ``dims`` maps modality name to feature width (from the data) and
``task`` is the :class:`~robustmsa.data.dataset.TaskSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

    def __init__(self, dims: dict[str, int], task: TaskSpec) -> None:
        super().__init__()
        missing = [m for m in self.modalities if m not in dims]
        if missing:
            raise ConfigError(f"backbone {type(self).__name__} needs modalities {list(self.modalities)}; the data has no {missing}")
        self.dims = dict(dims)
        self.task = task
        self.out_dim = task.out_dim

    def forward(self, batch: Batch) -> Output:  # pragma: no cover - abstract
        raise NotImplementedError

    def auxiliary_losses(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        """Extra weighted training losses of this model (name -> scalar)."""
        return {}


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over the time axis of (B, L, D) ``x`` using a (B, L) bool mask; all-masked rows give 0."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def mlp(in_dim: int, hidden: int, out_dim: int, dropout: float = 0.0, layers: int = 2) -> nn.Sequential:
    """A plain ReLU MLP with ``layers`` linear layers."""
    mods: list[nn.Module] = []
    width = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden
    mods.append(nn.Linear(width, out_dim))
    return nn.Sequential(*mods)


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
        lengths = mask.sum(dim=1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.rnn(packed)
        summary = torch.cat([h[-2], h[-1]], dim=-1) if self.rnn.bidirectional else h[-1]
        return self.dropout(summary)
