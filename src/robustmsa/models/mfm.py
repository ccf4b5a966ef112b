"""MFM: the Multimodal Factorization Model (Tsai, Liang, Zadeh, Morency and Salakhutdinov, ICLR 2019, "Learning
Factorized Multimodal Representations").

The latent space is factorised into a multimodal discriminative factor Z_y, shared by all modalities, and one
modality-specific generative factor Z_a(m) per modality m, with independent standard Gaussian priors
P(Z) = P(Z_y) prod_m P(Z_a(m)). Each latent goes through a deterministic network to its factor, and the factors
generate the label and the data:

* inference (encoders): Z_y = E_y(X_text, X_audio, X_vision), a Memory Fusion Network over all modalities
  (:class:`~robustmsa.models.mfn.MFN`, reused through :meth:`~robustmsa.models.mfn.MemoryRecurrence.run`: audio and vision
  resampled onto the text positions as MFN does, then a linear layer on its final [h_t; h_a; h_v; u]);
  Z_a(m) = E_a(m)(X_m), an LSTM over modality m alone (last hidden state of its true length) and a linear layer;
* factors: F_y = D_y(Z_y) and F_a(m) = D_a(m)(Z_a(m)), each Linear-ReLU-Dropout-Linear-ReLU;
* discriminative head: Y_hat = D(F_y), a two-layer MLP (``Output.logits``);
* generative side: X_hat_m = F_m(F_a(m), F_y), an LSTM decoder per modality, see below.

The paper trains them with a Wasserstein-autoencoder objective,
min E[ sum_m c_X(X_m, X_hat_m) + c_Y(Y, Y_hat) ] + lambda MMD(Q_Z, P_Z), where Q_Z is the aggregate posterior of
the latents and P_Z the prior. Here c_Y is the training method's task loss (L1 for regression, as MMSA's trainer, or
cross-entropy), c_X a squared error, and :meth:`MFM.auxiliary_losses` returns, in training mode only (in eval mode
nothing), each term already weighted:

* ``mfm_recon_text`` / ``mfm_recon_audio`` / ``mfm_recon_vision``: ``<m>_recon_weight`` times the mean squared error
  between X_hat_m and X_m over the real time steps and feature dimensions of the batch (:func:`masked_mse`: padding
  is excluded, a batch whose sequences of m are all empty gives 0; without padding it equals MMSA's ``F.mse_loss``);
* ``mfm_mmd``: ``mmd_weight`` (lambda) times sum over the four latents Z_y, Z_a(text), Z_a(audio), Z_a(vision) of the
  unbiased estimate of MMD^2 between the batch's codes and as many draws from N(0, I) (:func:`mmd`), as MMSA / the
  authors' code sum one MMD per factor.

What is reconstructed for unaligned inputs. Every real time step of each modality on its *own* time axis, with its
true length: the decoder of modality m is an LSTM (run over the packed true lengths) whose input at step t is
[F_a(m); F_y; t / (n_m - 1)], the factors and the relative position of the step in the sample's sequence of n_m steps
(0 at the first, 1 at the last), and a linear layer maps its hidden state to the D_m features. Why: (1) the paper's
decoders generate whole sequences; reconstructing only a summary (a mean) would let F_a(m) ignore the dynamics the
generative factors are meant to hold; (2) reconstructing on the text axis instead would need audio / vision
resampled onto the words, which (for MMSA's unaligned pickles, 375-500 frames onto 50 words) throws away most frames,
so the target would not be the data; (3) the relative position gives sequences of different lengths a common time
frame (the same factors describe a contour over the whole utterance whatever its frame rate) and tells the decoder
how far it is from the end, which a left-to-right LSTM cannot otherwise know; the recurrence keeps consecutive steps
coherent. The LSTM reads only steps <= t and the packing stops at n_m, so a sample's reconstruction does not depend on
the padding or on the other samples; padded steps of the reconstructions are 0. An empty sequence (n_m = 0) has
nothing to reconstruct and adds nothing to the loss; its E_a(m) reads one zero frame
(:class:`~robustmsa.models.base.SequenceEncoder`).

Outputs: ``Output.fused`` = F_y; ``Output.modality``: m -> F_a(m); ``Output.extras``: ``z_y`` (B, zy_dim) and
``z_<m>`` (B, za_dim) the latent codes, ``recon_<m>`` (B, L_m, D_m) the reconstructions (zero at padded steps) and
``dman_attention`` (B, Lt, 2 (Ht + Ha + Hv)) the MFN encoder's attention weights.

Deviations from the paper and from MMSA's implementation (``MMSA/models/singleTask/MFM.py``), each on purpose:

* Text: precomputed token features (BERT / GloVe / MiniLM) instead of the paper's GloVe words or a fine-tuned BERT;
  the text decoder reconstructs these features.
* Unaligned inputs are accepted (MMSA runs MFM on word-aligned data only): E_y resamples audio and vision onto the
  text positions like :mod:`robustmsa.models.mfn`; E_a(m) and the decoders work on each modality's own time axis.
* Padding: MMSA's encoders read and its decoders reconstruct the padded length (its MSE includes the padding and its
  LSTMs run over it); here every encoder stops at each sample's true length and padding never enters a loss.
* Decoder: MMSA's LSTM cell reads [F_y; F_a(m)] at the first step and its own previous hidden state afterwards; here
  the factors (and the relative position, which MMSA's decoder has no need of since all its sequences have one
  length) are the input at every step, so the decoder is one packed ``nn.LSTM`` call, and its width
  ``decoder_hidden`` is a free hyper-parameter instead of fy + fa.
* MMD: MMSA (like the authors' code, github pliang279/factorized) uses a biased (V-statistic) estimate with a
  Gaussian kernel exp(-||x - y||^2 / d^2); with d = 80 its bandwidth d^2 = 6400 is 40 times the typical squared
  distance between two prior draws (2 d), so the kernel is near 1 for every pair and the term is tiny (MMSA weights
  it by 100 on MOSI, 10 on MOSEI). Here the kernel scale is C = 2 d, that typical distance (as the WAE paper,
  Tolstikhin et al. 2018, sets it): inverse multiquadratic C / (C + ||x - y||^2) (WAE's choice; heavy tails keep a
  gradient for codes far from the prior) or Gaussian exp(-||x - y||^2 / C) with ``kernel``, and the estimate is
  unbiased (no self-pairs: two samples of one distribution give 0 in expectation; it can be slightly negative). A
  batch of one sample gives 0 (no pairs).
* The MMD is summed over the latents one by one (as the authors' code and MMSA do), which matches each latent's
  marginal to N(0, I) but, unlike an MMD on the joint [Z_y; Z_a(text); ...], does not push them to be independent.
* Shared widths: one ``za_dim`` and one ``fa_dim`` for the three modalities (MMSA sets them per modality) and one
  ``factor_dropout`` for D_y and the D_a(m) (MMSA: one per factor), to keep the configuration small.
* Not implemented: the paper's inference with missing modalities (reconstructing a missing modality from the
  others) and its analysis of what each factor contributes to the generated data; MMSA implements neither (its
  ``missing_loss`` is 0).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.models.align import align_to_text
from robustmsa.models.base import Backbone, Output, SequenceEncoder, masked_mse, mlp, run_packed
from robustmsa.models.mfn import MFN
from robustmsa.registry import BACKBONES

KERNELS = ("imq", "rbf")


def _kernel(a: Tensor, b: Tensor, kernel: str, scale: float) -> Tensor:
    """k(a_i, b_j) for (n, d) ``a`` and (m, d) ``b`` -> (n, m); ``scale`` is C in C / (C + r^2) or exp(-r^2 / C)."""
    sq = (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(dim=-1)  # exact differences: no sqrt, a finite gradient at 0
    return scale / (scale + sq) if kernel == "imq" else torch.exp(-sq / scale)


def mmd(x: Tensor, y: Tensor, kernel: str = "imq", scale: float | None = None) -> Tensor:
    """Unbiased estimate of the squared maximum mean discrepancy between the samples (n, d) ``x`` and (m, d) ``y``.

    MMD^2_u = sum_{i != j} k(x_i, x_j) / (n (n - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1)) - 2 sum_{i, j} k(x_i, y_j) / (n m)
    with the inverse multiquadratic (``imq``) or Gaussian (``rbf``) kernel of scale C (default 2 d, the expected
    squared distance between two draws of N(0, I_d)). Its expectation is 0 when both samples come from one
    distribution (it can then be slightly negative); with n < 2 or m < 2 there are no within-sample pairs and it is 0.
    """
    if kernel not in KERNELS:
        raise ConfigError(f"mmd kernel must be one of {list(KERNELS)}, got '{kernel}'")
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        return x.new_zeros(())
    c = float(scale if scale is not None else 2.0 * x.shape[1])
    kxx, kyy, kxy = _kernel(x, x, kernel, c), _kernel(y, y, kernel, c), _kernel(x, y, kernel, c)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return within_x + within_y - 2.0 * kxy.mean()


class SequenceDecoder(nn.Module):
    """F_m: an LSTM that reads [factors; relative position of the step] at every step, then a linear layer to D_m."""

    def __init__(self, factor_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.rnn = nn.LSTM(factor_dim + 1, hidden, batch_first=True)
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, factors: Tensor, mask: Tensor) -> Tensor:
        """(B, F) factors and the (B, L) bool mask of the sequence to rebuild (real steps first) -> (B, L, D), 0 at padding."""
        size, steps = mask.shape
        lengths = mask.sum(dim=1)
        if steps == 0:
            return factors.new_zeros(size, 0, self.out.out_features)
        t = torch.arange(steps, device=factors.device, dtype=factors.dtype).unsqueeze(0)
        position = t / (lengths.to(factors.dtype) - 1).clamp_min(1.0).unsqueeze(1)  # (B, L): 0 at the first, 1 at the last step
        inputs = torch.cat([factors.unsqueeze(1).expand(-1, steps, -1), position.unsqueeze(-1)], dim=-1)
        hidden, _ = run_packed(self.rnn, inputs, mask)
        return self.out(hidden).masked_fill(~mask.unsqueeze(-1), 0.0)


def _factor_net(in_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    """D_y / D_a(m): Linear-ReLU-Dropout-Linear-ReLU (as MMSA's zy_to_fy and z*_to_f*)."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(out_dim, out_dim), nn.ReLU())


@BACKBONES.register("mfm")
class MFM(Backbone):
    def __init__(
        self,
        dims: dict[str, int],
        task: TaskSpec,
        text_hidden: int = 64,
        audio_hidden: int = 16,
        vision_hidden: int = 32,
        mem_dim: int = 64,
        attn_hidden: int = 64,
        mem_hidden: int = 64,
        gate_hidden: int = 64,
        zy_dim: int = 32,
        za_dim: int = 32,
        fy_dim: int = 32,
        fa_dim: int = 16,
        decoder_hidden: int = 32,
        hidden: int = 64,
        dropout: float = 0.1,
        factor_dropout: float = 0.1,
        mmd_weight: float = 0.1,
        text_recon_weight: float = 1.0,
        audio_recon_weight: float = 1.0,
        vision_recon_weight: float = 1.0,
        kernel: str = "imq",
    ) -> None:
        super().__init__(dims, task)
        widths = {"text_hidden": text_hidden, "audio_hidden": audio_hidden, "vision_hidden": vision_hidden, "mem_dim": mem_dim, "attn_hidden": attn_hidden, "mem_hidden": mem_hidden}
        widths |= {"gate_hidden": gate_hidden, "zy_dim": zy_dim, "za_dim": za_dim, "fy_dim": fy_dim, "fa_dim": fa_dim, "decoder_hidden": decoder_hidden, "hidden": hidden}
        for name, value in widths.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"mfm {name} must be a positive integer, got {value!r}")
        for name, value in (("dropout", dropout), ("factor_dropout", factor_dropout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(f"mfm {name} must be a number in [0, 1), got {value!r}")
        weights = {"mmd_weight": mmd_weight, "text_recon_weight": text_recon_weight, "audio_recon_weight": audio_recon_weight, "vision_recon_weight": vision_recon_weight}
        for name, value in weights.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"mfm {name} must be a finite number >= 0, got {value!r}")
        if kernel not in KERNELS:
            raise ConfigError(f"mfm kernel must be one of {list(KERNELS)}, got {kernel!r}")
        # E_y: the MFN recurrence (System of LSTMs, DMAN, gated memory); its output MLP is not used
        encoder = {"text_hidden": text_hidden, "audio_hidden": audio_hidden, "vision_hidden": vision_hidden, "mem_dim": mem_dim}
        self.mfn = MFN(dims, task, **encoder, attn_hidden=attn_hidden, mem_hidden=mem_hidden, gate_hidden=gate_hidden, dropout=dropout)
        del self.mfn.head
        self.to_zy = nn.Linear(text_hidden + audio_hidden + vision_hidden + mem_dim, zy_dim)
        # E_a(m): an LSTM over the modality's own sequence, then a linear layer (the codes live on all of R^za_dim)
        self.encoders = nn.ModuleDict({m: SequenceEncoder(dims[m], za_dim, kind="lstm") for m in self.modalities})
        self.to_za = nn.ModuleDict({m: nn.Linear(za_dim, za_dim) for m in self.modalities})
        self.factor_y = _factor_net(zy_dim, fy_dim, factor_dropout)  # D_y
        self.factor_a = nn.ModuleDict({m: _factor_net(za_dim, fa_dim, factor_dropout) for m in self.modalities})  # D_a(m)
        self.decoders = nn.ModuleDict({m: SequenceDecoder(fa_dim + fy_dim, decoder_hidden, dims[m]) for m in self.modalities})  # F_m
        self.head = mlp(fy_dim, hidden, self.out_dim, dropout)  # D
        self.mmd_weight = float(mmd_weight)
        self.recon_weights = {"text": float(text_recon_weight), "audio": float(audio_recon_weight), "vision": float(vision_recon_weight)}
        self.kernel = kernel

    def forward(self, batch: Batch) -> Output:
        inputs = {m: batch.text if m == "text" else align_to_text(batch, m) for m in self.modalities}  # (B, Lt, D_m)
        h, _, memory, traces = self.mfn.run(inputs, batch.mask("text"))
        z_y = self.to_zy(torch.cat([h[m] for m in self.modalities] + [memory], dim=-1))
        z_a = {m: self.to_za[m](self.encoders[m](getattr(batch, m), batch.mask(m))) for m in self.modalities}
        f_y = self.factor_y(z_y)
        f_a = {m: self.factor_a[m](z_a[m]) for m in self.modalities}
        extras = {"z_y": z_y, **{f"z_{m}": z_a[m] for m in self.modalities}}
        for m in self.modalities:
            extras[f"recon_{m}"] = self.decoders[m](torch.cat([f_a[m], f_y], dim=-1), batch.mask(m))
        extras["dman_attention"] = traces["dman_attention"]
        return Output(logits=self.head(f_y), fused=f_y, modality=f_a, extras=extras)

    def auxiliary_losses(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        if not self.training:
            return {}
        e = output.extras
        losses = {f"mfm_recon_{m}": self.recon_weights[m] * masked_mse(e[f"recon_{m}"], getattr(batch, m), batch.mask(m)) for m in self.modalities}
        codes = [e["z_y"]] + [e[f"z_{m}"] for m in self.modalities]
        losses["mfm_mmd"] = self.mmd_weight * sum((mmd(z, torch.randn_like(z), self.kernel) for z in codes), e["z_y"].new_zeros(()))
        return losses
