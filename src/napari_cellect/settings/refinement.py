"""Looking again, magnified, where a division was predicted: :class:`DivisionRefinementConfig`
(``infer/refine.py``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from napari_cellect.errors import InputError


@dataclass(frozen=True)
class DivisionRefinementConfig:
    """Looking again, magnified, where a division was predicted (``infer/refine.py``).

    Just after a division the two daughters are small and touch; at the U-Net's working
    resolution they can fuse into one peak. Around each cell predicted to divide that got fewer
    than two children, the next frame is predicted again on a crop magnified ``scale`` times in
    every axis, and its detections there replace the first ones.
    """

    enabled: bool = True
    """Refine at all (off for models that resolve daughters at their own scale)."""
    scale: float = 1.7
    """Magnification of the crop, the same in z, y and x (so the z ratio the model sees is the
    images' own). Chosen with ``reach`` by ``benchmarks/tune_thresholds.py`` (stage 2) on the
    validation series among 1.5, 1.7 and 2.0: 2.0 magnifies nuclei beyond the sizes the model
    knows."""
    reach: float = 2.5
    """Daughters are looked for within this many mother radii of the mother (scaled space);
    1.5 and 2.5 scored within 0.002 on the validation series (daughters sit about one mother
    radius apart, plus their motion)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale >= 1.0):
            raise InputError(
                f"DivisionRefinementConfig.scale: expected a number >= 1, found {self.scale}"
            )
        if not (math.isfinite(self.reach) and self.reach > 0):
            raise InputError(
                f"DivisionRefinementConfig.reach: expected a number > 0, found {self.reach}"
            )
