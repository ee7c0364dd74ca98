"""The long steps of a session, as generators a worker thread (or :func:`~napari_cellect.
progress.run_to_end`) runs: track, detect, fine-tune, re-link, re-detect with an adapted U-Net
and re-link. No Qt here.

Each job is cancelled through a ``should_stop`` callable; a cancelled job returns None (the core
raises :class:`~napari_cellect.errors.Cancelled`, which is not an error to report). Nothing here
changes a session: the caller applies the result (``TrackingSession.from_tracking``,
``use_detections``, ``use_tuned_model``, ``apply_relink``), on the main thread in the widgets, so
a cancelled or failed job leaves the session's model and tracks unchanged.

Only detection runs the U-Net, so only it takes the nucleus radius (``cell_radius``): the
detections come back in the frame's pixels, which is what fine-tuning and re-linking work on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from napari_cellect.errors import Cancelled
from napari_cellect.progress import Progress, Step
from napari_cellect.session.graph_replace import replace_command
from napari_cellect.track.detections import Detections

if TYPE_CHECKING:
    from napari_cellect.data.arrays import ImageData, ImageInput
    from napari_cellect.model.bundle import ModelBundle
    from napari_cellect.pipeline import TrackingResult
    from napari_cellect.track.corrections import CorrectionSet
    from napari_cellect.track.edits import Compound
    from napari_cellect.track.graph import TrackGraph
    from napari_cellect.train.finetune_config import FinetuneConfig
    from napari_cellect.train.finetune_guard import FinetuneResult, PartTrainer

logger = logging.getLogger(__name__)


def load_model(model: ModelBundle | None, model_path: Path | str | None) -> ModelBundle:
    """``model`` itself, else the bundle file ``model_path``, else the bundled default."""
    if model is not None:
        return model
    from napari_cellect.model.bundle import ModelBundle

    return ModelBundle.load(model_path) if model_path else ModelBundle.load_default()


# ------------------------------------------------------------------------------- tracking


#: largest in-memory label volume built after tracking (bytes); above it, no Labels layer
MAX_LABEL_BYTES = 2**31

#: :func:`~napari_cellect.pipeline.iter_tracking` or a stand-in with its signature
TrackingFunction = Callable[..., Generator[Step, None, "TrackingResult"]]


def default_tracking_function() -> TrackingFunction:
    """``napari_cellect.pipeline.iter_tracking``, imported when a run starts (it needs torch)."""
    from napari_cellect.pipeline import iter_tracking

    return iter_tracking


@dataclass(frozen=True)
class TrackingOutput:
    """What the worker returns: the pipeline's result and the instance masks (or None), and
    the model it ran with when one was loaded from a file (None: the bundled default)."""

    result: TrackingResult
    labels: np.ndarray | None
    model: ModelBundle | None = None


@dataclass(frozen=True)
class TracksReady:
    """Yielded by :func:`tracking_job` once the pipeline has linked, before the masks are
    segmented: the tracks can be shown while the masks are still being made."""

    graph: TrackGraph
    stage: ClassVar[str] = "tracks"
    done: ClassVar[int] = 1
    total: ClassVar[int] = 1


def tracking_job(
    tracking_function: TrackingFunction,
    images: ImageData,
    model_path: str | None,
    *,
    z_ratio: float,
    device: str,
    tile: tuple[int, int, int] | None,
    should_stop: Callable[[], bool],
    cell_radius: float | None = None,
    max_label_bytes: int = MAX_LABEL_BYTES,
    scheduler: str | None = None,
) -> Generator[Step, None, TrackingOutput | None]:
    """The worker's generator: load the model, pass the pipeline's progress through, yield
    :class:`TracksReady`, then segment each frame into masks whose values are track ids (also
    in the worker thread).

    ``cell_radius`` (xy pixels, None: as trained) goes to the pipeline, which resizes the
    frames to the model's training nucleus size; a model that does not record that size makes
    the pipeline raise InputError, reported like any other error.

    A run stopped through ``should_stop`` returns None (the pipeline raises ``Cancelled``; that
    is not an error to report).

    ``scheduler`` (a dask scheduler address or ``local:N``) runs the U-Net on that cluster;
    it is passed on only when set.
    """
    bundle = None
    if model_path:
        from napari_cellect.model.bundle import ModelBundle

        bundle = ModelBundle.load(model_path)
    on_cluster = {"scheduler": scheduler} if scheduler else {}
    try:
        result = yield from tracking_function(
            images,
            bundle,
            z_ratio=z_ratio,
            device=device,
            tile=tile,
            cache_dir=None,
            keep_foreground=True,
            should_stop=should_stop,
            cell_radius=cell_radius,
            **on_cluster,
        )
        if getattr(result, "graph", None) is not None:
            yield TracksReady(result.graph)
        labels = getattr(result, "labels", None)
        if labels is None and result is not None:
            labels = yield from _segment(
                result, images.shape, z_ratio, should_stop, max_label_bytes
            )
    except Cancelled:
        return None
    return TrackingOutput(result, None if labels is None else np.asarray(labels), bundle)


def _segment(
    result: TrackingResult,
    shape: tuple[int, ...],
    z_ratio: float,
    should_stop: Callable[[], bool],
    max_label_bytes: int,
) -> Generator[Step, None, np.ndarray | None]:
    """Instance masks of every frame, from the foreground the pipeline kept (or spheres)."""
    from napari_cellect.pipeline import TrackingProgress, make_labeler
    from napari_cellect.segment import label_dtype

    graph = result.graph
    n_frames = int(shape[0])
    frame_shape = (int(shape[1]), int(shape[2]), int(shape[3]))
    dtype = label_dtype(int(graph.track_ids().max()) if len(graph) else 0)
    if n_frames * int(np.prod(frame_shape)) * dtype.itemsize > max_label_bytes:
        logger.info("no Labels layer: the masks would take more than %d bytes", max_label_bytes)
        return None
    labeler = make_labeler(
        graph,
        frame_shape,
        z_ratio=z_ratio,
        foreground=getattr(result, "foreground", None),
    )
    labels = np.zeros((n_frames, *frame_shape), dtype=dtype)
    for t in range(n_frames):
        if should_stop():
            raise Cancelled(f"segmentation cancelled after {t} of {n_frames} frames")
        labels[t] = labeler(t)
        yield TrackingProgress("labels", t + 1, n_frames)
    return labels


# ------------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class DetectOutput:
    """Raw (unmerged) per-frame detections of an image, and the model that found them."""

    detections: list[Detections]
    model: ModelBundle


def detect_job(
    images: ImageInput,
    model: ModelBundle | None,
    model_path: Path | None,
    *,
    z_ratio: float,
    device: str,
    should_stop: Callable[[], bool],
    cell_radius: float | None = None,
) -> Generator[Step, None, DetectOutput | None]:
    """Detect in every frame, as the tracking pipeline does, without linking: tracks read from
    a file get the raw detections fine-tuning needs (the merged ones are shown). Yields the
    pipeline's ``TrackingProgress``; returns a :class:`DetectOutput`, or None when cancelled.

    ``cell_radius`` (xy pixels, None: as trained) resizes the frames to the model's training
    nucleus size, as in tracking; a model that does not record that size raises InputError."""
    base = load_model(model, model_path)
    frames = yield from _detect(
        images,
        base,
        None,
        z_ratio=z_ratio,
        device=device,
        should_stop=should_stop,
        cell_radius=cell_radius,
        cancelled="detection cancelled",
    )
    return None if frames is None else DetectOutput(frames, base)


def _detect(
    images: ImageInput,
    model: ModelBundle,
    frames: Sequence[int] | None,
    *,
    z_ratio: float,
    device: str,
    should_stop: Callable[[], bool],
    cell_radius: float | None,
    cancelled: str,
) -> Generator[Step, None, list[Detections] | None]:
    """The raw detections of ``frames`` (None: all), as the tracking pipeline predicts them;
    None when stopped (logged as ``cancelled``)."""
    from napari_cellect.pipeline import iter_detect

    try:
        return (
            yield from iter_detect(
                images,
                model,
                z_ratio=z_ratio,
                device=device,
                frames=frames,
                cell_radius=cell_radius,
                should_stop=should_stop,
            )
        )
    except Cancelled:
        logger.info(cancelled)
        return None


# ----------------------------------------------------------------------------- fine-tuning


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
    trainers: Sequence[PartTrainer] = (),
) -> Generator[Step, None, FinetuneResult | None]:
    """Fine-tuning with the guard (:func:`~napari_cellect.train.finetune_guard.
    iter_guarded_finetune`): yields its plan, training progress and checks; returns its
    :class:`~napari_cellect.train.finetune_guard.FinetuneResult` (the tuned model and the
    figures before and after), or None when cancelled. ``model`` is never modified, and the
    result is applied to nothing: the caller keeps or discards it. ``trainers`` are extra parts
    to train and judge (the detector)."""
    from napari_cellect.train.finetune_guard import iter_guarded_finetune

    base = load_model(model, model_path)
    try:
        result = yield from iter_guarded_finetune(
            base,
            corrections,
            detections,
            z_ratio=z_ratio,
            config=config,
            trainers=trainers,
            should_stop=should_stop,
            source=source,
        )
    except Cancelled:
        logger.info("fine-tuning cancelled; the model in use is unchanged")
        return None
    return result


# ------------------------------------------------------------------------------ re-linking


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
    model: ModelBundle
    """The model that re-linked."""


def relink_job(
    detections: Sequence[Detections],
    model: ModelBundle | None,
    model_path: Path | None,
    graph: TrackGraph,
    *,
    z_ratio: float,
    corrections: CorrectionSet | None,
    should_stop: Callable[[], bool],
) -> Generator[Step, None, RelinkOutput | None]:
    """Re-link ``graph`` (a snapshot, not the session's graph) with the model, keeping every
    approved link and node and the division labels a person set
    (:func:`~napari_cellect.track.relink.relink_keeping_work`); None when cancelled.

    The detections are the raw (unmerged) ones of the tracking run: re-linking merges them with
    the (possibly tuned) merge scorer, as the tracker does.
    """
    from napari_cellect.track.relink import relink_keeping_work

    bundle = load_model(model, model_path)
    yield Progress("relink", 0, 1)

    def stop_if_asked(_step: Step) -> None:
        if should_stop():
            raise Cancelled("re-linking cancelled; the tracks are unchanged")

    try:
        out = relink_keeping_work(
            detections, bundle, graph, z_ratio, corrections=corrections, progress=stop_if_asked
        )
    except Cancelled:
        logger.info("re-linking cancelled")
        return None
    yield Progress("relink", 1, 1)
    n = len(out.changed) + len(out.removed)
    description = f"re-link with {bundle.metadata.name} ({n} link{'' if n == 1 else 's'} changed)"
    return RelinkOutput(
        out.graph, out.changed, out.removed, replace_command(graph, out.graph, description), bundle
    )


# ------------------------------------------------------------- re-detection after adaptation


def frames_to_redetect(graph: TrackGraph, n_frames: int) -> list[int]:
    """The frames a new U-Net must predict again: every frame a person did not approve as a
    whole (some node of it unapproved, or no node at all), and the frames next to one, whose
    links to it are solved again and need embeddings of the same network."""
    t = np.asarray(graph["t"], np.int64)
    inside = (t >= 0) & (t < n_frames)
    nodes = np.bincount(t[inside], minlength=n_frames)
    approved = np.bincount(t[inside], weights=graph["approved"][inside], minlength=n_frames)
    open_ = (nodes == 0) | (approved < nodes)
    near = open_.copy()
    near[1:] |= open_[:-1]
    near[:-1] |= open_[1:]
    return np.flatnonzero(near).tolist()


@dataclass(frozen=True)
class RedetectOutput:
    """A re-detection with a new U-Net and the re-link that follows it."""

    detections: list[Detections]
    """Raw detections of every frame: new where predicted again, the old ones elsewhere."""
    frames: list[int]
    """The frames predicted again."""
    relink: RelinkOutput


def redetect_relink_job(
    images: ImageData,
    model: ModelBundle,
    graph: TrackGraph,
    detections: Sequence[Detections] | None,
    *,
    z_ratio: float,
    corrections: CorrectionSet | None,
    device: str,
    should_stop: Callable[[], bool],
    cell_radius: float | None = None,
) -> Generator[Step, None, RedetectOutput | None]:
    """Predict again with ``model`` only the frames :func:`frames_to_redetect` names, keep the
    old detections of the others (approved frames; none there when ``detections`` is None:
    re-linking then keeps their approved nodes as they are), and re-link ``graph`` (a snapshot)
    keeping every approved link (:func:`relink_job`). None when cancelled; nothing is changed."""
    n_frames = int(images.shape[0])
    frames = frames_to_redetect(graph, n_frames)
    new = yield from _detect(
        images,
        model,
        frames,
        z_ratio=z_ratio,
        device=device,
        should_stop=should_stop,
        cell_radius=cell_radius,
        cancelled="re-detection cancelled; the tracks are unchanged",
    )
    if new is None:
        return None
    dim = model.unet_config.embedding_dim
    old = {d.t: d for d in detections or []}
    by_frame = {**old, **{d.t: d for d in new}}
    merged = [by_frame.get(t) or Detections.empty(t, dim) for t in range(n_frames)]
    relinked = yield from relink_job(
        merged,
        model,
        None,
        graph,
        z_ratio=z_ratio,
        corrections=corrections,
        should_stop=should_stop,
    )
    if relinked is None:
        return None
    return RedetectOutput(merged, frames, relinked)
