"""Splitting corrections into a part to train on and a part held back to judge the training
(the fine-tuning guard, :mod:`napari_cellect.train.finetune_guard`). No torch, no Qt.

Every label belongs to the cell it is about on the later side of a frame pair: a link to its
child, a rival (candidate negative) to the rival, a division label to the frame after the mother
(its daughters' frame), a track start, a deleted duplicate or two distinct cells to their own
frame. With enough corrected frames, whole frames are held back: the **last** ones (one in
``every`` corrected frames, at least one), because they are the closest in time to the frames
nobody corrected, which the tuned model must generalise to (holding back every third frame
judged the update on early frames, where a small win did not carry to the later ones); with
only one or two, the half of each frame beyond the median x of the corrected cells is held back.
A held-back frame takes its links from the frame before it, which may be a training frame: a
parent can be on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_cellect.track.correction_set import CorrectionSet, now_iso

#: the fewest corrected frames for which whole frames are held back (fewer: a spatial half)
MIN_FRAMES_FOR_FRAME_SPLIT = 3


@dataclass(frozen=True)
class CorrectionSplit:
    """The two parts of a :class:`CorrectionSet` and how it was split."""

    train: CorrectionSet
    held: CorrectionSet
    description: str
    """For people, e.g. ``frames 3, 6 held back`` or ``the half x >= 96 held back``."""
    held_frames: tuple[int, ...]
    """Frames that hold held-back labels (the frame pairs to evaluate end there)."""


def split_corrections(cs: CorrectionSet, every: int = 3) -> CorrectionSplit | None:
    """Hold back the last ``n // every`` (at least one) of ``n`` corrected frames, or a spatial
    half (see the module docstring). None when the corrections cover too little to split (a single labelled cell)."""
    nodes = cs.nodes
    labelled_t = _label_frames(cs)
    frames = np.unique(labelled_t)
    if len(frames) >= MIN_FRAMES_FOR_FRAME_SPLIT:
        # the last frames: the nearest to the uncorrected ones the tuned model will track
        held_frames = frames[-max(1, len(frames) // every) :]
        held_node = np.isin(nodes["t"], held_frames)
        held_removed = np.isin(cs.removed["t"], held_frames)
        description = (
            f"the last corrected frame{'s' if len(held_frames) > 1 else ''} "
            + ", ".join(str(int(t)) for t in held_frames)
            + " held back"
        )
    else:
        approved = nodes["approved"]
        if np.count_nonzero(approved) < 2:
            return None
        middle = float(np.median(nodes["x"][approved]))
        held_node = nodes["x"] >= middle
        held_removed = cs.removed["x"] >= middle
        description = (
            f"the half x >= {middle:.0f} of frame(s) "
            + ", ".join(str(int(t)) for t in frames)
            + " held back"
        )
    train = restrict(cs, ~held_node, ~held_removed)
    held = restrict(cs, held_node, held_removed)
    if train.is_empty() or held.is_empty():
        return None
    held_t = np.unique(_label_frames(held))
    return CorrectionSplit(train, held, description, tuple(int(t) for t in held_t))


def restrict(cs: CorrectionSet, keep_node: np.ndarray, keep_removed: np.ndarray) -> CorrectionSet:
    """The labels whose cell (see the module docstring) is a kept row of ``cs.nodes`` (a kept
    row of ``cs.removed`` for deleted duplicates). The node table keeps every node a kept label
    refers to, with its context of the same frames."""
    kept_ids = cs.nodes["id"][np.asarray(keep_node, bool)]
    removed_ids = cs.removed["id"][np.asarray(keep_removed, bool)]
    t_of = dict(zip(cs.nodes["id"].tolist(), cs.nodes["t"].tolist(), strict=True))

    def on(ids: np.ndarray) -> np.ndarray:
        return np.isin(ids, kept_ids)

    positive = cs.positive_links[on(cs.positive_links[:, 1])]
    broken = cs.broken_links[on(cs.broken_links[:, 1])]
    rivals = cs.candidate_negatives[on(cs.candidate_negatives[:, 1])]
    starts = cs.starts[on(cs.starts)]
    # a division label lives with its daughters: a mother whose next frame is kept
    mother_next = np.array([t_of.get(int(m), -2) + 1 for m in cs.division_nodes], np.int64)
    kept_frames = set(cs.nodes["t"][np.asarray(keep_node, bool)].tolist())
    in_next = np.array([t in kept_frames for t in mother_next.tolist()], bool)
    mother_kept = in_next if _frame_split(cs, keep_node) else on(cs.division_nodes)
    duplicates = cs.duplicates[np.isin(cs.duplicates[:, 1], removed_ids)]
    distinct = cs.distinct[on(cs.distinct[:, 0]) & on(cs.distinct[:, 1])]
    referenced = np.unique(
        np.concatenate(
            [
                positive.ravel(),
                broken.ravel(),
                rivals.ravel(),
                starts,
                cs.division_nodes[mother_kept],
                duplicates[:, 0],
                distinct.ravel(),
            ]
        )
    )
    frames = np.unique(cs.nodes["t"][np.isin(cs.nodes["id"], referenced)])
    node_rows = np.isin(cs.nodes["t"], frames)
    removed_rows = np.isin(cs.removed["id"], removed_ids)
    return CorrectionSet(
        nodes={k: v[node_rows] for k, v in cs.nodes.items()},
        removed={k: v[removed_rows] for k, v in cs.removed.items()},
        positive_links=positive,
        broken_links=broken,
        candidate_negatives=rivals,
        starts=starts,
        division_nodes=cs.division_nodes[mother_kept],
        division_divides=cs.division_divides[mother_kept],
        duplicates=duplicates,
        distinct=distinct,
        z_ratio=cs.z_ratio,
        source=cs.source,
        created=now_iso(),
    )


def _frame_split(cs: CorrectionSet, keep_node: np.ndarray) -> bool:
    """True when ``keep_node`` keeps whole frames (then a mother goes with its next frame)."""
    t = cs.nodes["t"]
    keep = np.asarray(keep_node, bool)
    return all(len(np.unique(keep[t == f])) <= 1 for f in np.unique(t))


def _label_frames(cs: CorrectionSet) -> np.ndarray:
    """The frame of each link, start and division label (see the module docstring)."""
    t_of = dict(zip(cs.nodes["id"].tolist(), cs.nodes["t"].tolist(), strict=True))
    ids = np.concatenate([cs.positive_links[:, 1], cs.broken_links[:, 1], cs.starts])
    out = [t_of[i] for i in ids.tolist() if i in t_of]
    out += [t_of[m] + 1 for m in cs.division_nodes.tolist() if m in t_of]
    return np.asarray(out, np.int64)
