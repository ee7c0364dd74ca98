"""Configuration dataclasses: every threshold and setting of the pipeline, with its meaning.

They hold plain values only (no torch, no numpy arrays), are frozen, and convert to and from
plain dicts (:func:`config_to_dict`, :func:`config_from_dict`) so that they can be saved inside a
model bundle and shown by ``cellect track --help``.

Sections (keep new configs in the matching section, or add a section):

1. Intensity normalisation   -- :class:`NormalizationConfig`
2. Inference thresholds      -- :class:`DetectionConfig`, :class:`MergeConfig`,
                                :class:`LinkingConfig`, grouped in :class:`TrackingConfig`
                                (saved in a model bundle as ``thresholds``)
3. Helpers                   -- validation, dict conversion

The field names are those of the modules that apply them (``infer/normalize.py``,
``infer/detect.py``, ``track/merge.py``, ``track/link.py``), whose ``from_any`` converters accept
these objects.

Distances are in scaled voxel space ``(z * z_ratio, y, x)``, i.e. in XY pixels, and radii are the
U-Net's radius head (XY pixels). Probabilities are in [0, 1].
"""

from __future__ import annotations

import dataclasses
import logging
import math
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from napari_cellect.errors import InputError

logger = logging.getLogger(__name__)

# ====================================================================== 1. intensity normalisation

NORMALIZATION_MODES = ("percentile", "cellect-log", "none")


@dataclass(frozen=True)
class NormalizationConfig:
    """How a frame pair becomes U-Net input (applied by ``infer/normalize.py``).

    Both frames of a pair are normalised *together* (one set of statistics), so the network sees
    the true intensity change between t and t+1.

    - ``percentile`` (our models): ``(v - p_low) / (p_high - p_low)``, percentiles over the pair.
    - ``cellect-log`` (imported original weights, cellect-method.md §1.1): clip to
      [``clip_low``, ``clip_high``], zero values below ``zero_below``, raise everything below the
      smallest positive value m to it, then ``log1p(enhance * (v - m) + offset)`` (or without
      ``- m`` when ``subtract_minimum`` is off, as the original CLI). The original network was
      trained on plain ``log1p`` of 16-bit data whose background sits near 2000; the +1900 offset
      puts any data's background there.
    - ``none``: the values as float32.
    """

    mode: str = "percentile"
    """``percentile``, ``cellect-log`` or ``none``."""
    low_percentile: float = 1.0
    """``percentile``: this percentile of the pair maps to 0."""
    high_percentile: float = 99.8
    """``percentile``: this percentile of the pair maps to 1."""
    max_samples: int = 1 << 20
    """``percentile``: estimate the percentiles from at most this many regularly spaced voxels."""
    clip_output: bool = False
    """``percentile``: clip the result to [0, 1]."""
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

    def __post_init__(self) -> None:
        if self.mode not in NORMALIZATION_MODES:
            raise InputError(
                f"NormalizationConfig.mode must be one of {NORMALIZATION_MODES}, found {self.mode!r}"
            )
        if not 0.0 <= self.low_percentile < self.high_percentile <= 100.0:
            raise InputError(
                "NormalizationConfig percentiles must satisfy 0 <= low < high <= 100, found "
                f"low={self.low_percentile}, high={self.high_percentile}"
            )
        _check_positive_int(self, "max_samples")
        if self.clip_low > self.clip_high:
            raise InputError(
                f"NormalizationConfig.clip_low ({self.clip_low}) must not exceed clip_high "
                f"({self.clip_high})"
            )


# ======================================================================= 2. inference thresholds


@dataclass(frozen=True)
class DetectionConfig:
    """The peak finder (``infer/detect.py``): U-Net maps -> detections."""

    threshold: float = 0.5
    """Minimum centre probability of a detection (its score); 0 keeps every foreground local
    maximum (the original had no threshold)."""
    foreground_threshold: float = 0.5
    """Minimum ``1 - P(background)`` in the foreground ball around a peak."""
    nms_radius_factor: float = 0.6
    """A detection suppresses weaker ones within this fraction of its predicted radius..."""
    min_nms_radius: float = 2.0
    """...or within this distance (XY pixels), whichever is larger."""
    include_other_class: bool = False
    """Keep peaks whose segmentation argmax is class 2 ("other", e.g. polar bodies)."""
    centre_mode: str = "softmax"
    """Centre logits -> probability: ``softmax`` (softmax of the top level) or ``ordinal``
    (sigmoid of the top level minus the best lower level; what the original's loss trains)."""
    peak_radius: float = 2.0
    """Radius (XY pixels) of the local-maximum neighbourhood."""
    foreground_radius: float = 1.0
    """A peak must be foreground in a ball of this radius around it (0: the voxel only)."""
    min_radius: float = 0.0
    """Detections with a smaller predicted radius are dropped (debris); 0 keeps all."""
    border_margin: tuple[int, int, int] = (0, 0, 0)
    """Detections closer than this many voxels (z, y, x) to the volume border are dropped."""
    refine: bool = True
    """Sub-voxel positions by quadratic interpolation of the centre logit; False keeps voxel
    positions."""

    def __post_init__(self) -> None:
        _check_probability(self, "threshold", "foreground_threshold")
        _check_non_negative(
            self, "nms_radius_factor", "min_nms_radius", "peak_radius", "foreground_radius",
            "min_radius",
        )  # fmt: skip
        if self.centre_mode not in ("softmax", "ordinal"):
            raise InputError(
                f"DetectionConfig.centre_mode must be 'softmax' or 'ordinal', found {self.centre_mode!r}"
            )
        margin = tuple(int(m) for m in self.border_margin)
        if len(margin) != 3 or min(margin) < 0:
            raise InputError(
                f"DetectionConfig.border_margin must be 3 integers >= 0, found {self.border_margin!r}"
            )
        object.__setattr__(self, "border_margin", margin)


