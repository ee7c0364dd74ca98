"""A classical tracker to compare against: LoG blob detection + laptrack linking.

Detection: the image is normalised (1st to 99.9th percentile), filtered with the scale-normalised
negative Laplacian of Gaussian at a few sigmas around the nucleus radius (``sigma = r / sqrt(3)``
in xy, divided by ``z_ratio`` in z, so the filter is isotropic in physical space), and the local
maxima of the best response over scales (within half a radius) above ``threshold`` are the
cells. The nucleus radius is given, as a user would type it. (Estimating it as the scale whose
response peaks highest picked the chromatin speckles, 3 px, on the synthetic nuclei of 5-8 px.)

Linking: laptrack's ``LapTrack`` (Jaqaman et al. 2008) with splitting and one-frame gap closing,
on positions in isotropic units, cutoffs in radii (:class:`BaselineConfig`). The result is a
:class:`~napari_cellect.track.graph.TrackGraph`, scored with
:func:`napari_cellect.evaluate.evaluate` exactly like our tracker.

Needs ``laptrack`` (``benchmarks/requirements-peers.txt``). Used by ``bench_baseline.py``; the
generalisation benchmark can import :func:`track_classical` the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_cellect.track.graph import TrackGraph

#: chosen by ``bench_baseline.py --tune`` on the validation series (seeds 301-303, 305, 306, 309),
#: never on the test seeds 501-508: the threshold with the best mean TRA (8 frames each)
DEFAULT_THRESHOLD = 0.07


@dataclass(frozen=True)
class BaselineConfig:
    """Settings of the classical tracker; distances are in nucleus radii (isotropic space)."""

    threshold: float = DEFAULT_THRESHOLD
    """Smallest scale-normalised LoG response of a cell (image scaled to 0..1)."""
    scales: tuple[float, ...] = (0.8, 1.0, 1.25)
    """Radii tried, as factors of the nucleus radius."""
    link_radii: float = 2.0
    """Longest frame-to-frame link."""
    split_radii: float = 2.5
    """Longest mother-to-daughter link."""
    gap_radii: float = 3.0
    """Longest link over one missed frame."""


def normalise(volume: np.ndarray) -> np.ndarray:
    """``volume`` as float32 scaled so its 1st percentile is 0 and its 99.9th is 1."""
    v = np.asarray(volume, dtype=np.float32)
    lo, hi = np.percentile(v, [1.0, 99.9])
    return (v - lo) / max(float(hi - lo), 1e-6)


def log_response(volume: np.ndarray, radius: float, z_ratio: float) -> np.ndarray:
    """Scale-normalised ``-sigma^2 LoG`` of a normalised (Z, Y, X) volume for a blob of
    ``radius`` xy pixels (bright blobs give positive peaks). A single slice (Z = 1) is filtered
    in 2D, where a disc of radius r responds most at ``sigma = r / sqrt(2)``."""
    if volume.shape[0] == 1:
        sigma = radius / math.sqrt(2.0)
        return -(sigma**2) * ndi.gaussian_laplace(volume[0], sigma)[None]
    # the Laplacian in physical units: the z derivative is taken per slice, so it is divided by
    # z_ratio**2 (ndi.gaussian_laplace would weigh it z_ratio**2 times too much)
    sigma = radius / math.sqrt(3.0)
    sigmas = (sigma / z_ratio, sigma, sigma)
    d_zz = ndi.gaussian_filter(volume, sigmas, order=(2, 0, 0)) / z_ratio**2
    d_yy = ndi.gaussian_filter(volume, sigmas, order=(0, 2, 0))
    d_xx = ndi.gaussian_filter(volume, sigmas, order=(0, 0, 2))
    return -(sigma**2) * (d_zz + d_yy + d_xx)


def detect_peaks(
    volume: np.ndarray, radius: float, z_ratio: float, scales: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of the best LoG response over scales: ``(positions (N, 3), response (N,))``,
    every maximum above 0 (the caller thresholds)."""
    v = normalise(volume)
    best = np.max([log_response(v, radius * s, z_ratio) for s in scales], axis=0)
    half = max(radius / 2.0, 1.0)
    size = (
        max(round(2 * half / z_ratio) + 1, 1) if v.shape[0] > 1 else 1,
        round(2 * half) + 1,
        round(2 * half) + 1,
    )
    peak = (best == ndi.maximum_filter(best, size=size, mode="nearest")) & (best > 0)
    positions = np.argwhere(peak).astype(np.float64)
    return positions, best[peak]


def link_laptrack(
    positions: Sequence[np.ndarray], radius: float, z_ratio: float, config: BaselineConfig
) -> TrackGraph:
    """Link per-frame (N_t, 3) voxel positions with laptrack (splitting, gap closing)."""
    from laptrack import LapTrack

    scale = np.array([z_ratio, 1.0, 1.0])
    tracker = LapTrack(
        cutoff=(config.link_radii * radius) ** 2,
        splitting_cutoff=(config.split_radii * radius) ** 2,
        gap_closing_cutoff=(config.gap_radii * radius) ** 2,
        gap_closing_max_frame_count=2,
        merging_cutoff=False,
    )
    sizes = [len(p) for p in positions]
    # laptrack fails on a series without any point
    tree = tracker.predict([p * scale for p in positions]) if sum(sizes) else None
    edges = tree.edges() if tree is not None else []
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    parent = np.full(int(offsets[-1]), -1, dtype=np.int64)
    for (fa, ia), (fb, ib) in edges:
        parent[offsets[fb] + ib] = offsets[fa] + ia
    pos = np.concatenate(positions) if sum(sizes) else np.zeros((0, 3))
    return TrackGraph.from_arrays(
        id=np.arange(len(pos)),
        t=np.repeat(np.arange(len(positions)), sizes),
        z=pos[:, 0],
        y=pos[:, 1],
        x=pos[:, 2],
        parent_id=parent,
        radius=np.full(len(pos), radius, dtype=np.float32),
    )


def detect_series(
    images: np.ndarray, z_ratio: float, radius: float, scales: Sequence[float]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every frame's :func:`detect_peaks`, not yet thresholded."""
    return [detect_peaks(frame, radius, z_ratio, scales) for frame in images]


def track_classical(
    images: np.ndarray,
    z_ratio: float,
    radius: float,
    config: BaselineConfig = BaselineConfig(),
) -> TrackGraph:
    """Track a (T, Z, Y, X) series: LoG detection in every frame, then laptrack linking.

    ``radius`` is the typical nucleus radius in xy pixels (as a user knows it)."""
    peaks = detect_series(images, z_ratio, radius, config.scales)
    positions = [pos[response >= config.threshold] for pos, response in peaks]
    return link_laptrack(positions, radius, z_ratio, config)
