"""Corrected tracks and correction records -> a :class:`CorrectionSet` of training labels
(:func:`build_corrections`; the rules are in :mod:`napari_cellect.track.corrections`).
No torch, no Qt."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial import cKDTree

from napari_cellect.errors import InputError
from napari_cellect.track.correction_records import RecordState, replay_records
from napari_cellect.track.correction_set import (
    REMOVED_COLUMNS,
    CorrectionSet,
    column_table,
    empty_pairs,
    intersect_pairs,
    minus_pairs,
    now_iso,
    raise_conflicts,
    table_xyz,
    unique_pairs,
)
from napari_cellect.track.graph import NO_PARENT, TrackGraph
from napari_cellect.track.scoring_protocol import nearest_candidates, scaled

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorrectionConfig:
    """How corrections become labels. Distances are in scaled space ``(z * z_ratio, y, x)``."""

    link_k: int = 5
    """Candidate negatives per approved link: the parent's k nearest nodes in the child's frame
    (use the linker's ``k``, so the labels are the rivals the link scorer really sees)."""
    merge_k: int = 5
    """Approved same-frame neighbours checked per approved node for merge negatives (use the
    merge stage's ``k``)."""
    start_negatives: bool = True
    """An approved node without a parent is a confirmed track start: its k nearest nodes of the
    previous frame become negative links."""
    duplicate_radii: float = 1.0
    """A deleted detection within this many radii of a kept node of its frame was a duplicate of
    it (merge positive); farther away it was a plain false positive."""
    distinct_radii: float = 2.0
    """Two approved nodes of one frame closer than this many radii (of the larger) form a merge
    negative; farther pairs never reach the merge gate and teach nothing."""
    context_radii: float = 3.0
    """Nodes this close (radii) to a labelled node are stored too, so fine-tuning can match the
    labelled nodes to detections one-to-one without the whole graph."""
    radius_floor: float = 3.0
    """Radius used for the gates above where a node has none (NaN) or a smaller one."""

    def __post_init__(self) -> None:
        for name in ("link_k", "merge_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(
                    f"CorrectionConfig.{name}: expected an integer >= 1, found {value!r}"
                )
        for name in ("duplicate_radii", "distinct_radii", "context_radii", "radius_floor"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise InputError(f"CorrectionConfig.{name}: expected a number >= 0, found {value}")


# ------------------------------------------------------------------------------------ building


def build_corrections(
    graph: TrackGraph,
    records: Iterable[Mapping[str, Any]] | None = None,
    *,
    z_ratio: float = 1.0,
    config: CorrectionConfig | None = None,
    source: str = "",
) -> CorrectionSet:
    """Training labels from a corrected graph and (optionally) its correction records.

    Args:
        graph: the corrected tracks; its ``approved`` column marks confirmed links and starts.
        records: correction dicts (``Compound.corrections`` of ``History.done``, best via
            :func:`corrections_from_history`, which adds the positions of deleted nodes).
        z_ratio: z spacing over xy spacing, for the distances.
        config: gates and counts (:class:`CorrectionConfig`).
        source: recorded in the set (for example the tracks file).

    Raises:
        ContradictoryCorrections: naming every contradiction found.
        InputError: a malformed record.
    """
    cfg = config or CorrectionConfig()
    if not (np.isfinite(z_ratio) and z_ratio > 0):
        raise InputError(f"z_ratio: expected a finite number > 0, found {z_ratio}")
    state = replay_records(records or [])
    view = _GraphView(graph, z_ratio, cfg.radius_floor)
    conflicts: list[str] = []

    positive, starts = _positive_links(view, state, conflicts)
    broken = _broken_links(view, state, positive, conflicts)
    divisions = _division_labels(view, state, positive, conflicts)
    raise_conflicts(conflicts)

    candidates = _candidate_negatives(view, positive, cfg.link_k)
    if cfg.start_negatives:
        candidates = np.concatenate([candidates, _start_negatives(view, starts, cfg.link_k)])
    candidates = minus_pairs(unique_pairs(candidates), np.concatenate([positive, broken]))
    removed = _removed_table(state.removed)
    duplicates = _duplicates(view, removed, cfg)
    distinct = _distinct(view, cfg)

    labelled = np.unique(
        np.concatenate(
            [
                positive.ravel(),
                broken.ravel(),
                candidates.ravel(),
                starts,
                np.fromiter(divisions.keys(), np.int64, len(divisions)),
                duplicates[:, 0],
                distinct.ravel(),
            ]
        )
    )
    rows = _with_context(view, view.rows(labelled), removed, cfg)
    nodes = {
        "id": view.ids[rows],
        "t": view.t[rows],
        "z": view.pos[rows, 0],
        "y": view.pos[rows, 1],
        "x": view.pos[rows, 2],
        "radius": graph["radius"][rows],
        "approved": view.approved[rows],
        "hand_added": np.isin(view.ids[rows], np.fromiter(state.hand_added, np.int64)),
    }
    result = CorrectionSet(
        nodes=nodes,
        removed=removed,
        positive_links=positive,
        broken_links=broken,
        candidate_negatives=candidates,
        starts=starts,
        division_nodes=np.fromiter(divisions.keys(), np.int64, len(divisions)),
        division_divides=np.fromiter(divisions.values(), bool, len(divisions)),
        duplicates=duplicates,
        distinct=distinct,
        z_ratio=z_ratio,
        source=str(source),
        created=now_iso(),
    )
    logger.info("corrections: %s", ", ".join(f"{v} {k}" for k, v in result.counts().items()))
    return result


class _GraphView:
    """The graph columns the label builders need, with id -> row lookups."""

    def __init__(self, graph: TrackGraph, z_ratio: float, radius_floor: float):
        self.graph = graph
        self.z_ratio = z_ratio
        self.ids = graph.ids
        self.t = graph["t"]
        self.parent = graph["parent_id"]
        self.approved = graph["approved"]
        self.pos = graph.positions()
        radius = np.asarray(graph["radius"], np.float64)
        self.radius = np.where(np.isfinite(radius), np.maximum(radius, radius_floor), radius_floor)
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._order]
        self._frames: dict[int, np.ndarray] = {}
        if len(self.t):
            order = np.argsort(self.t, kind="stable")
            frames, starts = np.unique(self.t[order], return_index=True)
            for f, rows in zip(frames, np.split(order, starts[1:]), strict=True):
                self._frames[int(f)] = rows

    def has(self, ids: ArrayLike) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        if len(self._sorted) == 0:
            return np.zeros(ids.shape, bool)
        pos = np.minimum(np.searchsorted(self._sorted, ids), len(self._sorted) - 1)
        return self._sorted[pos] == ids

    def rows(self, ids: ArrayLike) -> np.ndarray:
        """Rows of ids that are in the graph (unknown ids must be filtered out first)."""
        ids = np.asarray(ids, np.int64)
        return self._order[np.searchsorted(self._sorted, ids)]

    def frame_rows(self, t: int) -> np.ndarray:
        return self._frames.get(int(t), np.zeros(0, np.int64))


def _positive_links(
    view: _GraphView, state: RecordState, conflicts: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Approved links (graph and records) and approved track starts."""
    approved = view.approved
    linked = approved & (view.parent != NO_PARENT)
    pairs = [np.stack([view.parent[linked], view.ids[linked]], axis=1)]
    starts = list(view.ids[approved & (view.parent == NO_PARENT)])
    extra = []
    for child, parent in sorted(state.approved.items()):
        if not view.has([child])[0]:
            continue
        row = view.rows([child])[0]
        graph_parent = int(view.parent[row])
        if graph_parent == parent:
            if parent == NO_PARENT:
                starts.append(child)
            else:
                extra.append((parent, child))
        elif approved[row]:
            said = "a track start" if parent == NO_PARENT else f"parent {parent}"
            has = "no parent" if graph_parent == NO_PARENT else f"parent {graph_parent}"
            conflicts.append(
                f"node {child} has two approved parents: {said} in the correction records and "
                f"{has} in the tracks"
            )
        else:
            logger.debug("record approving %d -> %d superseded by a later edit", parent, child)
    if extra:
        pairs.append(np.asarray(extra, np.int64))
    return unique_pairs(np.concatenate(pairs)), np.unique(np.asarray(starts, np.int64))


def _broken_links(
    view: _GraphView, state: RecordState, positive: np.ndarray, conflicts: list[str]
) -> np.ndarray:
    """``unlink`` records whose edge is gone from the graph and both of whose nodes remain."""
    if not state.broken:
        return empty_pairs()
    broken = unique_pairs(np.asarray(sorted(state.broken), np.int64))
    for p, c in intersect_pairs(broken, positive):
        conflicts.append(f"link {p} -> {c} is both approved and broken")
    broken = minus_pairs(broken, positive)
    known = view.has(broken[:, 0]) & view.has(broken[:, 1])
    broken = broken[known]
    in_graph = view.parent[view.rows(broken[:, 1])] == broken[:, 0]
    if np.any(in_graph):
        logger.debug(
            "%d broken link(s) are back in the tracks (re-linked); not negatives",
            int(in_graph.sum()),
        )
    return broken[~in_graph]


def _division_labels(
    view: _GraphView, state: RecordState, positive: np.ndarray, conflicts: list[str]
) -> dict[int, bool]:
    """Division marks, and what approved children say: two approved children divide, a single
    child that is approved does not."""
    labels: dict[int, bool] = {}
    if len(positive):
        mothers, n_approved = np.unique(positive[:, 0], return_counts=True)
        keep = view.has(mothers)
        mothers, n_approved = mothers[keep], n_approved[keep]
        n_children = view.graph.n_children()[view.rows(mothers)]
        for m, a, n in zip(mothers.tolist(), n_approved.tolist(), n_children.tolist(), strict=True):
            if a >= 2:
                labels[m] = True
            elif n == 1:
                labels[m] = False
    for node, divides in sorted(state.divisions.items()):
        if not view.has([node])[0]:
            continue
        derived = labels.get(node)
        if derived is not None and derived != divides:
            children = view.graph.children_of(node).tolist()
            if divides:
                conflicts.append(
                    f"node {node} is marked dividing but has a single approved child "
                    f"({', '.join(map(str, children))})"
                )
            else:
                conflicts.append(
                    f"node {node} is marked not dividing but has two approved children "
                    f"({', '.join(map(str, children))})"
                )
            continue
        labels[node] = divides
    return labels


def _candidate_negatives(view: _GraphView, positive: np.ndarray, k: int) -> np.ndarray:
    """For each approved link, the parent's k nearest nodes in the child's frame that are not
    the parent's children."""
    if len(positive) == 0:
        return empty_pairs()
    parent_rows = view.rows(positive[:, 0])
    child_t = view.t[view.rows(positive[:, 1])]
    out = []
    for t in np.unique(child_t):
        cand_rows = view.frame_rows(t)
        parents = np.unique(parent_rows[child_t == t])
        idx, _ = nearest_candidates(view.pos[parents], view.pos[cand_rows], k, view.z_ratio)
        valid = idx >= 0
        cand = cand_rows[np.where(valid, idx, 0)]
        own_child = view.parent[cand] == view.ids[parents][:, None]
        keep = valid & ~own_child
        q = np.broadcast_to(view.ids[parents][:, None], idx.shape)
        out.append(np.stack([q[keep], view.ids[cand][keep]], axis=1))
    return np.concatenate(out) if out else empty_pairs()


def _start_negatives(view: _GraphView, starts: np.ndarray, k: int) -> np.ndarray:
    """For each approved track start, its k nearest nodes of the previous frame (none is its
    parent)."""
    if len(starts) == 0:
        return empty_pairs()
    rows = view.rows(starts)
    out = []
    for t in np.unique(view.t[rows]):
        prev = view.frame_rows(t - 1)
        here = rows[view.t[rows] == t]
        if len(prev) == 0:
            continue
        idx, _ = nearest_candidates(view.pos[here], view.pos[prev], k, view.z_ratio)
        valid = idx >= 0
        q = view.ids[prev[np.where(valid, idx, 0)]]
        c = np.broadcast_to(view.ids[here][:, None], idx.shape)
        out.append(np.stack([q[valid], c[valid]], axis=1))
    return np.concatenate(out) if out else empty_pairs()


def _removed_table(removed: Mapping[int, Mapping[str, float]]) -> dict[str, np.ndarray]:
    ids = np.fromiter(removed.keys(), np.int64, len(removed))
    table = {"id": ids}
    for key in ("t", "z", "y", "x", "radius"):
        table[key] = np.asarray([removed[i][key] for i in ids.tolist()], REMOVED_COLUMNS[key])
    return column_table(table, REMOVED_COLUMNS, "removed")


def _duplicates(
    view: _GraphView, removed: dict[str, np.ndarray], cfg: CorrectionConfig
) -> np.ndarray:
    """``(kept, removed)``: each deleted detection and the nearest kept node within the gate."""
    out = []
    radius = np.asarray(removed["radius"], np.float64)
    radius = np.where(np.isfinite(radius), np.maximum(radius, cfg.radius_floor), cfg.radius_floor)
    pos = table_xyz(removed)
    for t in np.unique(removed["t"]):
        kept = view.frame_rows(t)
        here = np.flatnonzero(removed["t"] == t)
        if len(kept) == 0:
            continue
        tree = cKDTree(scaled(view.pos[kept], view.z_ratio))
        dist, idx = tree.query(scaled(pos[here], view.z_ratio))
        gate = cfg.duplicate_radii * np.maximum(radius[here], view.radius[kept[idx]])
        near = dist <= gate
        out.append(np.stack([view.ids[kept[idx[near]]], removed["id"][here[near]]], axis=1))
    n_fp = len(removed["id"]) - sum(len(o) for o in out)
    if n_fp:
        logger.debug("%d deleted detection(s) were false positives, not duplicates", n_fp)
    return np.concatenate(out) if out else empty_pairs()


def _distinct(view: _GraphView, cfg: CorrectionConfig) -> np.ndarray:
    """Pairs of approved nodes of one frame within ``distinct_radii`` of each other."""
    rows = np.flatnonzero(view.approved)
    out = []
    for t in np.unique(view.t[rows]):
        here = rows[view.t[rows] == t]
        if len(here) < 2:
            continue
        idx, dist = nearest_candidates(
            view.pos[here], view.pos[here], cfg.merge_k, view.z_ratio, exclude_self=True
        )
        valid = idx >= 0
        other = here[np.where(valid, idx, 0)]
        gate = cfg.distinct_radii * np.maximum(view.radius[here][:, None], view.radius[other])
        keep = valid & (dist <= gate)
        a = np.broadcast_to(view.ids[here][:, None], idx.shape)[keep]
        b = view.ids[other][keep]
        out.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
    return unique_pairs(np.concatenate(out)) if out else empty_pairs()


def _with_context(
    view: _GraphView, rows: np.ndarray, removed: dict[str, np.ndarray], cfg: CorrectionConfig
) -> np.ndarray:
    """``rows`` plus every node of their frames within ``context_radii`` of them or of a removed
    node (the nodes a one-to-one matching to detections must see)."""
    removed_pos = table_xyz(removed)
    out = [rows]
    for t in np.unique(np.concatenate([view.t[rows], removed["t"]])):
        frame = view.frame_rows(t)
        if len(frame) == 0:
            continue
        here = rows[view.t[rows] == t]
        centres = np.concatenate([view.pos[here], removed_pos[removed["t"] == t]])
        radius = np.concatenate(
            [
                view.radius[here],
                np.full(int(np.count_nonzero(removed["t"] == t)), cfg.radius_floor),
            ]
        )
        tree = cKDTree(scaled(view.pos[frame], view.z_ratio))
        hits = tree.query_ball_point(scaled(centres, view.z_ratio), r=cfg.context_radii * radius)
        found = np.fromiter((i for h in hits for i in h), np.int64)
        out.append(frame[found])
    return np.unique(np.concatenate(out))
