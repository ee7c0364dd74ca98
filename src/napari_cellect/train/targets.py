"""Training targets rendered on the fly from sparse point annotations.

An annotation is a :class:`~napari_cellect.track.graph.TrackGraph`: one node per cell per frame
(t, z, y, x in voxels, ``radius`` in xy pixels, NaN meaning "use
:attr:`TargetConfig.default_radius`") and parent links. For one crop of a frame pair (t, t+1)
this module renders everything the U-Net losses need (docs/method.md §8.1, but never the
original's full-volume float64 arrays written to disk):

- **segmentation** (class 0 background, 1 nucleus, 2 other): each cell is an ellipsoid, a
  sphere of its radius in scaled space ``(z * z_ratio, y, x)``, so it spans ``radius / z_ratio``
  slices either side of its centre. Class 2 is used only for nodes whose
  :attr:`TargetConfig.class_column` says 2 (e.g. polar bodies); such objects get no centre
  level, no id and no division target.
- **ordinal centre levels** 0..L-1 (L = 5): with ``rho`` = scaled distance to the centre over
  the radius, a voxel of a cell has level ``k`` when ``rho < level_edges[k-1]`` and not
  ``rho < level_edges[k]``; voxels outside every cell have level 0. With the default edges
  (1.0, 0.75, 0.5, 0.3) level 1 is the outer quarter of the nucleus (0.75 <= rho < 1) and
  level 4 the core within 0.3 radius of the centre. The voxel that contains the annotated
  centre always gets the top level, so even a cell thinner than one slice has a peak.
- **cell-id maps**: frame t carries ``label = node id + 1``; frame t+1 carries the label of the
  node's parent when that parent sits in frame t, else its own. A cell and its continuation, and
  a mother and both daughters, therefore share a label (the triplet loss's positives).
- **division** (2 channels): ch0 = the nucleus of a frame-t mother (a node with two children);
  ch1 = the nucleus of a newborn daughter in frame t+1 (a node whose parent has two children),
  at its frame-t+1 position. Mothers are read from the graph's structure only (a
  ``division_score`` column may hold predictions, not truth).
- **radius map**: the owning cell's radius inside nuclei, 0 elsewhere (the loss only looks
  inside nuclei).

Where cells overlap, a voxel belongs to the cell with the smallest ``rho``.

Rendering is vectorised and bounded: each cell is evaluated only in its own bounding box, cells
are processed in chunks of at most :attr:`TargetConfig.max_chunk_voxels` box voxels, and ties
between overlapping cells are resolved with one sort per chunk.

**Sparse annotations.** Frames without any annotated node are never used for training (the
sampler skips them). Within an annotated frame every voxel counts: unannotated space is
background, unless an ``annotated_mask`` is given, in which case voxels outside the mask are
ignored by the voxel losses (``valid`` is False there) and detections outside it are left out
of the per-cell losses.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from napari_cellect.errors import InputError
from napari_cellect.track.graph import NO_PARENT, TrackGraph

#: Segmentation classes.
BACKGROUND, NUCLEUS, OTHER = 0, 1, 2
#: Label of "no cell" in the cell-id maps.
NO_LABEL = 0


@dataclass(frozen=True)
class TargetConfig:
    """How annotations become targets (saved with the training config)."""

    default_radius: float = 6.0
    """Radius (xy pixels) of nodes whose radius is missing (NaN) or not positive."""
    min_radius: float = 1.0
    """Smallest radius used for rendering, so a tiny annotated radius still covers a voxel."""
    level_edges: tuple[float, ...] = (1.0, 0.75, 0.5, 0.3)
    """Decreasing ``rho`` thresholds: a voxel has level >= k when ``rho < level_edges[k-1]``;
    its length is the number of centre levels minus one."""
    class_column: str = "seg_class"
    """Optional extra graph column with the semantic class of a node (1 nucleus, 2 other);
    absent means every node is a nucleus."""
    max_chunk_voxels: int = 2_000_000
    """Upper bound on box voxels evaluated at once (bounds the rendering's memory)."""

    def __post_init__(self) -> None:
        edges = tuple(float(e) for e in self.level_edges)
        object.__setattr__(self, "level_edges", edges)
        if (
            not edges
            or any(not e > 0 for e in edges)
            or any(b >= a for a, b in itertools.pairwise(edges))
        ):
            raise InputError(
                f"TargetConfig.level_edges: expected positive, strictly decreasing values, "
                f"found {edges}"
            )
        if edges[0] > 1.0:
            raise InputError(
                f"TargetConfig.level_edges: the first edge is the nucleus boundary and must be "
                f"<= 1, found {edges[0]}"
            )
        if not self.default_radius > 0 or not self.min_radius > 0:
            raise InputError(
                "TargetConfig: expected default_radius > 0 and min_radius > 0, found "
                f"{self.default_radius} and {self.min_radius}"
            )

    @property
    def n_levels(self) -> int:
        """Number of ordinal centre levels L (level 0 = outside every cell)."""
        return len(self.level_edges) + 1


# ----------------------------------------------------------------------------- annotations


class AnnotationIndex:
    """Per-source lookups computed once: rows per frame, mothers, newborns, lineage labels."""

    def __init__(self, graph: TrackGraph, config: TargetConfig | None = None):
        self.config = config or TargetConfig()
        cfg = self.config
        self.graph = graph
        n = len(graph)
        self.ids = np.asarray(graph["id"], dtype=np.int64)
        self.t = np.asarray(graph["t"], dtype=np.int64)
        self.positions = graph.positions().astype(np.float64) if n else np.zeros((0, 3))
        radius = np.asarray(graph["radius"], dtype=np.float64)
        radius = np.where(np.isfinite(radius) & (radius > 0), radius, cfg.default_radius)
        self.radius = np.maximum(radius, cfg.min_radius).astype(np.float32)
        if cfg.class_column in graph.columns:
            cls = np.asarray(graph[cfg.class_column], dtype=np.float64)
            self.seg_class = np.where(np.round(cls) == OTHER, OTHER, NUCLEUS).astype(np.int8)
        else:
            self.seg_class = np.full(n, NUCLEUS, dtype=np.int8)
        parent_ids = np.asarray(graph["parent_id"], dtype=np.int64)
        self.parent_row = np.full(n, -1, dtype=np.int64)
        linked = parent_ids != NO_PARENT
        if np.any(linked):
            self.parent_row[linked] = graph.index_of(parent_ids[linked])
        n_children = np.bincount(self.parent_row[linked], minlength=n) if n else np.zeros(0, int)
        self.mother = n_children >= 2
        self.has_child = n_children >= 1
        self.newborn = np.zeros(n, dtype=bool)
        self.newborn[linked] = self.mother[self.parent_row[linked]]
        self.label = self.ids + 1
        order = np.argsort(self.t, kind="stable")
        self._rows_sorted = order
        self._t_sorted = self.t[order]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def annotated_frames(self) -> np.ndarray:
        """Sorted frame indices holding at least one node."""
        return np.unique(self.t)

    def is_annotated(self, t: int) -> bool:
        lo, hi = np.searchsorted(self._t_sorted, [t, t + 1])
        return bool(hi > lo)

    def rows_in_frame(self, t: int) -> np.ndarray:
        lo, hi = np.searchsorted(self._t_sorted, [t, t + 1])
        return self._rows_sorted[lo:hi]

    def frame_cells(
        self,
        t: int,
        origin: tuple[int, int, int],
        shape: tuple[int, int, int],
        z_ratio: float,
        previous: int | None = None,
    ) -> FrameCells:
        """The cells of frame ``t`` whose ellipsoid reaches into the crop, in crop coordinates.

        With ``previous`` (normally ``t - 1``), ``lineage`` is the parent's label for nodes whose
        parent sits in frame ``previous``, else their own label.
        """
        rows = self.rows_in_frame(t)
        pos = self.positions[rows] - np.asarray(origin, dtype=np.float64)
        radius = self.radius[rows].astype(np.float64)
        reach = np.stack([radius / z_ratio, radius, radius], axis=1) + 1.0
        inside = np.all((pos + reach >= 0) & (pos - reach <= np.asarray(shape) - 1), axis=1)
        rows = rows[inside]
        lineage = self.label[rows].copy()
        if previous is not None:
            prow = self.parent_row[rows]
            linked = prow >= 0
            from_previous = np.zeros(len(rows), dtype=bool)
            from_previous[linked] = self.t[prow[linked]] == previous
            lineage[from_previous] = self.label[prow[from_previous]]
        return FrameCells(
            node_ids=self.ids[rows],
            positions=pos[inside],
            radius=self.radius[rows],
            seg_class=self.seg_class[rows],
            label=self.label[rows],
            lineage=lineage,
            mother=self.mother[rows],
            newborn=self.newborn[rows],
            has_child=self.has_child[rows],
        )


@dataclass
class FrameCells:
    """Annotated cells of one frame relevant to a crop, as parallel arrays (crop coordinates)."""

    node_ids: np.ndarray
    """(N,) int64 graph node ids."""
    positions: np.ndarray
    """(N, 3) float64 centre (z, y, x) in crop voxels (may lie outside the crop)."""
    radius: np.ndarray
    """(N,) float32 radius in xy pixels (defaults filled in)."""
    seg_class: np.ndarray
    """(N,) int8 semantic class (1 nucleus, 2 other)."""
    label: np.ndarray
    """(N,) int64 own label, node id + 1."""
    lineage: np.ndarray
    """(N,) int64 label shared with the previous frame (parent's label), else own label."""
    mother: np.ndarray
    """(N,) bool: divides before the next frame."""
    newborn: np.ndarray
    """(N,) bool: a daughter in its first frame."""
    has_child: np.ndarray
    """(N,) bool: the node has a successor in the annotations (continuation or daughters)."""

    def __len__(self) -> int:
        return len(self.node_ids)

    @classmethod
    def empty(cls) -> FrameCells:
        return cls(
            node_ids=np.zeros(0, np.int64),
            positions=np.zeros((0, 3)),
            radius=np.zeros(0, np.float32),
            seg_class=np.zeros(0, np.int8),
            label=np.zeros(0, np.int64),
            lineage=np.zeros(0, np.int64),
            mother=np.zeros(0, bool),
            newborn=np.zeros(0, bool),
            has_child=np.zeros(0, bool),
        )

    def subset(self, keep: np.ndarray) -> FrameCells:
        return FrameCells(**{name: getattr(self, name)[keep] for name in _CELL_FIELDS})

    def in_crop(self, shape: tuple[int, int, int]) -> np.ndarray:
        """(N,) bool: the centre voxel lies inside a crop of ``shape``."""
        vox = np.rint(self.positions)
        return np.all((vox >= 0) & (vox <= np.asarray(shape) - 1), axis=1)

    def centre_voxels(self, shape: tuple[int, int, int]) -> np.ndarray:
        """(N, 3) int64 voxel holding each centre, clipped into the crop."""
        vox = np.rint(self.positions).astype(np.int64)
        return np.clip(vox, 0, np.asarray(shape) - 1)

    def tracked(self) -> np.ndarray:
        """(N,) bool: nuclei (class 1), the objects that get ids and centre levels."""
        return self.seg_class == NUCLEUS


_CELL_FIELDS = (
    "node_ids",
    "positions",
    "radius",
    "seg_class",
    "label",
    "lineage",
    "mother",
    "newborn",
    "has_child",
)


# ------------------------------------------------------------------------------- rendering


@dataclass
class FrameRender:
    """Which cell owns each voxel of a crop, and its centre level."""

    owner: np.ndarray
    """(Z, Y, X) int32 index into the rendered cells, -1 where no cell."""
    level: np.ndarray
    """(Z, Y, X) int8 ordinal centre level (0 outside nuclei)."""

    def gather(
        self, values: np.ndarray, fill: float | int = 0, dtype: np.dtype | type | None = None
    ) -> np.ndarray:
        """A (Z, Y, X) map of ``values[owner]``, ``fill`` where no cell owns the voxel."""
        values = np.asarray(values)
        dtype = dtype or values.dtype
        table = np.empty(len(values) + 1, dtype=dtype)
        table[:-1] = values
        table[-1] = fill
        return table[self.owner]  # owner -1 picks the trailing fill value


def render_cells(
    positions: np.ndarray,
    radius: np.ndarray,
    shape: tuple[int, int, int],
    z_ratio: float,
    config: TargetConfig | None = None,
    has_centre: np.ndarray | None = None,
) -> FrameRender:
    """Render ellipsoids (sphere of ``radius`` in scaled space) into a crop of ``shape``.

    Args:
        positions: (N, 3) centres (z, y, x) in crop voxels; they may lie outside the crop.
        radius: (N,) radii in xy pixels.
        shape: crop shape (Z, Y, X).
        z_ratio: z spacing over xy spacing.
        config: level edges and chunk size.
        has_centre: (N,) bool, cells that get centre levels (default all); the others (class
            'other') own voxels but keep level 0.
    """
    cfg = config or TargetConfig()
    if not z_ratio > 0:
        raise InputError(f"z_ratio must be positive, found {z_ratio}")
    shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    n_vox = int(np.prod(shape))
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    radius = np.maximum(np.asarray(radius, dtype=np.float64).reshape(-1), cfg.min_radius)
    n = len(positions)
    if has_centre is None:
        has_centre = np.ones(n, dtype=bool)
    best_rho = np.full(n_vox, np.inf, dtype=np.float32)
    owner = np.full(n_vox, -1, dtype=np.int32)
    if n:
        half = np.stack(
            [np.ceil(radius / z_ratio), np.ceil(radius), np.ceil(radius)], axis=1
        ).astype(np.int64)
        # cells of similar size share a box shape: sort by box size, chunk within the bound
        box_voxels = np.prod(2 * half + 1, axis=1)
        order = np.argsort(box_voxels, kind="stable")
        start = 0
        while start < n:
            stop = start + 1
            while stop < n and (stop - start + 1) * box_voxels[order[stop]] <= cfg.max_chunk_voxels:
                stop += 1
            _render_chunk(
                order[start:stop], positions, radius, half, shape, z_ratio, best_rho, owner
            )
            start = stop
    owner = owner.reshape(shape)
    best_rho = best_rho.reshape(shape)
    edges = np.asarray(cfg.level_edges, dtype=np.float32)
    level = np.zeros(shape, dtype=np.int8)
    owned = owner >= 0
    if np.any(owned):
        rho = best_rho[owned]
        lv = np.sum(rho[:, None] < edges[None, :], axis=1).astype(np.int8)
        lv[~has_centre[owner[owned]]] = 0
        level[owned] = lv
    return FrameRender(owner=owner, level=level)


def _render_chunk(
    cells: np.ndarray,
    positions: np.ndarray,
    radius: np.ndarray,
    half: np.ndarray,
    shape: tuple[int, ...],
    z_ratio: float,
    best_rho: np.ndarray,
    owner: np.ndarray,
) -> None:
    """Evaluate ``rho`` for a chunk of cells in a shared box and update the running winners.

    Squared distances are separable, so each axis is computed on its own (C, n) grid and the
    (C, nz, ny, nx) box is only formed by broadcasting.
    """
    pos = positions[cells]
    base = np.rint(pos).astype(np.int64)  # (C, 3) voxel holding each centre
    scale = (z_ratio, 1.0, 1.0)
    coords, sq, in_bounds = [], [], []
    for axis, h in enumerate(half[cells].max(axis=0)):
        vox = base[:, axis, None] + np.arange(-h, h + 1)[None, :]  # (C, n)
        coords.append(vox)
        sq.append(((vox - pos[:, axis, None]) * scale[axis]) ** 2)
        in_bounds.append((vox >= 0) & (vox < shape[axis]))
    inv_r2 = (1.0 / radius[cells] ** 2)[:, None, None, None]
    rho2 = (sq[0][:, :, None, None] + sq[1][:, None, :, None] + sq[2][:, None, None, :]) * inv_r2
    # the voxel holding the centre always belongs to its cell, with the top level
    hz, hy, hx = ((c.shape[1] - 1) // 2 for c in coords)
    rho2[:, hz, hy, hx] = 0.0
    inside = (rho2 < 1.0) & (
        in_bounds[0][:, :, None, None]
        & in_bounds[1][:, None, :, None]
        & in_bounds[2][:, None, None, :]
    )
    c_idx, iz, iy, ix = np.nonzero(inside)
    if len(c_idx) == 0:
        return
    flat = np.ravel_multi_index(
        (coords[0][c_idx, iz], coords[1][c_idx, iy], coords[2][c_idx, ix]), shape
    )
    r = np.sqrt(rho2[c_idx, iz, iy, ix]).astype(np.float32)
    cell = cells[c_idx].astype(np.int32)
    # per voxel keep the smallest rho (ties: the lower cell index, deterministic)
    order = np.lexsort((cell, r, flat))
    flat, r, cell = flat[order], r[order], cell[order]
    first = np.ones(len(flat), dtype=bool)
    first[1:] = flat[1:] != flat[:-1]
    flat, r, cell = flat[first], r[first], cell[first]
    better = r < best_rho[flat]
    best_rho[flat[better]] = r[better]
    owner[flat[better]] = cell[better]


# --------------------------------------------------------------------------- pair targets


@dataclass
class PairTargets:
    """Targets of one U-Net pass on a crop of the frame pair (t, t+1); all maps (Z, Y, X)."""

    seg: np.ndarray
    """int64 class per voxel: 0 background, 1 nucleus, 2 other."""
    centre: np.ndarray
    """int64 ordinal centre level 0..L-1."""
    radius: np.ndarray
    """float32 radius of the owning nucleus (xy pixels), 0 elsewhere."""
    division: np.ndarray
    """(2, Z, Y, X) float32: ch0 frame-t mothers, ch1 frame-t+1 newborn daughters."""
    valid: np.ndarray
    """bool: voxels counted by the segmentation / centre / radius losses."""
    division_valid: np.ndarray
    """(2,) bool: whether each division channel is known (needs frame t+1 annotated)."""
    ids_t: np.ndarray
    """int64 own label of the frame-t cell owning each voxel (0 none)."""
    ids_next: np.ndarray
    """int64 lineage label of the frame-t+1 cell owning each voxel (0 none)."""
    cells_t: FrameCells
    """Annotated cells of frame t (crop coordinates)."""
    cells_next: FrameCells
    """Annotated cells of frame t+1 (crop coordinates, lineage = parent's label)."""
    t: int = 0
    """Frame index t."""

    @property
    def shape(self) -> tuple[int, int, int]:
        z, y, x = self.seg.shape
        return int(z), int(y), int(x)


def pair_targets(
    index: AnnotationIndex,
    t: int,
    origin: tuple[int, int, int],
    shape: tuple[int, int, int],
    z_ratio: float,
    *,
    next_t: int | None = None,
    annotated_mask: np.ndarray | None = None,
    inside: tuple[slice, slice, slice] | None = None,
) -> PairTargets:
    """Render the targets of the pair (t, ``next_t``) for a crop at ``origin`` of ``shape``.

    Args:
        index: the source's :class:`AnnotationIndex`.
        t: the frame the U-Net describes.
        origin: crop origin (z, y, x) in volume voxels (may be negative where the crop is
            padded).
        shape: crop shape (Z, Y, X).
        z_ratio: z spacing over xy spacing.
        next_t: the second frame of the pair (default ``t + 1``; None-equivalent when absent:
            pass ``-1`` for "no next frame", then division and next-frame ids are unknown).
        annotated_mask: optional (Z, Y, X) bool crop of the annotated region; False voxels are
            ignored by the voxel losses.
        inside: the part of the crop that lies inside the image (padding is ignored).
    """
    cfg = index.config
    shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    next_t = t + 1 if next_t is None else next_t
    cells_t = index.frame_cells(t, origin, shape, z_ratio)
    has_next = next_t >= 0 and index.is_annotated(next_t)
    cells_next = (
        index.frame_cells(next_t, origin, shape, z_ratio, previous=t)
        if next_t >= 0
        else FrameCells.empty()
    )
    render_t = render_cells(
        cells_t.positions, cells_t.radius, shape, z_ratio, cfg, has_centre=cells_t.tracked()
    )
    render_next = render_cells(
        cells_next.positions,
        cells_next.radius,
        shape,
        z_ratio,
        cfg,
        has_centre=cells_next.tracked(),
    )
    seg = render_t.gather(cells_t.seg_class, BACKGROUND, np.int64)
    tracked_t = cells_t.tracked()
    tracked_next = cells_next.tracked()
    nucleus_radius = np.where(tracked_t, cells_t.radius, 0.0)
    division = np.zeros((2, *shape), dtype=np.float32)
    division[0] = render_t.gather(cells_t.mother & tracked_t, False, np.float32)
    division[1] = render_next.gather(cells_next.newborn & tracked_next, False, np.float32)
    valid = np.zeros(shape, dtype=bool)
    if inside is None:
        valid[...] = True
    else:
        valid[inside] = True
    if annotated_mask is not None:
        mask = np.asarray(annotated_mask, dtype=bool)
        if mask.shape != shape:
            raise InputError(f"annotated_mask crop: expected shape {shape}, found {mask.shape}")
        valid &= mask
    return PairTargets(
        seg=seg,
        centre=render_t.level.astype(np.int64),
        radius=render_t.gather(nucleus_radius, 0.0, np.float32),
        division=division,
        valid=valid,
        division_valid=np.array([has_next, has_next]),
        ids_t=render_t.gather(np.where(tracked_t, cells_t.label, NO_LABEL), NO_LABEL, np.int64),
        ids_next=render_next.gather(
            np.where(tracked_next, cells_next.lineage, NO_LABEL), NO_LABEL, np.int64
        ),
        cells_t=cells_t,
        cells_next=cells_next,
        t=int(t),
    )


def crop_slices(
    origin: tuple[int, int, int], shape: tuple[int, int, int], volume_shape: tuple[int, int, int]
) -> tuple[tuple[slice, slice, slice], tuple[slice, slice, slice]]:
    """(volume slices, crop slices) of the overlap between a crop and the volume."""
    (vz, cz), (vy, cy), (vx, cx) = (
        _axis_overlap(o, s, n) for o, s, n in zip(origin, shape, volume_shape)
    )
    return (vz, vy, vx), (cz, cy, cx)


def _axis_overlap(origin: int, size: int, length: int) -> tuple[slice, slice]:
    """(volume slice, crop slice) of one axis."""
    lo, hi = max(origin, 0), min(origin + size, length)
    return slice(lo, max(lo, hi)), slice(lo - origin, lo - origin + max(0, hi - lo))


# ------------------------------------------------------------- detections <-> annotations


def jittered_cells(
    cells: FrameCells,
    shape: tuple[int, int, int],
    z_ratio: float,
    rng: np.random.Generator,
    jitter: float,
    duplicate_fraction: float = 0.0,
    duplicate_offset: tuple[float, float] = (0.2, 0.6),
) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-detections at the annotated centres (tracked cells inside the crop).

    Each centre moves by Gaussian noise of ``jitter`` x radius (scaled space), and a random
    ``duplicate_fraction`` of the cells gets a second detection ``duplicate_offset`` radii away,
    the duplicates the merge scorer must learn to join. Returns ``(positions (N, 3) crop
    voxels clipped into the crop, cell index (N,))``.
    """
    keep = np.flatnonzero(cells.tracked() & cells.in_crop(shape))
    if len(keep) == 0:
        return np.zeros((0, 3)), np.zeros(0, np.int64)
    scale = np.array([1.0 / z_ratio, 1.0, 1.0])
    radius = cells.radius[keep].astype(np.float64)[:, None]
    pos = cells.positions[keep] + rng.normal(0.0, 1.0, (len(keep), 3)) * jitter * radius * scale
    index = keep
    n_dup = int(rng.binomial(len(keep), duplicate_fraction)) if duplicate_fraction > 0 else 0
    if n_dup:
        pick = rng.choice(len(keep), size=n_dup, replace=False)
        direction = rng.normal(size=(n_dup, 3))
        direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-9)
        dist = rng.uniform(*duplicate_offset, size=(n_dup, 1)) * radius[pick]
        dup = cells.positions[keep[pick]] + direction * dist * scale
        pos = np.concatenate([pos, dup])
        index = np.concatenate([index, keep[pick]])
    pos = np.clip(pos, 0.0, np.asarray(shape, np.float64) - 1.0)
    return pos, index.astype(np.int64)
