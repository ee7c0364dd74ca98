"""Validation and calibration of a training run (see :mod:`napari_cellect.train.fit`).

Every epoch, the real inference path (:func:`napari_cellect.infer.predict.predict_frame`:
normalisation, tiling, peak finder) runs on whole validation frames; detections are matched to
the annotations to measure detection F1 (best over the threshold grid) and link accuracy (share
of annotated links whose best-scoring candidate is a true successor), plus the losses on fixed
validation crops. At the end the same predictions calibrate the detection threshold and the
division threshold of the link scorer's P(divides). The
:class:`~napari_cellect.train.fit.Trainer` owns one :class:`Validation`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import torch

from napari_cellect.infer.device import autocast_context
from napari_cellect.infer.normalize import normalize_pair
from napari_cellect.infer.predict import predict_frame
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.model.pair_scorer import BaseScorer
from napari_cellect.model.scoring import ModelScorer
from napari_cellect.model.unet import UNet3D
from napari_cellect.settings.detection import DetectionConfig
from napari_cellect.settings.linking import LinkingConfig
from napari_cellect.settings.normalization import NormalizationConfig
from napari_cellect.track.detections import Detections
from napari_cellect.track.division_evidence import division_probability
from napari_cellect.track.matching import DetectionCounts, match_detections
from napari_cellect.track.scoring_protocol import nearest_candidates
from napari_cellect.train.batch_losses import BatchLosses, clip_voxels
from napari_cellect.train.config import TrainConfig
from napari_cellect.train.data import Sampler, TrainSample, collate, next_frame

logger = logging.getLogger(__name__)


class Validation:
    """Validation data, per-epoch metrics and threshold calibration of a training run.

    ``bundle`` holds the networks being trained (shared, not copied); ``losses`` computes the
    validation losses as training does; ``normalization`` and ``detection`` are the inference
    settings of the bundle. The fixed validation crops and frame pairs are chosen here, once.
    """

    def __init__(
        self,
        config: TrainConfig,
        sampler: Sampler,
        bundle: ModelBundle,
        losses: BatchLosses,
        normalization: NormalizationConfig,
        detection: DetectionConfig,
        device: torch.device,
    ):
        self.config = config
        self.val_sampler = sampler
        self.bundle = bundle
        self.unet: UNet3D = bundle.unet
        self.link: BaseScorer = bundle.link_scorer
        self.losses = losses
        self.normalization = normalization
        self.detection = detection
        self.device = device
        self.val_crops: list[TrainSample] = self._validation_crops()
        #: (source, t) of the frame pairs scored every epoch
        self.val_pairs: list[tuple[int, int]] = self.frame_pairs(config.validation_frames)

    # ------------------------------------------------------------------ validation data
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

    def frame_pairs(self, n: int) -> list[tuple[int, int]]:
        """(source, t) of ``n`` frame pairs per validation source for F1, link accuracy and
        calibration: evenly spread annotated frames t whose frame t+1 is annotated too."""
        pairs: list[tuple[int, int]] = []
        for source, index in enumerate(self.val_sampler.indices):
            frames = [
                int(t) for t in self.val_sampler.frames[source] if index.is_annotated(int(t) + 1)
            ]
            if not frames or n == 0:
                continue
            spread = np.linspace(0, len(frames) - 1, min(n, len(frames)))
            picks = np.unique(spread.round().astype(int))
            pairs.extend((source, frames[i]) for i in picks)
        return pairs

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> tuple[dict[str, float], dict[str, float]]:
        """(metrics, mean validation losses) of the current weights."""
        self.bundle.train(False)
        try:
            val_losses = self._validation_losses()
            predictions = self.predict(min(self.config.threshold_grid))
            metrics = self.metrics(predictions)
        finally:
            self.bundle.train(True)
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
                _, parts = self.losses.compute(batch, rng, use_detections=False)
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
        return predict_frame(
            self.unet,
            pair,
            t=t,
            z_ratio=src.z_ratio,
            detection=det_cfg,
            tiling=self.config.tiling,
            device=self.device,
            min_depth=self.config.sampling.crop[0],
        ).detections

    def predict(
        self, threshold: float, pairs: list[tuple[int, int]] | None = None
    ) -> list[dict[str, Any]]:
        """Detections of frames t and t+1 of every validation pair, with their annotations."""
        out = []
        for source, t in self.val_pairs if pairs is None else pairs:
            index = self.val_sampler.indices[source]
            src = self.val_sampler.sources[source]
            frames = []
            for tt in (t, t + 1):
                cells = index.frame_cells(
                    tt,
                    (0, 0, 0),
                    src.shape[1:],
                    src.z_ratio,
                    previous=tt - 1 if tt == t + 1 else None,
                )
                cells = cells.subset(cells.tracked() & cells.in_crop(src.shape[1:]))
                frames.append((self._predict_frame(source, tt, threshold), cells))
            out.append(
                {
                    "source": source,
                    "t": t,
                    "z_ratio": src.z_ratio,
                    "frames": frames,
                    "mask": self._frame_masks(source, t),
                }
            )
        return out

    def _frame_masks(self, source: int, t: int) -> list[np.ndarray | None]:
        mask = self.val_sampler.sources[source].annotated_mask
        if mask is None:
            return [None, None]
        return [np.asarray(mask[tt] if len(mask.shape) == 4 else mask, bool) for tt in (t, t + 1)]

    def _detection_counts(
        self, predictions: list[dict[str, Any]], threshold: float
    ) -> DetectionCounts:
        counts = DetectionCounts()
        for item in predictions:
            for (dets, cells), mask in zip(item["frames"], item["mask"]):
                pos = dets.positions[dets.score >= threshold]
                if mask is not None and len(pos):
                    vox = clip_voxels(pos, mask.shape)
                    pos = pos[mask[vox[:, 0], vox[:, 1], vox[:, 2]]]
                m = match_detections(
                    pos, cells.positions, cells.radius, item["z_ratio"], self.config.match
                )
                counts += m.counts(len(cells))
        return counts

    def _threshold_f1(self, predictions: list[dict[str, Any]]) -> tuple[float, float]:
        """(best F1, its threshold) over the grid."""
        best = (0.0, float(self.bundle.thresholds.detection.threshold))
        for threshold in self.config.threshold_grid:
            f1 = self._detection_counts(predictions, threshold).f1
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
            ma = match_detections(
                det_a.positions, cells_a.positions, cells_a.radius, z_ratio, self.config.match
            )
            mb = match_detections(
                det_b.positions, cells_b.positions, cells_b.radius, z_ratio, self.config.match
            )
            b_label = np.where(mb.primary >= 0, cells_b.lineage[np.maximum(mb.primary, 0)], -1)
            query = np.flatnonzero(ma.primary >= 0)
            q_label = cells_a.label[ma.primary[query]]
            has_successor = np.isin(q_label, b_label[b_label >= 0])
            query, q_label = query[has_successor], q_label[has_successor]
            if len(query) == 0:
                continue
            cand, _ = nearest_candidates(
                det_a.positions[query], det_b.positions, self.link.config.k, z_ratio
            )
            p_match = scorer.score(det_a.subset(query), det_b, cand, z_ratio).p_match
            best = cand[np.arange(len(query)), np.argmax(p_match, axis=1)]
            ok = (best >= 0) & (b_label[np.maximum(best, 0)] == q_label)
            correct += int(ok.sum())
            total += len(query)
        return correct / total if total else 0.0

    def division_threshold(
        self, predictions: list[dict[str, Any]], threshold: float, link: LinkingConfig
    ) -> tuple[float, float] | None:
        """(threshold, F1) of the linker's P(divides) (the link scorer's with the U-Net's, as
        ``link`` weighs them: ``track/division_evidence.py``) that best separates the annotated
        mothers among the matched frame-t detections; None with too few annotated mothers."""
        scorer = ModelScorer(self.link)
        p_all, mother_all = [], []
        for item in predictions:
            (det_a, cells_a), (det_b, _) = item["frames"]
            det_a = det_a.subset(det_a.score >= threshold)
            det_b = det_b.subset(det_b.score >= threshold)
            if len(det_a) == 0:
                continue
            m = match_detections(
                det_a.positions,
                cells_a.positions,
                cells_a.radius,
                item["z_ratio"],
                self.config.match,
            )
            cand, _ = nearest_candidates(
                det_a.positions, det_b.positions, self.link.config.k, item["z_ratio"]
            )
            p_divide = division_probability(
                scorer.score(det_a, det_b, cand, item["z_ratio"]).p_divide,
                det_a.division[:, 0],
                link,
            )
            matched = m.primary >= 0
            p_all.append(p_divide[matched])
            mother_all.append(cells_a.mother[m.primary[matched]])
        if not p_all:
            return None
        p, mother = np.concatenate(p_all), np.concatenate(mother_all)
        if int(mother.sum()) < self.config.min_calibration_divisions:
            logger.info(
                "only %d annotated divisions in the calibration frames: the division "
                "threshold keeps its value",
                int(mother.sum()),
            )
            return None
        best = None
        for thr in self.config.division_grid:
            tp = int(np.count_nonzero((p >= thr) & mother))
            f1 = 2 * tp / max(1, int(np.count_nonzero(p >= thr)) + int(mother.sum()))
            if best is None or f1 > best[1] + 1e-12:
                best = (float(thr), f1)
        return best

    def metrics(self, predictions: list[dict[str, Any]]) -> dict[str, float]:
        if not predictions:
            return {
                "f1": 0.0,
                "threshold": float(self.bundle.thresholds.detection.threshold),
                "link_accuracy": 0.0,
                "score": 0.0,
            }
        f1, threshold = self._threshold_f1(predictions)
        link_accuracy = self._link_accuracy(predictions, threshold)
        return {
            "f1": f1,
            "threshold": threshold,
            "link_accuracy": link_accuracy,
            "score": 0.5 * (f1 + link_accuracy),
        }
