"""How well a model tracks the cells a person corrected: the full pipeline (detections above the
detection threshold -> merge -> link with the model's scorers) on the frame pairs that end in
corrected frames, scored against the corrections only (for the fine-tuning guard,
:mod:`napari_cellect.train.finetune_guard`). No torch: the model is asked for its candidate
scorers and thresholds only.

Only what a person looked at counts (partial corrections): the cells with an approved incoming
link or an approved track start are the reviewed cells; their links, the division labels of the
frame before, and the deleted false detections of their frames are scored. A cell nobody
reviewed is neither a missed cell nor a false one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from napari_cellect.track.correction_set import CorrectionSet, table_xyz
from napari_cellect.track.detections import Detections
from napari_cellect.track.graph import NO_PARENT, TrackGraph
from napari_cellect.track.link import link_sequence
from napari_cellect.track.matching import MatchConfig, match_to_detections
from napari_cellect.track.merge import merge_duplicates


@dataclass(frozen=True)
class CorrectionScores:
    """Counts of the pipeline's agreement with the reviewed cells (sums over frame pairs)."""

    links: int = 0
    """Reviewed links (approved links into reviewed cells)."""
    links_found: int = 0
    false_links: int = 0
    """Links the pipeline made into reviewed cells that are not the reviewed ones (a link into
    an approved track start, or from the wrong parent)."""
    divisions: int = 0
    """Mothers labelled dividing."""
    divisions_found: int = 0
    false_divisions: int = 0
    """Predicted divisions of mothers labelled not dividing."""
    cells: int = 0
    """Reviewed cells."""
    cells_found: int = 0
    false_cells: int = 0
    """Detections where a person deleted a false detection."""
    wrong: tuple[tuple[str, int, int], ...] = field(default=(), compare=False, repr=False)
    """The errors event by event, ``(kind, id, errors)`` for each event with errors: kind
    ``link`` (a reviewed cell's incoming link; a wrong parent is 2 errors, missed and false),
    ``cell`` (a reviewed cell not detected), ``division`` (a labelled mother) or ``deleted`` (a
    deleted detection found again), id the node's. Their errors sum to :attr:`errors`; two
    models scored on the same corrections are compared event by event (paired) with them."""

    def __add__(self, other: CorrectionScores) -> CorrectionScores:
        return CorrectionScores(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(self))
        )

    @property
    def link_errors(self) -> int:
        return self.links - self.links_found + self.false_links

    @property
    def division_errors(self) -> int:
        return self.divisions - self.divisions_found + self.false_divisions

    @property
    def errors(self) -> int:
        """Link, division and detection errors: what the guard minimises."""
        return (
            self.link_errors
            + self.division_errors
            + self.cells
            - self.cells_found
            + (self.false_cells)
        )

    @property
    def link_recall(self) -> float:
        return self.links_found / self.links if self.links else float("nan")

    @property
    def division_recall(self) -> float:
        return self.divisions_found / self.divisions if self.divisions else float("nan")

    @property
    def detection_recall(self) -> float:
        return self.cells_found / self.cells if self.cells else float("nan")


def score_on_corrections(
    bundle: Any,
    detections: Mapping[int, Detections] | Sequence[Detections],
    truth: CorrectionSet,
    z_ratio: float,
    frames: Sequence[int] | None = None,
    match: MatchConfig | None = None,
) -> CorrectionScores:
    """Track each frame pair ``(t - 1, t)`` of ``frames`` (default: every frame of ``truth``
    holding a reviewed cell) with ``bundle`` and score it against ``truth``.

    ``detections`` are the raw (unmerged) detections (a frame missing from them is skipped);
    ``bundle`` gives ``thresholds``, ``candidate_scorer('merge')`` and ``candidate_scorer('link')``
    (a :class:`~napari_cellect.model.bundle.ModelBundle`).
    """
    by_t = detections if isinstance(detections, Mapping) else {int(d.t): d for d in detections}
    match = match or MatchConfig()
    reviewed = np.union1d(truth.positive_links[:, 1], truth.starts)
    nodes = truth.nodes
    row_of = {int(i): r for r, i in enumerate(nodes["id"].tolist())}
    reviewed = reviewed[np.isin(reviewed, nodes["id"])]
    if frames is None:
        frames = np.unique(nodes["t"][[row_of[int(i)] for i in reviewed]]).tolist()
    thresholds = bundle.thresholds
    merge_cfg = thresholds.merge
    link_cfg = thresholds.link
    merge_scorer = bundle.candidate_scorer("merge")
    link_scorer = bundle.candidate_scorer("link")
    threshold = float(thresholds.detection.threshold)
    total = CorrectionScores()
    for t in frames:
        if t - 1 not in by_t or t not in by_t:
            continue
        pair = []
        for f in (t - 1, t):
            raw = by_t[f]
            raw = raw.subset(raw.score >= threshold)
            pair.append(merge_duplicates(raw, merge_scorer, merge_cfg, z_ratio)[0])
        graph = link_sequence(pair, link_scorer, link_cfg, z_ratio)
        total = total + _score_pair(graph, pair, truth, reviewed, t, z_ratio, match)
    return total


