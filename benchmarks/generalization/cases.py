"""The cases of the generalisation benchmark, split into a validation and a test part.

The **validation** part may be used to choose settings (thresholds, training choices); the
**test** part is only ever measured. They never share data: synthetic cases use different
simulator and renderer seeds (validation 1301-1399, test 1401-1499), real lineages and real
images different time windows (validation from the first part of each sequence, test from the
rest, :data:`SPLIT_FRAME`), checked by :func:`check_split`.

Each lineage case is rendered at a given nucleus radius (xy pixels), z ratio and depth (Z = 1:
2D+t): a real lineage is scaled so that its typical nucleus has that radius, cropped around
its divisions, and, when a 2D lineage is drawn in 3D, laid out as a monolayer whose cells sit
at random heights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy.spatial import cKDTree

from .lineage import Lineage, track_ids
from .render import RenderStyle, render
from .simulate import MotionConfig, simulate
from .sources import IMAGES, LINEAGES, load_images, load_lineage

PARTS = ("validation", "test")
SEEDS = {"validation": range(1301, 1400), "test": range(1401, 1500)}
#: frames before this belong to the validation part, frames from it on to the test part
SPLIT_FRAME = {"celegans": 120, "bacteria": 28, "hela": 46, "hela-img": 10, "cho-img": 10}


@dataclass(frozen=True)
class Case:
    name: str
    part: str
    source: str
    """``"sim"``, a lineage of :data:`~.sources.LINEAGES` or images of :data:`~.sources.IMAGES`."""
    seed: int
    radius: float = 8.0
    z_ratio: float = 1.0
    depth: int = 1
    """Z slices; 1 = 2D+t."""
    size: int = 128
    """Y = X pixels."""
    frames: int = 12
    start: int = 0
    """First frame of the window taken from a real sequence."""

    @property
    def detection_only(self) -> bool:
        return self.source in IMAGES


@dataclass
class Rendered:
    images: np.ndarray
    truth: Lineage
    z_ratio: float
    radius: float
    """The true median nucleus radius (xy pixels)."""


def frame_size(radius: float, three_d: bool) -> int:
    """Y = X of a case: a few nuclei across, within what a small CPU tracks in seconds."""
    lo, hi, k = (64, 192, 10) if three_d else (96, 288, 12)
    return int(np.clip(round(k * radius / 16) * 16, lo, hi))


def lineage_case(
    part: str,
    source: str,
    seed: int,
    radius: float,
    z_ratio: float = 1.0,
    three_d: bool = False,
    frames: int = 12,
    start: int = 0,
) -> Case:
    depth = math.ceil(5 * radius / z_ratio) if three_d else 1
    dims = f"3d-r{radius:g}-z{z_ratio:g}" if three_d else f"2d-r{radius:g}"
    return Case(
        f"{source}-{dims}",
        part,
        source,
        seed,
        radius,
        z_ratio,
        depth,
        frame_size(radius, three_d),
        frames,
        start,
    )


def cases(part: str) -> list[Case]:
    """Every case of ``part``; the two parts have the same make-up, never the same data."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, not {part!r}")
    seed = iter(SEEDS[part])
    val = part == "validation"
    out = [lineage_case(part, "sim", next(seed), r) for r in (4, 8, 14, 24)]
    out += [
        lineage_case(part, "sim", next(seed), r, z, True)
        for r, z in ((4, 1), (8, 3), (14, 6), (24, 6))
    ]
    hela = 10 if val else 50
    out += [
        lineage_case(part, "hela", next(seed), 8, start=hela),
        lineage_case(part, "hela", next(seed), 14, start=hela + 12),
        lineage_case(part, "hela", next(seed), 8, 3, True, start=hela + 24),
    ]
    bact = 8 if val else 30
    out += [
        lineage_case(part, "bacteria", next(seed), 4, frames=10, start=bact),
        lineage_case(part, "bacteria", next(seed), 8, frames=10, start=bact + 8),
        lineage_case(part, "bacteria", next(seed), 14, 6, True, frames=10, start=bact + 4),
    ]
    ce = 70 if val else 140
    out += [
        lineage_case(part, "celegans", next(seed), 4, 1, True, start=ce),
        lineage_case(part, "celegans", next(seed), 8, 3, True, start=ce + 15),
        lineage_case(part, "celegans", next(seed), 14, 6, True, start=ce + 30),
    ]
    img = 2 if val else 12
    out += [Case(name, part, name, next(seed), frames=5, start=img) for name in IMAGES]
    check_split(out)
    return out


def quick(part: str) -> list[Case]:
    """Four small cases of ``part``: 6 frames each."""
    picked = ("sim-2d-r8", "sim-3d-r8-z3", "hela-2d-r14", "celegans-3d-r8-z3")
    return [replace(c, frames=6) for c in cases(part) if c.name in picked]


def check_split(selected: list[Case]) -> None:
    """Raise when a case takes data of the other part (a seed or a frame window)."""
    for c in selected:
        if c.seed not in SEEDS[c.part]:
            raise AssertionError(f"{c.name}: seed {c.seed} is not a {c.part} seed")
        if c.source in SPLIT_FRAME:
            end = c.start + c.frames
            split = SPLIT_FRAME[c.source]
            if (c.part == "validation" and end > split) or (c.part == "test" and c.start < split):
                raise AssertionError(
                    f"{c.name} ({c.part}): frames {c.start}-{end - 1} cross "
                    f"frame {split}, where the parts meet"
                )


# ---------------------------------------------------------------------------------------- build


