"""Point matching: which detections (or predicted nodes) are which annotated cells (or GT nodes).

One module for every place that pairs points one-to-one in scaled space ``(z * z_ratio, y, x)``:

- :func:`match_detections`: one frame's detections against its annotated cells, each cell with
  its own gate (:class:`MatchConfig`, a fraction of its radius); unmatched detections within a
  gate are that cell's duplicates (``owner``). Training targets, training validation
  (detection F1 via :meth:`Matching.counts`), fine-tuning rows and re-linking use it
  (:func:`match_to_detections` gives each node its detection).
- :func:`match_nodes`: a predicted graph against a GT graph, frame by frame, within one
  ``max_dist`` (:mod:`napari_cellect.evaluate`).

Both solve the same problem with :func:`assign_pairs`: among the candidate pairs, the
one-to-one matching that minimises ``sum(distance) + unmatched_cost * (unmatched points)``, that
is, the most matches first and then the closest. Candidate pairs come from a KD-tree; the problem
splits into the connected components of the candidate graph, one-to-one components are taken
directly and only the rest go through :func:`scipy.optimize.linear_sum_assignment`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from napari_cellect.errors import InputError
from napari_cellect.track.detections import Detections
from napari_cellect.track.graph import TrackGraph


@dataclass(frozen=True)
class DetectionCounts:
    """True positives, false positives and false negatives of a one-to-one matching."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: DetectionCounts) -> DetectionCounts:
        return DetectionCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def f1(self) -> float:
        """``2 tp / (2 tp + fp + fn)``; 0 when there is nothing at all."""
        return 2 * self.tp / max(1, 2 * self.tp + self.fp + self.fn)


# ------------------------------------------------------------------- detections <-> cells


