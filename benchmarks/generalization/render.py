"""A fluorescence-nucleus renderer of its own (not :mod:`napari_cellect.data.synthetic`'s).

It draws a given :class:`~.lineage.Lineage` into a (T, Z, Y, X) uint16 series and, if asked,
label masks. What it varies, per series (:class:`RenderStyle`) or per cell branch:

- shape: ellipsoids elongated up to 1.9x with a random orientation, star-convex outlines
  deformed by smooth random harmonics of the direction; neighbours may touch (the simulator
  lets them); the soft edge width varies;
- texture: chromatin speckle (band-passed noise, multiplicative) and 0-3 nucleoli (dark
  spots that move with the nucleus); per-cell brightness spread (dim nuclei);
- division appearance, drawn per mother over its last one or two frames: unchanged, condensed
  (smaller, brighter, smooth), a metaphase plate (a bright disc across the division axis) or
  an elongated dumbbell (two lobes along the axis); daughters as the lineage sizes and places
  them, sometimes brighter in their first frame;
- optics: anisotropic Gaussian PSF (axial sigma 2-4x the lateral one, in physical units);
- background: uneven illumination (vignetting and a gradient), out-of-focus haze (a wide blur
  of the nuclei added back), debris (small blobs in no ground truth);
- bleaching: brightness decays exponentially over the series;
- camera: Poisson photon noise, Gaussian read noise, a camera offset, uint16.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .lineage import Lineage, track_ids

DIVISION_LOOKS = ("unchanged", "condensed", "plate", "dumbbell")


@dataclass(frozen=True)
class RenderStyle:
    """Series-wide settings; :meth:`random` draws them from a seed."""

    psf_sigma_xy: float = 1.0
    axial_factor: float = 3.0
    speckle: float = 0.25
    edge: float = 0.2
    irregularity: float = 0.15
    max_elongation: float = 1.6
    vignetting: float = 0.3
    gradient: float = 0.15
    haze: float = 0.3
    debris_per_cell: float = 0.15
    bleach_to: float = 0.7
    photons: float = 200.0
    read_noise: float = 4.0
    offset: float = 100.0
    background: float = 0.04
    division_looks: tuple[str, ...] = DIVISION_LOOKS

    @classmethod
    def random(cls, seed: int) -> RenderStyle:
        rng = np.random.default_rng(seed)
        return cls(
            psf_sigma_xy=rng.uniform(0.6, 1.5),
            axial_factor=rng.uniform(2.0, 4.0),
            speckle=rng.uniform(0.1, 0.4),
            edge=rng.uniform(0.1, 0.3),
            irregularity=rng.uniform(0.0, 0.25),
            max_elongation=rng.uniform(1.2, 1.9),
            vignetting=rng.uniform(0.1, 0.45),
            gradient=rng.uniform(0.0, 0.3),
            haze=rng.uniform(0.1, 0.5),
            debris_per_cell=rng.uniform(0.0, 0.3),
            bleach_to=rng.uniform(0.5, 0.95),
            photons=float(np.exp(rng.uniform(np.log(40), np.log(600)))),
            read_noise=rng.uniform(1.0, 8.0),
            offset=rng.uniform(50.0, 400.0),
            background=rng.uniform(0.0, 0.08),
        )


@dataclass
class _Cell:
    """Per-branch look, drawn once so that it persists from frame to frame."""

    rotation: np.ndarray
    axes: np.ndarray
    harmonics: np.ndarray  # (K, 5): direction (3), frequency, phase
    amplitude: float
    brightness: float
    nucleoli: np.ndarray  # (M, 4): offset in radii (3), radius in radii
    division_look: str
    bright_birth: bool


def _rotation(rng: np.random.Generator, dims: int) -> np.ndarray:
    if dims == 2:
        a = rng.uniform(0, np.pi)
        return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _draw_cell(rng: np.random.Generator, style: RenderStyle, dims: int) -> _Cell:
    e = rng.uniform(1.0, style.max_elongation)
    axes = (
        np.array([1 / np.sqrt(e), 1 / np.sqrt(e), e])
        if dims == 3
        else np.array([1.0, 1 / np.sqrt(e), np.sqrt(e)])
    )
    k = 3
    dirs = rng.normal(size=(k, 3))
    if dims == 2:
        dirs[:, 0] = 0
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    harmonics = np.column_stack([dirs, rng.uniform(2, 5, k), rng.uniform(0, 2 * np.pi, k)])
    m = rng.integers(0, 4)
    offsets = rng.normal(size=(m, 3)) * 0.3
    if dims == 2:
        offsets[:, 0] = 0
    nucleoli = np.column_stack([offsets, rng.uniform(0.15, 0.3, m)]) if m else np.zeros((0, 4))
    return _Cell(
        rotation=_rotation(rng, dims),
        axes=axes,
        harmonics=harmonics,
        amplitude=style.irregularity * rng.uniform(0.3, 1.0),
        brightness=float(np.clip(rng.lognormal(0.0, 0.35), 0.3, 2.0)),
        nucleoli=nucleoli,
        division_look=str(rng.choice(style.division_looks)),
        bright_birth=bool(rng.random() < 0.5),
    )


def _blob(
    grid: np.ndarray,
    centre: np.ndarray,
    radius: float,
    cell: _Cell,
    style: RenderStyle,
    axes: np.ndarray | None = None,
    rotation: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(intensity 0..1, inside mask)`` of one nucleus on ``grid`` (..., 3) physical points."""
    rot = cell.rotation if rotation is None else rotation
    ax = cell.axes if axes is None else axes
    local = (grid - centre) @ rot  # coordinates in the cell's frame
    scaled = local / (ax * radius)
    d = np.linalg.norm(scaled, axis=-1)
    unit = local / np.maximum(np.linalg.norm(local, axis=-1, keepdims=True), 1e-9)
    h = cell.harmonics
    wobble = np.cos((unit @ h[:, :3].T) * h[:, 3] + h[:, 4]).mean(axis=-1)
    d = d / (1.0 + cell.amplitude * wobble)
    value = np.clip((1.0 - d) / style.edge + 0.5, 0.0, 1.0)
    for off in cell.nucleoli:
        dn = np.linalg.norm(local / radius - off[:3], axis=-1) / off[3]
        value = value * (1.0 - 0.55 * np.clip(1.5 - dn, 0.0, 1.0))
    return value, d < 1.0


