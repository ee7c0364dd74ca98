"""Merging duplicate detections of one cell within a frame.

Each detection is scored against its ``k`` nearest neighbours of the same frame (KD-tree in
scaled space). A pair is merged when its score is above the threshold and the two centres are
closer than a gate relative to their radius (:class:`MergeConfig`). Pairs are scored in both
directions and the two scores are combined (``"mean"`` by default: both detections must agree;
``"max"``: either one is enough). Merging is transitive: connected components of the accepted
pairs (union-find via ``scipy.sparse.csgraph.connected_components``) become one detection each,
so every input detection ends up in exactly one output detection and no chain can drop one
(CELLECT's anchor scheme could, docs/method.md §10 item 5).

The settings are :class:`napari_cellect.settings.merge.MergeConfig`."""

from __future__ import annotations

import logging

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from napari_cellect.settings.merge import MergeConfig
from napari_cellect.track.detections import Detections
from napari_cellect.track.scoring_protocol import (
    CandidateScorer,
    GeometricScorer,
    nearest_candidates,
)

logger = logging.getLogger(__name__)


def merge_duplicates(
    det: Detections, scorer: CandidateScorer | None, config: MergeConfig | None, z_ratio: float
) -> tuple[Detections, np.ndarray]:
    """Merge same-cell duplicates of one frame.

    ``scorer`` ``None`` uses :meth:`GeometricScorer.for_merge`; ``config`` ``None`` uses the
    default :class:`MergeConfig`.

    Returns ``(merged, groups)``: ``groups[i]`` is the index in ``merged`` of the detection that
    input detection ``i`` became part of. Merged detections are ordered by their first member.
    A merged detection takes the score-weighted mean position of its members (plain mean when all
    scores are zero), the embedding of its best-scoring member, and the maximum radius, division
    probabilities (per channel) and score: a division cue seen by any duplicate is kept.
    """
    n = len(det)
    if n < 2:
        return det, np.arange(n, dtype=np.int64)
    pairs_a, pairs_b = duplicate_pairs(det, scorer, config, z_ratio)
    graph = coo_matrix((np.ones(len(pairs_a)), (pairs_a, pairs_b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    groups = _labels_in_first_member_order(labels)
    merged = _combine(det, groups)
    if len(merged) < n:
        logger.debug("frame %d: merged %d detections into %d", det.t, n, len(merged))
    return merged, groups


def duplicate_pairs(
    det: Detections, scorer: CandidateScorer | None, config: MergeConfig | None, z_ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """The accepted duplicate pairs ``(a, b)`` with ``a < b`` (before transitive closure)."""
    scorer = GeometricScorer.for_merge() if scorer is None else scorer
    config = MergeConfig() if config is None else config
    n = len(det)
    cand_idx, dist = nearest_candidates(
        det.positions, det.positions, config.k, z_ratio, exclude_self=True
    )
    scores = scorer.score(det, det, cand_idx, z_ratio).checked(cand_idx, type(scorer).__name__)
    query = np.broadcast_to(np.arange(n)[:, None], cand_idx.shape)
    valid = cand_idx >= 0
    a = np.minimum(query[valid], cand_idx[valid])
    b = np.maximum(query[valid], cand_idx[valid])
    p = scores.p_match[valid].astype(np.float64)
    d = dist[valid]
    key = a * n + b
    unique_key, inverse = np.unique(key, return_inverse=True)
    counts = np.bincount(inverse)
    if config.symmetric == "mean":
        combined = np.bincount(inverse, weights=p) / counts
    else:
        combined = np.full(len(unique_key), -np.inf)
        np.maximum.at(combined, inverse, p)
    pair_dist = np.zeros(len(unique_key))
    pair_dist[inverse] = d  # the same distance from both directions
    a_u, b_u = unique_key // n, unique_key % n
    radius = np.maximum(det.radius[a_u], det.radius[b_u]).astype(np.float64)
    gate = np.maximum(config.max_distance_radii * radius, config.max_distance_floor)
    accept = (combined > config.threshold) & (pair_dist <= gate)
    return a_u[accept], b_u[accept]


def _labels_in_first_member_order(labels: np.ndarray) -> np.ndarray:
    """Relabel components so that label order follows each component's smallest member."""
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[np.unique(labels, return_inverse=True)[1]].astype(np.int64)


def _combine(det: Detections, groups: np.ndarray) -> Detections:
    n_groups = int(groups.max()) + 1
    if n_groups == len(det):
        return det.subset(np.argsort(groups))
    w = np.maximum(det.score.astype(np.float64), 0.0)
    w_sum = np.bincount(groups, weights=w, minlength=n_groups)
    no_weight = w_sum[groups] <= 0
    w = np.where(no_weight, 1.0, w)
    w_sum = np.bincount(groups, weights=w, minlength=n_groups)
    weighted = [
        np.bincount(groups, weights=w * det.positions[:, c], minlength=n_groups) for c in range(3)
    ]
    positions = np.stack(weighted, axis=1) / w_sum[:, None]
    # best member: highest score, lowest index on ties
    order = np.lexsort((np.arange(len(det)), -det.score.astype(np.float64), groups))
    first = np.ones(len(order), bool)
    first[1:] = groups[order][1:] != groups[order][:-1]
    best = order[first]
    radius = np.full(n_groups, -np.inf, dtype=np.float32)
    np.maximum.at(radius, groups, det.radius)
    score = np.full(n_groups, -np.inf, dtype=np.float32)
    np.maximum.at(score, groups, det.score)
    division = np.full((n_groups, 2), -np.inf, dtype=np.float32)
    np.maximum.at(division, groups, det.division)
    return Detections(
        t=det.t,
        positions=positions,
        embeddings=det.embeddings[best],
        radius=radius,
        division=division,
        score=score,
    )
