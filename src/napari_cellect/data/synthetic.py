"""Seeded synthetic 3D+t (and 2D+t) fluorescent-nuclei time series with ground truth.

The default deep-learning model is trained and tested on these sequences, so they imitate an early
embryo imaged with a confocal or light-sheet microscope:

- nuclei are (slightly irregular) ellipsoids in *physical* space, sampled on an anisotropic grid
  (``z_ratio`` = z spacing / xy spacing), with chromatin speckles and nucleoli that move with them;
- they move by a smooth random walk, repel each other, stay inside an ellipsoidal embryo that may
  extend past the field of view, and may share a slow rotation and stage drift;
- they divide after a minimum cell-cycle length: for ``mitosis_frames`` frames the mother condenses
  into a bright metaphase plate, then two smaller, brighter daughters appear about a radius apart
  along the spindle axis and drift apart; cells can also appear and disappear at small rates;
- the image adds embryo autofluorescence, a smooth inhomogeneous background, uneven illumination,
  depth attenuation, an anisotropic PSF, photobleaching, laser flicker, Poisson and Gaussian noise,
  a camera offset, and is returned as uint16.

The simulation (positions and appearance, cheap) runs first for the whole sequence; frames are then
rendered one at a time, each nucleus inside its own bounding box, so large volumes (41x512x512)
need only a few frame-sized buffers. Every random draw comes from a stream seeded by
``config.seed`` (and the frame index for the noise), so the same config gives the same pixels.

Ground truth is a :class:`~napari_cellect.track.graph.TrackGraph` (one node per nucleus whose
centre lies in the volume, z in slices): a cell whose centre leaves the volume ends its track, a
cell that (re-)enters starts a new root track, and the mother's last frame before a division has
``division_score`` 1.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
import re
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage, special
from scipy.spatial import cKDTree

from napari_cellect.data.atomic import atomic_write
from napari_cellect.data.export import write_csv, write_ctc
from napari_cellect.errors import InputError
from napari_cellect.track.graph import TrackGraph

logger = logging.getLogger(__name__)

#: cycle length of a cell that never divides
_NEVER = 2**62

#: independent random streams derived from the seed
_STREAM_SIMULATION = 1
_STREAM_EMBRYO = 2
_STREAM_FIELDS = 3
_STREAM_NOISE = 4
_STREAM_SAMPLE = 5

#: Monte Carlo samples used to measure how much of the embryo the field of view shows
_FOV_SAMPLES = 4096
#: grid points per axis used to measure the embryo volume inside the field of view
_GRID_SAMPLES = 48
#: at most this many cells per field-of-view cell are simulated outside the field of view
_MAX_OUTSIDE_FACTOR = 4
#: placing a cell: candidates drawn per batch, batches at most, candidates compared
_PLACEMENT_BATCH = 64
_PLACEMENT_TRIES = 20
_PLACEMENT_CANDIDATES = 32

#: AR(1) coefficient of the per-cell brightness fluctuation (it changes over about 5 frames)
_FLUCTUATION_MEMORY = 0.8
#: speckles stay within this fraction of the nuclear radius
_SPECKLE_EXTENT = 0.85
#: inherited brightness may drift this far outside brightness_range (factors on low, high)
_BRIGHTNESS_SLACK = (0.7, 1.3)

#: candidate cycle lengths per initial cell for the length-biased draw of its cycle
_LENGTH_BIAS_CANDIDATES = 8
#: smooth fields (background, illumination, autofluorescence) never drop below this fraction
#: of their mean level
_FIELD_FLOOR = 0.1

#: ground-truth table columns, in the order of our CSV format
GT_COLUMNS = ("id", "t", "z", "y", "x", "parent_id", "radius", "division_score", "approved")


# ====================================================================================== config
@dataclass(frozen=True)
class SyntheticConfig:
    """Every parameter of a synthetic sequence. Lengths are in xy pixels unless stated otherwise;
    "physical" means the isotropic space ``(z * z_ratio, y, x)``. Validated on construction
    (:class:`InputError` names every bad field)."""

    # ---- size and sampling
    #: number of time points T
    frames: int = 20
    #: volume shape (Z, Y, X) in voxels; Z = 1 gives 2D+t data
    shape: tuple[int, int, int] = (30, 128, 128)
    #: anisotropy, z spacing / xy spacing (1..5 is typical); ignored when Z = 1
    z_ratio: float = 3.0
    #: seed of every random stream; the same config always gives the same sequence
    seed: int = 0

    # ---- population
    #: number of nuclei whose centre lies in the field of view at t = 0 (the part of the embryo
    #: outside the field of view is populated at the same density)
    n_cells: int = 40
    #: most tracked cells alive at once in the whole embryo (divisions wait while the embryo is
    #: full); None derives it from ``max_packing``
    max_cells: int | None = None
    #: largest fraction of the embryo volume that nuclei may fill (used when max_cells is None)
    max_packing: float = 0.3

    # ---- embryo
    #: embryo semi-axes (z, y, x) as fractions of the volume's half-extent; values above 1 make
    #: the embryo larger than the field of view, so cells enter and leave through its border
    embryo_axes: tuple[float, float, float] = (1.0, 0.92, 0.92)
    #: random shift of the embryo centre, as a fraction of the half-extent per axis
    embryo_offset: float = 0.05
    #: rotation of the embryo about the z axis in degrees; None draws it from the seed
    embryo_angle: float | None = None
    #: width (xy pixels) of the soft edge of the embryo's autofluorescence
    embryo_edge: float = 4.0
    #: autofluorescence of the embryo's cytoplasm (intensity units, before illumination)
    autofluorescence: float = 60.0
    #: relative smooth variation of the autofluorescence (std of a low-frequency field)
    autofluorescence_variation: float = 0.3

    # ---- nuclear appearance
    #: range of the nuclear radius in xy pixels; each cell draws its size uniformly from it
    radius_range: tuple[float, float] = (5.0, 8.0)
    #: relative spread of the three semi-axes of an interphase nucleus (0 = perfect sphere)
    shape_irregularity: float = 0.12
    #: width of the soft nuclear edge in pixels (before blur)
    edge_width: float = 0.6
    #: range of the mean nuclear intensity (above background); each cell draws uniformly
    brightness_range: tuple[float, float] = (500.0, 1200.0)
    #: relative brightness change between mother and daughter (std of a log-normal factor)
    brightness_inheritance: float = 0.1
    #: relative change of the target radius between mother and daughter (log-normal std)
    radius_inheritance: float = 0.08
    #: per-frame relative fluctuation of each nucleus's brightness (std of a smooth AR(1) process)
    brightness_variation: float = 0.05
    #: contrast of the chromatin texture (speckle amplitude relative to the mean nuclear intensity)
    texture: float = 0.4
    #: number of chromatin speckles / nucleoli per nucleus
    speckles: int = 10
    #: range of speckle size (std) as a fraction of the nuclear radius
    speckle_size: tuple[float, float] = (0.1, 0.25)
    #: per-frame random displacement of speckles (fraction of the radius): texture slowly changes
    texture_drift: float = 0.03
    #: lowest texture factor, so dark speckles never punch holes into a nucleus
    texture_floor: float = 0.35

    # ---- motion
    #: rms random-walk step in physical pixels per frame
    speed: float = 1.0
    #: correlation of the velocity from one frame to the next (0 = Brownian, near 1 = smooth)
    persistence: float = 0.7
    #: rotation of all cells about a random axis through the embryo centre (degrees per frame)
    rotation_speed: float = 0.0
    #: stage drift of the whole embryo in physical pixels per frame (random direction)
    drift_speed: float = 0.0
    #: distance (in units of the sum of radii) below which two nuclei push each other apart
    contact_distance: float = 1.0
    #: fraction of the overlap removed per relaxation iteration
    repulsion: float = 0.5
    #: relaxation iterations per frame (repulsion + confinement)
    relax_iterations: int = 4
    #: largest displacement by repulsion per frame, as a fraction of the cell radius
    max_push: float = 0.5

    # ---- cell cycle
    #: probability per cell and frame of dividing once the minimum cycle length is reached
    division_rate: float = 0.04
    #: minimum number of frames between a cell's birth and its division
    min_cycle: int = 10
    #: frames before division during which the mother condenses into a metaphase plate (>= 1)
    mitosis_frames: int = 2
    #: brightness factor of a fully condensed mother
    mitosis_brightness: float = 1.8
    #: metaphase plate thickness along the spindle axis, as a fraction of the radius
    plate_thickness: float = 0.45
    #: metaphase plate width across the spindle axis, as a fraction of the radius
    plate_width: float = 1.15
    #: distance between the two daughters at birth, in mother radii
    daughter_separation: float = 1.2
    #: daughter radius at birth as a fraction of the mother's (condensed telophase chromatin;
    #: the daughters then grow towards their own target radius at ``growth_rate``)
    daughter_radius_factor: float = 0.6
    #: speed (pixels per frame) at which the daughters start moving apart along the spindle
    daughter_speed: float = 0.5
    #: brightness factor of a newborn daughter (condensed chromatin), decaying to 1
    daughter_brightness: float = 1.4
    #: per-frame relaxation of the radius towards the cell's target and of the daughter boost
    growth_rate: float = 0.2
    #: expected number of new cells appearing per frame anywhere in the embryo
    appear_rate: float = 0.0
    #: probability per cell and frame of disappearing (cell death, loss of signal)
    disappear_rate: float = 0.0

    # ---- untracked distractors (polar bodies, debris)
    #: number of small bright untracked blobs
    distractors: int = 0
    #: distractor radius as a fraction of the smallest nuclear radius
    distractor_radius: float = 0.45
    #: distractor brightness as a fraction of the brightest nucleus
    distractor_brightness: float = 1.2

    # ---- optics
    #: Gaussian PSF std in xy pixels
    psf_sigma_xy: float = 1.0
    #: Gaussian PSF std along z in physical (xy-pixel) units; larger than xy in real microscopes
    psf_sigma_z: float = 2.5
    #: relative smooth variation of the illumination (std of a low-frequency field)
    illumination_variation: float = 0.15
    #: fraction of the signal lost from the first to the last slice (scattering with depth)
    depth_attenuation: float = 0.2
    #: length scale (physical pixels) of the smooth background and illumination fields
    field_scale: float = 40.0
    #: photobleaching rate: the signal is multiplied by exp(-bleach_rate * t)
    bleach_rate: float = 0.0
    #: per-frame relative fluctuation of the laser power (std of a log-normal factor)
    flicker: float = 0.01

    # ---- camera
    #: mean additive background (stray light, out-of-focus haze) in intensity units
    background: float = 80.0
    #: relative smooth variation of the background (std of a low-frequency field)
    background_variation: float = 0.3
    #: camera gain: intensity units per detected photon (sets the Poisson noise)
    gain: float = 2.0
    #: Gaussian read noise std in intensity units
    read_noise: float = 4.0
    #: noise scale: 0 = noise-free, 1 = nominal; multiplies the read noise and the Poisson std
    noise: float = 1.0
    #: camera offset added to every pixel
    offset: float = 100.0

    def __post_init__(self) -> None:
        # accept lists (JSON, CLI) for the tuple fields and numpy scalars anywhere, so that the
        # config always serialises to JSON
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type.startswith("tuple") and not isinstance(value, str):
                value = tuple(_plain(v) for v in value)
            object.__setattr__(self, f.name, _plain(value))
        problems = _config_problems(self)
        if problems:
            raise InputError("invalid synthetic config: " + "; ".join(problems))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    @property
    def is_2d(self) -> bool:
        """True for 2D+t data (Z = 1)."""
        return self.shape[0] == 1

    @property
    def spacing(self) -> np.ndarray:
        """Physical size of a voxel (z, y, x) in xy pixels."""
        return np.array([1.0 if self.is_2d else self.z_ratio, 1.0, 1.0])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (tuples become lists)."""
        items = dataclasses.asdict(self).items()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in items}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str | Path | None = None) -> SyntheticConfig:
        """Build a config from :meth:`to_dict` output; unknown keys raise :class:`InputError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                f"unknown synthetic config key(s) {', '.join(unknown)}; expected some of "
                f"{', '.join(sorted(known))}",
                path,
            )
        return cls(**dict(data))


def _plain(value: Any) -> Any:
    """A numpy scalar as the matching Python number; anything else unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def _config_problems(c: SyntheticConfig) -> list[str]:
    """Human-readable list of what is wrong with ``c`` (empty when valid)."""
    bad: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            bad.append(message)

    for f in dataclasses.fields(c):
        value = getattr(c, f.name)
        if f.type in ("float", "int") or (f.type.endswith("| None") and value is not None):
            values = [value]
        elif f.type.startswith("tuple"):
            values = list(value)
        else:
            continue
        kind = numbers.Integral if f.type.startswith(("int", "tuple[int")) else numbers.Real
        if not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
            what = "whole numbers" if kind is numbers.Integral else "numeric"
            bad.append(f"{f.name} must be {what}, found {value!r}")
    if bad:
        return bad

    need(c.frames >= 1, f"frames must be >= 1, found {c.frames}")
    need(
        len(c.shape) == 3 and all(s >= 1 for s in c.shape),
        f"shape must be three positive sizes (Z, Y, X), found {c.shape}",
    )
    need(c.z_ratio > 0, f"z_ratio must be > 0, found {c.z_ratio}")
    need(c.n_cells >= 0, f"n_cells must be >= 0, found {c.n_cells}")
    need(c.max_cells is None or c.max_cells >= 1, f"max_cells must be >= 1, found {c.max_cells}")
    need(0 < c.max_packing <= 1, f"max_packing must be in (0, 1], found {c.max_packing}")
    need(
        len(c.embryo_axes) == 3 and all(a > 0 for a in c.embryo_axes),
        f"embryo_axes must be three positive fractions, found {c.embryo_axes}",
    )
    for name in ("radius_range", "brightness_range", "speckle_size"):
        lo_hi = getattr(c, name)
        need(
            len(lo_hi) == 2 and 0 < lo_hi[0] <= lo_hi[1],
            f"{name} must be (low, high) with 0 < low <= high, found {lo_hi}",
        )
    need(0 <= c.persistence < 1, f"persistence must be in [0, 1), found {c.persistence}")
    need(0 <= c.division_rate <= 1, f"division_rate must be in [0, 1], found {c.division_rate}")
    need(0 <= c.disappear_rate <= 1, f"disappear_rate must be in [0, 1], found {c.disappear_rate}")
    need(c.mitosis_frames >= 1, f"mitosis_frames must be >= 1, found {c.mitosis_frames}")
    need(
        c.min_cycle > c.mitosis_frames,
        f"min_cycle must exceed mitosis_frames ({c.mitosis_frames}), found {c.min_cycle}",
    )
    need(0 < c.repulsion <= 1, f"repulsion must be in (0, 1], found {c.repulsion}")
    need(c.gain > 0, f"gain must be > 0, found {c.gain}")
    need(c.edge_width > 0, f"edge_width must be > 0, found {c.edge_width}")
    need(c.embryo_edge > 0, f"embryo_edge must be > 0, found {c.embryo_edge}")
    need(c.field_scale > 0, f"field_scale must be > 0, found {c.field_scale}")
    need(
        0 <= c.depth_attenuation < 1,
        f"depth_attenuation must be in [0, 1), found {c.depth_attenuation}",
    )
    need(0 < c.daughter_radius_factor <= 1.5, "daughter_radius_factor must be in (0, 1.5]")
    need(0 < c.growth_rate <= 1, f"growth_rate must be in (0, 1], found {c.growth_rate}")
    need(0 < c.texture_floor <= 1, f"texture_floor must be in (0, 1], found {c.texture_floor}")
    reported = {message.split(" ", 1)[0] for message in bad}
    for f in dataclasses.fields(c):  # every plain number is a size, rate or level: >= 0
        value = getattr(c, f.name)
        if f.type in ("float", "int") and f.name not in reported:
            need(math.isfinite(value) and value >= 0, f"{f.name} must be >= 0, found {value}")
    return bad


