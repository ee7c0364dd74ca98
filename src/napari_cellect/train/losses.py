"""Training losses of the U-Net heads and the pair scorers (our own code, from the literature).

- :func:`segmentation_loss`: class-weighted cross-entropy over the valid voxels, with an extra
  weight on the voxels of dividing cells (they are rare and matter most for linking).
- :func:`ordinal_centre_loss`: a cumulative ordinal loss on the centre levels. The L logits are
  read as one softmax over levels, and ``P(level >= k) = sum_{j >= k} softmax_j`` for
  k = 1..L-1 (computed with log-sum-exp). Each of the L-1 cumulative probabilities gets a binary
  cross-entropy against ``[level >= k]``. The top cumulative probability is the softmax of the
  top level: exactly the centre probability the peak finder thresholds
  (:func:`napari_cellect.infer.detect.centre_logit`, ``centre_mode='softmax'``), so training
  and detection read the head the same way. The lower cumulative terms teach the rings around
  the centre, which keeps the top level peaked at the centre.
- :func:`batch_hard_triplet_loss`: Hermans, Beyer & Leibe 2017 ("In Defense of the Triplet
  Loss"): for each anchor the farthest positive and the closest negative in the batch, hinge
  with a margin (or the soft-plus "soft margin"); Euclidean distance on the raw embeddings.
- :func:`radius_loss`: L1 between predicted and annotated radius, inside nuclei only (the
  original's MSE over every voxel was dominated by background zeros).
- :func:`division_loss`: binary cross-entropy with a positive weight, per known channel.
- :func:`candidate_loss` and :func:`division_head_loss`: the pair scorers' k candidate
  logits plus the "none" logit as independent binary cross-entropies (both daughters can be
  positives), and a 2-way cross-entropy for the link scorer's division head.

Every loss returns a scalar tensor that stays in the autograd graph even when nothing counts
(then it is an exact zero), so callers can always add and backpropagate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from napari_cellect.errors import InputError


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms and their internal settings."""

    segmentation: float = 1.0
    """Weight of the segmentation cross-entropy in the total."""
    centre: float = 2.0
    """Weight of the ordinal centre loss."""
    radius: float = 0.1
    """Weight of the radius L1 (pixels, so it is scaled down to the other terms)."""
    division: float = 1.0
    """Weight of the division BCE."""
    triplet: float = 1.0
    """Weight of the batch-hard triplet loss."""
    merge: float = 1.0
    """Weight of the merge scorer's candidate BCE."""
    link: float = 1.0
    """Weight of the link scorer's candidate BCE."""
    link_division: float = 1.0
    """Weight of the link scorer's division-head cross-entropy."""
    seg_class_weights: tuple[float, float, float] = (1.0, 2.0, 1.0)
    """Cross-entropy weight of background, nucleus and 'other' voxels."""
    dividing_voxel_weight: float = 3.0
    """Extra factor on the segmentation / centre weight of mother and daughter voxels."""
    centre_pos_weights: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    """Weight of the positives of each cumulative term P(level >= k), k = 1..L-1 (deeper
    levels are rarer)."""
    division_pos_weight: float = 8.0
    """Weight of positive division voxels (they are a small fraction of a nucleus' voxels)."""
    triplet_margin: float | None = 0.3
    """Hinge margin of the triplet loss; None uses the soft margin log(1 + exp(d_ap - d_an))."""
    mother_row_weight: float = 3.0
    """Extra weight of link-scorer rows whose query is a dividing mother."""

    def __post_init__(self) -> None:
        for name in (
            "segmentation",
            "centre",
            "radius",
            "division",
            "triplet",
            "merge",
            "link",
            "link_division",
            "dividing_voxel_weight",
            "division_pos_weight",
            "mother_row_weight",
        ):
            value = getattr(self, name)
            if not value >= 0:
                raise InputError(f"LossConfig.{name}: expected a number >= 0, found {value}")
        for name in ("seg_class_weights", "centre_pos_weights"):
            object.__setattr__(self, name, tuple(float(w) for w in getattr(self, name)))
        if len(self.seg_class_weights) != 3 or min(self.seg_class_weights) < 0:
            raise InputError(
                "LossConfig.seg_class_weights: expected 3 weights >= 0, found "
                f"{self.seg_class_weights}"
            )
        if self.triplet_margin is not None and not self.triplet_margin > 0:
            raise InputError(
                f"LossConfig.triplet_margin: expected a positive margin or None, "
                f"found {self.triplet_margin}"
            )


def _zero(like: Tensor) -> Tensor:
    """A zero that keeps ``like`` in the graph (so backward() works when nothing counts)."""
    return like.sum() * 0.0


