"""TrackGraph: the one data model of a tracking result.

Column-oriented: one numpy array per attribute and one row per node. A node has at most one
parent, so the only edge store is the ``parent_id`` column; every query and conversion is
vectorised, which keeps the graph fast at a million nodes.

Derived values (branch track ids, child counts) are cached and recomputed lazily after a mutation.
Every mutation emits :attr:`TrackGraph.changed` with a :class:`GraphChange`, so views and the
autosave journal subscribe to one source of truth.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from psygnal import Signal

from napari_cellect.errors import GraphError

#: Core node columns and their dtypes, in CSV order (``track_id`` and ``parent_track_id`` are derived).
CORE_COLUMNS: dict[str, np.dtype] = {
    "id": np.dtype(np.int64),
    "t": np.dtype(np.int64),
    "z": np.dtype(np.float64),
    "y": np.dtype(np.float64),
    "x": np.dtype(np.float64),
    "parent_id": np.dtype(np.int64),
    "radius": np.dtype(np.float32),
    "score": np.dtype(np.float32),
    "division_score": np.dtype(np.float32),
    "link_score": np.dtype(np.float32),
    "approved": np.dtype(bool),
}

#: Values used for optional core columns that a caller leaves out.
DEFAULTS: dict[str, Any] = {
    "parent_id": -1,
    "radius": np.nan,
    "score": 1.0,
    "division_score": 0.0,
    "link_score": np.nan,
    "approved": False,
}

REQUIRED = ("id", "t", "z", "y", "x")

#: Column order of our CSV format (see docs/architecture.md).
CSV_COLUMNS = (
    "id",
    "t",
    "z",
    "y",
    "x",
    "parent_id",
    "track_id",
    "parent_track_id",
    "radius",
    "division_score",
    "link_score",
    "approved",
)

NO_PARENT = -1


@dataclass(frozen=True)
class GraphChange:
    """What a mutation did: ``kind`` is one of ``add``, ``remove``, ``link``, ``values``, ``reset``.

    ``values`` names its ``column``; it is also what :meth:`TrackGraph.drop_column` emits (with
    every id), so a view that follows a column learns when it is gone.
    """

    kind: str
    ids: np.ndarray
    column: str | None = None


class TrackGraph:
    """Cells as nodes (one per cell per frame), parent -> child edges through ``parent_id``."""

    # caches of derived arrays, reset by _invalidate() whenever the columns change
    _sorted: tuple[np.ndarray, np.ndarray] | None
    _parent_rows_cache: np.ndarray | None
    _n_children: np.ndarray | None
    _track_ids: np.ndarray | None
    _parent_track_ids: np.ndarray | None
    _first_row: np.ndarray | None

    changed = Signal(GraphChange)

    def __init__(self) -> None:
        self._cols: dict[str, np.ndarray] = {
            name: np.empty(0, dtype=dtype) for name, dtype in CORE_COLUMNS.items()
        }
        self._invalidate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(cls, *, validate: bool = True, **columns: ArrayLike) -> TrackGraph:
        """Build a graph from equal-length arrays; ``id, t, z, y, x`` are required."""
        graph = cls()
        graph._cols = _normalise_columns(columns)
        graph._invalidate()
        if validate:
            graph.validate()
        return graph

    @classmethod
    def from_dataframe(cls, df: pd.DataFrame, *, validate: bool = True) -> TrackGraph:
        """Build a graph from a table with at least ``id, t, z, y, x`` (derived columns are ignored)."""
        columns = {
            name: df[name].to_numpy()
            for name in df.columns
            if name not in ("track_id", "parent_track_id")
        }
        return cls.from_arrays(validate=validate, **columns)

    def copy(self) -> TrackGraph:
        """A deep copy without signal connections."""
        return TrackGraph.from_arrays(
            validate=False, **{k: v.copy() for k, v in self._cols.items()}
        )

    # ------------------------------------------------------------------ basic access
    def __len__(self) -> int:
        return len(self._cols["id"])

    def __getitem__(self, column: str) -> np.ndarray:
        if column == "track_id":
            return self.track_ids()
        if column == "parent_track_id":
            return self.parent_track_ids()
        try:
            return self._cols[column]
        except KeyError:
            raise KeyError(
                f"TrackGraph has no column {column!r}; columns are {', '.join(self.columns)}"
            ) from None

    def __repr__(self) -> str:
        return f"TrackGraph({len(self)} nodes, {self.n_edges} edges, {self.n_frames} frames)"

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self._cols)

    @property
    def ids(self) -> np.ndarray:
        return self._cols["id"]

    @property
    def n_edges(self) -> int:
        return int(np.count_nonzero(self._cols["parent_id"] != NO_PARENT))

    @property
    def n_frames(self) -> int:
        t = self._cols["t"]
        return int(t.max()) + 1 if len(t) else 0

    @property
    def frames(self) -> np.ndarray:
        """The sorted distinct frame indices that hold nodes."""
        return np.unique(self._cols["t"])

    def next_id(self) -> int:
        """An id no node uses yet."""
        return int(self.ids.max()) + 1 if len(self) else 1

    def positions(self, rows: np.ndarray | slice | None = None) -> np.ndarray:
        """(N, 3) array of z, y, x in voxels."""
        sel = slice(None) if rows is None else rows
        return np.stack([self._cols["z"][sel], self._cols["y"][sel], self._cols["x"][sel]], axis=-1)

    def index_of(self, ids: Iterable[int] | np.ndarray | int) -> np.ndarray:
        """Row indices of node ids; raises :class:`GraphError` naming unknown ids."""
        ids_arr = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        order, sorted_ids = self._sorted_index()
        pos = np.searchsorted(sorted_ids, ids_arr)
        pos_clipped = np.minimum(pos, max(len(sorted_ids) - 1, 0))
        found = (
            (pos < len(sorted_ids)) & (sorted_ids[pos_clipped] == ids_arr)
            if len(self)
            else (np.zeros(len(ids_arr), bool))
        )
        if not np.all(found):
            missing = ids_arr[~found]
            raise GraphError(f"unknown node id(s): {_fmt_ids(missing)}")
        return order[pos_clipped]

    def has(self, node_id: int) -> bool:
        _, sorted_ids = self._sorted_index()
        pos = np.searchsorted(sorted_ids, node_id)
        return bool(pos < len(sorted_ids) and sorted_ids[pos] == node_id)

    def node(self, node_id: int) -> dict[str, Any]:
        """All attributes of one node as a plain dict (derived track ids included)."""
        row = int(self.index_of(node_id)[0])
        out = {name: col[row].item() for name, col in self._cols.items()}
        out["track_id"] = int(self.track_ids()[row])
        out["parent_track_id"] = int(self.parent_track_ids()[row])
        return out

    def frame(self, t: int) -> np.ndarray:
        """Row indices of the nodes in frame ``t``."""
        return np.flatnonzero(self._cols["t"] == t)

    def parent_of(self, node_id: int) -> int:
        """The parent's id, or -1."""
        return int(self._cols["parent_id"][self.index_of(node_id)[0]])

    def children_of(self, node_id: int) -> np.ndarray:
        """Ids of the children of ``node_id`` (at most two), ordered by id."""
        self.index_of(node_id)  # raises on unknown ids
        return np.sort(self.ids[self._cols["parent_id"] == node_id])

    def n_children(self) -> np.ndarray:
        """Number of children of each node (per row)."""
        if self._n_children is None:
            parent_rows = self._parent_rows()
            self._n_children = np.bincount(parent_rows[parent_rows >= 0], minlength=len(self))
        return self._n_children

    def edges(self) -> np.ndarray:
        """(E, 2) array of ``(parent_id, child_id)``."""
        has_parent = self._cols["parent_id"] != NO_PARENT
        return np.stack([self._cols["parent_id"][has_parent], self.ids[has_parent]], axis=1)

    def divisions(self) -> np.ndarray:
        """Ids of the nodes with two children."""
        return self.ids[self.n_children() == 2]

    # ------------------------------------------------------------------ derived track ids
    def track_ids(self) -> np.ndarray:
        """Branch track id per row: the id of the branch's first node + 1.

        A branch starts at a node without a parent or whose parent has two children (a division).
        Ids derived from the first node stay stable when the graph is edited elsewhere and are never
        0, the background value of a Labels layer.
        """
        if self._track_ids is None:
            self._track_ids = self._compute_track_ids()
        return self._track_ids

    def parent_track_ids(self) -> np.ndarray:
        """Track id of the mother branch for the first node of each branch, else -1 (per row)."""
        if self._parent_track_ids is None:
            track = self.track_ids()
            parent_rows = self._parent_rows()
            starts = self._branch_starts()
            out = np.full(len(self), NO_PARENT, dtype=np.int64)
            linked_start = starts & (parent_rows >= 0)
            out[linked_start] = track[parent_rows[linked_start]]
            # propagate the branch's parent track to every node of the branch
            first_row = self._branch_first_row()
            out = out[first_row]
            self._parent_track_ids = out
        return self._parent_track_ids

    def track_graph_dict(self) -> dict[int, list[int]]:
        """``{daughter_track: [mother_track]}`` as napari's Tracks layer expects."""
        track = self.track_ids()
        parent_track = self.parent_track_ids()
        starts = self._branch_starts() & (parent_track != NO_PARENT)
        return {int(d): [int(m)] for d, m in zip(track[starts], parent_track[starts], strict=True)}

    def to_napari_tracks(self) -> tuple[np.ndarray, dict[int, list[int]]]:
        """``(data, graph)`` for ``napari.layers.Tracks``: data rows are ``[track_id, t, z, y, x]``.

        Rows are sorted by track id, then time, as the Tracks layer requires.
        """
        track = self.track_ids()
        order = np.lexsort((self._cols["t"], track))
        data = np.column_stack(
            [track, self._cols["t"], self._cols["z"], self._cols["y"], self._cols["x"]]
        ).astype(np.float64)[order]
        return data, self.track_graph_dict()

    def to_dataframe(self) -> pd.DataFrame:
        """All nodes as a table in CSV column order, then any extra columns."""
        data: dict[str, np.ndarray] = {}
        for name in CSV_COLUMNS:
            data[name] = self[name]
        for name in self._cols:
            if name not in data:
                data[name] = self._cols[name]
        return pd.DataFrame(data)

    # ------------------------------------------------------------------ mutations
    def add_nodes(self, **columns: ArrayLike) -> np.ndarray:
        """Append nodes; ids are assigned when ``id`` is not given. Returns the new ids."""
        n = _common_length(columns)
        if "id" not in columns:
            columns["id"] = np.arange(self.next_id(), self.next_id() + n, dtype=np.int64)
        new = _normalise_columns(columns, extra=self._extra_columns())
        merged = {name: np.concatenate([self._cols[name], new[name]]) for name in self._cols}
        for name in new:
            if name not in merged:
                merged[name] = np.concatenate([_filled(len(self), new[name].dtype), new[name]])
        before = self._cols
        self._cols = merged
        self._invalidate()
        try:
            self._check_unique_ids()
            self._validate_rows(np.arange(len(before["id"]), len(self)))
        except GraphError:
            self._cols = before
            self._invalidate()
            raise
        self.changed.emit(GraphChange("add", new["id"].copy()))
        return new["id"].copy()

    def remove_nodes(self, ids: Iterable[int] | np.ndarray) -> None:
        """Delete nodes; their children lose their parent."""
        ids_arr = np.unique(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids))
        rows = self.index_of(ids_arr)
        keep = np.ones(len(self), dtype=bool)
        keep[rows] = False
        orphaned = np.isin(self._cols["parent_id"], ids_arr)
        self._cols["parent_id"][orphaned] = NO_PARENT
        self._cols["link_score"][orphaned] = np.nan
        self._cols = {name: col[keep] for name, col in self._cols.items()}
        self._invalidate()
        self.changed.emit(GraphChange("remove", ids_arr))

    def set_parent(self, child_ids: Iterable[int] | int, parent_ids: Iterable[int] | int) -> None:
        """Set the parent of each child (-1 unlinks). Raises :class:`GraphError` on a bad edge."""
        child = np.atleast_1d(np.asarray(child_ids, dtype=np.int64))
        parent = np.broadcast_to(np.asarray(parent_ids, dtype=np.int64), child.shape)
        if len(np.unique(child)) != len(child):
            raise GraphError(
                f"a node can have only one parent; repeated child ids {_fmt_ids(child)}"
            )
        rows = self.index_of(child)
        old = self._cols["parent_id"][rows].copy()
        self._cols["parent_id"][rows] = parent
        self._invalidate()
        try:
            self._validate_rows(rows)
        except GraphError:
            self._cols["parent_id"][rows] = old
            self._invalidate()
            raise
        self.changed.emit(GraphChange("link", child.copy()))

    def set_values(self, column: str, ids: Iterable[int] | int, values: ArrayLike) -> None:
        """Set one attribute of some nodes (use :meth:`set_parent` for ``parent_id``)."""
        if column in ("id", "parent_id", "track_id", "parent_track_id"):
            raise GraphError(f"column {column!r} cannot be set with set_values")
        rows = self.index_of(ids)
        if column in self._cols:
            self._cols[column][rows] = values
        else:  # a new float column, NaN elsewhere; added only once the values fit
            created = np.full(len(self), np.nan, dtype=np.float64)
            created[rows] = values
            self._cols[column] = created
        if column == "t":
            self._invalidate()
            self._validate_rows(np.arange(len(self)))
        self.changed.emit(GraphChange("values", np.asarray(self.ids[rows]), column))

    def drop_column(self, column: str) -> None:
        """Remove an extra column, as undoing the edit that created it does (core columns stay)."""
        if column in CORE_COLUMNS:
            raise GraphError(f"core column {column!r} cannot be removed")
        if column not in self._cols:
            raise GraphError(
                f"TrackGraph has no column {column!r} to remove; "
                f"columns are {', '.join(self.columns)}"
            )
        del self._cols[column]
        self.changed.emit(GraphChange("values", self.ids.copy(), column))

    def replace(self, other: TrackGraph) -> None:
        """Take over the contents of ``other`` (one ``reset`` change)."""
        self._cols = {k: v.copy() for k, v in other._cols.items()}
        self._invalidate()
        self.changed.emit(GraphChange("reset", self.ids.copy()))

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check ids are unique, parents exist and are earlier, and no node has > 2 children."""
        ids = self.ids
        if len(ids) and ids.min() < 0:
            raise GraphError(f"node ids must be >= 0; found {_fmt_ids(ids[ids < 0])}")
        self._check_unique_ids()
        self._validate_rows(np.arange(len(self)))

    def _check_unique_ids(self) -> None:
        _, sorted_ids = self._sorted_index()
        repeated = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
        if len(repeated):
            raise GraphError(f"node ids must be unique; repeated: {_fmt_ids(np.unique(repeated))}")

    def _validate_rows(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        ids = self.ids
        parent_ids = self._cols["parent_id"][rows]
        linked = parent_ids != NO_PARENT
        if not np.any(linked):
            return
        child_rows = rows[linked]
        _, sorted_ids = self._sorted_index()
        pos = np.searchsorted(sorted_ids, parent_ids[linked])
        ok = (pos < len(sorted_ids)) & (
            sorted_ids[np.minimum(pos, len(sorted_ids) - 1)] == parent_ids[linked]
        )
        if not np.all(ok):
            bad = child_rows[~ok]
            raise GraphError(
                f"parent id(s) {_fmt_ids(self._cols['parent_id'][bad])} of node(s) "
                f"{_fmt_ids(ids[bad])} do not exist"
            )
        parent_rows = self._parent_rows()
        t = self._cols["t"]
        backwards = t[parent_rows[child_rows]] >= t[child_rows]
        if np.any(backwards):
            bad = child_rows[backwards]
            raise GraphError(
                "edges must go forward in time; parent is not earlier than its child for "
                f"child node(s) {_fmt_ids(ids[bad])}"
            )
        n_children = self.n_children()
        too_many = n_children > 2
        if np.any(too_many):
            raise GraphError(
                f"a node can have at most two children; node(s) {_fmt_ids(ids[too_many])} have more"
            )

    # ------------------------------------------------------------------ internals
    def _invalidate(self) -> None:
        self._sorted = None
        self._parent_rows_cache = None
        self._n_children = None
        self._track_ids = None
        self._parent_track_ids = None
        self._first_row = None

    def _extra_columns(self) -> dict[str, np.dtype]:
        return {k: v.dtype for k, v in self._cols.items() if k not in CORE_COLUMNS}

    def _sorted_index(self) -> tuple[np.ndarray, np.ndarray]:
        if self._sorted is None:
            order = np.argsort(self.ids, kind="stable")
            self._sorted = (order, self.ids[order])
        return self._sorted

    def _parent_rows(self) -> np.ndarray:
        """Row of each node's parent, -1 where it has none."""
        if self._parent_rows_cache is None:
            parent_ids = self._cols["parent_id"]
            out = np.full(len(self), -1, dtype=np.int64)
            linked = parent_ids != NO_PARENT
            if np.any(linked):
                order, sorted_ids = self._sorted_index()
                pos = np.searchsorted(sorted_ids, parent_ids[linked])
                pos = np.minimum(pos, len(sorted_ids) - 1)
                found = sorted_ids[pos] == parent_ids[linked]
                rows = np.where(found, order[pos], -1)
                out[linked] = rows
            self._parent_rows_cache = out
        return self._parent_rows_cache

    def _branch_starts(self) -> np.ndarray:
        """True where a node starts a branch: no parent, or a parent with two children."""
        parent_rows = self._parent_rows()
        starts = parent_rows < 0
        linked = ~starts
        starts[linked] = self.n_children()[parent_rows[linked]] != 1
        return starts

    def _branch_first_row(self) -> np.ndarray:
        """For each row, the row of the first node of its branch (pointer jumping, O(N log L))."""
        if self._first_row is None:
            starts = self._branch_starts()
            pointer = np.where(starts, np.arange(len(self)), self._parent_rows())
            while True:
                nxt = pointer[pointer]
                if np.array_equal(nxt, pointer):
                    break
                pointer = nxt
            self._first_row = pointer
        return self._first_row

    def _compute_track_ids(self) -> np.ndarray:
        first = self._branch_first_row()
        return self.ids[first] + 1