def _preset(**changes: Any) -> SyntheticConfig:
    return dataclasses.replace(SyntheticConfig(), **changes)


#: named configurations; ``default`` is the nominal early embryo of about 40 nuclei
PRESETS: dict[str, SyntheticConfig] = {
    "default": SyntheticConfig(),
    # tightly packed nuclei that touch and slightly overlap
    "dense": _preset(
        n_cells=110, radius_range=(4.5, 7.0), max_packing=0.45, contact_distance=0.92,
        embryo_axes=(1.05, 0.95, 0.95), speed=0.8,
    ),
    # low signal, strong inhomogeneous background, bleaching and a polar body
    "noisy": _preset(
        noise=3.0, brightness_range=(250.0, 700.0), background=150.0, background_variation=0.5,
        illumination_variation=0.3, texture=0.45, bleach_rate=0.01, flicker=0.03,
        depth_attenuation=0.4, psf_sigma_xy=1.3, psf_sigma_z=3.5, distractors=1,
    ),
    # large steps with coherent rotation and drift
    "fast": _preset(speed=3.0, persistence=0.8, rotation_speed=1.0, drift_speed=0.5),
    # everything at once: denser, noisier, faster, more divisions, cells entering and leaving
    "hard": _preset(
        n_cells=80, radius_range=(4.0, 7.5), contact_distance=0.95, max_packing=0.4,
        noise=2.5, brightness_range=(300.0, 900.0), background_variation=0.45,
        illumination_variation=0.25, bleach_rate=0.008, texture=0.4, speed=2.5, persistence=0.75,
        rotation_speed=0.6, drift_speed=0.3, division_rate=0.08, min_cycle=5,
        appear_rate=0.3, disappear_rate=0.005, embryo_axes=(1.6, 1.35, 1.1), distractors=2,
        psf_sigma_z=3.5,
    ),
    # 2D+t: a single optical section
    "sparse2d": _preset(
        shape=(1, 128, 128), z_ratio=1.0, n_cells=15, embryo_axes=(1.0, 0.92, 0.92),
        depth_attenuation=0.0,
    ),
    # the size of a real confocal embryo stack (41 x 512 x 512, z step = 5 xy pixels)
    "large": _preset(
        shape=(41, 512, 512), z_ratio=5.0, n_cells=120, radius_range=(9.0, 14.0), frames=10,
        psf_sigma_xy=1.5, psf_sigma_z=5.0, field_scale=120.0, embryo_edge=8.0,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class ConfigRanges:
    """Ranges that :func:`sample_config` draws from (uniformly unless stated), for training a
    model that generalises to unseen microscopes and embryos."""

    #: anisotropy range (3D only)
    z_ratio: tuple[float, float] = (1.0, 5.0)
    #: smallest nuclear radius range; the largest is this times ``radius_spread``
    radius_low: tuple[float, float] = (3.5, 10.0)
    #: ratio largest / smallest radius
    radius_spread: tuple[float, float] = (1.15, 1.7)
    #: fraction of the embryo volume filled by nuclei at t = 0
    packing: tuple[float, float] = (0.03, 0.25)
    #: speed range, drawn log-uniformly (pixels per frame)
    speed: tuple[float, float] = (0.3, 4.0)
    #: division rate range (per cell per frame)
    division_rate: tuple[float, float] = (0.0, 0.12)
    #: minimum cell cycle range (frames)
    min_cycle: tuple[int, int] = (4, 15)
    #: noise scale range, drawn log-uniformly
    noise: tuple[float, float] = (0.3, 4.0)
    #: lowest mean nuclear brightness range; the highest is this times ``brightness_spread``
    brightness_low: tuple[float, float] = (150.0, 1500.0)
    #: ratio brightest / dimmest nucleus
    brightness_spread: tuple[float, float] = (1.3, 3.0)
    #: background level range
    background: tuple[float, float] = (20.0, 300.0)
    #: embryo semi-axis range (fraction of the half-extent)
    embryo_axes: tuple[float, float] = (0.8, 1.3)
    #: texture contrast range
    texture: tuple[float, float] = (0.0, 0.55)
    #: PSF xy std range (pixels); the z std is this times ``psf_z_factor``
    psf_sigma_xy: tuple[float, float] = (0.6, 2.0)
    #: ratio of the z to the xy PSF std
    psf_z_factor: tuple[float, float] = (1.5, 4.0)
    #: photobleaching rate range
    bleach_rate: tuple[float, float] = (0.0, 0.015)
    #: velocity persistence range
    persistence: tuple[float, float] = (0.3, 0.9)
    #: contact distance range (below 1 lets nuclei touch and overlap a little)
    contact_distance: tuple[float, float] = (0.85, 1.05)
    #: background, illumination and autofluorescence variation ranges
    background_variation: tuple[float, float] = (0.0, 0.6)
    illumination_variation: tuple[float, float] = (0.0, 0.35)
    #: depth attenuation range (3D only)
    depth_attenuation: tuple[float, float] = (0.0, 0.5)
    #: ratio of the embryo's x to y semi-axis
    embryo_aspect: tuple[float, float] = (0.8, 1.2)
    #: most distractors (polar bodies) per sequence
    max_distractors: int = 2
    #: probability that each optional effect below is switched on in a sampled config
    optional_probability: float = 0.3
    #: optional: rotation of the cells (degrees per frame)
    rotation_speed: tuple[float, float] = (0.0, 1.0)
    #: optional: stage drift (pixels per frame)
    drift_speed: tuple[float, float] = (0.0, 0.6)
    #: optional: cells appearing per frame
    appear_rate: tuple[float, float] = (0.0, 0.3)
    #: optional: probability per cell and frame of disappearing
    disappear_rate: tuple[float, float] = (0.0, 0.01)


def sample_config(
    seed: int, base: SyntheticConfig | None = None, ranges: ConfigRanges | None = None
) -> SyntheticConfig:
    """A randomised config (domain randomisation for training): keeps ``base``'s frames and shape
    and draws anisotropy, size, density, motion, cell cycle, optics and noise from ``ranges``."""
    base = base or SyntheticConfig()
    r = ranges or ConfigRanges()
    rng = np.random.default_rng([seed, _STREAM_SAMPLE])

    def uni(lo_hi: tuple[float, float]) -> float:
        return float(rng.uniform(*lo_hi))

    def log_uni(lo_hi: tuple[float, float]) -> float:
        return float(np.exp(rng.uniform(np.log(lo_hi[0]), np.log(lo_hi[1]))))

    def optional(lo_hi: tuple[float, float]) -> float:
        return uni(lo_hi) if rng.random() < r.optional_probability else 0.0

    r_low = uni(r.radius_low)
    b_low = uni(r.brightness_low)
    psf_xy = uni(r.psf_sigma_xy)
    axes_yx = uni(r.embryo_axes)
    config = dataclasses.replace(
        base,
        seed=int(seed),
        z_ratio=base.z_ratio if base.is_2d else round(uni(r.z_ratio), 2),
        radius_range=(r_low, r_low * uni(r.radius_spread)),
        brightness_range=(b_low, b_low * uni(r.brightness_spread)),
        speed=log_uni(r.speed),
        persistence=uni(r.persistence),
        rotation_speed=optional(r.rotation_speed),
        drift_speed=optional(r.drift_speed),
        division_rate=uni(r.division_rate),
        min_cycle=int(rng.integers(r.min_cycle[0], r.min_cycle[1] + 1)),
        mitosis_frames=int(rng.integers(1, min(3, r.min_cycle[0]))),
        noise=log_uni(r.noise),
        background=uni(r.background),
        background_variation=uni(r.background_variation),
        illumination_variation=uni(r.illumination_variation),
        depth_attenuation=0.0 if base.is_2d else uni(r.depth_attenuation),
        texture=uni(r.texture),
        embryo_axes=(uni(r.embryo_axes), axes_yx, axes_yx * uni(r.embryo_aspect)),
        psf_sigma_xy=psf_xy,
        psf_sigma_z=psf_xy * uni(r.psf_z_factor),
        bleach_rate=uni(r.bleach_rate),
        appear_rate=optional(r.appear_rate),
        disappear_rate=optional(r.disappear_rate),
        distractors=int(rng.integers(0, r.max_distractors + 1)),
        contact_distance=uni(r.contact_distance),
    )
    n = cells_for_density(config, uni(r.packing))
    return dataclasses.replace(config, n_cells=max(1, n))


# ====================================================================================== geometry
@dataclass(frozen=True)
class EmbryoGeometry:
    """The embryo ellipsoid and the whole-embryo motions, in physical coordinates at t = 0."""

    #: centre (z, y, x) at t = 0
    centre: np.ndarray
    #: semi-axes (z, y, x) in the embryo's own frame; z is infinite for 2D data
    semi: np.ndarray
    #: rows are the embryo's axes: ``local = (p - centre) @ rotation.T``
    rotation: np.ndarray
    #: stage drift per frame (z, y, x)
    drift: np.ndarray
    #: unit axis of the slow rotation of the cells
    spin_axis: np.ndarray

    def local(self, points: np.ndarray, t: int) -> np.ndarray:
        """Points (N, 3) in the embryo frame at time ``t``."""
        return (points - (self.centre + t * self.drift)) @ self.rotation.T

    def inner_radius(self, points: np.ndarray, t: int, margin: np.ndarray | float) -> np.ndarray:
        """Ellipsoidal radius (1 on the surface) of points in the embryo shrunk by ``margin``."""
        local = self.local(points, t)
        semi = np.maximum(self.semi[None, :] - np.reshape(margin, (-1, 1)), 0.5)
        return np.sqrt(np.sum((local / semi) ** 2, axis=1))


def embryo_geometry(config: SyntheticConfig) -> EmbryoGeometry:
    """The embryo of ``config`` (deterministic given the seed)."""
    rng = np.random.default_rng([config.seed, _STREAM_EMBRYO])
    dims = _dim_mask(config)
    half = (np.array(config.shape) - 1) * config.spacing / 2
    centre = half + rng.uniform(-1, 1, 3) * config.embryo_offset * half * dims
    semi = np.array(config.embryo_axes, dtype=float) * np.maximum(half, 0.5)
    if config.is_2d:
        semi[0] = np.inf
    angle = (
        math.radians(config.embryo_angle)
        if config.embryo_angle is not None
        else rng.uniform(0, 2 * math.pi)
    )
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = np.array([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
    drift = _unit_vectors(rng, 1, config.is_2d)[0] * config.drift_speed
    spin = np.array([1.0, 0.0, 0.0]) if config.is_2d else _unit_vectors(rng, 1, False)[0]
    return EmbryoGeometry(centre, semi, rotation, drift, spin)


def cells_for_density(config: SyntheticConfig, density: float) -> int:
    """Number of nuclei in the field of view that fill ``density`` (a volume fraction, or an
    area fraction in 2D) of the part of the embryo inside the field of view."""
    if not 0 < density < 1:
        raise InputError(f"density must be a volume fraction in (0, 1), found {density}")
    geometry = embryo_geometry(config)
    r_mean = float(np.mean(config.radius_range))
    region = _embryo_fov_measure(config, geometry)
    nucleus = math.pi * r_mean**2 if config.is_2d else 4 / 3 * math.pi * r_mean**3
    return int(round(density * region / nucleus))


def _embryo_fov_measure(config: SyntheticConfig, geometry: EmbryoGeometry) -> float:
    """Volume (area in 2D) of the embryo inside the field of view, in physical units, on a grid."""
    axes = []
    for size, spacing in zip(config.shape, config.spacing, strict=True):
        n = 1 if size == 1 else _GRID_SAMPLES
        axes.append((np.arange(n) + 0.5) / n * (size - 1) * spacing)
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    inside = geometry.inner_radius(grid, 0, 0.0) <= 1
    extent = (np.array(config.shape) - 1) * config.spacing
    extent = extent[1:] if config.is_2d else extent
    return float(np.mean(inside) * np.prod(np.maximum(extent, 1.0)))


def _dim_mask(config: SyntheticConfig) -> np.ndarray:
    """1 for the axes cells move along, 0 for z in 2D."""
    return np.array([0.0 if config.is_2d else 1.0, 1.0, 1.0])


def _unit_vectors(rng: np.random.Generator, n: int, planar: bool) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    if planar:
        v[:, 0] = 0.0
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norm, 1e-12)


def _random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """n uniformly random 3D rotation matrices (QR of Gaussian matrices, sign-fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    return q


def _spindle_frames(axis: np.ndarray, planar: bool) -> np.ndarray:
    """Rotations (n, 3, 3) whose first row is the spindle axis (the plate's thin direction)."""
    n = len(axis)
    helper = np.zeros((n, 3))
    if planar:
        helper[:, 0] = 1.0  # z: the second row is then the in-plane perpendicular
    else:
        pick = np.argmin(np.abs(axis), axis=1)
        helper[np.arange(n), pick] = 1.0
    e2 = np.cross(axis, helper)
    e2 /= np.maximum(np.linalg.norm(e2, axis=1, keepdims=True), 1e-12)
    e1 = np.cross(e2, axis)
    return np.stack([axis, e1, e2], axis=1)


# ====================================================================================== simulation
@dataclass
class _Cells:
    """Live cells as a struct of arrays (one row per cell)."""

    uid: np.ndarray  # int64 persistent cell id (a division gives two new ids)
    tracked: np.ndarray  # bool, False for distractors
    pos: np.ndarray  # (n, 3) physical position
    vel: np.ndarray  # (n, 3) velocity of the random walk
    radius: np.ndarray  # current xy radius
    target_radius: np.ndarray  # radius the cell grows back to
    brightness: np.ndarray  # base mean intensity
    fluct: np.ndarray  # log brightness fluctuation (AR(1))
    boost: np.ndarray  # daughter brightness factor, decays to 1
    age: np.ndarray  # int64 frames since birth
    cycle: np.ndarray  # int64 age at which the cell divides
    axis: np.ndarray  # (n, 3) spindle axis
    rotation: np.ndarray  # (n, 3, 3) interphase orientation
    shape: np.ndarray  # (n, 3) interphase semi-axis factors
    speckle_pos: np.ndarray  # (n, K, 3) speckle centres in normalised nucleus coordinates
    speckle_amp: np.ndarray  # (n, K) speckle amplitudes (relative)
    speckle_sigma: np.ndarray  # (n, K) speckle sizes (normalised)
    mother: np.ndarray  # int64 mother's uid in the birth frame, else -1

    def __len__(self) -> int:
        return len(self.uid)

    def take(self, index: np.ndarray) -> _Cells:
        return _Cells(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})

    def concat(self, other: _Cells) -> _Cells:
        return _Cells(
            **{
                f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)])
                for f in dataclasses.fields(self)
            }
        )


