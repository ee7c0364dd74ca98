"""Sparse U-Net targets from a person's corrections (for :mod:`~napari_cellect.train.adapt_unet`).

Corrections carry centres and radii, never masks, and a person looks at part of a frame only.
So the targets are drawn around what was reviewed and every other voxel is ignored:

- **positives**: approved and hand-added nodes, and the parents of approved links (a person
  confirmed a link from them), as ellipsoids of their radius (the detected radius; a node
  without one takes the nearest detection's, else the median detected radius), with the centre
  levels, radius and cell ids of :mod:`~napari_cellect.train.targets`;
- **negatives**: deleted false detections: background (no nucleus, centre level 0) inside their
  radius;
- **reviewed region** of a frame: a shell of ``context_radii`` radii around each positive and the
  negatives; the voxels outside it, and those of nodes nobody reviewed (unapproved neighbours
  the corrections store), are ignored by the voxel losses, so they are not taught as
  background. A frame whose every detection a person either kept as a reviewed cell or deleted
  (and that holds no unreviewed node) was reviewed as a whole: all of it counts, so the
  background far from the cells is taught too;
- **divisions**: channel 0 (this frame-t cell divides before t+1) is known on the reviewed
  background and on the cells whose fate a person gave (an approved child, or a division label):
  1 for a mother with two approved children or one marked dividing, else 0. Channel 1 (a newborn
  daughter in t+1) is known on the reviewed background of frame t+1 and on its approved cells:
  1 on the daughters of a mother with two approved children;
- **embedding**: a cell and its approved successor (a mother and both daughters) share a label,
  the positives of the batch-hard triplet loss.

No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from napari_cellect.errors import InputError
from napari_cellect.track.correction_set import CorrectionSet, table_xyz
from napari_cellect.track.detections import Detections
from napari_cellect.track.graph import NO_PARENT, TrackGraph
from napari_cellect.train.targets import (
    BACKGROUND,
    NUCLEUS,
    AnnotationIndex,
    FrameCells,
    TargetConfig,
    render_cells,
)


@dataclass(frozen=True)
class ReviewedRegionConfig:
    """How far around a correction the targets count."""

    context_radii: float = 1.5
    """The reviewed region around a positive node: this many radii (scaled space)."""
    negative_radii: float = 1.0
    """Background taught around a deleted detection: this many of its radii."""
    fallback_radius: float = 6.0
    """Radius of nodes without one when there are no detections to take it from."""

    def __post_init__(self) -> None:
        for name in ("context_radii", "negative_radii", "fallback_radius"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise InputError(
                    f"ReviewedRegionConfig.{name}: expected a number > 0, found {value}"
                )


@dataclass
class CorrectionAnnotation:
    """What the corrections say about the pixels, per node (see the module docstring)."""

    index: AnnotationIndex
    """The positives and the approved links between them."""
    fate_known: np.ndarray
    """(N,) bool per ``index`` row: whether the cell divides before the next frame is known."""
    divides: np.ndarray
    """(N,) bool per ``index`` row: it does (division channel 0)."""
    incoming_known: np.ndarray
    """(N,) bool per ``index`` row: its incoming link (or start) was approved."""
    negatives: dict[str, np.ndarray]
    """Deleted detections: ``t`` (M,), ``positions`` (M, 3), ``radius`` (M,)."""
    unknown: dict[str, np.ndarray]
    """Nodes nobody reviewed near the corrections: ``t``, ``positions``, ``radius``."""
    complete: frozenset[int]
    """Frames reviewed as a whole (every voxel counts)."""
    z_ratio: float
    config: ReviewedRegionConfig

    @property
    def frames(self) -> np.ndarray:
        """Sorted frames holding a positive or a negative."""
        return np.union1d(self.index.annotated_frames, self.negatives["t"]).astype(np.int64)

    def points(self, t: int) -> np.ndarray:
        """(N, 3) positives and negatives of frame ``t`` (where crops are centred)."""
        rows = self.index.rows_in_frame(t)
        return np.concatenate(
            [self.index.positions[rows], self.negatives["positions"][self.negatives["t"] == t]]
        )


def correction_annotation(
    corrections: CorrectionSet,
    detections: list[Detections] | None = None,
    config: ReviewedRegionConfig | None = None,
) -> CorrectionAnnotation:
    """The positives, negatives and unreviewed nodes of ``corrections`` (radii filled from the
    nearest of ``detections`` where a node has none).

    Raises:
        InputError: the corrections hold no reviewed node and no deleted detection.
    """
    cfg = config or ReviewedRegionConfig()
    nodes = corrections.nodes
    ids = nodes["id"]
    parents_confirmed = np.isin(ids, corrections.positive_links[:, 0])
    positive = nodes["approved"] | nodes["hand_added"] | parents_confirmed
    removed = corrections.removed
    if not np.any(positive) and len(removed["id"]) == 0:
        raise InputError(
            "the corrections hold no reviewed cell: approve or add cells, or delete false "
            "detections, before adapting the detector"
        )
    z_ratio = corrections.z_ratio
    radius = _filled_radius(
        nodes["radius"], nodes["t"], table_xyz(nodes), detections, z_ratio, cfg.fallback_radius
    )
    rows = np.flatnonzero(positive)
    links = corrections.positive_links
    links = links[np.isin(links[:, 0], ids[rows]) & np.isin(links[:, 1], ids[rows])]
    parent = np.full(len(rows), NO_PARENT, np.int64)
    child_row = {int(i): r for r, i in enumerate(ids[rows])}
    for p, c in links.tolist():
        parent[child_row[c]] = p
    graph = TrackGraph.from_arrays(
        id=ids[rows],
        t=nodes["t"][rows],
        z=nodes["z"][rows],
        y=nodes["y"][rows],
        x=nodes["x"][rows],
        radius=radius[rows],
        parent_id=parent,
    )
    index = AnnotationIndex(graph, TargetConfig(default_radius=cfg.fallback_radius))
    labels = corrections.divides
    labelled = np.array([int(i) in labels for i in index.ids], bool)
    marked = np.array([labels.get(int(i), False) for i in index.ids], bool)
    fate_known = index.has_child | labelled
    divides = np.where(labelled, marked, index.mother)
    incoming_known = np.isin(index.ids, ids[nodes["approved"] | nodes["hand_added"]])
    unknown_rows = np.flatnonzero(~positive)
    gone_radius = _filled_radius(
        removed["radius"],
        removed["t"],
        table_xyz(removed),
        detections,
        z_ratio,
        cfg.fallback_radius,
    )
    complete = _complete_frames(
        index,
        removed["t"],
        table_xyz(removed),
        gone_radius,
        nodes["t"][unknown_rows],
        detections,
        z_ratio,
    )
    return CorrectionAnnotation(
        index=index,
        fate_known=fate_known,
        divides=divides,
        incoming_known=incoming_known,
        negatives={
            "t": removed["t"].astype(np.int64),
            "positions": table_xyz(removed),
            "radius": gone_radius,
        },
        unknown={
            "t": nodes["t"][unknown_rows],
            "positions": table_xyz(nodes)[unknown_rows],
            "radius": radius[unknown_rows],
        },
        complete=complete,
        z_ratio=z_ratio,
        config=cfg,
    )


def _complete_frames(
    index: AnnotationIndex,
    gone_t: np.ndarray,
    gone_positions: np.ndarray,
    gone_radius: np.ndarray,
    unknown_t: np.ndarray,
    detections: list[Detections] | None,
    z_ratio: float,
) -> frozenset[int]:
    """Frames with detections, every one of them within a radius of a reviewed cell or a
    deleted detection, and no unreviewed node."""
    scale = np.array([z_ratio, 1.0, 1.0])
    out = set()
    for dets in detections or []:
        t = int(dets.t)
        rows = index.rows_in_frame(t)
        gone = gone_t == t
        if len(dets) == 0 or np.any(unknown_t == t) or len(rows) + int(gone.sum()) == 0:
            continue
        points = np.concatenate([index.positions[rows], gone_positions[gone]]) * scale
        reach = np.concatenate([index.radius[rows], gone_radius[gone]]).astype(np.float64)
        dist, nearest = cKDTree(points).query(dets.positions * scale)
        if np.all(dist <= reach[nearest]):
            out.add(t)
    return frozenset(out)


def _filled_radius(
    radius: np.ndarray,
    t: np.ndarray,
    positions: np.ndarray,
    detections: list[Detections] | None,
    z_ratio: float,
    fallback: float,
) -> np.ndarray:
    """``radius`` with missing values (NaN, <= 0) taken from the nearest detection of the same
    frame, else the median detected radius, else ``fallback``."""
    out = np.asarray(radius, np.float64).copy()
    missing = ~(np.isfinite(out) & (out > 0))
    if not np.any(missing):
        return out.astype(np.float32)
    by_frame = {d.t: d for d in detections or [] if len(d)}
    detected = np.concatenate([d.radius for d in by_frame.values()]) if by_frame else np.zeros(0)
    default = float(np.median(detected)) if len(detected) else fallback
    scale = np.array([z_ratio, 1.0, 1.0])
    for row in np.flatnonzero(missing):
        dets = by_frame.get(int(t[row]))
        if dets is None:
            out[row] = default
            continue
        _, nearest = cKDTree(dets.positions * scale).query(positions[row] * scale)
        out[row] = float(dets.radius[nearest]) if dets.radius[nearest] > 0 else default
    return out.astype(np.float32)


# ------------------------------------------------------------------------------ crop targets


@dataclass
class CropTargets:
    """The targets of one U-Net pass on a crop of the pair (t, t+1); maps are (Z, Y, X)."""

    seg: np.ndarray
    """int64: 0 background, 1 nucleus."""
    centre: np.ndarray
    """int64 ordinal centre level."""
    radius: np.ndarray
    """float32 radius of the owning nucleus, 0 elsewhere."""
    division: np.ndarray
    """(2, Z, Y, X) float32 division targets."""
    valid: np.ndarray
    """bool: the reviewed voxels (segmentation, centre, radius losses)."""
    division_valid: np.ndarray
    """(2, Z, Y, X) bool: where each division channel is known."""
    cells: FrameCells
    """The positives of frame t (crop coordinates); ``lineage`` holds the parent's label for
    cells whose approved parent is in frame t-1 (the triplet labels of a frame t+1 pass)."""

    @property
    def n_reviewed(self) -> int:
        return int(np.count_nonzero(self.valid))


def crop_targets(
    annotation: CorrectionAnnotation,
    t: int,
    origin: tuple[int, int, int],
    shape: tuple[int, int, int],
    *,
    inside: tuple[slice, slice, slice] | None = None,
    previous: int | None = None,
) -> CropTargets:
    """Targets of the pass that describes frame ``t`` on the crop at ``origin`` of ``shape``
    (``inside``: the part of the crop inside the image; padding is ignored). With
    ``previous`` (t-1) the cells' ``lineage`` is their approved parent's label."""
    index = annotation.index
    cfg = annotation.config
    z = annotation.z_ratio
    shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    cells = index.frame_cells(t, origin, shape, z, previous=previous)
    rows = _rows(index, cells.node_ids)
    render = render_cells(cells.positions, cells.radius, shape, z, index.config)
    owned = render.owner >= 0
    region = owned | _balls(annotation, t, origin, shape, cfg.context_radii)
    region |= t in annotation.complete
    region |= _table_balls(annotation.negatives, t, origin, shape, z, cfg.negative_radii)
    region &= owned | ~_table_balls(annotation.unknown, t, origin, shape, z, 1.0)
    if inside is not None:
        image = np.zeros(shape, bool)
        image[inside] = True
        region &= image
    background = region & ~owned
    nxt = _next_frame_cells(annotation, t, origin, shape)
    render_next = render_cells(nxt[0].positions, nxt[0].radius, shape, z, index.config)
    owned_next = render_next.owner >= 0
    region_next = owned_next | _balls(annotation, t + 1, origin, shape, cfg.context_radii)
    region_next |= (t + 1) in annotation.complete
    region_next &= owned_next | ~_table_balls(annotation.unknown, t + 1, origin, shape, z, 1.0)
    if inside is not None:
        region_next &= image
    division = np.zeros((2, *shape), np.float32)
    division[0] = render.gather(annotation.divides[rows], False, np.float32)
    division[1] = render_next.gather(nxt[1], False, np.float32)
    division_valid = np.zeros((2, *shape), bool)
    division_valid[0] = background | (
        owned & render.gather(annotation.fate_known[rows], False, bool)
    )
    division_valid[1] = (region_next & ~owned_next) | (
        owned_next & render_next.gather(nxt[2], False, bool)
    )
    return CropTargets(
        seg=np.where(owned, NUCLEUS, BACKGROUND).astype(np.int64),
        centre=render.level.astype(np.int64),
        radius=render.gather(cells.radius, 0.0, np.float32),
        division=division,
        valid=region,
        division_valid=division_valid,
        cells=cells,
    )


def _rows(index: AnnotationIndex, node_ids: np.ndarray) -> np.ndarray:
    order = np.argsort(index.ids, kind="stable")
    return order[np.searchsorted(index.ids[order], node_ids)]


def _next_frame_cells(
    annotation: CorrectionAnnotation,
    t: int,
    origin: tuple[int, int, int],
    shape: tuple[int, int, int],
) -> tuple[FrameCells, np.ndarray, np.ndarray]:
    """Positives of frame t+1, whether each is a newborn daughter, whether its incoming link
    is known."""
    index = annotation.index
    cells = index.frame_cells(t + 1, origin, shape, annotation.z_ratio)
    rows = _rows(index, cells.node_ids)
    parent = index.parent_row[rows]
    newborn = np.zeros(len(rows), bool)
    linked = parent >= 0
    newborn[linked] = annotation.divides[parent[linked]] & (index.t[parent[linked]] == t)
    return cells, newborn, annotation.incoming_known[rows] | newborn


def _balls(
    annotation: CorrectionAnnotation,
    t: int,
    origin: tuple[int, int, int],
    shape: tuple[int, int, int],
    radii: float,
) -> np.ndarray:
    """Voxels of the crop within ``radii`` radii of a positive of frame ``t``."""
    index = annotation.index
    rows = index.rows_in_frame(t)
    if len(rows) == 0:
        return np.zeros(shape, bool)
    positions = index.positions[rows] - np.asarray(origin, np.float64)
    return _ball_mask(positions, index.radius[rows] * radii, shape, annotation.z_ratio)


def _table_balls(
    table: dict[str, np.ndarray],
    t: int,
    origin: tuple[int, int, int],
    shape: tuple[int, int, int],
    z_ratio: float,
    radii: float,
) -> np.ndarray:
    rows = np.flatnonzero(table["t"] == t)
    if len(rows) == 0:
        return np.zeros(shape, bool)
    positions = table["positions"][rows] - np.asarray(origin, np.float64)
    return _ball_mask(positions, table["radius"][rows] * radii, shape, z_ratio)


def _ball_mask(
    positions: np.ndarray, radius: np.ndarray, shape: tuple[int, int, int], z_ratio: float
) -> np.ndarray:
    """Union of the ellipsoids (spheres in scaled space) reaching into the crop."""
    radius = np.asarray(radius, np.float64)
    reach = np.stack([radius / z_ratio, radius, radius], axis=1) + 1.0
    near = np.all((positions + reach >= 0) & (positions - reach <= np.asarray(shape) - 1), axis=1)
    if not np.any(near):
        return np.zeros(shape, bool)
    return render_cells(positions[near], radius[near], shape, z_ratio).owner >= 0
