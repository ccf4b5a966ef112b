"""Random missing-data corruption of batches (pure functions, no global RNG).

Protocol (LNLN / TCMR "random missing"):

* text: each real, non-special token is dropped with probability ``r``: its
  id becomes ``unk_id`` (when the batch carries ``text_ids``) and its feature
  vector becomes zero. [CLS]/[SEP] (``text_special``) and padding are never
  touched; the token count and masks are unchanged.
* audio / vision / image: whole frames within the true length are zeroed with
  probability ``r``; lengths are unchanged.
* ``r = 1`` for a modality removes all of its real positions.

Randomness. Every (sample, modality) pair owns a random stream built from a
stable hash (blake2b) of ``(seed, sample id, modality)``: position ``j`` gets
a uniform draw ``u_j`` and is dropped iff ``u_j < r``. Hence

* the result is a deterministic function of (input, r, seed), independent of
  the batch a sample lands in, its padding, and of the model being evaluated
  (every model sees the same masks);
* for one seed the dropped set at a larger ``r`` contains the set at a
  smaller ``r`` (nested masks);
* modalities and samples never share a stream.

Training-time corruption (:func:`training_rates`, :func:`corrupt_for_training`)
draws per sample and per modality ``r ~ U(0, 1)`` (a configurable share of
samples kept complete) from ``(seed, epoch, sample id)``: it is redrawn every
epoch, needs no dataset state, and is therefore safe with several loader
workers. The effective per-sample missing rates (dropped or already all-zero
positions, e.g. text missing by nature) are recorded in the returned batch's
``extras['missing_rate_<modality>']`` (B,) float (LNLN and TCMR supervise
their completeness estimators with ``1 - missing_rate_text``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from robustmsa.data.batch import Batch
from robustmsa.errors import ConfigError, DataError

#: Modalities that corruption knows how to drop.
CORRUPTIBLE = ("text", "audio", "vision", "image")
#: The [UNK] id of BERT-style vocabularies (MiniLM's tokenizer included).
DEFAULT_UNK_ID = 100
#: Evaluation grid of the missing-rate sweep.
EVAL_RATES = tuple(round(0.1 * i, 1) for i in range(10))

Rates = float | Mapping[str, float | Tensor | np.ndarray]


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from a stable hash of ``parts`` (unlike ``hash()``, identical across processes)."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def check_seed(value: object, name: str = "seed") -> int:
    """``value`` as an int (ConfigError for a bool, float, None, generator...: masks are keyed by the seed's digits,
    so 0.0 and 0 must not silently give different masks)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    return int(value)


def position_uniforms(sample_id: str, modality: str, seed: int, length: int) -> np.ndarray:
    """(length,) uniform draws in [0, 1) of one sample's modality; a prefix of the draws for any longer length."""
    return np.random.default_rng(stable_seed("drop", seed, sample_id, modality)).random(length)


def _eligible(batch: Batch, modality: str) -> Tensor:
    """(B, L) bool: positions that corruption may drop (real, and for text not special)."""
    if modality in ("audio", "vision") and len(batch):  # lengths beyond the padding would count padding as real frames
        lengths, padded = batch.lengths(modality), getattr(batch, modality).shape[1]
        if int(lengths.min()) < 0 or int(lengths.max()) > padded:
            raise DataError("batch", f"{modality}_lengths", f"must lie in [0, {padded}] (the padded length), got {int(lengths.min())}..{int(lengths.max())}")
    mask = batch.mask(modality)
    if modality == "text" and batch.text_special is not None:
        mask = mask & ~batch.text_special.bool()
    return mask


def _per_sample_rates(rate: float | Tensor | np.ndarray, n: int, modality: str) -> np.ndarray:
    raw = np.asarray(rate.detach().cpu().numpy() if isinstance(rate, Tensor) else rate)
    if raw.dtype.kind not in "iuf":  # bools, strings ('0.5'), objects
        raise ConfigError(f"missing rate of '{modality}' must be a number or numbers in [0, 1], got {rate!r}")
    values = raw.astype(np.float64)
    if values.ndim == 0:
        values = np.full(n, float(values))
    if values.shape != (n,):
        raise ConfigError(f"missing rate of '{modality}' must be a number or one value per sample ({n}), got shape {values.shape}")
    if not np.all((values >= 0.0) & (values <= 1.0)):
        raise ConfigError(f"missing rates of '{modality}' must lie in [0, 1], got {values.min():.3g}..{values.max():.3g}")
    return values


def drop_masks(batch: Batch, modality: str, rate: float | Tensor | np.ndarray, seed: int) -> Tensor:
    """(B, L) bool mask of the positions of ``modality`` dropped at ``rate`` (number or (B,) per sample)."""
    seed = check_seed(seed)
    eligible = _eligible(batch, modality).cpu()
    rates = _per_sample_rates(rate, len(batch), modality)
    lengths = batch.mask(modality).sum(dim=1).cpu().tolist()
    u = np.ones(tuple(eligible.shape), dtype=np.float64)
    for i, (sample_id, n) in enumerate(zip(batch.ids, lengths)):
        if rates[i] > 0.0 and n:
            u[i, : int(n)] = position_uniforms(sample_id, modality, seed, int(n))
    dropped = torch.from_numpy(u < rates[:, None]) & eligible
    return dropped.to(batch.mask(modality).device)


