"""Training losses (src/napari_cellect/train/losses.py)."""

from __future__ import annotations

import pytest
import torch

from napari_cellect.train.losses import (
    batch_hard_mining,
    batch_hard_triplet_loss,
    candidate_loss,
    cumulative_log_probs,
    division_head_loss,
    division_loss,
    ordinal_centre_loss,
    pairwise_distances,
    radius_loss,
    segmentation_loss,
)

SHAPE = (1, 3, 4, 4)


def one_hot_logits(target: torch.Tensor, n: int, scale: float = 20.0) -> torch.Tensor:
    """(B, n, ...) logits that put ``scale`` on the target class."""
    return torch.nn.functional.one_hot(target, n).movedim(-1, 1).float() * scale


@pytest.fixture
def seg_target():
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 3, SHAPE, generator=gen)


def test_segmentation_perfect_vs_wrong(seg_target):
    valid = torch.ones(SHAPE, dtype=torch.bool)
    perfect = segmentation_loss(one_hot_logits(seg_target, 3), seg_target, valid)
    wrong = segmentation_loss(one_hot_logits((seg_target + 1) % 3, 3), seg_target, valid)
    assert perfect < 1e-6 < 1.0 < wrong


def test_segmentation_ignores_invalid_voxels(seg_target):
    valid = torch.zeros(SHAPE, dtype=torch.bool)
    valid[..., :2] = True
    logits = one_hot_logits(seg_target, 3)
    changed = logits.clone()
    changed[..., 2:] = -logits[..., 2:]  # wrong outside the valid part only
    assert segmentation_loss(logits, seg_target, valid) == pytest.approx(
        segmentation_loss(changed, seg_target, valid).item(), abs=1e-7
    )
    # no valid voxel at all: an exact zero that still backpropagates
    logits.requires_grad_(True)
    zero = segmentation_loss(logits, seg_target, torch.zeros(SHAPE, dtype=torch.bool))
    zero.backward()
    assert zero.item() == 0.0 and logits.grad is not None


def test_cumulative_probabilities_match_softmax_sums():
    logits = torch.randn(2, 5, 3, 3, 3, dtype=torch.float64)
    log_ge, log_lt = cumulative_log_probs(logits)
    p = torch.softmax(logits, dim=1)
    for k in range(1, 5):
        torch.testing.assert_close(log_ge[:, k - 1].exp(), p[:, k:].sum(dim=1))
        torch.testing.assert_close(log_lt[:, k - 1].exp(), p[:, :k].sum(dim=1))
    # the top cumulative term is the softmax of the top level: the peak finder's probability
    torch.testing.assert_close(log_ge[:, -1].exp(), p[:, -1])


def test_ordinal_loss_perfect_near_wrong_far():
    level = torch.randint(0, 5, SHAPE, generator=torch.Generator().manual_seed(1))
    valid = torch.ones(SHAPE, dtype=torch.bool)
    perfect = ordinal_centre_loss(one_hot_logits(level, 5), level, valid, (1, 2, 4, 8))
    off_by_one = ordinal_centre_loss(one_hot_logits((level + 1).clamp(max=4), 5), level, valid)
    far = ordinal_centre_loss(one_hot_logits(4 - level, 5), level, valid)
    assert perfect < 1e-6
    # ordinal: predicting a neighbouring level costs less than a distant one
    level0 = torch.zeros(SHAPE, dtype=torch.long)
    near = ordinal_centre_loss(one_hot_logits(level0 + 1, 5), level0, valid)
    distant = ordinal_centre_loss(one_hot_logits(level0 + 4, 5), level0, valid)
    assert near < distant
    assert perfect < off_by_one and perfect < far


def test_radius_loss_only_inside_nuclei():
    target = torch.zeros(SHAPE)
    nucleus = torch.zeros(SHAPE, dtype=torch.bool)
    nucleus[..., 1:3, 1:3] = True
    target[nucleus] = 5.0
    pred = target.clone()[:, None]
    assert radius_loss(pred, target, nucleus) == 0.0
    pred_bg = pred.clone()
    pred_bg[:, 0][~nucleus] = 100.0  # background predictions do not count
    assert radius_loss(pred_bg, target, nucleus) == 0.0
    pred_bad = pred.clone()
    pred_bad[:, 0][nucleus] = 7.0
    assert radius_loss(pred_bad, target, nucleus).item() == pytest.approx(2.0)


