"""Linking detections into tracks: KD-tree candidates, scores, global assignment, TrackGraph.

For every pair of consecutive frames, each cell of the first frame is scored against its ``k``
nearest cells of the second (:class:`~napari_cellect.track.scoring_protocol.CandidateScorer`);
candidates that are too far or too unlikely are dropped, and one exact min-cost assignment
(:mod:`napari_cellect.track.assignment`) picks the links with costs ``-log p_match``, a second
child only where ``p_divide`` clears ``division_threshold`` (at an extra ``-log p_divide``), and
constant appear/disappear costs (all in :class:`LinkingConfig`), and only into two children that
are a plausible pair of daughters (:mod:`napari_cellect.track.division_geometry`; a nucleus split
in two by the detector is no division). This replaces CELLECT's greedy,
order-dependent loop (docs/method.md §7.1, §10 item 4). Optional gap closing then joins a track
that ends at frame f to one that starts at frame f + 2, again by an exact assignment.

Pinned edges (usually the links a person approved) are kept exactly, whatever the scorer says.
Nodes named in ``no_division`` (usually parents whose single child a person approved, or that a
person marked as not dividing) never get a second child, whatever ``p_divide`` says.

The settings are :class:`napari_cellect.settings.linking.LinkingConfig`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_cellect.errors import GraphError, InputError
from napari_cellect.progress import OnStep, Progress
from napari_cellect.settings.linking import LinkingConfig
from napari_cellect.track.assignment import AssignmentProblem, AssignmentResult, solve_assignment
from napari_cellect.track.detections import Detections
from napari_cellect.track.division_evidence import division_probability, with_daughter_floor
from napari_cellect.track.division_geometry import plausible_daughters
from napari_cellect.track.graph import TrackGraph
from napari_cellect.track.scoring_protocol import (
    CandidateScorer,
    GeometricScorer,
    nearest_candidates,
)

logger = logging.getLogger(__name__)

#: Extra TrackGraph column: uncertainty of each node's incoming link (see :class:`FrameLinks`).
MARGIN_COLUMN = "link_margin"


@dataclass(frozen=True)
class FrameLinks:
    """The links chosen between two frames, as parallel arrays sorted by target index."""

    src_idx: np.ndarray
    """(L,) index of the parent in the first frame."""
    dst_idx: np.ndarray
    """(L,) index of the child in the second frame."""
    score: np.ndarray
    """(L,) the scorer's ``p_match`` of each link; NaN for a pinned link it never scored."""
    is_division: np.ndarray
    """(L,) True where the parent has two children."""
    margin: np.ndarray
    """(L,) ``p_match`` minus the best competing candidate (another child candidate of the
    parent, other than its chosen sibling, or another parent candidate of the child; 0 when
    there is none). Small or negative margins mark links worth a person's review."""
    pinned: np.ndarray
    """(L,) True for pinned links."""
    p_divide: np.ndarray
    """(n_a,) the scorer's division probability of every cell of the first frame."""
    cost: float
    """Objective value of the assignment (pinned links not counted)."""


@dataclass(frozen=True)
class _Candidates:
    cand_idx: np.ndarray  # (n_a, k) into det_b, -1 padded
    p_match: np.ndarray  # (n_a, k)
    allowed: np.ndarray  # (n_a, k) passes gate and threshold
    p_divide: np.ndarray  # (n_a,)


