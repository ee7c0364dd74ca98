"""The losses of one training batch (docs/method.md §8.3): the U-Net terms, the batch-hard
triplet loss and the two scorers' candidate losses, on jittered annotated centres and (once the
detector is ready) on the peak finder's detections. See :mod:`napari_cellect.train.fit` for the
whole picture; its :class:`~napari_cellect.train.fit.Trainer` owns one :class:`BatchLosses`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from torch import Tensor

from napari_cellect.infer.detect import detect
from napari_cellect.model.pair_scorer import BaseScorer, PairScores, pair_features
from napari_cellect.model.unet import UNet3D, UNetOutput
from napari_cellect.settings.detection import DetectionConfig
from napari_cellect.track.matching import match_detections
from napari_cellect.track.scoring_protocol import nearest_candidates
from napari_cellect.train.config import TrainConfig
from napari_cellect.train.data import Batch, TrainSample
from napari_cellect.train.losses import (
    batch_hard_triplet_loss,
    candidate_loss,
    division_head_loss,
    division_loss,
    ordinal_centre_loss,
    radius_loss,
    segmentation_loss,
)
from napari_cellect.train.targets import NUCLEUS, FrameCells, jittered_cells

# =============================================================================== helpers


def clip_voxels(positions: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(N, 3) positions rounded to voxels and clipped into ``shape``."""
    vox = np.rint(np.asarray(positions, np.float64)).astype(np.int64).reshape(-1, 3)
    return np.clip(vox, 0, np.asarray(shape) - 1)


@dataclass
class _FrameQuery:
    """Detections (real or pseudo) of one frame of one sample, queued for a feature read."""

    positions: np.ndarray  # (N, 3) crop voxels
    cell: np.ndarray  # (N,) index into the frame's FrameCells, -1 = false positive
    inside: np.ndarray  # (N,) bool: in the annotated (valid) region


@dataclass
class _FrameSet(_FrameQuery):
    """A frame's detections with their live features (what :meth:`_BatchReader.run` read)."""

    embedding: Tensor  # (N, E), in the graph
    radius: Tensor  # (N,), detached
    division: Tensor  # (N, 2) probabilities, detached

    @classmethod
    def read(cls, query: _FrameQuery, features: tuple[Tensor, Tensor, Tensor]) -> _FrameSet:
        return cls(query.positions, query.cell, query.inside, *features)


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
        self._flat.append(
            np.ravel_multi_index((vox[:, 0], vox[:, 1], vox[:, 2]), self.shape)
            if len(vox)
            else np.zeros(0, np.int64)
        )
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
    q_pos: np.ndarray,
    q_emb: Tensor,
    q_radius: Tensor,
    q_div: Tensor,
    c_pos: np.ndarray,
    c_emb: Tensor,
    c_radius: Tensor,
    c_div: Tensor,
    cand_idx: np.ndarray,
    z_ratio: float,
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
        q_emb,
        c_emb[idx],
        torch.as_tensor(offsets, dtype=torch.float32, device=device),
        q_radius,
        c_radius[idx],
        q_div,
        c_div[idx],
    )
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

    def add(
        self,
        features: dict[str, Tensor],
        mask: Tensor,
        target: np.ndarray,
        known: np.ndarray,
        division: np.ndarray,
        weight: np.ndarray,
    ) -> None:
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


def _scorer_loss(
    scorer: BaseScorer, rows: _ScorerRows, device: torch.device, with_division: bool
) -> tuple[Tensor | None, Tensor | None]:
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


# =============================================================================== the batch losses


