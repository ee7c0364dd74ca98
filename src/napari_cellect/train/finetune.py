"""Fine-tuning the link and merge scorers from corrections, and re-linking that keeps them.

**Data.** Fine-tuning never reruns the U-Net: it reads the cached per-frame
:class:`~napari_cellect.track.detections.Detections` and builds the scorers' inputs exactly as
inference does. Each frame's detections are merged with the *starting* merge scorer
(:func:`~napari_cellect.track.merge.merge_duplicates`, as the tracking run that the person
corrected did); the nodes of the :class:`~napari_cellect.track.corrections.CorrectionSet` are
matched to the merged detections one-to-one (Hungarian within a radius,
:func:`~napari_cellect.train.targets.match_detections`). An approved node that matches no
detection (placed by hand, or moved) becomes a **synthetic detection** at the node's own position
and radius, with the embedding of the nearest detection of its frame and division probabilities
0 (unknown). Reading the U-Net embedding at the position would need the images and a U-Net pass;
the nearest detection is usually the same cell seen slightly off, or a neighbour of similar
appearance, which is what the scorers compare anyway. :func:`relink` inserts the same synthetic
detections, so training and re-linking see the same inputs.

**Rows.** Link rows: each labelled parent of frame t against its ``k`` nearest detections of
frame t+1 (:func:`~napari_cellect.track.scoring_protocol.nearest_candidates`, the linker's own
search), features from :func:`~napari_cellect.model.pair_scorer.pair_features` through the
scorer's ``score`` (the same call and the same padding as the inference adapter
:class:`~napari_cellect.model.scoring.ModelScorer`). A candidate is
labelled 1 when the link is approved, 0 when it is a broken link or a candidate negative (or a
deleted false detection next to an approved link), and is left out otherwise; the "none" logit
is trained (target 0) only on rows whose approved child is among the candidates. The division head
is trained on rows with a division label. Merge rows: each raw detection of a labelled node
against its ``k`` nearest raw detections of its frame (the merge stage's search): 1 for a deleted
duplicate of a kept node, 0 for two distinct approved cells.

**Training.** Adam with a small learning rate, a few short epochs of random mini-batches, a
held-out part of the rows (``validation_fraction``, at least one row) for early stopping (the
weights of the best validation loss are kept, which may be the starting weights), and an L2-SP
penalty ``l2sp * ||w - w0||^2`` that keeps the weights near the starting ones so a few
corrections cannot wreck the model. Two phases, each with its own early stopping: first the link
and merge candidates, then the link scorer's division head alone on the tuned encoder (the few
division labels are memorised within a few steps, long before the link labels are learned). A
loss term is used only when its training rows hold both classes (a set of only positives would
teach "everything matches"). The networks stay in eval
mode: dropout is off and batch-norm statistics are those of the base model. The given bundle is
never modified: everything happens on a deep copy, and a cancelled run raises
:class:`~napari_cellect.errors.Cancelled`.

**Re-linking.** :func:`relink` tracks the cached detections again with the tuned model while
keeping every approved link, approved track start and approved (possibly hand-placed) node, and
marks what changed for review; :func:`load_pinned` reads the approved links of a tracks file.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from napari_cellect.errors import Cancelled, InputError
from napari_cellect.infer.device import resolve_device
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.model.pair_scorer import BaseScorer, PairScores
from napari_cellect.model.scoring import ModelScorer
from napari_cellect.track.corrections import CorrectionSet, NotEnoughCorrections
from napari_cellect.track.detections import Detections
from napari_cellect.track.graph import NO_PARENT, TrackGraph
from napari_cellect.track.link import LinkingConfig, link_sequence
from napari_cellect.track.merge import MergeConfig, merge_duplicates
from napari_cellect.track.scoring_protocol import nearest_candidates, scaled
from napari_cellect.train.losses import division_head_loss
from napari_cellect.train.targets import MatchConfig, match_detections

logger = logging.getLogger(__name__)

#: Extra TrackGraph column set by :func:`relink`: True where a node's incoming link changed.
CHANGED_COLUMN = "changed"


# ====================================================================================== config


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of :func:`finetune` (recorded in the tuned bundle's metadata)."""

    epochs: int = 25
    """Most epochs per phase (early stopping usually ends sooner)."""
    steps_per_epoch: int = 8
    """Optimiser steps per epoch, each on a random mini-batch of training rows."""
    batch_size: int = 256
    """Rows per step and scorer (all rows when there are fewer)."""
    lr: float = 3e-4
    """Adam learning rate: small, the model is only nudged."""
    l2sp: float = 1e-3
    """Weight of the L2-SP penalty ``sum (w - w0)^2`` towards the starting weights; 0 disables."""
    validation_fraction: float = 0.2
    """Share of the rows held out for early stopping (at least one row when there are two)."""
    patience: int = 5
    """Stop after this many epochs without a better validation loss."""
    min_improvement: float = 1e-4
    """A validation loss must fall by more than this to count as better."""
    train_link: bool = True
    """Tune the link scorer's candidate and "none" logits."""
    train_division: bool = True
    """Tune the link scorer's division head."""
    train_merge: bool = True
    """Tune the merge scorer."""
    link_weight: float = 1.0
    """Weight of the link candidate loss."""
    division_weight: float = 1.0
    """Weight of the division-head loss (classes are balanced within it)."""
    merge_weight: float = 1.0
    """Weight of the merge candidate loss."""
    match_radius_factor: float = 0.75
    """A node matches a detection within this many node radii..."""
    match_min_distance: float = 2.0
    """...or within this many xy pixels, whichever is larger."""
    seed: int = 0
    """Seed of the validation split and the mini-batches."""
    device: str = "cpu"
    """Where to train ('cpu', 'auto', 'cuda', 'mps'); the scorers are small, the CPU is fine."""
    threads: int | None = 1
    """Torch CPU threads while fine-tuning (restored afterwards): the scorers' matrices are tiny,
    so more threads only add synchronisation, which is slow on a busy machine. None keeps the
    current setting."""

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> InputError:
            return InputError(
                f"FinetuneConfig.{name}: expected {expected}, found {getattr(self, name)!r}"
            )

        if self.threads is not None and not _is_int(self.threads, 1):
            raise bad("threads", "None or an integer >= 1")
        for name in ("epochs", "steps_per_epoch", "batch_size", "patience"):
            if not _is_int(getattr(self, name), 1):
                raise bad(name, "an integer >= 1")
        for name in ("lr", "match_min_distance", "match_radius_factor"):
            if not getattr(self, name) > 0:
                raise bad(name, "a number > 0")
        for name in ("l2sp", "min_improvement", "link_weight", "division_weight", "merge_weight"):
            if not getattr(self, name) >= 0:
                raise bad(name, "a number >= 0")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise bad("validation_fraction", "a number in [0, 1)")

    @property
    def match(self) -> MatchConfig:
        """How nodes are matched to detections."""
        return MatchConfig(
            radius_factor=self.match_radius_factor, min_distance=self.match_min_distance
        )


