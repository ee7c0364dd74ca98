"""Tests of same-frame duplicate merging."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellect.errors import InputError
from napari_cellect.settings.merge import MergeConfig
from napari_cellect.track.detections import Detections
from napari_cellect.track.merge import duplicate_pairs, merge_duplicates
from napari_cellect.track.scoring_protocol import CandidateScores, GeometricScorer

Z_RATIO = 2.0


def _det(positions, *, radius=5.0, score=None, emb=None, division=None, t=0) -> Detections:
    pos = np.asarray(positions, dtype=np.float64)
    n = len(pos)
    return Detections(
        t=t,
        positions=pos,
        embeddings=np.ones((n, 4), np.float32) if emb is None else emb,
        radius=np.broadcast_to(np.float32(radius), (n,)).copy() if np.isscalar(radius) else radius,
        division=np.zeros((n, 2), np.float32) if division is None else division,
        score=np.ones(n, np.float32) if score is None else np.asarray(score, np.float32),
    )


class TableScorer:
    """Scores from a fixed (N, N) table of directed duplicate probabilities."""

    def __init__(self, table: np.ndarray):
        self.table = np.asarray(table, dtype=np.float32)

    def score(self, query, cands, cand_idx, z_ratio):
        rows = np.arange(len(query))[:, None]
        p = np.where(cand_idx >= 0, self.table[rows, np.maximum(cand_idx, 0)], 0)
        return CandidateScores(p, np.prod(1 - p, axis=1), np.zeros(len(query), np.float32))


def test_close_pair_merges_and_far_cell_stays():
    det = _det([[2, 10, 10], [2, 11, 10.5], [2, 40, 40]], score=[0.9, 0.3, 0.8])
    merged, groups = merge_duplicates(det, GeometricScorer.for_merge(), MergeConfig(), Z_RATIO)
    assert groups.tolist() == [0, 0, 1]
    assert len(merged) == 2
    # score-weighted mean position
    expected = (0.9 * det.positions[0] + 0.3 * det.positions[1]) / 1.2
    np.testing.assert_allclose(merged.positions[0], expected)
    np.testing.assert_allclose(merged.positions[1], det.positions[2])
    assert merged.score.tolist() == pytest.approx([0.9, 0.8])


def test_merged_attributes_take_best_embedding_and_max_radius_and_division():
    emb = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    det = _det(
        [[0, 0, 0], [0, 0, 1], [0, 0, 2]],
        radius=np.array([3, 6, 4], np.float32),
        score=[0.2, 0.7, 0.5],
        emb=emb,
        division=np.array([[0.1, 0.0], [0.0, 0.3], [0.8, 0.2]], np.float32),
    )
    table = np.ones((3, 3))
    merged, groups = merge_duplicates(det, TableScorer(table), MergeConfig(), Z_RATIO)
    assert groups.tolist() == [0, 0, 0]
    np.testing.assert_array_equal(merged.embeddings[0], emb[1])
    assert merged.radius[0] == 6
    np.testing.assert_allclose(merged.division[0], [0.8, 0.3])


def test_transitive_chain_becomes_one_group_and_drops_nothing():
    # 0-1 and 1-2 are duplicates, 0-2 are not scored as such: one group of three
    table = np.zeros((4, 4))
    for a, b in ((0, 1), (1, 2)):
        table[a, b] = table[b, a] = 0.95
    det = _det([[0, 0, 0], [0, 0, 2], [0, 0, 4], [0, 0, 30]])
    merged, groups = merge_duplicates(det, TableScorer(table), MergeConfig(), Z_RATIO)
    assert groups.tolist() == [0, 0, 0, 1]
    assert len(merged) == 2


def test_symmetric_combination_mean_and_max():
    table = np.zeros((2, 2))
    table[0, 1], table[1, 0] = 0.9, 0.2
    det = _det([[0, 0, 0], [0, 0, 1]])
    scorer = TableScorer(table)
    mean_cfg = MergeConfig(threshold=0.6, symmetric="mean")
    max_cfg = MergeConfig(threshold=0.6, symmetric="max")
    assert merge_duplicates(det, scorer, mean_cfg, Z_RATIO)[1].tolist() == [0, 1]
    assert merge_duplicates(det, scorer, max_cfg, Z_RATIO)[1].tolist() == [0, 0]
    # and the answer does not depend on which detection comes first
    swapped = det.subset([1, 0])
    swapped_scorer = TableScorer(table[::-1, ::-1])
    assert merge_duplicates(swapped, swapped_scorer, mean_cfg, Z_RATIO)[1].tolist() == [0, 1]
    assert merge_duplicates(swapped, swapped_scorer, max_cfg, Z_RATIO)[1].tolist() == [0, 0]


def test_distance_gate_blocks_confident_far_pairs():
    table = np.ones((2, 2))
    cfg = MergeConfig()
    det = _det([[0, 0, 0], [0, 0, 8]], radius=5.0)  # 8 > 0.8 * 5 and > the 3-voxel floor
    assert merge_duplicates(det, TableScorer(table), cfg, Z_RATIO)[1].tolist() == [0, 1]
    near = _det([[0, 0, 0], [0, 0, 3.5]], radius=5.0)
    assert merge_duplicates(near, TableScorer(table), cfg, Z_RATIO)[1].tolist() == [0, 0]
    # the floor applies to tiny radii
    tiny = _det([[0, 0, 0], [0, 0, 2.5]], radius=0.5)
    assert merge_duplicates(tiny, TableScorer(table), cfg, Z_RATIO)[1].tolist() == [0, 0]
    # z is scaled: one slice apart at z_ratio 5 is 5 voxels, beyond the gate
    zpair = _det([[0, 0, 0], [1, 0, 0]], radius=5.0)
    assert merge_duplicates(zpair, TableScorer(table), cfg, 5.0)[1].tolist() == [0, 1]
    assert merge_duplicates(zpair, TableScorer(table), cfg, 0.5)[1].tolist() == [0, 0]


def test_random_frames_merge_invariants():
    rng = np.random.default_rng(7)
    n_merged = 0
    for _ in range(20):
        n = int(rng.integers(2, 60))
        det = _det(
            rng.uniform(0, 20, (n, 3)),
            radius=rng.uniform(2, 6, n).astype(np.float32),
            score=rng.uniform(0, 1, n),
            emb=(1 + 0.1 * rng.normal(size=(n, 8))).astype(np.float32),
        )
        perm = rng.permutation(n)
        cfg = MergeConfig(k=int(rng.integers(1, 7)))
        merged, groups = merge_duplicates(det, GeometricScorer.for_merge(), cfg, Z_RATIO)
        # every input lands in exactly one output; outputs are numbered by first member
        assert groups.shape == (n,)
        assert set(groups.tolist()) == set(range(len(merged)))
        assert np.all(np.diff(np.unique(groups, return_index=True)[1]) > 0)
        # accepted pairs share a group (transitivity) ...
        a, b = duplicate_pairs(det, GeometricScorer.for_merge(), cfg, Z_RATIO)
        assert np.all(groups[a] == groups[b])
        # ... and groups are exactly the connected components of the pairs (singletons stay)
        n_linked = len(np.unique(np.concatenate([a, b])))
        n_components_of_linked = len(np.unique(groups[np.concatenate([a, b])]))
        assert len(merged) == n - n_linked + n_components_of_linked
        # the partition does not depend on input order (the geometric scorer is symmetric)
        _, groups_p = merge_duplicates(det.subset(perm), GeometricScorer.for_merge(), cfg, Z_RATIO)
        same = groups[perm][:, None] == groups[perm][None, :]
        np.testing.assert_array_equal(same, groups_p[:, None] == groups_p[None, :])
        n_merged += n - len(merged)
    assert n_merged > 50  # the cases do exercise merging, including groups of three or more


def test_tiny_frames_and_bad_config():
    one = _det([[0, 0, 0]])
    merged, groups = merge_duplicates(one, GeometricScorer.for_merge(), MergeConfig(), Z_RATIO)
    assert len(merged) == 1 and groups.tolist() == [0]
    empty = Detections.empty(0, 4)
    merged, groups = merge_duplicates(empty, GeometricScorer.for_merge(), MergeConfig(), Z_RATIO)
    assert len(merged) == 0 and len(groups) == 0
    with pytest.raises(InputError, match="symmetric"):
        MergeConfig(symmetric="min")
    with pytest.raises(InputError, match="threshold"):
        MergeConfig(threshold=2.0)
    assert merge_duplicates(one, None, None, Z_RATIO)[1].tolist() == [0]  # None: the defaults
