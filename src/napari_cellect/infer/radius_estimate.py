"""The typical nucleus radius of a series, measured on the images themselves.

A U-Net only knows the nucleus sizes of its training data (``normalization.reference_radius``);
:mod:`~napari_cellect.infer.rescale` resizes frames to it given ``cell_radius``. This module finds
``cell_radius`` when nobody gave it, in two steps on a few frames:

1. **Where are blobs, roughly how big.** A scale-normalised Laplacian of Gaussian (xy second
   derivatives of a volume smoothed by the same physical sigma in z, y and x, so anisotropic
   stacks are handled through ``z_ratio``) at sigmas 1-32 px, a factor sqrt(2) apart. Large
   sigmas run on a block-averaged copy (a pyramid), so big nuclei cost little. Maxima over
   space and scale that stand out of the image noise (a z-score against the same filters run
   on white noise) are kept, overlapping ones pruned, the strongest measured.
2. **How big exactly.** From each blob centre, rays in its xy plane find where the lightly
   smoothed intensity falls to half-way between the blob's plateau and its surroundings
   (half maximum: independent of a blur much smaller than the nucleus). The equivalent radius
   ``sqrt(mean(ray**2))`` is that of a disk of the same area, for round, elongated or irregular
   nuclei alike, and whatever the point inside the nucleus the rays start from.

The estimate is the median over the measured nuclei. Too few nuclei, or a size outside what the
search covers, gives no estimate (``radius is None``) with the reason: a frame of noise, an empty
or saturated frame or one huge object never yields a made-up size. :func:`resolve_cell_radius`
turns the estimate into the ``cell_radius`` prediction uses (None: no resizing, when the estimate
is close to the model's own radius or there is none).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import ndimage

from napari_cellect.errors import InputError

logger = logging.getLogger(__name__)

#: the value of ``cell_radius`` that asks for an estimate
AUTO = "auto"
#: how a person gives the nucleus radius, as the messages name it for the interface in use
PYTHON_RADIUS = "cell_radius=R"
CLI_RADIUS = "--cell-radius R"
#: LoG sigmas searched (xy pixels); the first and last only bound the scale maxima, so nucleus
#: radii of about 1.5-40 px are found
SIGMAS = tuple(math.sqrt(2.0) ** i for i in range(11))
#: estimates within this factor of the model's reference radius leave the frames as they are
#: (resizing by a few per cent only costs an interpolation)
NO_RESIZE_FACTOR = 1.25
#: a blob counts when its LoG response is this many noise standard deviations
MIN_Z_SCORE = 6.0
#: blobs weaker than this fraction of the strong ones (95th percentile of the frame) are left
#: out: nuclei cut by the border, debris, texture
STRONG_FRACTION = 0.25
#: fewest measured nuclei for an estimate
MIN_NUCLEI = 3
#: largest interquartile range of the radii over their median for an estimate (noise blobs
#: come in all sizes)
MAX_SPREAD = 0.6
#: most blobs measured per frame (the strongest)
MAX_BLOBS_PER_FRAME = 120
#: rays per blob, and their length in LoG radii
N_RAYS = 24
RAY_REACH = 3.0
#: fewest rays that must cross the half maximum for a blob to be measured
MIN_RAY_FRACTION = 0.75
#: the PSF std (xy pixels) assumed when correcting the half-maximum size of small nuclei (a
#: microscope sampled at about Nyquist has 0.85-1.2); it matters below a radius of about 3 px
PSF_SIGMA = 1.0
#: the voxels each pyramid level looks at per frame (a centred xy window): bounds time and memory
VOXEL_BUDGET = 1_500_000


@dataclass(frozen=True)
class RadiusEstimate:
    """The outcome of :func:`estimate_radius`."""

    #: median equivalent radius of the measured nuclei (xy pixels); None: no size found
    radius: float | None
    #: number of nuclei measured
    n_nuclei: int
    #: interquartile range of their radii over the median (0: all the same size)
    spread: float
    #: frames looked at
    frames: tuple[int, ...]
    #: why there is no estimate (None when there is one)
    reason: str | None = None
    seconds: float = 0.0

    def describe(self) -> str:
        if self.radius is None:
            return f"could not find a nucleus size ({self.reason})"
        return (
            f"nucleus radius {self.radius:.1f} px (median of {self.n_nuclei} nuclei in "
            f"frame(s) {', '.join(map(str, self.frames))}; spread {self.spread:.2f})"
        )


def estimate_radius(
    images: Any,
    z_ratio: float = 1.0,
    *,
    frames: int | list[int] = 3,
) -> RadiusEstimate:
    """Estimate the typical nucleus radius (xy pixels) of a (T, Z, Y, X) series (numpy, dask, an
    ImageSequence) or of one (Z, Y, X) / (Y, X) frame.

    ``frames``: how many frames to look at (spread evenly over the series), or which ones.
    """
    started = time.perf_counter()
    data = images.data if not hasattr(images, "shape") and hasattr(images, "data") else images
    ndim = getattr(data, "ndim", 0)
    if ndim == 2:
        data = data[None, None]
    elif ndim == 3:
        data = data[None]
    elif ndim != 4:
        raise InputError(
            f"expected (T, Z, Y, X), (Z, Y, X) or (Y, X) images, found shape "
            f"{getattr(data, 'shape', None)}"
        )
    if not (math.isfinite(z_ratio) and z_ratio > 0):
        raise InputError(f"z_ratio: expected a finite number > 0, found {z_ratio}")
    n_frames = int(data.shape[0])
    if isinstance(frames, int):
        chosen = sorted(
            {int(round(i)) for i in np.linspace(0, n_frames - 1, min(frames, n_frames))}
        )
    else:
        chosen = sorted({int(t) for t in frames})
    radii: list[np.ndarray] = []
    for t in chosen:
        frame = data[t]
        if hasattr(frame, "compute"):  # read here, never on a dask cluster the caller set up
            frame = frame.compute(scheduler="synchronous")
        frame = np.asarray(frame, dtype=np.float32)
        radii.append(_frame_radii(frame, float(z_ratio)))
    found = np.concatenate(radii) if radii else np.empty(0)
    seconds = time.perf_counter() - started
    frames_used = tuple(chosen)
    if len(found) < MIN_NUCLEI:
        return RadiusEstimate(
            None,
            len(found),
            0.0,
            frames_used,
            f"{len(found)} nucleus-like blob(s) stand out of the noise, "
            f"expected at least {MIN_NUCLEI}",
            seconds,
        )
    q1, median, q3 = np.percentile(found, [25, 50, 75])
    spread = float((q3 - q1) / median)
    if spread > MAX_SPREAD:
        return RadiusEstimate(
            None,
            len(found),
            spread,
            frames_used,
            f"the {len(found)} blobs found vary too much in size (radius "
            f"{q1:.1f}-{q3:.1f} px between quartiles)",
            seconds,
        )
    largest = min(data.shape[2:]) / 4
    if median > largest:
        return RadiusEstimate(
            None,
            len(found),
            spread,
            frames_used,
            f"the blobs found (radius {median:.0f} px) are too large for "
            f"frames of {data.shape[2]}x{data.shape[3]} px",
            seconds,
        )
    return RadiusEstimate(float(median), len(found), spread, frames_used, None, seconds)


def resolve_cell_radius(
    cell_radius: float | str | None,
    images: Any,
    z_ratio: float,
    reference_radius: float | None,
    radius_option: str = PYTHON_RADIUS,
) -> float | None:
    """The ``cell_radius`` to resize frames for: a number as given, None as None (no resizing),
    ``"auto"`` estimated from the images (logged): None when the estimate is within
    :data:`NO_RESIZE_FACTOR` of ``reference_radius``, when the model records no reference
    radius, or when no size was found (a warning)."""
    if cell_radius is None or not isinstance(cell_radius, str):
        return cell_radius
    if cell_radius != AUTO:
        raise InputError(
            f"cell_radius: expected a radius in xy pixels, '{AUTO}' or None, found {cell_radius!r}"
        )
    if reference_radius is None:
        logger.info(
            "this model does not record the nucleus size it was trained on: the frames "
            "are used as they are"
        )
        return None
    estimate = estimate_radius(images, z_ratio)
    return radius_to_resize_for(estimate, reference_radius, radius_option)


def radius_to_resize_for(
    estimate: RadiusEstimate, reference_radius: float, radius_option: str = PYTHON_RADIUS
) -> float | None:
    """What :func:`resolve_cell_radius` makes of an estimate (logging it; ``radius_option``
    is how the interface in use takes a radius, e.g. :data:`CLI_RADIUS`)."""
    if estimate.radius is None:
        logger.warning(
            "%s: the frames are used as they are (the model's own nucleus radius, %g px); if "
            "the nuclei are much larger or smaller, give their radius (%s)",
            estimate.describe(),
            reference_radius,
            radius_option,
        )
        return None
    factor = estimate.radius / reference_radius
    if 1 / NO_RESIZE_FACTOR <= factor <= NO_RESIZE_FACTOR:
        logger.info(
            "%s, close to the model's %g px: the frames are used as they are (%s resizes anyway)",
            estimate.describe(),
            reference_radius,
            radius_option,
        )
        return None
    logger.info(
        "%s; the model was trained on %g px: frames are resized by %.3g (%s overrides it)",
        estimate.describe(),
        reference_radius,
        1 / factor,
        radius_option,
    )
    return estimate.radius


# --------------------------------------------------------------------------- one frame


@dataclass
class _Level:
    """A block-averaged xy window of the frame: pixel (y, x) of it covers original pixels
    ``origin + factor * (y, x)`` ... ``+ factor - 1``."""

    image: np.ndarray
    factor: int
    origin: tuple[int, int]

    def to_original(self, yx: np.ndarray) -> np.ndarray:
        return np.asarray(self.origin) + (yx + 0.5) * self.factor - 0.5

    def to_local(self, yx: np.ndarray) -> np.ndarray:
        return (yx - np.asarray(self.origin) + 0.5) / self.factor - 0.5


def _frame_radii(frame: np.ndarray, z_ratio: float) -> np.ndarray:
    """Equivalent radii of the strongest blobs of one (Z, Y, X) frame (may be empty)."""
    if not np.all(np.isfinite(frame)):
        frame = np.nan_to_num(frame, nan=float(np.nanmedian(frame)))
    noise = _noise_std(frame)
    if noise <= 0:  # a constant (empty or saturated) frame
        return np.empty(0)
    blobs = _blobs(frame, z_ratio, noise)
    if not blobs:
        return np.empty(0)
    strong = STRONG_FRACTION * np.percentile([b[0] for b in blobs], 95)
    radii = [
        _measure_central(frame, z, y, x, r0) for score, z, y, x, r0 in blobs if score >= strong
    ]
    return np.array([r for r in radii if r is not None], np.float64)


def _noise_std(frame: np.ndarray) -> float:
    """Pixel noise: the median absolute second difference along x, as a Gaussian std."""
    if frame.shape[2] < 3:
        return 0.0
    second = frame[:, :, 2:] - 2 * frame[:, :, 1:-1] + frame[:, :, :-2]
    return float(np.median(np.abs(second)) / 0.6745 / math.sqrt(6.0))


def _level(frame: np.ndarray, factor: int) -> _Level:
    """A centred xy window of at most :data:`VOXEL_BUDGET` voxels after averaging blocks of
    ``factor`` x ``factor`` pixels."""
    z, y, x = frame.shape
    side = max(16, int(math.sqrt(VOXEL_BUDGET / z))) * factor
    h, w = min(y, side) // factor * factor, min(x, side) // factor * factor
    if h == 0 or w == 0:
        return _Level(np.zeros((z, 0, 0), np.float32), factor, (0, 0))
    oy, ox = (y - h) // 2, (x - w) // 2
    window = frame[:, oy : oy + h, ox : ox + w]
    if factor > 1:
        window = window.reshape(z, h // factor, factor, w // factor, factor).mean(axis=(2, 4))
    return _Level(np.ascontiguousarray(window, np.float32), factor, (oy, ox))


def _log_response(level: _Level, sigma: float, z_ratio: float) -> np.ndarray:
    """Scale-normalised -sigma^2 (d2/dy2 + d2/dx2) of the level smoothed by ``sigma`` physical
    pixels (z included; the block averaging counts as part of the xy smoothing)."""
    f = level.factor
    local = math.sqrt(max(sigma**2 - (f * f - 1) / 12.0, 0.25)) / f
    sz = sigma / z_ratio if level.image.shape[0] > 1 else 0.0
    image = level.image
    if sz > 0:
        image = ndimage.gaussian_filter1d(image, sz, axis=0, mode="nearest")
    dyy = ndimage.gaussian_filter(image, (0, local, local), order=(0, 2, 0), mode="nearest")
    dxx = ndimage.gaussian_filter(image, (0, local, local), order=(0, 0, 2), mode="nearest")
    return -(sigma**2) / (f * f) * (dyy + dxx)


@lru_cache(maxsize=256)
def _noise_response_std(depth: int, sigma: float, z_ratio: float, factor: int) -> float:
    """The std of :func:`_log_response` on unit white noise of the frame's depth (block
    averaging of white noise is white noise of std 1 / factor)."""
    side = 96
    noise = np.random.default_rng(0).normal(scale=1.0 / factor, size=(depth, side, side))
    response = _log_response(_Level(noise.astype(np.float32), factor, (0, 0)), sigma, z_ratio)
    margin = min(side // 3, int(4 * sigma / factor) + 1)
    return float(response[:, margin:-margin, margin:-margin].std())


def _blobs(
    frame: np.ndarray, z_ratio: float, noise: float
) -> list[tuple[float, int, float, float, float]]:
    """Scale-space maxima of the LoG that stand out of the noise, strongest first, overlapping
    ones pruned: (z-score, z slice, y, x, LoG radius) in original pixels."""
    depth = frame.shape[0]
    noise_depth = min(depth, 24)
    levels: dict[int, _Level] = {}
    maps: list[tuple[_Level, np.ndarray]] = []
    for sigma in SIGMAS:
        factor = 2 ** max(0, int(math.floor(math.log2(sigma / 2.0))))
        if factor not in levels:
            levels[factor] = _level(frame, factor)
        level = levels[factor]
        if min(level.image.shape[1:]) < 8:
            maps.append((level, np.zeros((depth, 0, 0), np.float32)))
            continue
        response = _log_response(level, sigma, z_ratio)
        response /= noise * _noise_response_std(noise_depth, sigma, z_ratio, factor)
        maps.append((level, response))
    candidates = []
    for i in range(1, len(SIGMAS) - 1):
        level, response = maps[i]
        if response.size == 0:
            continue
        size = (3 if depth > 1 else 1, 3, 3)
        peaks = response == ndimage.maximum_filter(response, size=size, mode="nearest")
        peaks &= response > MIN_Z_SCORE
        zs, ys, xs = np.nonzero(peaks)
        if len(zs) == 0:
            continue
        score = response[zs, ys, xs]
        yx = level.to_original(np.stack([ys, xs], axis=1).astype(np.float64))
        keep = np.ones(len(zs), bool)
        for j in (i - 1, i + 1):  # a maximum over scale too (where the neighbour scale looked)
            keep &= score >= _sample(maps[j], zs, yx)
        for k in np.flatnonzero(keep):
            candidates.append((float(score[k]), int(zs[k]), yx[k, 0], yx[k, 1], SIGMAS[i]))
    candidates.sort(key=lambda c: -c[0])
    kept: list[tuple[float, int, float, float, float]] = []
    positions = np.empty((0, 3))
    radii = np.empty(0)
    for strength, z, y, x, sigma in candidates[: 20 * MAX_BLOBS_PER_FRAME]:
        r0 = math.sqrt(2.0) * sigma
        here = np.array([z * z_ratio, y, x])
        if len(kept):
            distance = np.linalg.norm(positions - here, axis=1)
            if np.any(distance < 0.8 * np.maximum(radii, r0)):
                continue
        kept.append((strength, z, y, x, r0))
        positions = np.vstack([positions, here])
        radii = np.append(radii, r0)
        if len(kept) >= MAX_BLOBS_PER_FRAME:
            break
    return kept


def _sample(entry: tuple[_Level, np.ndarray], zs: np.ndarray, yx: np.ndarray) -> np.ndarray:
    """A response map at original positions; -inf where it does not reach."""
    level, response = entry
    out = np.full(len(zs), -np.inf, np.float32)
    if response.size == 0:
        return out
    local = np.rint(level.to_local(yx)).astype(int)
    inside = np.all((local >= 0) & (local < np.asarray(response.shape[1:])), axis=1)
    out[inside] = response[zs[inside], local[inside, 0], local[inside, 1]]
    return out


def _measure_central(frame: np.ndarray, z: int, y: float, x: float, r0: float) -> float | None:
    """The largest xy section of a blob near slice z: the one through its centre."""
    sections = [
        _measure(frame, k, y, x, r0) for k in range(max(0, z - 1), min(frame.shape[0], z + 2))
    ]
    found = [r for r in sections if r is not None]
    return max(found) if found else None


def _measure(frame: np.ndarray, z: int, y: float, x: float, r0: float) -> float | None:
    """Equivalent radius of the half-maximum region around (y, x) in slice z; None where the
    blob has no closed half-maximum outline within reach (an edge, a huge object)."""
    reach = RAY_REACH * r0
    pad = int(math.ceil(reach)) + 2
    y0, x0 = max(0, int(round(y)) - pad), max(0, int(round(x)) - pad)
    patch = frame[z, y0 : int(round(y)) + pad + 1, x0 : int(round(x)) + pad + 1]
    smoothing = max(0.5, 0.15 * r0)
    patch = ndimage.gaussian_filter(patch, smoothing, mode="nearest")
    step = min(0.5, r0 / 20)
    rho = np.arange(0.0, reach, step)
    angles = np.linspace(0, 2 * math.pi, N_RAYS, endpoint=False)
    coords = np.stack(
        [y - y0 + np.sin(angles)[:, None] * rho, x - x0 + np.cos(angles)[:, None] * rho]
    )
    profiles = ndimage.map_coordinates(
        patch, coords.reshape(2, -1), order=1, mode="constant", cval=np.nan
    ).reshape(N_RAYS, -1)
    inside = ~np.isnan(profiles)
    blur = math.hypot(PSF_SIGMA, smoothing)
    # the plateau: the part of the blob the blur leaves flat (just the centre of a small one)
    plateau = float(np.nanmean(profiles[:, rho <= max(0.0, min(0.4 * r0, r0 - 2.5 * blur))]))
    background = float(np.nanmedian(np.nanmin(profiles, axis=1)))
    if not plateau > background:
        return None
    half = background + 0.5 * (plateau - background)
    below = (profiles < half) & inside
    # a ray counts when it falls below half maximum before leaving the frame
    first = np.where(below.any(axis=1), below.argmax(axis=1), profiles.shape[1])
    crossed = below.any(axis=1) & (
        inside.cumsum(axis=1)[np.arange(N_RAYS), np.minimum(first, profiles.shape[1] - 1)]
        == np.minimum(first, profiles.shape[1] - 1) + 1
    )
    if crossed.mean() < MIN_RAY_FRACTION:
        return None
    first = np.maximum(first[crossed], 1)
    rows = profiles[crossed]
    index = np.arange(len(rows))
    before, after = rows[index, first - 1], rows[index, first]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(before > after, (before - half) / (before - after), 0.0)
    lengths = (first - 1 + np.clip(frac, 0, 1)) * step
    lengths = np.minimum(lengths, 2 * np.median(lengths))
    return _unblurred(float(math.sqrt(np.mean(lengths**2))), blur)


@lru_cache(maxsize=1)
def _half_maximum_table() -> tuple[np.ndarray, np.ndarray]:
    """(half-maximum radius, disk radius), both over the blur std, of a disk blurred by a
    Gaussian: the blur moves the half maximum of a small disk out (towards a Gaussian's 1.18 s)
    and of a large one in (by about s^2 / 2r)."""
    from scipy.stats import ncx2

    disk = np.geomspace(0.2, 200.0, 160)
    half = np.empty_like(disk)
    for i, u in enumerate(disk):
        rho = np.linspace(0.0, u + 6.0, 2000)
        value = ncx2.cdf(u * u, 2, rho * rho)  # the blurred disk at distance rho, x s
        half[i] = np.interp(-0.5 * value[0], -value, rho)
    return half, disk


def _unblurred(measured: float, blur: float) -> float:
    """The radius of the disk whose half maximum after a blur of std ``blur`` is at
    ``measured``."""
    half, disk = _half_maximum_table()
    return float(np.interp(measured / blur, half, disk) * blur)
