"""How likely a cell is to divide, and how likely a nearby cell is its daughter, from more than
the link scorer.

The link scorer (an MLP on embeddings, radii and offsets) judges a mother and her daughters by
the look they had in its training data. On divisions drawn otherwise (another simulator, real
lineages) it says "no" to true divisions: on the validation part of the generalisation suite
(``benchmarks/bench_generalization.py --part validation``) its ``p_divide`` was below 0.15 at
most true mothers whose U-Net division probability was 0.6-0.9, and its ``p_match`` to the
second daughter was often near 0. Two further sources of evidence are used here:

- :func:`division_probability`: the U-Net's own division probability of the mother (it sees the
  mother's pixels in both frames) is averaged with the scorer's ``p_divide``
  (``LinkingConfig.detector_division_weight``);
- :func:`with_daughter_floor`: for a cell that may divide (its ``p_divide`` clears
  ``division_threshold``), a candidate's ``p_match`` is at least the probability of a daughter
  at that distance from the mother (``LinkingConfig.daughter_distance_scale``). Whether two
  such candidates are a plausible *pair* of daughters stays the job of
  :mod:`~napari_cellect.track.division_geometry`.

Together they raised the mean division F1 on that validation part from 0.10 to 0.37, and on the
project's own validation series from 0.857 to 0.865, with link F1 unchanged within 0.001
(``docs/benchmarks.md``, "Division evidence beyond the link scorer").
"""

from __future__ import annotations

import numpy as np

from napari_cellect.settings.linking import LinkingConfig

#: Log-odds of a daughter at the mother's very centre (probability 0.95), as the geometric
#: link scorer's ``match_logit``; the distance term then lowers it.
DAUGHTER_LOGIT_AT_CENTRE = 3.0


def division_probability(
    scorer_p_divide: np.ndarray,
    detector_division: np.ndarray,
    config: LinkingConfig,
    *,
    scorer_includes_detector: bool = False,
) -> np.ndarray:
    """(n,) ``p_divide`` the linker uses: the scorer's and the U-Net's division probability of
    each cell, weighted by ``config.detector_division_weight`` (0: the scorer's alone). A scorer
    whose ``p_divide`` already holds the U-Net's (``scorer_includes_detector``, as the geometric
    scorer's noisy-or does) is used as it is."""
    w = config.detector_division_weight
    scorer_p = np.asarray(scorer_p_divide, dtype=np.float32)
    if w == 0 or scorer_includes_detector:
        return scorer_p
    detector_p = np.asarray(detector_division, dtype=np.float32)
    return ((1.0 - w) * scorer_p + w * detector_p).astype(np.float32)


def with_daughter_floor(
    p_match: np.ndarray,
    distance: np.ndarray,
    valid: np.ndarray,
    mother_radius: np.ndarray,
    p_divide: np.ndarray,
    config: LinkingConfig,
) -> np.ndarray:
    """(n_a, k) ``p_match`` where each candidate of a cell that may divide (``p_divide >=
    config.division_threshold``) scores at least ``sigmoid(3 - (d / (s * r_m))**2 / 2)``, with
    ``d`` its scaled distance from the cell, ``r_m`` the cell's radius (at least
    ``config.radius_floor``) and ``s`` ``config.daughter_distance_scale`` (0: no floor)."""
    scale = config.daughter_distance_scale
    p_match = np.asarray(p_match, dtype=np.float32)
    if scale == 0 or p_match.size == 0:
        return p_match
    r_m = np.maximum(np.asarray(mother_radius, np.float64), config.radius_floor)[:, None]
    logit = DAUGHTER_LOGIT_AT_CENTRE - 0.5 * (np.where(valid, distance, 0.0) / (scale * r_m)) ** 2
    floor = np.where(valid, 1.0 / (1.0 + np.exp(-logit)), 0.0)
    may_divide = (np.asarray(p_divide) >= config.division_threshold)[:, None]
    return np.where(may_divide, np.maximum(p_match, floor), p_match).astype(np.float32)
