"""The settings of a training run (:class:`TrainConfig`) and what its progress callback receives
(:class:`TrainProgress`); :func:`napari_cellect.train.fit.fit` runs it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from napari_cellect.errors import InputError
from napari_cellect.settings.conversion import config_from_dict, config_to_dict
from napari_cellect.settings.normalization import NormalizationConfig
from napari_cellect.settings.tiling import TilingConfig
from napari_cellect.settings.tracking import TrackingConfig
from napari_cellect.track.matching import MatchConfig
from napari_cellect.train.data import AugmentConfig, SamplingConfig
from napari_cellect.train.losses import LossConfig
from napari_cellect.train.targets import TargetConfig


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved in checkpoints and bundle metadata)."""

    epochs: int = 20
    """Number of epochs."""
    steps_per_epoch: int = 100
    """Optimiser steps per epoch."""
    batch_size: int = 2
    """Samples per step (each sample is two U-Net passes)."""
    lr: float = 2e-3
    """Peak learning rate of Adam."""
    lr_final_factor: float = 0.05
    """The learning rate decays (cosine) to this fraction of ``lr`` by the last step."""
    warmup_steps: int = 50
    """Linear learning-rate warm-up at the start."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    grad_clip: float = 5.0
    """Clip the global gradient norm to this (0 disables)."""
    seed: int = 0
    """Seed of the weights and of every random draw (epoch e uses the stream (seed, e))."""
    device: str = "auto"
    """``auto``, ``cpu``, ``cuda[:i]`` or ``mps`` (see :func:`resolve_device`)."""
    preset: str = "small"
    """U-Net preset (:func:`napari_cellect.model.unet.unet_preset`)."""
    embedding_dim: int = 32
    """Length of the per-voxel embedding."""
    scorer_hidden: int = 64
    """Width of the pair scorers."""
    thresholds: TrackingConfig = field(default_factory=TrackingConfig)
    """Inference thresholds stored in the bundle (k of merging and linking is taken from here;
    the detection threshold is calibrated at the end)."""
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    """Intensity normalisation, used for training and stored in the bundle."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Crop size and where crops are taken."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Random augmentations of the training crops."""
    targets: TargetConfig = field(default_factory=TargetConfig)
    """How annotations become targets (default radius, centre rings)."""
    losses: LossConfig = field(default_factory=LossConfig)
    """Loss weights and their settings."""
    match: MatchConfig = field(default_factory=MatchConfig)
    """When a detection counts as an annotated cell (training targets and validation)."""
    gt_jitter: float = 0.15
    """Pseudo-detections at annotated centres move by this fraction of the radius (std)."""
    duplicate_fraction: float = 0.3
    """Share of annotated cells given a duplicate pseudo-detection (merge positives)."""
    duplicate_offset: tuple[float, float] = (0.15, 0.6)
    """Distance of a duplicate from the centre, in radii."""
    detector_ready_f1: float = 0.5
    """Validation F1 from which the peak finder's detections also train the scorers."""
    validation_frames: int = 3
    """Frame pairs (t, t+1) per validation source used for F1 and link accuracy."""
    validation_crops: int = 4
    """Fixed crops per validation source for the validation losses."""
    tiling: TilingConfig = field(default_factory=TilingConfig)
    """Tiling used by validation (the inference default)."""
    threshold_grid: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    """Detection thresholds tried for calibration."""
    calibrate: bool = True
    """Store the detection threshold that maximises validation F1, and the division threshold
    that best separates annotated mothers, in the bundle."""
    calibration_frames: int = 8
    """Frame pairs per validation source used for the final calibration (0: no calibration)."""
    division_grid: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    """Division thresholds tried for calibration."""
    min_calibration_divisions: int = 5
    """Fewer annotated mothers than this in the calibration frames: keep the division
    threshold."""
    amp: bool = True
    """Mixed precision on a GPU (no effect on CPU)."""
    workers: int = 0
    """Processes that draw training crops while the network trains (0: the training process
    draws them between steps). Worth it on a GPU, where drawing is most of a step; the samples
    are the same whatever the number."""
    name: str = "trained"
    """Name stored in the bundle metadata."""

    def __post_init__(self) -> None:
        problems = []
        for name in ("epochs", "steps_per_epoch", "batch_size", "embedding_dim", "scorer_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be an integer >= 1, found {value!r}")
        if not self.lr > 0:
            problems.append(f"lr must be positive, found {self.lr}")
        if not 0 < self.lr_final_factor <= 1:
            problems.append(f"lr_final_factor must be in (0, 1], found {self.lr_final_factor}")
        for name in (
            "warmup_steps",
            "workers",
            "validation_frames",
            "validation_crops",
            "calibration_frames",
            "min_calibration_divisions",
        ):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, found {getattr(self, name)}")
        if not 0 <= self.duplicate_fraction <= 1:
            problems.append(
                f"duplicate_fraction must be in [0, 1], found {self.duplicate_fraction}"
            )
        if not self.threshold_grid or not all(0 < t < 1 for t in self.threshold_grid):
            problems.append(
                f"threshold_grid must hold values in (0, 1), found {self.threshold_grid}"
            )
        if problems:
            raise InputError("invalid TrainConfig: " + "; ".join(problems))
        for name in ("threshold_grid", "division_grid"):
            object.__setattr__(self, name, tuple(sorted(float(t) for t in getattr(self, name))))
        object.__setattr__(self, "duplicate_offset", tuple(float(v) for v in self.duplicate_offset))

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        return config_from_dict(cls, values)


@dataclass
class TrainProgress:
    """What the progress callback receives (after every step and every validation); a
    :class:`~napari_cellect.progress.Step`."""

    phase: str
    """``train``, ``validate``, ``calibrate`` or ``done``."""
    epoch: int
    """Current epoch (0-based)."""
    epochs: int
    step: int
    """Optimiser steps done so far (over all epochs)."""
    total_steps: int
    losses: dict[str, float] = field(default_factory=dict)
    """Loss terms of the last step (train) or the validation means (validate)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Validation metrics (``f1``, ``threshold``, ``link_accuracy``, ``score``)."""

    # the progress.Step view: optimiser steps done of all steps, in a phase
    @property
    def stage(self) -> str:
        return self.phase

    @property
    def done(self) -> int:
        return self.step

    @property
    def total(self) -> int:
        return self.total_steps