def _score_pair(
    graph: TrackGraph,
    pair: list[Detections],
    truth: CorrectionSet,
    reviewed: np.ndarray,
    t: int,
    z_ratio: float,
    match: MatchConfig,
) -> CorrectionScores:
    nodes = truth.nodes
    # predicted node ids: link_sequence numbers them 0, 1, ... in frame order
    pred_ids = [np.arange(len(pair[0])), np.arange(len(pair[0]), len(pair[0]) + len(pair[1]))]
    before = np.flatnonzero(nodes["t"] == t - 1)
    here = np.flatnonzero((nodes["t"] == t) & np.isin(nodes["id"], reviewed))
    # truth node -> predicted node (one-to-one), per frame
    pred_of_before = _match(pair[0], pred_ids[0], nodes, before, z_ratio, match)
    pred_of_here = _match(pair[1], pred_ids[1], nodes, here, z_ratio, match)
    truth_of_pred = {
        int(p): int(nodes["id"][r]) for r, p in zip(before, pred_of_before, strict=True) if p >= 0
    }
    true_parent = dict(
        zip(truth.positive_links[:, 1].tolist(), truth.positive_links[:, 0].tolist(), strict=True)
    )
    parent_col = dict(zip(graph.ids.tolist(), graph["parent_id"].tolist(), strict=True))
    links = found = false = 0
    wrong: list[tuple[str, int, int]] = []
    for r, p in zip(here, pred_of_here, strict=True):
        cell = int(nodes["id"][r])
        want = true_parent.get(cell, NO_PARENT)
        links += want != NO_PARENT
        got_pred = parent_col.get(int(p), NO_PARENT) if p >= 0 else NO_PARENT
        got = truth_of_pred.get(got_pred, -2) if got_pred != NO_PARENT else NO_PARENT
        hit = want != NO_PARENT and got == want
        found += hit
        extra = (not hit) and got_pred != NO_PARENT
        false += extra
        if n := int(want != NO_PARENT and not hit) + int(extra):
            wrong.append(("link", cell, n))
        if p < 0:
            wrong.append(("cell", cell, 1))
    # divisions of the mothers labelled in frame t - 1
    n_children = (
        np.bincount(
            np.maximum(graph["parent_id"], 0)[graph["parent_id"] >= 0], minlength=len(graph)
        )
        if len(graph)
        else np.zeros(0, np.int64)
    )
    divides = truth.divides
    div = div_found = div_false = 0
    for r, p in zip(before, pred_of_before, strict=True):
        label = divides.get(int(nodes["id"][r]))
        if label is None:
            continue
        predicted = p >= 0 and n_children[p] >= 2
        div += label
        div_found += label and predicted
        div_false += (not label) and predicted
        if bool(label) != bool(predicted):
            wrong.append(("division", int(nodes["id"][r]), 1))
    # deleted false detections that the pipeline detects again
    gone = truth.removed["t"] == t
    false_cells = 0
    if np.any(gone):
        free = np.setdiff1d(np.arange(len(pair[1])), pred_of_here - len(pair[0]))
        hit = match_to_detections(
            pair[1].subset(free),
            table_xyz(truth.removed)[gone],
            truth.removed["radius"][gone],
            z_ratio,
            match,
        )
        false_cells = int(np.count_nonzero(hit >= 0))
        wrong += [("deleted", int(i), 1) for i in truth.removed["id"][gone][hit >= 0].tolist()]
    return CorrectionScores(
        links,
        found,
        false,
        div,
        div_found,
        div_false,
        len(here),
        int(np.count_nonzero(pred_of_here >= 0)),
        false_cells,
        tuple(wrong),
    )


def _match(
    dets: Detections,
    ids: np.ndarray,
    nodes: dict[str, np.ndarray],
    rows: np.ndarray,
    z_ratio: float,
    match: MatchConfig,
) -> np.ndarray:
    """Predicted node id of each truth row (-1 for none)."""
    hit = match_to_detections(dets, table_xyz(nodes)[rows], nodes["radius"][rows], z_ratio, match)
    if len(ids) == 0:
        return hit  # all -1: nothing detected
    return np.where(hit >= 0, ids[np.maximum(hit, 0)], -1)
