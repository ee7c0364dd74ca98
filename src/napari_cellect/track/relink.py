"""Re-linking that keeps the corrections.

:func:`relink` tracks the cached detections again with the (tuned) model while keeping every
approved link, approved track start and approved (possibly hand-placed) node, and marks what
changed for review; :func:`load_pinned` reads the approved links of a tracks file. A parent
whose one child a person approved (and that has no other), or that a person marked as not
dividing, gets no second child from re-linking (:func:`no_division_ids`).

:func:`relink_keeping_work` is the rule the session, the Fine-tune widget and
``cellect track --keep-approved`` all follow: :func:`relink`, then the division scores a person
set stay, and nodes that no changed link touches keep their old values, so a re-link changes
only what it re-linked.

An approved node that matches no detection (placed by hand, or moved) becomes a synthetic
detection (:func:`synthetic_detections`); fine-tuning
(:mod:`napari_cellect.train.finetune_rows`) inserts the same ones, so training and re-linking
see the same inputs. No torch here: the model is only asked for its candidate scorers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_cellect.errors import InputError
from napari_cellect.progress import OnStep, Progress
from napari_cellect.settings.linking import LinkingConfig
from napari_cellect.track.corrections import CorrectionSet
from napari_cellect.track.detections import Detections
from napari_cellect.track.graph import NO_PARENT, TrackGraph
from napari_cellect.track.link import link_sequence
from napari_cellect.track.matching import MatchConfig, match_to_detections, table_positions
from napari_cellect.track.merge import merge_duplicates
from napari_cellect.track.scoring_protocol import nearest_candidates

if TYPE_CHECKING:
    from napari_cellect.model.bundle import ModelBundle

logger = logging.getLogger(__name__)

#: Extra TrackGraph column set by :func:`relink`: True where a node's incoming link changed.
CHANGED_COLUMN = "changed"


def relink(
    detections: Sequence[Detections],
    bundle: ModelBundle,
    graph: TrackGraph,
    config: LinkingConfig | None = None,
    z_ratio: float = 1.0,
    *,
    corrections: CorrectionSet | None = None,
    merge: bool = True,
    match: MatchConfig | None = None,
    progress: OnStep[Progress] | None = None,
) -> tuple[TrackGraph, np.ndarray]:
    """Link the detections again with ``bundle``, keeping every approved link and node.

    Each frame's raw detections are merged (unless ``merge`` is False) and matched to the old
    graph's nodes (Hungarian within a radius, ``match``); a matched detection keeps the node's
    id, so unchanged links keep their ids. Approved nodes and the parents of approved links that
    match no detection are inserted as synthetic detections (:func:`synthetic_detections`),
    approved nodes keep their position, and approved links (and approved track starts) are
    pinned in :func:`~napari_cellect.track.link.link_sequence`; everything else is solved again.
    With ``corrections``, detections at the positions of deleted false detections are dropped,
    so they do not come back.

    Divisions a person ruled out stay ruled out: the nodes of :func:`no_division_ids` (a parent
    with exactly one child, which is approved, unless ``corrections`` label it dividing; and
    every node ``corrections`` label not dividing) are passed to ``link_sequence`` as
    ``no_division``, so the scorer cannot give them a second child.

    Returns ``(new graph, changed links)``: the (L, 2) ``(parent, child)`` links of the new graph
    that the old one lacks. The new graph's extra column ``changed`` is True where a node's
    incoming link differs from before (or the node is new). ``progress`` sees the linking
    steps (a callback that raises stops the run).
    """
    match = match or MatchConfig()
    if not (np.isfinite(z_ratio) and z_ratio > 0):
        raise InputError(f"z_ratio: expected a finite number > 0, found {z_ratio}")
    frames = sorted(detections, key=lambda d: d.t)
    times = [d.t for d in frames]
    link_cfg = config if config is not None else bundle.thresholds.link
    merge_cfg = bundle.thresholds.merge
    merge_scorer = bundle.candidate_scorer("merge") if merge else None
    approved = graph["approved"]
    parent = graph["parent_id"]
    required = approved.copy()
    has_parent = approved & (parent != NO_PARENT)
    if np.any(has_parent):
        required[graph.index_of(parent[has_parent])] = True
    outside = np.setdiff1d(graph["t"][required], times)
    if len(outside):
        raise InputError(
            f"approved nodes lie in frame(s) {outside[:10].tolist()} that have no detections; "
            "pass the detections of every frame of the tracks"
        )
    dim = next((d.embedding_dim for d in frames if len(d)), bundle.link_config.embedding_dim)
    next_id = graph.next_id()
    per_frame, ids = [], []
    positions = graph.positions()
    removed = corrections.removed if corrections is not None else None
    for det in frames:
        dets = merge_duplicates(det, merge_scorer, merge_cfg, z_ratio)[0] if merge else det
        rows = graph.frame(det.t)
        det_of_node = match_to_detections(
            dets, positions[rows], graph["radius"][rows], z_ratio, match
        )
        frame_ids = np.full(len(dets), -1, np.int64)
        hit = det_of_node >= 0
        frame_ids[det_of_node[hit]] = graph.ids[rows[hit]]
        # approved nodes keep the position a person confirmed
        keep_pos = hit & approved[rows]
        if np.any(keep_pos):
            moved = dets.positions.copy()
            moved[det_of_node[keep_pos]] = positions[rows[keep_pos]]
            dets = Detections(
                dets.t, moved, dets.embeddings, dets.radius, dets.division, dets.score
            )
        drop = np.zeros(len(dets), bool)
        if removed is not None and np.any(removed["t"] == det.t):
            gone = removed["t"] == det.t
            free = np.flatnonzero(frame_ids < 0)
            hit_removed = match_to_detections(
                dets.subset(free),
                table_positions(removed, gone),
                removed["radius"][gone],
                z_ratio,
                match,
            )
            drop[free[hit_removed[hit_removed >= 0]]] = True
        new = (frame_ids < 0) & ~drop
        frame_ids[new] = np.arange(next_id, next_id + int(new.sum()))
        next_id += int(new.sum())
        dets, frame_ids = dets.subset(~drop), frame_ids[~drop]
        missing = rows[~hit & required[rows]]
        if len(missing):
            extra = synthetic_detections(
                dets, positions[missing], graph["radius"][missing], z_ratio, dim
            )
            dets = Detections.concat([dets, extra]) if len(dets) else extra
            frame_ids = np.concatenate([frame_ids, graph.ids[missing]])
        per_frame.append(dets)
        ids.append(frame_ids)
    lost = int(np.count_nonzero(~np.isin(graph.ids, np.concatenate(ids) if ids else [])))
    if lost:
        logger.info("relink: %d unapproved node(s) of the old tracks match no detection now", lost)
    rows = np.flatnonzero(approved)
    pinned = np.stack([parent[rows], graph.ids[rows]], axis=1)
    no_division = no_division_ids(graph, corrections)
    kept = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    present = np.isin(no_division, kept)
    if not np.all(present):  # unapproved nodes that no detection matches any more
        logger.debug("relink: %d node(s) that must not divide are gone", int((~present).sum()))
    new_graph = link_sequence(
        per_frame,
        bundle.candidate_scorer("link"),
        link_cfg,
        z_ratio,
        pinned_edges=pinned,
        node_ids=ids,
        progress=progress,
        no_division=no_division[present],
    )
    return _mark_changed(new_graph, graph)


@dataclass(frozen=True)
class Relinked:
    """A re-link: the new tracks and the links that differ from the old ones."""

    graph: TrackGraph
    changed: np.ndarray
    """(L, 2) ``(parent, child)`` links of the new tracks that the old ones lack."""
    removed: np.ndarray
    """(L, 2) ``(parent, child)`` links of the old tracks that the new ones lack."""


def relink_keeping_work(
    detections: Sequence[Detections],
    bundle: ModelBundle,
    graph: TrackGraph,
    z_ratio: float,
    *,
    corrections: CorrectionSet | None = None,
    progress: OnStep[Progress] | None = None,
) -> Relinked:
    """Re-link ``graph`` (not modified) with ``bundle`` and its linking thresholds, keeping
    everything a person did.

    :func:`relink` (approved links and nodes kept, deleted detections stay deleted, divisions a
    person ruled out stay ruled out); then the division scores a person set (the nodes the
    corrections label as dividing or not) are kept, where the linker would put the model's
    prediction, and nodes that no changed link touches keep their old values (position,
    scores, link margin...), so the review queue moves only where the links changed.
    """
    new, changed = relink(
        detections, bundle, graph, None, z_ratio, corrections=corrections, progress=progress
    )
    if corrections is not None and len(corrections.division_nodes):
        marked = corrections.division_nodes[
            np.isin(corrections.division_nodes, new.ids)
            & np.isin(corrections.division_nodes, graph.ids)
        ]
        if len(marked):
            new.set_values(
                "division_score", marked, graph["division_score"][graph.index_of(marked)]
            )
    removed = _missing_links(graph, new)
    _keep_untouched(graph, new, np.concatenate([changed, removed]))
    return Relinked(new, changed, removed)


def _missing_links(old: TrackGraph, new: TrackGraph) -> np.ndarray:
    """The ``(parent, child)`` links of ``old`` that ``new`` lacks (say a gap a deletion
    bridged that the linker does not make again)."""
    edges = old.edges().reshape(-1, 2)
    if len(edges) == 0:
        return edges
    kept = np.isin(edges[:, 1], new.ids)
    same = np.zeros(len(edges), bool)
    same[kept] = new["parent_id"][new.index_of(edges[kept, 1])] == edges[kept, 0]
    return edges[~same]


def _keep_untouched(old: TrackGraph, new: TrackGraph, links: np.ndarray) -> None:
    """Nodes of both graphs that none of ``links`` touches keep their old values."""
    touched = np.unique(links.reshape(-1))
    ids = new.ids[np.isin(new.ids, old.ids) & ~np.isin(new.ids, touched)]
    if len(ids) == 0:
        return
    rows = old.index_of(ids)
    for column in new.columns:
        if column in ("id", "parent_id", "t", CHANGED_COLUMN) or column not in old.columns:
            continue
        new.set_values(column, ids, np.asarray(old[column])[rows])


def no_division_ids(graph: TrackGraph, corrections: CorrectionSet | None = None) -> np.ndarray:
    """Ids of the nodes of ``graph`` that re-linking must not let divide.

    A parent whose approved children are exactly one and that has exactly one child: the person
    confirmed a lone child (as :mod:`~napari_cellect.track.correction_labels` labels it, not
    dividing). With ``corrections``, its division labels take precedence: a node labelled
    dividing may get a second child even with one approved child, and every node labelled not
    dividing is added. Nodes not in ``graph`` are left out, and so are nodes with two approved
    children (the approved links are pinned and win; a warning names them).
    """
    approved = graph["approved"]
    parent = graph["parent_id"]
    linked = approved & (parent != NO_PARENT)
    mothers = parent[linked]
    mothers, n_approved = np.unique(mothers[np.isin(mothers, graph.ids)], return_counts=True)
    n_children = graph.n_children()[graph.index_of(mothers)] if len(mothers) else n_approved
    lone = mothers[(n_approved == 1) & (n_children == 1)]
    if corrections is None or len(corrections.division_nodes) == 0:
        return lone.astype(np.int64)
    nodes, divides = corrections.division_nodes, corrections.division_divides
    known = np.isin(nodes, graph.ids)
    out = np.union1d(np.setdiff1d(lone, nodes[known & divides]), nodes[known & ~divides])
    two_approved = mothers[n_approved >= 2]
    clash = np.intersect1d(out, two_approved)
    if len(clash):
        logger.warning(
            "relink: node(s) %s are labelled not dividing but have two approved "
            "children; the approved links are kept",
            clash[:10].tolist(),
        )
        out = np.setdiff1d(out, clash)
    return out.astype(np.int64)


def synthetic_detections(
    dets: Detections, positions: np.ndarray, radius: np.ndarray, z_ratio: float, embedding_dim: int
) -> Detections:
    """Detections for nodes the detector did not find: the nodes' positions and radii (the
    nearest detection's radius where a node has none), the nearest detection's embedding,
    division probabilities 0 and score 1."""
    n = len(positions)
    positions = np.asarray(positions, np.float64).reshape(-1, 3)
    if len(dets):
        nearest = nearest_candidates(positions, dets.positions, 1, z_ratio)[0][:, 0]
        embeddings = dets.embeddings[nearest]
        fallback = dets.radius[nearest].astype(np.float64)
    else:
        embeddings = np.zeros((n, embedding_dim), np.float32)
        fallback = np.full(n, np.nan)
    radius = np.asarray(radius, np.float64)
    radius = np.where(np.isfinite(radius) & (radius > 0), radius, fallback)
    return Detections(
        t=dets.t,
        positions=positions,
        embeddings=embeddings,
        radius=np.nan_to_num(radius, nan=0.0),
        division=np.zeros((n, 2), np.float32),
        score=np.ones(n, np.float32),
    )


def load_pinned(csv_path: str | os.PathLike[str]) -> tuple[TrackGraph, np.ndarray]:
    """Read a tracks file and its approved links, for re-linking that keeps them.

    Returns ``(graph, pinned)``: ``pinned`` is (P, 2) ``(parent_id, child_id)`` of every
    approved node, with parent -1 for an approved track start, as
    :func:`~napari_cellect.track.link.link_sequence` takes ``pinned_edges``. The ids are the
    file's node ids: to pin them in a new tracking run the new detections must carry those ids,
    which is what :func:`relink` does (it matches the file's nodes to the detections and inserts
    approved nodes no detection matches).
    """
    from napari_cellect.data.annotations import read_tracks

    graph = read_tracks(csv_path)
    rows = np.flatnonzero(graph["approved"])
    pinned = np.stack([graph["parent_id"][rows], graph.ids[rows]], axis=1).astype(np.int64)
    logger.info("%s: %d approved link(s) and track start(s) to keep", csv_path, len(pinned))
    return graph, pinned


def _mark_changed(new: TrackGraph, old: TrackGraph) -> tuple[TrackGraph, np.ndarray]:
    """Add the ``changed`` column and list the new links the old graph lacks."""
    known = np.isin(new.ids, old.ids)
    old_parent = np.full(len(new), NO_PARENT - 1, np.int64)
    if np.any(known):
        old_parent[known] = old["parent_id"][old.index_of(new.ids[known])]
    changed = new["parent_id"] != old_parent
    columns = {name: new[name] for name in new.columns}
    columns[CHANGED_COLUMN] = changed
    out = TrackGraph.from_arrays(validate=False, **columns)
    linked = changed & (new["parent_id"] != NO_PARENT)
    links = np.stack([new["parent_id"][linked], new.ids[linked]], axis=1)
    logger.info("relink: %d link(s) changed", len(links))
    return out, links
