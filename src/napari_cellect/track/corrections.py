"""Corrections -> training labels for the pair scorers (no torch, no Qt).

A person corrects a tracking result: approves links, breaks or replaces wrong ones, marks
divisions, deletes false detections and adds missed cells. :func:`build_corrections` turns the
corrected :class:`TrackGraph` (its ``approved`` column) and, optionally, the correction records of
the edit history (``Compound.corrections`` of ``History.done``, see
:func:`corrections_from_history`) into a :class:`CorrectionSet`:

- **positive links** ``(parent, child)``: every approved link (graph ``approved`` column, plus
  ``link`` / ``approve`` records whose edge is still in the graph).
- **broken links**: ``unlink`` records whose edge is not in the final graph (the user broke or
  replaced it). A record that later links the same edge again cancels it.
- **candidate negatives**: for each approved link, the ``k`` nearest nodes of the child's frame
  around the parent that are not the parent's children (the rivals the link scorer had to beat;
  an unapproved second child is left out, it may be a real daughter). For each approved track
  start (an approved node without a parent, after the first frame), the ``k`` nearest nodes of
  the previous frame are not its parent.
- **division labels** ``node -> divides``: ``division`` records (mark / unmark; a mark is
  withdrawn when the mother later loses a child, since linking a second child marks one), a
  mother with two approved children (divides) and a node whose single child is approved (does
  not divide).
- **merge labels**: a deleted false detection within a radius of a kept node was a duplicate of
  it (merge positive); two approved nodes close together in one frame are distinct cells (merge
  negative).

Contradictions are refused with :class:`ContradictoryCorrections` naming the nodes: a node with
two approved parents (records against the graph), a link both approved and broken, a division
mark that disagrees with the approved children.

A :class:`CorrectionSet` is self-contained: it stores the positions of every node its labels
touch and of their close neighbours (so fine-tuning can match them to cached detections without
the graph), and is saved as ``corrections.json`` in the journal folder (:func:`save_corrections`,
:func:`load_corrections`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from napari_cellect.data.atomic import atomic_write
from napari_cellect.errors import CellectError, InputError
from napari_cellect.track.graph import NO_PARENT, TrackGraph
from napari_cellect.track.scoring_protocol import nearest_candidates, scaled

logger = logging.getLogger(__name__)

CORRECTIONS_NAME = "corrections.json"
CORRECTIONS_FORMAT = "napari-cellect-corrections"
CORRECTIONS_VERSION = 1

#: Record kinds written by ``track/edits.py``.
KINDS = (
    "link", "unlink", "division", "approve", "unapprove", "false_detection", "missed_detection",
)  # fmt: skip

#: Columns of :attr:`CorrectionSet.nodes` and their dtypes.
NODE_COLUMNS: dict[str, np.dtype] = {
    "id": np.dtype(np.int64),
    "t": np.dtype(np.int64),
    "z": np.dtype(np.float64),
    "y": np.dtype(np.float64),
    "x": np.dtype(np.float64),
    "radius": np.dtype(np.float32),
    "approved": np.dtype(bool),
    "hand_added": np.dtype(bool),
}
#: Columns of :attr:`CorrectionSet.removed`.
REMOVED_COLUMNS: dict[str, np.dtype] = {
    "id": np.dtype(np.int64),
    "t": np.dtype(np.int64),
    "z": np.dtype(np.float64),
    "y": np.dtype(np.float64),
    "x": np.dtype(np.float64),
    "radius": np.dtype(np.float32),
}
#: How many conflicts an error message lists.
_MAX_LISTED = 10


class ContradictoryCorrections(CellectError, ValueError):
    """The corrections contradict each other (the message names the nodes)."""


class NotEnoughCorrections(CellectError, ValueError):
    """The corrections hold too little to learn from (the message says what is missing)."""


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


def _empty_pairs() -> np.ndarray:
    return np.zeros((0, 2), np.int64)


def _empty_table(columns: Mapping[str, np.dtype]) -> dict[str, np.ndarray]:
    return {name: np.zeros(0, dtype) for name, dtype in columns.items()}


@dataclass
class CorrectionSet:
    """Training labels derived from a person's corrections (see the module docstring).

    Node ids refer to :attr:`nodes` (nodes of the corrected graph); the second column of
    :attr:`duplicates` refers to :attr:`removed` (deleted nodes, whose ids may since have been
    reused by the graph).
    """

    nodes: dict[str, np.ndarray] = field(default_factory=lambda: _empty_table(NODE_COLUMNS))
    """Labelled nodes and their close neighbours: columns :data:`NODE_COLUMNS`."""
    removed: dict[str, np.ndarray] = field(default_factory=lambda: _empty_table(REMOVED_COLUMNS))
    """Deleted false detections with a known position: columns :data:`REMOVED_COLUMNS`."""
    positive_links: np.ndarray = field(default_factory=_empty_pairs)
    """(P, 2) approved ``(parent, child)`` links."""
    broken_links: np.ndarray = field(default_factory=_empty_pairs)
    """(B, 2) links the user broke or replaced."""
    candidate_negatives: np.ndarray = field(default_factory=_empty_pairs)
    """(C, 2) ``(parent, node)``: rivals of approved links and of approved track starts."""
    starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Approved nodes without a parent (confirmed track starts)."""
    division_nodes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Nodes with a division label."""
    division_divides: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    """Per :attr:`division_nodes`: True = divides before the next frame."""
    duplicates: np.ndarray = field(default_factory=_empty_pairs)
    """(M, 2) ``(kept node id, removed node id)``: merge positives."""
    distinct: np.ndarray = field(default_factory=_empty_pairs)
    """(D, 2) node id pairs of one frame that are different cells: merge negatives."""
    z_ratio: float = 1.0
    """The anisotropy the distances were measured with."""
    source: str = ""
    """Where the corrections come from (a tracks file, a session)."""
    created: str = ""
    """ISO 8601 time the set was built."""

    def __post_init__(self) -> None:
        self.nodes = _table(self.nodes, NODE_COLUMNS, "nodes")
        self.removed = _table(self.removed, REMOVED_COLUMNS, "removed")
        for name in ("positive_links", "broken_links", "candidate_negatives", "duplicates",
                     "distinct"):  # fmt: skip
            setattr(self, name, _pairs(getattr(self, name), name))
        self.starts = np.asarray(self.starts, np.int64).reshape(-1)
        self.division_nodes = np.asarray(self.division_nodes, np.int64).reshape(-1)
        self.division_divides = np.asarray(self.division_divides, bool).reshape(-1)
        if len(self.division_nodes) != len(self.division_divides):
            raise InputError(
                f"CorrectionSet: {len(self.division_nodes)} division nodes but "
                f"{len(self.division_divides)} division labels"
            )
        self.z_ratio = float(self.z_ratio)

    # ------------------------------------------------------------------ views
    @property
    def negative_links(self) -> np.ndarray:
        """(N, 2) every negative link: broken links and candidate negatives, without repeats."""
        both = np.concatenate([self.broken_links, self.candidate_negatives])
        return np.unique(both, axis=0) if len(both) else _empty_pairs()

    @property
    def divides(self) -> dict[int, bool]:
        """Division labels as a dict ``node -> divides``."""
        pairs = zip(self.division_nodes.tolist(), self.division_divides.tolist(), strict=True)
        return {int(n): bool(d) for n, d in pairs}

    def counts(self) -> dict[str, int]:
        """How many labels of each kind (plain ints, for logs and model metadata)."""
        return {
            "positive_links": len(self.positive_links),
            "broken_links": len(self.broken_links),
            "candidate_negatives": len(self.candidate_negatives),
            "track_starts": len(self.starts),
            "divides": int(np.count_nonzero(self.division_divides)),
            "does_not_divide": int(np.count_nonzero(~self.division_divides)),
            "duplicates": len(self.duplicates),
            "distinct": len(self.distinct),
            "hand_added": int(np.count_nonzero(self.nodes["hand_added"])),
        }

    def is_empty(self) -> bool:
        """True when the set holds no label at all."""
        return not any(self.counts()[k] for k in self.counts() if k != "hand_added")

    def require_trainable(self) -> None:
        """Raise :class:`NotEnoughCorrections` when nothing can be learned: no labels at all, or
        labels of one class only (every scorer needs positives and negatives)."""
        c = self.counts()
        if self.is_empty():
            raise NotEnoughCorrections(
                "no corrections to learn from: approve links (or a whole track), fix wrong links, "
                "mark divisions or delete false detections first"
            )
        link_ok = c["positive_links"] > 0 and (c["broken_links"] + c["candidate_negatives"]) > 0
        division_ok = c["divides"] > 0 and c["does_not_divide"] > 0
        merge_ok = c["duplicates"] > 0 and c["distinct"] > 0
        if link_ok or division_ok or merge_ok:
            return
        have = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in c.items() if v) or "nothing"
        raise NotEnoughCorrections(
            f"the corrections hold only one kind of label ({have}); fine-tuning needs both "
            "positives and negatives for at least one scorer: links need an approved link and a "
            "broken link or another candidate cell near an approved parent; divisions need a "
            "dividing and a non-dividing mother; merging needs a deleted duplicate and two "
            "distinct approved cells close together"
        )

    def node_positions(self, ids: np.ndarray) -> np.ndarray:
        """(N, 3) z, y, x of nodes of :attr:`nodes` (InputError naming unknown ids)."""
        rows = _rows_of(self.nodes["id"], ids, "nodes")
        return np.stack([self.nodes[c][rows] for c in ("z", "y", "x")], axis=1)

    def frames(self) -> np.ndarray:
        """The sorted frames that hold labelled or removed nodes."""
        return np.unique(np.concatenate([self.nodes["t"], self.removed["t"]]))

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        return {
            "format": CORRECTIONS_FORMAT,
            "version": CORRECTIONS_VERSION,
            "source": self.source,
            "created": self.created,
            "z_ratio": self.z_ratio,
            "nodes": {k: _plain(v) for k, v in self.nodes.items()},
            "removed": {k: _plain(v) for k, v in self.removed.items()},
            "positive_links": self.positive_links.tolist(),
            "broken_links": self.broken_links.tolist(),
            "candidate_negatives": self.candidate_negatives.tolist(),
            "starts": self.starts.tolist(),
            "divisions": {
                "node": self.division_nodes.tolist(),
                "divides": self.division_divides.tolist(),
            },
            "duplicates": self.duplicates.tolist(),
            "distinct": self.distinct.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | os.PathLike[str] | None = None) -> CorrectionSet:
        """Rebuild from :meth:`to_dict` output; ``source`` names the file in error messages."""
        if not isinstance(data, Mapping) or data.get("format") != CORRECTIONS_FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise InputError(f"expected a {CORRECTIONS_FORMAT!r} file, found {found!r}", source)
        if data.get("version") != CORRECTIONS_VERSION:
            raise InputError(
                f"unsupported corrections version {data.get('version')!r}; this version reads "
                f"{CORRECTIONS_VERSION}",
                source,
            )
        try:
            divisions = data.get("divisions", {}) or {}
            return cls(
                nodes=_table_from_plain(data.get("nodes", {}), NODE_COLUMNS),
                removed=_table_from_plain(data.get("removed", {}), REMOVED_COLUMNS),
                positive_links=data.get("positive_links", []),
                broken_links=data.get("broken_links", []),
                candidate_negatives=data.get("candidate_negatives", []),
                starts=data.get("starts", []),
                division_nodes=divisions.get("node", []),
                division_divides=divisions.get("divides", []),
                duplicates=data.get("duplicates", []),
                distinct=data.get("distinct", []),
                z_ratio=float(data.get("z_ratio", 1.0)),
                source=str(data.get("source", "")),
                created=str(data.get("created", "")),
            )
        except InputError as error:
            raise InputError(f"invalid corrections: {error}", source) from None
        except (TypeError, ValueError, AttributeError) as error:
            raise InputError(f"invalid corrections: {error}", source) from None

    def combine(self, other: CorrectionSet) -> CorrectionSet:
        """The union of two sets (for example the approved links of a CSV and the broken links
        and deleted detections saved by an editing session). Contradictions between the two
        (a link approved in one and broken in the other, opposite division labels) raise
        :class:`ContradictoryCorrections`."""
        nodes = _concat_tables(self.nodes, other.nodes, NODE_COLUMNS)
        removed = _concat_tables(self.removed, other.removed, REMOVED_COLUMNS)
        positive = _unique_pairs(np.concatenate([self.positive_links, other.positive_links]))
        broken = _unique_pairs(np.concatenate([self.broken_links, other.broken_links]))
        conflicts = [
            f"link {p} -> {c} is both approved and broken" for p, c in _intersect(positive, broken)
        ]
        # two sets may give one child different approved parents
        child, counts = np.unique(positive[:, 1], return_counts=True)
        for c in child[counts > 1]:
            parents = positive[positive[:, 1] == c, 0].tolist()
            conflicts.append(f"node {c} has two approved parents ({', '.join(map(str, parents))})")
        labels: dict[int, bool] = dict(self.divides)
        for node, divides in other.divides.items():
            if node in labels and labels[node] != divides:
                conflicts.append(f"node {node} is marked both dividing and not dividing")
            labels[node] = divides
        _raise_conflicts(conflicts)
        candidates = np.concatenate([self.candidate_negatives, other.candidate_negatives])
        candidates = _minus(_unique_pairs(candidates), positive)
        return CorrectionSet(
            nodes=nodes,
            removed=removed,
            positive_links=positive,
            broken_links=broken,
            candidate_negatives=candidates,
            starts=np.union1d(self.starts, other.starts),
            division_nodes=np.fromiter(labels.keys(), np.int64, len(labels)),
            division_divides=np.fromiter(labels.values(), bool, len(labels)),
            duplicates=_unique_pairs(np.concatenate([self.duplicates, other.duplicates])),
            distinct=_unique_pairs(np.concatenate([self.distinct, other.distinct])),
            z_ratio=self.z_ratio,
            source=" + ".join(s for s in (self.source, other.source) if s),
            created=_now(),
        )


# ------------------------------------------------------------------------------------ history


def corrections_from_history(history: Any) -> list[dict[str, Any]]:
    """The correction records of the applied commands, oldest first.

    Accepts a :class:`~napari_cellect.track.edits.History` (its ``done`` commands) or a sequence
    of commands. Each ``false_detection`` record is completed with the deleted node's frame,
    position and radius (``t, z, y, x, radius``), read from the ``RemoveNodes`` step that deleted
    it, because the node itself is gone from the graph afterwards.
    """
    commands = history.done if hasattr(history, "done") else list(history)
    records: list[dict[str, Any]] = []
    for command in commands:
        removed = _removed_rows(command)
        for record in getattr(command, "corrections", []) or []:
            record = dict(record)
            if record.get("kind") == "false_detection" and record.get("node") in removed:
                record.update(removed[record["node"]])
            records.append(record)
    return records


def _removed_rows(command: Any) -> dict[int, dict[str, float]]:
    """``{id: {t, z, y, x, radius}}`` of the nodes deleted by the RemoveNodes steps of a command
    (searched through nested compounds)."""
    out: dict[int, dict[str, float]] = {}
    removed = getattr(command, "_removed", None)
    if isinstance(removed, Mapping) and "id" in removed:
        for i, node in enumerate(removed["id"]):
            out[int(node)] = {
                key: (int(removed[key][i]) if key == "t" else float(removed[key][i]))
                for key in ("t", "z", "y", "x", "radius")
                if key in removed
            }
    for step in getattr(command, "steps", []) or []:
        out.update(_removed_rows(step))
    return out


# ------------------------------------------------------------------------------------ building


@dataclass
class _RecordState:
    """What the correction records say once replayed in order."""

    approved: dict[int, int] = field(default_factory=dict)  # child -> parent (-1: a start)
    broken: set[tuple[int, int]] = field(default_factory=set)
    divisions: dict[int, bool] = field(default_factory=dict)
    removed: dict[int, dict[str, float]] = field(default_factory=dict)
    hand_added: set[int] = field(default_factory=set)


def _replay(records: Iterable[Mapping[str, Any]]) -> _RecordState:
    """Replay records in order: a later record about the same link or node wins."""
    state = _RecordState()
    for number, record in enumerate(records):
        kind = record.get("kind") if isinstance(record, Mapping) else None
        if kind not in KINDS:
            raise InputError(
                f"correction record {number}: expected a dict with 'kind' among "
                f"{', '.join(KINDS)}, found {record!r}"
            )
        about_link = kind in ("link", "unlink", "approve", "unapprove")
        try:
            if about_link:
                parent, child = int(record["parent"]), int(record["child"])
            else:
                node = int(record["node"])
        except (KeyError, TypeError, ValueError):
            raise InputError(
                f"correction record {number} ({kind}): expected integer "
                f"{'parent and child' if about_link else 'node'}, found {dict(record)!r}"
            ) from None
        if kind in ("link", "approve"):
            state.approved[child] = parent
            state.broken.discard((parent, child))
        elif kind == "unlink":
            state.broken.add((parent, child))
            if state.approved.get(child) == parent:
                del state.approved[child]
            # linking a second child marks a division (edits.link); losing a child withdraws it
            if state.divisions.get(parent):
                del state.divisions[parent]
        elif kind == "unapprove":
            if state.approved.get(child) == parent:
                del state.approved[child]
        elif kind == "division":
            state.divisions[node] = bool(record.get("divides", True))
        elif kind == "missed_detection":
            state.hand_added.add(node)
        else:  # false_detection: the node is gone, with whatever was said about it
            state.hand_added.discard(node)
            state.divisions.pop(node, None)
            state.approved = {c: p for c, p in state.approved.items() if node not in (c, p)}
            state.broken = {(p, c) for p, c in state.broken if node not in (p, c)}
            if all(k in record for k in ("t", "z", "y", "x")):
                state.removed[node] = {
                    "t": int(record["t"]), "z": float(record["z"]), "y": float(record["y"]),
                    "x": float(record["x"]), "radius": float(record.get("radius", np.nan)),
                }  # fmt: skip
            else:
                logger.debug("false detection %d has no position; no merge label from it", node)
    return state


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
    state = _replay(records or [])
    view = _GraphView(graph, z_ratio, cfg.radius_floor)
    conflicts: list[str] = []

    positive, starts = _positive_links(view, state, conflicts)
    broken = _broken_links(view, state, positive, conflicts)
    divisions = _division_labels(view, state, positive, conflicts)
    _raise_conflicts(conflicts)

    candidates = _candidate_negatives(view, positive, cfg.link_k)
    if cfg.start_negatives:
        candidates = np.concatenate([candidates, _start_negatives(view, starts, cfg.link_k)])
    candidates = _minus(_unique_pairs(candidates), np.concatenate([positive, broken]))
    removed = _removed_table(state.removed)
    duplicates = _duplicates(view, removed, cfg)
    distinct = _distinct(view, cfg)

    labelled = np.unique(np.concatenate([
        positive.ravel(), broken.ravel(), candidates.ravel(), starts,
        np.fromiter(divisions.keys(), np.int64, len(divisions)),
        duplicates[:, 0], distinct.ravel(),
    ]))  # fmt: skip
    rows = _with_context(view, view.rows(labelled), removed, cfg)
    nodes = {
        "id": view.ids[rows], "t": view.t[rows],
        "z": view.pos[rows, 0], "y": view.pos[rows, 1], "x": view.pos[rows, 2],
        "radius": graph["radius"][rows], "approved": view.approved[rows],
        "hand_added": np.isin(view.ids[rows], np.fromiter(state.hand_added, np.int64)),
    }  # fmt: skip
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
        created=_now(),
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

    def has(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        if len(self._sorted) == 0:
            return np.zeros(ids.shape, bool)
        pos = np.minimum(np.searchsorted(self._sorted, ids), len(self._sorted) - 1)
        return self._sorted[pos] == ids

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows of ids that are in the graph (unknown ids must be filtered out first)."""
        ids = np.asarray(ids, np.int64)
        return self._order[np.searchsorted(self._sorted, ids)]

    def frame_rows(self, t: int) -> np.ndarray:
        return self._frames.get(int(t), np.zeros(0, np.int64))