def _weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    total = weights.sum()
    if total <= 0:
        return _zero(values)
    return (values * weights).sum() / total


# ---------------------------------------------------------------------------- voxel losses


def segmentation_loss(
    logits: Tensor,
    target: Tensor,
    valid: Tensor,
    class_weights: tuple[float, ...] | Tensor = (1.0, 2.0, 1.0),
    voxel_weight: Tensor | None = None,
) -> Tensor:
    """Weighted cross-entropy over the valid voxels.

    Args:
        logits: (B, C, Z, Y, X).
        target: (B, Z, Y, X) int64 class indices.
        valid: (B, Z, Y, X) bool, voxels that count.
        class_weights: (C,) weight per target class.
        voxel_weight: optional (B, Z, Y, X) extra weight per voxel.

    Returns the weighted mean ``sum(w * ce) / sum(w)``.
    """
    cw = torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device)
    ce = F.cross_entropy(logits, target, reduction="none")
    weight = cw[target] * valid.to(logits.dtype)
    if voxel_weight is not None:
        weight = weight * voxel_weight
    return _weighted_mean(ce, weight)


def cumulative_log_probs(logits: Tensor) -> tuple[Tensor, Tensor]:
    """``log P(level >= k)`` and ``log P(level < k)`` for k = 1..L-1, each (B, L-1, ...).

    The L logits are one softmax over levels (see the module docstring).
    """
    n = logits.shape[1]
    if n < 2:
        raise InputError(f"centre head: expected at least 2 levels, found {n}")
    log_p = torch.log_softmax(logits, dim=1)
    levels = log_p.unbind(dim=1)
    # running log-sum-exp from the top (suffixes) and from the bottom (prefixes); L is small
    suffix = [levels[-1]]
    for lp in reversed(levels[1:-1]):
        suffix.append(torch.logaddexp(lp, suffix[-1]))
    prefix = [levels[0]]
    for lp in levels[1:-1]:
        prefix.append(torch.logaddexp(lp, prefix[-1]))
    log_ge = torch.stack(suffix[::-1], dim=1)  # k = 1..L-1: lse(log_p[k:])
    log_lt = torch.stack(prefix, dim=1)  # k = 1..L-1: lse(log_p[:k])
    return log_ge, log_lt


def ordinal_centre_loss(
    logits: Tensor,
    level: Tensor,
    valid: Tensor,
    pos_weights: tuple[float, ...] | Tensor | None = None,
    voxel_weight: Tensor | None = None,
) -> Tensor:
    """Cumulative binary cross-entropy of ``P(level >= k)``, k = 1..L-1, over the valid voxels.

    Args:
        logits: (B, L, Z, Y, X) centre-level logits.
        level: (B, Z, Y, X) int64 target level in 0..L-1.
        valid: (B, Z, Y, X) bool.
        pos_weights: (L-1,) weight of the positives of each term (default 1).
        voxel_weight: optional (B, Z, Y, X) extra weight per voxel.

    Returns the weighted mean over voxels and terms.
    """
    n = logits.shape[1]
    log_ge, log_lt = cumulative_log_probs(logits)
    ks = torch.arange(1, n, device=logits.device).view(1, n - 1, *([1] * (logits.ndim - 2)))
    positive = level.unsqueeze(1) >= ks  # (B, L-1, ...)
    nll = torch.where(positive, -log_ge, -log_lt)
    if pos_weights is None:
        pw = torch.ones(n - 1, dtype=logits.dtype, device=logits.device)
    else:
        pw = torch.as_tensor(pos_weights, dtype=logits.dtype, device=logits.device)
        if pw.numel() != n - 1:
            raise InputError(
                f"centre pos_weights: expected {n - 1} weights for {n} levels, found {pw.numel()}"
            )
    weight = torch.where(positive, pw.view_as(ks), torch.ones_like(pw).view_as(ks))
    vw = valid.to(logits.dtype)
    if voxel_weight is not None:
        vw = vw * voxel_weight
    weight = weight * vw.unsqueeze(1)
    return _weighted_mean(nll, weight)


def radius_loss(pred: Tensor, target: Tensor, nucleus: Tensor) -> Tensor:
    """Mean absolute radius error (pixels) inside nuclei only.

    Args:
        pred: (B, 1, Z, Y, X) predicted radius.
        target: (B, Z, Y, X) annotated radius of the owning nucleus.
        nucleus: (B, Z, Y, X) bool, valid nucleus voxels.
    """
    err = (pred[:, 0] - target).abs()
    return _weighted_mean(err, nucleus.to(pred.dtype))


