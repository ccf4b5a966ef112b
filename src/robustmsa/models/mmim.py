"""MMIM: MultiModal InfoMax, hierarchical mutual-information maximisation (Han, Chen and Poria, EMNLP 2021).

Architecture: unimodal summaries h_t (text: an LSTM, or a masked mean, over the precomputed token features instead of
a fine-tuned BERT's [CLS] vector), h_a and h_v (an LSTM over the sequence, then a linear layer), and a fusion
network over [h_t; h_a; h_v] (dropout, two tanh layers) whose second layer is the fused representation Z; a linear
head on Z gives the prediction. Two mutual-information (MI) objectives, returned by :meth:`MMIM.auxiliary_losses`
in training mode only (in eval mode it returns nothing):

* input level, between modality pairs x -> y (text -> audio, text -> vision; vision -> audio with ``add_va``, the
  paper's ablation): the Barber-Agakov lower bound I(X; Y) >= H(Y) + E[log q(y | x)] with a Gaussian variational
  q(y | x) = N(mu(x), diag(exp(logvar(x)))), mu and logvar two-layer MLPs (:class:`GaussianEstimator`);
* fusion level: contrastive predictive coding between Z and each h_m: a linear map predicts h_m from Z and InfoNCE
  over the batch scores every prediction against every sample's h_m by cosine similarity (:func:`info_nce`); the
  loss is summed over the three modalities.

Training. The paper alternates two stages: stage 1 maximises the log-likelihood of the estimators (only their
parameters, on the current features), stage 2 minimises task - alpha * CPC - beta * BA with the estimators fixed.
The training loop here has one optimiser and sums the returned terms into one loss, so each step holds both stages,
each term updating exactly the parameters its stage updates:

* ``mmim_fit`` = -fit_weight * mean log q(y | x) on *detached* features: its gradient reaches only the estimators
  (stage 1);
* ``mmim_lld`` = -beta * mean log q(y | x) computed with the estimators' parameters *detached*
  (``torch.func.functional_call``): its gradient reaches only the encoders of x and y (stage 2);
* ``mmim_entropy`` = -beta * H(Y), the entropy estimate of the target modality (stage 2; it has no parameters of
  its own), see below;
* ``mmim_cpc`` = alpha * InfoNCE loss (stage 2), i.e. -alpha * the CPC MI estimate up to a constant.

Simplifications and deviations, each on purpose:

* Entropy H(Y): the paper fits a two-component Gaussian mixture (samples with positive / negative sentiment) to a
  projection of y over a memory bank of past batches. Here: the entropy of a Gaussian with the batch's per-dimension
  variances, H = 1/2 sum_j log(2 pi e (var_j + eps)), from the current batch only, without labels (so it works for
  classification tasks as well) and without memory (no state to carry between steps or to shard across devices).
  Since a Gaussian has the largest entropy of all distributions with its covariance, and a diagonal one the largest
  of those with its variances, this over-estimates H(Y), so H + E[log q] is no longer a strict lower bound. It keeps
  the term's purpose, though: without any entropy term, maximising E[log q(y | x)] alone rewards encoders that
  collapse y to a predictable constant; with it, shrinking y costs log-variance. ``entropy=False`` drops the term.
* log q(y | x) is the full Gaussian log-density including -1/2 logvar and -1/2 log(2 pi) (the reference code keeps
  only the quadratic term, which gives the variance network no maximum-likelihood fit: it is then rewarded for
  ever larger variances). logvar goes through tanh, i.e. variances in [1/e, e] (the reference configs name a tanh
  "mmilb_last_activation"), so that the bound stays finite: with an unbounded variance, a target dimension that
  collapses to a constant would earn an unbounded log-likelihood.
* Both stages in every step with one optimiser; the paper's reference code runs a whole epoch of stage 1 (its own
  Adam) before each epoch of stage 2, and in stage 2 uses the estimators as updated by stage 1, while here the
  stage-2 term of a step uses the estimators' values before that step's update. ``fit_weight`` (default 0.01) does
  not change how the estimators learn: they receive no other gradient and Adam's update does not depend on a
  constant gradient scale. It does set the term's share of the global gradient norm that training clips: at weight
  1 its gradient norm (3 to 10 on the generated corpus, against 0.4 to 2.5 for the task) dominated the clipped norm and
  so scaled the other parameters' gradients down by a factor that varied from step to step, which the paper's
  separate optimisers do not do (12 epochs, 3 seeds, beta 0.1: mean best validation MAE 0.433 at weight 1, 0.418 at
  0.01). The small weight also keeps the logged total loss readable (the negative log-likelihood is about 30).
* A batch of one sample: the CPC term is 0 (a softmax over a single candidate) and so is the entropy term (a
  variance needs two samples); the log-likelihood terms are per-sample and stay.
* No Xavier initialisation, separate learning rates or learning-rate schedule of the reference code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.models.base import Backbone, Output, SequenceEncoder
from robustmsa.registry import BACKBONES

_LOG_2PI = math.log(2 * math.pi)


def gaussian_log_likelihood(y: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(y; mu, diag(exp(logvar))) of each row of (B, D) inputs -> (B,)."""
    return -0.5 * ((y - mu).pow(2) * torch.exp(-logvar) + logvar + _LOG_2PI).sum(dim=-1)


