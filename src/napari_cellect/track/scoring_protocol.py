"""What merging and linking need from a pair scorer, and the geometric scorer that needs no model.

A scorer looks at each query detection and its ``k`` nearest candidate detections (the same frame
for merging, the next frame for linking) and returns, per query:

- ``p_match[i, j]``: probability that candidate ``j`` is the same cell as query ``i`` (merging) or
  its continuation or one of its daughters (linking). Independent per candidate, so both daughters
  of a division can score high.
- ``p_none[i]``: probability that no candidate matches.
- ``p_divide[i]``: probability that query ``i`` divides before the candidates' frame.

Candidate lists are ``(M, k)`` integer arrays into the candidate detections, padded with ``-1``
where a frame holds fewer than ``k`` candidates; a scorer must give padded slots ``p_match = 0``.
The learned scorer lives in :mod:`napari_cellect.model.scoring` (torch); this module does not
import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import numpy as np
from scipy.spatial import cKDTree

from napari_cellect.errors import InputError, ModelError

if TYPE_CHECKING:
    from napari_cellect.track.detections import Detections

#: Index used for a padded (missing) candidate.
NO_CANDIDATE = -1


@dataclass(frozen=True)
class CandidateScores:
    """Scores of M queries against k candidates each (see the module docstring)."""

    p_match: np.ndarray  # (M, k) float32
    p_none: np.ndarray  # (M,) float32
    p_divide: np.ndarray  # (M,) float32

    def checked(self, cand_idx: np.ndarray, source: str = "scorer") -> CandidateScores:
        """Validate shapes and values against ``cand_idx``; padded slots are forced to 0.

        Raises :class:`ModelError` naming the scorer when an array has the wrong shape or holds
        NaN, so a broken model fails loudly instead of producing silent nonsense tracks.
        """
        m, k = cand_idx.shape
        expected = {"p_match": (m, k), "p_none": (m,), "p_divide": (m,)}
        arrays = {}
        for name, shape in expected.items():
            value = np.asarray(getattr(self, name), dtype=np.float32)
            if value.shape != shape:
                raise ModelError(
                    f"{source} returned {name} of shape {value.shape}; expected {shape}"
                )
            if np.isnan(value).any():
                raise ModelError(f"{source} returned NaN in {name}")
            arrays[name] = np.clip(value, 0.0, 1.0)
        arrays["p_match"] = np.where(cand_idx >= 0, arrays["p_match"], np.float32(0.0))
        return CandidateScores(**arrays)


@runtime_checkable
class CandidateScorer(Protocol):
    """Anything that scores queries against candidate detections (numpy in, numpy out)."""

    def score(
        self, query: Detections, cands: Detections, cand_idx: np.ndarray, z_ratio: float
    ) -> CandidateScores:
        """Score ``query`` detections against ``cands[cand_idx]`` (``cand_idx`` is (M, k))."""
        ...


def scaled(positions: np.ndarray, z_ratio: float) -> np.ndarray:
    """(N, 3) z, y, x voxel positions in isotropic units: z is multiplied by ``z_ratio``."""
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    return pos * np.array([z_ratio, 1.0, 1.0])


def nearest_candidates(
    query_positions: np.ndarray,
    cand_positions: np.ndarray,
    k: int,
    z_ratio: float,
    *,
    exclude_self: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest candidates of each query in scaled space (one KD-tree query).

    Returns ``(idx, dist)``, both (M, k): candidate indices padded with ``-1`` and distances
    padded with ``inf``, nearest first. With ``exclude_self`` the query and candidate sets are the
    same detections and each query's own index is left out (even when another detection sits at
    exactly the same position).
    """
    if k < 1:
        raise InputError(f"the number of candidates k must be at least 1; got {k}")
    if z_ratio <= 0 or not np.isfinite(z_ratio):
        raise InputError(f"z_ratio must be a positive number; got {z_ratio}")
    query = scaled(query_positions, z_ratio)
    cand = scaled(cand_positions, z_ratio)
    m, n = len(query), len(cand)
    idx = np.full((m, k), NO_CANDIDATE, dtype=np.int64)
    dist = np.full((m, k), np.inf, dtype=np.float64)
    if m == 0 or n == 0:
        return idx, dist
    n_query = min(k + int(exclude_self), n)
    d, i = cKDTree(cand).query(query, k=n_query)
    d = d.reshape(m, n_query)
    i = i.reshape(m, n_query).astype(np.int64)
    if exclude_self:
        is_self = i == np.arange(m)[:, None]
        # a stable sort on the self flag moves the self entry to the end of its row
        order = np.argsort(is_self, axis=1, kind="stable")
        i = np.take_along_axis(i, order, axis=1)
        d = np.take_along_axis(d, order, axis=1)
        valid = ~np.take_along_axis(is_self, order, axis=1)
        i = np.where(valid, i, NO_CANDIDATE)
        d = np.where(valid, d, np.inf)
        i, d = i[:, :k], d[:, :k]
    width = i.shape[1]
    idx[:, :width] = i
    dist[:, :width] = d
    return idx, dist


def candidate_distances(
    query_positions: np.ndarray, cand_positions: np.ndarray, cand_idx: np.ndarray, z_ratio: float
) -> np.ndarray:
    """(M, k) scaled distances from each query to its candidates (``inf`` for padded slots)."""
    query = scaled(query_positions, z_ratio)
    cand = scaled(cand_positions, z_ratio)
    valid = cand_idx >= 0
    if len(cand) == 0:
        return np.full(cand_idx.shape, np.inf)
    diff = cand[np.where(valid, cand_idx, 0)] - query[:, None, :]
    return np.where(valid, np.linalg.norm(diff, axis=-1), np.inf)