@dataclass(frozen=True, eq=False)
class BatchLosses:
    """The loss computation of a training run: the networks it trains (shared with the
    trainer, not copied), the settings, and the peak finder's settings for the detection view."""

    config: TrainConfig
    device: torch.device
    unet: UNet3D
    merge: BaseScorer
    link: BaseScorer
    detection: DetectionConfig

    def compute(
        self, batch: Batch, rng: np.random.Generator, use_detections: bool
    ) -> tuple[Tensor, dict[str, float]]:
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
            "segmentation": segmentation_loss(
                out.seg, seg, valid, w.seg_class_weights, voxel_weight
            ),
            "centre": ordinal_centre_loss(
                out.centre,
                torch.from_numpy(batch.centre).to(dev),
                valid,
                w.centre_pos_weights,
                voxel_weight,
            ),
            "radius": radius_loss(
                out.radius, torch.from_numpy(batch.radius).to(dev), valid & (seg == NUCLEUS)
            ),
            "division": division_loss(
                out.division,
                torch.from_numpy(batch.division).to(dev),
                torch.from_numpy(batch.division_valid).to(dev),
                w.division_pos_weight,
            ),
        }
        terms.update(self._cell_losses(out, batch, rng, use_detections))
        weights = {
            "segmentation": w.segmentation,
            "centre": w.centre,
            "radius": w.radius,
            "division": w.division,
            "triplet": w.triplet,
            "merge": w.merge,
            "link": w.link,
            "link_division": w.link_division,
        }
        weighted = [weights[k] * v for k, v in terms.items()]
        total = sum(weighted[1:], start=weighted[0])  # a tensor start: the total is a tensor
        parts = {k: float(v.detach()) for k, v in terms.items()}
        parts["total"] = float(total.detach())
        return total, parts

    def _cell_losses(
        self, out: UNetOutput, batch: Batch, rng: np.random.Generator, use_detections: bool
    ) -> dict[str, Tensor]:
        """Triplet loss and the two scorers' losses (see the module docstring)."""
        cfg = self.config
        n = batch.size
        reader = _BatchReader(out)
        triplet: list[tuple[int, np.ndarray]] = []  # (request, keys (N, 2) = sample, label)
        pairs: list[tuple[TrainSample, _FrameQuery, int, _FrameQuery | None, int]] = []
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
            pseudo_detections = partial(
                jittered_cells,
                shape=shape,
                z_ratio=z_ratio,
                rng=rng,
                jitter=cfg.gt_jitter,
                duplicate_fraction=cfg.duplicate_fraction,
                duplicate_offset=cfg.duplicate_offset,
            )
            views = [(pseudo_detections(ta.cells_t), pseudo_detections(ta.cells_next))]
            if use_detections:
                views.append(
                    (
                        self._detected(out, i, ta.cells_t, z_ratio, sample.t),
                        self._detected(out, n + i, ta.cells_next, z_ratio, sample.t + 1),
                    )
                )
            for (pos_a, cell_a), (pos_b, cell_b) in views:
                query_a, req_a = self._queue(reader, i, pos_a, cell_a, ta.valid)
                query_b: _FrameQuery | None = None
                req_b = -1
                if sample.next_annotated:
                    query_b, req_b = self._queue(reader, n + i, pos_b, cell_b, tb.valid)
                pairs.append((sample, query_a, req_a, query_b, req_b))
        results = reader.run()
        merge_rows, link_rows = _ScorerRows(), _ScorerRows()
        for sample, query_a, req_a, query_b, req_b in pairs:
            ta = sample.targets.a
            set_a = _FrameSet.read(query_a, results[req_a])
            self._merge_rows(merge_rows, set_a, sample.z_ratio)
            if query_b is not None:
                set_b = _FrameSet.read(query_b, results[req_b])
                self._merge_rows(merge_rows, set_b, sample.z_ratio)
                self._link_rows(
                    link_rows, set_a, set_b, ta.cells_t, ta.cells_next, sample.z_ratio, ta.shape
                )
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
    def _queue(
        reader: _BatchReader, b: int, positions: np.ndarray, cell: np.ndarray, valid: np.ndarray
    ) -> tuple[_FrameQuery, int]:
        vox = clip_voxels(positions, reader.shape)
        query = _FrameQuery(
            positions=np.asarray(positions, np.float64).reshape(-1, 3),
            cell=np.asarray(cell, np.int64),
            inside=valid[vox[:, 0], vox[:, 1], vox[:, 2]] if len(vox) else np.zeros(0, bool),
        )
        return query, reader.add(b, vox)

    def _detected(
        self, out: UNetOutput, b: int, cells: FrameCells, z_ratio: float, t: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Peak-finder detections of pass ``b`` and the annotated cell each belongs to."""
        heads = {
            "centre": out.centre[b].detach(),
            "seg": out.seg[b].detach(),
            "radius": out.radius[b].detach(),
            "division": None,
            "embedding": None,
        }
        dets = detect(heads, z_ratio=z_ratio, config=self.detection, t=t)
        tracked = np.flatnonzero(cells.tracked())
        matching = match_detections(
            dets.positions,
            cells.positions[tracked],
            cells.radius[tracked],
            z_ratio,
            self.config.match,
        )
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
            fs.positions[query],
            fs.embedding[query],
            fs.radius[query],
            fs.division[query],
            fs.positions,
            fs.embedding,
            fs.radius,
            fs.division,
            cand,
            z_ratio,
        )
        rows.add(
            feats,
            mask,
            target,
            known,
            np.zeros(len(query), np.int64),
            np.ones(len(query), np.float32),
        )

    def _link_rows(
        self,
        rows: _ScorerRows,
        fa: _FrameSet,
        fb: _FrameSet,
        cells_a: FrameCells,
        cells_b: FrameCells,
        z_ratio: float,
        shape: tuple[int, int, int],
    ) -> None:
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
            fa.positions[query],
            fa.embedding[query],
            fa.radius[query],
            fa.division[query],
            fb.positions,
            fb.embedding,
            fb.radius,
            fb.division,
            cand,
            z_ratio,
        )
        rows.add(feats, mask, target, known, mother.astype(np.int64), weight)
