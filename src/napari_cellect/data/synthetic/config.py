"""Parameters of a synthetic sequence: :class:`SyntheticConfig`, the named :data:`PRESETS`, and
:func:`sample_config` (domain randomisation within :class:`ConfigRanges`)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_cellect.data.synthetic import streams
from napari_cellect.data.synthetic.geometry import cells_for_density
from napari_cellect.errors import InputError


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
    #: range of the elongation (long / short semi-axis) each interphase nucleus draws; (1, 1)
    #: leaves only ``shape_irregularity``
    elongation: tuple[float, float] = (1.0, 1.0)
    #: amplitude of a lobed, irregular outline (random symmetric bumps of the surface, so the
    #: centre of mass stays at the nucleus centre); 0 = smooth ellipsoids
    lobes: float = 0.0
    #: brightness of a nuclear rim (peripheral chromatin) relative to the mean nuclear intensity
    rim: float = 0.0
    #: fraction of nuclei that are much dimmer than ``brightness_range``
    dim_fraction: float = 0.0
    #: brightness factor of a dim nucleus (drawn uniformly per nucleus)
    dim_factor: tuple[float, float] = (0.15, 0.4)

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
    #: share of mitoses whose mother condenses into a metaphase plate (the others keep their
    #: interphase shape until they split)
    condensation_probability: float = 1.0
    #: share of mitoses whose mother brightens (``mitosis_brightness``) and whose daughters start
    #: bright (``daughter_brightness``)
    brightening_probability: float = 1.0
    #: relative spread of the distance between sisters at birth (std of a log-normal factor)
    separation_jitter: float = 0.0
    #: largest relative size difference between two sisters (0 = equal sizes)
    daughter_asymmetry: float = 0.0
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
    #: number of untracked debris blobs of any size and brightness (irregular when ``lobes``)
    debris: int = 0
    #: debris radius range as a fraction of the smallest nuclear radius
    debris_radius: tuple[float, float] = (0.3, 1.2)
    #: debris brightness range as a fraction of the dimmest nucleus
    debris_brightness: tuple[float, float] = (0.2, 1.5)
    #: brightness (intensity units) of a static network of thin background structures
    #: (membranes, yolk boundaries); 0 = none
    structures: float = 0.0
    #: length scale (physical pixels) of the background structures' network
    structure_scale: float = 12.0

    # ---- explicit negatives
    #: fraction of cells that are large (``giant_factor`` x their radius) and never divide
    giant_fraction: float = 0.0
    #: radius factor range of those large, non-dividing nuclei
    giant_factor: tuple[float, float] = (1.4, 1.9)
    #: pairs of touching, unrelated nuclei placed at t = 0 (not sisters: no division)
    doublets: int = 0

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
    for name in (
        "radius_range",
        "brightness_range",
        "speckle_size",
        "debris_radius",
        "debris_brightness",
    ):
        lo_hi = getattr(c, name)
        need(
            len(lo_hi) == 2 and 0 < lo_hi[0] <= lo_hi[1],
            f"{name} must be (low, high) with 0 < low <= high, found {lo_hi}",
        )
    for name, low in (("elongation", 1.0), ("giant_factor", 1.0)):
        lo_hi = getattr(c, name)
        need(
            len(lo_hi) == 2 and low <= lo_hi[0] <= lo_hi[1],
            f"{name} must be (low, high) with {low} <= low <= high, found {lo_hi}",
        )
    need(
        len(c.dim_factor) == 2 and 0 < c.dim_factor[0] <= c.dim_factor[1] <= 1,
        f"dim_factor must be (low, high) with 0 < low <= high <= 1, found {c.dim_factor}",
    )
    for name in (
        "dim_fraction",
        "giant_fraction",
        "condensation_probability",
        "brightening_probability",
    ):
        need(0 <= getattr(c, name) <= 1, f"{name} must be in [0, 1], found {getattr(c, name)}")
    need(0 <= c.lobes <= 0.5, f"lobes must be in [0, 0.5], found {c.lobes}")
    need(
        0 <= c.daughter_asymmetry < 1,
        f"daughter_asymmetry must be in [0, 1), found {c.daughter_asymmetry}",
    )
    need(c.structure_scale > 0, f"structure_scale must be > 0, found {c.structure_scale}")
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
        n_cells=110,
        radius_range=(4.5, 7.0),
        max_packing=0.45,
        contact_distance=0.92,
        embryo_axes=(1.05, 0.95, 0.95),
        speed=0.8,
    ),
    # low signal, strong inhomogeneous background, bleaching and a polar body
    "noisy": _preset(
        noise=3.0,
        brightness_range=(250.0, 700.0),
        background=150.0,
        background_variation=0.5,
        illumination_variation=0.3,
        texture=0.45,
        bleach_rate=0.01,
        flicker=0.03,
        depth_attenuation=0.4,
        psf_sigma_xy=1.3,
        psf_sigma_z=3.5,
        distractors=1,
    ),
    # large steps with coherent rotation and drift
    "fast": _preset(speed=3.0, persistence=0.8, rotation_speed=1.0, drift_speed=0.5),
    # everything at once: denser, noisier, faster, more divisions, cells entering and leaving
    "hard": _preset(
        n_cells=80,
        radius_range=(4.0, 7.5),
        contact_distance=0.95,
        max_packing=0.4,
        noise=2.5,
        brightness_range=(300.0, 900.0),
        background_variation=0.45,
        illumination_variation=0.25,
        bleach_rate=0.008,
        texture=0.4,
        speed=2.5,
        persistence=0.75,
        rotation_speed=0.6,
        drift_speed=0.3,
        division_rate=0.08,
        min_cycle=5,
        appear_rate=0.3,
        disappear_rate=0.005,
        embryo_axes=(1.6, 1.35, 1.1),
        distractors=2,
        psf_sigma_z=3.5,
    ),
    # 2D+t: a single optical section
    "sparse2d": _preset(
        shape=(1, 128, 128),
        z_ratio=1.0,
        n_cells=15,
        embryo_axes=(1.0, 0.92, 0.92),
        depth_attenuation=0.0,
    ),
    # the size of a real confocal embryo stack (41 x 512 x 512, z step = 5 xy pixels)
    "large": _preset(
        shape=(41, 512, 512),
        z_ratio=5.0,
        n_cells=120,
        radius_range=(9.0, 14.0),
        frames=10,
        psf_sigma_xy=1.5,
        psf_sigma_z=5.0,
        field_scale=120.0,
        embryo_edge=8.0,
    ),
}


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
    rng = np.random.default_rng([seed, streams.SAMPLE])

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


@dataclass(frozen=True)
class WideRanges:
    """Ranges of :func:`sample_wide_config`, the far wider training distribution (uniform
    draws unless stated). Nucleus sizes stay around the model's scale: the median radius of a
    series is drawn log-uniformly from ``radius_median`` and nuclei of one frame spread by up
    to ``radius_spread``; other sizes (2-30 px) reach the model rescaled to its reference
    radius at inference (``--cell-radius`` or the automatic estimate)."""

    #: probability of a 2D+t series (one slice)
    planar_probability: float = 0.2
    #: slices of a 3D series (log-uniform, whole numbers)
    z_slices: tuple[int, int] = (4, 64)
    #: largest voxel count of a frame; y and x shrink for deep stacks to stay below it
    max_voxels: int = 500_000
    #: smallest and largest y / x size of a frame
    yx_size: tuple[int, int] = (64, 192)
    #: anisotropy (z spacing / xy spacing), log-uniform
    z_ratio: tuple[float, float] = (1.0, 10.0)
    #: largest physical depth (slices x z_ratio) as a multiple of the y / x size: strongly
    #: anisotropic stacks have fewer slices
    max_depth_ratio: float = 3.0
    #: most nuclei in the field of view at t = 0 (keeps a series' simulation short)
    max_cells: int = 200
    #: median nuclear radius of a series (log-uniform, xy pixels)
    radius_median: tuple[float, float] = (3.5, 9.0)
    #: largest / smallest nucleus of a series
    radius_spread: tuple[float, float] = (1.15, 2.3)
    #: fraction of the embryo filled by nuclei at t = 0
    packing: tuple[float, float] = (0.03, 0.3)
    #: probability of each optional appearance effect (elongation, lobes, rim, dim nuclei,
    #: background structures, large non-dividing nuclei)
    optional_probability: float = 0.5
    elongation: tuple[float, float] = (1.2, 2.2)
    lobes: tuple[float, float] = (0.05, 0.3)
    shape_irregularity: tuple[float, float] = (0.04, 0.25)
    texture: tuple[float, float] = (0.0, 0.8)
    speckles: tuple[int, int] = (3, 30)
    rim: tuple[float, float] = (0.2, 0.8)
    dim_fraction: tuple[float, float] = (0.05, 0.3)
    #: background structures' brightness as a fraction of the dimmest nucleus
    structures: tuple[float, float] = (0.1, 0.6)
    #: background structures' scale in median nuclear radii
    structure_scale: tuple[float, float] = (1.5, 5.0)
    max_debris: int = 8
    psf_sigma_xy: tuple[float, float] = (0.5, 2.5)
    psf_z_factor: tuple[float, float] = (1.5, 5.0)
    #: noise scale, log-uniform
    noise: tuple[float, float] = (0.2, 6.0)
    bleach_rate: tuple[float, float] = (0.0, 0.04)
    flicker: tuple[float, float] = (0.0, 0.05)
    #: motion regimes, drawn with equal probability: (speed range log-uniform, persistence
    #: range, rotation and drift allowed)
    motion: tuple[tuple[tuple[float, float], tuple[float, float], bool], ...] = (
        ((0.1, 0.6), (0.3, 0.8), False),  # nearly still
        ((0.5, 3.0), (0.0, 0.3), False),  # Brownian jitter
        ((0.5, 3.0), (0.8, 0.95), True),  # smooth, directed, with tissue flow
        ((2.5, 6.0), (0.5, 0.9), True),  # fast
    )
    # ---- division appearance
    division_rate: tuple[float, float] = (0.02, 0.15)
    min_cycle: tuple[int, int] = (4, 15)
    mitosis_frames: tuple[int, int] = (1, 3)
    condensation_probability: tuple[float, float] = (0.0, 1.0)
    brightening_probability: tuple[float, float] = (0.0, 1.0)
    mitosis_brightness: tuple[float, float] = (1.0, 2.2)
    plate_thickness: tuple[float, float] = (0.3, 0.7)
    plate_width: tuple[float, float] = (0.9, 1.4)
    daughter_separation: tuple[float, float] = (0.7, 2.5)
    separation_jitter: tuple[float, float] = (0.0, 0.3)
    daughter_radius_factor: tuple[float, float] = (0.5, 1.0)
    daughter_asymmetry: tuple[float, float] = (0.0, 0.25)
    daughter_brightness: tuple[float, float] = (1.0, 1.8)
    daughter_speed: tuple[float, float] = (0.2, 1.5)
    # ---- explicit negatives
    giant_fraction: tuple[float, float] = (0.03, 0.15)
    #: touching unrelated pairs per cell of the field of view
    doublet_fraction: tuple[float, float] = (0.0, 0.15)
    #: below 1 nuclei touch and overlap a little
    contact_distance: tuple[float, float] = (0.75, 1.05)


def sample_wide_config(
    seed: int, base: SyntheticConfig | None = None, ranges: WideRanges | None = None
) -> SyntheticConfig:
    """A config of the far wider training distribution: :func:`sample_config`'s draws, then
    from their own stream the frame shape (2D or 1-64 slices), anisotropy 1-10, nucleus size
    and shape (elongated, lobed, touching), texture, dim nuclei, background structures and
    debris, optics, noise, bleaching, a motion regime, the division appearance (with or
    without condensation or brightening; daughters at various distances and sizes) and the
    explicit negatives (large nuclei that never divide, touching unrelated pairs). Keeps
    ``base``'s frames; :func:`sample_config` itself stays as it was (validation seeds use it)."""
    base = base or SyntheticConfig()
    w = ranges or WideRanges()
    rng = np.random.default_rng([seed, streams.SAMPLE_WIDE])

    def uni(lo_hi: tuple[float, float]) -> float:
        return float(rng.uniform(*lo_hi))

    def log_uni(lo_hi: tuple[float, float]) -> float:
        return float(np.exp(rng.uniform(np.log(lo_hi[0]), np.log(lo_hi[1]))))

    def integer(lo_hi: tuple[int, int]) -> int:
        return int(rng.integers(lo_hi[0], lo_hi[1] + 1))

    def optional(value: float) -> float:
        return value if rng.random() < w.optional_probability else 0.0

    if rng.random() < w.planar_probability:
        z = 1
    else:
        z = int(round(log_uni((float(w.z_slices[0]), float(w.z_slices[1])))))
    yx = int(np.clip(math.sqrt(w.max_voxels / z), *w.yx_size)) // 16 * 16
    z_ratio = round(log_uni(w.z_ratio), 2)
    if z > 1:
        z = max(w.z_slices[0], min(z, int(w.max_depth_ratio * yx / z_ratio)))
    shape = (z, yx, yx)
    r_median = log_uni(w.radius_median)
    spread = math.sqrt(uni(w.radius_spread))
    speed, persistence, flow = w.motion[int(rng.integers(len(w.motion)))]
    min_cycle = integer(w.min_cycle)
    psf_xy = uni(w.psf_sigma_xy)
    config = sample_config(seed, dataclasses.replace(base, shape=shape))
    elongation_high = optional(uni(w.elongation))
    config = dataclasses.replace(
        config,
        z_ratio=1.0 if z == 1 else z_ratio,
        depth_attenuation=0.0 if z == 1 else config.depth_attenuation,
        radius_range=(r_median / spread, r_median * spread),
        shape_irregularity=uni(w.shape_irregularity),
        elongation=(1.0, max(1.0, elongation_high)),
        lobes=optional(uni(w.lobes)),
        rim=optional(uni(w.rim)),
        texture=uni(w.texture),
        speckles=integer(w.speckles),
        dim_fraction=optional(uni(w.dim_fraction)),
        structures=optional(uni(w.structures)) * config.brightness_range[0],
        structure_scale=uni(w.structure_scale) * r_median,
        debris=integer((0, w.max_debris)),
        psf_sigma_xy=psf_xy,
        psf_sigma_z=psf_xy * uni(w.psf_z_factor),
        noise=log_uni(w.noise),
        bleach_rate=uni(w.bleach_rate),
        flicker=uni(w.flicker),
        speed=log_uni(speed),
        persistence=uni(persistence),
        rotation_speed=config.rotation_speed if flow else 0.0,
        drift_speed=config.drift_speed if flow else 0.0,
        division_rate=uni(w.division_rate),
        min_cycle=min_cycle,
        mitosis_frames=min(integer(w.mitosis_frames), min_cycle - 1),
        condensation_probability=uni(w.condensation_probability),
        brightening_probability=uni(w.brightening_probability),
        mitosis_brightness=uni(w.mitosis_brightness),
        plate_thickness=uni(w.plate_thickness),
        plate_width=uni(w.plate_width),
        daughter_separation=uni(w.daughter_separation),
        separation_jitter=uni(w.separation_jitter),
        daughter_radius_factor=uni(w.daughter_radius_factor),
        daughter_asymmetry=uni(w.daughter_asymmetry),
        daughter_brightness=uni(w.daughter_brightness),
        daughter_speed=uni(w.daughter_speed),
        giant_fraction=optional(uni(w.giant_fraction)),
        contact_distance=uni(w.contact_distance),
    )
    n = min(max(1, cells_for_density(config, uni(w.packing))), w.max_cells)
    doublets = int(round(uni(w.doublet_fraction) * n))
    return dataclasses.replace(config, n_cells=n, doublets=doublets)
