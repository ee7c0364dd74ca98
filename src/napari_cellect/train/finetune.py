"""Fine-tuning the link and merge scorers from corrections.

Module layout: :mod:`~napari_cellect.train.finetune_config` (settings),
:mod:`~napari_cellect.train.finetune_rows` (training rows from corrections and cached
detections), :mod:`~napari_cellect.train.finetune_losses` (losses and phases); this module holds
the training loop. Re-linking with the tuned model is :mod:`napari_cellect.track.relink`.

**Training.** Adam with a small learning rate, a few short epochs of random mini-batches, a
held-out part of the rows (``validation_fraction``, at least one row) for early stopping (the
weights of the best validation loss are kept, which may be the starting weights), and an L2-SP
penalty ``l2sp * ||w - w0||^2`` that keeps the weights near the starting ones so a few
corrections cannot wreck the model. Two phases, each with its own early stopping: first the link
and merge candidates, then the link scorer's division head alone on the tuned encoder (the few
division labels are memorised within a few steps, long before the link labels are learned). A
loss term is used only when its training rows hold both classes (a set of only positives would
teach "everything matches"). The networks stay in eval
mode: dropout is off and batch-norm statistics are those of the base model. The given bundle is
never modified: everything happens on a deep copy, and a cancelled run raises
:class:`~napari_cellect.errors.Cancelled`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from napari_cellect.errors import Cancelled, InputError
from napari_cellect.infer.device import resolve_device
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.model.pair_scorer import BaseScorer
from napari_cellect.progress import OnStep, run_to_end
from napari_cellect.settings.linking import LinkingConfig
from napari_cellect.track.corrections import CorrectionSet
from napari_cellect.track.detections import Detections
from napari_cellect.train.finetune_config import FinetuneConfig, FinetuneProgress
from napari_cellect.train.finetune_losses import TrainingPhase, loss_terms, training_phases
from napari_cellect.train.finetune_rows import TrainingData, build_training_data

__all__ = ["FinetuneProgress", "finetune", "iter_finetune"]

logger = logging.getLogger(__name__)


def iter_finetune(
    bundle: ModelBundle,
    corrections: CorrectionSet,
    detections: Sequence[Detections],
    *,
    z_ratio: float,
    config: FinetuneConfig | None = None,
    linking: LinkingConfig | None = None,
    should_stop: Callable[[], bool] | None = None,
    source: str | None = None,
) -> Generator[FinetuneProgress, None, ModelBundle]:
    """:func:`finetune` as a generator: yields :class:`FinetuneProgress`, returns the tuned
    :class:`ModelBundle` (the generator's return value). Argument errors (z_ratio, too few
    corrections) are raised at the call; torch runs with ``config.threads`` threads while the
    generator runs."""
    cfg = config or FinetuneConfig()
    if not (np.isfinite(z_ratio) and z_ratio > 0):
        raise InputError(f"z_ratio: expected a finite number > 0, found {z_ratio}")
    corrections.require_trainable()
    return _finetune_steps(
        bundle, corrections, detections, z_ratio, cfg, linking, should_stop, source
    )


@dataclass
class _Outcome:
    """What the training loop did (for the metadata)."""

    epochs_run: int = 0
    best_epochs: dict[str, int] = field(default_factory=dict)
    val_before: dict[str, float] = field(default_factory=dict)
    val_after: dict[str, float] = field(default_factory=dict)


def _finetune_steps(
    bundle: ModelBundle,
    corrections: CorrectionSet,
    detections: Sequence[Detections],
    z_ratio: float,
    cfg: FinetuneConfig,
    linking: LinkingConfig | None,
    should_stop: Callable[[], bool] | None,
    source: str | None,
) -> Generator[FinetuneProgress, None, ModelBundle]:
    with _torch_threads(cfg.threads):
        started = time.perf_counter()
        tuned = copy.deepcopy(bundle)
        tuned.to(resolve_device(cfg.device)).eval()
        data = build_training_data(tuned, corrections, detections, z_ratio, cfg, linking)
        rng = np.random.default_rng(cfg.seed)
        terms = loss_terms(tuned, data, cfg, rng, next(tuned.link_scorer.parameters()).device)
        phases = training_phases(terms)
        anchors = {id(p): p.detach().clone() for ph in phases for p in ph.params}
        n_rows = {t.name: len(t.train_idx) for t in terms}
        outcome = _Outcome()
        with torch.no_grad():
            for phase in phases:
                if phase.has_validation:
                    outcome.val_before[phase.name] = float(phase.loss(cfg).item())
        total = cfg.epochs * len(phases)
        yield FinetuneProgress(0, total, float("nan"), float("nan"), float("nan"), n_rows, "ready")
        for phase in phases:
            yield from _train_phase(phase, cfg, rng, anchors, should_stop, outcome, total, n_rows)
        if should_stop is not None and should_stop():
            raise Cancelled("fine-tuning cancelled; the model is unchanged")
        tuned.eval()
        seconds = time.perf_counter() - started
        _record(tuned, corrections, data, cfg, source, outcome, seconds)
        logger.info(
            "fine-tuned on %s rows in %.1f s: validation loss %s -> %s",
            n_rows,
            seconds,
            outcome.val_before,
            outcome.val_after,
        )
        return tuned


def _train_phase(
    phase: TrainingPhase,
    cfg: FinetuneConfig,
    rng: np.random.Generator,
    anchors: dict[int, Tensor],
    should_stop: Callable[[], bool] | None,
    outcome: _Outcome,
    total_epochs: int,
    n_rows: dict[str, int],
) -> Iterator[FinetuneProgress]:
    """Adam on ``phase.params`` with L2-SP towards ``anchors``; keeps the weights of the best
    validation loss (possibly the starting ones)."""
    moving = {id(p) for p in phase.params}
    for scorer in phase.scorers:
        for p in scorer.parameters():
            p.requires_grad_(id(p) in moving)
    optimiser = torch.optim.Adam(phase.params, lr=cfg.lr)

    def validation() -> float:
        if not phase.has_validation:
            return float("nan")
        with torch.no_grad():
            return float(phase.loss(cfg).item())

    best = validation()
    best_state = _state(phase.scorers)
    best_epoch = stale = 0
    try:
        for epoch in range(1, cfg.epochs + 1):
            losses = []
            for _ in range(cfg.steps_per_epoch):
                if should_stop is not None and should_stop():
                    raise Cancelled("fine-tuning cancelled; the model is unchanged")
                optimiser.zero_grad()
                loss = phase.loss(cfg, rng)
                if cfg.l2sp > 0:
                    drift = sum(((p - anchors[id(p)]) ** 2).sum() for p in phase.params)
                    loss = loss + cfg.l2sp * drift
                loss.backward()
                optimiser.step()
                losses.append(float(loss.item()))
            val = validation()
            outcome.epochs_run += 1
            if np.isnan(val) or val < best - cfg.min_improvement:
                best, best_state, best_epoch, stale = val, _state(phase.scorers), epoch, 0
            else:
                stale += 1
            yield FinetuneProgress(
                outcome.epochs_run,
                total_epochs,
                float(np.mean(losses)),
                val,
                best,
                n_rows,
                phase.name,
            )
            if stale >= cfg.patience:
                logger.debug("%s: early stop at epoch %d (best %d)", phase.name, epoch, best_epoch)
                break
    finally:
        for scorer in phase.scorers:
            for p in scorer.parameters():
                p.requires_grad_(True)
    _load_state(phase.scorers, best_state)
    outcome.best_epochs[phase.name] = best_epoch
    if not np.isnan(best):
        outcome.val_after[phase.name] = best


def finetune(
    bundle: ModelBundle,
    corrections: CorrectionSet,
    detections: Sequence[Detections],
    *,
    z_ratio: float,
    config: FinetuneConfig | None = None,
    linking: LinkingConfig | None = None,
    progress: OnStep[FinetuneProgress] | None = None,
    should_stop: Callable[[], bool] | None = None,
    source: str | None = None,
) -> ModelBundle:
    """Fine-tune ``bundle``'s link scorer (with its division head) and merge scorer on
    ``corrections``; returns a new bundle (``bundle`` itself is never modified).

    Args:
        bundle: the model that made the corrected tracks.
        corrections: labels from :func:`~napari_cellect.track.corrections.build_corrections`.
        detections: the cached raw detections of (at least) the corrected frames, as the
            prediction stage made them (before merging).
        z_ratio: z spacing over xy spacing.
        config: :class:`FinetuneConfig`.
        linking: linking settings for the candidate count (default: the bundle's thresholds).
        progress: called with a :class:`FinetuneProgress` after each epoch.
        should_stop: polled before each step; True raises :class:`Cancelled`.
        source: recorded in the new bundle's metadata (for example the tracks file).

    Raises:
        NotEnoughCorrections: no corrections, only positives, or nothing matched a detection.
        Cancelled: ``should_stop`` returned True.
    """
    runner = iter_finetune(
        bundle,
        corrections,
        detections,
        z_ratio=z_ratio,
        config=config,
        linking=linking,
        should_stop=should_stop,
        source=source,
    )
    return run_to_end(runner, progress)


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch CPU threads, then restore the previous number."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _state(scorers: list[BaseScorer]) -> list[dict[str, Tensor]]:
    return [{k: v.detach().clone() for k, v in s.state_dict().items()} for s in scorers]


def _load_state(scorers: list[BaseScorer], states: list[dict[str, Tensor]]) -> None:
    for scorer, state in zip(scorers, states, strict=True):
        scorer.load_state_dict(state)


def _record(
    bundle: ModelBundle,
    cs: CorrectionSet,
    data: TrainingData,
    cfg: FinetuneConfig,
    source: str | None,
    outcome: _Outcome,
    seconds: float,
) -> None:
    """What the bundle was tuned on, in its metadata history."""

    def total(values: dict[str, float]) -> float | None:
        return float(sum(values.values())) if values else None

    details: dict[str, Any] = {
        "source": str(source or cs.source or ""),
        **{f"n_{k}": int(v) for k, v in cs.counts().items()},
        "link_rows": len(data.link),
        "merge_rows": len(data.merge),
        "synthetic_detections": int(data.n_synthetic),
        "frames": f"{data.frames[0]}-{data.frames[-1]}" if data.frames else "",
        "epochs_run": int(outcome.epochs_run),
        "best_epochs": ", ".join(f"{k}: {v}" for k, v in outcome.best_epochs.items()),
        "val_loss_before": total(outcome.val_before),
        "val_loss_after": total(outcome.val_after),
        "division_val_loss_before": outcome.val_before.get("divisions"),
        "division_val_loss_after": outcome.val_after.get("divisions"),
        "seconds": round(float(seconds), 2),
        "lr": cfg.lr,
        "l2sp": cfg.l2sp,
    }
    bundle.metadata.record_version("finetune", "ft", replace=True, **details)
