"""A motion and lineage simulator of its own (not :mod:`napari_cellect.data.synthetic`'s).

Cells start at random places at least two radii apart, move by a persistent random walk
(velocity = momentum x previous velocity + Gaussian kick) pushed apart where they overlap, and
divide when their cell-cycle clock, drawn from a gamma distribution, runs out. Daughters are
placed on opposite sides of the mother along a random axis, 1.1 to 2.8 radii apart, each with
its own size (asymmetric divisions included); they grow back over the cycle. Cells that leave
the volume end. All coordinates are in isotropic pixels internally and voxels on output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .lineage import Lineage


@dataclass(frozen=True)
class MotionConfig:
    """What :func:`simulate` makes; distances in xy pixels unless said otherwise."""

    shape: tuple[int, int, int]
    """(Z, Y, X) voxels of the series; Z = 1 for 2D+t."""
    frames: int
    radius: float
    z_ratio: float = 1.0
    n_cells: int = 12
    max_cells: int = 80
    cycle_frames: float = 14.0
    """Mean cell-cycle length (frames); gamma distributed with shape ``cycle_shape``."""
    cycle_shape: float = 6.0
    speed: float = 0.25
    """Typical displacement per frame, in radii."""
    momentum: float = 0.6
    seed: int = 0


def _random_unit(rng: np.random.Generator, dims: int) -> np.ndarray:
    v = rng.normal(size=3)
    if dims == 2:
        v[0] = 0.0
    return v / max(np.linalg.norm(v), 1e-9)


def simulate(config: MotionConfig) -> Lineage:
    """A lineage of ``config.frames`` frames in voxel coordinates of ``config.shape``."""
    rng = np.random.default_rng(config.seed)
    dims = 2 if config.shape[0] == 1 else 3
    r0 = config.radius
    extent = np.array(config.shape, float) * np.array([config.z_ratio, 1.0, 1.0])
    lo = np.array([0.0 if dims == 2 else 0.6 * r0, 0.6 * r0, 0.6 * r0])
    hi = np.maximum(extent - lo, lo + 1.0)
    if dims == 2:
        lo[0] = hi[0] = 0.0

    pos, vel, rad, age, cycle, ids, target = [], [], [], [], [], [], []
    next_id = 0
    for _ in range(200 * config.n_cells):
        if len(pos) >= config.n_cells:
            break
        p = lo + rng.random(3) * (hi - lo)
        if all(np.linalg.norm(p - q) > 2.1 * r0 for q in pos):
            pos.append(p)
            c = rng.gamma(config.cycle_shape, config.cycle_frames / config.cycle_shape)
            cycle.append(max(c, 3.0))
            age.append(rng.random() * cycle[-1])
            s = r0 * rng.uniform(0.85, 1.15)
            target.append(s)
            rad.append(s * (0.8 + 0.2 * age[-1] / cycle[-1]))
            vel.append(_random_unit(rng, dims) * config.speed * r0 * rng.random())
            ids.append(next_id)
            next_id += 1
    parents = [-1] * len(pos)
    rows: list[tuple] = []
    for t in range(config.frames):
        for k in range(len(pos)):
            z, y, x = pos[k] / np.array([config.z_ratio, 1.0, 1.0])
            rows.append((ids[k], t, z if dims == 3 else 0.0, y, x, rad[k], parents[k]))
        if t == config.frames - 1:
            break
        keys = ("pos", "vel", "rad", "age", "cycle", "ids", "target", "parents")
        new: dict[str, list] = {k: [] for k in keys}
        for k in range(len(pos)):
            if age[k] + 1 >= cycle[k] and len(pos) + len(new["pos"]) < config.max_cells:
                axis = _random_unit(rng, dims)
                gap = rng.uniform(1.1, 2.8) * rad[k]
                share = rng.uniform(0.4, 0.6)
                for sign, frac in ((1, share), (-1, 1 - share)):
                    d_rad = rad[k] * np.sqrt(frac * 2) * rng.uniform(0.62, 0.8)
                    new["pos"].append(pos[k] + sign * axis * gap * (1 - frac))
                    new["vel"].append(vel[k] * 0.3 + sign * axis * 0.1 * r0)
                    new["rad"].append(d_rad)
                    new["target"].append(target[k] * rng.uniform(0.9, 1.1))
                    new["age"].append(0.0)
                    c = rng.gamma(config.cycle_shape, config.cycle_frames / config.cycle_shape)
                    new["cycle"].append(max(c, 3.0))
                    new["ids"].append(next_id)
                    new["parents"].append(ids[k])
                    next_id += 1
                continue
            kick = rng.normal(size=3) * config.speed * r0 * (1 - config.momentum)
            if dims == 2:
                kick[0] = 0.0
            v = config.momentum * vel[k] + kick
            new["pos"].append(pos[k] + v)
            new["vel"].append(v)
            grow = rad[k] + (target[k] - rad[k]) / max(cycle[k] - age[k], 1.0)
            new["rad"].append(grow)
            new["target"].append(target[k])
            new["age"].append(age[k] + 1)
            new["cycle"].append(cycle[k])
            new["ids"].append(next_id)
            new["parents"].append(ids[k])
            next_id += 1
        p = _push_apart(np.array(new["pos"]), np.array(new["rad"]), dims)
        inside = np.all((p >= lo - 0.5 * r0) & (p <= hi + 0.5 * r0), axis=1)
        pos = list(p[inside])
        keep = np.flatnonzero(inside)
        vel, rad, age, cycle, ids, target, parents = (
            [new[key][i] for i in keep]
            for key in ("vel", "rad", "age", "cycle", "ids", "target", "parents")
        )
    cols = np.array(rows, dtype=float).reshape(-1, 7)
    return Lineage(
        id=cols[:, 0].astype(np.int64),
        t=cols[:, 1].astype(np.int64),
        z=cols[:, 2],
        y=cols[:, 3],
        x=cols[:, 4],
        radius=cols[:, 5],
        parent=cols[:, 6].astype(np.int64),
    )


def _push_apart(pos: np.ndarray, rad: np.ndarray, dims: int, steps: int = 3) -> np.ndarray:
    """Move overlapping cells apart (half the overlap each, a few rounds); touching is allowed."""
    pos = pos.copy()
    if len(pos) < 2:
        return pos
    for _ in range(steps):
        diff = pos[:, None, :] - pos[None, :, :]
        dist = np.linalg.norm(diff, axis=2) + np.eye(len(pos))
        overlap = np.clip(0.9 * (rad[:, None] + rad[None, :]) - dist, 0.0, None)
        np.fill_diagonal(overlap, 0.0)
        push = (diff / dist[..., None] * overlap[..., None] * 0.5).sum(axis=1)
        if dims == 2:
            push[:, 0] = 0.0
        pos += push
    return pos
