"""The whole tracker: predict -> merge -> link (-> instance masks), as one generator.

:func:`iter_tracking` yields a :class:`TrackingProgress` after each frame (so a widget can show the
centres as they appear) and returns a :class:`TrackingResult`; napari's ``thread_worker`` delivers
that return value through ``returned``. :func:`track_images` runs it to the end.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from napari_cellect.data.arrays import ImageData, ImageInput
from napari_cellect.data.atomic import atomic_write
from napari_cellect.errors import InputError
from napari_cellect.infer.radius_estimate import PYTHON_RADIUS, resolve_cell_radius
from napari_cellect.progress import OnStep, run_to_end
from napari_cellect.segment import SegmentationConfig, paint_spheres, segment_frame
from napari_cellect.track.corrections import CorrectionSet
from napari_cellect.track.detections import DetectionCache, Detections, FrameCache
from napari_cellect.track.graph import TrackGraph
from napari_cellect.track.link import FrameByFrameLinker, link_sequence
from napari_cellect.track.merge import merge_duplicates

if TYPE_CHECKING:
    from distributed import Client  # untyped: a dask.distributed client

    from napari_cellect.model.bundle import ModelBundle

logger = logging.getLogger(__name__)


@dataclass
class TrackingProgress:
    """One step of a tracking run: ``stage`` is ``detect`` (per frame), ``refine`` (once, when
    division refinement starts) or ``link`` (at the end)."""

    stage: str
    done: int
    total: int
    detections: Detections | None = None
    #: with ``detections``: each cell's parent as an index into the previous frame's detections
    #: (-1: none), linked frame pair by frame pair as the frames finish
    #: (:class:`~napari_cellect.track.link.FrameByFrameLinker`), to show tracks while the run
    #: goes on; the result's linking (gap closing, division refinement) replaces them
    parent_index: np.ndarray | None = None


@dataclass
class TrackingResult:
    """The tracks, and the per-frame detections they were linked from."""

    graph: TrackGraph
    #: merged per-frame detections: the graph's nodes
    detections: list[Detections]
    z_ratio: float
    #: per-frame foreground masks kept for :func:`iter_labels` (None where the U-Net did not run)
    foreground: ForegroundStore | None = field(default=None, repr=False)
    shape: tuple[int, int, int] | None = None
    #: (L, 2) ``(parent_id, child_id)`` links that differ from ``keep_approved`` (re-linking only)
    changed: np.ndarray | None = None
    #: the U-Net's per-frame detections before merging (what fine-tuning and re-linking take)
    raw_detections: list[Detections] = field(default_factory=list)
    #: the nucleus radius the frames were resized for (given or estimated); None: as they are
    cell_radius: float | None = None


class ForegroundStore:
    """Per-frame boolean foreground masks of one frame shape, bit-packed on disk (not in
    memory): in a temporary folder, or in ``folder`` (kept, so a resumed run finds them)."""

    def __init__(self, shape: tuple[int, ...], folder: str | Path | None = None):
        self.shape = tuple(int(s) for s in shape)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if folder is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="cellect-fg-")
            folder = self._tmp.name
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, t: int) -> Path:
        return self.folder / f"fg{t:06d}.npy"

    def put(self, t: int, mask: np.ndarray) -> None:
        self.put_packed(t, np.packbits(mask.ravel()))

    def put_packed(self, t: int, bits: np.ndarray) -> None:
        """Store a mask already packed with ``np.packbits`` (as a dask worker sends it)."""
        with atomic_write(self._path(t), mode="wb") as f:
            np.save(f, bits)

    def has(self, t: int) -> bool:
        return self._path(t).is_file()

    def get(self, t: int) -> np.ndarray | None:
        if not self.has(t):
            return None
        bits = np.load(self._path(t))
        count = int(np.prod(self.shape))
        return np.unpackbits(bits, count=count).astype(bool).reshape(self.shape)


class _CacheWithForeground:
    """A detection cache that counts a frame as done only when its foreground mask is kept
    too (a run that makes instance masks predicts again the frames cached without one)."""

    def __init__(self, cache: DetectionCache, foreground: ForegroundStore):
        self.cache = cache
        self.foreground = foreground
        self.folder = cache.folder

    def has(self, t: int) -> bool:
        return self.cache.has(t) and self.foreground.has(t)

    def frames(self) -> list[int]:
        return [t for t in self.cache.frames() if self.foreground.has(t)]

    def load(self, t: int) -> Detections:
        return self.cache.load(t)

    def save(self, det: Detections) -> Path:
        return self.cache.save(det)


def _image_data(images: ImageInput) -> ImageData:
    data = images.data if not hasattr(images, "shape") and hasattr(images, "data") else images
    return cast(ImageData, data)


def open_detection_cache(
    images: ImageInput,
    bundle: ModelBundle,
    cache_dir: str | Path,
    *,
    z_ratio: float,
    tile: Sequence[int] | None = None,
    cell_radius: float | None = None,
) -> DetectionCache:
    """The detection cache of these images with this model and these settings.

    The fingerprint names the source files (path, size, modification time), so the images must
    come from files (an ImageSequence): an in-memory array has nothing that tells a stale cache
    from a good one.
    """
    from napari_cellect.infer.predict import cache_identity

    sources = [str(s) for s in getattr(images, "sources", None) or []]
    if not sources:
        raise InputError(
            "a detection cache needs images opened from files (open_sequence); found an "
            f"in-memory {type(images).__name__}",
            cache_dir,
        )
    parts = cache_identity(bundle, sources, z_ratio=z_ratio, tile=tile, cell_radius=cell_radius)
    cache = DetectionCache(cache_dir, parts=parts)
    mismatch = cache.mismatch()
    if mismatch is not None:
        logger.warning(
            "the detection cache %s was made with %s: not reused, its frames are predicted again",
            cache_dir,
            mismatch,
        )
    else:
        done = len(cache.frames())
        if done:
            logger.info("resuming from %s: %d frame(s) already detected", cache_dir, done)
    return cache


def iter_tracking(
    images: ImageInput,
    bundle: ModelBundle | None = None,
    *,
    z_ratio: float = 1.0,
    device: str = "auto",
    tile: Sequence[int] | None = None,
    cache_dir: str | Path | None = None,
    keep_approved: TrackGraph | None = None,
    corrections: CorrectionSet | None = None,
    keep_foreground: bool = False,
    should_stop: Callable[[], bool] | None = None,
    cell_radius: float | str | None = "auto",
    scheduler: str | Client | None = None,
    radius_option: str = PYTHON_RADIUS,
) -> Generator[TrackingProgress, None, TrackingResult]:
    """Track a (T, Z, Y, X) series (numpy, dask or ImageSequence). Returns a TrackingResult.

    Args:
        bundle: a ModelBundle; None loads the bundled default model.
        cache_dir: keep raw detections there, so a re-run (or a re-link after fine-tuning)
            never runs the U-Net again.
        keep_approved: a corrected graph: its approved links and nodes (also hand-added ones)
            are kept with their ids and only the rest is solved again; the result's
            ``changed`` lists the links that differ from it
            (:func:`~napari_cellect.track.relink.relink_keeping_work`).
        corrections: with ``keep_approved``, the corrections made on it (broken links, deleted
            detections, division labels), so re-linking keeps them too.
        keep_foreground: keep per-frame foreground masks for :func:`iter_labels`.
        should_stop: checked before each frame pair; True raises ``Cancelled``.
        cell_radius: typical nucleus radius of the images (xy pixels): the frames are resized
            to the model's training size (:mod:`~napari_cellect.infer.rescale`). ``"auto"``
            (default): estimated from a few frames (:mod:`~napari_cellect.infer.radius_estimate`,
            logged), and the frames are left as they are when it is close to the model's
            radius or cannot be found (a warning). None: as they are.
        scheduler: run the U-Net on a dask.distributed cluster (:mod:`~napari_cellect.infer.
            distributed`): a scheduler address ``'tcp://HOST:PORT'``, ``'local:N'`` for a
            LocalCluster of N workers, or a ``distributed.Client``. Merging, division
            refinement and linking run here. None: everything in this process.
        radius_option: how the caller's interface takes a nucleus radius, named by the
            messages about the estimate (``"--cell-radius R"`` for the CLI).
    """
    from napari_cellect.model.bundle import ModelBundle

    if bundle is None:
        bundle = ModelBundle.load_default()
    data = _image_data(images)
    if getattr(data, "ndim", 0) != 4:
        raise InputError(
            f"expected a (T, Z, Y, X) image series, found shape {getattr(data, 'shape', None)}"
        )
    n_frames = int(data.shape[0])
    reference_radius = bundle.normalization.reference_radius
    cell_radius = resolve_cell_radius(cell_radius, data, z_ratio, reference_radius, radius_option)
    detection_cache = None
    if cache_dir is not None:
        detection_cache = open_detection_cache(
            images, bundle, cache_dir, z_ratio=z_ratio, tile=tile, cell_radius=cell_radius
        )
    cache: FrameCache | None = detection_cache
    frame_shape = tuple(int(s) for s in data.shape[1:])
    foreground = None
    if keep_foreground and detection_cache is not None:  # kept with the detections, to resume
        folder = detection_cache.folder / f"foreground-{detection_cache.fingerprint[:16]}"
        foreground = ForegroundStore(frame_shape, folder)
        cache = _CacheWithForeground(detection_cache, foreground)
    elif keep_foreground:
        foreground = ForegroundStore(frame_shape)
    link_scorer = bundle.candidate_scorer("link")
    frames: list[Detections] = []
    raw: list[Detections] = []
    settings = dict(
        z_ratio=z_ratio,
        device=device,
        tile=tile,
        cell_radius=cell_radius,
        cache=cache,
        should_stop=should_stop,
    )
    predictions = _predictions(images, bundle, scheduler, keep_foreground, settings)
    provisional = FrameByFrameLinker(link_scorer, bundle.thresholds.link, z_ratio)
    for dets, merged, mask in _merged(predictions, bundle, z_ratio):
        if mask is not None and foreground is not None:
            foreground.put_packed(dets.t, mask)
        raw.append(dets)
        frames.append(merged)
        parents = provisional.add(merged)
        yield TrackingProgress("detect", len(frames), n_frames, merged, parents)
    unrefined = None  # the first linking, while refinement has changed nothing
    if bundle.thresholds.division_refinement.enabled and n_frames > 1:
        yield TrackingProgress("refine", 0, 1)
        raw, frames, unrefined = _refine(
            data, bundle, raw, frames, z_ratio, device, tile, should_stop, cell_radius
        )
    changed = None
    if keep_approved is not None:
        from napari_cellect.track.relink import relink_keeping_work

        relinked = relink_keeping_work(raw, bundle, keep_approved, z_ratio, corrections=corrections)
        graph, changed = relinked.graph, relinked.changed
    elif unrefined is not None:
        graph = unrefined
    else:
        graph = link_sequence(frames, link_scorer, bundle.thresholds.link, z_ratio)
    yield TrackingProgress("link", n_frames, n_frames)
    logger.info(
        "tracked %d frames: %d cells, %d links, %d divisions",
        n_frames,
        len(graph),
        graph.n_edges,
        len(graph.divisions()),
    )
    shape = cast(tuple[int, int, int], tuple(int(s) for s in data.shape[1:]))
    return TrackingResult(graph, frames, z_ratio, foreground, shape, changed, raw, cell_radius)


def iter_detect(
    images: ImageInput,
    bundle: ModelBundle,
    *,
    z_ratio: float,
    device: str = "auto",
    tile: Sequence[int] | None = None,
    cache: FrameCache | None = None,
    frames: Sequence[int] | None = None,
    cell_radius: float | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Generator[TrackingProgress, None, list[Detections]]:
    """Predict and merge ``frames`` (default all) as a tracking run does, without linking.

    Yields a ``TrackingProgress("detect", ...)`` with the merged detections of each frame;
    returns the raw (unmerged) detections, what fine-tuning and re-linking take. Frames in
    ``cache`` are loaded, the others predicted and saved to it.
    """
    from napari_cellect.infer.predict import predict_sequence

    data = _image_data(images)
    total = len(frames) if frames is not None else int(data.shape[0])
    predictions = predict_sequence(
        data,
        bundle,
        z_ratio=z_ratio,
        device=device,
        tile=tile,
        cache=cache,
        frames=frames,
        cell_radius=cell_radius,
        should_stop=should_stop,
    )
    raw: list[Detections] = []
    for dets, merged, _ in _merged(((d, None) for d in predictions), bundle, z_ratio):
        raw.append(dets)
        yield TrackingProgress("detect", len(raw), total, merged)
    return raw


def _merged(
    predictions: Iterator[tuple[Detections, np.ndarray | None]], bundle: ModelBundle, z_ratio: float
) -> Iterator[tuple[Detections, Detections, np.ndarray | None]]:
    """Each frame's raw detections, merged detections (the model's merge scorer and
    threshold) and foreground mask."""
    merge_scorer = bundle.candidate_scorer("merge")
    for dets, mask in predictions:
        merged, _ = merge_duplicates(dets, merge_scorer, bundle.thresholds.merge, z_ratio)
        yield dets, merged, mask


def _predictions(
    images: ImageInput,
    bundle: ModelBundle,
    scheduler: str | Client | None,
    keep_foreground: bool,
    settings: dict[str, Any],
) -> Iterator[tuple[Detections, np.ndarray | None]]:
    """Each frame's raw detections and packed foreground mask (None where not kept), from the
    U-Net here or on a dask cluster (connected for this stage only)."""
    if scheduler is not None:
        from napari_cellect.infer.distributed import connect, predict_distributed

        with connect(scheduler) as client:
            yield from predict_distributed(
                images, bundle, client, keep_foreground=keep_foreground, **settings
            )
        return
    from napari_cellect.infer.predict import predict_sequence

    masks: dict[int, np.ndarray] = {}

    def on_heads(t: int, heads: dict[str, np.ndarray]) -> None:
        masks[t] = np.packbits(np.argmax(heads["seg"], axis=0) == 1)

    for dets in predict_sequence(
        _image_data(images), bundle, on_heads=on_heads if keep_foreground else None, **settings
    ):
        yield dets, masks.pop(dets.t, None)


def _refine(
    data: ImageData,
    bundle: ModelBundle,
    raw: list[Detections],
    frames: list[Detections],
    z_ratio: float,
    device: str,
    tile: Sequence[int] | None,
    should_stop: Callable[[], bool] | None,
    cell_radius: float | None,
) -> tuple[list[Detections], list[Detections], TrackGraph | None]:
    """Division refinement (``infer/refine.py``) between a first linking and the final one;
    the frames it changed are merged again. Returns the raw and merged frames, and the first
    linking when nothing changed and it used the final settings (it is then the final one)."""
    from napari_cellect.infer.device import resolve_device
    from napari_cellect.infer.refine import refine_divisions
    from napari_cellect.settings.tiling import tiling_for

    link_cfg = bundle.thresholds.link
    # the cells to look at again are those that the link scorer alone predicts to divide and
    # that it did not give two children: with the U-Net's division probability or the daughter
    # floor in this first linking, refinement replaced good detections near many cells that do
    # not divide (validation: division F1 of 'fast' 305 0.83 -> 0.53, of a z-ratio-5 series
    # 0.89 -> 0.81)
    scorer_alone = dataclasses.replace(
        link_cfg, detector_division_weight=0.0, daughter_distance_scale=0.0
    )
    first = link_sequence(frames, bundle.candidate_scorer("link"), scorer_alone, z_ratio)
    refined, n = refine_divisions(
        data,
        bundle,
        first,
        raw,
        z_ratio=z_ratio,
        division_threshold=link_cfg.division_threshold,
        device=resolve_device(device),
        tiling=tiling_for(tile),
        should_stop=should_stop,
        cell_radius=cell_radius,
    )
    if n == 0:
        return raw, frames, first if scorer_alone == link_cfg else None
    merge_scorer = bundle.candidate_scorer("merge")
    merge_cfg = bundle.thresholds.merge
    merged = [
        f if new is old else merge_duplicates(new, merge_scorer, merge_cfg, z_ratio)[0]
        for old, new, f in zip(raw, refined, frames, strict=True)
    ]
    return refined, merged, None


def track_images(
    images: ImageInput,
    bundle: ModelBundle | None = None,
    *,
    progress: OnStep[TrackingProgress] | None = None,
    **kwargs: Any,
) -> TrackingResult:
    """Run :func:`iter_tracking` to the end and return its result; ``progress`` sees each step."""
    return run_to_end(iter_tracking(images, bundle, **kwargs), progress)


def make_labeler(
    graph: TrackGraph,
    shape: tuple[int, int, int],
    *,
    z_ratio: float = 1.0,
    foreground: ForegroundStore | None = None,
    config: SegmentationConfig | None = None,
) -> Callable[[int], np.ndarray]:
    """A function ``t -> (Z, Y, X)`` instance mask whose label values are the nodes' track ids.

    Frames with a stored foreground mask are segmented from it; the others (cached detections,
    or tracks loaded from a file) get a sphere of each node's radius.
    """
    track_ids = graph.track_ids()
    t_col = graph["t"]
    order = np.argsort(t_col, kind="stable")
    sorted_t = t_col[order]

    def labels_of_frame(t: int) -> np.ndarray:
        rows = order[np.searchsorted(sorted_t, t) : np.searchsorted(sorted_t, t, side="right")]
        positions, radius, labels = graph.positions(rows), graph["radius"][rows], track_ids[rows]
        fg = foreground.get(t) if foreground is not None else None
        if fg is not None:
            return segment_frame(fg, positions, radius, labels, z_ratio=z_ratio, config=config)
        return paint_spheres(shape, positions, radius, labels, z_ratio=z_ratio, config=config)

    return labels_of_frame


def iter_labels(
    graph: TrackGraph,
    shape: tuple[int, int, int],
    n_frames: int,
    **kwargs: Any,
) -> Iterator[np.ndarray]:
    """Instance masks frame by frame (see :func:`make_labeler`)."""
    labeler = make_labeler(graph, shape, **kwargs)
    return (labeler(t) for t in range(n_frames))