@dataclass
class FrameCells:
    """What one frame shows: every live cell (tracked or not, in the volume or not).

    ``position`` is in voxels (z in slices); ``semi``/``rotation`` describe the rendered
    ellipsoid in physical space; ``node_id`` is the ground-truth node (-1 where none).
    """

    uid: np.ndarray
    tracked: np.ndarray
    physical: np.ndarray
    position: np.ndarray
    radius: np.ndarray
    semi: np.ndarray
    rotation: np.ndarray
    intensity: np.ndarray
    speckle_pos: np.ndarray
    speckle_amp: np.ndarray
    speckle_sigma: np.ndarray
    mother: np.ndarray
    divides: np.ndarray
    embryo_centre: np.ndarray
    node_id: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


class _Simulator:
    """Advances the cell population frame by frame (positions, cycle, appearance)."""

    def __init__(self, config: SyntheticConfig) -> None:
        self.c = config
        self.rng = np.random.default_rng([config.seed, _STREAM_SIMULATION])
        self.geometry = embryo_geometry(config)
        self.dims = _dim_mask(config)
        self.planar = config.is_2d
        self.extent = (np.array(config.shape) - 1) * config.spacing
        self.next_uid = 0
        self.t = 0
        self.max_cells = config.max_cells or self._capacity()

    # ---------------------------------------------------------------- set-up
    def _capacity(self) -> int:
        c, g = self.c, self.geometry
        r_mean = float(np.mean(c.radius_range))
        if self.planar:
            embryo = math.pi * g.semi[1] * g.semi[2]
            nucleus = math.pi * r_mean**2
        else:
            embryo = 4 / 3 * math.pi * float(np.prod(g.semi))
            nucleus = 4 / 3 * math.pi * r_mean**3
        return max(1, int(c.max_packing * embryo / nucleus))

    def _in_fov(self, pos: np.ndarray) -> np.ndarray:
        return np.all((pos >= 0) & (pos <= self.extent[None, :] + 1e-9), axis=1)

    def _sample_in_embryo(self, n: int, margin: float) -> np.ndarray:
        """n uniform positions inside the embryo shrunk by ``margin`` (physical)."""
        g = self.geometry
        ball = _unit_vectors(self.rng, n, self.planar)
        ball *= self.rng.random((n, 1)) ** (1 / (2 if self.planar else 3))
        semi = np.maximum(np.where(np.isinf(g.semi), 0.0, g.semi) - margin, 0.5)
        return ball * semi @ g.rotation + g.centre + self.t * g.drift

    def _free_position(
        self, placed: np.ndarray, placed_r: np.ndarray, r: float, fov: bool | None
    ) -> np.ndarray | None:
        """The candidate inside the embryo (and in/out of the field of view) with most clearance."""
        candidates = np.empty((0, 3))
        for _ in range(_PLACEMENT_TRIES):
            batch = self._sample_in_embryo(_PLACEMENT_BATCH, r)
            if fov is not None:
                batch = batch[self._in_fov(batch) == fov]
            candidates = np.concatenate([candidates, batch])
            if len(candidates) >= _PLACEMENT_CANDIDATES:
                break
        if len(candidates) == 0:
            return None
        if len(placed) == 0:
            return candidates[0]
        d = np.linalg.norm(candidates[:, None, :] - placed[None, :, :], axis=2)
        clearance = np.min(d - (placed_r[None, :] + r) * self.c.contact_distance, axis=1)
        return candidates[int(np.argmax(clearance))]

    def _place(
        self, radii: np.ndarray, fov: list[bool | None], existing: _Cells | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Positions for new cells of ``radii``, one at a time, each in the freest spot.

        ``fov[i]`` asks for a spot inside (True) or outside (False) the field of view, or
        anywhere (None). Returns the positions and which cells found a spot at all.
        """
        n_old = 0 if existing is None else len(existing)
        placed = np.empty((n_old + len(radii), 3))
        placed_r = np.empty(n_old + len(radii))
        if existing is not None:
            placed[:n_old], placed_r[:n_old] = existing.pos, existing.radius
        m = n_old
        out = np.empty((len(radii), 3))
        keep = np.ones(len(radii), dtype=bool)
        for i, (r, where) in enumerate(zip(radii, fov, strict=True)):
            p = self._free_position(placed[:m], placed_r[:m], float(r), where)
            if p is None:
                keep[i] = False
                continue
            out[i] = placed[m] = p
            placed_r[m] = r
            m += 1
        return out, keep

    def _cycles(self, n: int) -> np.ndarray:
        if self.c.division_rate <= 0:
            return np.full(n, _NEVER, dtype=np.int64)
        return self.c.min_cycle - 1 + self.rng.geometric(self.c.division_rate, n).astype(np.int64)

    def _new_cells(
        self,
        pos: np.ndarray,
        radius: np.ndarray,
        target_radius: np.ndarray,
        brightness: np.ndarray,
        *,
        tracked: bool = True,
        boost: float = 1.0,
        mother: np.ndarray | None = None,
        vel: np.ndarray | None = None,
    ) -> _Cells:
        c, rng, n = self.c, self.rng, len(pos)
        k = c.speckles
        shape = np.exp(rng.normal(0, c.shape_irregularity, (n, 3)))
        shape /= np.prod(shape, axis=1, keepdims=True) ** (1 / 3)
        speckle_pos = _unit_vectors(rng, n * k, self.planar).reshape(n, k, 3)
        speckle_pos *= _SPECKLE_EXTENT * rng.random((n, k, 1)) ** (1 / 3)
        uid = np.arange(self.next_uid, self.next_uid + n, dtype=np.int64)
        self.next_uid += n
        return _Cells(
            uid=uid,
            tracked=np.full(n, tracked),
            pos=np.asarray(pos, float).reshape(n, 3),
            vel=np.zeros((n, 3)) if vel is None else vel,
            radius=np.asarray(radius, float),
            target_radius=np.asarray(target_radius, float),
            brightness=np.asarray(brightness, float),
            fluct=np.zeros(n),
            boost=np.full(n, boost),
            age=np.zeros(n, dtype=np.int64),
            cycle=self._cycles(n) if tracked else np.full(n, _NEVER, dtype=np.int64),
            axis=_unit_vectors(rng, n, self.planar),
            rotation=_random_rotations(rng, n),
            shape=shape,
            speckle_pos=speckle_pos,
            speckle_amp=rng.uniform(-1, 1, (n, k)) * (c.texture if tracked else 0.0),
            speckle_sigma=rng.uniform(*c.speckle_size, (n, k)),
            mother=np.full(n, -1, dtype=np.int64) if mother is None else mother,
        )

    def _random_cells(self, n: int, fov: list[bool | None], existing: _Cells | None) -> _Cells:
        c = self.c
        radius = self.rng.uniform(*c.radius_range, n)
        pos, keep = self._place(radius, fov, existing)
        brightness = self.rng.uniform(*c.brightness_range, n)
        cells = self._new_cells(pos[keep], radius[keep], radius[keep], brightness[keep])
        cells.vel = self._velocity_noise(len(cells)) * (c.speed / math.sqrt(self.dims.sum()))
        return cells

    def initial(self) -> _Cells:
        """Cells at t = 0: n_cells in the field of view, the rest of the embryo at the same
        density, random ages, then distractors; relaxed so that nuclei do not overlap."""
        c = self.c
        n_total = int(round(c.n_cells / self._fov_fraction()))
        n_out = min(max(n_total - c.n_cells, 0), _MAX_OUTSIDE_FACTOR * max(c.n_cells, 1))
        where: list[bool | None] = [True] * c.n_cells + [False] * n_out
        cells = self._random_cells(len(where), where, None)
        placed_inside = int(np.count_nonzero(self._in_fov(cells.pos)))
        if placed_inside < c.n_cells:
            logger.warning(
                "placed %d of %d cells in the field of view: the embryo is too small",
                placed_inside, c.n_cells,
            )  # fmt: skip
        self._randomise_cycle_phase(cells)
        if c.distractors:
            r = c.distractor_radius * c.radius_range[0]
            pos, keep = self._place(np.full(c.distractors, r), [True] * c.distractors, cells)
            extra = self._new_cells(
                pos[keep], np.full(keep.sum(), r), np.full(keep.sum(), r),
                np.full(keep.sum(), c.distractor_brightness * c.brightness_range[1]),
                tracked=False,
            )  # fmt: skip
            cells = cells.concat(extra)
        for _ in range(3):
            self._relax(cells)
        return cells

    def _randomise_cycle_phase(self, cells: _Cells) -> None:
        """Give cells the cycle lengths and ages of a population caught at a random moment.

        A cell seen at a random time is more likely in a long cycle (the inspection paradox),
        so the cycle length is drawn length-biased and the age uniformly within it; otherwise
        the first frames would hold a burst of divisions.
        """
        n = len(cells)
        if n == 0 or self.c.division_rate <= 0:
            return
        k = _LENGTH_BIAS_CANDIDATES
        candidates = self._cycles(n * k).reshape(n, k).astype(float)
        weights = np.cumsum(candidates / candidates.sum(axis=1, keepdims=True), axis=1)
        pick = np.minimum((self.rng.random((n, 1)) > weights).sum(axis=1), k - 1)
        cells.cycle = candidates[np.arange(n), pick].astype(np.int64)
        cells.age = (self.rng.random(n) * cells.cycle).astype(np.int64)

    def _fov_fraction(self) -> float:
        """Fraction of the embryo region open to cell centres that lies in the field of view
        (Monte Carlo on a private stream, so it does not shift the simulation's draws)."""
        rng = np.random.default_rng([self.c.seed, _STREAM_EMBRYO, 1])
        g = self.geometry
        ball = _unit_vectors(rng, _FOV_SAMPLES, self.planar)
        ball *= rng.random((_FOV_SAMPLES, 1)) ** (1 / (2 if self.planar else 3))
        margin = float(np.mean(self.c.radius_range))
        semi = np.maximum(np.where(np.isinf(g.semi), 0.0, g.semi) - margin, 0.5)
        points = ball * semi @ g.rotation + g.centre
        return max(float(np.mean(self._in_fov(points))), 1.0 / _FOV_SAMPLES)

    # ---------------------------------------------------------------- dynamics
    def _velocity_noise(self, n: int) -> np.ndarray:
        return self.rng.normal(size=(n, 3)) * self.dims[None, :]

    def _relax(self, cells: _Cells) -> None:
        """Push overlapping nuclei apart and keep every centre inside the embryo."""
        c = self.c
        n = len(cells)
        step_cap = c.max_push * cells.radius / max(c.relax_iterations, 1)
        for _ in range(c.relax_iterations):
            if n >= 2:
                reach = 2 * float(cells.radius.max()) * c.contact_distance
                pairs = cKDTree(cells.pos).query_pairs(reach, output_type="ndarray")
                if len(pairs):
                    i, j = pairs[:, 0], pairs[:, 1]
                    delta = cells.pos[j] - cells.pos[i]
                    dist = np.linalg.norm(delta, axis=1)
                    contact = (cells.radius[i] + cells.radius[j]) * c.contact_distance
                    touching = dist < contact
                    i, j, delta, dist = i[touching], j[touching], delta[touching], dist[touching]
                    coincident = dist < 1e-9
                    if np.any(coincident):
                        n_same = int(coincident.sum())
                        delta[coincident] = _unit_vectors(self.rng, n_same, self.planar)
                        dist[coincident] = 1.0
                    push = (0.5 * c.repulsion * (contact[touching] - dist) / dist)[:, None] * delta
                    disp = np.zeros_like(cells.pos)
                    np.add.at(disp, i, -push)
                    np.add.at(disp, j, push)
                    norm = np.linalg.norm(disp, axis=1)
                    scale = np.minimum(1.0, step_cap / np.maximum(norm, 1e-12))
                    cells.pos += disp * scale[:, None] * self.dims[None, :]
            self._confine(cells)

    def _confine(self, cells: _Cells) -> None:
        g = self.geometry
        rho = g.inner_radius(cells.pos, self.t, cells.radius)
        out = rho > 1
        if not np.any(out):
            return
        centre = g.centre + self.t * g.drift
        local = g.local(cells.pos[out], self.t) / rho[out, None]
        cells.pos[out] = local @ g.rotation + centre
        # drop the outward part of the velocity (the surface normal is the ellipsoid gradient)
        semi = np.maximum(g.semi[None, :] - cells.radius[out, None], 0.5)
        normal = (local / semi**2) @ g.rotation
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        outward = np.maximum(np.sum(cells.vel[out] * normal, axis=1), 0.0)
        cells.vel[out] -= outward[:, None] * normal

    def _move(self, cells: _Cells) -> None:
        c, g = self.c, self.geometry
        sigma = c.speed / math.sqrt(self.dims.sum())
        rho = c.persistence
        kick = math.sqrt(1 - rho**2) * sigma * self._velocity_noise(len(cells))
        cells.vel = rho * cells.vel + kick
        omega = math.radians(c.rotation_speed)
        centre = g.centre + self.t * g.drift
        flow = omega * np.cross(g.spin_axis, cells.pos - centre) if omega else 0.0
        cells.pos += (cells.vel + flow + g.drift) * self.dims[None, :]

    def _age(self, cells: _Cells) -> None:
        """One frame of growth, brightness fluctuation and texture drift."""
        c, rng, n = self.c, self.rng, len(cells)
        cells.age += 1
        cells.radius += c.growth_rate * (cells.target_radius - cells.radius)
        cells.boost = 1.0 + (1.0 - c.growth_rate) * (cells.boost - 1.0)
        ar = _FLUCTUATION_MEMORY
        noise = math.sqrt(1 - ar**2) * c.brightness_variation * rng.normal(size=n)
        cells.fluct = ar * cells.fluct + noise
        if c.texture_drift and c.speckles:
            step = rng.normal(0, c.texture_drift, cells.speckle_pos.shape)
            if self.planar:
                step[..., 0] = 0.0
            moved = cells.speckle_pos + step
            norm = np.linalg.norm(moved, axis=2, keepdims=True)
            limit = _SPECKLE_EXTENT / np.maximum(norm, 1e-12)
            cells.speckle_pos = moved * np.minimum(1.0, limit)

    def _divide(self, mothers: _Cells) -> _Cells:
        """Two daughters per mother, about a radius apart along the spindle axis."""
        c, rng, n = self.c, self.rng, len(mothers)
        if n == 0:
            return mothers
        offset = mothers.axis * (c.daughter_separation * mothers.radius / 2)[:, None]
        pos = np.concatenate([mothers.pos + offset, mothers.pos - offset])
        radius = np.tile(mothers.radius * c.daughter_radius_factor, 2)
        lo, hi = c.radius_range
        jitter = np.exp(rng.normal(0, c.radius_inheritance, 2 * n))
        target = np.clip(np.tile(mothers.target_radius, 2) * jitter, lo, hi)
        brightness = np.tile(mothers.brightness, 2) * np.exp(
            rng.normal(0, c.brightness_inheritance, 2 * n)
        )
        lo_b, hi_b = c.brightness_range
        brightness = np.clip(brightness, lo_b * _BRIGHTNESS_SLACK[0], hi_b * _BRIGHTNESS_SLACK[1])
        daughters = self._new_cells(
            pos, radius, target, brightness,
            boost=c.daughter_brightness,
            mother=np.tile(mothers.uid, 2),
            vel=np.tile(mothers.vel, (2, 1))
            + np.concatenate([mothers.axis, -mothers.axis]) * c.daughter_speed,
        )  # fmt: skip
        daughters.fluct = np.tile(mothers.fluct, 2)
        return daughters

    def _postpone_crowded_mitoses(self, cells: _Cells) -> None:
        """Cells entering mitosis wait when the embryo already holds ``max_cells`` cells."""
        c = self.c
        entering = cells.tracked & (cells.age == cells.cycle - c.mitosis_frames)
        if not np.any(entering):
            return
        mitotic = cells.tracked & (cells.age > cells.cycle - c.mitosis_frames)
        room = self.max_cells - int(cells.tracked.sum()) - int(mitotic.sum())
        idx = np.flatnonzero(entering)
        self.rng.shuffle(idx)
        wait = idx[max(room, 0) :]
        if len(wait):
            cells.cycle[wait] += self.rng.geometric(max(c.division_rate, 1e-6), len(wait))

    def step(self, cells: _Cells) -> _Cells:
        """Advance from frame t to t + 1."""
        c, rng = self.c, self.rng
        self.t += 1
        cells.mother = np.full(len(cells), -1, dtype=np.int64)
        self._move(cells)
        self._age(cells)
        dividing = cells.age >= cells.cycle
        daughters = self._divide(cells.take(dividing))
        cells = cells.take(~dividing)
        if c.disappear_rate > 0:
            mitotic = cells.age > cells.cycle - c.mitosis_frames
            dies = cells.tracked & ~mitotic & (rng.random(len(cells)) < c.disappear_rate)
            cells = cells.take(~dies)
        n_new = int(rng.poisson(c.appear_rate)) if c.appear_rate > 0 else 0
        if n_new and int(cells.tracked.sum()) + len(daughters) < self.max_cells:
            newcomers = self._random_cells(n_new, [None] * n_new, cells)
            # a newcomer is seen mid-cycle, never already in mitosis
            newcomers.age[:] = rng.integers(0, c.min_cycle - c.mitosis_frames, len(newcomers))
            cells = cells.concat(newcomers)
        self._relax(cells)  # daughters join afterwards: they appear a radius apart
        cells = cells.concat(daughters)
        self._postpone_crowded_mitoses(cells)
        return cells

    # ---------------------------------------------------------------- appearance
    def snapshot(self, cells: _Cells) -> FrameCells:
        """What the camera sees of ``cells`` in the current frame."""
        c = self.c
        n = len(cells)
        to_division = cells.cycle - cells.age  # 1 in the mother's last frame
        mitotic = cells.tracked & (to_division <= c.mitosis_frames)
        # condensation grows from 1/mitosis_frames to 1 in the last frame before division
        cond = np.where(mitotic, (c.mitosis_frames - to_division + 1) / c.mitosis_frames, 0.0)
        semi = cells.radius[:, None] * cells.shape
        rotation = cells.rotation.copy()
        if np.any(mitotic):
            plate = np.array([c.plate_thickness, c.plate_width, c.plate_width])
            k = cond[mitotic, None]
            semi[mitotic] = cells.radius[mitotic, None] * ((1 - k) + k * plate[None, :])
            rotation[mitotic] = _spindle_frames(cells.axis[mitotic], self.planar)
        mitosis = 1 + (c.mitosis_brightness - 1) * cond
        intensity = cells.brightness * np.exp(cells.fluct) * cells.boost * mitosis
        amp = cells.speckle_amp * (1 + cond)[:, None]
        physical = cells.pos.copy()
        position = physical / c.spacing[None, :]
        if c.is_2d:
            position[:, 0] = 0.0
        return FrameCells(
            uid=cells.uid.copy(),
            tracked=cells.tracked.copy(),
            physical=physical,
            position=position,
            radius=cells.radius.astype(np.float32),
            semi=semi,
            rotation=rotation,
            intensity=intensity,
            speckle_pos=cells.speckle_pos.astype(np.float32),
            speckle_amp=amp.astype(np.float32),
            speckle_sigma=cells.speckle_sigma.astype(np.float32),
            mother=cells.mother.copy(),
            divides=cells.tracked & (to_division == 1),
            embryo_centre=self.geometry.centre + self.t * self.geometry.drift,
            node_id=np.full(n, -1, dtype=np.int64),
        )


def _ground_truth(config: SyntheticConfig, frames: list[FrameCells]) -> pd.DataFrame:
    """The GT table; fills each frame's ``node_id``. Only centres inside the volume are nodes."""
    upper = np.array(config.shape, dtype=float) - 1
    columns: dict[str, list[np.ndarray]] = {name: [] for name in GT_COLUMNS}
    uid_node_prev: dict[int, int] = {}
    next_id = 1
    divides_ids: list[np.ndarray] = []
    for t, frame in enumerate(frames):
        pos = frame.position
        visible = frame.tracked & np.all((pos >= 0) & (pos <= upper[None, :]), axis=1)
        rows = np.flatnonzero(visible)
        ids = np.arange(next_id, next_id + len(rows), dtype=np.int64)
        next_id += len(rows)
        frame.node_id[rows] = ids
        parents = np.empty(len(rows), dtype=np.int64)
        for k, row in enumerate(rows):
            parent = uid_node_prev.get(int(frame.uid[row]), -1)
            if parent < 0 and frame.mother[row] >= 0:
                parent = uid_node_prev.get(int(frame.mother[row]), -1)
            parents[k] = parent
        uid_node_prev = {int(u): int(i) for u, i in zip(frame.uid[rows], ids, strict=True)}
        columns["id"].append(ids)
        columns["t"].append(np.full(len(rows), t, dtype=np.int64))
        columns["z"].append(pos[rows, 0])
        columns["y"].append(pos[rows, 1])
        columns["x"].append(pos[rows, 2])
        columns["parent_id"].append(parents)
        columns["radius"].append(frame.radius[rows].astype(np.float32))
        columns["division_score"].append(np.zeros(len(rows), dtype=np.float32))
        columns["approved"].append(np.ones(len(rows), dtype=bool))
        divides_ids.append(ids[frame.divides[rows]])
    table = pd.DataFrame({name: np.concatenate(parts) for name, parts in columns.items()})
    # a mother is scored only when both daughters are nodes (a daughter may start outside)
    parents = table["parent_id"].to_numpy()
    counts = pd.Series(parents[parents >= 0]).value_counts()
    mothers = np.concatenate(divides_ids) if divides_ids else np.empty(0, np.int64)
    two = counts.reindex(mothers).fillna(0).to_numpy() == 2
    table.loc[table["id"].isin(mothers[two]), "division_score"] = np.float32(1.0)
    return table


# ====================================================================================== rendering
def _smooth_field(
    shape: tuple[int, int, int], spacing: np.ndarray, scale: float, rng: np.random.Generator
) -> np.ndarray:
    """A low-frequency random field (zero mean, unit std) with features of about ``scale``
    physical pixels: cubic-spline upsampling of a coarse Gaussian grid, one axis at a time."""
    coarse_shape = tuple(
        1 if size == 1 else max(2, math.ceil(size * step / scale) + 2)
        for size, step in zip(shape, spacing, strict=True)
    )
    field_ = rng.normal(size=coarse_shape)
    for axis, size in enumerate(shape):
        coarse = field_.shape[axis]
        if coarse == size:
            continue
        weights = ndimage.zoom(
            np.eye(coarse), (size / coarse, 1), order=3, grid_mode=True, mode="grid-mirror"
        )[:size]
        field_ = np.moveaxis(np.tensordot(weights, np.moveaxis(field_, axis, 0), axes=1), 0, axis)
    field_ = field_.astype(np.float32)
    field_ -= field_.mean()
    std = float(field_.std())
    return field_ / std if std > 0 else field_


@dataclass
class _StaticFields:
    background: np.ndarray  # additive, (Z, Y, X)
    illumination: np.ndarray  # multiplicative on the signal, incl. depth attenuation
    autofluorescence: np.ndarray  # cytoplasm signal before the embryo mask


def _static_fields(config: SyntheticConfig) -> _StaticFields:
    rng = np.random.default_rng([config.seed, _STREAM_FIELDS])
    shape, spacing = config.shape, config.spacing

    def positive(level: float, variation: float) -> np.ndarray:
        f = _smooth_field(shape, spacing, config.field_scale, rng)
        return np.maximum(level * (1 + variation * f), level * _FIELD_FLOOR).astype(np.float32)

    background = positive(config.background, config.background_variation)
    illumination = positive(1.0, config.illumination_variation)
    if shape[0] > 1 and config.depth_attenuation > 0:
        depth = np.exp(np.log(1 - config.depth_attenuation) * np.linspace(0, 1, shape[0]))
        illumination *= depth.astype(np.float32)[:, None, None]
    autofluorescence = positive(config.autofluorescence, config.autofluorescence_variation)
    return _StaticFields(background, illumination, autofluorescence)


def _embryo_mask(
    config: SyntheticConfig, geometry: EmbryoGeometry, centre: np.ndarray
) -> np.ndarray:
    """Soft indicator (Z, Y, X) of the embryo whose centre is at ``centre``."""
    z = (np.arange(config.shape[0]) * config.spacing[0] - centre[0])[:, None, None]
    y = (np.arange(config.shape[1]) - centre[1])[None, :, None]
    x = (np.arange(config.shape[2]) - centre[2])[None, None, :]
    rot = geometry.rotation  # a rotation about z: y and x mix, z stays
    ly = rot[1, 1] * y + rot[1, 2] * x
    lx = rot[2, 1] * y + rot[2, 2] * x
    semi = geometry.semi
    rho2 = ((ly / semi[1]) ** 2 + (lx / semi[2]) ** 2).astype(np.float32)
    if not config.is_2d:
        rho2 = rho2 + ((z / semi[0]) ** 2).astype(np.float32)
    rho = np.sqrt(rho2, dtype=np.float32)
    scale = float(np.min(semi[1:] if config.is_2d else semi)) / config.embryo_edge
    return special.expit((1 - rho) * scale).astype(np.float32)


def _render_nuclei(
    config: SyntheticConfig,
    frame: FrameCells,
    signal: np.ndarray,
    labels: np.ndarray | None = None,
    label_values: np.ndarray | None = None,
) -> None:
    """Add every nucleus to ``signal`` in its own bounding box; optionally paint ``labels``."""
    shape = np.array(config.shape)
    spacing = config.spacing
    edge = config.edge_width
    best = None if labels is None else np.zeros(signal.shape, np.float32)
    for i in range(len(frame.uid)):
        semi = frame.semi[i]
        mean_semi = float(np.mean(semi))
        reach = float(np.max(semi)) * (1 + 6 * edge / mean_semi)
        centre = frame.physical[i] / spacing
        lo = np.maximum(np.floor(centre - reach / spacing), 0).astype(int)
        hi = np.minimum(np.ceil(centre + reach / spacing), shape - 1).astype(int)
        if config.is_2d:
            lo[0] = hi[0] = 0
        if np.any(hi < lo):
            continue
        dz = ((np.arange(lo[0], hi[0] + 1) * spacing[0]) - frame.physical[i, 0])[:, None, None]
        dy = (np.arange(lo[1], hi[1] + 1) - frame.physical[i, 1])[None, :, None]
        dx = (np.arange(lo[2], hi[2] + 1) - frame.physical[i, 2])[None, None, :]
        if config.is_2d:
            dz = np.zeros_like(dz)
        rot = frame.rotation[i]
        u = [(rot[k, 0] * dz + rot[k, 1] * dy + rot[k, 2] * dx) / semi[k] for k in range(3)]
        rho = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
        body = special.expit((1 - rho) * (mean_semi / edge))
        value = body * frame.intensity[i]
        amp = frame.speckle_amp[i]
        if len(amp) and np.any(amp):
            sp = frame.speckle_pos[i][:, :, None, None, None]
            d2 = sum((u[k][None] - sp[:, k]) ** 2 for k in range(3))
            sigma2 = 2 * frame.speckle_sigma[i][:, None, None, None] ** 2
            texture = 1 + np.tensordot(amp, np.exp(-d2 / sigma2), axes=1)
            value = value * np.maximum(texture, config.texture_floor)
        box = tuple(slice(a, b + 1) for a, b in zip(lo, hi, strict=True))
        signal[box] += value.astype(np.float32)
        if labels is not None and best is not None and label_values is not None:
            inside = (body > 0.5) & (body > best[box])
            best[box][inside] = body[inside]
            labels[box][inside] = label_values[i]


class _Renderer:
    """Turns a :class:`FrameCells` into a uint16 frame (and optional ground-truth labels)."""

    #: voxels per chunk of the noise computation, to bound the memory of large frames
    CHUNK_VOXELS = 2_000_000

    def __init__(self, config: SyntheticConfig, geometry: EmbryoGeometry) -> None:
        self.c = config
        self.geometry = geometry

    @cached_property
    def fields(self) -> _StaticFields:
        return _static_fields(self.c)

    def render(
        self, t: int, frame: FrameCells, label_values: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        c = self.c
        rng = np.random.default_rng([c.seed, _STREAM_NOISE, t])
        signal = np.zeros(c.shape, np.float32)
        labels = None
        if label_values is not None:
            small = len(label_values) == 0 or label_values.max() <= np.iinfo(np.uint16).max
            dtype = np.uint16 if small else np.uint32
            labels = np.zeros(c.shape, dtype)
        _render_nuclei(c, frame, signal, labels, label_values)
        if c.autofluorescence > 0:
            mask = _embryo_mask(c, self.geometry, frame.embryo_centre)
            signal += self.fields.autofluorescence * mask
        sigma = (0.0 if c.is_2d else c.psf_sigma_z / c.z_ratio, c.psf_sigma_xy, c.psf_sigma_xy)
        if any(s > 0 for s in sigma):
            signal = ndimage.gaussian_filter(signal, sigma, mode="nearest", truncate=3.0)
        power = math.exp(-c.bleach_rate * t)  # photobleaching
        if c.flicker > 0:
            power *= math.exp(rng.normal(0, c.flicker))  # laser power fluctuation
        image = np.empty(c.shape, np.uint16)
        slab = max(1, self.CHUNK_VOXELS // (c.shape[1] * c.shape[2]))
        for z0 in range(0, c.shape[0], slab):
            part = slice(z0, z0 + slab)
            expected = signal[part] * self.fields.illumination[part] * np.float32(power)
            expected += self.fields.background[part]
            image[part] = self._camera(expected, rng)
        return image, labels

    def _camera(self, expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Poisson shot noise, Gaussian read noise, offset, uint16."""
        c = self.c
        if c.noise > 0:
            gain = c.gain * c.noise**2
            photons = rng.poisson(np.maximum(expected, 0) / gain).astype(np.float32)
            counts = photons * np.float32(gain)
            if c.read_noise > 0:
                counts += rng.normal(0, c.read_noise * c.noise, expected.shape).astype(np.float32)
        else:
            counts = expected
        counts += np.float32(c.offset)
        return np.clip(np.rint(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)


# ====================================================================================== public API
class Simulation:
    """A simulated sequence: all cell states and the ground truth; frames render on demand.

    Use :func:`simulate` to build one. Rendering frame ``t`` alone gives the same pixels as
    rendering the whole sequence.
    """

    def __init__(self, config: SyntheticConfig) -> None:
        self.config = config
        simulator = _Simulator(config)
        self.geometry = simulator.geometry
        cells = simulator.initial()
        frames = [simulator.snapshot(cells)]
        for _ in range(1, config.frames):
            cells = simulator.step(cells)
            frames.append(simulator.snapshot(cells))
        self.frames: list[FrameCells] = frames
        #: ground-truth table (columns :data:`GT_COLUMNS`), one row per nucleus per frame
        self.tracks: pd.DataFrame = _ground_truth(config, frames)
        self._renderer = _Renderer(config, self.geometry)
        logger.debug(
            "simulated %d frames: %d nodes, %d divisions",
            config.frames, len(self.tracks), int(self.tracks["division_score"].sum()),
        )  # fmt: skip

    @cached_property
    def graph(self) -> TrackGraph:
        """The ground truth as a TrackGraph."""
        return TrackGraph.from_dataframe(self.tracks)

    @cached_property
    def _track_of_node(self) -> dict[str, np.ndarray]:
        graph = self.graph
        order = np.argsort(graph.ids)
        return {"ids": graph.ids[order], "tracks": graph.track_ids()[order]}

    def label_values(self, t: int) -> np.ndarray:
        """Track id (the CTC label) of every cell in frame ``t``; 0 for cells that are no node."""
        nodes = self.frames[t].node_id
        out = np.zeros(len(nodes), dtype=np.int64)
        known = nodes >= 0
        if np.any(known):
            lookup = self._track_of_node
            out[known] = lookup["tracks"][np.searchsorted(lookup["ids"], nodes[known])]
        return out

    def render(self, t: int, labels: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Frame ``t`` as (image (Z, Y, X) uint16, labels or None). Labels hold each node's
        track id on the voxels of its nucleus (before blur); nuclei that are no node are 0."""
        if not 0 <= t < self.config.frames:
            raise InputError(f"frame index must be in [0, {self.config.frames - 1}], found {t}")
        values = self.label_values(t) if labels else None
        return self._renderer.render(t, self.frames[t], values)

    def iter_frames(self, labels: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Yield ``render(t, labels)`` for every frame, one at a time."""
        for t in range(self.config.frames):
            yield self.render(t, labels)


def simulate(config: SyntheticConfig) -> Simulation:
    """Run the cell simulation of ``config`` (positions, divisions, appearance, ground truth)."""
    return Simulation(config)


def iter_frames(config: SyntheticConfig) -> Iterator[np.ndarray]:
    """Yield the frames (Z, Y, X) uint16 of ``config`` one at a time (for large sequences)."""
    for image, _ in simulate(config).iter_frames():
        yield image


@dataclass
class SyntheticSequence:
    """A fully rendered synthetic sequence with its ground truth."""

    config: SyntheticConfig
    #: (T, Z, Y, X) uint16
    images: np.ndarray
    #: ground-truth table, columns :data:`GT_COLUMNS`
    tracks: pd.DataFrame
    #: (T, Z, Y, X) track-id masks when requested, else None
    labels: np.ndarray | None = None

    @cached_property
    def graph(self) -> TrackGraph:
        """The ground truth as a TrackGraph."""
        return TrackGraph.from_dataframe(self.tracks)


def generate(config: SyntheticConfig, labels: bool = False) -> SyntheticSequence:
    """Simulate and render the whole sequence in memory (use :func:`iter_frames` or
    :func:`write_synthetic` for sequences that do not fit)."""
    sim = simulate(config)
    images = np.empty((config.frames, *config.shape), np.uint16)
    masks = None
    for t, (image, mask) in enumerate(sim.iter_frames(labels)):
        images[t] = image
        if mask is not None:
            if masks is None:
                masks = np.zeros((config.frames, *config.shape), mask.dtype)
            masks[t] = mask
    return SyntheticSequence(config, images, sim.tracks, masks)


# ====================================================================================== writing
@dataclass
class SyntheticPaths:
    """Where :func:`write_synthetic` put everything."""

    root: Path
    images: list[Path]
    tracks: Path
    ctc: Path
    metadata: Path
    labels: list[Path] = field(default_factory=list)
    #: counts of the ground truth (see :func:`summarise`)
    summary: dict[str, int] = field(default_factory=dict)


_FRAME_FILE = re.compile(r"t\d+\.tif")


def _frame_name(t: int, frames: int) -> str:
    return f"t{t:0{max(3, len(str(frames - 1)))}d}.tif"


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("expected a folder for the synthetic data, found a file", out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(
            "the output folder exists and is not empty; choose another folder or allow "
            "overwriting it (--overwrite, or overwrite=True)",
            out_dir,
        )


def _remove_stale_frames(folder: Path, keep: set[str]) -> None:
    if folder.is_dir():
        for path in folder.iterdir():
            if _FRAME_FILE.fullmatch(path.name) and path.name not in keep:
                path.unlink()


def _write_tiff(path: Path, volume: np.ndarray, z_ratio: float) -> None:
    with atomic_write(path, mode=None) as tmp:
        tifffile.imwrite(
            tmp, volume, imagej=True, resolution=(1.0, 1.0),
            metadata={"spacing": float(z_ratio), "unit": "pixel", "axes": "ZYX"},
        )  # fmt: skip


def iter_write_synthetic(
    out_dir: str | Path,
    config: SyntheticConfig,
    *,
    overwrite: bool = False,
    labels: bool = False,
) -> Generator[int, None, SyntheticPaths]:
    """Write a synthetic dataset frame by frame, yielding the number of frames written.

    Layout under ``out_dir``: ``images/t000.tif ...`` (ZYX uint16, ImageJ spacing = z_ratio),
    ``tracks.csv`` (our CSV), ``01_GT/TRA/`` (CTC ground truth), optionally ``labels/t000.tif``
    (track-id masks), and last ``synthetic.json`` (config, summary, layout). Returns (as the
    generator's value) the written :class:`SyntheticPaths`.
    """
    out = Path(out_dir)
    _check_out_dir(out, overwrite)
    sim = simulate(config)
    graph = sim.graph
    out.mkdir(parents=True, exist_ok=True)
    image_dir = out / "images"
    image_dir.mkdir(exist_ok=True)
    names = [_frame_name(t, config.frames) for t in range(config.frames)]
    _remove_stale_frames(image_dir, set(names))
    label_dir = out / "labels"
    if labels:
        label_dir.mkdir(exist_ok=True)
    _remove_stale_frames(label_dir, set(names) if labels else set())
    z_ratio = 1.0 if config.is_2d else config.z_ratio

    tracks_path = out / "tracks.csv"
    write_csv(graph, tracks_path)
    ctc_dir = out / "01_GT"
    write_ctc(graph, ctc_dir, gt=True, shape=(config.frames, *config.shape), z_ratio=z_ratio)

    paths = SyntheticPaths(out, [], tracks_path, ctc_dir, out / "synthetic.json")
    for t, (image, mask) in enumerate(sim.iter_frames(labels)):
        _write_tiff(image_dir / names[t], image, z_ratio)
        paths.images.append(image_dir / names[t])
        if mask is not None:
            _write_tiff(label_dir / names[t], mask, z_ratio)
            paths.labels.append(label_dir / names[t])
        yield t + 1

    paths.summary = summarise(sim.tracks, graph)
    metadata = {
        "generator": "napari_cellect.data.synthetic",
        "config": config.to_dict(),
        "summary": paths.summary,
        "files": {
            "images": "images/t###.tif (Z, Y, X) uint16, ImageJ spacing = z_ratio",
            "tracks": "tracks.csv (napari-cellect CSV, z in slices)",
            "ctc": "01_GT/TRA (Cell Tracking Challenge ground truth)",
            **({"labels": "labels/t###.tif track-id masks of the nuclei"} if labels else {}),
        },
    }
    with atomic_write(paths.metadata) as handle:
        json.dump(metadata, handle, indent=2)
        handle.write("\n")
    return paths


def write_synthetic(
    out_dir: str | Path,
    config: SyntheticConfig,
    *,
    overwrite: bool = False,
    labels: bool = False,
) -> SyntheticPaths:
    """Write a synthetic dataset (see :func:`iter_write_synthetic`) and return its paths."""
    steps = iter_write_synthetic(out_dir, config, overwrite=overwrite, labels=labels)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def summarise(tracks: pd.DataFrame, graph: TrackGraph | None = None) -> dict[str, int]:
    """Counts that describe a ground truth: nodes, tracks (branches), divisions, roots, frames."""
    parents = tracks["parent_id"].to_numpy()
    summary = {
        "frames": int(tracks["t"].max()) + 1 if len(tracks) else 0,
        "nodes": len(tracks),
        "divisions": int((tracks["division_score"] > 0).sum()),
        "roots": int(np.count_nonzero(parents < 0)),
    }
    if graph is not None:
        summary["tracks"] = int(len(np.unique(graph.track_ids())))
    return summary
