"""CLEF: counterfactual emotion inference against the scene-context bias (Yang et al., CVPR 2024), model-agnostic.

Context-aware emotion recognition models learn spurious links between scenes
and emotions (a "garden" means "happy"). CLEF keeps the wrapped CAER model
(any backbone: its prediction ``Y_e`` from the ensemble of subject and context
features is the total effect's main path) and adds a non-invasive *context
branch* that sees only the scene with the person masked out and predicts
``Y_c``: the direct effect of the context on the emotion. Training and
inference are :class:`~robustmsa.debias.direct_effect.DirectEffectDebiasing`
with the context branch as its bias branch: ``te`` = h(Y_c, Y_e), and at
inference ``tie`` = h(Y_c, Y_e) - tau * h(Y_c, Y_e*), which subtracts the
prediction made in the counterfactual world where the model sees the context
but not the person (``Y_e*``: a learned constant, fitted by the KL term).

Ablations by configuration: ``use_context=False`` (no context branch),
``gamma=0`` (no KL regularisation) and ``context_branch: {input: full}`` (the
branch also sees the person: no masking, so it captures more than the
context's direct effect). Multi-label tasks (EMOTIC's 26 categories) use the
additive fusion with binary cross-entropy, single-label ones (CAER-S) any
fusion with cross-entropy.

Data: the person's tokens in ``vision`` and the masked scene's in ``image``,
as the sources ``synthetic_context`` (a generated corpus with a known scene
bias), ``emotic`` and ``caer_s`` give them; ``robustmsa clef`` runs the
protocol (base vs +CLEF, TE and TIE, ablations).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.debias.direct_effect import DirectEffectDebiasing
from robustmsa.errors import ConfigError, DataError
from robustmsa.models.base import Backbone, mlp
from robustmsa.models.context import TokenStream
from robustmsa.registry import METHODS, build_part

#: What the context branch sees: the masked scene (``image``), or the scene and the person (``image`` + ``vision``).
BRANCH_INPUTS = {"context": ("image",), "full": ("image", "vision")}


class ContextBranch(nn.Module):
    """Context-only classifier: the scene tokens (and, for the unmasked ablation, the person's) -> (B, out_dim)."""

    def __init__(self, out_dim: int, dims: Mapping[str, int], *, input: str = "context", hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        if input not in BRANCH_INPUTS:
            raise ConfigError(f"context_branch.input must be one of {list(BRANCH_INPUTS)}, got '{input}'")
        missing = [m for m in BRANCH_INPUTS[input] if m not in dims]
        if missing:
            raise ConfigError(f"context_branch.input='{input}' needs the modalities {list(BRANCH_INPUTS[input])}; the data has no {missing}")
        self.inputs = BRANCH_INPUTS[input]
        self.streams = nn.ModuleDict({m: TokenStream(dims[m], hidden, dropout) for m in self.inputs})
        self.head = mlp(hidden * len(self.inputs), hidden, out_dim, dropout)

    def forward(self, batch: Batch) -> Tensor:
        summaries = []
        for name, stream in self.streams.items():
            tokens = getattr(batch, name)
            if tokens is None:
                raise DataError(batch.ids[0] if batch.ids else "batch", name, "the CLEF context branch needs this modality in every batch")
            summaries.append(stream(tokens, batch.mask(name)))
        return self.head(summaries[0] if len(summaries) == 1 else torch.cat(summaries, dim=-1))


@METHODS.register("clef")
class CLEF(DirectEffectDebiasing):
    """Backbone (ensemble branch) + context branch + learned counterfactual output; modes te / tie / context / ensemble.

    Further keyword arguments (fusion, counterfactual, alpha, beta, gamma, tau, tau_grid, tau_split, tau_metric,
    regression_loss, c_lr) are those of :class:`DirectEffectDebiasing`.
    """

    names = (("y_c", "context"), ("y_e", "ensemble"))
    nested_parameters = {"context_branch": (ContextBranch, 2)}

    def __init__(self, backbone: Backbone, context_branch: Mapping[str, Any] | None = None, use_context: bool = True, use_ensemble: bool = True, **params: Any) -> None:
        branch = build_part(ContextBranch, context_branch, backbone.task.out_dim, backbone.dims, what="method 'clef': 'context_branch'") if use_context else None
        super().__init__(backbone, branch, use_main=use_ensemble, **params)
