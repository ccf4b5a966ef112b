"""Which counterfactual debiasing helps a sample: categories for routers, shortcut selection for MCTD.

Notation (all from the *base* model, classification tasks): ``p0`` (N, C) class
probabilities on the factual input, ``p_img`` / ``p_txt`` on the image / text
counterfactual inputs (the modality's core content removed, its context
kept), ``y`` the true class, and for each sample the true-class probabilities
``p_y = p0[y]``, ``p_y^i = p_img[y]``, ``p_y^t = p_txt[y]``.

**Gain of a counterfactual.** Debiasing with modality m subtracts its
counterfactual prediction (MID: ``p0 - a * p_m``). Rescaled so that the scores
sum to one again, ``q = (p0 - a * p_m) / (1 - a)`` (same argmax for a < 1),
the true-class probability changes by ``a / (1 - a) * (p_y - p_y^m)``; at the
unit step a = 1/2 the change is exactly the *gain* ``g_m = p_y - p_y^m``.
Debiasing with m raises the true-class probability iff the counterfactual
(the context alone) supports the true class less than the full input does.

**Categories** (tolerance ``eps``, default 0.1), with ``h_m = g_m > eps``:

* ``image`` (c=1): ``h_i and not h_t``: only the image counterfactual helps;
* ``text`` (c=2): ``h_t and not h_i``;
* ``both`` (c=3): ``h_i and h_t``;
* ``none`` (c=0): neither helps and the base is right on the factual input:
  keep the base prediction;
* ``excluded`` (-1): neither helps and the base is wrong on the factual
  input: no strategy can fix this error, so the sample carries no
  information about *which* debiasing to apply and is left out of router
  training (labelling it ``none`` would teach the router that keeping a wrong
  prediction is right).

The category index is the routing strategy c: 0 keep, 1 debias the image, 2
the text, 3 both. A modality that is not debiased (e.g. MVSA has no image)
never helps, so only ``none`` / ``text`` / ``excluded`` occur there.

**MCTD selection** (:func:`shortcut_mask`) is the complementary question:
is the model right *for a reason that survives removing the core content*?
A modality-m counterfactual is selected for reversed-label training when the
model still predicts the true class from it (``argmax p_m = y``) with a
true-class probability within ``eps`` of the factual one (``g_m <= eps``).
Those are exactly the samples from which the model learned "context ->
label"; training their counterfactuals towards a wrong label removes that
association. (Samples whose counterfactual already points elsewhere are
left alone: reversing their label would *reinforce* the context's pull
towards the wrong class.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from robustmsa.errors import ConfigError

#: Category names by strategy index c.
CATEGORIES = ("none", "image", "text", "both")
EXCLUDED = -1
DEBIASABLE = ("image", "text")


def check_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    """Validate the debiased modalities (a subset of ``('image', 'text')``), in canonical order."""
    unknown = set(modalities) - set(DEBIASABLE)
    if unknown or not modalities:
        raise ConfigError(f"debiased modalities must be a non-empty subset of {list(DEBIASABLE)}, got {list(modalities)}")
    return tuple(m for m in DEBIASABLE if m in modalities)


def strategies_for(modalities: Sequence[str]) -> tuple[int, ...]:
    """Routing strategies available when debiasing ``modalities``: (0, 1, 2, 3), (0, 2) or (0, 1)."""
    mods = check_modalities(modalities)
    return tuple(c for c in range(4) if all(m in mods for m, bit in (("image", 1), ("text", 2)) if c & bit))


def _true_class(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    return probs[np.arange(len(y)), y]


def gains(p0: np.ndarray, p_cf: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``g = p0[y] - p_cf[y]`` per sample (N,)."""
    return _true_class(p0, y) - _true_class(p_cf, y)


def categorize(p0: np.ndarray, p_img: np.ndarray | None, p_txt: np.ndarray | None, y: np.ndarray, eps: float = 0.1) -> np.ndarray:
    """Category (strategy index 0..3, or -1 = excluded) of every sample; see the module docstring.

    ``p0``, ``p_img``, ``p_txt``: (N, C) base probabilities (``None`` for a
    modality that is not debiased); ``y``: (N,) true classes.
    """
    p0, y = np.asarray(p0, dtype=np.float64), np.asarray(y, dtype=np.int64)
    if p0.ndim != 2 or y.shape != (p0.shape[0],):
        raise ConfigError(f"categorize needs p0 (N, C) and y (N,), got {p0.shape} and {y.shape}")
    if p_img is None and p_txt is None:
        raise ConfigError("categorize needs at least one counterfactual prediction")
    if eps < 0:
        raise ConfigError(f"the tolerance eps must be >= 0, got {eps}")
    helps = {}
    for name, p_cf in (("image", p_img), ("text", p_txt)):
        helps[name] = np.zeros(len(y), dtype=bool) if p_cf is None else gains(p0, np.asarray(p_cf, dtype=np.float64), y) > eps
    category = helps["image"].astype(np.int64) + 2 * helps["text"].astype(np.int64)
    base_wrong = p0.argmax(axis=1) != y
    category[(category == 0) & base_wrong] = EXCLUDED
    return category


def category_counts(category: np.ndarray) -> dict[str, int]:
    """Number of samples per category name (``excluded`` included)."""
    names = {EXCLUDED: "excluded", **dict(enumerate(CATEGORIES))}
    return {names[c]: int(np.sum(category == c)) for c in (0, 1, 2, 3, EXCLUDED)}


def shortcut_mask(p0: Tensor, p_cf: Tensor, y: Tensor, eps: float = 0.1) -> Tensor:
    """(B,) bool: the counterfactual still predicts ``y`` with ``p_cf[y] >= p0[y] - eps`` (MCTD selection)."""
    rows = torch.arange(len(y), device=y.device)
    keeps_truth = p_cf.argmax(dim=1) == y
    return keeps_truth & (p0[rows, y] - p_cf[rows, y] <= eps)
