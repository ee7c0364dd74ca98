"""Image formation: nuclei with texture, embryo autofluorescence, smooth background and
illumination, PSF blur, bleaching, flicker and camera noise -> one uint16 frame (and optional
track-id labels). Each nucleus is drawn inside its own bounding box, so large volumes need only a
few frame-sized buffers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage, special

from napari_cellect.data.synthetic import streams

if TYPE_CHECKING:
    from napari_cellect.data.synthetic.config import SyntheticConfig
    from napari_cellect.data.synthetic.geometry import EmbryoGeometry
    from napari_cellect.data.synthetic.simulation import FrameCells

#: smooth fields (background, illumination, autofluorescence) never drop below this fraction
#: of their mean level
_FIELD_FLOOR = 0.1
#: width of the background structures' lines, as a fraction of the field's std
_STRUCTURE_WIDTH = 0.12
#: where the nuclear rim peaks and how wide it is (normalised nucleus radius)
_RIM_AT, _RIM_WIDTH = 0.85, 0.15
#: a lobed outline never shrinks below this fraction of the ellipsoid's radius
_LOBE_FLOOR = 0.4


def _smooth_field(
    shape: tuple[int, int, int], spacing: np.ndarray, scale: float, rng: np.random.Generator
) -> np.ndarray:
    """A low-frequency random field (zero mean, unit std) with features of about ``scale``
    physical pixels: cubic-spline upsampling of a coarse Gaussian grid, one axis at a time."""
    coarse_shape = tuple(
        1 if size == 1 else max(2, math.ceil(size * step / scale) + 2)
        for size, step in zip(shape, spacing, strict=True)
    )
    field_ = rng.normal(size=coarse_shape)
    for axis, size in enumerate(shape):
        coarse = field_.shape[axis]
        if coarse == size:
            continue
        weights = ndimage.zoom(
            np.eye(coarse), (size / coarse, 1), order=3, grid_mode=True, mode="grid-mirror"
        )[:size]
        field_ = np.moveaxis(np.tensordot(weights, np.moveaxis(field_, axis, 0), axes=1), 0, axis)
    field_ = field_.astype(np.float32)
    field_ -= field_.mean()
    std = float(field_.std())
    return field_ / std if std > 0 else field_


@dataclass
class _StaticFields:
    background: np.ndarray  # additive, (Z, Y, X)
    illumination: np.ndarray  # multiplicative on the signal, incl. depth attenuation
    autofluorescence: np.ndarray  # cytoplasm signal before the embryo mask
    structures: np.ndarray | None = None  # thin static network added to the signal


def _static_fields(config: SyntheticConfig) -> _StaticFields:
    rng = np.random.default_rng([config.seed, streams.FIELDS])
    shape, spacing = config.shape, config.spacing

    def positive(level: float, variation: float) -> np.ndarray:
        f = _smooth_field(shape, spacing, config.field_scale, rng)
        return np.maximum(level * (1 + variation * f), level * _FIELD_FLOOR).astype(np.float32)

    background = positive(config.background, config.background_variation)
    illumination = positive(1.0, config.illumination_variation)
    if shape[0] > 1 and config.depth_attenuation > 0:
        depth = np.exp(np.log(1 - config.depth_attenuation) * np.linspace(0, 1, shape[0]))
        illumination *= depth.astype(np.float32)[:, None, None]
    autofluorescence = positive(config.autofluorescence, config.autofluorescence_variation)
    structures = None
    if config.structures > 0:  # drawn last, so the fields above stay those of older versions
        f = _smooth_field(shape, spacing, config.structure_scale, rng)
        structures = (config.structures * np.exp(-((f / _STRUCTURE_WIDTH) ** 2))).astype(np.float32)
    return _StaticFields(background, illumination, autofluorescence, structures)


def _embryo_mask(
    config: SyntheticConfig, geometry: EmbryoGeometry, centre: np.ndarray
) -> np.ndarray:
    """Soft indicator (Z, Y, X) of the embryo whose centre is at ``centre``."""
    z = (np.arange(config.shape[0]) * config.spacing[0] - centre[0])[:, None, None]
    y = (np.arange(config.shape[1]) - centre[1])[None, :, None]
    x = (np.arange(config.shape[2]) - centre[2])[None, None, :]
    rot = geometry.rotation  # a rotation about z: y and x mix, z stays
    ly = rot[1, 1] * y + rot[1, 2] * x
    lx = rot[2, 1] * y + rot[2, 2] * x
    semi = geometry.semi
    rho2 = ((ly / semi[1]) ** 2 + (lx / semi[2]) ** 2).astype(np.float32)
    if not config.is_2d:
        rho2 = rho2 + ((z / semi[0]) ** 2).astype(np.float32)
    rho = np.sqrt(rho2, dtype=np.float32)
    scale = float(np.min(semi[1:] if config.is_2d else semi)) / config.embryo_edge
    return special.expit((1 - rho) * scale).astype(np.float32)


def _render_nuclei(
    config: SyntheticConfig,
    frame: FrameCells,
    signal: np.ndarray,
    labels: np.ndarray | None = None,
    label_values: np.ndarray | None = None,
) -> None:
    """Add every nucleus to ``signal`` in its own bounding box; optionally paint ``labels``."""
    shape = np.array(config.shape)
    spacing = config.spacing
    edge = config.edge_width
    best = None if labels is None else np.zeros(signal.shape, np.float32)
    for i in range(len(frame.uid)):
        semi = frame.semi[i]
        mean_semi = float(np.mean(semi))
        lobes = frame.lobe_amps[i]
        lobed = bool(np.any(lobes))
        reach = float(np.max(semi)) * (1 + 6 * edge / mean_semi)
        if lobed:
            reach *= 1 + float(np.abs(lobes).sum())
        centre = frame.physical[i] / spacing
        lo = np.maximum(np.floor(centre - reach / spacing), 0).astype(int)
        hi = np.minimum(np.ceil(centre + reach / spacing), shape - 1).astype(int)
        if config.is_2d:
            lo[0] = hi[0] = 0
        if np.any(hi < lo):
            continue
        dz = ((np.arange(lo[0], hi[0] + 1) * spacing[0]) - frame.physical[i, 0])[:, None, None]
        dy = (np.arange(lo[1], hi[1] + 1) - frame.physical[i, 1])[None, :, None]
        dx = (np.arange(lo[2], hi[2] + 1) - frame.physical[i, 2])[None, None, :]
        if config.is_2d:
            dz = np.zeros_like(dz)
        rot = frame.rotation[i]
        u = [(rot[k, 0] * dz + rot[k, 1] * dy + rot[k, 2] * dx) / semi[k] for k in range(3)]
        rho = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
        if lobed:
            rho = rho / _lobe_factor(u, rho, frame.lobe_dirs[i], lobes)
        body = special.expit((1 - rho) * (mean_semi / edge))
        value = body * frame.intensity[i]
        if config.rim > 0:
            value = value * (1 + config.rim * np.exp(-(((rho - _RIM_AT) / _RIM_WIDTH) ** 2)))
        amp = frame.speckle_amp[i]
        if len(amp) and np.any(amp):
            sp = frame.speckle_pos[i][:, :, None, None, None]
            d2 = sum((u[k][None] - sp[:, k]) ** 2 for k in range(3))
            sigma2 = 2 * frame.speckle_sigma[i][:, None, None, None] ** 2
            texture = 1 + np.tensordot(amp, np.exp(-d2 / sigma2), axes=1)
            value = value * np.maximum(texture, config.texture_floor)
        box = tuple(slice(a, b + 1) for a, b in zip(lo, hi, strict=True))
        signal[box] += value.astype(np.float32)
        if labels is not None and best is not None and label_values is not None:
            inside = (body > 0.5) & (body > best[box])
            best[box][inside] = body[inside]
            labels[box][inside] = label_values[i]


def _lobe_factor(
    u: list[np.ndarray], rho: np.ndarray, dirs: np.ndarray, amps: np.ndarray
) -> np.ndarray:
    """Radial scale of a lobed outline: 1 + sum of 2nd and 4th order Legendre bumps about each
    direction. Even orders only, so the outline stays centred on the nucleus centre."""
    inv = 1 / np.maximum(rho, 1e-6)
    factor = np.ones_like(rho)
    for d, (a2, a4) in zip(dirs, amps, strict=True):
        s2 = ((d[0] * u[0] + d[1] * u[1] + d[2] * u[2]) * inv) ** 2
        factor += a2 * (1.5 * s2 - 0.5) + a4 * (35 * s2 * s2 - 30 * s2 + 3) / 8
    return np.maximum(factor, _LOBE_FLOOR)


class Renderer:
    """Turns a :class:`FrameCells` into a uint16 frame (and optional ground-truth labels)."""

    #: voxels per chunk of the noise computation, to bound the memory of large frames
    CHUNK_VOXELS = 2_000_000

    def __init__(self, config: SyntheticConfig, geometry: EmbryoGeometry) -> None:
        self.c = config
        self.geometry = geometry

    @cached_property
    def fields(self) -> _StaticFields:
        return _static_fields(self.c)

    def render(
        self, t: int, frame: FrameCells, label_values: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        c = self.c
        rng = np.random.default_rng([c.seed, streams.NOISE, t])
        signal = np.zeros(c.shape, np.float32)
        labels = None
        if label_values is not None:
            small = len(label_values) == 0 or label_values.max() <= np.iinfo(np.uint16).max
            dtype = np.uint16 if small else np.uint32
            labels = np.zeros(c.shape, dtype)
        _render_nuclei(c, frame, signal, labels, label_values)
        if self.fields.structures is not None:
            signal += self.fields.structures
        if c.autofluorescence > 0:
            mask = _embryo_mask(c, self.geometry, frame.embryo_centre)
            signal += self.fields.autofluorescence * mask
        sigma = (0.0 if c.is_2d else c.psf_sigma_z / c.z_ratio, c.psf_sigma_xy, c.psf_sigma_xy)
        if any(s > 0 for s in sigma):
            signal = ndimage.gaussian_filter(signal, sigma, mode="nearest", truncate=3.0)
        power = math.exp(-c.bleach_rate * t)  # photobleaching
        if c.flicker > 0:
            power *= math.exp(rng.normal(0, c.flicker))  # laser power fluctuation
        image = np.empty(c.shape, np.uint16)
        slab = max(1, self.CHUNK_VOXELS // (c.shape[1] * c.shape[2]))
        for z0 in range(0, c.shape[0], slab):
            part = slice(z0, z0 + slab)
            expected = signal[part] * self.fields.illumination[part] * np.float32(power)
            expected += self.fields.background[part]
            image[part] = self._camera(expected, rng)
        return image, labels

    def _camera(self, expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Poisson shot noise, Gaussian read noise, offset, uint16."""
        c = self.c
        if c.noise > 0:
            gain = c.gain * c.noise**2
            photons = rng.poisson(np.maximum(expected, 0) / gain).astype(np.float32)
            counts = photons * np.float32(gain)
            if c.read_noise > 0:
                counts += rng.normal(0, c.read_noise * c.noise, expected.shape).astype(np.float32)
        else:
            counts = expected
        counts += np.float32(c.offset)
        return np.clip(np.rint(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)