def build(case: Case) -> Rendered:
    """Images and ground truth of ``case``."""
    if case.source in IMAGES:
        return _real_images(case)
    shape = (case.depth, case.size, case.size)
    if case.source == "sim":
        n = case.size**2 / (3.2 * case.radius) ** 2 * (1.0 if case.depth == 1 else 1.6)
        config = MotionConfig(
            shape=shape,
            frames=case.frames,
            radius=case.radius,
            z_ratio=case.z_ratio,
            n_cells=int(0.55 * n) + 3,
            max_cells=int(1.6 * n) + 6,
            seed=case.seed,
        )
        truth = simulate(config)
    else:
        truth = _real_lineage(case, shape)
    style = RenderStyle.random(case.seed)
    images, _ = render(truth, shape, z_ratio=case.z_ratio, style=style, seed=case.seed)
    return Rendered(images, truth, case.z_ratio, float(np.median(truth.radius)))


def native_radius(lineage: Lineage, markers: bool) -> float:
    """The source's typical nucleus radius (isotropic pixels): the masks' median equivalent
    radius, at most 0.45 x the median nearest-neighbour distance (0.4 x when the masks are
    only markers)."""
    nn = []
    for t in np.unique(lineage.t)[::3]:
        p = lineage.positions[lineage.t == t]
        if len(p) > 2:
            nn.append(np.median(cKDTree(p).query(p, 2)[0][:, 1]))
    spacing = float(np.median(nn))
    if markers:
        return 0.4 * spacing
    return min(float(np.nanmedian(lineage.radius)), 0.45 * spacing)


def _real_lineage(case: Case, shape: tuple[int, int, int]) -> Lineage:
    source = LINEAGES[case.source]
    full = load_lineage(case.source)
    window = full.take((full.t >= case.start) & (full.t < case.start + case.frames))
    window = replace(window, t=window.t - case.start)
    scale = case.radius / native_radius(window, source.markers)
    rng = np.random.default_rng(case.seed)
    median_r = float(np.nanmedian(window.radius))
    ratio = np.clip(np.nan_to_num(window.radius / median_r, nan=1.0), 0.75, 1.3)
    radius = case.radius * (np.ones(len(window)) if source.markers else ratio)
    pos = window.positions * scale
    depth_phys = case.depth * case.z_ratio
    flat = np.ptp(full.z) == 0
    if case.depth > 1 and flat:  # a 2D lineage drawn as a 3D monolayer
        branch = track_ids(window)
        _, inverse = np.unique(branch, return_inverse=True)
        height = rng.normal(0.0, 0.5 * case.radius, inverse.max() + 1)[inverse]
        pos[:, 0] = depth_phys / 2 + np.clip(
            height + rng.normal(0, 0.1 * case.radius, len(pos)), -depth_phys / 3, depth_phys / 3
        )
    extent = np.array([depth_phys, case.size, case.size], float)
    # the crop: centred near a division, the candidate holding most divisions inside wins
    mothers = np.flatnonzero(window.n_children() >= 2)
    candidates = (
        pos[rng.choice(mothers, min(16, len(mothers)), replace=False)]
        if len(mothers)
        else pos[rng.choice(len(pos), min(16, len(pos)), replace=False)]
    )
    best, best_score = None, -1
    for c in candidates:
        origin = c - extent / 2
        if case.depth == 1 or flat:  # the monolayer's heights are already within the depth
            origin[0] = 0.0
        inside = np.all((pos >= origin) & (pos < origin + extent), axis=1)
        score = np.count_nonzero(inside[mothers]) * 1000 + np.count_nonzero(inside)
        if score > best_score:
            best, best_score = origin, score
    pos = pos - best
    if case.depth == 1:
        pos[:, 0] = 0.0
    cropped = Lineage(
        id=window.id,
        t=window.t,
        z=pos[:, 0] / case.z_ratio,
        y=pos[:, 1],
        x=pos[:, 2],
        radius=radius,
        parent=window.parent,
    )
    keep = np.all((cropped.positions >= 0) & (cropped.positions < np.array(shape) - 0.5), axis=1)
    return cropped.take(keep)


def _real_images(case: Case) -> Rendered:
    """Real frames (2D ones cropped to their centred 320 x 320), with the reference
    segmentation's centroids as a detection-only ground truth (no links)."""
    from napari_cellect.data.annotations import label_centroids

    images, masks, z_ratio = load_images(case.source)
    window = slice(case.start, case.start + case.frames)
    images, masks = images[window], masks[window]
    if images.shape[1] == 1:  # 2D: a centred crop of 320 x 320 keeps a run short
        y0, x0 = (images.shape[2] - 320) // 2, (images.shape[3] - 320) // 2
        images = images[:, :, y0 : y0 + 320, x0 : x0 + 320]
        masks = masks[:, :, y0 : y0 + 320, x0 : x0 + 320]
    rows = []
    next_id = 0
    for t, frame in enumerate(masks):
        _, centres, counts = label_centroids(frame)
        r = (
            np.sqrt(counts / np.pi)
            if frame.shape[0] == 1
            else np.cbrt(3 * counts * z_ratio / (4 * np.pi))
        )
        for c, rad in zip(centres, r, strict=True):
            rows.append((next_id, t, *c, rad))
            next_id += 1
    a = np.array(rows, float)
    truth = Lineage(
        id=a[:, 0].astype(np.int64),
        t=a[:, 1].astype(np.int64),
        z=a[:, 2],
        y=a[:, 3],
        x=a[:, 4],
        radius=a[:, 5],
        parent=np.full(len(a), -1),
    )
    return Rendered(np.ascontiguousarray(images), truth, z_ratio, float(np.median(truth.radius)))
