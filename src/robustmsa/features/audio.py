"""Acoustic features with openSMILE (``pip install robustmsa[extract]``; no model files, nothing downloaded).

:func:`smile_features` turns a mono signal into a sequence of openSMILE
descriptors, the acoustic features the field uses besides COVAREP:

* ``feature_set``: ``eGeMAPSv02`` (25 low-level descriptors: loudness, pitch,
  jitter, shimmer, formants, spectral slopes, MFCC 1-4, ...), ``GeMAPSv01b``
  (18) or ``ComParE_2016`` (65);
* ``level``: ``lld`` gives one row per 10 ms frame, averaged over windows of
  ``1 / fps`` seconds (:func:`pool_by_time`; ``fps=None`` keeps the 100 frames
  per second); ``functionals`` gives one row of statistics for the whole clip
  (eGeMAPSv02: 88 values).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np

from robustmsa.errors import ConfigError

FEATURE_SETS = ("eGeMAPSv02", "GeMAPSv01b", "ComParE_2016")
LEVELS = ("lld", "functionals")


def check_audio_settings(feature_set: str, level: str, fps: float | None) -> None:
    """A :class:`ConfigError` for an unknown feature set or level, or a frame rate outside (0, 100]."""
    if feature_set not in FEATURE_SETS:
        raise ConfigError(f"audio feature set must be one of {', '.join(FEATURE_SETS)}; got {feature_set!r}")
    if level not in LEVELS:
        raise ConfigError(f"audio feature level must be 'lld' or 'functionals'; got {level!r}")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps <= 100):
        raise ConfigError(f"audio frames per second must be a number in (0, 100] (openSMILE's descriptors come every 10 ms), or null; got {fps!r}")


def _smile(feature_set: str, level: str) -> Any:
    try:
        import opensmile
    except ImportError as exc:
        raise ConfigError("acoustic features need openSMILE (pip install 'robustmsa[extract]')") from exc
    feature_level = opensmile.FeatureLevel.LowLevelDescriptors if level == "lld" else opensmile.FeatureLevel.Functionals
    return opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set), feature_level=feature_level)


def pool_by_time(times: np.ndarray, values: np.ndarray, fps: float) -> np.ndarray:
    """Mean of the rows of ``values`` (T, D) whose ``times`` (T,) fall in each window ``[k / fps, (k + 1) / fps)``.

    Windows without a row are left out, so the result has one row per occupied window, in time order.
    """
    if len(times) == 0:
        return np.zeros((0, values.shape[1]), dtype=np.float32)
    bins = np.floor(np.asarray(times, dtype=np.float64) * fps + 1e-9).astype(np.int64)
    occupied, index = np.unique(bins, return_inverse=True)
    sums = np.zeros((len(occupied), values.shape[1]), dtype=np.float64)
    np.add.at(sums, index, values)
    counts = np.bincount(index, minlength=len(occupied))[:, None]
    return (sums / counts).astype(np.float32)


def smile_features(
    signal: np.ndarray,
    rate: int,
    feature_set: str = "eGeMAPSv02",
    level: Literal["lld", "functionals"] = "lld",
    fps: float | None = 10.0,
) -> tuple[np.ndarray, list[str]]:
    """openSMILE descriptors of a mono ``signal`` (n,) at ``rate`` Hz: features (T, D) float32 and their D names.

    A signal shorter than one analysis window gives T = 0 rows (openSMILE's all-NaN filler row is dropped).
    """
    check_audio_settings(feature_set, level, fps)
    smile = _smile(feature_set, level)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Segment too short")  # its NaN row is dropped below
        frame = smile.process_signal(np.asarray(signal, dtype=np.float32), rate)
    frame = frame[~frame.isna().all(axis=1)]
    values = frame.to_numpy(dtype=np.float64)
    if level == "lld" and fps is not None:
        starts = frame.index.get_level_values("start").total_seconds().to_numpy()
        values = pool_by_time(starts, values, fps)
    return values.astype(np.float32), [str(c) for c in frame.columns]
