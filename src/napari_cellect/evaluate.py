"""Detection, link, division and CTC TRA scores of a predicted tracking graph against ground truth.

Everything works on *point* graphs (one node per cell per frame, edges through ``parent_id``):

1. **Matching** (:func:`~napari_cellect.track.matching.match_nodes`). In every frame,
   predicted and GT nodes are paired one-to-one by the Hungarian algorithm on the candidate pairs within ``max_dist`` (inclusive, xy pixels) in scaled space
   ``(z * z_ratio, y, x)``. The assignment minimises the summed distance plus a fixed cost per
   unmatched node (4 x ``max_dist``, more than any match distance), so it first maximises the
   number of matches and then their closeness, like traccuracy's earlier scipy ``PointMatcher``.
   (traccuracy 0.4.3 charges ``max_dist / 2`` per unmatched node and may keep one close pair
   instead of two farther ones; ``MatchSettings(unmatched_cost=0.5)`` reproduces it.) Candidates
   come from one KD-tree over all frames; the problem splits into the connected components of the
   candidate graph, one-to-one components are taken directly and only the rest go through
   :func:`scipy.optimize.linear_sum_assignment` (dense per component: components stay small
   while ``max_dist`` is about a nucleus radius).
2. **Detection.** A matched pair is a true positive node; unmatched predictions are false
   positives, unmatched GT nodes false negatives.
3. **Links.** A GT edge ``p -> c`` is found when the predictions matched to ``p`` and ``c`` are
   joined by a predicted edge. Edges are compared by matched endpoints, so an edge that skips frames
   counts like any other. Precision = found predicted edges / predicted edges, recall = found GT
   edges / GT edges (the two "found" counts are equal because matching is one-to-one).
4. **Divisions** (a node with two children), in the spirit of traccuracy's ``DivisionMetrics``
   with a frame buffer:

   - *exact*: a GT division whose matched prediction is a division and whose two outgoing edges are
     both found is a true positive. If the matched prediction divides but into the wrong daughters,
     the pair is a "wrong-children" pair: neither counts as found nor takes part in the next step.
   - *shifted*: every remaining GT division ``g`` and predicted division ``p`` with
     ``1 <= |t_g - t_p| <= division_tolerance`` is a true positive when, calling E the earlier and
     L the later of the two (in their own graphs):

     a. the mother agrees: walking back from L through single-child nodes to E's frame reaches
        the node matched to E;
     b. the daughters agree: following each of E's daughters forward through single-child nodes
        reaches a matched node whose counterpart lies in L's lineage (the first such node counts;
        matched nodes elsewhere, e.g. after a local swap with a neighbour, are passed over, as in
        traccuracy). The two counterparts lie in different parts of that lineage: one may still
        be on L's undivided branch (the cell that has not divided yet), the other(s) in distinct
        daughter subtrees of L. (traccuracy only asks that both descend from the mother, so it
        also accepts two daughters that both follow the same daughter branch.)

     Candidate pairs are accepted greedily, smallest frame shift first, each division used once.

   TP is the number of found GT divisions; FP = predicted divisions - TP and FN = GT divisions -
   TP, so precision = TP / predicted divisions and recall = TP / GT divisions, as in traccuracy.
5. **TRA** (Cell Tracking Challenge): AOGM is the weighted sum of graph edits that turn the
   prediction into the GT, ``TRA = 1 - min(AOGM, AOGM0) / AOGM0`` with ``AOGM0`` the cost of
   building the GT from nothing. Node errors: GT node without match (FN), predicted node without
   match (FP), predicted node matched to several GT nodes (non-split; always 0 here because the
   point matching is one-to-one). Edge errors: GT edge not found (FN), predicted edge between two
   matched nodes whose GT counterparts are not linked (FP; an edge touching an unmatched node is
   removed with that node, as in the CTC), and found edges whose semantics differ (one graph
   divides there and the other does not: wrong semantic). CTC DET and LNK are reported too.

When there are neither GT nor predicted items of a kind (say no divisions at all), precision,
recall and F1 of that kind are 1.0: nothing was missed and nothing invented. Otherwise a zero
denominator gives 0 (no predictions: precision 0; traccuracy gives NaN there). An empty
prediction scores 0 everywhere. The scores assume dense GT (every cell annotated); with sparse GT
only the recall-type numbers are meaningful.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from napari_cellect.errors import InputError
from napari_cellect.track.graph import NO_PARENT, TrackGraph
from napari_cellect.track.matching import DEFAULT_MATCH, MatchSettings, NodeMatching, match_nodes

logger = logging.getLogger(__name__)

#: The headline scores, in the order the CLI prints them (``cellect evaluate --json`` keys).
HEADLINE_KEYS = (
    "det_precision",
    "det_recall",
    "det_f1",
    "link_precision",
    "link_recall",
    "link_f1",
    "div_precision",
    "div_recall",
    "div_f1",
    "tra",
    "n_gt",
    "n_pred",
)


@dataclass(frozen=True)
class AOGMWeights:
    """Costs of the graph edits counted by the AOGM (defaults: the Cell Tracking Challenge's)."""

    fn_node: float = 10.0
    """Adding a GT node that no prediction matches."""
    fp_node: float = 1.0
    """Deleting a predicted node that matches no GT node."""
    non_split: float = 5.0
    """Splitting a predicted node matched to several GT nodes (never needed with point matching)."""
    fn_edge: float = 1.5
    """Adding a GT edge the prediction lacks."""
    fp_edge: float = 1.0
    """Deleting a predicted edge between matched nodes that the GT lacks."""
    wrong_semantic: float = 1.0
    """Relabelling a found edge as division vs continuation."""


CTC_WEIGHTS = AOGMWeights()


@dataclass
class Scores:
    """Scores of a prediction against GT, with the counts they are computed from."""

    det_precision: float
    det_recall: float
    det_f1: float
    link_precision: float
    link_recall: float
    link_f1: float
    div_precision: float
    div_recall: float
    div_f1: float
    tra: float
    n_gt: int
    n_pred: int
    # ---- counts
    node_tp: int
    node_fp: int
    node_fn: int
    edge_tp: int
    edge_fp: int
    edge_fn: int
    div_tp: int
    div_fp: int
    div_fn: int
    div_wrong_children: int
    """Exact GT/predicted division pairs whose daughters disagree (inside div_fp and div_fn)."""
    # ---- AOGM parts (CTC definitions on the point graphs)
    aogm: float
    aogm0: float
    aogm_fn_nodes: int
    aogm_fp_nodes: int
    aogm_ns_nodes: int
    aogm_fn_edges: int
    aogm_fp_edges: int
    aogm_ws_edges: int
    det: float
    """CTC DET: 1 - min(AOGM-D, AOGM-D0) / AOGM-D0 (node errors only)."""
    lnk: float
    """CTC LNK: 1 - min(AOGM-A, AOGM-A0) / AOGM-A0 (edge errors only)."""
    max_dist: float
    """The matching distance that was used (xy pixels)."""

    def to_dict(self, counts: bool = False) -> dict[str, float | int]:
        """The headline scores (:data:`HEADLINE_KEYS`); with ``counts`` every field."""
        values = asdict(self)
        if counts:
            return values
        return {key: values[key] for key in HEADLINE_KEYS}


# ---------------------------------------------------------------------------------------- public


def evaluate(
    pred: TrackGraph,
    gt: TrackGraph,
    *,
    z_ratio: float = 1.0,
    max_dist: float | None = None,
    division_tolerance: int = 1,
    weights: AOGMWeights = CTC_WEIGHTS,
    settings: MatchSettings = DEFAULT_MATCH,
) -> Scores:
    """Score ``pred`` against ``gt`` (see the module docstring for every definition).

    Args:
        pred: the tracking result.
        gt: the ground truth; must hold at least one node.
        z_ratio: z spacing / xy spacing; distances are measured in ``(z * z_ratio, y, x)``.
        max_dist: largest match distance in xy pixels (inclusive); default
            :func:`~napari_cellect.track.matching.default_max_dist`.
        division_tolerance: how many frames a predicted division may be early or late.

    Raises:
        InputError: the GT is empty or holds non-finite coordinates.
    """
    if len(gt) == 0:
        raise InputError("the ground truth holds no nodes; there is nothing to evaluate against")
    if division_tolerance < 0 or int(division_tolerance) != division_tolerance:
        raise ValueError(f"division_tolerance must be an integer >= 0, not {division_tolerance}")
    matching = match_nodes(pred, gt, z_ratio=z_ratio, max_dist=max_dist, settings=settings)
    logger.info(
        "matched %d of %d GT nodes to %d predicted nodes (max_dist %.3g px, z_ratio %g)",
        matching.n_matched,
        len(gt),
        len(pred),
        matching.max_dist,
        z_ratio,
    )
    gt_top, pred_top = _Topology(gt), _Topology(pred)
    links = _score_links(gt_top, pred_top, matching)
    divisions = _score_divisions(gt_top, pred_top, matching, int(division_tolerance), links)
    return _assemble(gt_top, pred_top, matching, links, divisions, weights)


# ------------------------------------------------------------------------------------ topology


class _Topology:
    """Row-indexed structure of a graph: frame, parent row, number of children, child rows."""

    def __init__(self, graph: TrackGraph) -> None:
        n = len(graph)
        self.t = np.asarray(graph["t"], dtype=np.int64)
        self.parent = np.full(n, -1, dtype=np.int64)
        parent_ids = graph["parent_id"]
        linked = np.flatnonzero(parent_ids != NO_PARENT)
        if len(linked):
            self.parent[linked] = graph.index_of(parent_ids[linked])
        self.n_children = np.bincount(self.parent[linked], minlength=n)
        # first and second child row of each node (-1 where absent), children sorted by row
        self.child = np.full((n, 2), -1, dtype=np.int64)
        order = linked[np.argsort(self.parent[linked], kind="stable")]
        par = self.parent[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = par[1:] != par[:-1]
        self.child[par[first], 0] = order[first]
        self.child[par[~first], 1] = order[~first]
        self.edge_children = linked
        """Rows that have a parent: one per edge."""
        self.branch_first = self._branch_first()
        """Row of the first node of each row's branch (a branch ends at a division)."""

    def _branch_first(self) -> np.ndarray:
        """Pointer jumping from each row to the start of its branch, in O(N log length)."""
        parent = self.parent
        starts = parent < 0
        starts[~starts] = self.n_children[parent[~starts]] != 1
        pointer = np.where(starts, np.arange(len(parent)), parent)
        while True:
            jumped = pointer[pointer]
            if np.array_equal(jumped, pointer):
                return pointer
            pointer = jumped

    @property
    def n_edges(self) -> int:
        return len(self.edge_children)

    def divisions(self) -> np.ndarray:
        return np.flatnonzero(self.n_children == 2)

    def ancestor_at(self, row: int, frame: int) -> int:
        """The ancestor of ``row`` in an earlier ``frame``, reached through single-child nodes
        only (the stretch of one undivided cell), or -1."""
        node = row
        while True:
            up = self.parent[node]
            if up < 0 or self.n_children[up] != 1 or self.t[up] < frame:
                return -1
            if self.t[up] == frame:
                return int(up)
            node = up

    def first_division_after(self, row: int, last_frame: int) -> int:
        """The first division on the single-child track from ``row`` up to ``last_frame``, or -1."""
        node = row
        while self.t[node] <= last_frame:
            if self.n_children[node] == 2:
                return int(node)
            if self.n_children[node] != 1:
                return -1
            node = self.child[node, 0]
        return -1


# --------------------------------------------------------------------------------------- links


@dataclass(frozen=True)
class _LinkCounts:
    found: np.ndarray
    """Per GT row: its incoming edge is found in the prediction."""
    tp: int
    fp_between_matched: int
    wrong_semantic: int


def _score_links(gt: _Topology, pred: _Topology, matching: NodeMatching) -> _LinkCounts:
    g2p, p2g = matching.gt_to_pred, matching.pred_to_gt
    child = gt.edge_children
    parent = gt.parent[child]
    mc, mp = g2p[child], g2p[parent]
    found_edge = (mc >= 0) & (mp >= 0)
    found_edge[found_edge] = pred.parent[mc[found_edge]] == mp[found_edge]
    found = np.zeros(len(gt.t), dtype=bool)
    found[child[found_edge]] = True
    tp = int(np.count_nonzero(found_edge))
    gt_divides = gt.n_children[parent[found_edge]] == 2
    pred_divides = pred.n_children[mp[found_edge]] == 2
    pchild = pred.edge_children
    between_matched = (p2g[pchild] >= 0) & (p2g[pred.parent[pchild]] >= 0)
    return _LinkCounts(
        found=found,
        tp=tp,
        fp_between_matched=int(np.count_nonzero(between_matched)) - tp,
        wrong_semantic=int(np.count_nonzero(gt_divides != pred_divides)),
    )


# ----------------------------------------------------------------------------------- divisions


@dataclass(frozen=True)
class _DivisionCounts:
    n_gt: int
    n_pred: int
    tp: int
    wrong_children: int


def _score_divisions(
    gt: _Topology,
    pred: _Topology,
    matching: NodeMatching,
    tolerance: int,
    links: _LinkCounts,
) -> _DivisionCounts:
    g2p, p2g = matching.gt_to_pred, matching.pred_to_gt
    gt_div, pred_div = gt.divisions(), pred.divisions()
    # exact: the matched prediction divides; found when both GT daughter edges are found
    mate = g2p[gt_div]
    mate_divides = mate >= 0
    mate_divides[mate_divides] = pred.n_children[mate[mate_divides]] == 2
    daughters_found = links.found[gt.child[gt_div, 0]] & links.found[gt.child[gt_div, 1]]
    exact = mate_divides & daughters_found
    n_exact = int(np.count_nonzero(exact))
    wrong_children = int(np.count_nonzero(mate_divides & ~daughters_found))
    if tolerance == 0:
        return _DivisionCounts(len(gt_div), len(pred_div), n_exact, wrong_children)

    free_gt = np.zeros(len(gt.t), dtype=bool)
    free_gt[gt_div[~mate_divides]] = True
    free_pred = np.zeros(len(pred.t), dtype=bool)
    free_pred[pred_div] = True
    free_pred[mate[mate_divides]] = False

    candidates: list[tuple[int, int, int, int]] = []  # (shift, t_gt, gt row, pred row)
    for g in np.flatnonzero(free_gt).tolist():
        t_g = int(gt.t[g])
        # the prediction divides earlier: the GT track before g, matched to a predicted division
        for shift in range(1, tolerance + 1):
            anchor = gt.ancestor_at(g, t_g - shift)
            if anchor < 0:
                continue
            p = int(g2p[anchor])
            if p >= 0 and free_pred[p] and _daughters_agree(pred, gt, p2g, p, g):
                candidates.append((shift, t_g, g, p))
        # the prediction divides later: the first division on the predicted track from g's match
        q = int(g2p[g])
        if q >= 0:
            p = pred.first_division_after(q, t_g + tolerance)
            if p >= 0 and free_pred[p] and _daughters_agree(gt, pred, g2p, g, p):
                candidates.append((int(pred.t[p]) - t_g, t_g, g, int(p)))
    n_shifted = 0
    for _, _, g, p in sorted(candidates):
        if free_gt[g] and free_pred[p]:
            free_gt[g] = free_pred[p] = False
            n_shifted += 1
    return _DivisionCounts(len(gt_div), len(pred_div), n_exact + n_shifted, wrong_children)


def _daughters_agree(
    early: _Topology, late: _Topology, to_late: np.ndarray, e: int, lt: int
) -> bool:
    """Condition (b): each daughter of the earlier division ``e`` continues into the lineage of
    the later division ``lt``, the two into distinct parts of it."""
    sides: set[int] = set()
    for daughter in early.child[e]:
        node, side = int(daughter), None
        while True:
            if to_late[node] >= 0:
                side = _lineage_side(late, int(to_late[node]), lt)
                if side is not None:
                    break
            if early.n_children[node] != 1:
                return False
            node = int(early.child[node, 0])
        if side in sides:
            return False
        sides.add(side)
    return True


def _lineage_side(graph: _Topology, x: int, division: int) -> int | None:
    """Where ``x`` lies relative to ``division``: -1 on its undivided branch (up to and including
    the division), the row of the daughter whose subtree holds ``x``, or ``None`` elsewhere."""
    t_div = graph.t[division]
    if graph.t[x] <= t_div:
        return -1 if graph.branch_first[x] == graph.branch_first[division] else None
    node = x
    while True:  # climb branch by branch: one step per division on the way
        start = int(graph.branch_first[node])
        up = int(graph.parent[start])
        if up == division:
            return start
        if up < 0 or graph.t[up] <= t_div:
            return None
        node = up


# ------------------------------------------------------------------------------------ assembly


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1; all 1.0 when there is nothing to find and nothing was claimed."""
    if tp + fp + fn == 0:
        return 1.0, 1.0, 1.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall, 2 * tp / (2 * tp + fp + fn)


def _one_minus_capped(cost: float, cost0: float) -> float:
    """``1 - min(cost, cost0) / cost0``; with nothing to build, 1 when nothing is wrong, else 0."""
    if cost0 == 0:
        return 1.0 if cost == 0 else 0.0
    return 1.0 - min(cost, cost0) / cost0


def _assemble(
    gt: _Topology,
    pred: _Topology,
    matching: NodeMatching,
    links: _LinkCounts,
    divisions: _DivisionCounts,
    w: AOGMWeights,
) -> Scores:
    n_gt, n_pred = len(gt.t), len(pred.t)
    nodes = matching.counts()
    node_tp, node_fp, node_fn = nodes.tp, nodes.fp, nodes.fn
    edge_fp, edge_fn = pred.n_edges - links.tp, gt.n_edges - links.tp
    div_fp, div_fn = divisions.n_pred - divisions.tp, divisions.n_gt - divisions.tp
    non_split = 0  # one-to-one matching never maps a prediction to several GT nodes
    aogm_nodes = w.fn_node * node_fn + w.fp_node * node_fp + w.non_split * non_split
    aogm_edges = (
        w.fn_edge * edge_fn
        + w.fp_edge * links.fp_between_matched
        + w.wrong_semantic * links.wrong_semantic
    )
    aogm0_nodes, aogm0_edges = w.fn_node * n_gt, w.fn_edge * gt.n_edges
    aogm, aogm0 = aogm_nodes + aogm_edges, aogm0_nodes + aogm0_edges
    det_p, det_r, det_f = _prf(node_tp, node_fp, node_fn)
    link_p, link_r, link_f = _prf(links.tp, edge_fp, edge_fn)
    div_p, div_r, div_f = _prf(divisions.tp, div_fp, div_fn)
    tra = _one_minus_capped(aogm, aogm0)
    det = _one_minus_capped(aogm_nodes, aogm0_nodes)
    lnk = _one_minus_capped(aogm_edges, aogm0_edges)
    if n_pred == 0:  # a failed run: do not let "nothing to find" ratios read as perfect
        det_p = det_r = det_f = link_p = link_r = link_f = div_p = div_r = div_f = 0.0
        tra = det = lnk = 0.0
    return Scores(
        det_precision=det_p,
        det_recall=det_r,
        det_f1=det_f,
        link_precision=link_p,
        link_recall=link_r,
        link_f1=link_f,
        div_precision=div_p,
        div_recall=div_r,
        div_f1=div_f,
        tra=tra,
        n_gt=n_gt,
        n_pred=n_pred,
        node_tp=node_tp,
        node_fp=node_fp,
        node_fn=node_fn,
        edge_tp=links.tp,
        edge_fp=edge_fp,
        edge_fn=edge_fn,
        div_tp=divisions.tp,
        div_fp=div_fp,
        div_fn=div_fn,
        div_wrong_children=divisions.wrong_children,
        aogm=float(aogm),
        aogm0=float(aogm0),
        aogm_fn_nodes=node_fn,
        aogm_fp_nodes=node_fp,
        aogm_ns_nodes=non_split,
        aogm_fn_edges=edge_fn,
        aogm_fp_edges=links.fp_between_matched,
        aogm_ws_edges=links.wrong_semantic,
        det=det,
        lnk=lnk,
        max_dist=matching.max_dist,
    )


__all__ = [
    "CTC_WEIGHTS",
    "HEADLINE_KEYS",
    "AOGMWeights",
    "Scores",
    "evaluate",
]
