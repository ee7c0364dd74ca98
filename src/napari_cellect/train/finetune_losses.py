"""The losses of scorer fine-tuning: each scorer's rows split into training and validation
(:class:`LossTerm`), its candidate and division losses, and the phases that train them
(:class:`TrainingPhase`); the loop is :func:`napari_cellect.train.finetune.finetune`."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from napari_cellect.errors import NotEnoughCorrections
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.model.pair_scorer import BaseScorer, PairScores
from napari_cellect.train.finetune_config import FinetuneConfig
from napari_cellect.train.finetune_rows import TrainingData
from napari_cellect.train.losses import division_head_loss

logger = logging.getLogger(__name__)


def _split(n: int, strata: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean validation mask: ``fraction`` of each stratum, at least one row when n >= 2."""
    val = np.zeros(n, bool)
    if n < 2 or fraction <= 0:
        return val
    for key in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == key))
        take = int(round(fraction * len(members)))
        if take >= len(members):
            take = len(members) - 1
        val[members[:take]] = True
    if not val.any():
        val[rng.integers(n)] = True
    return val


def _candidate_bce(scores: PairScores, rows: dict[str, Tensor], idx: Tensor) -> Tensor:
    """BCE of the known candidates and of the known "none" targets (always 0)."""
    known = rows["known"][idx].float()
    none_known = rows["none_known"][idx].float()
    bce = F.binary_cross_entropy_with_logits(
        scores.candidates.float(), rows["target"][idx], reduction="none"
    )
    none = F.binary_cross_entropy_with_logits(
        scores.none.float(), torch.zeros_like(none_known), reduction="none"
    )
    denominator = (known.sum() + none_known.sum()).clamp_min(1.0)
    return ((bce * known).sum() + (none * none_known).sum()) / denominator


def _division_loss(scores: PairScores, rows: dict[str, Tensor], idx: Tensor) -> Tensor:
    labels = rows["division"][idx]
    keep = labels >= 0
    if scores.division is None or not bool(keep.any()):
        return scores.candidates.sum() * 0.0
    # the classes keep their natural frequencies, as in the base training: the bundle's division
    # threshold was tuned on probabilities calibrated to them, and re-balancing the few labels
    # here would shift every probability up and the false divisions with it
    return division_head_loss(scores.division.float()[keep], labels[keep])


@dataclass
class LossTerm:
    """One scorer's rows, split into training and validation, and which losses it trains."""

    name: str
    scorer: BaseScorer
    rows: dict[str, Tensor]
    train_idx: np.ndarray
    val_idx: np.ndarray
    candidates: bool
    division: bool

    def loss(self, idx: np.ndarray, part: str, cfg: FinetuneConfig) -> Tensor:
        """The ``candidates`` or ``division`` loss (weighted) of rows ``idx``."""
        index = torch.as_tensor(idx, dtype=torch.long, device=self.rows["target"].device)
        keys = (
            "query_emb",
            "cand_emb",
            "offsets",
            "query_radius",
            "cand_radius",
            "query_div",
            "cand_div",
        )
        scores = self.scorer.score(
            **{k: self.rows[k][index] for k in keys}, mask=self.rows["mask"][index]
        )
        if part == "division":
            return cfg.division_weight * _division_loss(scores, self.rows, index)
        weight = cfg.link_weight if self.name == "link" else cfg.merge_weight
        return weight * _candidate_bce(scores, self.rows, index)


@dataclass
class TrainingPhase:
    """One stage of fine-tuning: some losses, the parameters they move, early stopping on their
    validation loss."""

    name: str
    parts: list[tuple[LossTerm, str]]
    params: list[Tensor]
    scorers: list[BaseScorer]

    def loss(self, cfg: FinetuneConfig, rng: np.random.Generator | None = None) -> Tensor:
        """Training loss of a random mini-batch (``rng``), or the validation loss (no rng)."""
        total = torch.zeros(())
        for term, part in self.parts:
            if rng is None:
                if len(term.val_idx) == 0:
                    continue
                idx = term.val_idx
            else:
                idx = rng.choice(
                    term.train_idx, size=min(cfg.batch_size, len(term.train_idx)), replace=False
                )
            total = total + term.loss(idx, part, cfg)
        return total

    @property
    def has_validation(self) -> bool:
        return any(len(term.val_idx) for term, _ in self.parts)


