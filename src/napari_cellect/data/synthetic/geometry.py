"""The embryo: an ellipsoid in physical space ``(z * z_ratio, y, x)`` that may extend past the
field of view, with its drift and rotation; and the random directions and rotations the
simulation draws."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_cellect.data.synthetic import streams
from napari_cellect.errors import InputError

if TYPE_CHECKING:
    from napari_cellect.data.synthetic.config import SyntheticConfig

#: grid points per axis used to measure the embryo volume inside the field of view
_GRID_SAMPLES = 48


@dataclass(frozen=True)
class EmbryoGeometry:
    """The embryo ellipsoid and the whole-embryo motions, in physical coordinates at t = 0."""

    #: centre (z, y, x) at t = 0
    centre: np.ndarray
    #: semi-axes (z, y, x) in the embryo's own frame; z is infinite for 2D data
    semi: np.ndarray
    #: rows are the embryo's axes: ``local = (p - centre) @ rotation.T``
    rotation: np.ndarray
    #: stage drift per frame (z, y, x)
    drift: np.ndarray
    #: unit axis of the slow rotation of the cells
    spin_axis: np.ndarray

    def local(self, points: np.ndarray, t: int) -> np.ndarray:
        """Points (N, 3) in the embryo frame at time ``t``."""
        return (points - (self.centre + t * self.drift)) @ self.rotation.T

    def inner_radius(self, points: np.ndarray, t: int, margin: np.ndarray | float) -> np.ndarray:
        """Ellipsoidal radius (1 on the surface) of points in the embryo shrunk by ``margin``."""
        local = self.local(points, t)
        semi = np.maximum(self.semi[None, :] - np.reshape(margin, (-1, 1)), 0.5)
        return np.sqrt(np.sum((local / semi) ** 2, axis=1))


def embryo_geometry(config: SyntheticConfig) -> EmbryoGeometry:
    """The embryo of ``config`` (deterministic given the seed)."""
    rng = np.random.default_rng([config.seed, streams.EMBRYO])
    dims = dim_mask(config)
    half = (np.array(config.shape) - 1) * config.spacing / 2
    centre = half + rng.uniform(-1, 1, 3) * config.embryo_offset * half * dims
    semi = np.array(config.embryo_axes, dtype=float) * np.maximum(half, 0.5)
    if config.is_2d:
        semi[0] = np.inf
    angle = (
        math.radians(config.embryo_angle)
        if config.embryo_angle is not None
        else rng.uniform(0, 2 * math.pi)
    )
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = np.array([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
    drift = unit_vectors(rng, 1, config.is_2d)[0] * config.drift_speed
    spin = np.array([1.0, 0.0, 0.0]) if config.is_2d else unit_vectors(rng, 1, False)[0]
    return EmbryoGeometry(centre, semi, rotation, drift, spin)


def cells_for_density(config: SyntheticConfig, density: float) -> int:
    """Number of nuclei in the field of view that fill ``density`` (a volume fraction, or an
    area fraction in 2D) of the part of the embryo inside the field of view."""
    if not 0 < density < 1:
        raise InputError(f"density must be a volume fraction in (0, 1), found {density}")
    geometry = embryo_geometry(config)
    r_mean = float(np.mean(config.radius_range))
    region = _embryo_fov_measure(config, geometry)
    nucleus = math.pi * r_mean**2 if config.is_2d else 4 / 3 * math.pi * r_mean**3
    return int(round(density * region / nucleus))


def _embryo_fov_measure(config: SyntheticConfig, geometry: EmbryoGeometry) -> float:
    """Volume (area in 2D) of the embryo inside the field of view, in physical units, on a grid."""
    axes = []
    for size, spacing in zip(config.shape, config.spacing, strict=True):
        n = 1 if size == 1 else _GRID_SAMPLES
        axes.append((np.arange(n) + 0.5) / n * (size - 1) * spacing)
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    inside = geometry.inner_radius(grid, 0, 0.0) <= 1
    extent = (np.array(config.shape) - 1) * config.spacing
    extent = extent[1:] if config.is_2d else extent
    return float(np.mean(inside) * np.prod(np.maximum(extent, 1.0)))


def dim_mask(config: SyntheticConfig) -> np.ndarray:
    """1 for the axes cells move along, 0 for z in 2D."""
    return np.array([0.0 if config.is_2d else 1.0, 1.0, 1.0])


def unit_vectors(rng: np.random.Generator, n: int, planar: bool) -> np.ndarray:
    """n random unit vectors (n, 3), uniform on the sphere (on the yx circle when ``planar``)."""
    v = rng.normal(size=(n, 3))
    if planar:
        v[:, 0] = 0.0
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norm, 1e-12)


def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """n uniformly random 3D rotation matrices (QR of Gaussian matrices, sign-fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    return q


def spindle_frames(axis: np.ndarray, planar: bool) -> np.ndarray:
    """Rotations (n, 3, 3) whose first row is the spindle axis (the plate's thin direction)."""
    n = len(axis)
    helper = np.zeros((n, 3))
    if planar:
        helper[:, 0] = 1.0  # z: the second row is then the in-plane perpendicular
    else:
        pick = np.argmin(np.abs(axis), axis=1)
        helper[np.arange(n), pick] = 1.0
    e2 = np.cross(axis, helper)
    e2 /= np.maximum(np.linalg.norm(e2, axis=1, keepdims=True), 1e-12)
    e1 = np.cross(e2, axis)
    return np.stack([axis, e1, e2], axis=1)
