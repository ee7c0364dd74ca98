"""The peak finder's settings: :class:`DetectionConfig` (``infer/detect.py``).

Distances are in XY pixels of the scaled space ``(z * z_ratio, y, x)``."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from napari_cellect.errors import InputError
from napari_cellect.settings.checks import (
    check_choice,
    check_non_negative,
    check_probability,
    int_triple,
)

CentreMode = Literal["softmax", "ordinal"]
CENTRE_MODES: tuple[str, ...] = typing.get_args(CentreMode)


@dataclass(frozen=True)
class DetectionConfig:
    """The peak finder (``infer/detect.py``): U-Net maps -> detections."""

    threshold: float = 0.5
    """Minimum centre probability of a detection (its score); 0 keeps every foreground local
    maximum (the original had no threshold)."""
    foreground_threshold: float = 0.5
    """Minimum ``1 - P(background)`` of the segmentation head in the foreground ball around a
    peak."""
    nms_radius_factor: float = 0.6
    """A detection suppresses weaker ones within this fraction of its predicted radius..."""
    min_nms_radius: float = 2.0
    """...or within this distance (XY pixels), whichever is larger (guards against tiny
    predicted radii)."""
    include_other_class: bool = False
    """Keep peaks whose segmentation argmax is class 2 ("other", e.g. polar bodies)."""
    centre_mode: CentreMode = "softmax"
    """Centre logits -> probability: ``softmax`` (softmax of the top level) or ``ordinal``
    (sigmoid of the top level minus the best lower level; what the original's loss trains)."""
    peak_radius: float = 2.0
    """Radius (XY pixels) of the local-maximum neighbourhood: an ellipsoid of semi-axes
    ``peak_radius`` in y and x and ``max(1, peak_radius / z_ratio)`` slices in z."""
    foreground_radius: float = 1.0
    """A peak must be foreground in every voxel of a ball of this radius around it (0: the
    voxel only)."""
    min_radius: float = 0.0
    """Detections with a smaller predicted radius are dropped (debris); 0 keeps all."""
    border_margin: tuple[int, int, int] = (0, 0, 0)
    """Detections closer than this many voxels (z, y, x) to the volume border are dropped; 0 keeps
    cells cut by the border. One number applies to all three axes."""
    refine: bool = True
    """Sub-voxel positions by quadratic interpolation of the centre logit; False keeps voxel
    positions."""

    def __post_init__(self) -> None:
        check_probability(self, "threshold", "foreground_threshold")
        check_non_negative(
            self,
            "nms_radius_factor",
            "min_nms_radius",
            "peak_radius",
            "foreground_radius",
            "min_radius",
            finite=True,
        )
        check_choice(self, "centre_mode", CENTRE_MODES)
        margin = int_triple(self.border_margin, "DetectionConfig.border_margin")
        if min(margin) < 0:
            raise InputError(
                "DetectionConfig.border_margin must be 3 integers >= 0 (z, y, x), found "
                f"{self.border_margin!r}"
            )
        object.__setattr__(self, "border_margin", margin)
