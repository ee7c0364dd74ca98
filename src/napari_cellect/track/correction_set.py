"""The :class:`CorrectionSet` (training labels derived from a person's corrections), its JSON file
``corrections.json`` (:func:`save_corrections`, :func:`load_corrections`) and the pair and table
helpers the label builders share. No torch, no Qt; how labels are made is in
:mod:`napari_cellect.track.correction_labels`."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from napari_cellect.data.atomic import atomic_write
from napari_cellect.errors import ContradictoryCorrections, InputError, NotEnoughCorrections

logger = logging.getLogger(__name__)

CORRECTIONS_NAME = "corrections.json"
CORRECTIONS_FORMAT = "napari-cellect-corrections"
CORRECTIONS_VERSION = 1
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
#: Columns of :attr:`CorrectionSet.removed`: where a deleted node was, as in the node table.
REMOVED_COLUMNS: dict[str, np.dtype] = {
    name: NODE_COLUMNS[name] for name in ("id", "t", "z", "y", "x", "radius")
}
#: How many conflicts an error message lists.
_MAX_LISTED = 10


def empty_pairs() -> np.ndarray:
    """An empty (0, 2) array of node id pairs."""
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
    positive_links: np.ndarray = field(default_factory=empty_pairs)
    """(P, 2) approved ``(parent, child)`` links."""
    broken_links: np.ndarray = field(default_factory=empty_pairs)
    """(B, 2) links the user broke or replaced."""
    candidate_negatives: np.ndarray = field(default_factory=empty_pairs)
    """(C, 2) ``(parent, node)``: rivals of approved links and of approved track starts."""
    starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Approved nodes without a parent (confirmed track starts)."""
    division_nodes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Nodes with a division label."""
    division_divides: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    """Per :attr:`division_nodes`: True = divides before the next frame."""
    duplicates: np.ndarray = field(default_factory=empty_pairs)
    """(M, 2) ``(kept node id, removed node id)``: merge positives."""
    distinct: np.ndarray = field(default_factory=empty_pairs)
    """(D, 2) node id pairs of one frame that are different cells: merge negatives."""
    z_ratio: float = 1.0
    """The anisotropy the distances were measured with."""
    source: str = ""
    """Where the corrections come from (a tracks file, a session)."""
    created: str = ""
    """ISO 8601 time the set was built."""

    def __post_init__(self) -> None:
        self.nodes = column_table(self.nodes, NODE_COLUMNS, "nodes")
        self.removed = column_table(self.removed, REMOVED_COLUMNS, "removed")
        for name in (
            "positive_links",
            "broken_links",
            "candidate_negatives",
            "duplicates",
            "distinct",
        ):
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
        return np.unique(both, axis=0) if len(both) else empty_pairs()

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
        if self.is_empty() and len(self.removed["id"]):
            frames = np.unique(self.removed["t"])
            raise NotEnoughCorrections(
                f"the corrections only delete cells ({len(self.removed['id'])} in frame(s) "
                f"{', '.join(map(str, frames[:10].tolist()))}), with no cell approved near them: "
                "a frame corrected to have no cells teaches no link, division or merge. Approve "
                "the right links of the frames around it too"
            )
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
        positive = unique_pairs(np.concatenate([self.positive_links, other.positive_links]))
        broken = unique_pairs(np.concatenate([self.broken_links, other.broken_links]))
        conflicts = [
            f"link {p} -> {c} is both approved and broken"
            for p, c in intersect_pairs(positive, broken)
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
        raise_conflicts(conflicts)
        candidates = np.concatenate([self.candidate_negatives, other.candidate_negatives])
        candidates = minus_pairs(unique_pairs(candidates), positive)
        return CorrectionSet(
            nodes=nodes,
            removed=removed,
            positive_links=positive,
            broken_links=broken,
            candidate_negatives=candidates,
            starts=np.union1d(self.starts, other.starts),
            division_nodes=np.fromiter(labels.keys(), np.int64, len(labels)),
            division_divides=np.fromiter(labels.values(), bool, len(labels)),
            duplicates=unique_pairs(np.concatenate([self.duplicates, other.duplicates])),
            distinct=unique_pairs(np.concatenate([self.distinct, other.distinct])),
            z_ratio=self.z_ratio,
            source=" + ".join(s for s in (self.source, other.source) if s),
            created=now_iso(),
        )


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


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
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


def table_xyz(table: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N, 3) z, y, x of a table with those columns."""
    columns = [np.asarray(table[c], np.float64) for c in ("z", "y", "x")]
    return np.stack(columns, axis=1).reshape(-1, 3)


def column_table(
    data: Mapping[str, Any], columns: Mapping[str, np.dtype], what: str
) -> dict[str, np.ndarray]:
    """``data``'s columns as arrays of ``columns``' dtypes (InputError naming ``what`` for a
    missing key column or columns of different lengths; optional columns default to NaN/False)."""
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
        return empty_pairs()
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(f"{name}: expected (N, 2) pairs of node ids, found shape {arr.shape}")
    return arr.astype(np.int64)


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """The distinct rows of (N, 2) id pairs, sorted."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    return np.unique(pairs, axis=0) if len(pairs) else empty_pairs()


def _pair_keys(pairs: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pairs, np.int64).view([("a", np.int64), ("b", np.int64)]).ravel()


def intersect_pairs(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    """The pairs that are rows of both ``a`` and ``b``."""
    if len(a) == 0 or len(b) == 0:
        return []
    both = np.intersect1d(_pair_keys(a), _pair_keys(b))
    return [(int(p), int(c)) for p, c in both.tolist()]


def minus_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows of ``a`` that are not rows of ``b``."""
    if len(a) == 0 or len(b) == 0:
        return a
    return a[~np.isin(_pair_keys(a), _pair_keys(b))]


def _rows_of(ids: np.ndarray, wanted: ArrayLike, what: str) -> np.ndarray:
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


def raise_conflicts(conflicts: Sequence[str]) -> None:
    """Raise :class:`ContradictoryCorrections` listing ``conflicts`` (none: do nothing)."""
    if not conflicts:
        return
    shown = "; ".join(conflicts[:_MAX_LISTED])
    more = f"; ... ({len(conflicts)} in all)" if len(conflicts) > _MAX_LISTED else ""
    raise ContradictoryCorrections(
        f"contradictory corrections: {shown}{more}. Undo or redo the conflicting edits, then try "
        "again",
        tuple(conflicts),
        tuple(_conflict_node(c) for c in conflicts),
    )


def _conflict_node(conflict: str) -> int:
    """The node a conflict sentence is about: ``node N ...``, or the child of ``link P -> C``."""
    found = re.match(r"(?:node (\d+)|link -?\d+ -> (\d+))", conflict)
    if found is None:
        raise ValueError(f"a conflict must start with 'node N' or 'link P -> C': {conflict!r}")
    return int(found.group(1) or found.group(2))
