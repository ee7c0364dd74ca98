"""The fine-tune widget's worker side: load the model, fine-tune, re-link, detect. No Qt here.

Each job runs in a napari thread worker and is cancelled through a ``should_stop`` callable; a
cancelled job returns None (the core raises :class:`~napari_cellect.errors.Cancelled`, which is
not an error to report). Nothing here touches the session: the widget applies the results on
the main thread, so a cancelled or failed job leaves the session's model and tracks unchanged.

Only detection runs the U-Net, so only it takes the nucleus radius (``cell_radius``): the
detections come back in the frame's pixels, which is what fine-tuning and re-linking work on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_cellect._napari._graph_replace import replace_command
from napari_cellect.errors import Cancelled

if TYPE_CHECKING:
    from napari_cellect.model.bundle import ModelBundle
    from napari_cellect.track.corrections import CorrectionSet
    from napari_cellect.track.detections import Detections
    from napari_cellect.track.edits import Compound
    from napari_cellect.track.graph import TrackGraph
    from napari_cellect.train.finetune import FinetuneConfig

logger = logging.getLogger(__name__)


def load_model(model: ModelBundle | None, model_path: Path | None) -> ModelBundle:
    """``model`` itself, else the bundle file ``model_path``, else the bundled default."""
    if model is not None:
        return model
    from napari_cellect.model.bundle import ModelBundle

    return ModelBundle.load(model_path) if model_path is not None else ModelBundle.load_default()


def finetune_job(
    model: ModelBundle | None,
    model_path: Path | None,
    corrections: CorrectionSet,
    detections: Sequence[Detections],
    *,
    z_ratio: float,
    config: FinetuneConfig | None,
    should_stop: Callable[[], bool],
    source: str | None = None,
) -> Iterator[Any]:
    """Yields the core's ``FinetuneProgress`` records; returns the tuned ModelBundle, or None
    when cancelled. ``model`` is never modified (the core tunes a copy)."""
    from napari_cellect.train.finetune import iter_finetune

    base = load_model(model, model_path)
    try:
        tuned = yield from iter_finetune(
            base, corrections, detections, z_ratio=z_ratio, config=config,
            should_stop=should_stop, source=source,
        )  # fmt: skip
    except Cancelled:
        logger.info("fine-tuning cancelled; the model in use is unchanged")
        return None
    return tuned


@dataclass(frozen=True)
class RelinkOutput:
    """A re-link: the new tracks, the links they changed and the edit that applies them."""

    graph: TrackGraph
    changed: np.ndarray
    """(L, 2) ``(parent, child)`` links of the new tracks that the old ones lack."""
    removed: np.ndarray
    """(L, 2) ``(parent, child)`` links of the old tracks that the new ones lack."""
    command: Compound
    """Turns the tracks re-linking started from into ``graph`` (one undoable edit)."""


def relink_job(
    detections: Sequence[Detections],
    bundle: ModelBundle,
    graph: TrackGraph,
    *,
    z_ratio: float,
    corrections: CorrectionSet | None,
    should_stop: Callable[[], bool],
) -> RelinkOutput | None:
    """Re-link ``graph`` (a snapshot, not the session's graph) with ``bundle``, keeping every
    approved link and node; None when cancelled.

    The detections are the raw (unmerged) ones of the tracking run: relink merges them with
    the (possibly tuned) merge scorer, as the tracker does.
    Division scores a person set (the nodes the corrections label as dividing or not) are kept:
    the linker would replace them with the model's prediction.
    """
    from napari_cellect.train.finetune import relink

    def progress(_done: int, _total: int) -> None:
        if should_stop():
            raise Cancelled("re-linking cancelled; the tracks are unchanged")

    try:
        new, changed = relink(detections, bundle, graph, None, z_ratio,
                              corrections=corrections, progress=progress)
    except Cancelled:
        logger.info("re-linking cancelled")
        return None
    if corrections is not None and len(corrections.division_nodes):
        marked = corrections.division_nodes[np.isin(corrections.division_nodes, new.ids)
                                            & np.isin(corrections.division_nodes, graph.ids)]
        if len(marked):
            old = graph["division_score"][graph.index_of(marked)]
            new.set_values("division_score", marked, old)
    removed = _missing_links(graph, new)
    _keep_untouched(graph, new, np.concatenate([changed, removed]))
    n = len(changed) + len(removed)
    description = f"re-link with {bundle.metadata.name} ({n} link{'' if n == 1 else 's'} changed)"
    return RelinkOutput(new, changed, removed, replace_command(graph, new, description))


def _missing_links(old: TrackGraph, new: TrackGraph) -> np.ndarray:
    """The ``(parent, child)`` links of ``old`` that ``new`` lacks (say a gap a deletion
    bridged that the linker does not make again)."""
    edges = old.edges().reshape(-1, 2)
    if len(edges) == 0:
        return edges
    kept = np.isin(edges[:, 1], new.ids)
    same = np.zeros(len(edges), bool)
    same[kept] = new["parent_id"][new.index_of(edges[kept, 1])] == edges[kept, 0]
    return edges[~same]


def _keep_untouched(old: TrackGraph, new: TrackGraph, links: np.ndarray) -> None:
    """Nodes of both graphs that none of ``links`` (the changed ones) touches keep their old
    values (position, scores, link margin...), so a re-link changes only what it re-linked
    and the review queue moves only there."""
    touched = np.unique(links.reshape(-1))
    ids = new.ids[np.isin(new.ids, old.ids) & ~np.isin(new.ids, touched)]
    if len(ids) == 0:
        return
    rows = old.index_of(ids)
    for column in new.columns:
        if column in ("id", "parent_id", "t") or column not in old.columns:
            continue
        new.set_values(column, ids, np.asarray(old[column])[rows])


@dataclass(frozen=True)
class DetectOutput:
    """Raw (unmerged) per-frame detections of an image, and the model that found them."""

    detections: list[Detections]
    model: ModelBundle


def detect_job(
    images: Any,
    model: ModelBundle | None,
    model_path: Path | None,
    *,
    z_ratio: float,
    device: str,
    should_stop: Callable[[], bool],
    cell_radius: float | None = None,
) -> Iterator[Any]:
    """Detect in every frame, as the tracking pipeline does, without linking: tracks read from
    a file get the raw detections fine-tuning needs (the merged ones are shown). Yields the
    pipeline's ``TrackingProgress``; returns a :class:`DetectOutput`, or None when cancelled.

    ``cell_radius`` (xy pixels, None: as trained) resizes the frames to the model's training
    nucleus size, as in tracking; a model that does not record that size raises InputError."""
    from napari_cellect.infer.predict import predict_sequence
    from napari_cellect.pipeline import TrackingProgress
    from napari_cellect.track.merge import merge_duplicates

    base = load_model(model, model_path)
    n_frames = int(images.shape[0])
    merge_scorer = base.candidate_scorer("merge")
    frames: list[Detections] = []
    try:
        for dets in predict_sequence(images, base, z_ratio=z_ratio, device=device,
                                     should_stop=should_stop, cell_radius=cell_radius):
            merged, _ = merge_duplicates(dets, merge_scorer, base.thresholds.merge, z_ratio)
            frames.append(dets)
            yield TrackingProgress("detect", len(frames), n_frames, merged)
    except Cancelled:
        logger.info("detection cancelled")
        return None
    return DetectOutput(frames, base)
