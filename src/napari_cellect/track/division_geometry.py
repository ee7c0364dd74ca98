"""Is a pair of detections of frame t+1 a plausible pair of daughters of a mother at frame t?

A division seen by the detector has a shape: the two daughters sit on either side of where the
mother was, a distance apart that scales with the mother's size, each smaller than the mother and
about as big as the other. A nucleus that the detector splits in two gives a pair of fragments
that overlap each other far more than two daughters do; unrelated neighbours give a pair whose
midpoint is far from the mother, or whose sizes differ. :func:`plausible_daughters` tests a
batch of (mother, daughter, daughter) triples against the tolerances of
:class:`~napari_cellect.settings.linking.LinkingConfig` (all in units of the mother's radius or ratios, so
they hold at every nucleus size); the linker (``track/link.py``) lets a cell take a second child
only where the pair passes.
"""

from __future__ import annotations

import numpy as np

from napari_cellect.settings.linking import LinkingConfig
from napari_cellect.track.detections import Detections
from napari_cellect.track.scoring_protocol import scaled

#: Guards the ratios against zero radii (a zero radius fails every size test).
_TINY = 1e-6


def plausible_daughters(
    mothers: Detections,
    daughters: Detections,
    mother_idx: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    config: LinkingConfig,
    z_ratio: float,
) -> np.ndarray:
    """(P,) True where detections ``first[p]`` and ``second[p]`` of ``daughters`` may be the two
    daughters of ``mother_idx[p]`` of ``mothers`` (see :class:`LinkingConfig`, ``daughter_*``).

    Distances are in scaled space ``(z * z_ratio, y, x)``; ``mothers`` may hold motion-predicted
    positions. With ``config.division_geometry`` off every pair passes.
    """
    mother_idx = np.asarray(mother_idx, dtype=np.int64)
    first = np.asarray(first, dtype=np.int64)
    second = np.asarray(second, dtype=np.int64)
    ok = np.ones(len(mother_idx), dtype=bool)
    if not config.division_geometry or len(mother_idx) == 0:
        return ok
    p_m = scaled(mothers.positions, z_ratio)[mother_idx]
    p_1 = scaled(daughters.positions, z_ratio)[first]
    p_2 = scaled(daughters.positions, z_ratio)[second]
    r_m = np.maximum(np.asarray(mothers.radius, np.float64)[mother_idx], _TINY)
    r_1 = np.asarray(daughters.radius, np.float64)[first]
    r_2 = np.asarray(daughters.radius, np.float64)[second]
    separation = np.linalg.norm(p_1 - p_2, axis=1)
    off_centre = np.linalg.norm(0.5 * (p_1 + p_2) - p_m, axis=1)
    small, large = np.minimum(r_1, r_2), np.maximum(r_1, r_2)
    ok &= off_centre <= config.daughter_midpoint_radii * r_m
    ok &= separation >= config.daughter_min_separation_radii * r_m
    ok &= separation <= config.daughter_max_separation_radii * r_m
    ok &= small >= config.daughter_min_radius_ratio * np.maximum(large, _TINY)
    mean_size = 0.5 * (r_1 + r_2) / r_m
    ok &= (mean_size >= config.daughter_min_size) & (mean_size <= config.daughter_max_size)
    ok &= separation >= config.daughter_min_overlap_ratio * (r_1 + r_2)
    return ok
