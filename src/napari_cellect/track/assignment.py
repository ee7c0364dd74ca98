"""Global min-cost assignment between two frames, with divisions, appearances and pinned edges.

The problem (:class:`AssignmentProblem`): sources (cells of frame t) and targets (cells of a
later frame), candidate edges with costs, and per-node costs. A solution is a set of edges where

- every target has at most one parent,
- every source has at most two children, a second child only where its ``division_cost`` is
  finite and through an edge that ``second_child_ok`` allows (the linker allows the daughters of
  a geometrically plausible pair only, ``track/division_geometry.py``),
- every pinned edge is present.

It minimises (see :func:`assignment_cost`)::

    sum of edge_cost over chosen, unpinned edges
  + division_cost[i]   for each source whose child count goes to two through an unpinned edge
  + disappear_cost[i]  for each source left without any child
  + appear_cost[j]     for each target left without a parent

This is solved exactly as one sparse minimum-weight perfect matching
(``scipy.sparse.csgraph.min_weight_full_bipartite_matching``, LAPJVsp) on an augmented graph:

- rows: two *slots* per source (slot 0 = continuation, slot 1 = second daughter; slot 1 exists
  only where a division is allowed), then one *appear* row per target;
- columns: the targets, then one *disappear* column per slot.

A slot-target entry costs the edge cost (plus the division cost on slot 1; slot 1 reaches only
the edges that ``second_child_ok`` allows); a slot's own
disappear column costs ``disappear_cost`` on slot 0 and nothing on slot 1; a target's appear row
costs ``appear_cost`` on that target. Appear rows also reach, at zero cost, the disappear column
of every slot that reaches their target (the transposed pattern of the edge block), which keeps a
perfect matching for every partial one with the graph still sparse. The cost of a perfect
matching is then exactly the objective above, so its minimum is the true optimum. Since slot 1
always costs at least as much as slot 0, a lone child always lands in slot 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

from napari_cellect.errors import GraphError, InputError

_EMPTY_INT = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, init=False)
class AssignmentProblem:
    """One frame pair's assignment problem (see the module docstring for the objective).

    The constructor takes array-likes (a scalar node cost applies to every node; ``None`` for
    the ``fixed_*`` and ``second_child_ok`` arrays means none fixed / every edge allowed) and
    stores flat arrays of one dtype each.
    """

    n_sources: int
    n_targets: int
    edge_src: np.ndarray
    """(E,) source index of each candidate edge."""
    edge_dst: np.ndarray
    """(E,) target index of each candidate edge."""
    edge_cost: np.ndarray
    """(E,) finite cost of each edge, usually ``-log p_match``."""
    division_cost: np.ndarray
    """(n_sources,) extra cost of a second child, usually ``-log p_divide``; ``inf`` forbids it."""
    appear_cost: np.ndarray
    """(n_targets,) cost of a target without a parent."""
    disappear_cost: np.ndarray
    """(n_sources,) cost of a source without a child."""
    pinned_src: np.ndarray
    """(P,) sources of edges that must be kept (their cost is a constant and not counted)."""
    pinned_dst: np.ndarray
    """(P,) targets of the pinned edges."""
    fixed_children: np.ndarray
    """(n_sources,) children a source already has outside this problem (e.g. a pinned skip edge)."""
    fixed_parent: np.ndarray
    """(n_targets,) True where a target already has a parent outside this problem."""
    second_child_ok: np.ndarray
    """(E,) True where the edge may give its source a second child (every edge by default).
    A source with two children needs at least one such edge among its unpinned ones (its
    second slot's edge)."""

    def __init__(
        self,
        n_sources: int,
        n_targets: int,
        edge_src: ArrayLike,
        edge_dst: ArrayLike,
        edge_cost: ArrayLike,
        division_cost: ArrayLike,
        appear_cost: ArrayLike,
        disappear_cost: ArrayLike,
        pinned_src: ArrayLike = _EMPTY_INT,
        pinned_dst: ArrayLike = _EMPTY_INT,
        fixed_children: ArrayLike | None = None,
        fixed_parent: ArrayLike | None = None,
        second_child_ok: ArrayLike | None = None,
    ) -> None:
        n_s, n_t = int(n_sources), int(n_targets)
        edges = np.asarray(edge_src, dtype=np.int64).ravel()
        stored = {
            "n_sources": n_s,
            "n_targets": n_t,
            "edge_src": edges,
            "edge_dst": np.asarray(edge_dst, dtype=np.int64).ravel(),
            "edge_cost": np.asarray(edge_cost, dtype=np.float64).ravel(),
            "division_cost": _per_node(division_cost, n_s),
            "appear_cost": _per_node(appear_cost, n_t),
            "disappear_cost": _per_node(disappear_cost, n_s),
            "pinned_src": np.asarray(pinned_src, dtype=np.int64).ravel(),
            "pinned_dst": np.asarray(pinned_dst, dtype=np.int64).ravel(),
            "fixed_children": (
                np.zeros(n_s, np.int64)
                if fixed_children is None
                else np.asarray(fixed_children, dtype=np.int64).ravel()
            ),
            "fixed_parent": (
                np.zeros(n_t, bool)
                if fixed_parent is None
                else np.asarray(fixed_parent, dtype=bool).ravel()
            ),
            "second_child_ok": (
                np.ones(len(edges), bool)
                if second_child_ok is None
                else np.asarray(second_child_ok, dtype=bool).ravel()
            ),
        }
        for name, value in stored.items():
            object.__setattr__(self, name, value)
        self._validate()

    def _validate(self) -> None:
        n_s, n_t = self.n_sources, self.n_targets
        e = len(self.edge_src)
        if len(self.edge_dst) != e or len(self.edge_cost) != e or len(self.second_child_ok) != e:
            raise InputError(
                f"edge_src, edge_dst, edge_cost and second_child_ok must have one length; got "
                f"{e}, {len(self.edge_dst)}, {len(self.edge_cost)}, {len(self.second_child_ok)}"
            )
        if len(self.pinned_src) != len(self.pinned_dst):
            raise InputError(
                f"pinned_src and pinned_dst must have one length; got {len(self.pinned_src)} "
                f"and {len(self.pinned_dst)}"
            )
        if len(self.fixed_children) != n_s or len(self.fixed_parent) != n_t:
            raise InputError(
                f"fixed_children needs {n_s} entries and fixed_parent {n_t}; got "
                f"{len(self.fixed_children)} and {len(self.fixed_parent)}"
            )
        for name, idx, size in (
            ("edge_src", self.edge_src, n_s),
            ("edge_dst", self.edge_dst, n_t),
            ("pinned_src", self.pinned_src, n_s),
            ("pinned_dst", self.pinned_dst, n_t),
        ):
            if len(idx) and (idx.min() < 0 or idx.max() >= size):
                raise InputError(f"{name} must index 0..{size - 1}; found {idx.min()}..{idx.max()}")
        if not np.all(np.isfinite(self.edge_cost)):
            raise InputError("edge costs must be finite (leave an impossible edge out instead)")
        for name in ("appear_cost", "disappear_cost"):
            value = getattr(self, name)
            if len(value) and (not np.all(np.isfinite(value)) or value.min() < 0):
                raise InputError(f"{name} must be finite and >= 0; found min {value.min()}")
        if len(self.division_cost) and np.nanmin(self.division_cost) < 0:
            raise InputError("division_cost must be >= 0 (inf forbids a division)")
        pinned_dst_counts = np.bincount(self.pinned_dst, minlength=n_t)
        two_parents = (pinned_dst_counts > 1) | (self.fixed_parent & (pinned_dst_counts > 0))
        if np.any(two_parents):
            bad = np.flatnonzero(two_parents)
            raise GraphError(f"pinned edges give target(s) {bad.tolist()} more than one parent")
        if np.any(self.used_children > 2):
            bad = np.flatnonzero(self.used_children > 2)
            raise GraphError(f"pinned edges give source(s) {bad.tolist()} more than two children")

    @property
    def used_children(self) -> np.ndarray:
        """(n_sources,) children fixed before solving: pinned here plus fixed outside."""
        return np.bincount(self.pinned_src, minlength=self.n_sources) + self.fixed_children

    @property
    def taken_targets(self) -> np.ndarray:
        """(n_targets,) True where a target's parent is fixed before solving."""
        taken = self.fixed_parent.copy()
        taken[self.pinned_dst] = True
        return taken


@dataclass(frozen=True)
class AssignmentResult:
    """The chosen edges (pinned ones included), sorted by target, and the objective value."""

    src: np.ndarray
    dst: np.ndarray
    pinned: np.ndarray
    """(L,) True for the edges that were pinned."""
    n_children: np.ndarray
    """(n_sources,) children per source in this solution, plus ``fixed_children``."""
    cost: float


def solve_assignment(problem: AssignmentProblem) -> AssignmentResult:
    """The exact optimum of ``problem`` (one sparse LAPJVsp call)."""
    n_s = problem.n_sources
    used = problem.used_children
    taken = problem.taken_targets
    free_slots = 2 - used
    division_ok = np.isfinite(problem.division_cost)

    # Slot rows: slot 0 for sources with no child yet, slot 1 where a(nother) child is allowed.
    has_slot0 = free_slots == 2
    has_slot1 = (free_slots >= 1) & division_ok
    slot0_row = np.where(has_slot0, np.cumsum(has_slot0) - 1, -1)
    n_slot0 = int(has_slot0.sum())
    slot1_row = np.where(has_slot1, n_slot0 + np.cumsum(has_slot1) - 1, -1)
    n_slots = n_slot0 + int(has_slot1.sum())

    # Target columns: only targets whose parent is still open.
    target_col = np.where(~taken, np.cumsum(~taken) - 1, -1)
    n_cols_t = int((~taken).sum())

    edge_src, edge_dst, edge_cost, second_ok = _unique_edges(problem)
    keep = ~taken[edge_dst] & (free_slots[edge_src] > 0)
    edge_src, edge_dst, edge_cost = edge_src[keep], edge_dst[keep], edge_cost[keep]
    second_ok = second_ok[keep]

    # Slot -> target entries.
    e0 = slot0_row[edge_src] >= 0
    e1 = (slot1_row[edge_src] >= 0) & second_ok
    slot_rows = np.concatenate([slot0_row[edge_src[e0]], slot1_row[edge_src[e1]]])
    slot_cols = np.concatenate([target_col[edge_dst[e0]], target_col[edge_dst[e1]]])
    slot_w = np.concatenate([edge_cost[e0], edge_cost[e1] + problem.division_cost[edge_src[e1]]])
    # A slot's own "no child here" column: the source disappears only if slot 0 stays empty.
    slot_src = np.concatenate([np.flatnonzero(has_slot0), np.flatnonzero(has_slot1)])
    own_w = np.concatenate([problem.disappear_cost[has_slot0], np.zeros(n_slots - n_slot0)])
    n_rows = n_slots + n_cols_t  # slots, then one appear row per open target
    open_targets = np.flatnonzero(~taken)
    rows = np.concatenate(
        [
            slot_rows,
            np.arange(n_slots),
            n_slots + np.arange(n_cols_t),
            n_slots + slot_cols,
        ]
    )
    cols = np.concatenate(
        [
            slot_cols,
            n_cols_t + np.arange(n_slots),
            np.arange(n_cols_t),
            n_cols_t + slot_rows,
        ]
    )
    weights = np.concatenate(
        [
            slot_w,
            own_w,
            problem.appear_cost[open_targets],
            np.zeros(len(slot_rows)),
        ]
    )

    chosen_src = _EMPTY_INT
    chosen_dst = _EMPTY_INT
    if n_rows:
        # Every perfect matching has n_rows entries, so a constant offset leaves the optimum
        # unchanged; it keeps all weights positive (explicit zeros are not always kept as edges).
        offset = 1.0 + max(0.0, -float(weights.min())) if len(weights) else 1.0
        matrix = csr_matrix((weights + offset, (rows, cols)), shape=(n_rows, n_rows))
        row_to_col = min_weight_full_bipartite_matching(matrix)[1]
        slot_col = row_to_col[:n_slots]
        linked = slot_col < n_cols_t
        chosen_src = slot_src[linked]
        chosen_dst = open_targets[slot_col[linked]]

    src = np.concatenate([problem.pinned_src, chosen_src])
    dst = np.concatenate([problem.pinned_dst, chosen_dst])
    pinned = np.concatenate(
        [np.ones(len(problem.pinned_src), bool), np.zeros(len(chosen_src), bool)]
    )
    order = np.argsort(dst, kind="stable")
    src, dst, pinned = src[order], dst[order], pinned[order]
    n_children = np.bincount(src, minlength=n_s) + problem.fixed_children
    return AssignmentResult(
        src=src,
        dst=dst,
        pinned=pinned,
        n_children=n_children,
        cost=assignment_cost(problem, src, dst),
    )


def assignment_cost(problem: AssignmentProblem, src: np.ndarray, dst: np.ndarray) -> float:
    """Objective value of a solution given as edges (pinned ones included); ``inf`` if invalid.

    Invalid means: a target with two parents, a target whose parent is fixed outside, a missing
    pinned edge, an edge that is not a candidate, more than two children, or a second child where
    ``division_cost`` is ``inf`` or through unpinned edges none of which ``second_child_ok``
    allows.
    """
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    n_s, n_t = problem.n_sources, problem.n_targets
    if len(np.unique(dst)) != len(dst) or np.any(problem.fixed_parent[dst]):
        return float("inf")
    key = src * n_t + dst
    pinned_key = problem.pinned_src * n_t + problem.pinned_dst
    if not np.all(np.isin(pinned_key, key)):
        return float("inf")
    free = ~np.isin(key, pinned_key)
    edge_src, edge_dst, edge_cost, second_ok = _unique_edges(problem)
    edge_key = edge_src * n_t + edge_dst
    order = np.argsort(edge_key)
    pos = np.searchsorted(edge_key[order], key[free])
    pos = np.minimum(pos, max(len(edge_key) - 1, 0))
    if len(edge_key) == 0:
        if np.any(free):
            return float("inf")
    elif not np.all(edge_key[order][pos] == key[free]):
        return float("inf")
    total = float(edge_cost[order][pos].sum()) if np.any(free) else 0.0
    n_second_ok = np.zeros(n_s, np.int64)
    if np.any(free):
        np.add.at(n_second_ok, src[free], second_ok[order][pos].astype(np.int64))

    used = problem.used_children
    n_free = np.bincount(src[free], minlength=n_s)
    if np.any(used + n_free > 2):
        return float("inf")
    second = n_free > 0
    second &= used + n_free == 2  # the free edges brought the source to two children
    if np.any(second & (~np.isfinite(problem.division_cost) | (n_second_ok == 0))):
        return float("inf")
    total += float(problem.division_cost[second].sum())
    total += float(problem.disappear_cost[(used + n_free) == 0].sum())
    has_parent = problem.fixed_parent.copy()
    has_parent[dst] = True
    total += float(problem.appear_cost[~has_parent].sum())
    return total


def _per_node(cost: ArrayLike, size: int) -> np.ndarray:
    """One cost per node; a scalar applies to all."""
    return np.broadcast_to(np.asarray(cost, dtype=np.float64), (size,))


def _unique_edges(
    problem: AssignmentProblem,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidate edges with repeats removed, keeping the cheapest cost of each pair; a pair may
    be a second child when any of its repeats may."""
    src, dst, cost = problem.edge_src, problem.edge_dst, problem.edge_cost
    second_ok = problem.second_child_ok
    if len(src) == 0:
        return src, dst, cost, second_ok
    key = src * problem.n_targets + dst
    order = np.lexsort((cost, key))
    first = np.ones(len(order), bool)
    first[1:] = key[order][1:] != key[order][:-1]
    sel = order[first]
    any_ok = np.logical_or.reduceat(second_ok[order], np.flatnonzero(first))
    return src[sel], dst[sel], cost[sel], any_ok