def _common_length(columns: Mapping[str, Any]) -> int:
    lengths = {name: len(np.atleast_1d(value)) for name, value in columns.items()}
    if len(set(lengths.values())) > 1:
        raise GraphError(f"all columns must have the same length; got {lengths}")
    return next(iter(lengths.values())) if lengths else 0


def _normalise_columns(
    columns: Mapping[str, Any], extra: Mapping[str, np.dtype] | None = None
) -> dict[str, np.ndarray]:
    """Cast given columns to their dtypes and fill missing optional ones with defaults."""
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        raise GraphError(f"missing required column(s): {', '.join(missing)}")
    n = _common_length(columns)
    out: dict[str, np.ndarray] = {}
    for name, dtype in CORE_COLUMNS.items():
        if name in columns:
            values = np.atleast_1d(np.asarray(columns[name]))
            if name == "approved":
                values = np.asarray(values, dtype=np.float64)
                values = np.nan_to_num(values, nan=0.0) != 0
            elif (
                np.issubdtype(dtype, np.integer)
                and values.dtype.kind == "f"
                and (np.any(~np.isfinite(values)) or np.any(values != np.round(values)))
            ):
                raise GraphError(f"column {name!r} must hold whole numbers")
            out[name] = values.astype(dtype, copy=True)
        else:
            out[name] = np.full(n, DEFAULTS[name], dtype=dtype)
    for name, value in columns.items():
        if name not in out:
            values = np.atleast_1d(np.asarray(value))
            if values.dtype.kind not in "biuf":
                raise GraphError(f"extra column {name!r} must be numeric, got {values.dtype}")
            out[name] = values.astype(np.float64 if values.dtype.kind == "f" else values.dtype)
    for name, dtype in (extra or {}).items():
        if name not in out:
            out[name] = _filled(n, dtype)
    return out


def _filled(n: int, dtype: np.dtype) -> np.ndarray:
    """``n`` missing values of an extra column: NaN for floats, 0 (False) otherwise."""
    return np.full(n, np.nan if dtype.kind == "f" else 0, dtype=dtype)


def _fmt_ids(ids: np.ndarray, limit: int = 10) -> str:
    ids = np.asarray(ids).ravel()
    shown = ", ".join(str(int(i)) for i in ids[:limit])
    return shown + (f" ... ({len(ids)} in all)" if len(ids) > limit else "")
