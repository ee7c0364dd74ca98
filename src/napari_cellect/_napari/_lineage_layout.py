"""Lineage-tree layout: time downwards, one column per leaf branch, mothers centred over daughters.

Computed with numpy from the TrackGraph's branch structure (a branch is a run of nodes with one
track id): a few array passes per tree generation, no per-node Python. The drawing code
(:mod:`._lineage_widget`) only reads the arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_cellect.track.graph import NO_PARENT, TrackGraph

#: empty columns left between two lineage trees
TREE_GAP = 1.0


@dataclass
class LineageLayout:
    """Positions (column, frame) of every branch and node.

    Branch arrays have one entry per branch (track id); node arrays one per graph row.
    """

    track: np.ndarray  # (B,) track id of each branch
    x: np.ndarray  # (B,) column of each branch
    t0: np.ndarray  # (B,) first frame
    t1: np.ndarray  # (B,) last frame
    parent: np.ndarray  # (B,) index of the mother branch, -1 for a root
    node_branch: np.ndarray  # (N,) branch index of each node
    node_x: np.ndarray  # (N,) column of each node
    node_t: np.ndarray  # (N,) frame of each node
    node_ids: np.ndarray  # (N,) node id of each row
    width: float  # number of columns used

    @property
    def n_branches(self) -> int:
        return len(self.track)

    def branch_of_track(self, track_id: int) -> int:
        """Index of the branch with this track id, or -1."""
        pos = int(np.searchsorted(self.track, track_id))
        return pos if pos < len(self.track) and self.track[pos] == track_id else -1


def _exclusive_group_cumsum(values: np.ndarray, group_start: np.ndarray) -> np.ndarray:
    """Cumulative sum of ``values`` restarted at each True of ``group_start`` (exclusive)."""
    inclusive = np.cumsum(values)
    before = inclusive - values
    start_idx = np.maximum.accumulate(np.where(group_start, np.arange(len(values)), 0))
    return before - before[start_idx]


def compute_layout(graph: TrackGraph) -> LineageLayout:
    """Lay out every lineage tree of ``graph`` side by side."""
    n = len(graph)
    if n == 0:
        empty_i = np.zeros(0, np.int64)
        return LineageLayout(
            empty_i,
            np.zeros(0),
            empty_i,
            empty_i,
            empty_i,
            empty_i,
            np.zeros(0),
            empty_i,
            empty_i,
            0.0,
        )
    track_of_node = graph.track_ids()
    t = graph["t"]
    track, node_branch = np.unique(track_of_node, return_inverse=True)
    b = len(track)
    t0 = np.full(b, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(t0, node_branch, t)
    t1 = np.full(b, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(t1, node_branch, t)

    parent_track = np.full(b, NO_PARENT, dtype=np.int64)
    parent_track[node_branch] = graph.parent_track_ids()
    parent = np.full(b, -1, dtype=np.int64)
    has_parent = parent_track != NO_PARENT
    parent[has_parent] = np.searchsorted(track, parent_track[has_parent])

    depth = _depths(parent)
    n_children = np.bincount(parent[has_parent], minlength=b)
    leaves = (n_children == 0).astype(np.float64)
    for level in range(int(depth.max()), 0, -1):
        at = np.flatnonzero(depth == level)
        np.add.at(leaves, parent[at], leaves[at])

    offset = np.zeros(b, dtype=np.float64)
    roots = np.flatnonzero(~has_parent)
    roots = roots[np.lexsort((track[roots], t0[roots]))]
    widths = leaves[roots] + TREE_GAP
    offset[roots] = np.cumsum(widths) - widths
    for level in range(1, int(depth.max()) + 1):
        at = np.flatnonzero(depth == level)
        at = at[np.lexsort((track[at], parent[at]))]
        starts = np.r_[True, parent[at][1:] != parent[at][:-1]]
        offset[at] = offset[parent[at]] + _exclusive_group_cumsum(leaves[at], starts)
    x = offset + (leaves - 1.0) / 2.0
    width = float(offset[roots[-1]] + leaves[roots[-1]]) if len(roots) else 0.0
    return LineageLayout(
        track=track,
        x=x,
        t0=t0,
        t1=t1,
        parent=parent,
        node_branch=node_branch,
        node_x=x[node_branch],
        node_t=t.copy(),
        node_ids=graph.ids.copy(),
        width=width,
    )


def _depths(parent: np.ndarray) -> np.ndarray:
    """Generation of each branch (roots 0), by repeated parent lookups (one pass per level)."""
    depth = np.zeros(len(parent), dtype=np.int64)
    current = parent.copy()
    while True:
        alive = current >= 0
        if not np.any(alive):
            return depth
        depth[alive] += 1
        current[alive] = parent[current[alive]]


def segments(layout: LineageLayout) -> tuple[np.ndarray, np.ndarray]:
    """Line segments to draw, as (S, 4) arrays ``x0, t0, x1, t1``.

    Returns ``(stems, divisions)``: one vertical stem per branch (first to last frame) and one
    connector from each mother's last node to each daughter's first node.
    """
    stems = np.column_stack([layout.x, layout.t0, layout.x, layout.t1]).astype(np.float64)
    child = np.flatnonzero(layout.parent >= 0)
    mother = layout.parent[child]
    divisions = np.column_stack(
        [layout.x[mother], layout.t1[mother], layout.x[child], layout.t0[child]]
    ).astype(np.float64)
    return stems, divisions


def approved_runs(graph: TrackGraph, layout: LineageLayout) -> np.ndarray:
    """Segments ``x0, t0, x1, t1`` covering runs of approved links (one per run, vectorised).

    A link is approved when its child node is; within a branch consecutive approved links merge
    into one segment; an approved link into a daughter is its own (diagonal) segment.
    """
    if len(graph) == 0:
        return np.zeros((0, 4))
    rows = np.flatnonzero((graph["parent_id"] != NO_PARENT) & graph["approved"])
    if len(rows) == 0:
        return np.zeros((0, 4))
    parent_rows = graph.index_of(graph["parent_id"][rows])
    same_branch = layout.node_branch[parent_rows] == layout.node_branch[rows]
    out = []
    diag = rows[~same_branch]
    if len(diag):
        p = parent_rows[~same_branch]
        out.append(
            np.column_stack(
                [layout.node_x[p], layout.node_t[p], layout.node_x[diag], layout.node_t[diag]]
            )
        )
    inner, inner_p = rows[same_branch], parent_rows[same_branch]
    if len(inner):
        order = np.lexsort((layout.node_t[inner], layout.node_branch[inner]))
        inner, inner_p = inner[order], inner_p[order]
        # a run continues while the next approved link starts where the previous one ended
        starts = np.r_[True, inner_p[1:] != inner[:-1]]
        first = np.flatnonzero(starts)
        last = np.r_[first[1:] - 1, len(inner) - 1]
        out.append(
            np.column_stack(
                [
                    layout.node_x[inner_p[first]],
                    layout.node_t[inner_p[first]],
                    layout.node_x[inner[last]],
                    layout.node_t[inner[last]],
                ]
            )
        )
    return np.concatenate(out).astype(np.float64)