def cosine_distance(
    query_emb: np.ndarray, cand_emb: np.ndarray, cand_idx: np.ndarray
) -> np.ndarray:
    """(M, k) cosine distance 1 - cos in [0, 2]; 0 (no evidence) where an embedding is all zero."""
    m, k = cand_idx.shape
    if query_emb.ndim != 2 or query_emb.shape[1] == 0 or len(cand_emb) == 0:
        return np.zeros((m, k))
    q = np.asarray(query_emb, dtype=np.float64)
    c = np.asarray(cand_emb, dtype=np.float64)
    q_norm = np.linalg.norm(q, axis=1)
    c_norm = np.linalg.norm(c, axis=1)
    safe = np.where(cand_idx >= 0, cand_idx, 0)
    dot = np.einsum("me,mke->mk", q, c[safe])
    denom = q_norm[:, None] * c_norm[safe]
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), 1.0)
    return np.clip(1.0 - cos, 0.0, 2.0)


@dataclass(frozen=True)
class GeometricScorer:
    """Probabilities from geometry and embeddings alone: the fallback without a trained model.

    ``p_match = sigmoid(match_logit - (d / (distance_scale * r))**2 / 2
    - (c / embedding_scale)**2 / 2)`` with ``d`` the scaled centre distance, ``r`` the mean radius
    of the two detections (at least ``radius_floor``) and ``c`` the cosine distance of their
    embeddings. It is symmetric in query and candidate, so merging scores agree both ways.

    ``p_none`` is the probability that no candidate matches, treating candidates as independent:
    ``prod(1 - p_match)``.

    ``p_divide`` combines the query's own mother-about-to-divide probability ``m`` with, when
    ``use_daughter_evidence`` is set, the newborn-daughter probabilities ``n1, n2`` of its two
    best-matching candidates: ``1 - (1 - m) * (1 - sqrt(n1 * n2))`` (a noisy-or; a daughter pair
    seen one frame later rescues a mother the detector missed).
    """

    distance_scale: float = 1.0
    """Typical displacement, in radii: a candidate this far away loses 0.5 from its log-odds."""
    embedding_scale: float = 0.25
    """Typical cosine distance between embeddings of the same cell (same role as distance_scale)."""
    match_logit: float = 3.0
    """Log-odds of a match for a candidate at zero distance with an identical embedding."""
    radius_floor: float = 1.0
    """Smallest radius (voxels) used to scale distances, so a zero predicted radius stays usable."""
    use_daughter_evidence: bool = True
    """Let the candidates' newborn-daughter probabilities raise ``p_divide``."""

    #: Its ``p_divide`` already holds the detector's own division probability of the query
    #: (``m`` above), so the linker does not weigh that in a second time
    #: (``track/division_evidence.py``).
    includes_detector_division: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for name in ("distance_scale", "embedding_scale", "radius_floor"):
            value = getattr(self, name)
            if not value > 0:
                raise InputError(f"GeometricScorer.{name} must be positive; got {value}")

    @classmethod
    def for_merge(cls) -> GeometricScorer:
        """Defaults for same-frame duplicates: they sit within about half a radius."""
        return cls(distance_scale=0.5, embedding_scale=0.25, match_logit=3.0)

    @classmethod
    def for_link(cls) -> GeometricScorer:
        """Defaults for frame-to-frame links: cells move up to about a radius per frame."""
        return cls()

    def score(
        self, query: Detections, cands: Detections, cand_idx: np.ndarray, z_ratio: float
    ) -> CandidateScores:
        cand_idx = np.asarray(cand_idx, dtype=np.int64)
        valid = cand_idx >= 0
        safe = np.where(valid, cand_idx, 0)
        dist = candidate_distances(query.positions, cands.positions, cand_idx, z_ratio)
        q_r = np.asarray(query.radius, dtype=np.float64)
        c_r = np.asarray(cands.radius, dtype=np.float64)
        pair_r = 0.5 * (q_r[:, None] + (c_r[safe] if len(c_r) else 0.0))
        pair_r = np.maximum(pair_r, self.radius_floor)
        emb = cosine_distance(np.asarray(query.embeddings), np.asarray(cands.embeddings), cand_idx)
        logit = (
            self.match_logit
            - 0.5 * (np.where(valid, dist, 0.0) / (self.distance_scale * pair_r)) ** 2
            - 0.5 * (emb / self.embedding_scale) ** 2
        )
        p_match = np.where(valid, _sigmoid(logit), 0.0)
        p_none = np.prod(1.0 - p_match, axis=1)
        mother = np.asarray(query.division, dtype=np.float64).reshape(-1, 2)[:, 0]
        p_divide = mother
        if self.use_daughter_evidence and cand_idx.shape[1] >= 2 and len(cands.radius):
            newborn = np.asarray(cands.division, dtype=np.float64).reshape(-1, 2)[:, 1]
            best_two = np.argsort(-p_match, axis=1, kind="stable")[:, :2]
            two_idx = np.take_along_axis(cand_idx, best_two, axis=1)
            two_newborn = np.where(two_idx >= 0, newborn[np.where(two_idx >= 0, two_idx, 0)], 0.0)
            pair = np.sqrt(two_newborn[:, 0] * two_newborn[:, 1])
            p_divide = 1.0 - (1.0 - mother) * (1.0 - pair)
        return CandidateScores(
            p_match=p_match.astype(np.float32),
            p_none=p_none.astype(np.float32),
            p_divide=np.clip(p_divide, 0.0, 1.0).astype(np.float32),
        )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))
