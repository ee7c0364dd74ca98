"""The learned pair scorers behind the numpy :class:`CandidateScorer` protocol of ``track/``.

:class:`ModelScorer` wraps a torch pair scorer
(:class:`~napari_cellect.model.pair_scorer.PairScorer` or the original
:class:`~napari_cellect.model.pair_scorer.OriginalEXNet`, of kind ``merge`` or ``link``) so that
merging and linking, which never import torch, can use it: it builds the features of
:func:`~napari_cellect.model.pair_scorer.pair_features` from two
:class:`~napari_cellect.track.detections.Detections`, runs the model in batches under
``torch.inference_mode`` and returns probabilities as numpy arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from napari_cellect.errors import InputError, ModelError
from napari_cellect.infer.device import resolve_device
from napari_cellect.model.pair_scorer import BaseScorer
from napari_cellect.track.detections import Detections
from napari_cellect.track.scoring_protocol import CandidateScores, scaled

logger = logging.getLogger(__name__)


@dataclass
class ModelScorer:
    """A torch pair scorer as a :class:`~napari_cellect.track.scoring_protocol.CandidateScorer`.

    Args:
        model: the pair scorer (``model.config.kind`` is ``merge`` or ``link``).
        device: ``None`` runs the model where its parameters are; a name (``auto``, ``cpu``,
            ``cuda``, ``mps``) or ``torch.device`` is resolved by
            :func:`napari_cellect.infer.device.resolve_device` and the model is moved there.
        batch_size: queries per forward pass (bounds memory at large frames).

    Padded candidate slots (``-1``) are filled with the row's last real candidate, as the
    original does, and masked: their ``p_match`` is 0. Queries without any candidate are not run
    through the model: ``p_match`` 0, ``p_none`` 1. ``p_divide`` is the link model's division
    head (softmax index 1); a merge model has none, so it falls back to the detector's
    mother-about-to-divide probability, as it does for queries without candidates.
    The model is put in eval mode while scoring and returned to its previous mode afterwards.
    """

    model: BaseScorer
    device: str | torch.device | None = None
    batch_size: int = 8192

    def __post_init__(self) -> None:
        if not isinstance(self.model, BaseScorer):
            raise ModelError(
                f"ModelScorer needs a pair scorer (BaseScorer), found {type(self.model).__name__}"
            )
        if self.batch_size < 1:
            raise InputError(f"ModelScorer.batch_size must be >= 1, found {self.batch_size}")
        if self.device is None:
            param = next(self.model.parameters(), None)
            self.device = param.device if param is not None else torch.device("cpu")
        else:
            self.device = resolve_device(self.device)
            self.model.to(self.device)

    @property
    def kind(self) -> str:
        """``merge`` or ``link``."""
        return self.model.config.kind

    def score(
        self, query: Detections, cands: Detections, cand_idx: np.ndarray, z_ratio: float
    ) -> CandidateScores:
        cand_idx = np.asarray(cand_idx, dtype=np.int64)
        m, k = cand_idx.shape
        if m != len(query):
            raise InputError(f"cand_idx has {m} rows but there are {len(query)} query detections")
        config = self.model.config
        for name, det in (("query", query), ("candidate", cands)):
            if len(det) and det.embedding_dim != config.embedding_dim:
                raise ModelError(
                    f"the {config.kind} scorer expects {config.embedding_dim}-d embeddings, the "
                    f"{name} detections have {det.embedding_dim}-d ones"
                )
        p_match = np.zeros((m, k), np.float32)
        p_none = np.ones(m, np.float32)
        p_divide = query.division[:, 0].astype(np.float32).copy()
        idx, mask = self.padded_candidates(cand_idx)
        rows = np.flatnonzero(mask.any(axis=1))
        if len(rows) == 0:
            return CandidateScores(p_match, p_none, p_divide)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(rows), self.batch_size):
                    batch = rows[start : start + self.batch_size]
                    pm, pn, pd = self._forward(
                        query, cands, batch, idx[batch], mask[batch], z_ratio
                    )
                    p_match[batch] = pm[:, :k]
                    p_none[batch] = pn
                    if pd is not None:
                        p_divide[batch] = pd
        finally:
            self.model.train(was_training)
        p_match[cand_idx < 0] = 0.0
        return CandidateScores(p_match, p_none, p_divide)

    def padded_candidates(self, cand_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices with padding filled by the row's last real candidate, and the validity mask,
        widened to the model's fixed candidate count for the original architecture."""
        config = self.model.config
        m, k = cand_idx.shape
        if config.architecture == "cellect-original":
            if k > config.k:
                raise InputError(
                    f"the original {config.kind} scorer takes {config.k} candidates per query, "
                    f"found {k}; set k={config.k}"
                )
            cand_idx = np.concatenate(
                [cand_idx, np.full((m, config.k - k), -1, dtype=np.int64)], axis=1
            )
        mask = cand_idx >= 0
        width = cand_idx.shape[1]
        last_valid = width - 1 - np.argmax(mask[:, ::-1], axis=1)
        fill = cand_idx[np.arange(m), last_valid]
        idx = np.where(mask, cand_idx, np.maximum(fill, 0)[:, None])
        return idx, mask

    def _forward(
        self,
        query: Detections,
        cands: Detections,
        rows: np.ndarray,
        idx: np.ndarray,
        mask: np.ndarray,
        z_ratio: float,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        device = self.device

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)

        q_pos = scaled(query.positions[rows], z_ratio)
        c_pos = scaled(cands.positions, z_ratio)[idx]
        scores = self.model.score(
            query_emb=tensor(query.embeddings[rows]),
            cand_emb=tensor(cands.embeddings[idx]),
            offsets=tensor(c_pos - q_pos[:, None, :]),
            query_radius=tensor(query.radius[rows]),
            cand_radius=tensor(cands.radius[idx]),
            query_div=tensor(query.division[rows]),
            cand_div=tensor(cands.division[idx]),
            mask=torch.from_numpy(mask).to(device),
        )
        p_cand, p_none, p_div = scores.probabilities()
        return (
            p_cand.float().cpu().numpy(),
            p_none.float().cpu().numpy(),
            None if p_div is None else p_div.float().cpu().numpy(),
        )
