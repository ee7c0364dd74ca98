"""Training a complete model (U-Net + merge scorer + link scorer) from point annotations.

:func:`fit` runs one loop with one Adam optimiser over all three networks (cellect-method.md §5,
without the original's bugs listed in §8 item 11):

- **U-Net losses from the first step** on random crops (:mod:`napari_cellect.train.data`):
  segmentation, ordinal centre levels, radius inside nuclei, divisions
  (:mod:`napari_cellect.train.losses`), on both passes of each sample (pair (t, t+1) for frame
  t and (t+1, t+2) for frame t+1).
- **Batch-hard triplet loss** on the embeddings read at the annotated centres of frame t (pass
  A) and frame t+1 (pass B); a cell, its continuation and a mother with both daughters share a
  label (:mod:`napari_cellect.train.targets`), sample by sample, so labels never mix.
- **Scorer losses, two views.** (1) From the first step, on *pseudo-detections at the
  annotated centres*, jittered by a fraction of the radius, plus random duplicates (the
  positives of the merge scorer): the scorers learn from the start, whatever the detector
  does. (2) Once the validation detection F1 reaches :attr:`TrainConfig.detector_ready_f1`,
  also on the *detections of the one peak finder* (:func:`napari_cellect.infer.detect.detect`)
  in each crop, matched to the annotations one-to-one by the Hungarian algorithm within a
  radius (:func:`~napari_cellect.train.targets.match_detections`); unmatched detections within a
  cell's gate are duplicates of it, the others false positives (negatives as candidates, never
  queries). Candidates are the k nearest detections in scaled space, exactly as merging and
  linking choose them, and features come from :func:`napari_cellect.model.pair_scorer.pair_features`
  with the embedding kept in the autograd graph (radius and division probabilities detached: they
  have their own losses).

**Validation** (every epoch) runs the real inference path
(:func:`napari_cellect.infer.predict.predict_frame`: normalisation, tiling, peak finder) on whole validation frames, matches detections to the
annotations and measures detection F1 (best over the threshold grid) and link accuracy (share of
annotated links whose best-scoring candidate is a true successor), plus the losses on fixed
validation crops. The best epoch by ``(F1 + link accuracy) / 2`` is kept (by the lowest
validation loss when ``validation_frames`` is 0). At the end the detection threshold that
maximises validation F1, and the division threshold (of the link scorer's P(divides)) that
best separates the annotated mothers, are stored in the bundle, from ``calibration_frames``
frame pairs per validation source.

**Checkpoints** are written atomically after every epoch: all weights, the optimiser and
scheduler state, the history, the best weights so far and the training config. Every epoch
draws its random numbers from ``(seed, epoch)``, so ``resume`` continues exactly as if the run
had never stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from napari_cellect.config import (
    NormalizationConfig,
    TrackingConfig,
    config_from_dict,
    config_to_dict,
)
from napari_cellect.data.atomic import atomic_write
from napari_cellect.errors import Cancelled, InputError, ModelError
from napari_cellect.infer.detect import detect
from napari_cellect.infer.device import amp_dtype, autocast_context, resolve_device
from napari_cellect.infer.normalize import normalize_pair
from napari_cellect.infer.predict import predict_frame, resolve_model
from napari_cellect.infer.tiling import TilingConfig
from napari_cellect.model.bundle import BundleMetadata, ModelBundle, read_torch_file
from napari_cellect.model.pair_scorer import (
    BaseScorer,
    PairScorerConfig,
    PairScores,
    build_scorer,
    pair_features,
)
from napari_cellect.model.scoring import ModelScorer
from napari_cellect.model.unet import UNet3D, UNetOutput, unet_preset
from napari_cellect.track.detections import Detections
from napari_cellect.track.scoring_protocol import nearest_candidates
from napari_cellect.train.data import (
    AugmentConfig,
    Batch,
    Sampler,
    SamplingConfig,
    TrainSample,
    as_source,
    collate,
    next_frame,
)
from napari_cellect.train.losses import (
    LossConfig,
    batch_hard_triplet_loss,
    candidate_loss,
    division_head_loss,
    division_loss,
    ordinal_centre_loss,
    radius_loss,
    segmentation_loss,
)
from napari_cellect.train.targets import (
    NUCLEUS,
    FrameCells,
    MatchConfig,
    TargetConfig,
    jittered_cells,
    match_detections,
)

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "napari-cellect-train-checkpoint"
CHECKPOINT_VERSION = 1


# =============================================================================== configuration


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
        for name in ("warmup_steps", "validation_frames", "validation_crops",
                     "calibration_frames", "min_calibration_divisions"):
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
    """What the progress callback receives (after every step and every validation)."""

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


ProgressCallback = Callable[[TrainProgress], None]


# =============================================================================== helpers


def _voxels(positions: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    vox = np.rint(np.asarray(positions, np.float64)).astype(np.int64).reshape(-1, 3)
    return np.clip(vox, 0, np.asarray(shape) - 1)


@dataclass
class _FrameSet:
    """Detections (real or pseudo) of one frame of one sample, with live features."""

    positions: np.ndarray  # (N, 3) crop voxels
    cell: np.ndarray  # (N,) index into the frame's FrameCells, -1 = false positive
    inside: np.ndarray  # (N,) bool: in the annotated (valid) region
    embedding: Tensor | None = None  # (N, E), in the graph
    radius: Tensor | None = None  # (N,), detached
    division: Tensor | None = None  # (N, 2) probabilities, detached


class _BatchReader:
    """Collects reads of the U-Net outputs at voxels of the batch items and serves them all
    with one gather (so the backward pass scatters into the embedding map once, not per read)."""

    def __init__(self, out: UNetOutput):
        self.out = out
        self.shape = tuple(out.seg.shape[2:])
        self._items: list[np.ndarray] = []
        self._flat: list[np.ndarray] = []

    def add(self, b: int, voxels: np.ndarray) -> int:
        """Queue the voxels (N, 3) of batch item ``b``; returns the request's number."""
        vox = np.asarray(voxels, np.int64).reshape(-1, 3)
        self._items.append(np.full(len(vox), b, np.int64))
        self._flat.append(np.ravel_multi_index((vox[:, 0], vox[:, 1], vox[:, 2]), self.shape)
                          if len(vox) else np.zeros(0, np.int64))  # fmt: skip
        return len(self._items) - 1

    def run(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Per request: (embedding (N, E) in the graph, radius (N,), division probs (N, 2))."""
        if not self._items:
            return []
        dev = self.out.embedding.device
        items = torch.as_tensor(np.concatenate(self._items), device=dev)
        flat = torch.as_tensor(np.concatenate(self._flat), device=dev)
        emb = self.out.embedding.flatten(2)[items, :, flat].float()
        radius = self.out.radius.detach().flatten(2)[items, 0, flat].float()
        division = torch.sigmoid(self.out.division.detach().flatten(2)[items, :, flat].float())
        sizes = [len(f) for f in self._flat]
        return list(zip(emb.split(sizes), radius.split(sizes), division.split(sizes)))


def candidate_features(
    q_pos: np.ndarray, q_emb: Tensor, q_radius: Tensor, q_div: Tensor,
    c_pos: np.ndarray, c_emb: Tensor, c_radius: Tensor, c_div: Tensor,
    cand_idx: np.ndarray, z_ratio: float,
) -> tuple[dict[str, Tensor], Tensor]:
    """:func:`pair_features` of queries against their candidates, built as inference builds
    them (:class:`napari_cellect.model.scoring.ModelScorer`): offsets are candidate minus query
    in scaled space, padded slots (``cand_idx`` -1) repeat the row's last real candidate and
    are masked. Returns the features and the (M, k) validity mask."""
    device = q_emb.device
    valid = cand_idx >= 0
    m, k = cand_idx.shape
    last = k - 1 - np.argmax(valid[:, ::-1], axis=1) if k else np.zeros(m, np.int64)
    fill = np.maximum(cand_idx[np.arange(m), last], 0) if k else np.zeros(m, np.int64)
    safe = np.where(valid, cand_idx, fill[:, None])
    scale = np.array([z_ratio, 1.0, 1.0])
    offsets = (np.asarray(c_pos)[safe] - np.asarray(q_pos)[:, None, :]) * scale
    idx = torch.as_tensor(safe, dtype=torch.long, device=device)
    features = pair_features(
        q_emb, c_emb[idx], torch.as_tensor(offsets, dtype=torch.float32, device=device),
        q_radius, c_radius[idx], q_div, c_div[idx],
    )  # fmt: skip
    return features, torch.as_tensor(valid, device=device)


def _cat_features(parts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


@dataclass
class _ScorerRows:
    """Accumulated query rows of one scorer (merge or link) over a batch."""

    features: list[dict[str, Tensor]] = field(default_factory=list)
    mask: list[Tensor] = field(default_factory=list)
    target: list[np.ndarray] = field(default_factory=list)
    known: list[np.ndarray] = field(default_factory=list)
    division: list[np.ndarray] = field(default_factory=list)
    weight: list[np.ndarray] = field(default_factory=list)

    def add(self, features: dict[str, Tensor], mask: Tensor, target: np.ndarray,
            known: np.ndarray, division: np.ndarray, weight: np.ndarray) -> None:
        if len(target) == 0:
            return
        self.features.append(features)
        self.mask.append(mask)
        self.target.append(target)
        self.known.append(known)
        self.division.append(division)
        self.weight.append(weight)

    def __len__(self) -> int:
        return sum(len(t) for t in self.target)


def _scorer_loss(scorer: BaseScorer, rows: _ScorerRows, device: torch.device,
                 with_division: bool) -> tuple[Tensor | None, Tensor | None]:
    if len(rows) == 0:
        return None, None
    feats = _cat_features(rows.features)
    mask = torch.cat(rows.mask)
    scores: PairScores = scorer(feats, mask)
    target = torch.as_tensor(np.concatenate(rows.target), dtype=torch.float32, device=device)
    known = torch.as_tensor(np.concatenate(rows.known), device=device) & mask
    weight = torch.as_tensor(np.concatenate(rows.weight), dtype=torch.float32, device=device)
    loss = candidate_loss(scores.candidates.float(), scores.none.float(), target, known, weight)
    div_loss = None
    if with_division and scores.division is not None:
        div_target = torch.as_tensor(np.concatenate(rows.division), device=device)
        div_loss = division_head_loss(scores.division.float(), div_target, weight)
    return loss, div_loss


def _lr_schedule(cfg: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to ``lr_final_factor`` at the last step (a plain
    function, so the scheduler's state dict stays free of code)."""
    total = cfg.epochs * cfg.steps_per_epoch

    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        span = max(1, total - cfg.warmup_steps)
        done = min(1.0, (step - cfg.warmup_steps) / span)
        cosine = 0.5 * (1 + math.cos(math.pi * done))
        return cfg.lr_final_factor + (1 - cfg.lr_final_factor) * cosine

    return factor


# =============================================================================== the trainer


class Trainer:
    """The training loop; :func:`fit` is the usual entry point."""

    def __init__(
        self,
        train_sources: Sequence[Any],
        val_sources: Sequence[Any] | None,
        config: TrainConfig | None = None,
        *,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
        checkpoint: str | Path | None = None,
        resume: str | Path | None = None,
    ):
        config = config or TrainConfig()
        state = None
        if resume is not None:
            state = load_checkpoint(resume)
            saved = TrainConfig.from_dict(state["train_config"])
            config = dataclasses.replace(saved, epochs=config.epochs, device=config.device)
            logger.info("resuming %s at epoch %d (step %d)", resume, state["epoch"], state["step"])
        self.config = config
        self.progress = progress
        self.should_stop = should_stop
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        if self.checkpoint is not None and not self.checkpoint.parent.is_dir():
            raise InputError(
                f"cannot write checkpoints: the folder {self.checkpoint.parent} does not exist",
                self.checkpoint,
            )
        self.device = resolve_device(config.device)
        self.bundle = self._new_bundle()
        self.unet, self.merge, self.link = self.bundle.modules()
        bad = [f"{axis}={size}" for axis, size, m in
               zip("ZYX", config.sampling.crop, self.unet.size_multiple) if size % m]  # fmt: skip
        if bad:
            raise InputError(
                f"the training crop {config.sampling.crop} must be a multiple of the U-Net's "
                f"size multiple {self.unet.size_multiple} (z, y, x); found {', '.join(bad)}"
            )
        for module in self.bundle.modules():
            module.to(self.device)
        inference = resolve_model(self.bundle)
        self.normalization = inference.normalization
        self.detection = inference.detection
        self.sampler = Sampler(train_sources, config.sampling, config.augment, config.targets,
                               self.normalization)  # fmt: skip
        if val_sources:
            val_augment = dataclasses.replace(config.augment, enabled=False)
            self.val_sampler = Sampler(val_sources, config.sampling, val_augment, config.targets,
                                       self.normalization)  # fmt: skip
        else:
            logger.warning("no validation data: validating on the training data")
            self.val_sampler = Sampler(
                [s for s in self.sampler.sources], config.sampling,
                dataclasses.replace(config.augment, enabled=False), config.targets,
                self.normalization,
            )  # fmt: skip
        self.val_crops = self._validation_crops()
        self.val_pairs = self._validation_pairs(config.validation_frames)
        params = [p for m in self.bundle.modules() for p in m.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        self.total_steps = config.epochs * config.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_schedule(config))
        # float16 autocast (GPUs without bfloat16) needs loss scaling; a no-op otherwise
        fp16 = config.amp and amp_dtype(self.device) == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.detector_ready = False
        if state is not None:
            self._restore(state)

    # ------------------------------------------------------------------ setup
    def _new_bundle(self) -> ModelBundle:
        cfg = self.config
        unet_config = unet_preset(cfg.preset, embedding_dim=cfg.embedding_dim)
        if unet_config.architecture != "compact":
            raise InputError(
                f"training supports the 'compact' U-Net presets, found preset {cfg.preset!r} "
                f"({unet_config.architecture}); the original network is imported, not trained"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            unet = UNet3D(unet_config)
            scorers = [
                build_scorer(PairScorerConfig(
                    kind=kind, k=getattr(cfg.thresholds, kind).k,
                    embedding_dim=cfg.embedding_dim, hidden=cfg.scorer_hidden,
                ))
                for kind in ("merge", "link")
            ]  # fmt: skip
        metadata = BundleMetadata(name=cfg.name)
        return ModelBundle(unet, scorers[0], scorers[1], cfg.thresholds, cfg.normalization,
                           metadata)  # fmt: skip

    def _validation_crops(self) -> list[TrainSample]:
        """Fixed, un-augmented crops (cell-centred) for the validation losses."""
        rng = np.random.default_rng([self.config.seed, 7919])
        crops = []
        sampler = self.val_sampler
        for source in range(len(sampler.sources)):
            frames = sampler.frames[source]
            if len(frames) == 0:
                continue
            for i in range(self.config.validation_crops):
                t = int(frames[(i * len(frames)) // max(1, self.config.validation_crops)])
                crops.append(sampler.sample(rng, source=source, t=t, augment=False))
        return crops

    def _validation_pairs(self, n: int) -> list[tuple[int, int]]:
        """(source, t) of ``n`` frame pairs per validation source for F1, link accuracy and
        calibration: evenly spread annotated frames t whose frame t+1 is annotated too."""
        pairs = []
        for source, index in enumerate(self.val_sampler.indices):
            frames = [int(t) for t in self.val_sampler.frames[source]
                      if index.is_annotated(int(t) + 1)]  # fmt: skip
            if not frames or n == 0:
                continue
            spread = np.linspace(0, len(frames) - 1, min(n, len(frames)))
            picks = np.unique(spread.round().astype(int))
            pairs.extend((source, frames[i]) for i in picks)
        return pairs

    # ------------------------------------------------------------------ checkpoints
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

    # ------------------------------------------------------------------ the loop
    def run(self) -> ModelBundle:
        """Train for the remaining epochs, then calibrate; returns the best model's bundle."""
        cfg = self.config
        while self.epoch < cfg.epochs:
            started = time.perf_counter()
            train_losses = self.train_epoch()
            metrics, val_losses = self.validate()
            self._end_epoch(train_losses, val_losses, metrics, time.perf_counter() - started)
            self.epoch += 1
            self.save_checkpoint()
        return self.finish()

    def _end_epoch(self, train_losses: dict[str, float], val_losses: dict[str, float],
                   metrics: dict[str, float], seconds: float) -> None:
        record = {"epoch": self.epoch, "step": self.step, "seconds": round(seconds, 2),
                  "train": train_losses, "val": val_losses, "metrics": metrics}  # fmt: skip
        self.history.append(record)
        if metrics.get("f1", 0.0) >= self.config.detector_ready_f1 and not self.detector_ready:
            logger.info("epoch %d: detection F1 %.3f, detections now train the scorers",
                        self.epoch, metrics["f1"])  # fmt: skip
            self.detector_ready = True
        if not self.val_pairs:  # no frame pair to score: select by validation loss instead
            metrics["score"] = -val_losses.get("total", -float(self.epoch))
        score = metrics.get("score", -math.inf)
        if self.best is None or score > self.best["score"]:
            self.best = {
                "score": score, "epoch": self.epoch, "metrics": dict(metrics),
                "states": [copy.deepcopy({k: v.detach().cpu() for k, v in m.state_dict().items()})
                           for m in self.bundle.modules()],
            }  # fmt: skip
        logger.info(
            "epoch %d/%d: train loss %.4f, val loss %.4f, F1 %.3f (threshold %.2f), "
            "link accuracy %.3f, %.1f s",
            self.epoch + 1, self.config.epochs, train_losses.get("total", math.nan),
            val_losses.get("total", math.nan), metrics.get("f1", math.nan),
            metrics.get("threshold", math.nan), metrics.get("link_accuracy", math.nan), seconds,
        )  # fmt: skip
        self._report("validate", losses=val_losses, metrics=metrics)

    def _report(self, phase: str, losses: dict[str, float] | None = None,
                metrics: dict[str, float] | None = None) -> None:
        if self.progress is not None:
            self.progress(TrainProgress(
                phase=phase, epoch=self.epoch, epochs=self.config.epochs, step=self.step,
                total_steps=self.total_steps, losses=dict(losses or {}),
                metrics=dict(metrics or {}),
            ))  # fmt: skip

    def _set_train(self, mode: bool) -> None:
        for module in self.bundle.modules():
            module.train(mode)

    def train_epoch(self) -> dict[str, float]:
        """One epoch of optimiser steps; returns the mean of each loss term."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, self.epoch])
        torch.manual_seed(cfg.seed * 1_000_003 + self.epoch)
        self._set_train(True)
        sums: dict[str, float] = {}
        for _ in range(cfg.steps_per_epoch):
            if self.should_stop is not None and self.should_stop():
                raise Cancelled(
                    f"training stopped during epoch {self.epoch + 1}; the last checkpoint holds "
                    f"epoch {self.epoch}"
                )
            losses = self.train_step(rng)
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value
            self._report("train", losses=losses)
        return {k: v / cfg.steps_per_epoch for k, v in sums.items()}

    def train_step(self, rng: np.random.Generator) -> dict[str, float]:
        """Sample a batch, compute the losses, take one optimiser step."""
        cfg = self.config
        samples = [self.sampler.sample(rng) for _ in range(cfg.batch_size)]
        batch = collate(samples)
        with autocast_context(self.device, enabled=cfg.amp):
            total, parts = self.compute_losses(batch, rng, use_detections=self.detector_ready)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for m in self.bundle.modules() for p in m.parameters()]
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return parts

    # ------------------------------------------------------------------ losses
    def compute_losses(self, batch: Batch, rng: np.random.Generator,
                       use_detections: bool) -> tuple[Tensor, dict[str, float]]:
        """The weighted total loss of a batch and its terms (as floats)."""
        cfg = self.config
        w = cfg.losses
        dev = self.device
        x = torch.from_numpy(batch.x).to(dev)
        out = self.unet(x)
        out = UNetOutput(*(o.float() for o in out))
        seg = torch.from_numpy(batch.seg).to(dev)
        valid = torch.from_numpy(batch.valid).to(dev)
        dividing = torch.from_numpy(batch.dividing).to(dev)
        voxel_weight = 1.0 + (w.dividing_voxel_weight - 1.0) * dividing.float()
        terms: dict[str, Tensor] = {
            "segmentation": segmentation_loss(out.seg, seg, valid, w.seg_class_weights,
                                              voxel_weight),
            "centre": ordinal_centre_loss(out.centre, torch.from_numpy(batch.centre).to(dev),
                                          valid, w.centre_pos_weights, voxel_weight),
            "radius": radius_loss(out.radius, torch.from_numpy(batch.radius).to(dev),
                                  valid & (seg == NUCLEUS)),
            "division": division_loss(out.division, torch.from_numpy(batch.division).to(dev),
                                      torch.from_numpy(batch.division_valid).to(dev),
                                      w.division_pos_weight),
        }  # fmt: skip
        terms.update(self._cell_losses(out, batch, rng, use_detections))
        weights = {"segmentation": w.segmentation, "centre": w.centre, "radius": w.radius,
                   "division": w.division, "triplet": w.triplet, "merge": w.merge,
                   "link": w.link, "link_division": w.link_division}  # fmt: skip
        total = sum(weights[k] * v for k, v in terms.items())
        parts = {k: float(v.detach()) for k, v in terms.items()}
        parts["total"] = float(total.detach())
        return total, parts

    def _cell_losses(self, out: UNetOutput, batch: Batch, rng: np.random.Generator,
                     use_detections: bool) -> dict[str, Tensor]:
        """Triplet loss and the two scorers' losses (see the module docstring)."""
        cfg = self.config
        n = batch.size
        reader = _BatchReader(out)
        triplet: list[tuple[int, np.ndarray]] = []  # (request, keys (N, 2) = sample, label)
        pairs: list[tuple[TrainSample, _FrameSet, int, _FrameSet | None, int]] = []
        for i, sample in enumerate(batch.samples):
            ta, tb = sample.targets.a, sample.targets.b
            z_ratio = sample.z_ratio
            shape = ta.shape
            # ---- triplet: annotated centres, frame t from pass A, frame t+1 from pass B
            frames = [(i, ta.cells_t, ta.cells_t.label, ta.valid)]
            if sample.next_annotated:
                frames.append((n + i, ta.cells_next, ta.cells_next.lineage, tb.valid))
            for b, cells, labels, valid in frames:
                vox = cells.centre_voxels(shape)
                keep = cells.tracked() & cells.in_crop(shape)
                keep &= valid[vox[:, 0], vox[:, 1], vox[:, 2]]
                if np.any(keep):
                    keys = np.stack([np.full(int(keep.sum()), i), labels[keep]], axis=1)
                    triplet.append((reader.add(b, vox[keep]), keys))
            # ---- scorer views: jittered annotated centres, then the peak finder's detections
            views = [(
                jittered_cells(ta.cells_t, shape, z_ratio, rng, cfg.gt_jitter,
                               cfg.duplicate_fraction, cfg.duplicate_offset),
                jittered_cells(ta.cells_next, shape, z_ratio, rng, cfg.gt_jitter,
                               cfg.duplicate_fraction, cfg.duplicate_offset),
            )]  # fmt: skip
            if use_detections:
                views.append((self._detected(out, i, ta.cells_t, z_ratio, sample.t),
                              self._detected(out, n + i, ta.cells_next, z_ratio, sample.t + 1)))
            for (pos_a, cell_a), (pos_b, cell_b) in views:
                set_a, req_a = self._queue(reader, i, pos_a, cell_a, ta.valid)
                set_b, req_b = (None, -1)
                if sample.next_annotated:
                    set_b, req_b = self._queue(reader, n + i, pos_b, cell_b, tb.valid)
                pairs.append((sample, set_a, req_a, set_b, req_b))
        results = reader.run()
        merge_rows, link_rows = _ScorerRows(), _ScorerRows()
        for sample, set_a, req_a, set_b, req_b in pairs:
            ta = sample.targets.a
            set_a.embedding, set_a.radius, set_a.division = results[req_a]
            self._merge_rows(merge_rows, set_a, sample.z_ratio)
            if set_b is not None:
                set_b.embedding, set_b.radius, set_b.division = results[req_b]
                self._merge_rows(merge_rows, set_b, sample.z_ratio)
                self._link_rows(link_rows, set_a, set_b, ta.cells_t, ta.cells_next,
                                sample.z_ratio, ta.shape)  # fmt: skip
        zero = out.embedding.sum() * 0.0
        terms: dict[str, Tensor] = {}
        if triplet:
            keys = np.concatenate([k for _, k in triplet])
            _, labels = np.unique(keys, axis=0, return_inverse=True)
            labels_t = torch.as_tensor(labels.reshape(-1), device=self.device)
            emb = torch.cat([results[r][0] for r, _ in triplet])
            terms["triplet"] = batch_hard_triplet_loss(emb, labels_t, cfg.losses.triplet_margin)
        else:
            terms["triplet"] = zero
        merge, _ = _scorer_loss(self.merge, merge_rows, self.device, with_division=False)
        link, link_div = _scorer_loss(self.link, link_rows, self.device, with_division=True)
        terms["merge"] = zero if merge is None else merge
        terms["link"] = zero if link is None else link
        terms["link_division"] = zero if link_div is None else link_div
        return terms

    @staticmethod
    def _queue(reader: _BatchReader, b: int, positions: np.ndarray, cell: np.ndarray,
               valid: np.ndarray) -> tuple[_FrameSet, int]:
        vox = _voxels(positions, reader.shape)
        fs = _FrameSet(
            positions=np.asarray(positions, np.float64).reshape(-1, 3),
            cell=np.asarray(cell, np.int64),
            inside=valid[vox[:, 0], vox[:, 1], vox[:, 2]] if len(vox) else np.zeros(0, bool),
        )
        return fs, reader.add(b, vox)

    def _detected(self, out: UNetOutput, b: int, cells: FrameCells, z_ratio: float, t: int
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Peak-finder detections of pass ``b`` and the annotated cell each belongs to."""
        heads = {"centre": out.centre[b].detach(), "seg": out.seg[b].detach(),
                 "radius": out.radius[b].detach(), "division": None, "embedding": None}  # fmt: skip
        dets = detect(heads, z_ratio=z_ratio, config=self.detection, t=t)
        tracked = np.flatnonzero(cells.tracked())
        matching = match_detections(dets.positions, cells.positions[tracked],
                                    cells.radius[tracked], z_ratio, self.config.match)  # fmt: skip
        cell = np.where(matching.owner >= 0, tracked[np.maximum(matching.owner, 0)], -1)
        return dets.positions, cell

    def _merge_rows(self, rows: _ScorerRows, fs: _FrameSet, z_ratio: float) -> None:
        """Merge-scorer rows: k nearest same-frame neighbours; positive = same annotated cell."""
        k = self.merge.config.k
        if len(fs.positions) < 2:
            return
        cand, _ = nearest_candidates(fs.positions, fs.positions, k, z_ratio, exclude_self=True)
        query = np.flatnonzero((fs.cell >= 0) & fs.inside)
        if len(query) == 0:
            return
        cand = cand[query]
        safe = np.where(cand >= 0, cand, 0)
        c_cell = np.where(cand >= 0, fs.cell[safe], -1)
        target = (c_cell >= 0) & (c_cell == fs.cell[query][:, None])
        known = (cand >= 0) & ((c_cell >= 0) | fs.inside[safe])
        feats, mask = candidate_features(
            fs.positions[query], fs.embedding[query], fs.radius[query], fs.division[query],
            fs.positions, fs.embedding, fs.radius, fs.division, cand, z_ratio,
        )  # fmt: skip
        rows.add(feats, mask, target, known, np.zeros(len(query), np.int64),
                 np.ones(len(query), np.float32))  # fmt: skip

    def _link_rows(self, rows: _ScorerRows, fa: _FrameSet, fb: _FrameSet, cells_a: FrameCells,
                   cells_b: FrameCells, z_ratio: float, shape: tuple[int, int, int]) -> None:
        """Link-scorer rows: k nearest next-frame detections; positive = the cell or a daughter.

        A query whose annotated successor lies outside the crop is skipped (its true candidate
        cannot be among the candidates, so "none" would be a wrong target).
        """
        k = self.link.config.k
        if len(fa.positions) == 0 or len(fb.positions) == 0:
            return
        query = np.flatnonzero((fa.cell >= 0) & fa.inside)
        if len(query) == 0:
            return
        q_label = cells_a.label[fa.cell[query]]
        successors_inside = cells_b.tracked() & cells_b.in_crop(shape)
        seen = np.isin(q_label, cells_b.lineage[successors_inside])
        ends = ~cells_a.has_child[fa.cell[query]]
        query = query[seen | ends]
        if len(query) == 0:
            return
        q_label = cells_a.label[fa.cell[query]]
        cand, _ = nearest_candidates(fa.positions[query], fb.positions, k, z_ratio)
        safe = np.where(cand >= 0, cand, 0)
        c_cell = np.where(cand >= 0, fb.cell[safe], -1)
        c_label = np.where(c_cell >= 0, cells_b.lineage[np.maximum(c_cell, 0)], -1)
        target = (c_label >= 0) & (c_label == q_label[:, None])
        known = (cand >= 0) & ((c_cell >= 0) | fb.inside[safe])
        mother = cells_a.mother[fa.cell[query]]
        weight = np.where(mother, self.config.losses.mother_row_weight, 1.0).astype(np.float32)
        feats, mask = candidate_features(
            fa.positions[query], fa.embedding[query], fa.radius[query], fa.division[query],
            fb.positions, fb.embedding, fb.radius, fb.division, cand, z_ratio,
        )  # fmt: skip
        rows.add(feats, mask, target, known, mother.astype(np.int64), weight)

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> tuple[dict[str, float], dict[str, float]]:
        """(metrics, mean validation losses) of the current weights."""
        self._set_train(False)
        try:
            val_losses = self._validation_losses()
            predictions = self._predict_validation(min(self.config.threshold_grid))
            metrics = self._metrics(predictions)
        finally:
            self._set_train(True)
        return metrics, val_losses

    def _validation_losses(self) -> dict[str, float]:
        if not self.val_crops:
            return {}
        rng = np.random.default_rng([self.config.seed, 104729])  # jitter of the GT view
        sums: dict[str, float] = {}
        bs = self.config.batch_size
        count = 0
        for start in range(0, len(self.val_crops), bs):
            batch = collate(self.val_crops[start : start + bs])
            with autocast_context(self.device, enabled=self.config.amp):
                _, parts = self.compute_losses(batch, rng, use_detections=False)
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
        return {k: v / count for k, v in sums.items()}

    def _predict_frame(self, source: int, t: int, threshold: float) -> Detections:
        src = self.val_sampler.sources[source]
        n_t = src.shape[0]
        pair = np.stack([np.asarray(src.images[t]), np.asarray(src.images[next_frame(t, n_t)])])
        pair = normalize_pair(pair, self.normalization)
        det_cfg = dataclasses.replace(self.detection, threshold=threshold)
        return predict_frame(self.unet, pair, t=t, z_ratio=src.z_ratio, detection=det_cfg,
                             tiling=self.config.tiling, device=self.device).detections  # fmt: skip

    def _predict_validation(self, threshold: float,
                            pairs: list[tuple[int, int]] | None = None) -> list[dict[str, Any]]:
        """Detections of frames t and t+1 of every validation pair, with their annotations."""
        out = []
        for source, t in self.val_pairs if pairs is None else pairs:
            index = self.val_sampler.indices[source]
            src = self.val_sampler.sources[source]
            frames = []
            for tt in (t, t + 1):
                cells = index.frame_cells(tt, (0, 0, 0), src.shape[1:], src.z_ratio,
                                          previous=tt - 1 if tt == t + 1 else None)  # fmt: skip
                cells = cells.subset(cells.tracked() & cells.in_crop(src.shape[1:]))
                frames.append((self._predict_frame(source, tt, threshold), cells))
            out.append({"source": source, "t": t, "z_ratio": src.z_ratio, "frames": frames,
                        "mask": self._frame_masks(source, t)})  # fmt: skip
        return out

    def _frame_masks(self, source: int, t: int) -> list[np.ndarray | None]:
        mask = self.val_sampler.sources[source].annotated_mask
        if mask is None:
            return [None, None]
        return [np.asarray(mask[tt] if len(mask.shape) == 4 else mask, bool) for tt in (t, t + 1)]

    def _detection_counts(self, predictions: list[dict[str, Any]], threshold: float
                          ) -> tuple[int, int, int]:
        tp = fp = fn = 0
        for item in predictions:
            for (dets, cells), mask in zip(item["frames"], item["mask"]):
                pos = dets.positions[dets.score >= threshold]
                if mask is not None and len(pos):
                    vox = _voxels(pos, mask.shape)
                    pos = pos[mask[vox[:, 0], vox[:, 1], vox[:, 2]]]
                m = match_detections(pos, cells.positions, cells.radius, item["z_ratio"],
                                     self.config.match)  # fmt: skip
                tp += m.n_matched
                fp += len(pos) - m.n_matched
                fn += len(cells) - m.n_matched
        return tp, fp, fn

    def _threshold_f1(self, predictions: list[dict[str, Any]]) -> tuple[float, float]:
        """(best F1, its threshold) over the grid."""
        best = (0.0, float(self.bundle.thresholds.detection.threshold))
        for threshold in self.config.threshold_grid:
            tp, fp, fn = self._detection_counts(predictions, threshold)
            f1 = 2 * tp / max(1, 2 * tp + fp + fn)
            if f1 > best[0] + 1e-12:
                best = (f1, threshold)
        return best

    def _link_accuracy(self, predictions: list[dict[str, Any]], threshold: float) -> float:
        """Share of annotated links (matched query, matched successor) where the link scorer's
        best candidate is a true successor."""
        correct = total = 0
        scorer = ModelScorer(self.link)
        for item in predictions:
            (det_a, cells_a), (det_b, cells_b) = item["frames"]
            z_ratio = item["z_ratio"]
            det_a = det_a.subset(det_a.score >= threshold)
            det_b = det_b.subset(det_b.score >= threshold)
            if len(det_a) == 0 or len(det_b) == 0:
                continue
            ma = match_detections(det_a.positions, cells_a.positions, cells_a.radius, z_ratio,
                                  self.config.match)  # fmt: skip
            mb = match_detections(det_b.positions, cells_b.positions, cells_b.radius, z_ratio,
                                  self.config.match)  # fmt: skip
            b_label = np.where(mb.primary >= 0, cells_b.lineage[np.maximum(mb.primary, 0)], -1)
            query = np.flatnonzero(ma.primary >= 0)
            q_label = cells_a.label[ma.primary[query]]
            has_successor = np.isin(q_label, b_label[b_label >= 0])
            query, q_label = query[has_successor], q_label[has_successor]
            if len(query) == 0:
                continue
            cand, _ = nearest_candidates(det_a.positions[query], det_b.positions,
                                         self.link.config.k, z_ratio)  # fmt: skip
            p_match = scorer.score(det_a.subset(query), det_b, cand, z_ratio).p_match
            best = cand[np.arange(len(query)), np.argmax(p_match, axis=1)]
            ok = (best >= 0) & (b_label[np.maximum(best, 0)] == q_label)
            correct += int(ok.sum())
            total += len(query)
        return correct / total if total else 0.0

    def _division_threshold(self, predictions: list[dict[str, Any]], threshold: float
                            ) -> tuple[float, float] | None:
        """(threshold, F1) of the link scorer's P(divides) that best separates the annotated
        mothers among the matched frame-t detections; None with too few annotated mothers."""
        scorer = ModelScorer(self.link)
        p_all, mother_all = [], []
        for item in predictions:
            (det_a, cells_a), (det_b, _) = item["frames"]
            det_a = det_a.subset(det_a.score >= threshold)
            det_b = det_b.subset(det_b.score >= threshold)
            if len(det_a) == 0:
                continue
            m = match_detections(det_a.positions, cells_a.positions, cells_a.radius,
                                 item["z_ratio"], self.config.match)  # fmt: skip
            cand, _ = nearest_candidates(det_a.positions, det_b.positions, self.link.config.k,
                                         item["z_ratio"])  # fmt: skip
            p_divide = scorer.score(det_a, det_b, cand, item["z_ratio"]).p_divide
            matched = m.primary >= 0
            p_all.append(p_divide[matched])
            mother_all.append(cells_a.mother[m.primary[matched]])
        if not p_all:
            return None
        p, mother = np.concatenate(p_all), np.concatenate(mother_all)
        if int(mother.sum()) < self.config.min_calibration_divisions:
            logger.info("only %d annotated divisions in the calibration frames: the division "
                        "threshold keeps its value", int(mother.sum()))  # fmt: skip
            return None
        best = None
        for thr in self.config.division_grid:
            tp = int(np.count_nonzero((p >= thr) & mother))
            f1 = 2 * tp / max(1, int(np.count_nonzero(p >= thr)) + int(mother.sum()))
            if best is None or f1 > best[1] + 1e-12:
                best = (float(thr), f1)
        return best

    def _metrics(self, predictions: list[dict[str, Any]]) -> dict[str, float]:
        if not predictions:
            return {"f1": 0.0, "threshold": float(self.bundle.thresholds.detection.threshold),
                    "link_accuracy": 0.0, "score": 0.0}  # fmt: skip
        f1, threshold = self._threshold_f1(predictions)
        link_accuracy = self._link_accuracy(predictions, threshold)
        return {"f1": f1, "threshold": threshold, "link_accuracy": link_accuracy,
                "score": 0.5 * (f1 + link_accuracy)}  # fmt: skip

    # ------------------------------------------------------------------ end
    def finish(self) -> ModelBundle:
        """Load the best epoch's weights, calibrate the detection threshold, return the bundle."""
        if self.best is not None:
            for module, state in zip(self.bundle.modules(), self.best["states"]):
                module.load_state_dict(state)
        thresholds = self.bundle.thresholds
        metrics: dict[str, float] = dict(self.best["metrics"]) if self.best else {}
        pairs = self._validation_pairs(self.config.calibration_frames)
        if self.config.calibrate and pairs:
            self._report("calibrate")
            self._set_train(False)
            with torch.no_grad():
                predictions = self._predict_validation(min(self.config.threshold_grid), pairs)
                metrics = self._metrics(predictions)
                division = self._division_threshold(predictions, metrics["threshold"])
            detection = dataclasses.replace(thresholds.detection, threshold=metrics["threshold"])
            link = thresholds.link
            if division is not None:
                link = dataclasses.replace(link, division_threshold=division[0])
                metrics["division_f1"] = division[1]
            thresholds = dataclasses.replace(thresholds, detection=detection, link=link)
            logger.info(
                "calibrated on %d frame pairs: detection threshold %.2f (F1 %.3f), division "
                "threshold %.2f", len(pairs), metrics["threshold"], metrics["f1"],
                link.division_threshold,
            )  # fmt: skip
        self.bundle.thresholds = thresholds
        cfg = self.config
        meta = self.bundle.metadata
        meta.trained_on = ", ".join(
            s.name or f"source {i}" for i, s in enumerate(self.sampler.sources)
        )
        meta.record(
            "train", epochs=self.epoch, steps=self.step,
            best_epoch=-1 if self.best is None else int(self.best["epoch"]) + 1,
            f1=round(float(metrics.get("f1", 0.0)), 4),
            link_accuracy=round(float(metrics.get("link_accuracy", 0.0)), 4),
            threshold=float(thresholds.detection.threshold),
            division_threshold=float(thresholds.link.division_threshold),
            division_f1=round(float(metrics.get("division_f1", math.nan)), 4),
            preset=cfg.preset, seed=cfg.seed,
        )  # fmt: skip
        bundle = ModelBundle(self.unet, self.merge, self.link, thresholds, cfg.normalization, meta)
        bundle.to("cpu").eval()
        self._report("done", metrics=metrics)
        return bundle


# =============================================================================== public API


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a training checkpoint written by :func:`fit`."""
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


def fit(
    train_sources: Sequence[Any],
    val_sources: Sequence[Any] | None = None,
    config: TrainConfig | None = None,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: str | Path | None = None,
    checkpoint: str | Path | None = None,
) -> ModelBundle:
    """Train a model bundle from annotated image series.

    Args:
        train_sources: ``(images (T, Z, Y, X), TrackGraph, z_ratio)`` tuples (an optional 4th
            item is an annotated-region mask) or :class:`~napari_cellect.train.data.TrainSource`.
        val_sources: the same for validation (model selection and threshold calibration); if
            empty, the training data is used (with a warning).
        config: the training settings.
        progress: called with a :class:`TrainProgress` after every step and validation.
        should_stop: polled before every step; True raises
            :class:`~napari_cellect.errors.Cancelled` (the last checkpoint can be resumed).
        resume: a checkpoint to continue; its settings are used, except ``epochs`` and
            ``device`` of ``config``.
        checkpoint: file written atomically after every epoch (None: no checkpoints).

    Returns:
        The bundle of the best validation epoch, with the calibrated detection threshold.
    """
    train = [as_source(s, i) for i, s in enumerate(train_sources)]
    val = [as_source(s, i) for i, s in enumerate(val_sources or [])]
    trainer = Trainer(train, val, config, progress=progress, should_stop=should_stop,
                      checkpoint=checkpoint, resume=resume)  # fmt: skip
    return trainer.run()
