"""Training checkpoints: the full state of a :class:`~napari_cellect.train.fit.Trainer`
(weights, optimiser, scheduler, where the loop is, history, best weights so far, training
config), written atomically after every epoch and read back to resume."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from napari_cellect.data.atomic import atomic_write
from napari_cellect.errors import ModelError
from napari_cellect.model.bundle import ModelBundle, read_torch_file
from napari_cellect.train.config import TrainConfig

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "napari-cellect-train-checkpoint"
CHECKPOINT_VERSION = 1


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a training checkpoint written by :func:`~napari_cellect.train.fit.fit`."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint file not found")
    state = read_torch_file(path, what="a napari-cellect training checkpoint")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ModelError(
            f"{path}: not a napari-cellect training checkpoint (expected format "
            f"{CHECKPOINT_FORMAT!r}, found {found!r})"
        )
    if state.get("version") != CHECKPOINT_VERSION:
        raise ModelError(
            f"{path}: unsupported checkpoint version {state.get('version')!r}; expected "
            f"{CHECKPOINT_VERSION}"
        )
    return state


@dataclass
class LoopState:
    """Where a training run is: what a checkpoint keeps besides the weights and the
    optimiser."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    """The best epoch so far: its score, number, metrics and weights."""
    detector_ready: bool = False
    """The validation detection F1 reached ``TrainConfig.detector_ready_f1``: the peak
    finder's detections now train the scorers too."""


class Checkpoints:
    """Writes and restores the training state of one run; ``path`` None writes nothing
    unless a path is given to :meth:`save`."""

    def __init__(
        self,
        path: Path | None,
        config: TrainConfig,
        bundle: ModelBundle,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
    ):
        self.path = path
        self.config = config
        self.bundle = bundle
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler

    def _state(self, loop: LoopState) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "epoch": loop.epoch,
            "step": loop.step,
            "train_config": self.config.to_dict(),
            "bundle": self.bundle.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": copy.deepcopy(loop.history),
            "best": copy.deepcopy(loop.best),
            "detector_ready": loop.detector_ready,
        }

    def save(self, loop: LoopState, path: str | Path | None = None) -> Path | None:
        """Write the full training state atomically (to ``path`` or the configured file)."""
        path = Path(path) if path is not None else self.path
        if path is None:
            return None
        with atomic_write(path, mode="wb") as handle:
            torch.save(self._state(loop), handle)
        logger.info("checkpoint after epoch %d written to %s", loop.epoch, path)
        return path

    def restore(self, state: dict[str, Any]) -> LoopState:
        """Load the weights, optimiser, scheduler and scaler of ``state`` (read by
        :func:`load_checkpoint`); returns where its loop was."""
        restored = ModelBundle.from_dict(state["bundle"], source="checkpoint")
        for mine, theirs in zip(self.bundle.modules(), restored.modules()):
            mine.load_state_dict(theirs.state_dict())
        self.bundle.thresholds = restored.thresholds
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        return LoopState(
            epoch=int(state["epoch"]),
            step=int(state["step"]),
            history=list(state["history"]),
            best=state["best"],
            detector_ready=bool(state["detector_ready"]),
        )
