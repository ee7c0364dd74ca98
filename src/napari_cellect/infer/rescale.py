"""Resizing images so their nuclei look the size the model was trained on.

A U-Net only knows the object sizes of its training data. Given the typical nucleus radius of the
images (``cell_radius``, xy pixels) and the model's ``reference_radius``
(:class:`~napari_cellect.settings.normalization.NormalizationConfig`), each frame pair is resized in y and x by
``scale = reference_radius / cell_radius`` before the U-Net (linear interpolation), and the
detections are mapped back to the original pixel grid. z is left alone: its spacing relative to
the new xy pixels becomes ``z_ratio * scale``, which is what detection then uses. The idea is
Cellpose's ``diameter`` and StarDist's ``scale``.

One exception for z: a stack whose z spacing (over the model's xy pixel) is below the model's
``min_z_ratio`` is also shrunk in z to that spacing (:func:`z_scale`). Our model learned nuclei
that span a few slices; in a near-isotropic stack a nucleus spans as many slices as pixels
across, and each of its sections was taken for a nucleus of its own.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import numpy as np
from scipy import ndimage

from napari_cellect.errors import InputError
from napari_cellect.track.detections import Detections

logger = logging.getLogger(__name__)

#: Scales this close to 1 are treated as 1 (no resizing): a resize by less than a pixel over a
#: 512-pixel frame changes nothing the U-Net can see.
_UNIT_TOLERANCE = 1e-3


def xy_scale(cell_radius: float | None, reference_radius: float | None) -> float:
    """The y/x resize factor for images whose nuclei have ``cell_radius`` (1.0 when None)."""
    if cell_radius is None:
        return 1.0
    if not (
        isinstance(cell_radius, (int, float)) and math.isfinite(cell_radius) and cell_radius > 0
    ):
        raise InputError(
            f"cell_radius: expected a nucleus radius in xy pixels > 0, found {cell_radius!r}"
        )
    if reference_radius is None:
        raise InputError(
            f"cell_radius {cell_radius:g} was given, but this model does not record the nucleus "
            "size it was trained on (normalization.reference_radius), so it cannot resize the "
            "images to it; leave the radius out, or resize the images yourself"
        )
    scale = float(reference_radius) / float(cell_radius)
    return 1.0 if abs(scale - 1.0) < _UNIT_TOLERANCE else scale


def z_scale(z_ratio: float, xy: float, depth: int, min_z_ratio: float | None) -> float:
    """The z resize factor for a stack of ``depth`` slices and z spacing ``z_ratio`` whose y and
    x are resized by ``xy``: what brings the z spacing over the new xy pixel
    (``z_ratio * xy / factor``) up to the model's ``min_z_ratio``; 1.0 where it is there
    already, for a single slice (2D) and for a model without a minimum (None)."""
    if depth <= 1 or min_z_ratio is None:
        return 1.0
    factor = z_ratio * xy / min_z_ratio
    return 1.0 if factor >= 1.0 - _UNIT_TOLERANCE else factor


def scaled_shape(
    shape: tuple[int, int, int], scale: float, z_factor: float = 1.0
) -> tuple[int, int, int]:
    """(Z, Y, X) after resizing y and x by ``scale`` and z by ``z_factor`` (never below one
    pixel)."""
    z, y, x = (int(s) for s in shape)
    return max(1, round(z * z_factor)), max(1, round(y * scale)), max(1, round(x * scale))


def resize_yx(volume: np.ndarray, shape: tuple[int, ...], order: int = 1) -> np.ndarray:
    """Resize the last two axes of ``volume`` (..., Y, X) to ``shape[-2:]`` exactly."""
    return resize(volume, tuple(int(s) for s in shape[-2:]), order)


def resize(volume: np.ndarray, shape: tuple[int, ...], order: int = 1) -> np.ndarray:
    """Resize the last ``len(shape)`` axes of ``volume`` to ``shape`` exactly (linear by
    default; pixel edges map to pixel edges)."""
    n = len(shape)
    target = tuple(volume.shape[:-n]) + tuple(int(s) for s in shape)
    if target == volume.shape:
        return volume
    zoom = [t / s for t, s in zip(target, volume.shape, strict=True)]
    dtype = volume.dtype
    if dtype == np.float16:  # ndimage has no float16 kernels
        volume = volume.astype(np.float32)
    out = ndimage.zoom(volume, zoom, order=order, mode="nearest", grid_mode=True).astype(dtype)
    if out.shape != target:  # float rounding inside zoom; never more than a pixel
        out = out[tuple(slice(0, t) for t in target)]
        out = np.pad(out, [(0, t - s) for t, s in zip(target, out.shape, strict=True)], mode="edge")
    return out


def resize_factors(original: tuple[int, ...], resized: tuple[int, ...]) -> np.ndarray:
    """(z, y, x) factors by which a (Z, Y, X) grid was resized (after rounding to pixels)."""
    return np.asarray(resized[-3:], np.float64) / np.asarray(original[-3:], np.float64)


def grid_z_ratio(z_ratio: float, factors: np.ndarray) -> float:
    """The z spacing over the xy pixel on a grid resized by ``factors`` (z, y, x)."""
    return float(z_ratio * math.sqrt(factors[1] * factors[2]) / factors[0])


def detections_to_original(
    dets: Detections, factors: np.ndarray, origin: np.ndarray | None = None
) -> Detections:
    """Map detections found on a grid resized by ``factors`` (z, y, x) back to the original
    pixels (positions and xy radius); ``origin`` is where that grid's crop starts in them."""
    factors = np.asarray(factors, np.float64)
    if np.all(factors == 1.0) and origin is None:
        return dets
    # grid_mode resizing maps pixel edges to pixel edges: centre c -> (c + 0.5) / s - 0.5
    positions = (np.asarray(dets.positions, np.float64) + 0.5) / factors - 0.5
    if origin is not None:
        positions = positions + np.asarray(origin, np.float64)
    radius = np.asarray(dets.radius, np.float64) / math.sqrt(factors[1] * factors[2])
    return replace(dets, positions=positions, radius=radius.astype(dets.radius.dtype))