def link_frame_pair(
    det_a: Detections,
    det_b: Detections,
    scorer: CandidateScorer | None,
    config: LinkingConfig | None,
    z_ratio: float,
    pinned: np.ndarray | Sequence[tuple[int, int]] | None = None,
    *,
    fixed_children: np.ndarray | None = None,
    fixed_parent: np.ndarray | None = None,
    no_division: np.ndarray | None = None,
) -> FrameLinks:
    """Link the cells of ``det_a`` to those of ``det_b`` (one exact assignment).

    Args:
        det_a, det_b: detections of two consecutive frames.
        scorer: a :class:`CandidateScorer`; ``None`` uses :meth:`GeometricScorer.for_link`.
        config: gates, thresholds and costs; ``None``: the defaults.
        z_ratio: z spacing over xy spacing.
        pinned: (P, 2) ``(index in det_a, index in det_b)`` links that must be kept.
        fixed_children: (n_a,) children that cells of ``det_a`` already have elsewhere (for
            example a pinned link that skips a frame); they count towards the two-child limit.
        fixed_parent: (n_b,) True where a cell of ``det_b`` already has its parent elsewhere
            (or is pinned as a track start).
        no_division: (n_a,) True where a cell of ``det_a`` must not divide: its second-child
            option is removed (``inf`` division cost) whatever ``p_divide`` says; it may still
            get one child. ``None`` forbids nothing.
    """
    scorer = GeometricScorer.for_link() if scorer is None else scorer
    config = LinkingConfig() if config is None else config
    n_a, n_b = len(det_a), len(det_b)
    if no_division is not None:
        no_division = np.asarray(no_division)
        if no_division.dtype != bool or no_division.shape != (n_a,):
            raise InputError(
                f"no_division: expected a boolean array of shape ({n_a},), one per "
                f"cell of det_a; found {no_division.dtype} array of shape "
                f"{no_division.shape}"
            )
    pinned_arr = _as_pairs(pinned, "pinned")
    for col, size, name in ((0, n_a, "det_a"), (1, n_b, "det_b")):
        idx = pinned_arr[:, col]
        if len(idx) and (idx.min() < 0 or idx.max() >= size):
            raise InputError(
                f"pinned links must index {name} (0..{size - 1}); found {idx.min()}..{idx.max()}"
            )
    cands = _score_candidates(det_a, det_b, scorer, config, z_ratio, gate_factor=1.0)
    p_clipped = np.maximum(cands.p_match, config.min_probability)
    edge_src, edge_col = np.nonzero(cands.allowed)
    p_div = np.maximum(cands.p_divide.astype(np.float64), config.min_probability)
    division_cost = np.where(cands.p_divide >= config.division_threshold, -np.log(p_div), np.inf)
    if no_division is not None:
        division_cost[no_division] = np.inf
    fixed = np.zeros(n_a, np.int64) if fixed_children is None else np.asarray(fixed_children)
    second_ok = _second_child_ok(
        det_a, det_b, cands, pinned_arr, fixed, division_cost, config, z_ratio
    )
    while True:
        result = solve_assignment(
            AssignmentProblem(
                n_sources=n_a,
                n_targets=n_b,
                edge_src=edge_src,
                edge_dst=cands.cand_idx[edge_src, edge_col],
                edge_cost=-np.log(p_clipped[edge_src, edge_col].astype(np.float64)),
                division_cost=division_cost,
                appear_cost=config.appear_cost,
                disappear_cost=config.disappear_cost,
                pinned_src=pinned_arr[:, 0],
                pinned_dst=pinned_arr[:, 1],
                fixed_children=fixed_children,
                fixed_parent=fixed_parent,
                second_child_ok=second_ok[edge_src, edge_col],
            )
        )
        # second_ok only says that each child pairs plausibly with *some* other candidate: a
        # mother whose two chosen children are no plausible pair together loses its second
        # child, and all is solved again (restricting it to its best plausible pair instead
        # kept far more false divisions among the many fragments of split nuclei)
        wrong = _implausible_divisions(det_a, det_b, result, fixed, config, z_ratio)
        if len(wrong) == 0:
            break
        division_cost = division_cost.copy()
        division_cost[wrong] = np.inf
    score, margin = _link_scores(cands, result.src, result.dst)
    return FrameLinks(
        src_idx=result.src,
        dst_idx=result.dst,
        score=score,
        is_division=result.n_children[result.src] == 2,
        margin=margin,
        pinned=result.pinned,
        p_divide=cands.p_divide.astype(np.float32),
        cost=result.cost,
    )


