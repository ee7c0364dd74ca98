"""Correction nodes against cached detections: one-to-one matching and synthetic detections.

An approved node that matches no detection (placed by hand, or moved) becomes a synthetic
detection at the node's own position and radius, with the embedding of the nearest detection of
its frame and division probabilities 0 (unknown). Fine-tuning
(:mod:`napari_cellect.train.finetune_rows`) and re-linking (:mod:`napari_cellect.train.relink`)
both use these, so training and re-linking see the same inputs.
"""

from __future__ import annotations

import numpy as np

from napari_cellect.track.detections import Detections
from napari_cellect.track.scoring_protocol import nearest_candidates
from napari_cellect.train.targets import MatchConfig, match_detections


def _radius_or(radius: np.ndarray, fallback: float) -> np.ndarray:
    radius = np.asarray(radius, np.float64)
    return np.where(np.isfinite(radius) & (radius > 0), radius, fallback)


def _fallback_radius(dets: Detections, match: MatchConfig) -> float:
    finite = dets.radius[np.isfinite(dets.radius) & (dets.radius > 0)]
    return float(np.median(finite)) if len(finite) else match.min_distance


def match_to_detections(
    dets: Detections, positions: np.ndarray, radius: np.ndarray, z_ratio: float, match: MatchConfig
) -> np.ndarray:
    """Detection index of each node (one-to-one, Hungarian within the gate), -1 for none."""
    out = np.full(len(positions), -1, np.int64)
    if len(positions) == 0 or len(dets) == 0:
        return out
    radius = _radius_or(radius, _fallback_radius(dets, match))
    matching = match_detections(dets.positions, positions, radius, z_ratio, match)
    hit = matching.primary >= 0
    out[matching.primary[hit]] = np.flatnonzero(hit)
    return out


def synthetic_detections(
    dets: Detections, positions: np.ndarray, radius: np.ndarray, z_ratio: float, embedding_dim: int
) -> Detections:
    """Detections for nodes the detector did not find: the nodes' positions and radii (the
    nearest detection's radius where a node has none), the nearest detection's embedding,
    division probabilities 0 and score 1."""
    n = len(positions)
    positions = np.asarray(positions, np.float64).reshape(-1, 3)
    if len(dets):
        nearest = nearest_candidates(positions, dets.positions, 1, z_ratio)[0][:, 0]
        embeddings = dets.embeddings[nearest]
        fallback = dets.radius[nearest].astype(np.float64)
    else:
        embeddings = np.zeros((n, embedding_dim), np.float32)
        fallback = np.full(n, np.nan)
    radius = np.asarray(radius, np.float64)
    radius = np.where(np.isfinite(radius) & (radius > 0), radius, fallback)
    return Detections(
        t=dets.t,
        positions=positions,
        embeddings=embeddings,
        radius=np.nan_to_num(radius, nan=0.0),
        division=np.zeros((n, 2), np.float32),
        score=np.ones(n, np.float32),
    )


def table_positions(table: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """(N, 3) z, y, x of ``rows`` of a table with those columns."""
    return np.stack([table["z"][rows], table["y"][rows], table["x"][rows]], axis=1).reshape(-1, 3)
