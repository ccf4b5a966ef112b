"""Word-level alignment of audio/vision to text token positions by linear interpolation.

Models that combine modalities per time step (EF-LSTM, MAG) need audio and
vision sequences on the text's time axis. For unaligned inputs each sample's
sequence of true length ``n`` is resampled to the text's true length ``m``:
target position ``j`` in ``[0, m)`` reads source position ``p = j (n - 1) / (m - 1)``
(first and last steps aligned, ``p = 0`` when ``m = 1``) and interpolates
linearly between the two neighbouring frames. Equal lengths give the identity,
so aligned inputs are passed through unchanged. Padded target positions and
samples with an empty source sequence are zero.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustmsa.data.batch import Batch


def resample(x: Tensor, lengths: Tensor, target_lengths: Tensor, target_len: int) -> Tensor:
    """Resample padded (B, L, D) ``x`` of true ``lengths`` (B,) to (B, target_len, D) of true ``target_lengths`` (B,)."""
    device, dtype = x.device, x.dtype
    lengths = lengths.to(device)
    target_lengths = target_lengths.to(device)
    last = (lengths - 1).clamp_min(0)  # (B,) last valid source index
    steps = torch.arange(target_len, device=device, dtype=dtype).unsqueeze(0)  # (1, T)
    scale = last.to(dtype) / (target_lengths.to(dtype) - 1).clamp_min(1.0)  # (B,)
    pos = torch.minimum(steps * scale.unsqueeze(1), last.to(dtype).unsqueeze(1))  # (B, T)
    lo = pos.floor().long()
    hi = torch.minimum(lo + 1, last.unsqueeze(1))
    weight = (pos - lo.to(dtype)).unsqueeze(-1)
    width = x.shape[-1]
    x_lo = x.gather(1, lo.unsqueeze(-1).expand(-1, -1, width))
    x_hi = x.gather(1, hi.unsqueeze(-1).expand(-1, -1, width))
    valid = (steps < target_lengths.unsqueeze(1)) & (lengths > 0).unsqueeze(1)
    return (x_lo * (1 - weight) + x_hi * weight) * valid.unsqueeze(-1).to(dtype)


def align_to_text(batch: Batch, modality: str) -> Tensor:
    """``batch.<modality>`` (B, L_m, D_m) resampled onto the text positions: (B, Lt, D_m)."""
    assert batch.text is not None, "alignment to text needs text in the batch"
    return resample(getattr(batch, modality), batch.lengths(modality), batch.lengths("text"), batch.text.shape[1])
