"""Tests of the scorer protocol helpers and the GeometricScorer."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_cellect.errors import InputError, ModelError
from napari_cellect.track.detections import Detections
from napari_cellect.track.scoring_protocol import (
    CandidateScorer,
    CandidateScores,
    GeometricScorer,
    candidate_distances,
    nearest_candidates,
)


def _det(positions, *, emb=None, radius=4.0, division=None, t=0) -> Detections:
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    n = len(pos)
    return Detections(
        t=t,
        positions=pos,
        embeddings=np.ones((n, 3), np.float32) if emb is None else np.asarray(emb, np.float32),
        radius=np.full(n, radius, np.float32),
        division=np.zeros((n, 2), np.float32) if division is None else division,
        score=np.ones(n, np.float32),
    )


def test_nearest_candidates_scale_z_and_pad():
    query = np.array([[0.0, 0, 0]])
    cands = np.array([[1.0, 0, 0], [0, 0, 3], [0, 0, 10]])
    idx, dist = nearest_candidates(query, cands, 5, z_ratio=5.0)
    assert idx.tolist() == [[1, 0, 2, -1, -1]]  # z = 1 slice is 5 voxels, farther than x = 3
    np.testing.assert_allclose(dist[0, :3], [3, 5, 10])
    assert np.all(np.isinf(dist[0, 3:]))
    idx, _ = nearest_candidates(query, np.zeros((0, 3)), 2, 1.0)
    assert idx.tolist() == [[-1, -1]]
    with pytest.raises(InputError, match="z_ratio"):
        nearest_candidates(query, cands, 2, 0.0)


def test_nearest_candidates_exclude_self_even_for_coincident_points():
    pos = np.array([[0.0, 0, 0], [0, 0, 0], [0, 0, 5]])
    idx, dist = nearest_candidates(pos, pos, 2, 1.0, exclude_self=True)
    assert np.all(idx != np.arange(3)[:, None])
    assert idx[0, 0] == 1 and idx[1, 0] == 0 and dist[0, 0] == 0
    assert sorted(idx[2].tolist()) == [0, 1]
    idx, _ = nearest_candidates(pos, pos, 5, 1.0, exclude_self=True)
    assert np.all(idx[:, 2:] == -1)  # only two others exist


def test_geometric_scorer_prefers_near_and_similar_candidates():
    query = _det([[0, 10, 10]], emb=[[1, 0, 0]])
    cands = _det([[0, 10, 11], [0, 10, 18], [0, 10, 11.5]], emb=[[1, 0, 0], [1, 0, 0], [0, 1, 0]])
    scorer = GeometricScorer()
    assert isinstance(scorer, CandidateScorer)
    out = scorer.score(query, cands, np.array([[0, 1, 2, -1]]), 1.0)
    p = out.p_match[0]
    assert p[0] > 0.9  # near, same embedding
    assert p[1] < p[0]  # far
    assert p[2] < p[0]  # near, other embedding
    assert p[3] == 0  # padding
    assert out.p_none[0] == pytest.approx(np.prod(1 - p[:3]), rel=1e-5)


def test_geometric_scorer_is_symmetric_for_merging():
    rng = np.random.default_rng(0)
    det = _det(rng.uniform(0, 10, (6, 3)), emb=rng.normal(size=(6, 3)))
    det.radius[:] = rng.uniform(2, 5, 6)
    idx = np.array([[j for j in range(6) if j != i] for i in range(6)])
    p = GeometricScorer.for_merge().score(det, det, idx, 2.0).p_match
    full = np.zeros((6, 6))
    full[np.arange(6)[:, None], idx] = p
    np.testing.assert_allclose(full, full.T, rtol=1e-5)


def test_division_probability_uses_mother_and_daughter_evidence():
    mother = _det([[0, 0, 0]], division=np.array([[0.3, 0.0]], np.float32))
    daughters = _det([[0, 0, -3], [0, 0, 3]], division=np.array([[0, 0.8], [0, 0.8]], np.float32))
    idx = np.array([[0, 1]])
    with_evidence = GeometricScorer().score(mother, daughters, idx, 1.0).p_divide[0]
    without = GeometricScorer(use_daughter_evidence=False).score(mother, daughters, idx, 1.0)
    assert without.p_divide[0] == pytest.approx(0.3)
    assert with_evidence == pytest.approx(1 - 0.7 * 0.2, rel=1e-5)


def test_checked_rejects_bad_scorer_output():
    idx = np.array([[0, -1]])
    good = CandidateScores(np.array([[0.5, 0.9]]), np.array([0.1]), np.array([0.2]))
    assert good.checked(idx).p_match.tolist() == [[0.5, 0.0]]  # padding forced to 0
    with pytest.raises(ModelError, match="shape"):
        CandidateScores(np.zeros((1, 3)), np.zeros(1), np.zeros(1)).checked(idx)
    with pytest.raises(ModelError, match="NaN"):
        CandidateScores(np.full((1, 2), np.nan), np.zeros(1), np.zeros(1)).checked(idx)


def test_candidate_distances():
    query = _det([[1, 0, 0]])
    cands = _det([[0, 0, 0], [1, 3, 4]])
    d = candidate_distances(query.positions, cands.positions, np.array([[0, 1, -1]]), 2.0)
    np.testing.assert_allclose(d, [[2, 5, np.inf]])


def test_merging_and_linking_do_not_import_torch():
    code = (
        "import sys\n"
        "import napari_cellect.track.link, napari_cellect.track.merge\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
