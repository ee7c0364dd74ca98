"""Training a complete model (U-Net + merge scorer + link scorer) from point annotations.

:func:`fit` runs one loop with one Adam optimiser over all three networks (docs/method.md §8, which
also lists what we do differently from the original's training, §10):

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
  radius (:func:`~napari_cellect.track.matching.match_detections`); unmatched detections within a
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

Module layout: :mod:`~napari_cellect.train.config` (settings and progress),
:mod:`~napari_cellect.train.batch_losses` (the losses of a batch),
:mod:`~napari_cellect.train.validation` (validation metrics and calibration),
:mod:`~napari_cellect.train.checkpoint` (checkpoints); this module holds the loop. The
:class:`Trainer` owns one part from each (``losses``, ``validation``, ``checkpoints``), built
from the networks, settings and optimiser it made, and the loop's own state (``loop``).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from napari_cellect.errors import Cancelled, InputError
from napari_cellect.infer.device import amp_dtype, autocast_context, resolve_device
from napari_cellect.infer.predict import resolve_model
from napari_cellect.model.bundle import BundleMetadata, ModelBundle, load_checked
from napari_cellect.model.pair_scorer import PairScorerConfig, build_scorer
from napari_cellect.model.unet import UNet3D, unet_preset
from napari_cellect.progress import OnStep
from napari_cellect.train.batch_losses import BatchLosses, candidate_features
from napari_cellect.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    Checkpoints,
    LoopState,
    load_checkpoint,
)
from napari_cellect.train.config import TrainConfig, TrainProgress
from napari_cellect.train.data import Sampler, TrainSample, as_source, collate
from napari_cellect.train.sample_pool import SamplePool
from napari_cellect.train.validation import Validation

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "TrainProgress",
    "Trainer",
    "candidate_features",
    "fit",
    "load_checkpoint",
]

logger = logging.getLogger(__name__)


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
        progress: OnStep[TrainProgress] | None = None,
        should_stop: Callable[[], bool] | None = None,
        checkpoint: str | Path | None = None,
        resume: str | Path | None = None,
        init: ModelBundle | str | Path | None = None,
    ):
        config = config or TrainConfig()
        state = None
        if resume is not None:
            state = load_checkpoint(resume)
            saved = TrainConfig.from_dict(state["train_config"])
            config = dataclasses.replace(
                saved, epochs=config.epochs, device=config.device, workers=config.workers
            )
            logger.info("resuming %s at epoch %d (step %d)", resume, state["epoch"], state["step"])
        self.config = config
        self.progress = progress
        self.should_stop = should_stop
        checkpoint = None if checkpoint is None else Path(checkpoint)
        if checkpoint is not None and not checkpoint.parent.is_dir():
            raise InputError(
                f"cannot write checkpoints: the folder {checkpoint.parent} does not exist",
                checkpoint,
            )
        self.device = resolve_device(config.device)
        self.bundle = self._new_bundle()
        if init is not None and state is None:  # a resumed run restores its own weights
            self._load_initial_weights(init)
        self.unet, self.merge, self.link = self.bundle.modules()
        bad = [
            f"{axis}={size}"
            for axis, size, m in zip("ZYX", config.sampling.crop, self.unet.size_multiple)
            if size % m
        ]
        if bad:
            raise InputError(
                f"the training crop {config.sampling.crop} must be a multiple of the U-Net's "
                f"size multiple {self.unet.size_multiple} (z, y, x); found {', '.join(bad)}"
            )
        for module in self.bundle.modules():
            module.to(self.device)
        inference = resolve_model(self.bundle)
        normalization = inference.normalization
        self.sampler = Sampler(
            train_sources, config.sampling, config.augment, config.targets, normalization
        )
        if not val_sources:
            logger.warning("no validation data: validating on the training data")
        val_sampler = Sampler(
            list(val_sources) if val_sources else list(self.sampler.sources),
            config.sampling,
            dataclasses.replace(config.augment, enabled=False),
            config.targets,
            normalization,
        )
        self.pool = SamplePool(self.sampler, config.workers)
        self.losses = BatchLosses(
            config, self.device, self.unet, self.merge, self.link, inference.detection
        )
        self.validation = Validation(
            config,
            val_sampler,
            self.bundle,
            self.losses,
            normalization,
            inference.detection,
            self.device,
        )
        params = [p for m in self.bundle.modules() for p in m.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        self.total_steps = config.epochs * config.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_schedule(config))
        # float16 autocast (GPUs without bfloat16) needs loss scaling; a no-op otherwise
        fp16 = config.amp and amp_dtype(self.device) == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.checkpoints = Checkpoints(
            checkpoint, config, self.bundle, self.optimizer, self.scheduler, self.scaler
        )
        self.loop = self.checkpoints.restore(state) if state is not None else LoopState()

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
                build_scorer(
                    PairScorerConfig(
                        kind=kind,
                        k=getattr(cfg.thresholds, kind).k,
                        embedding_dim=cfg.embedding_dim,
                        hidden=cfg.scorer_hidden,
                    )
                )
                for kind in ("merge", "link")
            ]
        metadata = BundleMetadata(name=cfg.name)
        return ModelBundle(
            unet, scorers[0], scorers[1], cfg.thresholds, cfg.normalization, metadata
        )

    def _load_initial_weights(self, init: ModelBundle | str | Path) -> None:
        """Warm start: copy the weights of a trained bundle of the same architecture."""
        source = init if isinstance(init, ModelBundle) else ModelBundle.load(init)
        where = getattr(source.metadata, "name", "") or str(init)
        configs: list[tuple[str, DataclassInstance, DataclassInstance]] = [
            ("U-Net", self.bundle.unet_config, source.unet_config),
            ("merge scorer", self.bundle.merge_config, source.merge_config),
            ("link scorer", self.bundle.link_config, source.link_config),
        ]
        for what, a, b in configs:
            differ = [
                f.name
                for f in dataclasses.fields(a)
                if f.name != "preset" and getattr(a, f.name) != getattr(b, f.name)
            ]
            if differ:
                raise InputError(
                    f"cannot start training from {where}: its {what} differs from the one the "
                    f"training settings build in {', '.join(differ)} (e.g. {differ[0]} = "
                    f"{getattr(b, differ[0])!r} there, {getattr(a, differ[0])!r} here); use "
                    "the same preset, embedding size and scorer width"
                )
        for what, target, module in zip(
            ("U-Net", "merge scorer", "link scorer"), self.bundle.modules(), source.modules()
        ):
            load_checked(target, module.state_dict(), f"the {what} weights of {where}")
        self.bundle.metadata.record("initialised", source=where)
        logger.info("starting from the weights of %s", where)

    # ------------------------------------------------------------------ the loop
    @property
    def step(self) -> int:
        """Optimiser steps done so far (``benchmarks/train_continue.py`` stops on it)."""
        return self.loop.step

    def run(self) -> ModelBundle:
        """Train for the remaining epochs, then calibrate; returns the best model's bundle."""
        cfg = self.config
        benchmark = torch.backends.cudnn.benchmark
        # the crop size never changes: let cuDNN time its kernels once and keep the fastest
        torch.backends.cudnn.benchmark = benchmark or self.device.type == "cuda"
        try:
            while self.loop.epoch < cfg.epochs:
                started = time.perf_counter()
                train_losses = self.train_epoch()
                metrics, val_losses = self.validation.validate()
                self._end_epoch(train_losses, val_losses, metrics, time.perf_counter() - started)
                self.loop.epoch += 1
                self.checkpoints.save(self.loop)
        finally:
            self.pool.close()
            torch.backends.cudnn.benchmark = benchmark
        return self.finish()

    def _end_epoch(
        self,
        train_losses: dict[str, float],
        val_losses: dict[str, float],
        metrics: dict[str, float],
        seconds: float,
    ) -> None:
        loop = self.loop
        record = {
            "epoch": loop.epoch,
            "step": loop.step,
            "seconds": round(seconds, 2),
            "train": train_losses,
            "val": val_losses,
            "metrics": metrics,
        }
        loop.history.append(record)
        if metrics.get("f1", 0.0) >= self.config.detector_ready_f1 and not loop.detector_ready:
            logger.info(
                "epoch %d: detection F1 %.3f, detections now train the scorers",
                loop.epoch,
                metrics["f1"],
            )
            loop.detector_ready = True
        if not self.validation.val_pairs:  # no frame pair to score: select by validation loss
            metrics["score"] = -val_losses.get("total", -float(loop.epoch))
        score = metrics.get("score", -math.inf)
        if loop.best is None or score > loop.best["score"]:
            loop.best = {
                "score": score,
                "epoch": loop.epoch,
                "metrics": dict(metrics),
                "states": [
                    copy.deepcopy({k: v.detach().cpu() for k, v in m.state_dict().items()})
                    for m in self.bundle.modules()
                ],
            }
        logger.info(
            "epoch %d/%d: train loss %.4f, val loss %.4f, F1 %.3f (threshold %.2f), "
            "link accuracy %.3f, %.1f s",
            loop.epoch + 1,
            self.config.epochs,
            train_losses.get("total", math.nan),
            val_losses.get("total", math.nan),
            metrics.get("f1", math.nan),
            metrics.get("threshold", math.nan),
            metrics.get("link_accuracy", math.nan),
            seconds,
        )
        self._report("validate", losses=val_losses, metrics=metrics)

    def _report(
        self,
        phase: str,
        losses: dict[str, float] | None = None,
        metrics: dict[str, float] | None = None,
    ) -> None:
        if self.progress is not None:
            self.progress(
                TrainProgress(
                    phase=phase,
                    epoch=self.loop.epoch,
                    epochs=self.config.epochs,
                    step=self.loop.step,
                    total_steps=self.total_steps,
                    losses=dict(losses or {}),
                    metrics=dict(metrics or {}),
                )
            )

    def train_epoch(self) -> dict[str, float]:
        """One epoch of optimiser steps; returns the mean of each loss term."""
        cfg = self.config
        epoch = self.loop.epoch
        rng = np.random.default_rng([cfg.seed, epoch])
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)
        self.bundle.train(True)
        sums: dict[str, float] = {}
        batches = self.pool.batches(cfg.seed, epoch, range(cfg.steps_per_epoch), cfg.batch_size)
        for samples in batches:
            if self.should_stop is not None and self.should_stop():
                batches.close()
                raise Cancelled(
                    f"training stopped during epoch {epoch + 1}; the last checkpoint holds "
                    f"epoch {epoch}"
                )
            losses = self.train_step(samples, rng)
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value
            self._report("train", losses=losses)
        return {k: v / cfg.steps_per_epoch for k, v in sums.items()}

    def train_step(
        self, samples: Sequence[TrainSample], rng: np.random.Generator
    ) -> dict[str, float]:
        """Compute the losses of a batch (``rng``: pseudo-detection jitter and duplicates),
        take one optimiser step."""
        cfg = self.config
        batch = collate(samples)
        with autocast_context(self.device, enabled=cfg.amp):
            total, parts = self.losses.compute(batch, rng, use_detections=self.loop.detector_ready)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for m in self.bundle.modules() for p in m.parameters()]
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.loop.step += 1
        return parts

    # ------------------------------------------------------------------ end
    def finish(self) -> ModelBundle:
        """Load the best epoch's weights, calibrate the detection threshold, return the bundle."""
        loop, validation = self.loop, self.validation
        if loop.best is not None:
            for module, state in zip(self.bundle.modules(), loop.best["states"]):
                module.load_state_dict(state)
        thresholds = self.bundle.thresholds
        metrics: dict[str, float] = dict(loop.best["metrics"]) if loop.best else {}
        pairs = validation.frame_pairs(self.config.calibration_frames)
        if self.config.calibrate and pairs:
            self._report("calibrate")
            self.bundle.train(False)
            with torch.no_grad():
                predictions = validation.predict(min(self.config.threshold_grid), pairs)
                metrics = validation.metrics(predictions)
                division = validation.division_threshold(
                    predictions, metrics["threshold"], thresholds.link
                )
            detection = dataclasses.replace(thresholds.detection, threshold=metrics["threshold"])
            link = thresholds.link
            if division is not None:
                link = dataclasses.replace(link, division_threshold=division[0])
                metrics["division_f1"] = division[1]
            thresholds = dataclasses.replace(thresholds, detection=detection, link=link)
            logger.info(
                "calibrated on %d frame pairs: detection threshold %.2f (F1 %.3f), division "
                "threshold %.2f",
                len(pairs),
                metrics["threshold"],
                metrics["f1"],
                link.division_threshold,
            )
        self.bundle.thresholds = thresholds
        cfg = self.config
        meta = self.bundle.metadata
        meta.trained_on = ", ".join(
            s.name or f"source {i}" for i, s in enumerate(self.sampler.sources)
        )
        meta.record(
            "train",
            epochs=loop.epoch,
            steps=loop.step,
            best_epoch=-1 if loop.best is None else int(loop.best["epoch"]) + 1,
            f1=round(float(metrics.get("f1", 0.0)), 4),
            link_accuracy=round(float(metrics.get("link_accuracy", 0.0)), 4),
            threshold=float(thresholds.detection.threshold),
            division_threshold=float(thresholds.link.division_threshold),
            division_f1=round(float(metrics.get("division_f1", math.nan)), 4),
            preset=cfg.preset,
            seed=cfg.seed,
        )
        normalization = dataclasses.replace(
            cfg.normalization,
            reference_radius=self._reference_radius(),
            min_depth=cfg.sampling.crop[0],
        )
        bundle = ModelBundle(self.unet, self.merge, self.link, thresholds, normalization, meta)
        bundle.to("cpu").eval()
        self._report("done", metrics=metrics)
        return bundle

    def _reference_radius(self) -> float:
        """The median annotated nucleus radius (xy pixels) of the training data, so that
        prediction can resize other images to it (``NormalizationConfig.reference_radius``)."""
        fallback = self.config.targets.default_radius
        radii = []
        for source in self.sampler.sources:
            r = np.asarray(source.graph["radius"], np.float64) if len(source.graph) else np.empty(0)
            radii.append(np.where(np.isfinite(r) & (r > 0), r, fallback))
        values = np.concatenate(radii) if radii else np.empty(0)
        return float(np.median(values)) if len(values) else float(fallback)


# =============================================================================== public API


def fit(
    train_sources: Sequence[Any],
    val_sources: Sequence[Any] | None = None,
    config: TrainConfig | None = None,
    progress: OnStep[TrainProgress] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: str | Path | None = None,
    checkpoint: str | Path | None = None,
    init: ModelBundle | str | Path | None = None,
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
        init: a trained bundle (or its path) of the same architecture to start from instead of
            random weights (a warm start; ignored when resuming).

    Returns:
        The bundle of the best validation epoch, with the calibrated detection threshold.
    """
    train = [as_source(s, i) for i, s in enumerate(train_sources)]
    val = [as_source(s, i) for i, s in enumerate(val_sources or [])]
    trainer = Trainer(
        train,
        val,
        config,
        progress=progress,
        should_stop=should_stop,
        checkpoint=checkpoint,
        resume=resume,
        init=init,
    )
    return trainer.run()
