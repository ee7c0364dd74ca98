"""Linking frame t to frame t+1: :class:`LinkingConfig` (``track/link.py``, the division tests
in ``track/division_geometry.py``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from napari_cellect.errors import InputError
from napari_cellect.settings.checks import (
    check_non_negative,
    check_positive_int,
    check_probability,
)


@dataclass(frozen=True)
class LinkingConfig:
    """Linking frame t to frame t+1 (``track/link.py``); costs are negative log probabilities:
    a link of probability p costs ``-log p``."""

    k: int = 5
    """Candidates per cell: its k nearest cells in the next frame (scaled space)."""
    max_distance_radii: float = 4.0
    """A link may span at most this many radii of the source cell."""
    radius_floor: float = 3.0
    """Smallest radius used by the gate, so a tiny predicted radius still allows motion."""
    max_distance: float = float("inf")
    """Hard cap on a link's length in scaled voxels, on top of the radius gate."""
    link_threshold: float = 0.1
    """Candidates with ``p_match`` below this are never linked."""
    division_threshold: float = 0.5
    """A cell may get a second child only when its ``p_divide`` is at least this; the second
    child then costs ``-log p_divide`` on top of its link cost."""
    appear_cost: float = 2.0
    """Cost of a cell without a parent (a track start)."""
    disappear_cost: float = 2.0
    """Cost of a cell without a child (a track end). A lone link is taken when
    ``-log p_match < appear_cost + disappear_cost``."""
    gap_closing: bool = False
    """Also join a track ending at frame f to one starting at frame f + 2 (one missed frame)."""
    gap_cost: float = 1.0
    """Extra cost of a link over a missing frame, on top of its ``-log p_match``."""
    gap_distance_factor: float = 2.0
    """The distance gate is multiplied by this for gap links (two frame intervals of motion)."""
    min_probability: float = 1e-6
    """Probabilities are clipped to at least this before taking logs."""
    motion_prediction: bool = True
    """Search and score each cell's candidates around where its last step predicts it
    (``position + persistence * last step``), with the persistence measured on the links
    already made (least squares of each step on the previous one, clipped to [0, 1]). Follows
    drift and directed migration; on random motion the persistence is about 0 and the search
    stays at the cell's position."""
    min_motion_samples: int = 20
    """Pairs of consecutive steps needed before the measured persistence is used (0 before)."""
    detector_division_weight: float = 0.5
    """Weight of the U-Net's own division probability of a cell in its ``p_divide`` (the rest
    is the link scorer's): the scorer learned daughters' look on its training data and misses
    divisions drawn otherwise, the U-Net's division head held up better
    (``track/division_evidence.py``). 0: the scorer's alone."""
    daughter_distance_scale: float = 1.0
    """A cell whose ``p_divide`` clears ``division_threshold`` scores each candidate at least
    as a daughter at that distance: ``sigmoid(3 - (d / (s * r_m))**2 / 2)`` with ``s`` this
    scale and ``r_m`` the cell's radius (``track/division_evidence.py``); the ``daughter_*``
    tests below then decide which pair is plausible. 0: the scorer's ``p_match`` alone."""
    division_geometry: bool = True
    """A cell may take a second child only where the two children are a plausible pair of its
    daughters (``track/division_geometry.py``): every ``daughter_*`` test below holds, each
    relative to the mother's radius ``r_m`` (so they hold at every nucleus size) and measured
    from the mother's (motion-predicted) position. A nucleus that the detector splits in two
    gives fragments close together inside the mother, and is then linked as one cell plus a
    track start, not as a division. False: any two candidates (the linker before this test).
    The tolerances were chosen on the validation series (301-313) from the detector's positions
    and radii at true divisions (``docs/architecture.md``, Linking): on them they cost 2 of 202
    found divisions and remove about half of the false ones (82 -> 44), most of them split
    nuclei."""
    daughter_midpoint_radii: float = 1.0
    """The midpoint of the two daughters lies within this many ``r_m`` of the mother: they sit
    on either side of it, not both on one side (true divisions: at most 0.93, with motion)."""
    daughter_min_separation_radii: float = 0.5
    """The daughters are at least this many ``r_m`` apart (true divisions: 0.55 and more; the
    fragments of a nucleus split by the detector: 0.25-0.8)..."""
    daughter_max_separation_radii: float = 3.0
    """...and at most this many (true divisions: up to 2.1 on our simulator's validation
    series; up to 2.7 on the generalisation suite's validation part, whose daughters move
    apart faster)."""
    daughter_min_radius_ratio: float = 0.7
    """The smaller daughter's radius is at least this fraction of the larger's (true divisions:
    0.72 and more)."""
    daughter_min_size: float = 0.45
    """The daughters' mean radius is at least this fraction of ``r_m`` (true divisions: 0.51 and
    more)..."""
    daughter_max_size: float = 1.25
    """...and at most this (volume conservation gives ``2**(-1/3) = 0.79``; the detector's radii
    of condensed mothers and newborn daughters stray from it: 0.51-1.21 at true divisions)."""
    daughter_min_overlap_ratio: float = 0.3
    """The daughters' distance is at least this fraction of the sum of their radii: two
    detections closer than that overlap so much that together they look like one nucleus split
    in two by the detector, and are not a division (the detector's newborn daughters overlap
    too: down to 0.34 at true divisions)."""

    def __post_init__(self) -> None:
        check_positive_int(self, "k")
        check_probability(self, "link_threshold", "division_threshold", "detector_division_weight")
        check_non_negative(
            self,
            "max_distance_radii",
            "radius_floor",
            "max_distance",
            "appear_cost",
            "disappear_cost",
            "gap_cost",
            "gap_distance_factor",
            "min_motion_samples",
            "daughter_distance_scale",
            "daughter_midpoint_radii",
            "daughter_min_separation_radii",
            "daughter_max_separation_radii",
            "daughter_min_radius_ratio",
            "daughter_min_size",
            "daughter_max_size",
            "daughter_min_overlap_ratio",
        )
        if not (math.isfinite(self.appear_cost) and math.isfinite(self.disappear_cost)):
            raise InputError("LinkingConfig.appear_cost and disappear_cost must be finite")
        if not 0.0 < self.min_probability < 1.0:
            raise InputError(
                f"LinkingConfig.min_probability must be in (0, 1), found {self.min_probability}"
            )
        for low, high in (
            ("daughter_min_separation_radii", "daughter_max_separation_radii"),
            ("daughter_min_size", "daughter_max_size"),
        ):
            if getattr(self, low) > getattr(self, high):
                raise InputError(
                    f"LinkingConfig.{low} ({getattr(self, low)}) must not exceed "
                    f"{high} ({getattr(self, high)})"
                )
