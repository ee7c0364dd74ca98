"""The cell population, advanced frame by frame: placement, motion with repulsion and
confinement, cell cycle and divisions, appearance and disappearance, and what each frame shows
(:class:`FrameCells`). Cheap: no pixels are made here (see :mod:`.render`)."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial import cKDTree

from napari_cellect.data.synthetic import streams
from napari_cellect.data.synthetic.geometry import (
    dim_mask,
    embryo_geometry,
    random_rotations,
    spindle_frames,
    unit_vectors,
)

if TYPE_CHECKING:
    from napari_cellect.data.synthetic.config import SyntheticConfig

logger = logging.getLogger(__name__)

#: cycle length of a cell that never divides
_NEVER = 2**62
#: Monte Carlo samples used to measure how much of the embryo the field of view shows
_FOV_SAMPLES = 4096
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
#: random directions per nucleus that shape its lobed outline (``lobes``)
_LOBE_DIRECTIONS = 2
#: size spread of the partner of a touching doublet (factors on the first nucleus's radius)
_DOUBLET_SIZE = (0.85, 1.15)


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
    lobe_dirs: np.ndarray  # (n, J, 3) directions of the outline's bumps (nucleus frame)
    lobe_amps: np.ndarray  # (n, J, 2) amplitudes of the 2nd and 4th order bumps
    condenses: np.ndarray  # bool: its mitosis shows a metaphase plate
    brightens: np.ndarray  # bool: its mitosis brightens (mother and newborn daughters)
    giant: np.ndarray  # bool: a large nucleus that never divides (a negative)

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
    lobe_dirs: np.ndarray
    lobe_amps: np.ndarray
    embryo_centre: np.ndarray
    node_id: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


class Simulator:
    """Advances the cell population frame by frame (positions, cycle, appearance)."""

    def __init__(self, config: SyntheticConfig) -> None:
        self.c = config
        self.rng = np.random.default_rng([config.seed, streams.SIMULATION])
        #: the per-cell draws of the wider appearance, apart from ``rng`` (see streams)
        self.look = np.random.default_rng([config.seed, streams.APPEARANCE])
        self.geometry = embryo_geometry(config)
        self.dims = dim_mask(config)
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
        ball = unit_vectors(self.rng, n, self.planar)
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
        self, radii: np.ndarray, fov: Sequence[bool | None], existing: _Cells | None
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
        boost: float | np.ndarray = 1.0,
        mother: np.ndarray | None = None,
        vel: np.ndarray | None = None,
    ) -> _Cells:
        c, rng, n = self.c, self.rng, len(pos)
        k = c.speckles
        shape = np.exp(rng.normal(0, c.shape_irregularity, (n, 3)))
        shape /= np.prod(shape, axis=1, keepdims=True) ** (1 / 3)
        look, n_dirs = self.look, _LOBE_DIRECTIONS
        elongation = look.uniform(*c.elongation, n)
        lobe_dirs = unit_vectors(look, n * n_dirs, False).reshape(n, n_dirs, 3)
        lobe_amps = look.uniform(-1.0, 1.0, (n, n_dirs, 2)) * c.lobes
        condenses = look.random(n) < c.condensation_probability
        brightens = look.random(n) < c.brightening_probability
        if c.elongation[1] > 1:
            shape[:, 0] *= elongation
            shape /= np.prod(shape, axis=1, keepdims=True) ** (1 / 3)
        speckle_pos = unit_vectors(rng, n * k, self.planar).reshape(n, k, 3)
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
            axis=unit_vectors(rng, n, self.planar),
            rotation=random_rotations(rng, n),
            shape=shape,
            speckle_pos=speckle_pos,
            speckle_amp=rng.uniform(-1, 1, (n, k)) * (c.texture if tracked else 0.0),
            speckle_sigma=rng.uniform(*c.speckle_size, (n, k)),
            mother=np.full(n, -1, dtype=np.int64) if mother is None else mother,
            lobe_dirs=lobe_dirs,
            lobe_amps=lobe_amps,
            condenses=condenses,
            brightens=brightens,
            giant=np.zeros(n, dtype=bool),
        )

    def _random_cells(self, n: int, fov: Sequence[bool | None], existing: _Cells | None) -> _Cells:
        c = self.c
        radius = self.rng.uniform(*c.radius_range, n)
        giant = self.look.random(n) < c.giant_fraction
        radius[giant] *= self.look.uniform(*c.giant_factor, n)[giant]
        pos, keep = self._place(radius, fov, existing)
        brightness = self.rng.uniform(*c.brightness_range, n)
        dim = self.look.random(n) < c.dim_fraction
        brightness[dim] *= self.look.uniform(*c.dim_factor, n)[dim]
        cells = self._new_cells(pos[keep], radius[keep], radius[keep], brightness[keep])
        cells.vel = self._velocity_noise(len(cells)) * (c.speed / math.sqrt(self.dims.sum()))
        cells.giant = giant[keep]
        cells.cycle[cells.giant] = _NEVER
        return cells

    def initial(self) -> _Cells:
        """Cells at t = 0: n_cells in the field of view, the rest of the embryo at the same
        density, random ages, then distractors; relaxed so that nuclei do not overlap."""
        c = self.c
        n_total = int(round(c.n_cells / self._fov_fraction()))
        n_out = min(max(n_total - c.n_cells, 0), _MAX_OUTSIDE_FACTOR * max(c.n_cells, 1))
        where: Sequence[bool | None] = [True] * c.n_cells + [False] * n_out
        cells = self._random_cells(len(where), where, None)
        placed_inside = int(np.count_nonzero(self._in_fov(cells.pos)))
        if placed_inside < c.n_cells:
            logger.warning(
                "placed %d of %d cells in the field of view: the embryo is too small",
                placed_inside,
                c.n_cells,
            )
        self._randomise_cycle_phase(cells)
        if c.doublets:
            cells = cells.concat(self._doublet_partners(cells))
        if c.distractors:
            radius = c.distractor_radius * c.radius_range[0]
            pos, keep = self._place(np.full(c.distractors, radius), [True] * c.distractors, cells)
            extra = self._new_cells(
                pos[keep],
                np.full(keep.sum(), radius),
                np.full(keep.sum(), radius),
                np.full(keep.sum(), c.distractor_brightness * c.brightness_range[1]),
                tracked=False,
            )
            cells = cells.concat(extra)
        if c.debris:
            radii = self.rng.uniform(*c.debris_radius, c.debris) * c.radius_range[0]
            pos, keep = self._place(radii, [True] * c.debris, cells)
            brightness = self.rng.uniform(*c.debris_brightness, c.debris) * c.brightness_range[0]
            cells = cells.concat(
                self._new_cells(
                    pos[keep], radii[keep], radii[keep], brightness[keep], tracked=False
                )
            )
        for _ in range(3):
            self._relax(cells)
        return cells

    def _doublet_partners(self, cells: _Cells) -> _Cells:
        """A touching, unrelated partner beside ``doublets`` cells of the field of view: two
        nuclei in contact that are no division (a negative for the division head)."""
        c = self.c
        candidates = np.flatnonzero(self._in_fov(cells.pos) & ~cells.giant)
        k = min(c.doublets, len(candidates))
        first = cells.take(self.rng.choice(candidates, k, replace=False))
        radius = first.radius * self.rng.uniform(*_DOUBLET_SIZE, k)
        direction = unit_vectors(self.rng, k, self.planar)
        pos = first.pos + direction * ((first.radius + radius) * c.contact_distance)[:, None]
        brightness = first.brightness * np.exp(self.rng.normal(0, c.brightness_inheritance, k))
        partners = self._new_cells(pos, radius, radius, brightness, vel=first.vel.copy())
        self._randomise_cycle_phase(partners)
        return partners

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
        cells.cycle[cells.giant] = _NEVER

    def _fov_fraction(self) -> float:
        """Fraction of the embryo region open to cell centres that lies in the field of view
        (Monte Carlo on a private stream, so it does not shift the simulation's draws)."""
        rng = np.random.default_rng([self.c.seed, streams.EMBRYO, 1])
        g = self.geometry
        ball = unit_vectors(rng, _FOV_SAMPLES, self.planar)
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
                        delta[coincident] = unit_vectors(self.rng, n_same, self.planar)
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
        separation = c.daughter_separation * mothers.radius / 2
        if c.separation_jitter > 0:
            separation = separation * np.exp(self.look.normal(0, c.separation_jitter, n))
        offset = mothers.axis * separation[:, None]
        pos = np.concatenate([mothers.pos + offset, mothers.pos - offset])
        radius = np.tile(mothers.radius * c.daughter_radius_factor, 2)
        if c.daughter_asymmetry > 0:
            unequal = self.look.uniform(0, c.daughter_asymmetry, n)
            radius = radius * np.concatenate([1 + unequal, 1 - unequal])
        lo, hi = c.radius_range
        jitter = np.exp(rng.normal(0, c.radius_inheritance, 2 * n))
        target = np.clip(np.tile(mothers.target_radius, 2) * jitter, lo, hi)
        brightness = np.tile(mothers.brightness, 2) * np.exp(
            rng.normal(0, c.brightness_inheritance, 2 * n)
        )
        lo_b, hi_b = c.brightness_range
        brightness = np.clip(brightness, lo_b * _BRIGHTNESS_SLACK[0], hi_b * _BRIGHTNESS_SLACK[1])
        daughters = self._new_cells(
            pos,
            radius,
            target,
            brightness,
            boost=np.where(np.tile(mothers.brightens, 2), c.daughter_brightness, 1.0),
            mother=np.tile(mothers.uid, 2),
            vel=np.tile(mothers.vel, (2, 1))
            + np.concatenate([mothers.axis, -mothers.axis]) * c.daughter_speed,
        )
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
        plate_cells = mitotic & cells.condenses
        semi = cells.radius[:, None] * cells.shape
        rotation = cells.rotation.copy()
        if np.any(plate_cells):
            plate = np.array([c.plate_thickness, c.plate_width, c.plate_width])
            k = cond[plate_cells, None]
            semi[plate_cells] = cells.radius[plate_cells, None] * ((1 - k) + k * plate[None, :])
            rotation[plate_cells] = spindle_frames(cells.axis[plate_cells], self.planar)
        mitosis = 1 + (c.mitosis_brightness - 1) * cond * cells.brightens
        intensity = cells.brightness * np.exp(cells.fluct) * cells.boost * mitosis
        condensed = cond * cells.condenses
        amp = cells.speckle_amp * (1 + condensed)[:, None]
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
            lobe_dirs=cells.lobe_dirs.astype(np.float32),
            lobe_amps=(cells.lobe_amps * (1 - condensed)[:, None, None]).astype(np.float32),
            embryo_centre=self.geometry.centre + self.t * self.geometry.drift,
            node_id=np.full(n, -1, dtype=np.int64),
        )