def division_loss(logits: Tensor, target: Tensor, valid: Tensor, pos_weight: float = 8.0) -> Tensor:
    """Binary cross-entropy of the division channels with positive weighting.

    Args:
        logits: (B, 2, Z, Y, X).
        target: (B, 2, Z, Y, X) in {0, 1}.
        valid: (B, 2, Z, Y, X) bool (or broadcastable), where the target is known.
    """
    pw = torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw, reduction="none")
    return _weighted_mean(bce, valid.to(logits.dtype).expand_as(bce))


# -------------------------------------------------------------------------- triplet loss


def pairwise_distances(embeddings: Tensor) -> Tensor:
    """(N, N) Euclidean distances with a gradient that stays finite at zero distance."""
    sq = (embeddings * embeddings).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * embeddings @ embeddings.T
    return torch.sqrt(d2.clamp_min(1e-12))


def batch_hard_mining(dist: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For each anchor: index of the hardest (farthest) positive and hardest (closest) negative.

    Returns ``(pos_idx, neg_idx, usable)``; ``usable`` marks anchors that have at least one
    positive (other than themselves) and one negative.
    """
    n = len(labels)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=labels.device)
    pos_mask = same & ~eye
    neg_mask = ~same
    inf = torch.finfo(dist.dtype).max
    pos_d = torch.where(pos_mask, dist, torch.full_like(dist, -inf))
    neg_d = torch.where(neg_mask, dist, torch.full_like(dist, inf))
    pos_idx = pos_d.argmax(dim=1)
    neg_idx = neg_d.argmin(dim=1)
    usable = pos_mask.any(dim=1) & neg_mask.any(dim=1)
    return pos_idx, neg_idx, usable


def batch_hard_triplet_loss(
    embeddings: Tensor, labels: Tensor, margin: float | None = 0.3
) -> Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) over the usable anchors.

    Args:
        embeddings: (N, E) raw embeddings.
        labels: (N,) int64; equal labels are positives (a cell in t and t+1, a mother and its
            daughters), different labels negatives.
        margin: hinge margin; None for the soft margin ``softplus(d_ap - d_an)``.
    """
    if len(labels) < 2:
        return _zero(embeddings)
    dist = pairwise_distances(embeddings)
    pos_idx, neg_idx, usable = batch_hard_mining(dist.detach(), labels)
    if not bool(usable.any()):
        return _zero(embeddings)
    rows = torch.nonzero(usable).squeeze(1)
    d_ap = dist[rows, pos_idx[rows]]
    d_an = dist[rows, neg_idx[rows]]
    if margin is None:
        return F.softplus(d_ap - d_an).mean()
    return F.relu(d_ap - d_an + margin).mean()


# ------------------------------------------------------------------------ pair-scorer losses


def candidate_loss(
    match_logits: Tensor,
    none_logit: Tensor,
    match_target: Tensor,
    known: Tensor,
    row_weight: Tensor | None = None,
) -> Tensor:
    """BCE of the k candidate logits and the "none" logit, per query row.

    Args:
        match_logits: (M, k) candidate logits.
        none_logit: (M,) "no candidate matches" logit.
        match_target: (M, k) in {0, 1}.
        known: (M, k) bool, candidates whose target is known (real, and inside the annotated
            region); padded candidates must be False.
        row_weight: optional (M,) weight per query.

    The "none" target is 1 when no known candidate is positive. Returns the weighted mean over
    all counted terms.
    """
    if match_logits.shape[0] == 0:
        return _zero(match_logits) + _zero(none_logit)
    target = match_target.to(match_logits.dtype)
    bce = F.binary_cross_entropy_with_logits(match_logits, target, reduction="none")
    none_target = ((target * known).sum(dim=1) == 0).to(match_logits.dtype)
    bce_none = F.binary_cross_entropy_with_logits(none_logit, none_target, reduction="none")
    w = known.to(match_logits.dtype)
    rw = torch.ones_like(none_logit) if row_weight is None else row_weight.to(none_logit.dtype)
    num = (bce * w * rw[:, None]).sum() + (bce_none * rw).sum()
    den = (w * rw[:, None]).sum() + rw.sum()
    return num / den.clamp_min(1e-12)


def division_head_loss(logits: Tensor, target: Tensor, row_weight: Tensor | None = None) -> Tensor:
    """2-way cross-entropy of the link scorer's division head (target 1 = query divides)."""
    if logits.shape[0] == 0:
        return _zero(logits)
    ce = F.cross_entropy(logits, target.long(), reduction="none")
    w = torch.ones_like(ce) if row_weight is None else row_weight.to(ce.dtype)
    return _weighted_mean(ce, w)
