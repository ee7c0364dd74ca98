"""Configuration dataclasses: every threshold and setting of the pipeline, with its meaning.

They hold plain values only (no torch, no numpy arrays), are frozen, validate themselves on
construction (:class:`InputError` names the field), and convert to and from plain dicts
(:func:`config_to_dict`, :func:`config_from_dict`) so that they can be saved inside a model
bundle and shown by ``cellect track --show-config``. This module imports nothing heavy, so
torch-free code (``track/``, ``data/``) and the command line can use it.

Sections (keep new configs in the matching section, or add a section):

1. Conversion                -- ``from_any`` of every config (:class:`_FromAny`)
2. Intensity normalisation   -- :class:`NormalizationConfig`
3. Inference thresholds      -- :class:`DetectionConfig`, :class:`MergeConfig`,
                                :class:`LinkingConfig`, grouped in :class:`TrackingConfig`
                                (saved in a model bundle as ``thresholds``)
4. Tiling                    -- :class:`TilingConfig` (sliding-window prediction)
5. File formats              -- defaults of the readers that the command line shows
6. Helpers                   -- validation, dict conversion

Each config is defined here only; the modules that apply them (``infer/normalize.py``,
``infer/detect.py``, ``track/merge.py``, ``track/link.py``, ``infer/tiling.py``) import and
re-export them.

Distances are in scaled voxel space ``(z * z_ratio, y, x)``, i.e. in XY pixels, and radii are the
U-Net's radius head (XY pixels). Probabilities are in [0, 1].
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from napari_cellect.errors import InputError

logger = logging.getLogger(__name__)

# ============================================================================== 1. conversion

F = TypeVar("F", bound="_FromAny")


class _FromAny:
    """Mixin giving a config class :meth:`from_any`: the one converter from every form in which
    callers hold settings (None, the config itself, a dict, a bundle's ``TrackingConfig``...)."""

    #: attribute (or key) under which a holder carries this config, e.g. ``TrackingConfig.link``,
    #: ``ModelBundle.normalization``; None when configs of this kind are never nested
    _section: ClassVar[str | None] = None
    #: what the settings are called in error messages
    _what: ClassVar[str] = "settings"
    #: fields an object must have to be read attribute by attribute
    _required: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_any(cls: type[F], value: Any) -> F:
        """Coerce ``value`` into this config.

        Accepted: None (the defaults); an instance; a mapping of field values, or one holding
        the config under the section key (``{"link": {...}}``); an object holding it as the
        section attribute (a ``TrackingConfig``; a ``ModelBundle`` for the normalisation); any
        object with attributes of the same names. Unknown mapping keys raise :class:`InputError`.
        """
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        section = cls._section
        if isinstance(value, Mapping):
            if section is not None and section in value:
                return cls.from_any(value[section])
            names = _field_names(cls)
            unknown = sorted(map(str, set(value) - set(names)))
            if unknown:
                raise InputError(
                    f"{cls._what}: expected keys among {', '.join(names)}, "
                    f"found unknown {', '.join(unknown)}"
                )
            return cls(**dict(value))
        nested = None if section is None else getattr(value, section, None)
        if nested is not None:
            return cls.from_any(nested)
        return cls._from_object(value)

    @classmethod
    def _from_object(cls: type[F], value: Any) -> F:
        """The last resort of :meth:`from_any`: read the fields as attributes of ``value``."""
        found = {name: getattr(value, name) for name in _field_names(cls) if hasattr(value, name)}
        if not found or any(name not in found for name in cls._required):
            raise InputError(
                f"{cls._what}: expected a {cls.__name__}, a mapping or an object with its "
                f"fields, found {type(value).__name__}"
            )
        return cls(**found)


# ================================================================= 2. intensity normalisation

NormalizationMode = Literal["percentile", "cellect-log", "none"]
NORMALIZATION_MODES: tuple[str, ...] = typing.get_args(NormalizationMode)


@dataclass(frozen=True)
class NormalizationConfig(_FromAny):
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

    :meth:`from_any` also accepts a mode string.
    """

    _section = "normalization"
    _what = "normalisation settings"
    _required = ("mode",)

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

    def __post_init__(self) -> None:
        _check_choice(self, "mode", NORMALIZATION_MODES)
        if not 0.0 <= self.low_percentile < self.high_percentile <= 100.0:
            raise InputError(
                "NormalizationConfig percentiles must satisfy 0 <= low < high <= 100, found "
                f"low_percentile={self.low_percentile}, high_percentile={self.high_percentile}"
            )
        _check_positive_int(self, "max_samples")
        _check_positive_int(self, "min_depth")
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

    @classmethod
    def _from_object(cls, value: Any) -> NormalizationConfig:
        if isinstance(value, str):
            return cls(mode=value)  # type: ignore[arg-type]
        return super()._from_object(value)


# ==================================================================== 3. inference thresholds

CentreMode = Literal["softmax", "ordinal"]
CENTRE_MODES: tuple[str, ...] = typing.get_args(CentreMode)
SymmetricMode = Literal["mean", "max"]
SYMMETRIC_MODES: tuple[str, ...] = typing.get_args(SymmetricMode)


@dataclass(frozen=True)
class DetectionConfig(_FromAny):
    """The peak finder (``infer/detect.py``): U-Net maps -> detections."""

    _section = "detection"
    _what = "detection settings"

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
        _check_probability(self, "threshold", "foreground_threshold")
        _check_non_negative(
            self, "nms_radius_factor", "min_nms_radius", "peak_radius", "foreground_radius",
            "min_radius", finite=True,
        )  # fmt: skip
        _check_choice(self, "centre_mode", CENTRE_MODES)
        margin = int_triple(self.border_margin, "DetectionConfig.border_margin")
        if min(margin) < 0:
            raise InputError(
                "DetectionConfig.border_margin must be 3 integers >= 0 (z, y, x), found "
                f"{self.border_margin!r}"
            )
        object.__setattr__(self, "border_margin", margin)


@dataclass(frozen=True)
class MergeConfig(_FromAny):
    """Merging duplicate detections of one cell within a frame (``track/merge.py``)."""

    _section = "merge"
    _what = "merge settings"

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
        _check_positive_int(self, "k")
        _check_probability(self, "threshold")
        _check_non_negative(self, "max_distance_radii", "max_distance_floor")
        _check_choice(self, "symmetric", SYMMETRIC_MODES)


@dataclass(frozen=True)
class LinkingConfig(_FromAny):
    """Linking frame t to frame t+1 (``track/link.py``); costs are negative log probabilities:
    a link of probability p costs ``-log p``."""

    _section = "link"
    _what = "linking settings"

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
    daughter_max_separation_radii: float = 2.5
    """...and at most this many (true divisions: up to 2.1)."""
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
        _check_positive_int(self, "k")
        _check_probability(self, "link_threshold", "division_threshold")
        _check_non_negative(
            self, "max_distance_radii", "radius_floor", "max_distance", "appear_cost",
            "disappear_cost", "gap_cost", "gap_distance_factor", "min_motion_samples",
            "daughter_midpoint_radii", "daughter_min_separation_radii",
            "daughter_max_separation_radii", "daughter_min_radius_ratio", "daughter_min_size",
            "daughter_max_size", "daughter_min_overlap_ratio",
        )  # fmt: skip
        if not (math.isfinite(self.appear_cost) and math.isfinite(self.disappear_cost)):
            raise InputError("LinkingConfig.appear_cost and disappear_cost must be finite")
        if not 0.0 < self.min_probability < 1.0:
            raise InputError(
                f"LinkingConfig.min_probability must be in (0, 1), found {self.min_probability}"
            )
        for low, high in (("daughter_min_separation_radii", "daughter_max_separation_radii"),
                          ("daughter_min_size", "daughter_max_size")):
            if getattr(self, low) > getattr(self, high):
                raise InputError(f"LinkingConfig.{low} ({getattr(self, low)}) must not exceed "
                                 f"{high} ({getattr(self, high)})")  # fmt: skip


@dataclass(frozen=True)
class DivisionRefinementConfig(_FromAny):
    """Looking again, magnified, where a division was predicted (``infer/refine.py``).

    Just after a division the two daughters are small and touch; at the U-Net's working
    resolution they can fuse into one peak. Around each cell predicted to divide that got fewer
    than two children, the next frame is predicted again on a crop magnified ``scale`` times in
    every axis, and its detections there replace the first ones.
    """

    _section = "division_refinement"
    _what = "division refinement settings"

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


@dataclass(frozen=True)
class TrackingConfig:
    """Every inference threshold; saved in a model bundle as ``thresholds``."""

    detection: DetectionConfig = field(default_factory=DetectionConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    link: LinkingConfig = field(default_factory=LinkingConfig)
    division_refinement: DivisionRefinementConfig = field(default_factory=DivisionRefinementConfig)

    @classmethod
    def cellect_original(cls) -> TrackingConfig:
        """For imported original weights: the original's rules where they map onto ours
        (docs/method.md §4, §6, §7.1): peaks where the top centre level wins (ordinal
        p > 0.5), merge at P > 0.6 within max(5, 0.6 r), links within 6 x max(r, 5), link
        threshold 0.1, divisions at P(divides) >= 0.5."""
        return cls(
            detection=DetectionConfig(centre_mode="ordinal", threshold=0.5),
            merge=MergeConfig(k=5, threshold=0.6, max_distance_radii=0.6, max_distance_floor=5.0),
            link=LinkingConfig(
                k=5, max_distance_radii=6.0, radius_floor=5.0, link_threshold=0.1,
                division_threshold=0.5,
            ),
            # a full-resolution network: nothing to magnify
            division_refinement=DivisionRefinementConfig(enabled=False),
        )  # fmt: skip


# =================================================================================== 4. tiling

PadMode = Literal["reflect", "edge", "constant"]
PAD_MODES: tuple[str, ...] = typing.get_args(PadMode)
HeadsDtype = Literal["float16", "float32"]
HEADS_DTYPES: tuple[str, ...] = typing.get_args(HeadsDtype)


@dataclass(frozen=True)
class TilingConfig(_FromAny):
    """How a volume is cut into network-sized tiles (``infer/tiling.py``).

    :meth:`from_any` also accepts a tile shape (Z, Y, X) (or one number for all axes); the
    overlap is then the default, shrunk where the tile is smaller.
    """

    _section = "tiling"
    _what = "tiling settings"

    tile: tuple[int, int, int] = (48, 288, 288)
    """Largest tile (Z, Y, X) in voxels. Its voxel count bounds a tile's memory (about 1.5 GB of
    activations for the ``small`` preset at the default); each volume gets the tiles of at most
    that many voxels that cover it computing the fewest voxels (``infer/tiling.py``): a
    41x512x512 embryo frame four of 41x272x272, a 314x345 2D frame one. Use 32x256x256, what the
    original CELLECT network was trained on, for ``cellect-original``."""
    overlap: tuple[int, int, int] = (8, 32, 32)
    """Overlap (Z, Y, X) between neighbouring tiles. Each tile's owned region stays
    ``overlap // 2`` away from its inner edges; make it at least twice the width of the
    tile-edge artefacts of the network."""
    pad_mode: PadMode = "reflect"
    """How volumes smaller than a tile are padded: ``reflect`` (mirror, keeps texture
    statistics), ``edge`` (repeat the border) or ``constant`` (zeros, i.e. the low percentile
    after normalisation)."""
    pad_to_tile: bool = False
    """Use ``tile`` exactly (rounded up to the model's size multiple) and pad small volumes up
    to it. False fits the tiles to each volume: the networks are fully convolutional with
    per-sample normalisation, and a full tile for a small frame is wasted work."""
    heads_dtype: HeadsDtype = "float16"
    """dtype of the stitched small-head maps (``float16`` halves their memory)."""

    def __post_init__(self) -> None:
        tile = int_triple(self.tile, "TilingConfig.tile")
        overlap = int_triple(self.overlap, "TilingConfig.overlap")
        object.__setattr__(self, "tile", tile)
        object.__setattr__(self, "overlap", overlap)
        if min(tile) < 1 or min(overlap) < 0 or any(o >= t for o, t in zip(overlap, tile)):
            raise InputError(
                "TilingConfig needs tile >= 1 and 0 <= overlap < tile on every axis, "
                f"found tile {tile} and overlap {overlap}"
            )
        _check_choice(self, "pad_mode", PAD_MODES)
        _check_choice(self, "heads_dtype", HEADS_DTYPES)

    @classmethod
    def _from_object(cls, value: Any) -> TilingConfig:
        tile = int_triple(value, "tile")
        overlap = tuple(min(o, t - 1) for o, t in zip(cls().overlap, tile))
        return cls(tile=tile, overlap=overlap)  # type: ignore[arg-type]


# ============================================================================= 5. file formats

#: z spacing in xy pixels of the mskcc-confocal data: linajea ``tracks.txt`` stores z as
#: slice x 5, so its z is divided by this unless a z_ratio is given (``data/annotations.py``)
LINAJEA_Z_RATIO = 5.0


# ================================================================================== 6. helpers


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def int_triple(value: Any, name: str) -> tuple[int, int, int]:
    """``value`` as three ints (Z, Y, X); one integer is repeated. ``name`` is for the error."""
    if isinstance(value, numbers.Integral):
        return (int(value),) * 3
    try:
        items = tuple(int(v) for v in value)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name} must be 3 integers (Z, Y, X), found {value!r}") from error
    if len(items) != 3:
        raise InputError(f"{name} must be 3 integers (Z, Y, X), found {value!r}")
    return items  # type: ignore[return-value]


def _check_choice(obj: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    if value not in choices:
        quoted = [repr(c) for c in choices]
        allowed = " or ".join(quoted) if len(quoted) == 2 else "one of " + ", ".join(quoted)
        raise InputError(f"{type(obj).__name__}.{name} must be {allowed}, found {value!r}")


def _check_probability(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not 0.0 <= value <= 1.0:
            raise InputError(f"{type(obj).__name__}.{name} must be in [0, 1], found {value}")


def _check_non_negative(obj: Any, *names: str, finite: bool = False) -> None:
    """Every field is a number >= 0 (never NaN); with ``finite``, also not infinite."""
    for name in names:
        value = getattr(obj, name)
        if not value >= 0 or (finite and not math.isfinite(value)):
            what = "a finite number >= 0" if finite else ">= 0"
            raise InputError(f"{type(obj).__name__}.{name} must be {what}, found {value}")


def _check_positive_int(obj: Any, *names: str) -> None:
    """Every field is an integer >= 1 (numpy integers are stored as int; bools are refused)."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise InputError(
                f"{type(obj).__name__}.{name} must be an integer >= 1, found {value!r}"
            )
        object.__setattr__(obj, name, int(value))


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