def normalise_rates(rates: Rates, batch: Batch) -> dict[str, float | Tensor | np.ndarray]:
    """``{modality: rate}`` for the modalities present; a single number applies to all of them."""
    present = [m for m in batch.modalities() if m in CORRUPTIBLE]
    if isinstance(rates, Mapping):
        unknown = sorted(set(rates) - set(CORRUPTIBLE))
        if unknown:
            raise ConfigError(f"cannot corrupt modalities {unknown}; known: {list(CORRUPTIBLE)}")
        absent = sorted(m for m in rates if m not in present)
        if absent:
            raise ConfigError(f"missing rates given for {absent}, which this batch does not have (it has {present})")
        return dict(rates)
    return {m: float(rates) for m in present}


def missing_positions(batch: Batch, modality: str) -> Tensor:
    """(B, L) bool: droppable positions of ``modality`` whose features are all zero (dropped or missing by nature)."""
    return (getattr(batch, modality) == 0).all(dim=-1) & _eligible(batch, modality)


def missing_rates(batch: Batch, modality: str) -> Tensor:
    """(B,) float32 share of droppable positions of ``modality`` that are missing (see :func:`missing_positions`)."""
    return (missing_positions(batch, modality).sum(dim=1).float() / _eligible(batch, modality).sum(dim=1).clamp_min(1).float()).cpu()


def drop_positions(batch: Batch, modality: str, dropped: Tensor, *, unk_id: int = DEFAULT_UNK_ID) -> Batch:
    """A new batch with the (B, L) bool ``dropped`` positions of ``modality`` zeroed (text ids set to ``unk_id``).

    Records ``extras['missing_rate_<modality>']`` (see :func:`missing_rates`).
    """
    values = getattr(batch, modality)
    changes: dict[str, object] = {modality: values.masked_fill(dropped.unsqueeze(-1), 0.0)}
    if modality == "text" and batch.text_ids is not None:
        changes["text_ids"] = batch.text_ids.masked_fill(dropped, unk_id)
    out = batch.replace(**changes)
    out.extras = {**batch.extras, f"missing_rate_{modality}": missing_rates(out, modality)}
    return out


def corrupt_batch(batch: Batch, rates: Rates, seed: int, *, unk_id: int = DEFAULT_UNK_ID) -> Batch:
    """A new batch with positions dropped at ``rates`` (number for all modalities, or per modality).

    A rate may be a number or a (B,) array of per-sample rates. The input batch
    is not modified. ``extras['missing_rate_<m>']`` (B,) float32 holds the share
    of droppable positions missing afterwards: dropped here, or already zero
    (text missing by nature, out-of-vocabulary words, empty frames).
    """
    out = batch
    for modality, rate in normalise_rates(rates, batch).items():
        out = drop_positions(out, modality, drop_masks(batch, modality, rate, seed), unk_id=unk_id)
    return out


COMPLETE_PER = ("sample", "modality")


def check_complete_per(complete_per: str) -> str:
    """``complete_per`` if it is one of :data:`COMPLETE_PER`, else a :class:`ConfigError`."""
    if complete_per not in COMPLETE_PER:
        raise ConfigError(f"complete_per must be one of {list(COMPLETE_PER)}, got '{complete_per}'")
    return complete_per


def training_rates(ids: Sequence[str], modalities: Sequence[str], seed: int, epoch: int, complete_share: float = 0.0, complete_per: str = "sample") -> dict[str, np.ndarray]:
    """Per-sample, per-modality training missing rates ``r ~ U(0, 1)`` redrawn each epoch.

    A share ``complete_share`` is kept complete (rate 0). ``complete_per``:
    ``'sample'``, a sample is drawn once and kept complete in every modality;
    ``'modality'``, each modality of each sample is drawn on its own (the LNLN
    authors' protocol with ``complete_share`` 0.5: half the samples have
    complete text, independently of their audio and vision). Returns
    ``{modality: (B,) float64}``.
    """
    if not 0.0 <= complete_share <= 1.0:
        raise ConfigError(f"complete_share must lie in [0, 1], got {complete_share}")
    check_complete_per(complete_per)
    seed, epoch = check_seed(seed), check_seed(epoch, "epoch")
    out = {m: np.zeros(len(ids)) for m in modalities}
    for i, sample_id in enumerate(ids):
        if complete_per == "sample" and np.random.default_rng(stable_seed("complete", seed, epoch, sample_id)).random() < complete_share:
            continue
        for m in modalities:
            if complete_per == "modality" and np.random.default_rng(stable_seed("complete", seed, epoch, sample_id, m)).random() < complete_share:
                continue
            out[m][i] = np.random.default_rng(stable_seed("rate", seed, epoch, sample_id, m)).random()
    return out


def corrupt_for_training(
    batch: Batch,
    seed: int,
    epoch: int,
    *,
    complete_share: float = 0.0,
    complete_per: str = "sample",
    modalities: Sequence[str] | None = None,
    unk_id: int = DEFAULT_UNK_ID,
) -> Batch:
    """Training-time corruption: per-sample, per-modality random rates (:func:`training_rates`) and masks, both
    redrawn each epoch."""
    if unknown := sorted(set(modalities or ()) - set(CORRUPTIBLE)):
        raise ConfigError(f"cannot corrupt modalities {unknown}; known: {list(CORRUPTIBLE)}")
    present = [m for m in (modalities or batch.modalities()) if m in CORRUPTIBLE]
    rates = training_rates(batch.ids, present, seed, epoch, complete_share, complete_per)
    return corrupt_batch(batch, rates, stable_seed("train-masks", seed, epoch), unk_id=unk_id)