def _is_int(value: Any, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= minimum


@dataclass(frozen=True)
class FinetuneProgress:
    """Yielded by :func:`iter_finetune` after the data is ready (epoch 0) and after each epoch."""

    epoch: int
    epochs: int
    train_loss: float
    """Mean training loss of the epoch (NaN at epoch 0)."""
    val_loss: float
    """Validation loss after the epoch (NaN without validation rows)."""
    best_val_loss: float
    n_rows: dict[str, int] = field(default_factory=dict)
    """Training rows per scorer (``link``, ``merge``)."""
    stage: str = ""
    """``links and merges`` or ``divisions`` (see :func:`finetune`)."""


ProgressCallback = Callable[[FinetuneProgress], None]


# ============================================================================ frames and matching


@dataclass
class _Frame:
    """One frame's detections as the scorers see them, with the node each one is."""

    raw: Detections
    groups: np.ndarray  # raw detection -> index in ``dets``
    dets: Detections  # merged detections, then synthetic ones
    node: np.ndarray  # (len(dets),) node id, -1 for none
    removed: np.ndarray  # (len(dets),) id of a deleted node it matches, -1 for none
    n_synthetic: int = 0


def _radius_or(radius: np.ndarray, fallback: float) -> np.ndarray:
    radius = np.asarray(radius, np.float64)
    return np.where(np.isfinite(radius) & (radius > 0), radius, fallback)


def _fallback_radius(dets: Detections, match: MatchConfig) -> float:
    finite = dets.radius[np.isfinite(dets.radius) & (dets.radius > 0)]
    return float(np.median(finite)) if len(finite) else match.min_distance


def _match_to(
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


def _prepare_frame(
    raw: Detections,
    merge_scorer: Any,
    merge_cfg: MergeConfig,
    z_ratio: float,
    match: MatchConfig,
    node_ids: np.ndarray,
    node_pos: np.ndarray,
    node_radius: np.ndarray,
    required: np.ndarray,
    removed_ids: np.ndarray,
    removed_pos: np.ndarray,
    removed_radius: np.ndarray,
    embedding_dim: int,
) -> _Frame:
    """Merge, match nodes (then deleted nodes) to detections, add synthetic required nodes."""
    merged, groups = merge_duplicates(raw, merge_scorer, merge_cfg, z_ratio)
    det_of_node = _match_to(merged, node_pos, node_radius, z_ratio, match)
    node = np.full(len(merged), -1, np.int64)
    node[det_of_node[det_of_node >= 0]] = node_ids[det_of_node >= 0]
    removed = np.full(len(merged), -1, np.int64)
    free = np.flatnonzero(node < 0)
    if len(removed_ids) and len(free):
        hit = _match_to(merged.subset(free), removed_pos, removed_radius, z_ratio, match)
        removed[free[hit[hit >= 0]]] = removed_ids[hit >= 0]
    missing = np.flatnonzero((det_of_node < 0) & required)
    dets = merged
    if len(missing):
        extra = synthetic_detections(merged, node_pos[missing], node_radius[missing], z_ratio,
                                     embedding_dim)  # fmt: skip
        dets = Detections.concat([merged, extra]) if len(merged) else extra
        node = np.concatenate([node, node_ids[missing]])
        removed = np.concatenate([removed, np.full(len(missing), -1, np.int64)])
    return _Frame(raw, groups, dets, node, removed, len(missing))


# =================================================================================== scorer rows


def _scorer_inputs(
    query: Detections, cands: Detections, cand_idx: np.ndarray, z_ratio: float, scorer: BaseScorer
) -> dict[str, np.ndarray]:
    """The arrays the inference adapter (:class:`~napari_cellect.model.scoring.ModelScorer`)
    feeds to ``scorer.score``: its own padding (and widening, for the original architecture),
    gathering and scaled offsets. ``mask`` may be wider than ``cand_idx``."""
    idx, mask = ModelScorer(scorer)._padded(cand_idx)
    q_pos = scaled(query.positions, z_ratio)
    c_pos = scaled(cands.positions, z_ratio)[idx]
    return {
        "query_emb": query.embeddings, "cand_emb": cands.embeddings[idx],
        "offsets": c_pos - q_pos[:, None, :], "query_radius": query.radius,
        "cand_radius": cands.radius[idx], "query_div": query.division,
        "cand_div": cands.division[idx], "mask": mask,
    }  # fmt: skip


@dataclass
class _Rows:
    """Query rows of one scorer with their labels (numpy until :meth:`tensors`)."""

    inputs: list[dict[str, np.ndarray]] = field(default_factory=list)
    target: list[np.ndarray] = field(default_factory=list)  # (M, k) float
    known: list[np.ndarray] = field(default_factory=list)  # (M, k) bool
    none_known: list[np.ndarray] = field(default_factory=list)  # (M,) bool (target 0)
    division: list[np.ndarray] = field(default_factory=list)  # (M,) int: -1 unknown, 0, 1

    def add(self, inputs: dict[str, np.ndarray], target: np.ndarray, known: np.ndarray,
            none_known: np.ndarray, division: np.ndarray) -> None:  # fmt: skip
        mask = inputs["mask"]
        extra = mask.shape[1] - target.shape[1]  # the original architecture's fixed width
        if extra:
            target = np.pad(target, ((0, 0), (0, extra)))
            known = np.pad(known, ((0, 0), (0, extra)))
        # inference never runs the model on a query without candidates
        keep = mask.any(axis=1)
        if not keep.any():
            return
        self.inputs.append({k: v[keep] for k, v in inputs.items()})
        self.target.append(target[keep].astype(np.float32))
        self.known.append(known[keep] & mask[keep])
        self.none_known.append(none_known[keep])
        self.division.append(division[keep].astype(np.int64))

    def __len__(self) -> int:
        return sum(len(t) for t in self.target)

    def tensors(self, device: torch.device) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for key in self.inputs[0]:
            array = np.concatenate([part[key] for part in self.inputs])
            dtype = torch.bool if key == "mask" else torch.float32
            out[key] = torch.as_tensor(np.ascontiguousarray(array)).to(device, dtype)
        out["target"] = torch.as_tensor(np.concatenate(self.target), device=device)
        out["known"] = torch.as_tensor(np.concatenate(self.known), device=device)
        out["none_known"] = torch.as_tensor(np.concatenate(self.none_known), device=device)
        out["division"] = torch.as_tensor(np.concatenate(self.division), device=device)
        return out


def _ordered(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a <= b else (b, a)


def _pair_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in np.asarray(pairs).reshape(-1, 2).tolist()}


def _link_rows(
    rows: _Rows, fa: _Frame, fb: _Frame, queries: np.ndarray, cs: _Labels, k: int, z_ratio: float,
    scorer: BaseScorer,
) -> None:  # fmt: skip
    """Rows of the labelled parents ``queries`` (node ids) of frame a against frame b."""
    q_det = np.flatnonzero(np.isin(fa.node, queries))
    if len(q_det) == 0 or len(fb.dets) == 0:
        return
    query = fa.dets.subset(q_det)
    cand_idx, _ = nearest_candidates(query.positions, fb.dets.positions, k, z_ratio)
    valid = cand_idx >= 0
    safe = np.where(valid, cand_idx, 0)
    c_node = np.where(valid, fb.node[safe], -1)
    c_removed = np.where(valid, fb.removed[safe], -1)
    q_node = fa.node[q_det]
    target = np.zeros(cand_idx.shape, np.float32)
    known = np.zeros(cand_idx.shape, bool)
    for i, q in enumerate(q_node.tolist()):
        for j in range(cand_idx.shape[1]):
            pair = (q, int(c_node[i, j]))
            if not valid[i, j]:
                continue
            if pair in cs.positive:
                target[i, j], known[i, j] = 1.0, True
            elif pair in cs.negative:
                known[i, j] = True
    has_positive = (known & (target > 0)).any(axis=1)
    # a deleted false detection is no continuation of a cell whose child is approved
    known |= has_positive[:, None] & (c_removed >= 0) & (c_node < 0) & valid
    division = np.array([cs.divides.get(int(q), -1) for q in q_node], np.int64)
    rows.add(_scorer_inputs(query, fb.dets, cand_idx, z_ratio, scorer), target, known,
             has_positive, division)  # fmt: skip


def _merge_rows(
    rows: _Rows, frame: _Frame, cs: _Labels, k: int, z_ratio: float, scorer: BaseScorer
) -> None:
    """Rows of the raw detections that belong to merge-labelled nodes, against their k nearest
    raw detections of the frame."""
    raw = frame.raw
    if len(raw) < 2:
        return
    member_node = frame.node[frame.groups]
    member_removed = frame.removed[frame.groups]
    labelled = np.isin(member_node, cs.merge_nodes) | np.isin(member_removed, cs.merge_removed)
    q = np.flatnonzero(labelled)
    if len(q) == 0:
        return
    cand_idx, _ = nearest_candidates(raw.positions, raw.positions, k, z_ratio, exclude_self=True)
    cand_idx = cand_idx[q]
    valid = cand_idx >= 0
    safe = np.where(valid, cand_idx, 0)
    target = np.zeros(cand_idx.shape, np.float32)
    known = np.zeros(cand_idx.shape, bool)
    for i, qi in enumerate(q.tolist()):
        a_node, a_removed = int(member_node[qi]), int(member_removed[qi])
        for j in range(cand_idx.shape[1]):
            if not valid[i, j]:
                continue
            c = int(safe[i, j])
            b_node, b_removed = int(member_node[c]), int(member_removed[c])
            if (a_node, b_removed) in cs.duplicates or (b_node, a_removed) in cs.duplicates:
                target[i, j], known[i, j] = 1.0, True
            elif a_node >= 0 and b_node >= 0 and _ordered(a_node, b_node) in cs.distinct:
                known[i, j] = True
    has_positive = (known & (target > 0)).any(axis=1)
    query = raw.subset(q)
    rows.add(_scorer_inputs(query, raw, cand_idx, z_ratio, scorer), target, known, has_positive,
             np.full(len(q), -1, np.int64))  # fmt: skip


@dataclass
class _Labels:
    """Set views of a CorrectionSet for fast row labelling."""

    positive: set[tuple[int, int]]
    negative: set[tuple[int, int]]
    divides: dict[int, int]
    duplicates: set[tuple[int, int]]
    distinct: set[tuple[int, int]]
    merge_nodes: np.ndarray
    merge_removed: np.ndarray

    @classmethod
    def of(cls, cs: CorrectionSet) -> _Labels:
        distinct = cs.distinct
        return cls(
            positive=_pair_set(cs.positive_links),
            negative=_pair_set(cs.negative_links),
            divides={n: int(d) for n, d in cs.divides.items()},
            duplicates=_pair_set(cs.duplicates),
            distinct=_pair_set(np.stack([distinct.min(axis=1), distinct.max(axis=1)], axis=1))
            if len(distinct) else set(),
            merge_nodes=np.unique(np.concatenate([cs.duplicates[:, 0], distinct.ravel()])),
            merge_removed=np.unique(cs.duplicates[:, 1]),
        )


@dataclass
class TrainingData:
    """Rows built from a CorrectionSet (see the module docstring); also reports what could not
    be used."""

    link: _Rows
    merge: _Rows
    n_synthetic: int
    n_gap_links: int
    frames: list[int]


def build_training_data(
    bundle: ModelBundle,
    corrections: CorrectionSet,
    detections: Sequence[Detections],
    z_ratio: float,
    config: FinetuneConfig | None = None,
    linking: Any = None,
) -> TrainingData:
    """Scorer rows of the corrections' frames, from cached (raw) detections."""
    cfg = config or FinetuneConfig()
    by_t = {int(d.t): d for d in detections}
    if len(by_t) != len(detections):
        raise InputError("detections: expected one Detections per frame, found repeated frames")
    link_cfg = LinkingConfig.from_any(linking if linking is not None else bundle.thresholds)
    merge_cfg = MergeConfig.from_any(bundle.thresholds)
    labels = _Labels.of(corrections)
    nodes = corrections.nodes
    removed = corrections.removed
    node_t = nodes["t"]
    frames_needed = set(np.unique(np.concatenate([node_t, removed["t"]])).tolist())
    # link rows need the frame after each labelled parent
    parent_t = _frames_of(nodes, np.concatenate([corrections.positive_links[:, 0],
                                                 corrections.negative_links[:, 0],
                                                 corrections.division_nodes]))  # fmt: skip
    frames_needed |= {t + 1 for t in parent_t.tolist() if t + 1 in by_t}
    missing = sorted(t for t in frames_needed if t not in by_t)
    if missing:
        raise InputError(
            "the corrections refer to frames without cached detections: "
            f"{', '.join(map(str, missing[:10]))}; run prediction on them first"
        )
    embedding_dim = next((d.embedding_dim for d in detections), bundle.link_config.embedding_dim)
    required_ids = _labelled_ids(corrections)
    merge_scorer = bundle.candidate_scorer("merge")
    frames: dict[int, _Frame] = {}
    for t in sorted(frames_needed):
        here = node_t == t
        gone = removed["t"] == t
        frames[t] = _prepare_frame(
            by_t[t], merge_scorer, merge_cfg, z_ratio, cfg.match,
            nodes["id"][here], _xyz(nodes, here), nodes["radius"][here],
            np.isin(nodes["id"][here], required_ids),
            removed["id"][gone], _xyz(removed, gone), removed["radius"][gone], embedding_dim,
        )  # fmt: skip

    link_rows, merge_rows = _Rows(), _Rows()
    queries_by_t, n_gap = _link_queries(corrections, nodes)
    for t, queries in sorted(queries_by_t.items()):
        if t in frames and t + 1 in frames:
            _link_rows(link_rows, frames[t], frames[t + 1], queries, labels, link_cfg.k, z_ratio,
                       bundle.link_scorer)  # fmt: skip
    for t, frame in frames.items():
        _merge_rows(merge_rows, frame, labels, merge_cfg.k, z_ratio, bundle.merge_scorer)
    return TrainingData(
        link=link_rows,
        merge=merge_rows,
        n_synthetic=sum(f.n_synthetic for f in frames.values()),
        n_gap_links=n_gap,
        frames=sorted(frames),
    )


def _xyz(table: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    return np.stack([table["z"][rows], table["y"][rows], table["x"][rows]], axis=1).reshape(-1, 3)


def _frames_of(nodes: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    known = np.isin(ids, nodes["id"])
    order = np.argsort(nodes["id"])
    rows = order[np.searchsorted(nodes["id"][order], ids[known])]
    return np.unique(nodes["t"][rows])


def _labelled_ids(cs: CorrectionSet) -> np.ndarray:
    """Nodes a label refers to (they get a synthetic detection when none matches)."""
    return np.unique(np.concatenate([
        cs.positive_links.ravel(), cs.negative_links.ravel(), cs.starts, cs.division_nodes,
        cs.duplicates[:, 0], cs.distinct.ravel(),
    ]))  # fmt: skip


def _link_queries(
    cs: CorrectionSet, nodes: dict[str, np.ndarray]
) -> tuple[dict[int, np.ndarray], int]:
    """Labelled parents per frame (links to the next frame, and division labels)."""
    order = np.argsort(nodes["id"])
    sorted_ids = nodes["id"][order]

    def frame_of(ids: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(sorted_ids, ids), max(len(sorted_ids) - 1, 0))
        ok = sorted_ids[pos] == ids if len(sorted_ids) else np.zeros(len(ids), bool)
        return np.where(ok, nodes["t"][order[pos]], -1)

    links = np.concatenate([cs.positive_links, cs.negative_links])
    tp, tc = frame_of(links[:, 0]), frame_of(links[:, 1])
    consecutive = (tp >= 0) & (tc == tp + 1)
    n_gap = int(np.count_nonzero((tp >= 0) & (tc > tp + 1)))
    if n_gap:
        logger.info("%d labelled link(s) skip frames; the link scorer only sees consecutive frames",
                    n_gap)  # fmt: skip
    ids = np.concatenate([links[consecutive, 0], cs.division_nodes])
    t = np.concatenate([tp[consecutive], frame_of(cs.division_nodes)])
    out = {int(f): np.unique(ids[t == f]) for f in np.unique(t[t >= 0])}
    return out, n_gap


# ===================================================================================== training


def _split(n: int, strata: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean validation mask: ``fraction`` of each stratum, at least one row when n >= 2."""
    val = np.zeros(n, bool)
    if n < 2 or fraction <= 0:
        return val
    for key in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == key))
        take = int(round(fraction * len(members)))
        if take >= len(members):
            take = len(members) - 1
        val[members[:take]] = True
    if not val.any():
        val[rng.integers(n)] = True
    return val


def _candidate_bce(scores: PairScores, rows: dict[str, Tensor], idx: Tensor) -> Tensor:
    """BCE of the known candidates and of the known "none" targets (always 0)."""
    known = rows["known"][idx].float()
    none_known = rows["none_known"][idx].float()
    bce = F.binary_cross_entropy_with_logits(
        scores.candidates.float(), rows["target"][idx], reduction="none"
    )
    none = F.binary_cross_entropy_with_logits(
        scores.none.float(), torch.zeros_like(none_known), reduction="none"
    )
    denominator = (known.sum() + none_known.sum()).clamp_min(1.0)
    return ((bce * known).sum() + (none * none_known).sum()) / denominator


def _division_loss(scores: PairScores, rows: dict[str, Tensor], idx: Tensor) -> Tensor:
    labels = rows["division"][idx]
    keep = labels >= 0
    if scores.division is None or not bool(keep.any()):
        return scores.candidates.sum() * 0.0
    target = labels[keep]
    # balance the classes: each carries half of the weight
    n_pos = (target == 1).sum().clamp_min(1)
    n_neg = (target == 0).sum().clamp_min(1)
    weight = torch.where(target == 1, 0.5 / n_pos, 0.5 / n_neg).float()
    return division_head_loss(scores.division.float()[keep], target, weight)


@dataclass
class _Term:
    """One scorer's rows, split into training and validation, and which losses it trains."""

    name: str
    scorer: BaseScorer
    rows: dict[str, Tensor]
    train_idx: np.ndarray
    val_idx: np.ndarray
    candidates: bool
    division: bool

    def loss(self, idx: np.ndarray, part: str, cfg: FinetuneConfig) -> Tensor:
        """The ``candidates`` or ``division`` loss (weighted) of rows ``idx``."""
        index = torch.as_tensor(idx, dtype=torch.long, device=self.rows["target"].device)
        keys = ("query_emb", "cand_emb", "offsets", "query_radius", "cand_radius", "query_div",
                "cand_div")  # fmt: skip
        scores = self.scorer.score(**{k: self.rows[k][index] for k in keys},
                                   mask=self.rows["mask"][index])  # fmt: skip
        if part == "division":
            return cfg.division_weight * _division_loss(scores, self.rows, index)
        weight = cfg.link_weight if self.name == "link" else cfg.merge_weight
        return weight * _candidate_bce(scores, self.rows, index)


@dataclass
class _Phase:
    """One stage of fine-tuning: some losses, the parameters they move, early stopping on their
    validation loss."""

    name: str
    parts: list[tuple[_Term, str]]
    params: list[Tensor]
    scorers: list[BaseScorer]

    def loss(self, cfg: FinetuneConfig, rng: np.random.Generator | None = None) -> Tensor:
        """Training loss of a random mini-batch (``rng``), or the validation loss (no rng)."""
        total = torch.zeros(())
        for term, part in self.parts:
            if rng is None:
                if len(term.val_idx) == 0:
                    continue
                idx = term.val_idx
            else:
                idx = rng.choice(term.train_idx, size=min(cfg.batch_size, len(term.train_idx)),
                                 replace=False)  # fmt: skip
            total = total + term.loss(idx, part, cfg)
        return total

    @property
    def has_validation(self) -> bool:
        return any(len(term.val_idx) for term, _ in self.parts)


def _phases(terms: list[_Term]) -> list[_Phase]:
    """Links and merges first; then the division head alone, on the tuned encoder.

    The division labels are few (a handful of mothers) and the head memorises them within a
    few steps while the link labels still teach: each gets its own early stopping. Only the
    division head's own parameters move in the second phase, so it cannot undo the first; the
    original architecture has no separate head (its division logits share the output layer), so
    there the second phase keeps the candidate loss too.
    """
    phases = []
    candidates = [t for t in terms if t.candidates]
    if candidates:
        phases.append(_Phase(
            "links and merges", [(t, "candidates") for t in candidates],
            [p for t in candidates for p in t.scorer.parameters()], [t.scorer for t in candidates],
        ))  # fmt: skip
    for term in terms:
        if not term.division:
            continue
        head = getattr(term.scorer, "division_head", None)
        if head is not None:
            phases.append(_Phase("divisions", [(term, "division")], list(head.parameters()),
                                 [term.scorer]))  # fmt: skip
        else:
            parts = [(term, "division")] + ([(term, "candidates")] if term.candidates else [])
            phases.append(_Phase("divisions", parts, list(term.scorer.parameters()), [term.scorer]))
    return phases


def _classes(rows: dict[str, Tensor], idx: np.ndarray) -> tuple[bool, bool]:
    """(candidate labels of both classes, division labels of both classes) among rows ``idx``."""
    index = torch.as_tensor(idx, dtype=torch.long, device=rows["known"].device)
    known = rows["known"][index]
    target = rows["target"][index]
    cand = bool((known & (target > 0)).any()) and bool((known & (target == 0)).any())
    division = rows["division"][index]
    return cand, bool((division == 1).any()) and bool((division == 0).any())


def iter_finetune(
    bundle: ModelBundle,
    corrections: CorrectionSet,
    detections: Sequence[Detections],
    *,
    z_ratio: float,
    config: FinetuneConfig | None = None,
    linking: Any = None,
    should_stop: Callable[[], bool] | None = None,
    source: str | None = None,
) -> Iterator[FinetuneProgress]:
    """:func:`finetune` as a generator: yields :class:`FinetuneProgress`, returns the tuned
    :class:`ModelBundle` (the generator's return value). Argument errors (z_ratio, too few
    corrections) are raised at the call; torch runs with ``config.threads`` threads while the
    generator runs."""
    cfg = config or FinetuneConfig()
    if not (np.isfinite(z_ratio) and z_ratio > 0):
        raise InputError(f"z_ratio: expected a finite number > 0, found {z_ratio}")
    corrections.require_trainable()
    return _finetune_steps(bundle, corrections, detections, z_ratio, cfg, linking, should_stop,
                           source)  # fmt: skip


@dataclass
class _Outcome:
    """What the training loop did (for the metadata)."""

    epochs_run: int = 0
    best_epochs: dict[str, int] = field(default_factory=dict)
    val_before: dict[str, float] = field(default_factory=dict)
    val_after: dict[str, float] = field(default_factory=dict)


def _finetune_steps(
    bundle: ModelBundle,
    corrections: CorrectionSet,
    detections: Sequence[Detections],
    z_ratio: float,
    cfg: FinetuneConfig,
    linking: Any,
    should_stop: Callable[[], bool] | None,
    source: str | None,
) -> Iterator[FinetuneProgress]:
    with _torch_threads(cfg.threads):
        started = time.perf_counter()
        tuned = copy.deepcopy(bundle)
        tuned.to(resolve_device(cfg.device)).eval()
        data = build_training_data(tuned, corrections, detections, z_ratio, cfg, linking)
        rng = np.random.default_rng(cfg.seed)
        terms = _terms(tuned, data, cfg, rng, next(tuned.link_scorer.parameters()).device)
        phases = _phases(terms)
        anchors = {id(p): p.detach().clone() for ph in phases for p in ph.params}
        n_rows = {t.name: len(t.train_idx) for t in terms}
        outcome = _Outcome()
        with torch.no_grad():
            for phase in phases:
                if phase.has_validation:
                    outcome.val_before[phase.name] = float(phase.loss(cfg).item())
        total = cfg.epochs * len(phases)
        yield FinetuneProgress(0, total, float("nan"), float("nan"), float("nan"), n_rows, "ready")
        for phase in phases:
            yield from _train_phase(phase, cfg, rng, anchors, should_stop, outcome, total, n_rows)
        if should_stop is not None and should_stop():
            raise Cancelled("fine-tuning cancelled; the model is unchanged")
        tuned.eval()
        seconds = time.perf_counter() - started
        _record(tuned, corrections, data, cfg, source, outcome, seconds)
        logger.info(
            "fine-tuned on %s rows in %.1f s: validation loss %s -> %s", n_rows, seconds,
            outcome.val_before, outcome.val_after,
        )  # fmt: skip
        return tuned


def _train_phase(
    phase: _Phase,
    cfg: FinetuneConfig,
    rng: np.random.Generator,
    anchors: dict[int, Tensor],
    should_stop: Callable[[], bool] | None,
    outcome: _Outcome,
    total_epochs: int,
    n_rows: dict[str, int],
) -> Iterator[FinetuneProgress]:
    """Adam on ``phase.params`` with L2-SP towards ``anchors``; keeps the weights of the best
    validation loss (possibly the starting ones)."""
    moving = {id(p) for p in phase.params}
    for scorer in phase.scorers:
        for p in scorer.parameters():
            p.requires_grad_(id(p) in moving)
    optimiser = torch.optim.Adam(phase.params, lr=cfg.lr)

    def validation() -> float:
        if not phase.has_validation:
            return float("nan")
        with torch.no_grad():
            return float(phase.loss(cfg).item())

    best = validation()
    best_state = _state(phase.scorers)
    best_epoch = stale = 0
    try:
        for epoch in range(1, cfg.epochs + 1):
            losses = []
            for _ in range(cfg.steps_per_epoch):
                if should_stop is not None and should_stop():
                    raise Cancelled("fine-tuning cancelled; the model is unchanged")
                optimiser.zero_grad()
                loss = phase.loss(cfg, rng)
                if cfg.l2sp > 0:
                    drift = sum(((p - anchors[id(p)]) ** 2).sum() for p in phase.params)
                    loss = loss + cfg.l2sp * drift
                loss.backward()
                optimiser.step()
                losses.append(float(loss.item()))
            val = validation()
            outcome.epochs_run += 1
            if np.isnan(val) or val < best - cfg.min_improvement:
                best, best_state, best_epoch, stale = val, _state(phase.scorers), epoch, 0
            else:
                stale += 1
            yield FinetuneProgress(outcome.epochs_run, total_epochs, float(np.mean(losses)), val,
                                   best, n_rows, phase.name)  # fmt: skip
            if stale >= cfg.patience:
                logger.debug("%s: early stop at epoch %d (best %d)", phase.name, epoch, best_epoch)
                break
    finally:
        for scorer in phase.scorers:
            for p in scorer.parameters():
                p.requires_grad_(True)
    _load_state(phase.scorers, best_state)
    outcome.best_epochs[phase.name] = best_epoch
    if not np.isnan(best):
        outcome.val_after[phase.name] = best


def finetune(
    bundle: ModelBundle,
    corrections: CorrectionSet,
    detections: Sequence[Detections],
    *,
    z_ratio: float,
    config: FinetuneConfig | None = None,
    linking: Any = None,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    source: str | None = None,
) -> ModelBundle:
    """Fine-tune ``bundle``'s link scorer (with its division head) and merge scorer on
    ``corrections``; returns a new bundle (``bundle`` itself is never modified).

    Args:
        bundle: the model that made the corrected tracks.
        corrections: labels from :func:`~napari_cellect.track.corrections.build_corrections`.
        detections: the cached raw detections of (at least) the corrected frames, as the
            prediction stage made them (before merging).
        z_ratio: z spacing over xy spacing.
        config: :class:`FinetuneConfig`.
        linking: linking settings for the candidate count (default: the bundle's thresholds).
        progress: called with a :class:`FinetuneProgress` after each epoch.
        should_stop: polled before each step; True raises :class:`Cancelled`.
        source: recorded in the new bundle's metadata (for example the tracks file).

    Raises:
        NotEnoughCorrections: no corrections, only positives, or nothing matched a detection.
        Cancelled: ``should_stop`` returned True.
    """
    runner = iter_finetune(bundle, corrections, detections, z_ratio=z_ratio, config=config,
                           linking=linking, should_stop=should_stop, source=source)  # fmt: skip
    while True:
        try:
            report = next(runner)
        except StopIteration as done:
            return done.value
        if progress is not None:
            progress(report)


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch CPU threads, then restore the previous number."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _terms(
    bundle: ModelBundle, data: TrainingData, cfg: FinetuneConfig, rng: np.random.Generator,
    device: torch.device,
) -> list[_Term]:  # fmt: skip
    """Split each scorer's rows and decide which of its losses can be trained."""
    terms: list[_Term] = []
    missing: list[str] = []
    specs = (("link", data.link, bundle.link_scorer, cfg.train_link, cfg.train_division),
             ("merge", data.merge, bundle.merge_scorer, cfg.train_merge, False))  # fmt: skip
    for name, rows, scorer, use_cand, use_div in specs:
        if len(rows) == 0:
            missing.append(f"no {name} rows (no {name} label matched a detection)")
            continue
        tensors = rows.tensors(device)
        has_pos = (tensors["known"] & (tensors["target"] > 0)).any(dim=1).cpu().numpy()
        strata = has_pos.astype(np.int64) * 3 + tensors["division"].cpu().numpy() + 1
        val = _split(len(has_pos), strata, cfg.validation_fraction, rng)
        train_idx, val_idx = np.flatnonzero(~val), np.flatnonzero(val)
        cand_ok, div_ok = _classes(tensors, train_idx)
        cand_ok &= use_cand
        div_ok &= use_div and scorer.config.has_division
        if use_cand and not cand_ok:
            missing.append(f"{name} candidates of one class only")
        if name == "link" and use_div and not div_ok:
            logger.info("division head not tuned: its labels hold one class only")
        if cand_ok or div_ok:
            terms.append(_Term(name, scorer, tensors, train_idx, val_idx, cand_ok, div_ok))
    if not terms:
        raise NotEnoughCorrections(
            "nothing to fine-tune: " + "; ".join(missing) + ". Approve links next to other "
            "cells, break wrong links or mark divisions, on frames whose detections are cached"
        )
    for term in terms:
        logger.info(
            "%s scorer: %d training and %d validation rows%s", term.name, len(term.train_idx),
            len(term.val_idx), " (with the division head)" if term.division else "",
        )  # fmt: skip
    return terms


def _state(scorers: list[BaseScorer]) -> list[dict[str, Tensor]]:
    return [{k: v.detach().clone() for k, v in s.state_dict().items()} for s in scorers]


def _load_state(scorers: list[BaseScorer], states: list[dict[str, Tensor]]) -> None:
    for scorer, state in zip(scorers, states, strict=True):
        scorer.load_state_dict(state)


def _record(
    bundle: ModelBundle, cs: CorrectionSet, data: TrainingData, cfg: FinetuneConfig,
    source: str | None, outcome: _Outcome, seconds: float,
) -> None:  # fmt: skip
    """What the bundle was tuned on, in its metadata history."""
    n_before = sum(1 for e in bundle.metadata.history if e.get("event") == "finetune")
    base = bundle.metadata.name

    def total(values: dict[str, float]) -> float | None:
        return float(sum(values.values())) if values else None

    details: dict[str, Any] = {
        "base": base,
        "source": str(source or cs.source or ""),
        **{f"n_{k}": int(v) for k, v in cs.counts().items()},
        "link_rows": len(data.link),
        "merge_rows": len(data.merge),
        "synthetic_detections": int(data.n_synthetic),
        "frames": f"{data.frames[0]}-{data.frames[-1]}" if data.frames else "",
        "epochs_run": int(outcome.epochs_run),
        "best_epochs": ", ".join(f"{k}: {v}" for k, v in outcome.best_epochs.items()),
        "val_loss_before": total(outcome.val_before),
        "val_loss_after": total(outcome.val_after),
        "division_val_loss_before": outcome.val_before.get("divisions"),
        "division_val_loss_after": outcome.val_after.get("divisions"),
        "seconds": round(float(seconds), 2),
        "lr": cfg.lr,
        "l2sp": cfg.l2sp,
    }
    bundle.metadata.record("finetune", **details)
    bundle.metadata.name = f"{base.split('+ft')[0]}+ft{n_before + 1}"


# ===================================================================================== relinking


def relink(
    detections: Sequence[Detections],
    bundle: ModelBundle,
    graph: TrackGraph,
    config: Any = None,
    z_ratio: float = 1.0,
    *,
    corrections: CorrectionSet | None = None,
    merge: bool = True,
    match: MatchConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[TrackGraph, np.ndarray]:
    """Link the detections again with ``bundle``, keeping every approved link and node.

    Each frame's raw detections are merged (unless ``merge`` is False) and matched to the old
    graph's nodes (Hungarian within a radius, ``match``); a matched detection keeps the node's
    id, so unchanged links keep their ids. Approved nodes and the parents of approved links that
    match no detection are inserted as synthetic detections (:func:`synthetic_detections`),
    approved nodes keep their position, and approved links (and approved track starts) are
    pinned in :func:`~napari_cellect.track.link.link_sequence`; everything else is solved again.
    With ``corrections``, detections at the positions of deleted false detections are dropped,
    so they do not come back.

    Returns ``(new graph, changed links)``: the (L, 2) ``(parent, child)`` links of the new graph
    that the old one lacks. The new graph's extra column ``changed`` is True where a node's
    incoming link differs from before (or the node is new).
    """
    match = match or MatchConfig()
    if not (np.isfinite(z_ratio) and z_ratio > 0):
        raise InputError(f"z_ratio: expected a finite number > 0, found {z_ratio}")
    frames = sorted(detections, key=lambda d: d.t)
    times = [d.t for d in frames]
    link_cfg = LinkingConfig.from_any(config if config is not None else bundle.thresholds)
    merge_cfg = MergeConfig.from_any(bundle.thresholds)
    merge_scorer = bundle.candidate_scorer("merge") if merge else None
    approved = graph["approved"]
    parent = graph["parent_id"]
    required = approved.copy()
    has_parent = approved & (parent != NO_PARENT)
    if np.any(has_parent):
        required[graph.index_of(parent[has_parent])] = True
    outside = np.setdiff1d(graph["t"][required], times)
    if len(outside):
        raise InputError(
            f"approved nodes lie in frame(s) {outside[:10].tolist()} that have no detections; "
            "pass the detections of every frame of the tracks"
        )
    dim = next((d.embedding_dim for d in frames if len(d)), bundle.link_config.embedding_dim)
    next_id = graph.next_id()
    per_frame, ids = [], []
    positions = graph.positions()
    removed = corrections.removed if corrections is not None else None
    for det in frames:
        dets = merge_duplicates(det, merge_scorer, merge_cfg, z_ratio)[0] if merge else det
        rows = graph.frame(det.t)
        det_of_node = _match_to(dets, positions[rows], graph["radius"][rows], z_ratio, match)
        frame_ids = np.full(len(dets), -1, np.int64)
        hit = det_of_node >= 0
        frame_ids[det_of_node[hit]] = graph.ids[rows[hit]]
        # approved nodes keep the position a person confirmed
        keep_pos = hit & approved[rows]
        if np.any(keep_pos):
            moved = dets.positions.copy()
            moved[det_of_node[keep_pos]] = positions[rows[keep_pos]]
            dets = Detections(
                dets.t, moved, dets.embeddings, dets.radius, dets.division, dets.score
            )
        drop = np.zeros(len(dets), bool)
        if removed is not None and np.any(removed["t"] == det.t):
            gone = removed["t"] == det.t
            free = np.flatnonzero(frame_ids < 0)
            hit_removed = _match_to(
                dets.subset(free), _xyz(removed, gone), removed["radius"][gone], z_ratio, match
            )
            drop[free[hit_removed[hit_removed >= 0]]] = True
        new = (frame_ids < 0) & ~drop
        frame_ids[new] = np.arange(next_id, next_id + int(new.sum()))
        next_id += int(new.sum())
        dets, frame_ids = dets.subset(~drop), frame_ids[~drop]
        missing = rows[~hit & required[rows]]
        if len(missing):
            extra = synthetic_detections(
                dets, positions[missing], graph["radius"][missing], z_ratio, dim
            )
            dets = Detections.concat([dets, extra]) if len(dets) else extra
            frame_ids = np.concatenate([frame_ids, graph.ids[missing]])
        per_frame.append(dets)
        ids.append(frame_ids)
    lost = int(np.count_nonzero(~np.isin(graph.ids, np.concatenate(ids) if ids else [])))
    if lost:
        logger.info("relink: %d unapproved node(s) of the old tracks match no detection now", lost)
    rows = np.flatnonzero(approved)
    pinned = np.stack([parent[rows], graph.ids[rows]], axis=1)
    new_graph = link_sequence(per_frame, bundle.candidate_scorer("link"), link_cfg, z_ratio,
                              pinned_edges=pinned, node_ids=ids, progress=progress)  # fmt: skip
    return _mark_changed(new_graph, graph)


def load_pinned(csv_path: str | os.PathLike[str]) -> tuple[TrackGraph, np.ndarray]:
    """Read a tracks file and its approved links, for re-linking that keeps them.

    Returns ``(graph, pinned)``: ``pinned`` is (P, 2) ``(parent_id, child_id)`` of every
    approved node, with parent -1 for an approved track start, as
    :func:`~napari_cellect.track.link.link_sequence` takes ``pinned_edges``. The ids are the
    file's node ids: to pin them in a new tracking run the new detections must carry those ids,
    which is what :func:`relink` does (it matches the file's nodes to the detections and inserts
    approved nodes no detection matches).
    """
    from napari_cellect.data.annotations import read_tracks

    graph = read_tracks(csv_path)
    rows = np.flatnonzero(graph["approved"])
    pinned = np.stack([graph["parent_id"][rows], graph.ids[rows]], axis=1).astype(np.int64)
    logger.info("%s: %d approved link(s) and track start(s) to keep", csv_path, len(pinned))
    return graph, pinned


def _mark_changed(new: TrackGraph, old: TrackGraph) -> tuple[TrackGraph, np.ndarray]:
    """Add the ``changed`` column and list the new links the old graph lacks."""
    known = np.isin(new.ids, old.ids)
    old_parent = np.full(len(new), NO_PARENT - 1, np.int64)
    if np.any(known):
        old_parent[known] = old["parent_id"][old.index_of(new.ids[known])]
    changed = new["parent_id"] != old_parent
    columns = {name: new[name] for name in new.columns}
    columns[CHANGED_COLUMN] = changed
    out = TrackGraph.from_arrays(validate=False, **columns)
    linked = changed & (new["parent_id"] != NO_PARENT)
    links = np.stack([new["parent_id"][linked], new.ids[linked]], axis=1)
    logger.info("relink: %d link(s) changed", len(links))
    return out, links
