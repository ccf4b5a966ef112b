"""Shared counterfactual-inference machinery ("predict on counterfactual inputs and combine").

Every debiasing method here infers by combining a factual prediction with
predictions made in counterfactual worlds: CLUE subtracts the prediction made
with a learned counterfactual multimodal output (TIE = TE - tau * NDE); MID
subtracts predictions on counterfactual text and image inputs
(p0 - alpha * p_img_cf - beta * p_txt_cf); MME-JD mixes experts per sample.

A :class:`CounterfactualMethod` splits inference into two steps:
``components(batch)`` runs the networks once and returns named tensors, and
``combine(components, mode, params)`` is a cheap, differentiable-free function
of them. Tuning inference parameters on validation data therefore runs the
networks once and re-combines per trial (see :mod:`robustmsa.tuning.inference`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from robustmsa.data.dataset import MultimodalSplit, make_loader
from robustmsa.method import Method, scores_from_logits


def subtract_counterfactuals(factual: Tensor, counterfactuals: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """``factual - sum_k weights[k] * counterfactuals[k]`` (all tensors of one shape)."""
    out = factual
    for name, weight in weights.items():
        if weight:
            out = out - float(weight) * counterfactuals[name]
    return out


class CounterfactualMethod(Method):
    """A method whose prediction is ``combine(components(batch), mode, inference_params)``."""

    def components(self, batch) -> dict[str, Tensor]:  # pragma: no cover - abstract
        """Run the networks once: named tensors with leading dim B."""
        raise NotImplementedError

    def combine(self, components: Mapping[str, Tensor], mode: str, params: Mapping[str, float]) -> Tensor:  # pragma: no cover - abstract
        """Prediction (B,) or (B, C) of inference ``mode`` from components and parameters."""
        raise NotImplementedError

    #: Whether mode ``factual`` is the wrapped backbone's own prediction; it is then made without the components
    #: (no counterfactual input needed), e.g. to select checkpoints while training on data without counterfactuals.
    factual_is_backbone: bool = False

    def predict(self, batch, mode: str = "factual") -> Tensor:
        self.check_mode(mode)
        if mode == "factual" and self.factual_is_backbone:
            return scores_from_logits(self.backbone(batch).logits, self.task)
        return self.combine(self.components(batch), mode, self.inference_params)


@torch.no_grad()
def collect_components(method: CounterfactualMethod, split: MultimodalSplit, batch_size: int = 128) -> dict[str, Tensor]:
    """Components of every sample of a split, concatenated (eval mode, CPU)."""
    was_training = method.training
    method.eval()
    parts: dict[str, list[Tensor]] = {}
    try:
        for batch in make_loader(split, batch_size):
            for name, value in method.components(batch).items():
                parts.setdefault(name, []).append(value.detach().cpu())
    finally:
        method.train(was_training)
    return {name: torch.cat(values) for name, values in parts.items()}
