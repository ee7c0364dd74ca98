"""How a frame pair becomes U-Net input: :class:`NormalizationConfig` (saved in a model bundle
as ``normalization``; applied by ``infer/normalize.py``)."""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Literal

from napari_cellect.errors import InputError
from napari_cellect.settings.checks import check_choice, check_positive_int

NormalizationMode = Literal["percentile", "cellect-log", "none"]
NORMALIZATION_MODES: tuple[str, ...] = typing.get_args(NormalizationMode)


@dataclass(frozen=True)
class NormalizationConfig:
    """How a frame pair becomes U-Net input (applied by ``infer/normalize.py``).

    Both frames of a pair are normalised *together* (one set of statistics), so the network sees
    the true intensity change between t and t+1.

    - ``percentile`` (our models): ``(v - p_low) / (p_high - p_low)``, percentiles over the pair.
    - ``cellect-log`` (imported original weights, docs/method.md §2.2): clip to
      [``clip_low``, ``clip_high``], zero values below ``zero_below``, raise everything below the
      smallest positive value m to it, then ``log1p(enhance * (v - m) + offset)`` (or without
      ``- m`` when ``subtract_minimum`` is off, as the original CLI). The original network was
      trained on plain ``log1p`` of 16-bit data whose background sits near 2000; the +1900 offset
      puts any data's background there.
    - ``none``: the values as float32 (data already normalised the way the model was trained).

    """

    mode: NormalizationMode = "percentile"
    """``percentile``, ``cellect-log`` or ``none``."""
    low_percentile: float = 1.0
    """``percentile``: this percentile of the pair maps to 0."""
    high_percentile: float = 99.8
    """``percentile``: this percentile of the pair maps to 1."""
    max_samples: int = 1 << 20
    """``percentile``: estimate the percentiles from at most this many regularly spaced voxels:
    10-50x faster on a 2x41x512x512 pair, and off from the exact percentiles by far less than the
    spread of real data."""
    clip_output: bool = False
    """``percentile``: clip the result to [0, 1] (off: bright outliers keep their relative
    brightness, as in CSBDeep-style normalisation)."""
    clip_low: float = 0.0
    """``cellect-log``: values below are raised to it (original ``--low``)."""
    clip_high: float = 65535.0
    """``cellect-log``: values above are lowered to it (original ``--high``)."""
    zero_below: float = 0.0
    """``cellect-log``: values below are set to 0 first (original ``--thresh0``)."""
    enhance: float = 1.0
    """``cellect-log``: intensity multiplier before the offset (original ``--enhance``)."""
    offset: float = 1900.0
    """``cellect-log``: added before ``log1p``."""
    subtract_minimum: bool = True
    """``cellect-log``: subtract the smallest positive value before adding ``offset`` (as the
    original evaluation script); False is the original CLI."""
    reference_radius: float | None = None
    """Spatial, not intensity: the typical nucleus radius (xy pixels) of the data the model was
    trained on (the median annotated radius). Given a ``cell_radius`` for the images, prediction
    resizes y and x by ``reference_radius / cell_radius`` so their nuclei look the size the
    model knows (``infer/rescale.py``); None: the model cannot rescale."""
    min_depth: int = 1
    """Spatial too: the z depth of the model's training crops. A thinner volume (a 2D frame, a
    thin stack) is padded in z to this depth, centred and mirrored (a single slice repeated),
    as the training crops were; a 2D frame between zero padding is an input the network never
    saw (2D+t division F1 0.20 -> 0.99 on the default model's validation series). 1: none."""
    min_z_ratio: float | None = None
    """Spatial too: the smallest z spacing over the xy pixel the model knows. A stack finer in z
    (after any y/x resize) is shrunk in z to it before the U-Net (``infer/rescale.py``): a model
    that learned nuclei spanning a few slices takes each section of a nucleus that spans as many
    slices as pixels for a nucleus of its own. None: z is never resized."""

    def __post_init__(self) -> None:
        check_choice(self, "mode", NORMALIZATION_MODES)
        if not 0.0 <= self.low_percentile < self.high_percentile <= 100.0:
            raise InputError(
                "NormalizationConfig percentiles must satisfy 0 <= low < high <= 100, found "
                f"low_percentile={self.low_percentile}, high_percentile={self.high_percentile}"
            )
        check_positive_int(self, "max_samples")
        if self.min_z_ratio is not None and not (
            isinstance(self.min_z_ratio, (int, float))
            and math.isfinite(self.min_z_ratio)
            and self.min_z_ratio > 0
        ):
            raise InputError(
                "NormalizationConfig.min_z_ratio: expected a number > 0 or None, found "
                f"{self.min_z_ratio!r}"
            )
        check_positive_int(self, "min_depth")
        if self.reference_radius is not None and not (
            math.isfinite(self.reference_radius) and self.reference_radius > 0
        ):
            raise InputError(
                "NormalizationConfig.reference_radius: expected None or a finite number > 0, "
                f"found {self.reference_radius}"
            )
        if not self.clip_low <= self.clip_high:
            raise InputError(
                f"NormalizationConfig.clip_low ({self.clip_low}) must not exceed clip_high "
                f"({self.clip_high})"
            )
