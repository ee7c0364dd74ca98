"""Merging duplicate detections of one cell within a frame: :class:`MergeConfig`
(``track/merge.py``)."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from napari_cellect.settings.checks import (
    check_choice,
    check_non_negative,
    check_positive_int,
    check_probability,
)

SymmetricMode = Literal["mean", "max"]
SYMMETRIC_MODES: tuple[str, ...] = typing.get_args(SymmetricMode)


@dataclass(frozen=True)
class MergeConfig:
    """Merging duplicate detections of one cell within a frame (``track/merge.py``)."""

    k: int = 5
    """Nearest same-frame neighbours scored per detection."""
    threshold: float = 0.5
    """A pair merges when its combined duplicate probability is above this."""
    max_distance_radii: float = 0.8
    """Distance gate in radii (of the larger of the two detections): duplicates sit inside one
    nucleus..."""
    max_distance_floor: float = 3.0
    """...but never smaller than this (scaled voxels), so cells with tiny predicted radii still
    merge plateaus."""
    symmetric: SymmetricMode = "mean"
    """How the two directions' scores of a pair combine: ``mean`` (conservative: a wrong merge
    loses a real cell, a missed one leaves a duplicate that linking tolerates) or ``max`` (either
    direction suffices). A direction that was not scored (one detection is not among the other's
    k nearest) is left out rather than counted as zero."""

    def __post_init__(self) -> None:
        check_positive_int(self, "k")
        check_probability(self, "threshold")
        check_non_negative(self, "max_distance_radii", "max_distance_floor")
        check_choice(self, "symmetric", SYMMETRIC_MODES)
