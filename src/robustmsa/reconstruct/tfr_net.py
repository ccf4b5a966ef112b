"""TFR-Net training (Yuan et al., ACM MM 2021): the task loss on randomly corrupted inputs plus feature reconstruction.

Per batch:

1. the batch is corrupted (random missing, see :mod:`.base`: the protocol every model of a sweep shares);
2. the backbone predicts from the corrupted batch (task loss); the generator maps the backbone's aligned sequences
   H_m (``Output.extras['aligned_<m>']``, B x L_m x ``backbone.aligned_dim``) through a self-attention stack over time
   (``layers`` pre-norm blocks, ``heads`` heads) and a linear map to the complete input features (B, L_m, D_m);
3. reconstruction loss, per modality m: the Smooth-L1 loss between the predicted and the clean features, averaged
   over the positions the corruption dropped (real positions whose features the corruption zeroed; positions
   already missing in the clean data have no target and are left out), weighted by ``w_<m>``.

Loss = task + sum_m w_m * rec_m (+ the backbone's auxiliary losses); the reconstruction terms start after
``warmup_epochs`` epochs of the task loss alone (MMSA: from the second epoch). The backbone is ``tfr_net``
(:mod:`robustmsa.models.tfr_net`) or any backbone that sets ``aligned_dim`` and returns those sequences (0 at padded
positions). Where features were dropped is never an input: the network sees zero vectors, as at test time. The
generator is used in training only; prediction is the backbone's.

Where this differs from the reference (MMSA's TFR-Net trainer), on purpose:

* Weights: MMSA's MOSI values (text 5, audio 2, vision 20) are the defaults. MMSA's reconstruction loss
  (``recloss_type='combine'``) also adds 5 x a central moment discrepancy divided by the number of masked feature
  values, a term thousands of times smaller than the Smooth-L1 term; it is left out.
* Missingness: the training corruption of this package (per sample and modality r ~ U(0, 1), a share of complete
  samples, redrawn every epoch) instead of MMSA's one fixed rate drawn once per data set.
* The generator attends over time. MMSA's "temporal" transformer before its linear generator is built with the fixed
  sequence length as its embedding width and, as called, attends along the batch axis (the sequence axis of its
  input is the batch), so a sample's reconstruction depends on the other samples of its batch and the model needs
  fixed-length inputs. Here sequences keep their own lengths and every sample is reconstructed from itself; one
  layer by default (MMSA: three) to keep training affordable on a CPU.
* The task loss is ``regression_loss`` (MSE by default, as every model of the missing-rate sweeps; MMSA: L1).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.errors import ConfigError
from robustmsa.models.attention import TransformerStack
from robustmsa.models.base import Backbone, Output
from robustmsa.reconstruct.base import MissingRobust, loss_weights
from robustmsa.reconstruct.corruption import missing_positions
from robustmsa.registry import METHODS


def dropped_positions(clean: Batch, noisy: Batch, modality: str) -> Tensor:
    """(B, L) bool: positions of ``modality`` missing in ``noisy`` (all-zero features) but present in ``clean``."""
    return missing_positions(noisy, modality) & ~missing_positions(clean, modality)


def masked_smooth_l1(prediction: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean Smooth-L1 loss over the features of the (B, L) bool ``mask`` positions of (B, L, D) tensors; 0 if none."""
    if not bool(mask.any()):
        return prediction.sum() * 0.0  # keeps the graph (every parameter gets a zero gradient)
    return F.smooth_l1_loss(prediction[mask], target[mask])


@METHODS.register("tfr_net")
class TFRNetTraining(MissingRobust):
    """TFR-Net's training: corrupted inputs, task loss and feature reconstruction of the dropped positions (see module doc)."""

    def __init__(
        self,
        backbone: Backbone,
        *,
        w_text: float = 5.0,
        w_audio: float = 2.0,
        w_vision: float = 20.0,
        warmup_epochs: int = 1,
        heads: int = 6,
        layers: int = 1,
        dropout: float = 0.2,
        **base: Any,
    ) -> None:
        super().__init__(backbone, **base)
        width = getattr(backbone, "aligned_dim", None)
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ConfigError(
                f"method tfr_net needs a backbone that sets aligned_dim and returns its aligned sequences Output.extras['aligned_<m>'] (e.g. 'tfr_net'), got {type(backbone).__name__}"
            )
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ConfigError(f"tfr_net warmup_epochs must be an integer >= 0, got {warmup_epochs!r}")
        # a modality of weight 0 is not reconstructed and gets no generator
        self.weights = {m: w for m, w in loss_weights("tfr_net", text=w_text, audio=w_audio, vision=w_vision).items() if w > 0}
        self.warmup_epochs = warmup_epochs
        self.temporal = nn.ModuleDict({m: TransformerStack(width, heads, layers, dropout) for m in self.weights})
        self.generate = nn.ModuleDict({m: nn.Linear(width, backbone.dims[m]) for m in self.weights})

    def reconstruct(self, noisy: Batch, output: Output, modality: str) -> Tensor:
        """The complete features (B, L_m, D_m) of ``modality`` predicted from ``output`` = ``backbone(noisy)``."""
        aligned, mask = output.extras.get(f"aligned_{modality}"), noisy.mask(modality)
        if not isinstance(aligned, Tensor) or tuple(aligned.shape) != (*mask.shape, self.generate[modality].in_features):
            got = tuple(aligned.shape) if isinstance(aligned, Tensor) else type(aligned).__name__
            raise ConfigError(f"backbone {type(self.backbone).__name__}: Output.extras['aligned_{modality}'] must have shape {(*mask.shape, self.generate[modality].in_features)}, got {got}")
        return self.generate[modality](self.temporal[modality](aligned, mask))

    def extra_losses(self, clean: Batch, noisy: Batch, output: Output) -> dict[str, Tensor]:
        """``reconstruction_<m>``: the weighted Smooth-L1 loss of each modality over its dropped positions (none
        during the warm-up epochs)."""
        if self.epoch < self.warmup_epochs:
            return {}
        return {
            f"reconstruction_{m}": weight * masked_smooth_l1(self.reconstruct(noisy, output, m), getattr(clean, m), dropped_positions(clean, noisy, m))
            for m, weight in self.weights.items()
        }
