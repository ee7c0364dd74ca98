"""Training checkpoints: the full state of a :class:`~napari_cellect.train.fit.Trainer`
(weights, optimiser, scheduler, history, best weights so far, training config), written
atomically after every epoch and read back to resume."""

from __future__ import annotations

import copy
import logging
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


class CheckpointMixin:
    """Saving and restoring the state of :class:`~napari_cellect.train.fit.Trainer` (which sets
    the attributes below)."""

    config: TrainConfig
    bundle: ModelBundle
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    checkpoint: Path | None
    epoch: int
    step: int
    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    detector_ready: bool

    def _state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "epoch": self.epoch,
            "step": self.step,
            "train_config": self.config.to_dict(),
            "bundle": self.bundle.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": copy.deepcopy(self.history),
            "best": copy.deepcopy(self.best),
            "detector_ready": self.detector_ready,
        }

    def save_checkpoint(self, path: str | Path | None = None) -> Path | None:
        """Write the full training state atomically (to ``path`` or the configured file)."""
        path = Path(path) if path is not None else self.checkpoint
        if path is None:
            return None
        with atomic_write(path, mode="wb") as handle:
            torch.save(self._state(), handle)
        logger.info("checkpoint after epoch %d written to %s", self.epoch, path)
        return path

    def _restore(self, state: dict[str, Any]) -> None:
        restored = ModelBundle.from_dict(state["bundle"], source="checkpoint")
        for mine, theirs in zip(self.bundle.modules(), restored.modules()):
            mine.load_state_dict(theirs.state_dict())
        self.bundle.thresholds = restored.thresholds
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.history = list(state["history"])
        self.best = state["best"]
        self.detector_ready = bool(state["detector_ready"])
