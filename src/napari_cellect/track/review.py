"""Review queue: the links and divisions most worth a person's look, most uncertain first.

Every item has a **margin** in [-1, 1]; the smaller, the more uncertain:

- a **link** ``parent -> child``: the linker's ``link_margin`` (``p_match`` of the chosen link
  minus the best competing candidate, :class:`~napari_cellect.track.link.FrameLinks`). Where the
  graph has no ``link_margin`` column, :func:`link_margins` recomputes it by scoring the graph's
  own nodes (geometry only, or a given scorer). A link without a margin (it skips a frame, or the
  scorer never saw it) falls back to ``2 * link_score - 1``, its margin against "no link".
- a **division** (every node that may divide before the next frame): how far its
  ``division_score`` is from the division threshold, scaled to [0, 1] (0 = exactly at it).

Approved items are skipped: a link whose child is approved, a division whose node's children are
all approved. The queue follows the graph: after any edit it re-ranks on the next call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from napari_cellect.errors import InputError
from napari_cellect.settings.linking import LinkingConfig
from napari_cellect.track.detections import Detections
from napari_cellect.track.graph import NO_PARENT, GraphChange, TrackGraph
from napari_cellect.track.link import MARGIN_COLUMN, link_frame_pair
from napari_cellect.track.scoring_protocol import CandidateScorer

logger = logging.getLogger(__name__)

LINK = "link"
DIVISION = "division"
_KINDS = (LINK, DIVISION)


@dataclass(frozen=True)
class ReviewConfig:
    """What the queue holds and how divisions are judged."""

    division_threshold: float = 0.5
    """The linker's division threshold (``LinkingConfig.division_threshold``): a division score
    right at it is the most uncertain."""
    links: bool = True
    """Queue links."""
    divisions: bool = True
    """Queue divisions."""

    def __post_init__(self) -> None:
        if not 0.0 < self.division_threshold < 1.0:
            raise InputError(
                f"ReviewConfig.division_threshold: expected (0, 1), found {self.division_threshold}"
            )


@dataclass(frozen=True)
class ReviewItem:
    """One thing to review."""

    kind: str
    """``link`` or ``division``."""
    node: int
    """The child of a link, the possibly dividing node of a division."""
    parent: int
    """The parent of a link; -1 for a division."""
    t: int
    """Frame of ``node``."""
    margin: float
    """Certainty in [-1, 1]: smaller is more uncertain."""


class ReviewQueue:
    """Links and divisions of ``graph`` ranked by uncertainty (see the module docstring).

    Args:
        graph: the tracks; the queue re-ranks after every change to it.
        config: :class:`ReviewConfig`.
        margins: optional per-node link margins (rows of ``graph`` when built), used instead of
            the ``link_margin`` column, for example from :func:`link_margins`.
    """

    def __init__(
        self,
        graph: TrackGraph,
        config: ReviewConfig | None = None,
        margins: np.ndarray | None = None,
    ) -> None:
        self.graph = graph
        self.config = config or ReviewConfig()
        self._given: dict[int, float] = {}
        if margins is not None:
            margins = np.asarray(margins, np.float64).reshape(-1)
            if len(margins) != len(graph):
                raise InputError(
                    f"ReviewQueue: expected one margin per node ({len(graph)}), "
                    f"found {len(margins)}"
                )
            self._given = dict(zip(graph.ids.tolist(), margins.tolist(), strict=True))
        elif MARGIN_COLUMN not in graph.columns and self.config.links:
            computed = link_margins(graph)
            self._given = dict(zip(graph.ids.tolist(), computed.tolist(), strict=True))
        self._ranked: dict[str, np.ndarray] | None = None
        graph.changed.connect(self._on_change)

    def close(self) -> None:
        """Stop following the graph."""
        self.graph.changed.disconnect(self._on_change)

    def _on_change(self, change: GraphChange) -> None:
        self._ranked = None

    # ------------------------------------------------------------------ ranking
    def _ranking(self) -> dict[str, np.ndarray]:
        if self._ranked is None:
            self._ranked = self._rank()
        return self._ranked

    def _rank(self) -> dict[str, np.ndarray]:
        graph, cfg = self.graph, self.config
        parts = []
        if cfg.links:
            parts.append(self._link_items())
        if cfg.divisions:
            parts.append(self._division_items())
        if not parts:
            return {
                k: np.zeros(0, d)
                for k, d in (
                    ("kind", np.int64),
                    ("node", np.int64),
                    ("parent", np.int64),
                    ("t", np.int64),
                    ("margin", np.float64),
                )
            }
        items = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        order = np.lexsort((items["kind"], items["node"], items["t"], items["margin"]))
        logger.debug("review queue: %d items over %d nodes", len(order), len(graph))
        return {k: v[order] for k, v in items.items()}

    def _link_items(self) -> dict[str, np.ndarray]:
        graph = self.graph
        rows = np.flatnonzero((graph["parent_id"] != NO_PARENT) & ~graph["approved"])
        if MARGIN_COLUMN in graph.columns and not self._given:
            margin = np.asarray(graph[MARGIN_COLUMN][rows], np.float64)
        else:
            margin = np.array([self._given.get(i, np.nan) for i in graph.ids[rows].tolist()])
        score = np.asarray(graph["link_score"][rows], np.float64)
        margin = np.where(np.isfinite(margin), margin, 2.0 * score - 1.0)
        margin = np.where(np.isfinite(margin), margin, 1.0)  # nothing known: last
        return {
            "kind": np.zeros(len(rows), np.int64),
            "node": graph.ids[rows],
            "parent": graph["parent_id"][rows],
            "t": graph["t"][rows],
            "margin": np.clip(margin, -1.0, 1.0),
        }

    def _division_items(self) -> dict[str, np.ndarray]:
        graph, thr = self.graph, self.config.division_threshold
        n_children = graph.n_children()
        approved_children = np.zeros(len(graph), np.int64)
        child_rows = np.flatnonzero((graph["parent_id"] != NO_PARENT) & graph["approved"])
        if len(child_rows):
            parents = graph.index_of(graph["parent_id"][child_rows])
            approved_children = np.bincount(parents, minlength=len(graph))
        reviewed = (n_children > 0) & (approved_children == n_children)
        score = np.asarray(graph["division_score"], np.float64)
        last = graph["t"] == (graph["t"].max() if len(graph) else 0)
        rows = np.flatnonzero(~reviewed & np.isfinite(score) & ~last)
        margin = np.abs(score[rows] - thr) / max(thr, 1.0 - thr)
        return {
            "kind": np.ones(len(rows), np.int64),
            "node": graph.ids[rows],
            "parent": np.full(len(rows), NO_PARENT, np.int64),
            "t": graph["t"][rows],
            "margin": margin,
        }

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self._ranking()["node"])

    def __iter__(self) -> Iterator[ReviewItem]:
        ranked = self._ranking()
        for i in range(len(ranked["node"])):
            yield self._item(ranked, i)

    def items(self, kind: str | None = None, limit: int | None = None) -> list[ReviewItem]:
        """The ranked items (of one ``kind``), most uncertain first, at most ``limit``."""
        ranked = self._ranking()
        rows = np.arange(len(ranked["node"]))
        if kind is not None:
            rows = rows[ranked["kind"] == _kind_code(kind)]
        if limit is not None:
            rows = rows[: max(int(limit), 0)]
        return [self._item(ranked, int(i)) for i in rows]

    def next(self, after: ReviewItem | None = None) -> ReviewItem | None:
        """The most uncertain unreviewed item, or the first one ranked after ``after`` (the item
        the person just looked at and skipped); None when nothing is left."""
        ranked = self._ranking()
        n = len(ranked["node"])
        if n == 0:
            return None
        if after is None:
            return self._item(ranked, 0)
        m, t, node, kind = ranked["margin"], ranked["t"], ranked["node"], ranked["kind"]
        a_m, a_t, a_n, a_k = after.margin, after.t, after.node, _kind_code(after.kind)
        later = (m > a_m) | (
            (m == a_m)
            & ((t > a_t) | ((t == a_t) & ((node > a_n) | ((node == a_n) & (kind > a_k)))))
        )
        if not later.any():
            return None
        return self._item(ranked, int(np.argmax(later)))

    def count_unreviewed(self, threshold: float) -> int:
        """How many unreviewed items have a margin below ``threshold``."""
        return int(np.count_nonzero(self._ranking()["margin"] < threshold))

    @staticmethod
    def _item(ranked: dict[str, np.ndarray], i: int) -> ReviewItem:
        return ReviewItem(
            kind=_KINDS[int(ranked["kind"][i])],
            node=int(ranked["node"][i]),
            parent=int(ranked["parent"][i]),
            t=int(ranked["t"][i]),
            margin=float(ranked["margin"][i]),
        )


def _kind_code(kind: str) -> int:
    if kind not in _KINDS:
        raise InputError(f"review item kind: expected one of {_KINDS}, found {kind!r}")
    return _KINDS.index(kind)


def link_margins(
    graph: TrackGraph,
    detections: list[Detections] | None = None,
    scorer: CandidateScorer | None = None,
    linking: LinkingConfig | None = None,
    z_ratio: float = 1.0,
) -> np.ndarray:
    """Per-node margin of each node's incoming link (NaN where there is none), recomputed by
    scoring: the graph's links between consecutive frames are pinned in
    :func:`~napari_cellect.track.link.link_frame_pair`, which reports their margins.

    Without ``detections`` the graph's own nodes are scored (positions, radii, division scores;
    no embeddings), by default with the geometric scorer. ``detections``, when given, must hold
    one :class:`Detections` per frame whose rows are the graph's nodes of that frame in row order.
    """
    cfg = LinkingConfig() if linking is None else linking
    out = np.full(len(graph), np.nan, np.float64)
    frames = graph.frames
    by_t = {int(d.t): d for d in detections} if detections is not None else {}
    parent = graph["parent_id"]
    for t in frames.tolist():
        if t + 1 not in frames:
            continue
        rows_a, rows_b = graph.frame(t), graph.frame(t + 1)
        det_a = by_t[t] if t in by_t else _graph_detections(graph, rows_a, cfg.radius_floor)
        det_b = by_t[t + 1] if t + 1 in by_t else _graph_detections(graph, rows_b, cfg.radius_floor)
        for det, rows in ((det_a, rows_a), (det_b, rows_b)):
            if len(det) != len(rows):
                raise InputError(
                    f"link_margins: frame {det.t} has {len(rows)} nodes but {len(det)} detections"
                )
        linked = np.flatnonzero(np.isin(parent[rows_b], graph.ids[rows_a]))
        if len(linked) == 0:
            continue
        sorter = np.argsort(graph.ids[rows_a])
        src = sorter[np.searchsorted(graph.ids[rows_a], parent[rows_b[linked]], sorter=sorter)]
        links = link_frame_pair(
            det_a, det_b, scorer, cfg, z_ratio, pinned=np.stack([src, linked], axis=1)
        )
        pinned = links.pinned
        out[rows_b[links.dst_idx[pinned]]] = links.margin[pinned]
    return out


def _graph_detections(graph: TrackGraph, rows: np.ndarray, radius_floor: float) -> Detections:
    """The nodes of one frame as Detections without embeddings."""
    radius = np.asarray(graph["radius"][rows], np.float64)
    radius = np.where(np.isfinite(radius) & (radius > 0), radius, radius_floor)
    division = np.zeros((len(rows), 2), np.float32)
    division[:, 0] = np.nan_to_num(graph["division_score"][rows], nan=0.0)
    return Detections(
        t=int(graph["t"][rows[0]]) if len(rows) else 0,
        positions=graph.positions(rows),
        embeddings=np.zeros((len(rows), 0), np.float32),
        radius=radius,
        division=division,
        score=np.nan_to_num(graph["score"][rows], nan=1.0),
    )