def _positive_links(
    view: _GraphView, state: _RecordState, conflicts: list[str]
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
    return _unique_pairs(np.concatenate(pairs)), np.unique(np.asarray(starts, np.int64))


def _broken_links(
    view: _GraphView, state: _RecordState, positive: np.ndarray, conflicts: list[str]
) -> np.ndarray:
    """``unlink`` records whose edge is gone from the graph and both of whose nodes remain."""
    if not state.broken:
        return _empty_pairs()
    broken = _unique_pairs(np.asarray(sorted(state.broken), np.int64))
    for p, c in _intersect(broken, positive):
        conflicts.append(f"link {p} -> {c} is both approved and broken")
    broken = _minus(broken, positive)
    known = view.has(broken[:, 0]) & view.has(broken[:, 1])
    broken = broken[known]
    in_graph = view.parent[view.rows(broken[:, 1])] == broken[:, 0]
    if np.any(in_graph):
        logger.debug("%d broken link(s) are back in the tracks (re-linked); not negatives",
                     int(in_graph.sum()))  # fmt: skip
    return broken[~in_graph]


def _division_labels(
    view: _GraphView, state: _RecordState, positive: np.ndarray, conflicts: list[str]
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
        return _empty_pairs()
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
    return np.concatenate(out) if out else _empty_pairs()


def _start_negatives(view: _GraphView, starts: np.ndarray, k: int) -> np.ndarray:
    """For each approved track start, its k nearest nodes of the previous frame (none is its
    parent)."""
    if len(starts) == 0:
        return _empty_pairs()
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
    return np.concatenate(out) if out else _empty_pairs()


def _removed_table(removed: Mapping[int, Mapping[str, float]]) -> dict[str, np.ndarray]:
    ids = np.fromiter(removed.keys(), np.int64, len(removed))
    table = {"id": ids}
    for key in ("t", "z", "y", "x", "radius"):
        table[key] = np.asarray([removed[i][key] for i in ids.tolist()], REMOVED_COLUMNS[key])
    return _table(table, REMOVED_COLUMNS, "removed")


def _duplicates(
    view: _GraphView, removed: dict[str, np.ndarray], cfg: CorrectionConfig
) -> np.ndarray:
    """``(kept, removed)``: each deleted detection and the nearest kept node within the gate."""
    out = []
    radius = np.asarray(removed["radius"], np.float64)
    radius = np.where(np.isfinite(radius), np.maximum(radius, cfg.radius_floor), cfg.radius_floor)
    pos = _xyz(removed)
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
    return np.concatenate(out) if out else _empty_pairs()


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
    return _unique_pairs(np.concatenate(out)) if out else _empty_pairs()


def _with_context(
    view: _GraphView, rows: np.ndarray, removed: dict[str, np.ndarray], cfg: CorrectionConfig
) -> np.ndarray:
    """``rows`` plus every node of their frames within ``context_radii`` of them or of a removed
    node (the nodes a one-to-one matching to detections must see)."""
    removed_pos = _xyz(removed)
    out = [rows]
    for t in np.unique(np.concatenate([view.t[rows], removed["t"]])):
        frame = view.frame_rows(t)
        if len(frame) == 0:
            continue
        here = rows[view.t[rows] == t]
        centres = np.concatenate([view.pos[here], removed_pos[removed["t"] == t]])
        radius = np.concatenate([
            view.radius[here],
            np.full(int(np.count_nonzero(removed["t"] == t)), cfg.radius_floor),
        ])  # fmt: skip
        tree = cKDTree(scaled(view.pos[frame], view.z_ratio))
        hits = tree.query_ball_point(scaled(centres, view.z_ratio), r=cfg.context_radii * radius)
        found = np.fromiter((i for h in hits for i in h), np.int64)
        out.append(frame[found])
    return np.unique(np.concatenate(out))


# ------------------------------------------------------------------------------------ files


def save_corrections(corrections: CorrectionSet, folder: str | os.PathLike[str]) -> Path:
    """Write ``corrections.json`` into ``folder`` (a journal folder; created if missing),
    atomically. Returns the file written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CORRECTIONS_NAME
    with atomic_write(path, mode="w") as handle:
        json.dump(corrections.to_dict(), handle)
    logger.info("saved corrections to %s", path)
    return path


def load_corrections(path: str | os.PathLike[str]) -> CorrectionSet:
    """Read a ``corrections.json`` file, or the one in a journal folder."""
    path = Path(path)
    if path.is_dir():
        path = path / CORRECTIONS_NAME
    if not path.is_file():
        raise InputError(f"expected a {CORRECTIONS_NAME} file, found none", path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the corrections: {error}", path) from None
    except json.JSONDecodeError as error:
        raise InputError(f"not valid JSON ({error.msg})", path, error.lineno) from None
    return CorrectionSet.from_dict(data, source=path)


# ------------------------------------------------------------------------------------ helpers


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _plain(values: np.ndarray) -> list:
    if values.dtype.kind == "f":
        return [None if not np.isfinite(v) else float(v) for v in values.tolist()]
    return values.tolist()


def _table_from_plain(data: Any, columns: Mapping[str, np.dtype]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise InputError(f"expected a table of columns, found {type(data).__name__}")
    out = {}
    for name, dtype in columns.items():
        values = data.get(name, [])
        if dtype.kind == "f":
            values = [np.nan if v is None else v for v in values]
        out[name] = values
    return out


def _xyz(table: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N, 3) z, y, x of a table with those columns."""
    columns = [np.asarray(table[c], np.float64) for c in ("z", "y", "x")]
    return np.stack(columns, axis=1).reshape(-1, 3)


def _table(
    data: Mapping[str, Any], columns: Mapping[str, np.dtype], what: str
) -> dict[str, np.ndarray]:
    lengths = {name: len(np.atleast_1d(data.get(name, []))) for name in columns if name in data}
    n = max(lengths.values(), default=0)
    out = {}
    for name, dtype in columns.items():
        if name in data:
            values = np.asarray(data[name]).reshape(-1)
            if len(values) != n:
                raise InputError(f"{what}: column {name!r} has {len(values)} values, expected {n}")
            out[name] = values.astype(dtype) if len(values) else np.zeros(0, dtype)
        elif name in ("id", "t", "z", "y", "x"):
            raise InputError(f"{what}: missing column {name!r}")
        else:
            out[name] = np.zeros(n, dtype) if dtype.kind == "b" else np.full(n, np.nan, dtype)
    return out


def _pairs(value: Any, name: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.size == 0:
        return _empty_pairs()
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(f"{name}: expected (N, 2) pairs of node ids, found shape {arr.shape}")
    return arr.astype(np.int64)


def _unique_pairs(pairs: np.ndarray) -> np.ndarray:
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    return np.unique(pairs, axis=0) if len(pairs) else _empty_pairs()


def _pair_keys(pairs: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pairs, np.int64).view([("a", np.int64), ("b", np.int64)]).ravel()


def _intersect(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    if len(a) == 0 or len(b) == 0:
        return []
    both = np.intersect1d(_pair_keys(a), _pair_keys(b))
    return [(int(p), int(c)) for p, c in both.tolist()]


def _minus(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows of ``a`` that are not rows of ``b``."""
    if len(a) == 0 or len(b) == 0:
        return a
    return a[~np.isin(_pair_keys(a), _pair_keys(b))]


def _rows_of(ids: np.ndarray, wanted: Any, what: str) -> np.ndarray:
    wanted = np.atleast_1d(np.asarray(wanted, np.int64))
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    pos = np.minimum(np.searchsorted(sorted_ids, wanted), max(len(sorted_ids) - 1, 0))
    found = sorted_ids[pos] == wanted if len(sorted_ids) else np.zeros(len(wanted), bool)
    if not np.all(found):
        raise InputError(f"{what}: unknown node id(s) {wanted[~found][:_MAX_LISTED].tolist()}")
    return order[pos]


def _concat_tables(
    a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], columns: Mapping[str, np.dtype]
) -> dict[str, np.ndarray]:
    """Rows of ``a``, then the rows of ``b`` whose id ``a`` lacks."""
    new = ~np.isin(b["id"], a["id"])
    return {name: np.concatenate([a[name], b[name][new]]) for name in columns}


def _raise_conflicts(conflicts: Sequence[str]) -> None:
    if not conflicts:
        return
    shown = "; ".join(conflicts[:_MAX_LISTED])
    more = f"; ... ({len(conflicts)} in all)" if len(conflicts) > _MAX_LISTED else ""
    raise ContradictoryCorrections(
        f"contradictory corrections: {shown}{more}. Undo or redo the conflicting edits, then try "
        "again"
    )
