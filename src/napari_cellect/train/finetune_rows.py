"""Scorer training rows from corrections and cached detections (for
:func:`napari_cellect.train.finetune.finetune`).

**Data.** Fine-tuning never reruns the U-Net: it reads the cached per-frame
:class:`~napari_cellect.track.detections.Detections` and builds the scorers' inputs exactly as
inference does. Each frame's detections are merged with the *starting* merge scorer
(:func:`~napari_cellect.track.merge.merge_duplicates`, as the tracking run that the person
corrected did); the nodes of the :class:`~napari_cellect.track.corrections.CorrectionSet` are
matched to the merged detections one-to-one (Hungarian within a radius,
:func:`~napari_cellect.track.matching.match_detections`). An approved node that matches no
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
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from napari_cellect.errors import InputError
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.model.pair_scorer import BaseScorer
from napari_cellect.model.scoring import ModelScorer
from napari_cellect.settings.linking import LinkingConfig
from napari_cellect.settings.merge import MergeConfig
from napari_cellect.track.corrections import CorrectionSet
from napari_cellect.track.detections import Detections
from napari_cellect.track.matching import MatchConfig, match_to_detections, table_positions
from napari_cellect.track.merge import merge_duplicates
from napari_cellect.track.relink import synthetic_detections
from napari_cellect.track.scoring_protocol import CandidateScorer, nearest_candidates, scaled
from napari_cellect.train.finetune_config import FinetuneConfig

logger = logging.getLogger(__name__)


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


def _prepare_frame(
    raw: Detections,
    merge_scorer: CandidateScorer | None,
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
    det_of_node = match_to_detections(merged, node_pos, node_radius, z_ratio, match)
    node = np.full(len(merged), -1, np.int64)
    node[det_of_node[det_of_node >= 0]] = node_ids[det_of_node >= 0]
    removed = np.full(len(merged), -1, np.int64)
    free = np.flatnonzero(node < 0)
    if len(removed_ids) and len(free):
        hit = match_to_detections(merged.subset(free), removed_pos, removed_radius, z_ratio, match)
        removed[free[hit[hit >= 0]]] = removed_ids[hit >= 0]
    missing = np.flatnonzero((det_of_node < 0) & required)
    dets = merged
    if len(missing):
        extra = synthetic_detections(
            merged, node_pos[missing], node_radius[missing], z_ratio, embedding_dim
        )
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
    idx, mask = ModelScorer(scorer).padded_candidates(cand_idx)
    q_pos = scaled(query.positions, z_ratio)
    c_pos = scaled(cands.positions, z_ratio)[idx]
    return {
        "query_emb": query.embeddings,
        "cand_emb": cands.embeddings[idx],
        "offsets": c_pos - q_pos[:, None, :],
        "query_radius": query.radius,
        "cand_radius": cands.radius[idx],
        "query_div": query.division,
        "cand_div": cands.division[idx],
        "mask": mask,
    }


@dataclass
class _Rows:
    """Query rows of one scorer with their labels (numpy until :meth:`tensors`)."""

    inputs: list[dict[str, np.ndarray]] = field(default_factory=list)
    target: list[np.ndarray] = field(default_factory=list)  # (M, k) float
    known: list[np.ndarray] = field(default_factory=list)  # (M, k) bool
    none_known: list[np.ndarray] = field(default_factory=list)  # (M,) bool (target 0)
    division: list[np.ndarray] = field(default_factory=list)  # (M,) int: -1 unknown, 0, 1

    def add(
        self,
        inputs: dict[str, np.ndarray],
        target: np.ndarray,
        known: np.ndarray,
        none_known: np.ndarray,
        division: np.ndarray,
    ) -> None:
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
    rows: _Rows,
    fa: _Frame,
    fb: _Frame,
    queries: np.ndarray,
    cs: _Labels,
    k: int,
    z_ratio: float,
    scorer: BaseScorer,
) -> None:
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
    has_positive = np.asarray((known & (target > 0)).any(axis=1))
    # a deleted false detection is no continuation of a cell whose child is approved
    known |= has_positive[:, None] & (c_removed >= 0) & (c_node < 0) & valid
    division = np.array([cs.divides.get(int(q), -1) for q in q_node], np.int64)
    rows.add(
        _scorer_inputs(query, fb.dets, cand_idx, z_ratio, scorer),
        target,
        known,
        has_positive,
        division,
    )


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
    has_positive = np.asarray((known & (target > 0)).any(axis=1))
    query = raw.subset(q)
    rows.add(
        _scorer_inputs(query, raw, cand_idx, z_ratio, scorer),
        target,
        known,
        has_positive,
        np.full(len(q), -1, np.int64),
    )


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
            if len(distinct)
            else set(),
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
    linking: LinkingConfig | None = None,
) -> TrainingData:
    """Scorer rows of the corrections' frames, from cached (raw) detections."""
    cfg = config or FinetuneConfig()
    by_t = {int(d.t): d for d in detections}
    if len(by_t) != len(detections):
        raise InputError("detections: expected one Detections per frame, found repeated frames")
    link_cfg = linking if linking is not None else bundle.thresholds.link
    merge_cfg = bundle.thresholds.merge
    labels = _Labels.of(corrections)
    nodes = corrections.nodes
    removed = corrections.removed
    node_t = nodes["t"]
    frames_needed = set(np.unique(np.concatenate([node_t, removed["t"]])).tolist())
    # link rows need the frame after each labelled parent
    parent_t = _frames_of(
        nodes,
        np.concatenate(
            [
                corrections.positive_links[:, 0],
                corrections.negative_links[:, 0],
                corrections.division_nodes,
            ]
        ),
    )
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
            by_t[t],
            merge_scorer,
            merge_cfg,
            z_ratio,
            cfg.match,
            nodes["id"][here],
            table_positions(nodes, here),
            nodes["radius"][here],
            np.isin(nodes["id"][here], required_ids),
            removed["id"][gone],
            table_positions(removed, gone),
            removed["radius"][gone],
            embedding_dim,
        )

    link_rows, merge_rows = _Rows(), _Rows()
    queries_by_t, n_gap = _link_queries(corrections, nodes)
    for t, queries in sorted(queries_by_t.items()):
        if t in frames and t + 1 in frames:
            _link_rows(
                link_rows,
                frames[t],
                frames[t + 1],
                queries,
                labels,
                link_cfg.k,
                z_ratio,
                bundle.link_scorer,
            )
    for frame in frames.values():
        _merge_rows(merge_rows, frame, labels, merge_cfg.k, z_ratio, bundle.merge_scorer)
    return TrainingData(
        link=link_rows,
        merge=merge_rows,
        n_synthetic=sum(f.n_synthetic for f in frames.values()),
        n_gap_links=n_gap,
        frames=sorted(frames),
    )


def _frames_of(nodes: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    known = np.isin(ids, nodes["id"])
    order = np.argsort(nodes["id"])
    rows = order[np.searchsorted(nodes["id"][order], ids[known])]
    return np.unique(nodes["t"][rows])


def _labelled_ids(cs: CorrectionSet) -> np.ndarray:
    """Nodes a label refers to (they get a synthetic detection when none matches)."""
    return np.unique(
        np.concatenate(
            [
                cs.positive_links.ravel(),
                cs.negative_links.ravel(),
                cs.starts,
                cs.division_nodes,
                cs.duplicates[:, 0],
                cs.distinct.ravel(),
            ]
        )
    )


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
        logger.info(
            "%d labelled link(s) skip frames; the link scorer only sees consecutive frames", n_gap
        )
    ids = np.concatenate([links[consecutive, 0], cs.division_nodes])
    t = np.concatenate([tp[consecutive], frame_of(cs.division_nodes)])
    out = {int(f): np.unique(ids[t == f]) for f in np.unique(t[t >= 0])}
    return out, n_gap