def link_sequence(
    detections: Sequence[Detections],
    scorer: CandidateScorer | None,
    config: LinkingConfig | None,
    z_ratio: float,
    pinned_edges: np.ndarray | Sequence[tuple[int, int]] | None = None,
    node_ids: Sequence[np.ndarray] | None = None,
    progress: OnStep[Progress] | None = None,
    *,
    no_division: np.ndarray | Sequence[int] | None = None,
) -> TrackGraph:
    """Link a whole sequence of per-frame detections into a :class:`TrackGraph`.

    Args:
        detections: one :class:`Detections` per frame, in increasing ``t``.
        scorer: a :class:`CandidateScorer`; ``None`` uses :meth:`GeometricScorer.for_link`.
        config: gates, thresholds and costs; ``None``: the defaults.
        z_ratio: z spacing over xy spacing.
        pinned_edges: (P, 2) ``(parent_id, child_id)`` node-id pairs kept exactly (they may skip
            frames). A row ``(-1, child_id)`` pins the child as a track start (no parent).
            Children of pinned edges are marked ``approved``.
        node_ids: one id array per frame (ids must be unique and >= 0); default 0, 1, 2, ...
            in frame order.
        progress: called with a ``Progress("link", done, total)`` after each linking step.
        no_division: node ids that must not divide: each may get at most one child (pinned or
            not), whatever the scorer's ``p_divide`` says; a cell that would have taken a second
            child keeps its best one and the other cell is linked elsewhere or starts a track.
            Gap closing never divides anyway. ``None`` or empty forbids nothing.

    Raises:
        InputError: malformed or unknown ids in ``pinned_edges`` or ``no_division``, frames out
            of order, bad ``node_ids``.
        GraphError: pinned edges giving a node two parents or more than two children, or two
            children to a node in ``no_division``.

    The graph's ``division_score`` is each cell's predicted division probability (the scorer's
    ``p_divide``; the detector's mother probability in the last frame), ``link_score`` the
    ``p_match`` of the incoming link, and the extra column ``link_margin`` its margin.
    """
    scorer = GeometricScorer.for_link() if scorer is None else scorer
    config = LinkingConfig() if config is None else config
    frames = list(detections)
    _check_frames(frames)
    sizes = np.array([len(d) for d in frames], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n = int(offsets[-1])
    ids = _node_ids(node_ids, sizes)
    frame_of = np.repeat(np.arange(len(frames)), sizes)

    parent = np.full(n, -1, dtype=np.int64)  # parent row
    link_score = np.full(n, np.nan, dtype=np.float32)
    margin = np.full(n, np.nan, dtype=np.float32)
    division_score = np.zeros(n, dtype=np.float32)
    lookup = _IdRows(ids)
    pins = _resolve_pins(pinned_edges, lookup, frame_of)
    no_div = _no_division_mask(no_division, lookup, pins)
    approved = np.zeros(n, dtype=bool)
    approved[pins.child] = True
    skip = pins.parent >= 0
    skip &= frame_of[pins.child] != frame_of[np.maximum(pins.parent, 0)] + 1
    parent[pins.child[skip]] = pins.parent[skip]
    fixed_children = np.bincount(pins.parent[skip], minlength=n)
    fixed_parent = np.zeros(n, dtype=bool)
    fixed_parent[pins.child[(pins.parent < 0) | skip]] = True
    consecutive = (pins.parent >= 0) & ~skip

    n_frames = len(frames)
    n_steps = max(n_frames - 1, 0) + (max(n_frames - 2, 0) if config.gap_closing else 0)
    done = 0
    positions = np.concatenate([d.positions for d in frames]) if frames else np.zeros((0, 3))
    motion = MotionModel(positions, frame_of, z_ratio, config.min_motion_samples)
    for f in range(len(frames) - 1):
        a0, b0, b1 = offsets[f], offsets[f + 1], offsets[f + 2]
        here = consecutive & (frame_of[np.maximum(pins.parent, 0)] == f)
        source = frames[f]
        if config.motion_prediction:
            source = motion.predicted(source, np.arange(a0, b0), parent)
        links = link_frame_pair(
            source,
            frames[f + 1],
            scorer,
            config,
            z_ratio,
            pinned=np.stack([pins.parent[here] - a0, pins.child[here] - b0], axis=1),
            fixed_children=fixed_children[a0:b0],
            fixed_parent=fixed_parent[b0:b1],
            no_division=no_div[a0:b0],
        )
        rows = b0 + links.dst_idx
        parent[rows] = a0 + links.src_idx
        link_score[rows] = links.score
        margin[rows] = links.margin
        division_score[a0:b0] = links.p_divide
        done += 1
        if progress is not None:
            progress(Progress("link", done, n_steps))
    if frames:
        division_score[offsets[-2] : offsets[-1]] = frames[-1].division[:, 0]

    if config.gap_closing:
        # a gap link gives a child to frame f only, which later steps never look at again
        n_children = np.bincount(parent[parent >= 0], minlength=n)
        for f in range(n_frames - 2):
            _close_gap(
                frames,
                f,
                offsets,
                n_children,
                fixed_parent,
                parent,
                link_score,
                margin,
                scorer,
                config,
                z_ratio,
            )
            done += 1
            if progress is not None:
                progress(Progress("link", done, n_steps))

    return TrackGraph.from_arrays(
        id=ids,
        t=np.repeat([d.t for d in frames], sizes).astype(np.int64),
        z=positions[:, 0],
        y=positions[:, 1],
        x=positions[:, 2],
        parent_id=np.where(parent >= 0, ids[np.maximum(parent, 0)], -1),
        radius=_concat(frames, "radius"),
        score=_concat(frames, "score"),
        division_score=division_score,
        link_score=link_score,
        approved=approved,
        link_margin=margin,  # MARGIN_COLUMN
    )


class FrameByFrameLinker:
    """Links each frame to the one before as the frames arrive: the frame-pair assignments of
    :func:`link_sequence` (same scorer, settings and motion prediction; no pins), without the
    gap closing that needs later frames.

    These are the tracks a person can watch grow while the rest of a series is detected; the
    run's final linking (gap closing, division refinement) replaces them.
    """

    def __init__(
        self, scorer: CandidateScorer | None, config: LinkingConfig | None, z_ratio: float
    ):
        self.scorer = GeometricScorer.for_link() if scorer is None else scorer
        self.config = LinkingConfig() if config is None else config
        self.z_ratio = z_ratio
        self._previous: Detections | None = None
        #: the last frames' cell positions and parents (index into the frame before; -1: none),
        #: oldest first: motion prediction reads the steps into the previous frame and the steps
        #: before those, so three frames are all it needs (the cost of a frame stays constant)
        self._recent: list[tuple[np.ndarray, np.ndarray]] = []
        self._motion = MotionModel(
            np.zeros((0, 3)), np.zeros(0, np.int64), z_ratio, self.config.min_motion_samples
        )

    def add(self, det: Detections) -> np.ndarray:
        """Link ``det`` to the frame added before it: (len(det),) each cell's parent as an index
        into that frame's detections, -1 for none (every cell of the first frame)."""
        previous = self._previous
        parents = np.full(len(det), -1, np.int64)
        if previous is not None:
            if det.t <= previous.t:
                raise InputError(
                    f"frames must arrive in increasing t; found t = {det.t} after {previous.t}"
                )
            source = previous
            if self.config.motion_prediction:
                source = self._predicted(previous)
            links = link_frame_pair(source, det, self.scorer, self.config, self.z_ratio)
            parents[links.dst_idx] = links.src_idx
        self._recent = [*self._recent[-2:], (det.positions.reshape(-1, 3), parents)]
        self._previous = det
        return parents

    def _predicted(self, previous: Detections) -> Detections:
        """``previous`` moved by the motion model, over the rows of the last three frames."""
        sizes = [len(positions) for positions, _ in self._recent]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        parent = np.concatenate(
            [
                np.where(p >= 0, p + offsets[max(i - 1, 0)], -1) if i > 0 else np.full_like(p, -1)
                for i, (_, p) in enumerate(self._recent)
            ]
        )
        motion = self._motion
        motion.positions = np.concatenate([positions for positions, _ in self._recent])
        motion.frame_of = np.repeat(np.arange(len(sizes)), sizes)
        return motion.predicted(previous, np.arange(offsets[-2], offsets[-1]), parent)


# ----------------------------------------------------------------------------- internals
def _score_candidates(
    det_a: Detections,
    det_b: Detections,
    scorer: CandidateScorer,
    config: LinkingConfig,
    z_ratio: float,
    gate_factor: float,
) -> _Candidates:
    """KD-tree candidates of ``det_a`` in ``det_b``, scored, gated (distance gate times
    ``gate_factor``) and thresholded."""
    n_a, n_b = len(det_a), len(det_b)
    cand_idx, dist = nearest_candidates(det_a.positions, det_b.positions, config.k, z_ratio)
    if n_a == 0 or n_b == 0:
        return _Candidates(
            cand_idx=cand_idx,
            p_match=np.zeros(cand_idx.shape, np.float32),
            allowed=np.zeros(cand_idx.shape, bool),
            p_divide=det_a.division[:, 0].astype(np.float32),
        )
    scores = scorer.score(det_a, det_b, cand_idx, z_ratio).checked(cand_idx, type(scorer).__name__)
    p_divide = division_probability(
        scores.p_divide,
        det_a.division[:, 0],
        config,
        scorer_includes_detector=getattr(scorer, "includes_detector_division", False),
    )
    valid = cand_idx >= 0
    p_match = with_daughter_floor(scores.p_match, dist, valid, det_a.radius, p_divide, config)
    radius = np.maximum(det_a.radius.astype(np.float64), config.radius_floor)
    gate = gate_factor * np.minimum(config.max_distance_radii * radius, config.max_distance)
    allowed = valid & (dist <= gate[:, None])
    allowed &= p_match >= config.link_threshold
    return _Candidates(cand_idx, p_match, allowed, p_divide)


def _second_child_ok(
    det_a: Detections,
    det_b: Detections,
    cands: _Candidates,
    pinned: np.ndarray,
    fixed_children: np.ndarray,
    division_cost: np.ndarray,
    config: LinkingConfig,
    z_ratio: float,
) -> np.ndarray:
    """(n_a, k) True where candidate ``c`` of cell ``i`` may be its second child: it forms a
    plausible daughter pair (:func:`plausible_daughters`) with another allowed candidate of
    ``i``. A cell that already has a child (pinned here, or a pinned skip edge) is not tested:
    its first child is a person's word."""
    allowed = cands.allowed
    if not config.division_geometry:
        return allowed
    has_child = (fixed_children > 0) | np.isin(np.arange(len(det_a)), pinned[:, 0])
    ok = np.where(has_child[:, None], allowed, False)
    idx = cands.cand_idx
    free = np.isfinite(division_cost) & ~has_child
    pair = free[:, None, None] & allowed[:, :, None] & allowed[:, None, :]
    pair &= ~np.eye(idx.shape[1], dtype=bool)[None]
    i, a, b = np.nonzero(pair)
    good = plausible_daughters(det_a, det_b, i, idx[i, a], idx[i, b], config, z_ratio)
    ok[i[good], a[good]] = True
    return ok


def _implausible_divisions(
    det_a: Detections,
    det_b: Detections,
    result: AssignmentResult,
    fixed_children: np.ndarray,
    config: LinkingConfig,
    z_ratio: float,
) -> np.ndarray:
    """Cells of ``det_a`` whose two children, both chosen here by the solver, are no plausible
    daughter pair."""
    if not config.division_geometry:
        return np.zeros(0, np.int64)
    free = ~result.pinned & (fixed_children[result.src] == 0)
    n_free = np.bincount(result.src[free], minlength=len(det_a))
    here = free & (n_free[result.src] == 2)
    src, dst = result.src[here], result.dst[here]
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    mothers = src[0::2]
    good = plausible_daughters(det_a, det_b, mothers, dst[0::2], dst[1::2], config, z_ratio)
    return mothers[~good]


def _link_scores(
    cands: _Candidates, src: np.ndarray, dst: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``p_match`` and margin of each chosen link (NaN for links the scorer never saw)."""
    n_a, _k = cands.cand_idx.shape
    if len(src) == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    valid = cands.cand_idx >= 0
    p = np.where(valid, cands.p_match, 0.0).astype(np.float64)
    hit = cands.cand_idx[src] == dst[:, None]
    seen = hit.any(axis=1)
    score = np.where(seen, (p[src] * hit).sum(axis=1), np.nan)

    # best alternative child of the parent, its chosen children excluded
    children = np.full((n_a, 2), -1, dtype=np.int64)
    order = np.argsort(src, kind="stable")
    s_sorted = src[order]
    slot = np.arange(len(order)) - np.searchsorted(s_sorted, s_sorted)
    children[s_sorted[slot < 2], slot[slot < 2]] = dst[order][slot < 2]
    other = valid & (cands.cand_idx != children[:, :1]) & (cands.cand_idx != children[:, 1:])
    alt_src = np.where(other, p, 0.0).max(axis=1, initial=0.0)[src]

    # best alternative parent of the child
    q, c = np.nonzero(valid)
    tgt = cands.cand_idx[q, c]
    pv = p[q, c]
    ordered = np.lexsort((-pv, tgt))
    tgt_o, q_o, p_o = tgt[ordered], q[ordered], pv[ordered]
    first = np.ones(len(tgt_o), bool)
    first[1:] = tgt_o[1:] != tgt_o[:-1]
    n_t = int(max(tgt_o.max() if len(tgt_o) else -1, dst.max()) + 1)
    best_val = np.zeros(n_t)
    best_src = np.full(n_t, -1, dtype=np.int64)
    second_val = np.zeros(n_t)
    best_val[tgt_o[first]] = p_o[first]
    best_src[tgt_o[first]] = q_o[first]
    is_second = np.zeros(len(tgt_o), bool)
    is_second[1:] = first[:-1] & ~first[1:]
    second_val[tgt_o[is_second]] = p_o[is_second]
    alt_dst = np.where(best_src[dst] == src, second_val[dst], best_val[dst])

    margin = np.where(seen, score - np.maximum(alt_src, alt_dst), np.nan)
    return score.astype(np.float32), margin.astype(np.float32)


def _close_gap(
    frames: list[Detections],
    f: int,
    offsets: np.ndarray,
    n_children: np.ndarray,
    fixed_parent: np.ndarray,
    parent: np.ndarray,
    link_score: np.ndarray,
    margin: np.ndarray,
    scorer: CandidateScorer,
    config: LinkingConfig,
    z_ratio: float,
) -> None:
    """Join track ends of frame f to track starts of frame f + 2 (arrays updated in place)."""
    a0, a1 = offsets[f], offsets[f + 1]
    c0, c1 = offsets[f + 2], offsets[f + 3]
    ends = np.flatnonzero(n_children[a0:a1] == 0)
    starts = np.flatnonzero((parent[c0:c1] < 0) & ~fixed_parent[c0:c1])  # pinned starts stay
    if len(ends) == 0 or len(starts) == 0:
        return
    det_end = frames[f].subset(ends)
    det_start = frames[f + 2].subset(starts)
    cands = _score_candidates(
        det_end, det_start, scorer, config, z_ratio, gate_factor=config.gap_distance_factor
    )
    src, col = np.nonzero(cands.allowed)
    p = np.maximum(cands.p_match[src, col].astype(np.float64), config.min_probability)
    problem = AssignmentProblem(
        n_sources=len(ends),
        n_targets=len(starts),
        edge_src=src,
        edge_dst=cands.cand_idx[src, col],
        edge_cost=-np.log(p) + config.gap_cost,
        division_cost=np.inf,
        appear_cost=config.appear_cost,
        disappear_cost=config.disappear_cost,
    )
    result = solve_assignment(problem)
    if len(result.src) == 0:
        return
    score, gap_margin = _link_scores(cands, result.src, result.dst)
    rows = c0 + starts[result.dst]
    parent[rows] = a0 + ends[result.src]
    n_children[a0 + ends[result.src]] += 1
    link_score[rows] = score
    margin[rows] = gap_margin
    logger.debug("closed %d gap(s) from frame %d to %d", len(rows), frames[f].t, frames[f + 2].t)


@dataclass(frozen=True)
class _Pins:
    parent: np.ndarray  # parent row, -1 for a pinned track start
    child: np.ndarray  # child row


class _IdRows:
    """Node id -> row lookup (ids are unique)."""

    def __init__(self, ids: np.ndarray):
        self.ids = ids
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]

    def __call__(self, values: np.ndarray, what: str) -> np.ndarray:
        """Rows of ``values``; an id that is not a node raises InputError naming ``what``."""
        pos = np.searchsorted(self._sorted, values)
        pos = np.minimum(pos, max(len(self._sorted) - 1, 0))
        found = (self._sorted[pos] == values) if len(self._sorted) else np.zeros(len(values), bool)
        if not np.all(found):
            missing = np.unique(values[~found])[:10].tolist()
            raise InputError(f"{what} id(s) {missing} are not among the node ids")
        return self._order[pos]


def _resolve_pins(
    pinned_edges: np.ndarray | Sequence[tuple[int, int]] | None,
    lookup: _IdRows,
    frame_of: np.ndarray,
) -> _Pins:
    pairs = _as_pairs(pinned_edges, "pinned_edges")
    ids = lookup.ids
    child = lookup(pairs[:, 1], "pinned_edges: child")
    has_parent = pairs[:, 0] != -1
    parent = np.full(len(pairs), -1, dtype=np.int64)
    parent[has_parent] = lookup(pairs[has_parent, 0], "pinned_edges: parent")
    if len(np.unique(child)) != len(child):
        dup = np.unique(child[np.bincount(child)[child] > 1])
        raise GraphError(f"pinned_edges give node(s) {ids[dup].tolist()} more than one parent")
    counts = np.bincount(parent[has_parent], minlength=len(ids))
    if np.any(counts > 2):
        raise GraphError(
            f"pinned_edges give node(s) {ids[counts > 2].tolist()} more than two children"
        )
    backwards = has_parent & (frame_of[np.maximum(parent, 0)] >= frame_of[child])
    if np.any(backwards):
        bad = pairs[backwards][:10].tolist()
        raise InputError(f"pinned_edges must go forward in time; found (parent, child) {bad}")
    return _Pins(parent=parent, child=child)


def _no_division_mask(
    no_division: np.ndarray | Sequence[int] | None, lookup: _IdRows, pins: _Pins
) -> np.ndarray:
    """(n,) True at the rows of the ``no_division`` ids; refuses pins that divide one of them."""
    n = len(lookup.ids)
    mask = np.zeros(n, dtype=bool)
    if no_division is None:
        return mask
    arr = np.asarray(no_division)
    if arr.size == 0:
        return mask
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise InputError(
            f"no_division: expected a 1-D integer array of node ids; found "
            f"{arr.dtype} array of shape {arr.shape}"
        )
    mask[lookup(arr.astype(np.int64), "no_division:")] = True
    pinned_children = np.bincount(pins.parent[pins.parent >= 0], minlength=n)
    divided = mask & (pinned_children > 1)
    if np.any(divided):
        raise GraphError(
            f"pinned_edges give node(s) {lookup.ids[divided][:10].tolist()} two "
            "children, but no_division says they do not divide"
        )
    return mask


def _as_pairs(value: np.ndarray | Sequence[tuple[int, int]] | None, name: str) -> np.ndarray:
    if value is None:
        return np.zeros((0, 2), dtype=np.int64)
    arr = np.asarray(value)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.dtype.kind not in "iu":
        raise InputError(
            f"{name}: expected an (N, 2) integer array of pairs; found {arr.dtype} "
            f"array of shape {arr.shape}"
        )
    return arr.astype(np.int64)


class MotionModel:
    """Constant-velocity prediction damped by the persistence measured on the links so far.

    A cell's step is its position minus its parent's (one frame earlier). The persistence
    ``beta`` is the least-squares coefficient of each step on the step before it,
    ``sum(s_t . s_t-1) / sum(|s_t-1|^2)`` over every pair of consecutive steps seen so far (in
    scaled space), clipped to [0, 1]: about 1 for directed motion or drift, about 0 for a
    random walk, where predicting would only add noise.
    """

    def __init__(
        self, positions: np.ndarray, frame_of: np.ndarray, z_ratio: float, min_samples: int
    ):
        self.positions = positions
        self.frame_of = frame_of
        self.scale = np.array([z_ratio, 1.0, 1.0])
        self.min_samples = min_samples
        self._cross = 0.0
        self._norm = 0.0
        self.n_samples = 0

    @property
    def persistence(self) -> float:
        if self.n_samples < max(self.min_samples, 1) or self._norm <= 0:
            return 0.0
        return float(np.clip(self._cross / self._norm, 0.0, 1.0))

    def predicted(self, det: Detections, rows: np.ndarray, parent: np.ndarray) -> Detections:
        """``det`` (the cells at ``rows``) moved by ``persistence * last step``; the pairs of
        steps that end at these cells are added to the estimate first."""
        step, has_step = self._steps(rows, parent)
        if has_step.any():
            parent_rows = parent[rows[has_step]]
            prev, has_prev = self._steps(parent_rows, parent)
            a, b = step[has_step][has_prev] * self.scale, prev[has_prev] * self.scale
            self._cross += float(np.sum(a * b))
            self._norm += float(np.sum(b * b))
            self.n_samples += int(has_prev.sum())
        beta = self.persistence
        if beta == 0.0 or not has_step.any():
            return det
        moved = det.positions + beta * step
        return dataclasses.replace(det, positions=moved)

    def _steps(self, rows: np.ndarray, parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Steps (len(rows), 3) into ``rows`` (0 where there is none) and where one exists: a
        parent exactly one frame earlier."""
        p = parent[rows]
        ok = p >= 0
        ok[ok] = self.frame_of[p[ok]] == self.frame_of[rows[ok]] - 1
        step = np.zeros((len(rows), 3))
        step[ok] = self.positions[rows[ok]] - self.positions[p[ok]]
        return step, ok


def _check_frames(frames: list[Detections]) -> None:
    t = np.array([d.t for d in frames], dtype=np.int64)
    if len(t) > 1 and np.any(np.diff(t) <= 0):
        raise InputError(
            f"detections must be in strictly increasing frame order; found t = {t.tolist()[:20]}"
        )
    dims = {d.embedding_dim for d in frames if len(d)}
    if len(dims) > 1:
        raise InputError(f"all frames must have embeddings of one length; found {sorted(dims)}")


def _node_ids(node_ids: Sequence[np.ndarray] | None, sizes: np.ndarray) -> np.ndarray:
    n = int(sizes.sum())
    if node_ids is None:
        return np.arange(n, dtype=np.int64)
    if len(node_ids) != len(sizes):
        raise InputError(
            f"node_ids: expected one id array per frame ({len(sizes)}); found {len(node_ids)}"
        )
    for f, (given, size) in enumerate(zip(node_ids, sizes, strict=True)):
        if len(given) != size:
            raise InputError(f"node_ids: frame {f} has {size} detections but {len(given)} ids")
    ids = (
        np.concatenate([np.asarray(g, dtype=np.int64).ravel() for g in node_ids])
        if n
        else (np.zeros(0, np.int64))
    )
    if len(ids) and ids.min() < 0:
        raise InputError(f"node_ids must be >= 0; found {int(ids.min())}")
    if len(np.unique(ids)) != len(ids):
        raise InputError("node_ids must be unique across all frames; found repeated ids")
    return ids


def _concat(frames: list[Detections], name: str) -> np.ndarray:
    if not frames:
        return np.zeros(0, np.float32)
    return np.concatenate([getattr(d, name) for d in frames])
