"""MISA: modality-invariant and -specific representations (Hazarika et al., 2020).

Each modality's utterance vector u_m (a bi-LSTM summary of its sequence; for
text, of the precomputed token features instead of fine-tuning BERT) is
projected to ``hidden`` and split into a shared (invariant) part
s_m = shared(u_m), one encoder for all modalities, and a private (specific)
part p_m = private_m(u_m). The six vectors form a length-6 sequence through a
one-layer transformer; their concatenation (B, 6 hidden) goes to the fusion
MLP. Auxiliary losses (weights are hyper-parameters):

* similarity: central moment discrepancy (CMD, ``cmd_moments`` moments)
  between the shared parts of each modality pair, averaged;
* difference: soft orthogonality ||P^T S||_F^2 of centred, row-normalised
  private/shared pairs and of private pairs (summed; the row norms are not
  detached, unlike the reference code, see :func:`soft_orthogonality`);
* reconstruction: MSE between u_m and a decoder of p_m + s_m, averaged.

Simplification: one bi-LSTM per modality instead of the two-layer sLSTM.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.models.attention import TransformerStack
from robustmsa.models.base import Backbone, Output, SequenceEncoder
from robustmsa.registry import BACKBONES


def cmd(x1: Tensor, x2: Tensor, moments: int = 5, eps: float = 1e-12) -> Tensor:
    """Central moment discrepancy between two (B, H) samples (MISA's similarity loss)."""
    m1, m2 = x1.mean(0), x2.mean(0)
    c1, c2 = x1 - m1, x2 - m2
    total = ((m1 - m2).pow(2).sum() + eps).sqrt()
    for k in range(2, moments + 1):
        total = total + ((c1.pow(k).mean(0) - c2.pow(k).mean(0)).pow(2).sum() + eps).sqrt()
    return total


def soft_orthogonality(x1: Tensor, x2: Tensor) -> Tensor:
    """MISA's difference loss: mean of (X1^T X2)^2 over centred, L2-row-normalised (B, H) inputs.

    The gradient flows through the row norms. The reference code detaches
    them, which turns the loss into a force that shrinks the centred vectors
    (and grows as they shrink): on the generated corpus it collapsed the
    subspaces to constants and the model to a constant prediction at lr 1e-3.
    """
    a = x1 - x1.mean(0, keepdim=True)
    b = x2 - x2.mean(0, keepdim=True)
    a = a / (a.norm(dim=1, keepdim=True) + 1e-6)
    b = b / (b.norm(dim=1, keepdim=True) + 1e-6)
    return (a.t() @ b).pow(2).mean()


@BACKBONES.register("misa")
class MISA(Backbone):
    def __init__(
        self,
        dims: dict[str, int],
        task: TaskSpec,
        hidden: int = 32,
        text_hidden: int = 64,
        av_hidden: int = 16,
        heads: int = 2,
        dropout: float = 0.1,
        sim_weight: float = 1.0,
        diff_weight: float = 0.3,
        recon_weight: float = 1.0,
        cmd_moments: int = 5,
    ) -> None:
        super().__init__(dims, task)
        if isinstance(cmd_moments, bool) or not isinstance(cmd_moments, int) or cmd_moments < 1:
            raise ConfigError(f"misa cmd_moments must be an integer >= 1 (the number of central moments CMD compares), got {cmd_moments!r}")
        for name, value in (("sim_weight", sim_weight), ("diff_weight", diff_weight), ("recon_weight", recon_weight)):
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"misa {name} must be a finite number >= 0, got {value!r}")
        widths = {"text": text_hidden, "audio": av_hidden, "vision": av_hidden}
        self.encoders = nn.ModuleDict({m: SequenceEncoder(dims[m], widths[m], kind="lstm", bidirectional=True) for m in self.modalities})
        self.project = nn.ModuleDict({m: nn.Sequential(nn.Linear(widths[m], hidden), nn.ReLU(), nn.LayerNorm(hidden)) for m in self.modalities})
        self.private = nn.ModuleDict({m: nn.Sequential(nn.Linear(hidden, hidden), nn.Sigmoid()) for m in self.modalities})
        self.shared = nn.Sequential(nn.Linear(hidden, hidden), nn.Sigmoid())
        self.recon = nn.ModuleDict({m: nn.Linear(hidden, hidden) for m in self.modalities})
        self.transformer = TransformerStack(hidden, heads, 1, dropout)
        self.fusion = nn.Sequential(nn.Linear(6 * hidden, 3 * hidden), nn.Dropout(dropout), nn.ReLU())
        self.head = nn.Linear(3 * hidden, self.out_dim)
        self.weights = {"sim": sim_weight, "diff": diff_weight, "recon": recon_weight}
        self.cmd_moments = cmd_moments

    def forward(self, batch: Batch) -> Output:
        utt = {m: self.project[m](self.encoders[m](getattr(batch, m), batch.mask(m))) for m in self.modalities}
        private = {m: self.private[m](u) for m, u in utt.items()}
        shared = {m: self.shared(u) for m, u in utt.items()}
        tokens = torch.stack([private[m] for m in self.modalities] + [shared[m] for m in self.modalities], dim=1)  # (B, 6, hidden)
        h = self.transformer(tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device))
        fused = self.fusion(h.flatten(1))
        extras = {}
        for m in self.modalities:
            extras[f"utt_{m}"] = utt[m]
            extras[f"private_{m}"] = private[m]
            extras[f"shared_{m}"] = shared[m]
            extras[f"recon_{m}"] = self.recon[m](private[m] + shared[m])
        return Output(logits=self.head(fused), fused=fused, modality=utt, extras=extras)

    def auxiliary_losses(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        e, mods = output.extras, self.modalities
        pairs = [(a, b) for i, a in enumerate(mods) for b in mods[i + 1 :]]
        sim = sum(cmd(e[f"shared_{a}"], e[f"shared_{b}"], self.cmd_moments) for a, b in pairs) / len(pairs)
        diff = sum(soft_orthogonality(e[f"private_{m}"], e[f"shared_{m}"]) for m in mods)
        diff = diff + sum(soft_orthogonality(e[f"private_{a}"], e[f"private_{b}"]) for a, b in pairs)
        recon = sum(F.mse_loss(e[f"recon_{m}"], e[f"utt_{m}"]) for m in mods) / len(mods)
        values = {"sim": sim, "diff": diff, "recon": recon}
        return {f"misa_{k}": self.weights[k] * v for k, v in values.items()}
