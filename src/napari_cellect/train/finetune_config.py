"""Settings of scorer fine-tuning (:class:`FinetuneConfig`) and what its progress reports hold
(:class:`FinetuneProgress`); :func:`napari_cellect.train.finetune.finetune` runs it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_cellect.errors import InputError
from napari_cellect.track.matching import MatchConfig


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of :func:`finetune` (recorded in the tuned bundle's metadata)."""

    epochs: int = 25
    """Most epochs per phase (early stopping usually ends sooner)."""
    steps_per_epoch: int = 8
    """Optimiser steps per epoch, each on a random mini-batch of training rows."""
    batch_size: int = 256
    """Rows per step and scorer (all rows when there are fewer)."""
    lr: float = 3e-4
    """Adam learning rate: small, the model is only nudged."""
    l2sp: float = 1e-3
    """Weight of the L2-SP penalty ``sum (w - w0)^2`` towards the starting weights; 0 disables."""
    validation_fraction: float = 0.2
    """Share of the rows held out for early stopping (at least one row when there are two)."""
    patience: int = 5
    """Stop after this many epochs without a better validation loss."""
    min_improvement: float = 1e-4
    """A validation loss must fall by more than this to count as better."""
    train_link: bool = True
    """Tune the link scorer's candidate and "none" logits."""
    train_division: bool = True
    """Tune the link scorer's division head."""
    train_merge: bool = True
    """Tune the merge scorer."""
    link_weight: float = 1.0
    """Weight of the link candidate loss."""
    division_weight: float = 1.0
    """Weight of the division-head loss (classes are balanced within it)."""
    merge_weight: float = 1.0
    """Weight of the merge candidate loss."""
    match: MatchConfig = field(default_factory=MatchConfig)
    """How nodes are matched to detections (as in training, ``TrainConfig.match``)."""
    seed: int = 0
    """Seed of the validation split and the mini-batches."""
    device: str = "cpu"
    """Where to train ('cpu', 'auto', 'cuda', 'mps'); the scorers are small, the CPU is fine."""
    threads: int | None = 1
    """Torch CPU threads while fine-tuning (restored afterwards): the scorers' matrices are tiny,
    so more threads only add synchronisation, which is slow on a busy machine. None keeps the
    current setting."""

    guard: bool = True
    """Hold some corrections back and adopt each tuned part only where it does better there
    (:mod:`~napari_cellect.train.finetune_guard`); False adopts every part unchecked."""
    holdout_every: int = 3
    """The guard holds back one in this many corrected frames, the last ones (with 3 or more
    corrected frames; else a spatial half). 3, not 5: a fifth of a few corrected frames holds
    too few divisions to judge."""
    calibrate_thresholds: bool = True
    """The guard recalibrates the detection and division thresholds on the corrections."""
    retrain_on_all: bool = True
    """The guard trains the adopted parts again on all corrections (kept unless they then do
    worse on the held-back ones)."""
    retrain_detector_on_all: bool = False
    """With ``retrain_on_all``, the detector too (else the adopted detector stays as trained
    without the held-back corrections and only the scorers are trained again, on its
    detections): training it twice doubles its time, above the 2-minute target for 6 corrected
    frames on 2 CPU cores."""
    adopt_alpha: float = 0.05
    """The guard adopts a part (or new thresholds) only when it is clearly better on the
    held-back corrections: a one-sided sign test on the events it changed, at this level
    (:mod:`~napari_cellect.track.paired_comparison`)."""

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> InputError:
            return InputError(
                f"FinetuneConfig.{name}: expected {expected}, found {getattr(self, name)!r}"
            )

        if self.threads is not None and not _is_int(self.threads, 1):
            raise bad("threads", "None or an integer >= 1")
        for name in ("epochs", "steps_per_epoch", "batch_size", "patience", "holdout_every"):
            if not _is_int(getattr(self, name), 1):
                raise bad(name, "an integer >= 1")
        if not self.lr > 0:
            raise bad("lr", "a number > 0")
        for name in ("l2sp", "min_improvement", "link_weight", "division_weight", "merge_weight"):
            if not getattr(self, name) >= 0:
                raise bad(name, "a number >= 0")
        if not 0.0 < self.adopt_alpha <= 1.0:
            raise bad("adopt_alpha", "a number in (0, 1]")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise bad("validation_fraction", "a number in [0, 1)")


def _is_int(value: object, minimum: int) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, np.integer))
        and bool(value >= minimum)
    )


@dataclass(frozen=True)
class FinetuneProgress:
    """Yielded by :func:`iter_finetune` after the data is ready (epoch 0) and after each epoch."""

    epoch: int
    epochs: int
    train_loss: float
    """Mean training loss of the epoch (NaN at epoch 0)."""
    val_loss: float
    """Validation loss after the epoch (NaN without validation rows)."""
    best_val_loss: float
    n_rows: dict[str, int] = field(default_factory=dict)
    """Training rows per scorer (``link``, ``merge``)."""
    stage: str = ""
    """``links and merges`` or ``divisions`` (see :func:`finetune`)."""

    # the progress.Step view: epochs done of all epochs
    @property
    def done(self) -> int:
        return self.epoch

    @property
    def total(self) -> int:
        return self.epochs
