"""Intensity normalisation of a frame pair before the U-Net.

Both frames of a pair (t, t+1) are normalised together, with one set of statistics, so the
network sees their relative brightness unchanged (the original CELLECT also preprocesses the
stacked pair as one tensor).

Modes (:class:`NormalizationConfig.mode`):

* ``'percentile'`` (our models): ``(x - p_low) / (p_high - p_low)``, percentiles of the pair's
  finite voxels, computed on a regular subsample of at most ``max_samples`` voxels.
* ``'cellect-log'`` (imported original weights, docs/method.md §2.2): clip to
  [``clip_low``, ``clip_high``], set values below ``zero_below`` to 0, raise everything below
  the pair's smallest positive value ``m`` to it, then
  ``log1p(enhance * (x - m) + offset)`` (``subtract_minimum``, the default) or
  ``log1p(enhance * x + offset)`` (the original ``inference.py``). The original network was
  trained on plain ``log1p`` of raw 16-bit data whose background sits near 2000; subtracting
  ``m`` and adding 1900 puts any data's background there, whatever its camera offset.
* ``'none'``: the values as float32 (data already normalised the way the model was trained).

Non-finite voxels (NaN, inf) are treated as the low end (they become the low percentile, or
``m`` in log mode) and a warning is logged. A pair without contrast (constant, or no finite
voxel) becomes all zeros in percentile mode: there is nothing to divide by.

The settings are :class:`napari_cellect.settings.normalization.NormalizationConfig`.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from napari_cellect.errors import InputError
from napari_cellect.settings.normalization import NormalizationConfig

logger = logging.getLogger(__name__)


def _count_non_finite(data: np.ndarray) -> int:
    if not np.issubdtype(data.dtype, np.floating):
        return 0
    return int(data.size - np.count_nonzero(np.isfinite(data)))


def normalize_pair(pair: np.ndarray, config: NormalizationConfig | None = None) -> np.ndarray:
    """Normalise a stacked frame pair (2, Z, Y, X) (or any array) together; returns float32.

    The input is not modified.
    """
    cfg = config or NormalizationConfig()
    data = np.asarray(pair)
    if data.size == 0:
        raise InputError(f"normalisation: expected a non-empty image, found shape {data.shape}")
    n_bad = _count_non_finite(data)
    if n_bad:
        logger.warning(
            "%d of %d voxels are NaN or infinite; they are treated as the darkest value",
            n_bad,
            data.size,
        )
    if cfg.mode == "percentile":
        return _percentile(data, n_bad, cfg)
    if cfg.mode == "cellect-log":
        return _cellect_log(data, n_bad, cfg)
    out = data.astype(np.float32, copy=True)
    if n_bad:
        out[~np.isfinite(out)] = 0.0
    return out


def _finite_range(data: np.ndarray) -> tuple[float, float]:
    """Exact (min, max) of the finite voxels; (inf, -inf) when there is none."""
    if not np.issubdtype(data.dtype, np.floating):
        return float(data.min()), float(data.max())
    finite = np.isfinite(data)
    return (
        float(data.min(where=finite, initial=np.inf)),
        float(data.max(where=finite, initial=-np.inf)),
    )


def _percentile(data: np.ndarray, n_bad: int, cfg: NormalizationConfig) -> np.ndarray:
    flat = data.reshape(-1)
    sample = flat[:: max(1, math.ceil(flat.size / cfg.max_samples))]
    if n_bad:
        sample = sample[np.isfinite(sample)]
    if sample.size:
        lo, hi = np.percentile(
            sample.astype(np.float64, copy=False), [cfg.low_percentile, cfg.high_percentile]
        )
    else:
        lo = hi = math.nan
    if not hi > lo:
        # Sparse or nearly constant image (or a sample that missed every finite voxel): the
        # percentiles coincide, so fall back to the exact range of the finite voxels.
        lo, hi = _finite_range(data)
        if not hi > lo:
            if math.isfinite(lo):
                logger.info("image has no contrast (constant %g); it is normalised to zeros", lo)
            else:
                logger.warning("image has no finite voxel; it is normalised to zeros")
            return np.zeros(data.shape, np.float32)
    out = data.astype(np.float32, copy=True)
    if n_bad:
        out[~np.isfinite(out)] = lo
    out -= np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    if cfg.clip_output:
        np.clip(out, 0.0, 1.0, out=out)
    return out


def _cellect_log(data: np.ndarray, n_bad: int, cfg: NormalizationConfig) -> np.ndarray:
    out = data.astype(np.float32, copy=True)
    if n_bad:
        out[~np.isfinite(out)] = 0.0  # raised to the smallest positive value below
    np.clip(out, cfg.clip_low, cfg.clip_high, out=out)
    if cfg.zero_below > 0:
        out[out < cfg.zero_below] = 0.0
    # The smallest positive value must be exact (not from a subsample): it sets the background.
    smallest = out.min(where=out > 0, initial=np.inf)
    floor = np.float32(smallest if np.isfinite(smallest) else 0.0)
    np.maximum(out, floor, out=out)
    if cfg.subtract_minimum:
        out -= floor
    if cfg.enhance != 1.0:
        out *= np.float32(cfg.enhance)
    out += np.float32(cfg.offset)
    np.log1p(out, out=out)
    return out


def has_contrast(frame: np.ndarray) -> bool:
    """Whether a (normalised) frame has at least two different finite values."""
    values = np.asarray(frame)
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return False
    high = values.max(where=finite, initial=-np.inf)
    return bool(high > values.min(where=finite, initial=np.inf))