def training_phases(terms: list[LossTerm]) -> list[TrainingPhase]:
    """Links and merges first; then the division head alone, on the tuned encoder.

    The division labels are few (a handful of mothers) and the head memorises them within a
    few steps while the link labels still teach: each gets its own early stopping. Only the
    division head's own parameters move in the second phase, so it cannot undo the first; the
    original architecture has no separate head (its division logits share the output layer), so
    there the second phase keeps the candidate loss too.
    """
    phases = []
    candidates = [t for t in terms if t.candidates]
    if candidates:
        phases.append(
            TrainingPhase(
                "links and merges",
                [(t, "candidates") for t in candidates],
                [p for t in candidates for p in t.scorer.parameters()],
                [t.scorer for t in candidates],
            )
        )
    for term in terms:
        if not term.division:
            continue
        head = getattr(term.scorer, "division_head", None)
        if head is not None:
            phases.append(
                TrainingPhase(
                    "divisions", [(term, "division")], list(head.parameters()), [term.scorer]
                )
            )
        else:
            parts = [(term, "division")] + ([(term, "candidates")] if term.candidates else [])
            phases.append(
                TrainingPhase("divisions", parts, list(term.scorer.parameters()), [term.scorer])
            )
    return phases


def _classes(rows: dict[str, Tensor], idx: np.ndarray) -> tuple[bool, bool]:
    """(candidate labels of both classes, division labels of both classes) among rows ``idx``."""
    index = torch.as_tensor(idx, dtype=torch.long, device=rows["known"].device)
    known = rows["known"][index]
    target = rows["target"][index]
    cand = bool((known & (target > 0)).any()) and bool((known & (target == 0)).any())
    division = rows["division"][index]
    return cand, bool((division == 1).any()) and bool((division == 0).any())


def loss_terms(
    bundle: ModelBundle,
    data: TrainingData,
    cfg: FinetuneConfig,
    rng: np.random.Generator,
    device: torch.device,
) -> list[LossTerm]:
    """Split each scorer's rows and decide which of its losses can be trained."""
    terms: list[LossTerm] = []
    missing: list[str] = []
    specs = (
        ("link", data.link, bundle.link_scorer, cfg.train_link, cfg.train_division),
        ("merge", data.merge, bundle.merge_scorer, cfg.train_merge, False),
    )
    for name, rows, scorer, use_cand, use_div in specs:
        if len(rows) == 0:
            missing.append(f"no {name} rows (no {name} label matched a detection)")
            continue
        tensors = rows.tensors(device)
        has_pos = (tensors["known"] & (tensors["target"] > 0)).any(dim=1).cpu().numpy()
        strata = has_pos.astype(np.int64) * 3 + tensors["division"].cpu().numpy() + 1
        val = _split(len(has_pos), strata, cfg.validation_fraction, rng)
        train_idx, val_idx = np.flatnonzero(~val), np.flatnonzero(val)
        cand_ok, div_ok = _classes(tensors, train_idx)
        cand_ok &= use_cand
        div_ok &= use_div and scorer.config.has_division
        if use_cand and not cand_ok:
            missing.append(f"{name} candidates of one class only")
        if name == "link" and use_div and not div_ok:
            logger.info("division head not tuned: its labels hold one class only")
        if cand_ok or div_ok:
            terms.append(LossTerm(name, scorer, tensors, train_idx, val_idx, cand_ok, div_ok))
    if not terms:
        raise NotEnoughCorrections(
            "nothing to fine-tune: " + "; ".join(missing) + ". Approve links next to other "
            "cells, break wrong links or mark divisions, on frames whose detections are cached"
        )
    for term in terms:
        logger.info(
            "%s scorer: %d training and %d validation rows%s",
            term.name,
            len(term.train_idx),
            len(term.val_idx),
            " (with the division head)" if term.division else "",
        )
    return terms
