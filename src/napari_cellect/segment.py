"""Instance segmentation: each detected cell claims its own voxels.

The segmentation head says *where* nuclei are (foreground); the detections say *which* nucleus a
voxel belongs to. Every foreground voxel goes to the nearest detection centre in scaled space,
provided it lies within ``max_radius_factor`` of that cell's radius (so a lone false-positive
foreground blob does not stick to a far-away cell). One KD-tree query over the foreground voxels
does it for the whole frame: no per-cell pass over the volume.

Label values are the nodes' track ids, so Labels and Tracks layers share ids (and colours), and a
click on a label finds its node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from napari_cellect.errors import InputError


@dataclass
class SegmentationConfig:
    """How voxels are assigned to cells."""

    #: a foreground voxel farther than this many radii from every centre stays background
    max_radius_factor: float = 1.5
    #: radius (xy pixels) used for cells whose radius is unknown (NaN or <= 0)
    default_radius: float = 5.0
    #: foreground probability above which a voxel is a nucleus voxel
    foreground_threshold: float = 0.5


def _scaled(points: np.ndarray, z_ratio: float) -> np.ndarray:
    return points * np.array([z_ratio, 1.0, 1.0])


def _radii(radius: np.ndarray, config: SegmentationConfig) -> np.ndarray:
    radius = np.asarray(radius, dtype=np.float64)
    return np.where(np.isfinite(radius) & (radius > 0), radius, config.default_radius)


def label_dtype(max_label: int) -> np.dtype:
    """uint16 when the labels fit, else uint32 (what CTC tools and napari both read)."""
    return np.dtype(np.uint16) if max_label < 2**16 else np.dtype(np.uint32)


def segment_frame(
    foreground: np.ndarray,
    positions: np.ndarray,
    radius: np.ndarray,
    labels: np.ndarray,
    *,
    z_ratio: float = 1.0,
    config: SegmentationConfig | None = None,
) -> np.ndarray:
    """Label the foreground of one frame (Z, Y, X) by nearest cell centre.

    Args:
        foreground: boolean mask or foreground probability, shape (Z, Y, X).
        positions: (N, 3) cell centres z, y, x in voxels.
        radius: (N,) radii in xy pixels.
        labels: (N,) positive label value per cell (the node's track id).
    """
    config = config or SegmentationConfig()
    foreground = np.asarray(foreground)
    if foreground.ndim != 3:
        raise InputError(f"foreground must be a (Z, Y, X) volume; got shape {foreground.shape}")
    labels = np.asarray(labels)
    if len(labels) and labels.min() <= 0:
        raise InputError("label values must be positive (0 is the background)")
    out = np.zeros(foreground.shape, dtype=label_dtype(int(labels.max()) if len(labels) else 0))
    if len(positions) == 0:
        return out
    mask = foreground > config.foreground_threshold if foreground.dtype != bool else foreground
    voxels = np.argwhere(mask)
    if len(voxels) == 0:
        return out
    radii = _radii(radius, config)
    tree = cKDTree(_scaled(np.asarray(positions, dtype=np.float64), z_ratio))
    reach = config.max_radius_factor * radii.max()
    dist, nearest = tree.query(
        _scaled(voxels.astype(np.float64), z_ratio), distance_upper_bound=reach
    )
    found = np.isfinite(dist)
    found[found] = dist[found] <= config.max_radius_factor * radii[nearest[found]]
    hit = voxels[found]
    out[hit[:, 0], hit[:, 1], hit[:, 2]] = labels[nearest[found]]
    return out


def paint_spheres(
    shape: tuple[int, int, int],
    positions: np.ndarray,
    radius: np.ndarray,
    labels: np.ndarray,
    *,
    z_ratio: float = 1.0,
    config: SegmentationConfig | None = None,
) -> np.ndarray:
    """Labels from points alone: a sphere (ellipsoid in voxels) of each cell's radius.

    Used where no segmentation output exists (a CSV loaded by hand, CTC export of point tracks).
    Overlaps go to the nearer centre, as in :func:`segment_frame`.
    """
    config = config or SegmentationConfig()
    radii = _radii(radius, config)
    positions = np.asarray(positions, dtype=np.float64)
    zz = np.zeros(shape, dtype=bool)
    for (z, y, x), r in zip(positions, radii, strict=True):
        rz = max(r / z_ratio, 0.5)
        sl = tuple(
            slice(max(int(np.floor(c - e)), 0), min(int(np.ceil(c + e)) + 1, n))
            for c, e, n in zip((z, y, x), (rz, r, r), shape, strict=True)
        )
        grid = np.ogrid[sl]
        inside = ((grid[0] - z) / rz) ** 2 + ((grid[1] - y) / r) ** 2 + (
            (grid[2] - x) / r
        ) ** 2 <= 1
        zz[sl] |= inside
    sphere_config = SegmentationConfig(
        max_radius_factor=1.0 + 1e-6, default_radius=config.default_radius
    )
    return segment_frame(zz, positions, radii, labels, z_ratio=z_ratio, config=sphere_config)
