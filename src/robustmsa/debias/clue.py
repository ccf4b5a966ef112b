"""CLUE: counterfactual multimodal sentiment analysis (Sun et al., ACM MM 2022), model-agnostic.

A text-only branch predicts ``Y_t`` and the wrapped backbone predicts
``Y_m`` (logits (B, C)); the debiasing itself (the fusion ``h(Y_t, Y_m)``, the
learned counterfactual multimodal output ``Y_m*``, the losses and the
inference rules ``te`` = h(Y_t, Y_m) for IID testing and ``tie`` =
h(Y_t, Y_m) - tau * h(Y_t, Y_m*) for OOD testing) is
:class:`~robustmsa.debias.direct_effect.DirectEffectDebiasing`, with the text
branch as its bias branch.

Ablations by configuration: ``use_text=False`` (Y_t = 0), ``use_multimodal=False``
(Y_m = 0, the backbone is not run), ``gamma=0`` (no KL).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robustmsa.data.dataset import DataBundle
from robustmsa.debias.direct_effect import DirectEffectDebiasing, build_debiased, train_debiased
from robustmsa.debias.text_branch import TextBranch
from robustmsa.errors import ConfigError
from robustmsa.models.base import Backbone
from robustmsa.registry import METHODS, build_part
from robustmsa.training.fit import TrainConfig


@METHODS.register("clue")
class CLUE(DirectEffectDebiasing):
    """Backbone + text branch + learned counterfactual multimodal output; modes te / tie / text / multimodal.

    Further keyword arguments (fusion, counterfactual, alpha, beta, gamma, tau, tau_grid, tau_split, tau_metric,
    regression_loss, c_lr) are those of :class:`DirectEffectDebiasing`.
    """

    names = (("y_t", "text"), ("y_m", "multimodal"))
    nested_parameters = {"text_branch": (TextBranch, 2)}

    def __init__(self, backbone: Backbone, text_branch: Mapping[str, Any] | None = None, use_text: bool = True, use_multimodal: bool = True, **params: Any) -> None:
        if backbone.task.kind == "multilabel":
            raise ConfigError("CLUE supports classification and regression tasks, not multilabel")
        branch = build_part(TextBranch, text_branch, backbone.task.out_dim, backbone.dims.get("text"), what="method 'clue': 'text_branch'") if use_text else None
        super().__init__(backbone, branch, use_main=use_multimodal, **params)

    @property
    def text_branch(self) -> TextBranch | None:
        return self.bias_branch


# --------------------------------------------------------------------------
# Plain functions for the demo, the CLI and the protocols
# --------------------------------------------------------------------------


def build_clue(bundle: DataBundle, backbone_name: str, backbone_params: Mapping[str, Any] | None = None, seed: int = 0, **clue_params: Any) -> CLUE:
    """A fresh CLUE around a registered backbone, initialised under ``seed``."""
    return build_debiased("clue", bundle, backbone_name, backbone_params, seed, **clue_params)  # type: ignore[return-value]


def train_clue(
    bundle: DataBundle, backbone_name: str, backbone_params: Mapping[str, Any] | None = None, train_cfg: TrainConfig | None = None, seed: int = 0, **clue_params: Any
) -> tuple[CLUE, dict[str, Any]]:
    """:func:`train_debiased` for CLUE: the trained method (tau set) and what calibration chose."""
    return train_debiased("clue", bundle, backbone_name, backbone_params, train_cfg, seed, **clue_params)  # type: ignore[return-value]


def demo_entry(backbone_name: str, name: str | None = None, backbone_params: Mapping[str, Any] | None = None, **clue_params: Any) -> dict[str, Any]:
    """The ``+CLUE`` row of ``robustmsa demo``: ``{'name', 'train', 'modes'}`` (TE on the IID test, TIE on the OOD test)."""

    def train(bundle: DataBundle, seed: int, cfg: TrainConfig) -> CLUE:
        return train_clue(bundle, backbone_name, backbone_params, cfg, seed, **clue_params)[0]

    return {"name": name or f"{backbone_name} + CLUE", "train": train, "modes": {"test": "te", "test_ood": "tie"}}
