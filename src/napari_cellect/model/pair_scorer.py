"""Pair scorers: does a query detection match one of its k candidate detections?

Used twice (docs/method.md §5):

- ``kind="merge"``: candidates are the query's k nearest detections of the *same* frame; a match
  means "a duplicate detection of the same cell".
- ``kind="link"``: candidates are the k nearest detections of the *next* frame; a match means
  "this cell, or one of its daughters, in frame t+1". The link scorer also predicts whether the
  query cell divides before t+1.

Both scorer classes take the feature dict of :func:`pair_features` and return
:class:`PairScores` (logits):

- :class:`PairScorer` (ours): a shared per-candidate encoder plus a set context (masked mean and
  max over the candidates). Candidate logits are permutation-equivariant and the "none" and
  division logits permutation-invariant, so the order of the candidates cannot be learned as a
  shortcut (the original flattens the candidates in distance order and relies on random shuffles
  during training). It works with any number of candidates and honours a validity mask.
- :class:`OriginalEXNet`: the original CELLECT ``EXNet`` (docs/method.md §5.4), parameter
  names and shapes exactly as the ``EN+`` / ``EX+`` checkpoints, fed with the features of
  docs/method.md §5.1 in the original order, so imported original scorers run in our pipeline.

``model/scoring.py`` (``ModelScorer``) puts either behind the numpy ``CandidateScorer``
protocol of ``track/scoring_protocol.py`` that merging and linking call.

Semantics of the logits (as in the original): candidate and "none" logits are independent
sigmoids (several candidates may be positive: both daughters of a division); the two division
logits are a softmax whose index 1 means "the query divides".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from napari_cellect.errors import InputError
from napari_cellect.settings.conversion import config_from_dict, config_to_dict

KINDS = ("merge", "link")
ARCHITECTURES = ("set", "cellect-original")

#: Logit given to masked-out candidates: sigmoid(-1e4) == 0 and softmax weight 0, yet finite.
MASKED_LOGIT = -1.0e4
#: Guards the divisions of the normalised product and of the size ratio features.
EPS = 1e-8
#: The original's guard in ``s_c / (d + 1e-4)`` (kept for bit-compatible features).
DISTANCE_EPS = 1e-4
#: Threshold of the original's "query divides and candidate is a newborn" indicator feature.
DIVISION_INDICATOR = 0.5

#: Number of size and division features per candidate (docs/method.md §5.1).
N_SIZE_FEATURES = 6
N_DIVISION_FEATURES = 6
N_OFFSETS = 3


@dataclass(frozen=True)
class PairScorerConfig:
    """Everything needed to rebuild a pair scorer; saved in the model bundle."""

    kind: str = "link"
    """``merge`` (same frame) or ``link`` (next frame; adds the 2 division logits)."""
    architecture: str = "set"
    """``set`` (:class:`PairScorer`) or ``cellect-original`` (:class:`OriginalEXNet`)."""
    k: int = 5
    """Candidates per query it is trained with. ``set`` accepts any number at inference;
    ``cellect-original`` needs exactly 5."""
    embedding_dim: int = 64
    """Length E of the U-Net embedding."""
    hidden: int = 64
    """``set``: width of the per-candidate encoder and of the heads."""
    dropout: float = 0.1
    """``set``: dropout on the encoded candidates (training only)."""
    negative_slope: float = 0.01
    """LeakyReLU slope."""

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind must be one of {KINDS}, found {self.kind!r}")
        if self.architecture not in ARCHITECTURES:
            problems.append(
                f"architecture must be one of {ARCHITECTURES}, found {self.architecture!r}"
            )
        for name in ("k", "embedding_dim", "hidden"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be >= 1, found {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), found {self.dropout}")
        if self.architecture == "cellect-original" and (self.k, self.embedding_dim) != (5, 64):
            problems.append(
                f"cellect-original needs k=5 and embedding_dim=64, found k={self.k}, "
                f"embedding_dim={self.embedding_dim}"
            )
        if problems:
            raise InputError("invalid PairScorerConfig: " + "; ".join(problems))

    @property
    def has_division(self) -> bool:
        return self.kind == "link"

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PairScorerConfig:
        return config_from_dict(cls, values, strict=True)


class PairScores(NamedTuple):
    """Logits of a pair scorer for M queries with k candidates each."""

    candidates: Tensor
    """(M, k): candidate j is the same cell (merge) / this cell or a daughter (link); sigmoid."""
    none: Tensor
    """(M,): no candidate matches; sigmoid."""
    division: Tensor | None
    """(M, 2) for ``link``: softmax, index 1 = the query divides before t+1; None for ``merge``."""

    @property
    def logits(self) -> Tensor:
        """(M, k + 1 [+ 2]): candidates, none, [division] -- the original's output layout."""
        parts = [self.candidates, self.none[:, None]]
        if self.division is not None:
            parts.append(self.division)
        return torch.cat(parts, dim=1)

    def probabilities(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """(P(candidate j matches) (M, k), P(none) (M,), P(query divides) (M,) or None)."""
        division = None if self.division is None else torch.softmax(self.division, dim=1)[:, 1]
        return torch.sigmoid(self.candidates), torch.sigmoid(self.none), division


# ------------------------------------------------------------------------------------ features


def pair_features(
    query_emb: Tensor,
    cand_emb: Tensor,
    offsets: Tensor,
    query_radius: Tensor,
    cand_radius: Tensor,
    query_div: Tensor,
    cand_div: Tensor,
) -> dict[str, Tensor]:
    """Features of M queries against their k candidates (docs/method.md §5.1).

    Args:
        query_emb: (M, E) query embeddings.
        cand_emb: (M, k, E) candidate embeddings.
        offsets: (M, k, 3) candidate minus query position in scaled space
            ``(dz * z_ratio, dy, dx)``; the sign is ignored.
        query_radius: (M,) predicted radius of the query (XY pixels).
        cand_radius: (M, k) predicted radii of the candidates.
        query_div: (M, 2) division *probabilities* of the query [mother, newborn].
        cand_div: (M, k, 2) division probabilities of the candidates.

    Returns a dict of float32 tensors:

    - ``query_emb`` (M, E), ``cand_emb`` (M, k, E): the embeddings themselves (the original's
      pairwise conv branch reads them).
    - ``emb_diff`` (M, k, E): ``c - q``, the embedding difference.
    - ``emb_prod`` (M, k, E): ``q * c / (|q| |c|)``, the per-dimension terms of the cosine
      similarity.
    - ``offsets`` (M, k, 3): ``|dz * z_ratio|, |dy|, |dx|`` (our z, y, x order; the original's
      order is row, column, z, i.e. y, x, z -- :class:`OriginalEXNet` reorders).
    - ``size`` (M, k, 6), with s = radius and d = 3D scaled distance: ``s_c - s_q``,
      ``s_c / (s_q + 1)``, ``d``, ``s_c - d``, ``[s_c - d > 0]`` (candidate's disc reaches the
      query), ``s_c / (d + 1e-4)``.
    - ``division`` (M, k, 6): ``q_mother, q_newborn, c_mother, c_newborn``,
      ``[q_mother > 0.5 and c_newborn > 0.5]``, ``q_mother * c_newborn`` (query about to divide and
      candidate looks like a newborn daughter).
    - ``emb_dist`` (M, k, 1): ``|c - q|``, the distance the triplet loss trains (ours only).
    - ``cosine`` (M, k, 1): cosine similarity of q and c (ours only).
    - ``query`` (M, 3): ``radius, q_mother, q_newborn`` of the query (ours only).
    """
    m, k, e = cand_emb.shape
    _check_shapes(
        query_emb=(query_emb, (m, e)),
        offsets=(offsets, (m, k, N_OFFSETS)),
        query_radius=(query_radius, (m,)),
        cand_radius=(cand_radius, (m, k)),
        query_div=(query_div, (m, 2)),
        cand_div=(cand_div, (m, k, 2)),
    )
    dtype = torch.float32
    q = query_emb.to(dtype)[:, None, :]
    c = cand_emb.to(dtype)
    offsets = offsets.to(dtype).abs()
    s_q = query_radius.to(dtype)[:, None]
    s_c = cand_radius.to(dtype)
    q_div = query_div.to(dtype)[:, None, :].expand(m, k, 2)
    c_div = cand_div.to(dtype)

    diff = c - q
    q_norm = q.norm(dim=2, keepdim=True)
    c_norm = c.norm(dim=2, keepdim=True)
    prod = q * c / (q_norm * c_norm).clamp_min(EPS)
    distance = offsets.norm(dim=2)
    size = torch.stack(
        [
            s_c - s_q,
            s_c / (s_q + 1.0),
            distance,
            s_c - distance,
            (s_c - distance > 0).to(dtype),
            s_c / (distance + DISTANCE_EPS),
        ],
        dim=2,
    )
    q_mother, c_newborn = q_div[..., 0], c_div[..., 1]
    division = torch.stack(
        [
            q_div[..., 0],
            q_div[..., 1],
            c_div[..., 0],
            c_div[..., 1],
            ((q_mother > DIVISION_INDICATOR) & (c_newborn > DIVISION_INDICATOR)).to(dtype),
            q_mother * c_newborn,
        ],
        dim=2,
    )
    return {
        "query_emb": q[:, 0, :],
        "cand_emb": c,
        "emb_diff": diff,
        "emb_prod": prod,
        "offsets": offsets,
        "size": size,
        "division": division,
        "emb_dist": diff.norm(dim=2, keepdim=True),
        "cosine": prod.sum(dim=2, keepdim=True),
        "query": torch.cat([s_q, query_div.to(dtype)], dim=1),
    }


def _check_shapes(**named: tuple[Tensor, tuple[int, ...]]) -> None:
    for name, (tensor, shape) in named.items():
        if tuple(tensor.shape) != shape:
            raise InputError(
                f"pair_features: {name} must have shape {shape}, found {tuple(tensor.shape)}"
            )


def signed_log(x: Tensor) -> Tensor:
    """sign(x) * log1p(|x|): tames distances and ratios (up to ~1e4) without losing order."""
    return torch.sign(x) * torch.log1p(x.abs())


# ------------------------------------------------------------------------------------ scorers


class BaseScorer(nn.Module):
    """Shared interface: ``scorer(features, mask=None) -> PairScores``."""

    def __init__(self, config: PairScorerConfig):
        super().__init__()
        self.config = config

    @property
    def kind(self) -> str:
        return self.config.kind

    def forward(self, features: Mapping[str, Tensor], mask: Tensor | None = None) -> PairScores:
        """Score M queries against k candidates.

        Args:
            features: the dict of :func:`pair_features`.
            mask: optional (M, k) bool, False where a candidate slot is padding (fewer than k
                detections nearby). Masked candidates get :data:`MASKED_LOGIT`.
        """
        m, k = features["size"].shape[:2]
        if mask is not None and tuple(mask.shape) != (m, k):
            raise InputError(f"candidate mask must have shape {(m, k)}, found {tuple(mask.shape)}")
        candidates, none, division = self._logits(features, mask)
        if mask is not None:
            candidates = candidates.masked_fill(~mask, MASKED_LOGIT)
        return PairScores(candidates, none, division if self.config.has_division else None)

    def score(
        self,
        query_emb: Tensor,
        cand_emb: Tensor,
        offsets: Tensor,
        query_radius: Tensor,
        cand_radius: Tensor,
        query_div: Tensor,
        cand_div: Tensor,
        mask: Tensor | None = None,
    ) -> PairScores:
        """:func:`pair_features` then :meth:`forward`."""
        features = pair_features(
            query_emb, cand_emb, offsets, query_radius, cand_radius, query_div, cand_div
        )
        return self(features, mask)

    def _logits(
        self, features: Mapping[str, Tensor], mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        raise NotImplementedError


class PairScorer(BaseScorer):
    """Permutation-aware pair scorer (ours, ``architecture="set"``).

    Each candidate's features go through one shared encoder (Linear-LayerNorm-LReLU-Linear-LReLU).
    A set context, the masked mean and max of the encoded candidates, lets a candidate be judged
    against its rivals ("is it the best of them?") without knowing their order. Heads: candidate
    logit from (own code, context), "none" logit and division logits from the context (the
    division head also sees the query's radius and U-Net division probabilities).
    """

    def __init__(self, config: PairScorerConfig | None = None):
        config = config or PairScorerConfig()
        if config.architecture != "set":
            raise InputError(f"PairScorer needs architecture 'set', found {config.architecture!r}")
        super().__init__(config)
        e, h = config.embedding_dim, config.hidden
        n_in = 2 * e + N_OFFSETS + N_SIZE_FEATURES + N_DIVISION_FEATURES + 2
        slope = config.negative_slope
        self.encoder = nn.Sequential(
            nn.Linear(n_in, h),
            nn.LayerNorm(h),
            nn.LeakyReLU(slope),
            nn.Linear(h, h),
            nn.LeakyReLU(slope),
        )
        self.drop = nn.Dropout(config.dropout)
        # candidate head: own code and context enter through separate linears (same as one linear
        # on their concatenation, but the context part is computed once per query, not per pair)
        self.cand_own = nn.Linear(h, h)
        self.cand_context = nn.Linear(2 * h, h, bias=False)
        self.cand_out = nn.Sequential(nn.LeakyReLU(slope), nn.Linear(h, 1))
        self.none_head = nn.Sequential(nn.Linear(2 * h, h), nn.LeakyReLU(slope), nn.Linear(h, 1))
        if config.has_division:
            self.division_head = nn.Sequential(
                nn.Linear(2 * h + 3, h), nn.LeakyReLU(slope), nn.Linear(h, 2)
            )

    @staticmethod
    def candidate_inputs(features: Mapping[str, Tensor]) -> Tensor:
        """(M, k, 2E + 17): the per-candidate input vector; distances, sizes and the embedding
        distance through :func:`signed_log` (they span several orders of magnitude)."""
        return torch.cat(
            [
                features["emb_diff"],
                features["emb_prod"],
                signed_log(features["offsets"]),
                signed_log(features["size"]),
                features["division"],
                signed_log(features["emb_dist"]),
                features["cosine"],
            ],
            dim=2,
        )

    def _logits(
        self, features: Mapping[str, Tensor], mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        encoded = self.drop(self.encoder(self.candidate_inputs(features)))  # (M, k, H)
        if mask is None:
            mean = encoded.mean(dim=1)
            top = encoded.amax(dim=1)
        else:
            weight = mask[..., None].to(encoded.dtype)
            count = weight.sum(dim=1).clamp_min(1.0)
            mean = (encoded * weight).sum(dim=1) / count
            top = encoded.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)
            top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # no valid one
        context = torch.cat([mean, top], dim=1)  # (M, 2H)
        hidden = self.cand_own(encoded) + self.cand_context(context)[:, None, :]
        candidates = self.cand_out(hidden)[..., 0]
        none = self.none_head(context)[:, 0]
        division = None
        if self.config.has_division:
            query = features["query"]
            query = torch.cat([signed_log(query[:, :1]), query[:, 1:]], dim=1)
            division = self.division_head(torch.cat([context, query], dim=1))
        return candidates, none, division


class OriginalEXNet(BaseScorer):
    """The original CELLECT ``EXNet(64, n)`` (docs/method.md §5.4): n = 6 for ``merge`` (EN),
    8 for ``link`` (EX). Module names and shapes match the ``EN+`` / ``EX+`` checkpoints exactly,
    including the members the original never uses (``bnx``, ``bny``, ``outc``, ``d1``, ``d2``,
    ``s``), so those state dicts load strictly.

    Open details of the description, as chosen here: the pairwise conv branch concatenates the
    two convs' outputs channel-wise before flattening (8 x 64 of ``c1`` then 8 x 64 of ``c2``),
    and ``cx`` has no activation of its own; all LeakyReLUs have slope 0.01.
    """

    def __init__(self, config: PairScorerConfig | None = None):
        config = config or PairScorerConfig(architecture="cellect-original")
        if config.architecture != "cellect-original":
            raise InputError(
                f"OriginalEXNet needs architecture 'cellect-original', found {config.architecture!r}"
            )
        super().__init__(config)
        e, k = config.embedding_dim, config.k
        n = k + 1 + (2 if config.has_division else 0)
        self.n_classes = n
        # registration order follows the original checkpoints' key order
        self.l1 = nn.Linear(k * e, e)
        self.l2 = nn.Linear(k * e, e)
        self.l3 = nn.Linear(k * e, e)
        self.l4 = nn.Linear(k * N_OFFSETS, e)
        self.l5 = nn.Linear(k * N_SIZE_FEATURES, e)
        self.l6 = nn.Linear(k * N_DIVISION_FEATURES, e)
        self.bnx = nn.BatchNorm1d(e)  # unused by the original
        self.bny = nn.BatchNorm1d(e)  # unused by the original
        self.bn1 = nn.BatchNorm1d(e)
        self.bn2 = nn.BatchNorm1d(e)
        self.bn3 = nn.BatchNorm1d(e)
        self.bn4 = nn.BatchNorm1d(e)
        self.bn5 = nn.BatchNorm1d(e)
        self.bn6 = nn.BatchNorm1d(e)
        self.bn7 = nn.BatchNorm1d(2 * e)
        self.bnc = nn.BatchNorm2d(8)
        self.fc = nn.Linear(6 * e, 2 * e)
        self.fc2 = nn.Linear(2 * e, e)
        self.out = nn.Linear(e, n)
        self.c1 = nn.Conv2d(1, 8, (2, 5), padding=(0, 2), bias=False)
        self.c2 = nn.Conv2d(1, 8, (2, 3), padding=(0, 1), bias=False)
        self.cx = nn.Linear(16 * e, e)
        self.outc = nn.Linear(e + n, 2)  # unused by the original
        self.d1 = nn.Dropout(0.1)  # unused by the original
        self.d2 = nn.Dropout(0.1)  # unused by the original
        self.s = nn.Sigmoid()  # unused by the original
        self.lrelu = nn.LeakyReLU(config.negative_slope)

    def _logits(
        self, features: Mapping[str, Tensor], mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        lrelu = self.lrelu
        diff = features["emb_diff"]
        m, k, e = diff.shape
        if k != self.config.k:
            raise InputError(
                f"the original scorer takes exactly {self.config.k} candidates per query, found {k} "
                "(pad by repeating the last candidate, as the original does)"
            )
        query, cand = features["query_emb"], features["cand_emb"]
        conv = self.cx(self._pair_conv(query, cand).reshape(m * k, -1)).reshape(m, k * e)
        offsets = features["offsets"][..., [1, 2, 0]]  # (z, y, x) -> original (row, col, z)
        branches = [
            self.bn1(self.l1(conv)),
            self.bn2(self.l2(diff.reshape(m, k * e))),
            self.bn3(self.l3(features["emb_prod"].reshape(m, k * e))),
            self.bn4(self.l4(offsets.reshape(m, k * N_OFFSETS))),
            self.bn5(self.l5(features["size"].reshape(m, k * N_SIZE_FEATURES))),
            self.bn6(self.l6(features["division"].reshape(m, k * N_DIVISION_FEATURES))),
        ]
        hidden = torch.cat([lrelu(branch) for branch in branches], dim=1)
        hidden = self.bn7(lrelu(self.fc(hidden)))
        logits = self.out(lrelu(self.fc2(hidden)))
        division = logits[:, k + 1 : k + 3] if self.config.has_division else None
        return logits[:, :k], logits[:, k], division

    def _pair_conv(self, query: Tensor, cand: Tensor) -> Tensor:
        """Branch 1 before ``cx``: per candidate, query over candidate as a 1 x 2 x E image
        through ``c1`` (kernel 2 x 5) and ``c2`` (2 x 3), each through the shared ``bnc`` and
        LReLU, concatenated channel-wise: (M, k, 16, E). All candidates run as one batch."""
        m, k, e = cand.shape
        image = torch.stack([query[:, None, :].expand(m, k, e), cand], dim=2).reshape(
            m * k, 1, 2, e
        )
        a = self.lrelu(self.bnc(self.c1(image)))
        b = self.lrelu(self.bnc(self.c2(image)))
        return torch.cat([a, b], dim=1).reshape(m, k, -1, e)


def build_scorer(config: PairScorerConfig) -> BaseScorer:
    """The scorer class named by ``config.architecture``."""
    if config.architecture == "cellect-original":
        return OriginalEXNet(config)
    return PairScorer(config)


# ------------------------------------------------------------------------------ helpers


def _padded_indices(cand_idx: np.ndarray, valid: np.ndarray, repeat_last: bool) -> np.ndarray:
    """Indices safe to gather with from (M, k) candidate indices (-1 = padding): padded slots
    point at the preceding real candidate of the row (``repeat_last``, the original's padding;
    leading padding at the first real one) or at candidate 0 (masked anyway)."""
    if not repeat_last:
        return np.where(valid, cand_idx, 0)
    k = cand_idx.shape[1]
    positions = np.where(valid, np.arange(k), -1)
    last = np.maximum.accumulate(positions, axis=1)  # last real slot at or before each slot
    first_real = np.argmax(valid, axis=1)  # rows may start with padding
    last = np.where(last < 0, first_real[:, None], last)
    return np.take_along_axis(np.where(valid, cand_idx, 0), last, axis=1)
