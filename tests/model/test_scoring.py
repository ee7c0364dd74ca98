"""Tests of ModelScorer: torch pair scorers behind the numpy CandidateScorer protocol."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pair_scorer = pytest.importorskip("napari_cellect.model.pair_scorer")

from napari_cellect.errors import InputError, ModelError  # noqa: E402
from napari_cellect.model.scoring import ModelScorer  # noqa: E402
from napari_cellect.settings.linking import LinkingConfig  # noqa: E402
from napari_cellect.settings.merge import MergeConfig  # noqa: E402
from napari_cellect.track.detections import Detections  # noqa: E402
from napari_cellect.track.link import link_sequence  # noqa: E402
from napari_cellect.track.merge import merge_duplicates  # noqa: E402
from napari_cellect.track.scoring_protocol import (  # noqa: E402
    CandidateScorer,
    nearest_candidates,
)

Z_RATIO = 3.0
E = 8


def _scorer(kind="link", architecture="set", embedding_dim=E, k=5, seed=0):
    torch.manual_seed(seed)
    config = pair_scorer.PairScorerConfig(
        kind=kind, architecture=architecture, k=k, embedding_dim=embedding_dim, hidden=16
    )
    return pair_scorer.build_scorer(config)


def _det(rng, n, t=0, dim=E) -> Detections:
    return Detections(
        t=t,
        positions=rng.uniform(0, 20, (n, 3)),
        embeddings=rng.normal(size=(n, dim)).astype(np.float32),
        radius=rng.uniform(2, 5, n).astype(np.float32),
        division=rng.uniform(0, 1, (n, 2)).astype(np.float32),
        score=np.ones(n, np.float32),
    )


def test_link_scores_match_a_direct_forward_pass():
    rng = np.random.default_rng(0)
    a, b = _det(rng, 6), _det(rng, 7, t=1)
    model = _scorer()
    scorer = ModelScorer(model)
    assert isinstance(scorer, CandidateScorer)
    cand, _ = nearest_candidates(a.positions, b.positions, 5, Z_RATIO)
    out = scorer.score(a, b, cand, Z_RATIO)
    assert out.p_match.shape == (6, 5) and out.p_none.shape == (6,) and out.p_divide.shape == (6,)

    offsets = ((b.positions[cand] - a.positions[:, None]) * [Z_RATIO, 1, 1]).astype(np.float32)
    model.eval()
    with torch.no_grad():
        direct = model.score(
            torch.from_numpy(a.embeddings),
            torch.from_numpy(b.embeddings[cand]),
            torch.from_numpy(offsets),
            torch.from_numpy(a.radius),
            torch.from_numpy(b.radius[cand]),
            torch.from_numpy(a.division),
            torch.from_numpy(b.division[cand]),
        )
    p_cand, p_none, p_div = (x.numpy() for x in direct.probabilities())
    np.testing.assert_allclose(out.p_match, p_cand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.p_none, p_none, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.p_divide, p_div, rtol=1e-5, atol=1e-6)


def test_candidate_order_batches_and_padding():
    rng = np.random.default_rng(1)
    a, b = _det(rng, 9), _det(rng, 3, t=1)
    scorer = ModelScorer(_scorer(), batch_size=4)
    cand, _ = nearest_candidates(a.positions, b.positions, 5, Z_RATIO)  # only 3 real candidates
    out = scorer.score(a, b, cand, Z_RATIO)
    assert np.all(out.p_match[:, 3:] == 0)
    assert np.all(out.p_match[:, :3] > 0)
    # one big batch gives the same numbers
    whole = ModelScorer(_scorer(), batch_size=1000).score(a, b, cand, Z_RATIO)
    np.testing.assert_allclose(out.p_match, whole.p_match, rtol=1e-5, atol=1e-6)
    # permuting the candidate columns permutes the scores (the candidates are indexed right)
    perm = np.array([2, 0, 1, 4, 3])
    permuted = scorer.score(a, b, cand[:, perm], Z_RATIO)
    np.testing.assert_allclose(permuted.p_match, out.p_match[:, perm], rtol=1e-4, atol=1e-6)
    # queries without any candidate are not scored
    none = scorer.score(a, b, np.full((9, 5), -1), Z_RATIO)
    assert np.all(none.p_match == 0) and np.all(none.p_none == 1)
    np.testing.assert_allclose(none.p_divide, a.division[:, 0])


def test_merge_kind_and_training_mode_restored():
    rng = np.random.default_rng(2)
    det = _det(rng, 10)
    model = _scorer(kind="merge")
    model.train()
    scorer = ModelScorer(model, device="cpu")
    cand, _ = nearest_candidates(det.positions, det.positions, 4, Z_RATIO, exclude_self=True)
    out = scorer.score(det, det, cand, Z_RATIO)
    assert scorer.kind == "merge"
    np.testing.assert_allclose(out.p_divide, det.division[:, 0])  # no division head
    assert model.training  # left as it was
    # eval mode while scoring: dropout off, so two calls agree
    again = scorer.score(det, det, cand, Z_RATIO)
    np.testing.assert_array_equal(out.p_match, again.p_match)


def test_original_architecture_pads_to_five_candidates():
    rng = np.random.default_rng(3)
    a, b = _det(rng, 4, dim=64), _det(rng, 6, t=1, dim=64)
    scorer = ModelScorer(_scorer(architecture="cellect-original", embedding_dim=64))
    cand, _ = nearest_candidates(a.positions, b.positions, 3, Z_RATIO)
    out = scorer.score(a, b, cand, Z_RATIO)
    assert out.p_match.shape == (4, 3)
    assert np.all((out.p_match >= 0) & (out.p_match <= 1))
    cand6, _ = nearest_candidates(a.positions, b.positions, 6, Z_RATIO)
    with pytest.raises(InputError, match="takes 5 candidates"):
        scorer.score(a, b, cand6, Z_RATIO)


def test_wrong_embedding_length_and_model_type_raise():
    rng = np.random.default_rng(4)
    a, b = _det(rng, 3, dim=4), _det(rng, 3, t=1, dim=4)
    cand, _ = nearest_candidates(a.positions, b.positions, 2, Z_RATIO)
    with pytest.raises(ModelError, match="expects 8-d embeddings"):
        ModelScorer(_scorer()).score(a, b, cand, Z_RATIO)
    with pytest.raises(ModelError, match="pair scorer"):
        ModelScorer(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


def test_random_models_drive_merging_and_linking():
    rng = np.random.default_rng(5)
    frames = [_det(rng, int(rng.integers(3, 12)), t=t) for t in range(4)]
    merge = ModelScorer(_scorer(kind="merge", seed=1))
    merged = [merge_duplicates(d, merge, MergeConfig(), Z_RATIO)[0] for d in frames]
    assert all(len(m) <= len(d) for m, d in zip(merged, frames, strict=True))
    link = ModelScorer(_scorer(kind="link", seed=2))
    graph = link_sequence(merged, link, LinkingConfig(link_threshold=0.0), Z_RATIO)
    graph.validate()
    assert len(graph) == sum(len(m) for m in merged)
    assert graph.n_children().max(initial=0) <= 2