@dataclass(frozen=True)
class MergeConfig:
    """Merging duplicate detections of one cell within a frame (``track/merge.py``)."""

    k: int = 5
    """Nearest same-frame neighbours scored per detection."""
    threshold: float = 0.5
    """A pair merges when its combined duplicate probability is above this."""
    max_distance_radii: float = 0.8
    """Distance gate in radii (of the larger of the two detections)..."""
    max_distance_floor: float = 3.0
    """...but never smaller than this (scaled voxels)."""
    symmetric: str = "mean"
    """How the two directions' scores of a pair combine: ``mean`` (both must agree) or ``max``."""

    def __post_init__(self) -> None:
        _check_positive_int(self, "k")
        _check_probability(self, "threshold")
        _check_non_negative(self, "max_distance_radii", "max_distance_floor")
        if self.symmetric not in ("mean", "max"):
            raise InputError(f"MergeConfig.symmetric must be 'mean' or 'max', found {self.symmetric!r}")


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
    """A cell may get a second child only when its ``p_divide`` is at least this."""
    appear_cost: float = 2.0
    """Cost of a cell without a parent (a track start)."""
    disappear_cost: float = 2.0
    """Cost of a cell without a child (a track end)."""
    gap_closing: bool = False
    """Also join a track ending at frame f to one starting at frame f + 2."""
    gap_cost: float = 1.0
    """Extra cost of a link over a missing frame."""
    gap_distance_factor: float = 2.0
    """The distance gate is multiplied by this for gap links."""
    min_probability: float = 1e-6
    """Probabilities are clipped to at least this before taking logs."""

    def __post_init__(self) -> None:
        _check_positive_int(self, "k")
        _check_probability(self, "link_threshold", "division_threshold")
        _check_non_negative(
            self, "max_distance_radii", "radius_floor", "max_distance", "appear_cost",
            "disappear_cost", "gap_cost", "gap_distance_factor",
        )  # fmt: skip
        if not (math.isfinite(self.appear_cost) and math.isfinite(self.disappear_cost)):
            raise InputError("LinkingConfig.appear_cost and disappear_cost must be finite")
        if not 0.0 < self.min_probability < 1.0:
            raise InputError(
                f"LinkingConfig.min_probability must be in (0, 1), found {self.min_probability}"
            )


@dataclass(frozen=True)
class TrackingConfig:
    """Every inference threshold; saved in a model bundle as ``thresholds``."""

    detection: DetectionConfig = field(default_factory=DetectionConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    link: LinkingConfig = field(default_factory=LinkingConfig)

    @classmethod
    def cellect_original(cls) -> TrackingConfig:
        """For imported original weights: the original's rules where they map onto ours
        (cellect-method.md §1.4, §3.4, §4.1): peaks where the top centre level wins (ordinal
        p > 0.5), merge at P > 0.6 within max(5, 0.6 r), links within 6 x max(r, 5), link
        threshold 0.1, divisions at P(divides) >= 0.5."""
        return cls(
            detection=DetectionConfig(centre_mode="ordinal", threshold=0.5),
            merge=MergeConfig(k=5, threshold=0.6, max_distance_radii=0.6, max_distance_floor=5.0),
            link=LinkingConfig(
                k=5, max_distance_radii=6.0, radius_floor=5.0, link_threshold=0.1,
                division_threshold=0.5,
            ),
        )  # fmt: skip


# ==================================================================================== 3. helpers


def _check_probability(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not 0.0 <= value <= 1.0:
            raise InputError(f"{type(obj).__name__}.{name} must be in [0, 1], found {value}")


def _check_non_negative(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value < 0:
            raise InputError(f"{type(obj).__name__}.{name} must be >= 0, found {value}")


def _check_positive_int(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{type(obj).__name__}.{name} must be an integer >= 1, found {value!r}")


C = TypeVar("C")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A (nested) config dataclass as plain dicts, lists and scalars."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(config)


def config_from_dict(cls: type[C], values: Any, strict: bool = False) -> C:
    """Rebuild a (nested) config dataclass from :func:`config_to_dict` output.

    Missing fields take their defaults, so configs saved by older versions still load. Unknown
    fields raise :class:`InputError` when ``strict``, else they are logged and ignored (a file
    written by a newer version). Tuple-typed fields are converted back from lists.
    """
    if not isinstance(values, dict):
        raise InputError(f"expected a dict for {cls.__name__}, found {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        if strict:
            raise InputError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
        logger.warning("ignoring unknown %s field(s) %s", cls.__name__, unknown)
    kwargs = {}
    for name in known & set(values):
        hint = hints[name]
        value = values[name]
        if dataclasses.is_dataclass(hint):
            value = config_from_dict(hint, value, strict)
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except InputError:
        raise
    except (TypeError, ValueError) as error:
        raise InputError(f"invalid {cls.__name__}: {error}") from error