def _perpendicular(axis: np.ndarray) -> np.ndarray:
    """A rotation whose third column (the long axis of ``_Cell.axes``) is ``axis``."""
    a = axis / max(np.linalg.norm(axis), 1e-9)
    helper = np.array([1.0, 0, 0]) if abs(a[0]) < 0.9 else np.array([0, 1.0, 0])
    b = np.cross(a, helper)
    b /= max(np.linalg.norm(b), 1e-9)
    return np.column_stack([np.cross(a, b), b, a])


def render(
    lineage: Lineage,
    shape: tuple[int, int, int],
    *,
    z_ratio: float = 1.0,
    style: RenderStyle = RenderStyle(),
    seed: int = 0,
    masks: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Render ``lineage`` into a (T, Z, Y, X) uint16 series of frames ``shape``; with ``masks``
    also (T, Z, Y, X) uint32 labels holding each row's ``id + 1`` where its nucleus is."""
    rng = np.random.default_rng(seed)
    dims = 2 if shape[0] == 1 else 3
    n_frames = lineage.n_frames
    scale = np.array([z_ratio, 1.0, 1.0])
    branch = track_ids(lineage)
    looks: dict[int, _Cell] = {}
    for b in np.unique(branch):
        looks[int(b)] = _draw_cell(np.random.default_rng((seed, int(b))), style, dims)
    start_t, end_t, division_axis = _branches(lineage, branch, scale, dims)

    images = np.zeros((n_frames, *shape), dtype=np.uint16)
    labels = np.zeros((n_frames, *shape), dtype=np.uint32) if masks else None
    illumination = _illumination(shape, style, rng)
    n_debris = rng.poisson(style.debris_per_cell * max(len(lineage) / max(n_frames, 1), 1))
    debris = rng.random((n_debris, 3)) * np.array(shape) * scale
    debris_r = rng.uniform(0.8, 2.2, n_debris)
    debris_b = rng.uniform(0.2, 1.2, n_debris)
    for t in range(n_frames):
        obj = np.zeros(shape, dtype=np.float32)
        rows = np.flatnonzero(lineage.t == t)
        for k in rows:
            b = int(branch[k])
            cell = looks[b]
            centre = lineage.positions[k] * scale
            radius = float(lineage.radius[k])
            parts = [(centre, radius, None, None, 1.0, True)]
            to_division = end_t[b] - t
            if b in division_axis and to_division <= 1 and cell.division_look != "unchanged":
                parts = _division_parts(centre, radius, cell, division_axis[b], to_division, dims)
            elif t == start_t[b] and lineage.parent[k] >= 0 and cell.bright_birth:
                parts = [(centre, radius, None, None, 1.4, True)]
            for c, r, ax, rot, gain, labelled in parts:
                sl, grid = _box(c, r * (1 + cell.amplitude) * 2.0 + 2, shape, scale)
                if grid is None:
                    continue
                value, inside = _blob(grid, c, r, cell, style, ax, rot)
                texture = 1.0 + style.speckle * rng.normal(size=value.shape)
                value = value * cell.brightness * gain * np.clip(texture, 0.2, None)
                obj[sl] = np.maximum(obj[sl], value.astype(np.float32))
                if labels is not None and labelled:
                    labels[t][sl][inside] = lineage.id[k] + 1
        for c, r, bright in zip(debris + rng.normal(size=debris.shape) * 0.5, debris_r, debris_b):
            sl, grid = _box(c, 2 * r + 2, shape, scale)
            if grid is not None:
                d = np.linalg.norm(grid - c, axis=-1) / r
                obj[sl] = np.maximum(obj[sl], (bright * np.clip(1.5 - d, 0, 1)).astype(np.float32))
        images[t] = _camera(obj, t, n_frames, illumination, style, z_ratio, rng)
    return images, labels


def _branches(lineage: Lineage, branch: np.ndarray, scale: np.ndarray, dims: int):
    """First and last frame of each branch, and the division axis (a unit vector from one
    daughter's first position to the other's, physical units) of each branch that divides."""
    start_t, end_t, axis = {}, {}, {}
    children = lineage.n_children()
    for b in np.unique(branch):
        rows = np.flatnonzero(branch == b)
        last = rows[np.argmax(lineage.t[rows])]
        start_t[int(b)], end_t[int(b)] = int(lineage.t[rows].min()), int(lineage.t[last])
        if children[last] < 2:
            continue
        kids = np.flatnonzero(lineage.parent == lineage.id[last])
        v = (lineage.positions[kids[0]] - lineage.positions[kids[1]]) * scale
        if dims == 2:
            v[0] = 0.0
        if np.linalg.norm(v) < 1e-6:
            v = np.array([0.0, 0.0, 1.0])
        axis[int(b)] = v / np.linalg.norm(v)
    return start_t, end_t, axis


def _division_parts(centre, radius, cell: _Cell, axis: np.ndarray, to_division: int, dims: int):
    """The pieces a mother is drawn as in the frames just before it divides: ``(centre, radius,
    axes, rotation, gain, labelled)`` each."""
    rot = _perpendicular(axis)
    look = cell.division_look
    if look == "condensed" or (look == "plate" and to_division == 1):
        return [(centre, radius * 0.8, np.array([0.9, 0.9, 1.1]), rot, 1.6, True)]
    if look == "plate":  # metaphase: a disc across the axis, thin along it
        return [
            (
                centre,
                radius,
                np.array([1.1, 1.1, 0.4]) if dims == 3 else np.array([1.0, 1.1, 0.4]),
                rot,
                1.8,
                True,
            )
        ]
    # dumbbell: two lobes along the axis, joined at the centre, in the very last frame only
    if to_division == 0:
        off = axis * radius * 0.6
        lobe = np.array([0.7, 0.7, 0.7])
        return [
            (centre + off, radius, lobe, rot, 1.3, True),
            (centre - off, radius, lobe, rot, 1.3, True),
        ]
    return [(centre, radius, np.array([0.85, 0.85, 1.35]), rot, 1.2, True)]


def _box(centre: np.ndarray, reach: float, shape: tuple[int, int, int], scale: np.ndarray):
    """The voxel slice around ``centre`` (physical) within ``reach`` and its physical grid."""
    c = centre / scale
    half = np.array([reach / scale[0], reach, reach])
    lo = np.maximum(np.floor(c - half).astype(int), 0)
    hi = np.minimum(np.ceil(c + half).astype(int) + 1, shape)
    if shape[0] == 1:
        lo[0], hi[0] = 0, 1
    if np.any(hi <= lo):
        return None, None
    sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    zz, yy, xx = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), indexing="ij")
    grid = np.stack([zz * scale[0], yy, xx], axis=-1).astype(np.float64)
    if shape[0] == 1:
        grid[..., 0] = centre[0]
    return sl, grid