def gaussian_entropy(y: Tensor, eps: float = 1e-4) -> Tensor:
    """Entropy of a Gaussian with the per-dimension variances of the (B, D) sample ``y`` (B >= 2), a scalar."""
    var = y.var(dim=0, unbiased=False)
    return 0.5 * (torch.log(var + eps) + _LOG_2PI + 1.0).sum()


def info_nce(prediction: Tensor, target: Tensor) -> Tensor:
    """InfoNCE loss of (B, D) predictions against their (B, D) targets, the other rows being the negatives.

    Scores are cosine similarities (temperature 1): ``-mean_i [s_ii - log sum_j exp(s_ij)]`` with
    ``s_ij = cos(prediction_i, target_j)``. Its minimum over unit vectors is log(e + (B - 1) / e) - 1; identical rows
    give log B; a single row gives 0.
    """
    scores = F.normalize(prediction, dim=-1, eps=1e-8) @ F.normalize(target, dim=-1, eps=1e-8).t()
    return F.cross_entropy(scores, torch.arange(scores.shape[0], device=scores.device))


class GaussianEstimator(nn.Module):
    """The variational q(y | x) = N(mu(x), diag(exp(logvar(x)))) of the input-level bound; logvar in [-1, 1]."""

    def __init__(self, x_dim: int, y_dim: int) -> None:
        super().__init__()
        self.mu = nn.Sequential(nn.Linear(x_dim, y_dim), nn.ReLU(), nn.Linear(y_dim, y_dim))
        self.logvar = nn.Sequential(nn.Linear(x_dim, y_dim), nn.ReLU(), nn.Linear(y_dim, y_dim), nn.Tanh())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.mu(x), self.logvar(x)


@BACKBONES.register("mmim")
class MMIM(Backbone):
    def __init__(
        self,
        dims: dict[str, int],
        task: TaskSpec,
        text_hidden: int = 64,
        text_encoder: str = "lstm",
        av_hidden: int = 16,
        av_out: int = 16,
        bidirectional: bool = False,
        hidden: int = 64,
        dropout: float = 0.1,
        alpha: float = 0.1,
        beta: float = 0.1,
        entropy: bool = True,
        add_va: bool = False,
        fit_weight: float = 0.01,
    ) -> None:
        super().__init__(dims, task)
        if text_encoder not in ("lstm", "mean"):
            raise ConfigError(f"mmim text_encoder must be 'lstm' or 'mean', got '{text_encoder}'")
        self.encoders = nn.ModuleDict(
            {
                "text": SequenceEncoder(dims["text"], text_hidden, kind=text_encoder, bidirectional=bidirectional and text_encoder == "lstm"),
                "audio": SequenceEncoder(dims["audio"], av_hidden, kind="lstm", bidirectional=bidirectional),
                "vision": SequenceEncoder(dims["vision"], av_hidden, kind="lstm", bidirectional=bidirectional),
            }
        )
        self.av_out = nn.ModuleDict({m: nn.Linear(av_hidden, av_out) for m in ("audio", "vision")})
        widths = {"text": text_hidden, "audio": av_out, "vision": av_out}
        self.fusion = nn.Sequential(nn.Dropout(dropout), nn.Linear(sum(widths.values()), hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.head = nn.Linear(hidden, self.out_dim)
        # input level: (x, y) pairs, q(y | x)
        self.pairs: tuple[tuple[str, str], ...] = (("text", "audio"), ("text", "vision")) + ((("vision", "audio"),) if add_va else ())
        self.estimators = nn.ModuleDict({f"{x}_{y}": GaussianEstimator(widths[x], widths[y]) for x, y in self.pairs})
        # fusion level: predict h_m from Z
        self.cpc = nn.ModuleDict({m: nn.Linear(hidden, widths[m]) for m in self.modalities})
        self.alpha = alpha
        self.beta = beta
        self.entropy = entropy
        self.fit_weight = fit_weight

    def forward(self, batch: Batch) -> Output:
        reps = {m: self.encoders[m](getattr(batch, m), batch.mask(m)) for m in self.modalities}
        for m, proj in self.av_out.items():
            reps[m] = proj(reps[m])
        fused = self.fusion(torch.cat([reps[m] for m in self.modalities], dim=-1))
        return Output(logits=self.head(fused), fused=fused, modality=reps)

    def auxiliary_losses(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        if not self.training:
            return {}
        h, z = output.modality, output.fused
        many = z.shape[0] >= 2
        fit, lld, ent = z.new_zeros(()), z.new_zeros(()), z.new_zeros(())
        for x_name, y_name in self.pairs:
            estimator = self.estimators[f"{x_name}_{y_name}"]
            x, y = h[x_name], h[y_name]
            # stage 1: fit q(y | x) to the current features, which stay fixed
            mu, logvar = estimator(x.detach())
            fit = fit - gaussian_log_likelihood(y.detach(), mu, logvar).mean()
            # stage 2: the bound moves the features, with q fixed
            frozen = {name: p.detach() for name, p in estimator.named_parameters()}
            mu, logvar = functional_call(estimator, frozen, (x,))
            lld = lld + gaussian_log_likelihood(y, mu, logvar).mean()
            if self.entropy and many:
                ent = ent + gaussian_entropy(y)
        cpc = sum((info_nce(self.cpc[m](z), h[m]) for m in self.modalities), z.new_zeros(()))
        losses = {"mmim_fit": self.fit_weight * fit, "mmim_lld": -self.beta * lld, "mmim_cpc": self.alpha * cpc}
        if self.entropy:
            losses["mmim_entropy"] = -self.beta * ent
        return losses