def test_division_loss_weighting_and_known_channels():
    target = torch.zeros(1, 2, 3, 4, 4)
    target[0, 0, 1, 1, 1] = 1.0
    valid = torch.ones_like(target, dtype=torch.bool)
    good = division_loss((target * 2 - 1) * 20, target, valid)
    miss = division_loss(torch.full_like(target, -20.0), target, valid, pos_weight=8.0)
    miss_unweighted = division_loss(torch.full_like(target, -20.0), target, valid, pos_weight=1.0)
    assert good < 1e-6 < miss_unweighted < miss
    valid[:, 0] = False  # channel 0 unknown: the missed positive no longer counts
    assert division_loss(torch.full_like(target, -20.0), target, valid) < 1e-6


def test_batch_hard_mining_picks_the_hardest_pairs():
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 0.5], [9.0, 9.0]])
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    pos, neg, usable = batch_hard_mining(pairwise_distances(emb), labels)
    assert pos[0] == 2  # farthest of its positives 1 (d=1) and 2 (d=3)
    assert neg[0] == 4  # closest negative (d=0.5), not 3 (d=2) or 5
    assert pos[3] == 4 and neg[3] == 4 - 4  # anchor 3: positive 4, closest negative 0 (d=2)
    assert usable.tolist() == [True, True, True, True, True, False]  # label 2 has no positive


def test_triplet_loss_zero_when_separated_positive_otherwise():
    labels = torch.tensor([0, 0, 1, 1])
    apart = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [5.1, 0.0]])
    mixed = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.1, 0.0], [5.1, 0.0]])
    assert batch_hard_triplet_loss(apart, labels, margin=0.3) == 0.0
    bad = batch_hard_triplet_loss(mixed, labels, margin=0.3)
    assert bad.item() == pytest.approx(5.0 - 0.1 + 0.3, abs=1e-4)
    soft = batch_hard_triplet_loss(apart, labels, margin=None)
    assert 0 < soft < batch_hard_triplet_loss(mixed, labels, margin=None)


def test_triplet_gradient_finite_with_identical_embeddings():
    emb = torch.zeros(4, 3, requires_grad=True)
    loss = batch_hard_triplet_loss(emb, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert torch.isfinite(emb.grad).all() and loss.item() == pytest.approx(0.3, abs=1e-4)
    # nothing usable (all one label): exact zero, still differentiable
    single = batch_hard_triplet_loss(emb, torch.tensor([0, 0, 0, 0]))
    assert single.item() == 0.0 and single.requires_grad


def test_candidate_loss_perfect_vs_wrong_and_masking():
    target = torch.tensor([[1, 0, 0], [0, 0, 0], [1, 1, 0]], dtype=torch.float32)
    known = torch.tensor([[True, True, True], [True, True, False], [True, True, True]])
    none_target = (target.sum(dim=1) == 0).float()
    good = candidate_loss((target * 2 - 1) * 20, (none_target * 2 - 1) * 20, target, known)
    wrong = candidate_loss((1 - 2 * target) * 20, (1 - 2 * none_target) * 20, target, known)
    assert good < 1e-6 < 1.0 < wrong
    # a masked-out candidate's logit does not matter
    logits = (target * 2 - 1) * 20
    logits[1, 2] = 50.0
    assert candidate_loss(logits, (none_target * 2 - 1) * 20, target, known) < 1e-6
    # row weights
    w = torch.tensor([1.0, 1.0, 5.0])
    half = (target * 2 - 1) * 20
    half[2] = 0.0  # uncertain on the heavy row
    assert candidate_loss(half, (none_target * 2 - 1) * 20, target, known, w) > candidate_loss(
        half, (none_target * 2 - 1) * 20, target, known
    )


def test_division_head_loss():
    target = torch.tensor([1, 0, 0])
    good = torch.tensor([[-10.0, 10.0], [10.0, -10.0], [10.0, -10.0]])
    assert division_head_loss(good, target) < 1e-6 < 5.0 < division_head_loss(-good, target)
    assert division_head_loss(torch.zeros(0, 2), torch.zeros(0)).item() == 0.0