def _illumination(shape, style: RenderStyle, rng: np.random.Generator) -> np.ndarray:
    _, ny, nx = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    cy, cx = rng.uniform(-0.4, 0.4, 2)
    angle = rng.uniform(0, 2 * np.pi)
    field = 1.0 - style.vignetting * ((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0
    field += style.gradient * (np.cos(angle) * yy + np.sin(angle) * xx) / 2.0
    return np.clip(field, 0.2, None)[None].astype(np.float32)


def _camera(obj, t, n_frames, illumination, style: RenderStyle, z_ratio, rng) -> np.ndarray:
    """PSF, haze, illumination, bleaching and camera noise of one frame."""
    s = style.psf_sigma_xy
    sz = 0.0 if obj.shape[0] == 1 else s * style.axial_factor / z_ratio
    blurred = ndi.gaussian_filter(obj, (sz, s, s))
    wide = 8.0 * s + 6.0
    haze = ndi.gaussian_filter(obj, (0.0 if obj.shape[0] == 1 else wide / z_ratio, wide, wide))
    signal = (
        blurred + style.haze * haze / max(float(haze.max()), 1e-6) * 0.5 + style.background
    ) * illumination
    bleach = style.bleach_to ** (t / max(n_frames - 1, 1))
    photons = rng.poisson(np.clip(signal * bleach * style.photons, 0, None))
    counts = photons + style.offset + rng.normal(0.0, style.read_noise, size=obj.shape)
    return np.clip(np.round(counts), 0, 65535).astype(np.uint16)
