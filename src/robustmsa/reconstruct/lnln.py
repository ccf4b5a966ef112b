"""LNLN (Zhang et al., 2024, "Towards Robust Multimodal Sentiment Analysis with Incomplete Data").

On a composable text-centric backbone (``encode`` / ``fuse``), per batch:

1. the training batch is corrupted (random missing, see :mod:`.base`) and encoded:
   H_t (B, Lt, d) from the text, audio/vision tokens;
2. dominant-modality correction: a completeness estimate w = sigmoid(MLP(mean H_t))
   (B,), supervised with ``1 - missing_rate_text``; a proxy H_p (B, Lt, d)
   generated from audio and vision; the corrected text H = w * H_t + (1 - w) * H_p
   (``blend='missing'``: at the missing text positions only, see :func:`.base.blend_text`);
3. text-guided fusion of (H, audio, vision) by the backbone's ``fuse``;
4. auxiliary reconstruction, and an adversarial term on the proxy: a
   discriminator tells the clean text representation from H_p while the
   generator, through a gradient reversal layer, learns to fool it (one
   optimiser). ``reconstruction='frames'`` (default): the clean audio and vision
   frames; ``'latent'``: the encoder tokens of the complete text, audio and
   vision, as the authors' released code does (:class:`.proxy.LatentReconstructor`).

Loss = w_task * task + w_completeness * MSE(w, 1 - r_text) + w_adversarial * adv + w_reconstruction * rec.

Where this differs from the authors' released code (Haoyu-ha/LNLN), on purpose or by the issue's protocol:

* Default loss weights: completeness 0.1 and adversarial 0.1 here; the authors' MOSI config uses 0.9 and 0.8
  (reconstruction 0.1, task 1.0 in both). The weights are parameters; ``configs/missing/search/lnln.yaml``
  searches them on validation data (range 0.01 to 1, which holds the authors' values).
* Training-time missingness is the protocol every model of a sweep shares (:mod:`.base`): a share
  ``complete_share`` (0.1) of the samples is kept complete in all modalities. The authors keep half of the
  samples complete, drawn for each modality separately (``complete_share=0.5, complete_per='modality'``,
  ``configs/missing/synthetic_authors_protocol.yaml``).
* The discriminator sees the proxy H_p (through the gradient reversal); the authors' sees the corrected text H
  (in which only the proxy part is reversed) against the complete text.
* Completeness is estimated by an MLP on the mean text token (the authors: a small transformer), and the text
  arrives as features: with contextual features a missing token is not really missing, so sweeps need static
  word features (:func:`robustmsa.evaluation.missing_protocol.check_text_features`); the authors corrupt BERT's
  input ids and fine-tune BERT inside the model.
* The text keeps one token per word (see :mod:`robustmsa.models.text_centric`); the authors compress it, like
  audio and vision, into 8 learned tokens before the completeness check, the proxy and the fusion.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from robustmsa.data.batch import Batch
from robustmsa.errors import ConfigError
from robustmsa.models.base import Backbone, Output, masked_mean, mlp
from robustmsa.reconstruct.base import MissingAwareMethod, blend_text, check_blend, encode_checked, loss_weights, token_dim, with_target
from robustmsa.reconstruct.proxy import FrameReconstructor, GradReverse, LatentReconstructor, ProxyGenerator
from robustmsa.registry import METHODS


@METHODS.register("lnln")
class LNLN(MissingAwareMethod):
    """Language-dominated noise-resistant learning network (see module doc)."""

    def __init__(
        self,
        backbone: Backbone,
        *,
        w_task: float = 1.0,
        w_completeness: float = 0.1,
        w_adversarial: float = 0.1,
        w_reconstruction: float = 0.1,
        heads: int = 4,
        proxy_layers: int = 1,
        proxy_query: str = "position",
        blend: str = "sample",
        reconstruction: str = "frames",
        dropout: float = 0.1,
        **base: Any,
    ) -> None:
        super().__init__(backbone, **base)
        dim = token_dim(backbone)
        self.blend = check_blend(blend, "lnln")
        self.weights = loss_weights("lnln", task=w_task, completeness=w_completeness, adversarial=w_adversarial, reconstruction=w_reconstruction)
        self.completeness = mlp(dim, dim, 1, dropout)
        self.proxy = ProxyGenerator(dim, heads, proxy_layers, dropout, kind="joint", query=proxy_query)
        self.discriminator = mlp(dim, dim, 1, dropout)
        if reconstruction not in ("frames", "latent"):
            raise ConfigError(f"lnln reconstruction must be 'frames' or 'latent', got '{reconstruction}'")
        self.reconstruction = reconstruction
        if reconstruction == "frames":
            self.reconstructor: FrameReconstructor | LatentReconstructor = FrameReconstructor(backbone.dims, dim, heads, proxy_layers, dropout)
        else:
            self.reconstructor = LatentReconstructor(dim, heads, proxy_layers, dropout)

    def _completeness(self, enc: dict[str, Tensor]) -> Tensor:
        return torch.sigmoid(self.completeness(masked_mean(enc["text_tokens"], enc["text_mask"])))[:, 0]

    def represent(self, batch: Batch) -> tuple[dict[str, Tensor], Output, Tensor, Tensor]:
        """(encoded tokens, fused output, completeness w (B,), proxy H_p (B, Lt, d)) of ``batch``."""
        enc = encode_checked(self.backbone, batch)
        mask = enc["text_mask"]
        w = self._completeness(enc)
        h_p, _ = self.proxy(mask, enc)
        h = blend_text(batch, enc["text_tokens"], h_p, w, self.blend)
        out = self.backbone.fuse(h, enc["audio_tokens"], enc["vision_tokens"], {m: enc[f"{m}_mask"] for m in ("text", "audio", "vision")})
        return enc, out, w, h_p

    def logits(self, batch: Batch) -> Tensor:
        return self.represent(batch)[1].logits

    def estimates(self, batch: Batch) -> dict[str, Tensor]:
        """The completeness w against 1 - the text's missing rate (when the batch was corrupted by the protocol)."""
        rate = batch.extras.get("missing_rate_text")
        return with_target("completeness", self._completeness(encode_checked(self.backbone, batch)), None if rate is None else 1.0 - rate)

    def training_loss(self, batch: Batch, phase: str = "main") -> dict[str, Tensor]:
        noisy = self.corrupt(batch)
        enc, out, w, h_p = self.represent(noisy)
        mask = enc["text_mask"]
        with torch.no_grad():
            clean = encode_checked(self.backbone, batch)
        real = self.discriminator(masked_mean(clean["text_tokens"], mask))
        fake = self.discriminator(masked_mean(GradReverse.apply(h_p), mask))
        adversarial = 0.5 * (F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
        terms = {
            "task": self.task_term(out.logits, noisy),
            "completeness": F.mse_loss(w, 1.0 - noisy.extras["missing_rate_text"].to(w)),
            "adversarial": adversarial,
            "reconstruction": self.reconstructor(enc, batch if self.reconstruction == "frames" else clean),
        }
        losses = {name: self.weights[name] * value for name, value in terms.items()}
        losses["loss"] = torch.stack(list(losses.values())).sum()
        return losses