@dataclass(frozen=True)
class MatchConfig:
    """When a detection counts as an annotated cell."""

    radius_factor: float = 0.75
    """A detection matches a cell when their scaled distance is below this times the cell's
    annotated radius..."""
    min_distance: float = 2.0
    """...or below this many xy pixels, whichever is larger."""

    def __post_init__(self) -> None:
        for name in ("radius_factor", "min_distance"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise InputError(f"MatchConfig.{name}: expected a number > 0, found {value!r}")

    def gate(self, radius: np.ndarray) -> np.ndarray:
        return np.maximum(self.radius_factor * np.asarray(radius, np.float64), self.min_distance)


@dataclass
class Matching:
    """Detections matched to annotated cells."""

    primary: np.ndarray
    """(N,) int64 cell index of each detection under one-to-one (Hungarian) matching, -1 none."""
    owner: np.ndarray
    """(N,) int64 cell each detection belongs to: its primary cell, else the nearest cell
    within the gate (a duplicate detection of that cell), else -1 (a false positive)."""

    @property
    def n_matched(self) -> int:
        return int(np.count_nonzero(self.primary >= 0))

    def counts(self, n_cells: int) -> DetectionCounts:
        """Detection counts against ``n_cells`` annotated cells."""
        tp = self.n_matched
        return DetectionCounts(tp, len(self.primary) - tp, n_cells - tp)


def match_detections(
    det_positions: np.ndarray,
    cell_positions: np.ndarray,
    cell_radius: np.ndarray,
    z_ratio: float,
    config: MatchConfig | None = None,
) -> Matching:
    """Match detections to annotated cells in scaled space ``(z * z_ratio, y, x)``.

    One-to-one matching (:func:`assign_pairs`) over the pairs within each cell's gate
    (:class:`MatchConfig`) counts true positives. Unmatched detections within a gate are
    duplicates of that cell (``owner``), the targets of the merge scorer.
    """
    cfg = config or MatchConfig()
    det = np.asarray(det_positions, np.float64).reshape(-1, 3) * np.array([z_ratio, 1.0, 1.0])
    cells = np.asarray(cell_positions, np.float64).reshape(-1, 3) * np.array([z_ratio, 1.0, 1.0])
    n, m = len(det), len(cells)
    primary = np.full(n, -1, dtype=np.int64)
    owner = np.full(n, -1, dtype=np.int64)
    if n == 0 or m == 0:
        return Matching(primary, owner)
    gate = cfg.gate(cell_radius)
    # candidate pairs within the largest gate (sparse), then each cell's own gate
    pairs = cKDTree(cells).query_ball_point(det, r=float(gate.max()))
    d_idx = np.repeat(np.arange(n), [len(p) for p in pairs])
    c_idx = np.fromiter((c for p in pairs for c in p), dtype=np.int64, count=len(d_idx))
    if len(d_idx) == 0:
        return Matching(primary, owner)
    dist = np.linalg.norm(det[d_idx] - cells[c_idx], axis=1)
    ok = dist < gate[c_idx]
    d_idx, c_idx, dist = d_idx[ok], c_idx[ok], dist[ok]
    if len(d_idx) == 0:
        return Matching(primary, owner)
    # owner: nearest cell within its gate
    order = np.lexsort((dist, d_idx))
    first = np.ones(len(order), dtype=bool)
    first[1:] = d_idx[order][1:] != d_idx[order][:-1]
    owner[d_idx[order][first]] = c_idx[order][first]
    # one-to-one: at most as many matches as possible, then the smallest total distance
    # (an unmatched cost above every gate)
    det_rows, cell_rows = assign_pairs(
        d_idx, c_idx, dist, n, m, unmatched_cost=float(gate.max()) * 5.0 + 0.5
    )
    primary[det_rows] = cell_rows
    owner[det_rows] = cell_rows
    return Matching(primary, owner)


def _radius_or(radius: np.ndarray, fallback: float) -> np.ndarray:
    radius = np.asarray(radius, np.float64)
    return np.where(np.isfinite(radius) & (radius > 0), radius, fallback)


def _fallback_radius(dets: Detections, match: MatchConfig) -> float:
    finite = dets.radius[np.isfinite(dets.radius) & (dets.radius > 0)]
    return float(np.median(finite)) if len(finite) else match.min_distance


def match_to_detections(
    dets: Detections, positions: np.ndarray, radius: np.ndarray, z_ratio: float, match: MatchConfig
) -> np.ndarray:
    """Detection index of each node (one-to-one, Hungarian within the gate), -1 for none."""
    out = np.full(len(positions), -1, np.int64)
    if len(positions) == 0 or len(dets) == 0:
        return out
    radius = _radius_or(radius, _fallback_radius(dets, match))
    matching = match_detections(dets.positions, positions, radius, z_ratio, match)
    hit = matching.primary >= 0
    out[matching.primary[hit]] = np.flatnonzero(hit)
    return out


def table_positions(table: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """(N, 3) z, y, x of ``rows`` of a table with those columns."""
    return np.stack([table["z"][rows], table["y"][rows], table["x"][rows]], axis=1).reshape(-1, 3)


# ---------------------------------------------------------------- predicted <-> GT graph


@dataclass(frozen=True)
class MatchSettings:
    """How points are paired when no explicit ``max_dist`` is given, and the assignment cost."""

    radius_fraction: float = 0.5
    """Default ``max_dist`` as a fraction of the median finite GT radius (xy pixels)."""
    fallback_max_dist: float = 6.0
    """Default ``max_dist`` (xy pixels) when the GT has no finite radii."""
    unmatched_cost: float = 4.0
    """Cost of leaving a node unmatched, in units of ``max_dist``. Above 1/2 every candidate pair
    is cheaper than leaving both nodes alone; well above it (the default), the assignment
    maximises the number of matches first. 0.5 reproduces traccuracy 0.4.3's PointMatcher."""


DEFAULT_MATCH = MatchSettings()


@dataclass(frozen=True)
class NodeMatching:
    """A one-to-one pairing of GT and predicted rows (``-1`` where a node is unmatched)."""

    gt_to_pred: np.ndarray
    pred_to_gt: np.ndarray
    max_dist: float

    @property
    def n_matched(self) -> int:
        return int(np.count_nonzero(self.gt_to_pred >= 0))

    def counts(self) -> DetectionCounts:
        """Matched nodes (tp), predicted nodes without a match (fp), GT nodes without one (fn)."""
        tp = self.n_matched
        return DetectionCounts(tp, len(self.pred_to_gt) - tp, len(self.gt_to_pred) - tp)


def default_max_dist(gt: TrackGraph, settings: MatchSettings = DEFAULT_MATCH) -> float:
    """Half the median finite GT radius (xy pixels), or the fallback when no radius is known."""
    radius = np.asarray(gt["radius"], dtype=np.float64) if len(gt) else np.empty(0)
    known = radius[np.isfinite(radius) & (radius > 0)]
    if len(known) == 0:
        return settings.fallback_max_dist
    return float(settings.radius_fraction * np.median(known))


def match_nodes(
    pred: TrackGraph,
    gt: TrackGraph,
    *,
    z_ratio: float = 1.0,
    max_dist: float | None = None,
    settings: MatchSettings = DEFAULT_MATCH,
) -> NodeMatching:
    """Pair predicted and GT nodes frame by frame (Hungarian, within ``max_dist`` scaled pixels)."""
    _check_positive("z_ratio", z_ratio)
    if max_dist is None:
        max_dist = default_max_dist(gt, settings)
    _check_positive("max_dist", max_dist)
    _check_positive("settings.unmatched_cost", settings.unmatched_cost)
    gt_to_pred = np.full(len(gt), -1, dtype=np.int64)
    pred_to_gt = np.full(len(pred), -1, dtype=np.int64)
    if len(gt) == 0 or len(pred) == 0:
        return NodeMatching(gt_to_pred, pred_to_gt, float(max_dist))
    # frames are spread apart along a 4th axis by more than max_dist, so one tree serves them all
    frame_step = 2.0 * max_dist + 1.0
    gt_tree = cKDTree(_scaled_points(gt, z_ratio, frame_step, "ground truth"))
    pred_tree = cKDTree(_scaled_points(pred, z_ratio, frame_step, "prediction"))
    pairs = gt_tree.sparse_distance_matrix(pred_tree, max_dist, output_type="ndarray")
    gi, pj = assign_pairs(
        pairs["i"].astype(np.int64),
        pairs["j"].astype(np.int64),
        pairs["v"].astype(np.float64),
        len(gt),
        len(pred),
        unmatched_cost=settings.unmatched_cost * max_dist,
    )
    gt_to_pred[gi] = pj
    pred_to_gt[pj] = gi
    return NodeMatching(gt_to_pred, pred_to_gt, float(max_dist))


def _check_positive(name: str, value: float) -> None:
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")


def _scaled_points(graph: TrackGraph, z_ratio: float, frame_step: float, what: str) -> np.ndarray:
    """(N, 4) points ``(t * frame_step, z * z_ratio, y, x)``."""
    pos = graph.positions().astype(np.float64)
    bad = ~np.all(np.isfinite(pos), axis=1)
    if np.any(bad):
        shown = ", ".join(str(int(i)) for i in graph.ids[bad][:10])
        raise InputError(f"the {what} has nodes with non-finite coordinates (ids {shown})")
    pos[:, 0] *= z_ratio
    t = graph["t"].astype(np.float64)[:, None] * frame_step
    return np.hstack([t, pos])


# ---------------------------------------------------------------------------- assignment


def assign_pairs(
    gi: np.ndarray,
    pj: np.ndarray,
    dist: np.ndarray,
    n_gt: int,
    n_pred: int,
    *,
    unmatched_cost: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Min-cost one-to-one assignment on candidate pairs ``(gi[k], pj[k])`` at ``dist[k]``
    between ``n_gt`` and ``n_pred`` points; returns the matched (gt, pred) rows.

    Minimising ``sum(dist of matches) + unmatched_cost * (unmatched nodes)`` equals minimising
    ``sum(dist - 2 * unmatched_cost)`` over matches. Inside a component that is a rectangular
    assignment where non-candidate cells cost 0 (= leave both unmatched).
    """
    if len(gi) == 0:
        return gi, pj
    n_nodes = n_gt + n_pred
    adjacency = coo_matrix((np.ones(len(gi)), (gi, n_gt + pj)), shape=(n_nodes, n_nodes))
    _, labels = connected_components(adjacency, directed=False)
    component = labels[gi]
    pairs_in_component = np.bincount(component)[component]
    single = pairs_in_component == 1
    worth = dist < 2.0 * unmatched_cost  # always, unless unmatched_cost <= max_dist / 2
    out_g, out_p = [gi[single & worth]], [pj[single & worth]]
    multi = np.flatnonzero(~single)
    if len(multi):
        multi = multi[np.argsort(component[multi], kind="stable")]
        bounds = np.flatnonzero(np.diff(component[multi])) + 1
        for group in np.split(multi, bounds):
            g_rows, g_local = np.unique(gi[group], return_inverse=True)
            p_rows, p_local = np.unique(pj[group], return_inverse=True)
            cost = np.zeros((len(g_rows), len(p_rows)))
            cost[g_local, p_local] = dist[group] - 2.0 * unmatched_cost
            r, c = linear_sum_assignment(cost)
            keep = cost[r, c] < 0
            out_g.append(g_rows[r[keep]])
            out_p.append(p_rows[c[keep]])
    return np.concatenate(out_g), np.concatenate(out_p)
