"""The tracking worker's side: the generator a thread runs, and image-layer helpers.

No Qt here. :func:`tracking_job` runs the pipeline generator (``iter_tracking``, or any function
with its signature), passes its progress records through, then builds the instance masks from
the foreground the pipeline kept, frame by frame, still in the worker thread.
:func:`model_reference_radius` tells the widget the nucleus size a model was trained on.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from napari_cellect._napari._layer_data import Geometry
from napari_cellect._napari._model_files import BUNDLED_MODEL
from napari_cellect.errors import Cancelled, CellectError

if TYPE_CHECKING:
    from napari.layers import Image

logger = logging.getLogger(__name__)

#: largest in-memory label volume built after tracking (bytes); above it, no Labels layer
MAX_LABEL_BYTES = 2**31

TrackingFunction = Callable[..., Iterator[Any]]


def default_tracking_function() -> TrackingFunction:
    """``napari_cellect.pipeline.iter_tracking``, imported when a run starts (it needs torch)."""
    from napari_cellect.pipeline import iter_tracking

    return iter_tracking


@dataclass(frozen=True)
class TrackingOutput:
    """What the worker returns: the pipeline's result and the instance masks (or None), and
    the model it ran with when one was loaded from a file (None: the bundled default)."""

    result: Any
    labels: np.ndarray | None
    model: Any = None


@dataclass(frozen=True)
class TracksReady:
    """Yielded by :func:`tracking_job` once the pipeline has linked, before the masks are
    segmented: the tracks can be shown while the masks are still being made."""

    graph: Any
    stage: ClassVar[str] = "tracks"


def tracking_job(
    tracking_function: TrackingFunction,
    images: Any,
    model_path: str | None,
    *,
    z_ratio: float,
    device: str,
    tile: tuple[int, int, int] | None,
    should_stop: Callable[[], bool],
    cell_radius: float | None = None,
    max_label_bytes: int = MAX_LABEL_BYTES,
    scheduler: str | None = None,
) -> Iterator[Any]:
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
            images, bundle, z_ratio=z_ratio, device=device, tile=tile, cache_dir=None,
            keep_foreground=True, should_stop=should_stop, cell_radius=cell_radius, **on_cluster,
        )
        if getattr(result, "graph", None) is not None:
            yield TracksReady(result.graph)
        labels = getattr(result, "labels", None)
        if labels is None and result is not None:
            labels = yield from _segment(result, images.shape, z_ratio, should_stop,
                                         max_label_bytes)
    except Cancelled:
        return None
    return TrackingOutput(result, None if labels is None else np.asarray(labels), bundle)


def _segment(result: Any, shape: tuple[int, ...], z_ratio: float,
             should_stop: Callable[[], bool], max_label_bytes: int) -> Iterator[Any]:
    """Instance masks of every frame, from the foreground the pipeline kept (or spheres)."""
    from napari_cellect.pipeline import TrackingProgress, make_labeler
    from napari_cellect.segment import label_dtype

    graph = result.graph
    n_frames = int(shape[0])
    frame_shape = tuple(int(n) for n in shape[1:])
    dtype = label_dtype(int(graph.track_ids().max()) if len(graph) else 0)
    if n_frames * int(np.prod(frame_shape)) * dtype.itemsize > max_label_bytes:
        logger.info("no Labels layer: the masks would take more than %d bytes", max_label_bytes)
        return None
    labeler = make_labeler(graph, frame_shape, z_ratio=z_ratio,  # type: ignore[arg-type]
                           foreground=getattr(result, "foreground", None))
    labels = np.zeros((n_frames, *frame_shape), dtype=dtype)
    for t in range(n_frames):
        if should_stop():
            raise Cancelled(f"segmentation cancelled after {t} of {n_frames} frames")
        labels[t] = labeler(t)
        yield TrackingProgress("labels", t + 1, n_frames)
    return labels


def model_reference_radius(model_path: str | None) -> float | None:
    """The nucleus radius (xy pixels) the model was trained on; None when it does not record it.

    ``model_path`` None is the bundled model. The first call per file loads the model (torch,
    about a second); the answer is kept per file version. Raises OSError for a missing file and
    ModelError for one that is not a model bundle.
    """
    path = Path(model_path) if model_path else BUNDLED_MODEL
    stat = path.stat()
    return _reference_radius(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _reference_radius(path: str, _mtime_ns: int, _size: int) -> float | None:
    from napari_cellect.model.bundle import ModelBundle

    return ModelBundle.load(path).normalization.reference_radius


def as_tzyx(layer: Image) -> Any:
    """The layer's pixels as (T, Z, Y, X) (a Z axis of size 1 is added to (T, Y, X) data)."""
    data = layer.data[0] if layer.multiscale else layer.data
    if data.ndim == 3:
        return data[:, None]
    if data.ndim != 4:
        raise ValueError(
            f"expected a (T, Z, Y, X) or (T, Y, X) image, found {data.ndim} dimensions"
        )
    return data


def geometry_of(layer: Image) -> Geometry:
    """Voxel size and 2D/3D of an image layer, for the result layers."""
    scale = tuple(float(s) for s in layer.scale[1:])
    if layer.ndim >= 4:
        return Geometry(3, scale[-3:])  # type: ignore[arg-type]
    return Geometry(2, (scale[0], scale[0], scale[1]))


def image_path(layer: Image) -> Path | None:
    """The file or folder an image layer was read from, if any."""
    path = getattr(layer.source, "path", None)
    if path is None:
        path = (layer.metadata.get("cellect_image") or {}).get("path")
    return Path(path) if path else None


def tiff_z_ratio(path: Path | None) -> float | None:
    """z spacing / xy spacing recorded in a TIFF file's metadata (None: not a TIFF, or it does
    not say). Layers napari's own reader made from a TIFF have a unit scale; this recovers it."""
    if path is None or path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return None
    from napari_cellect.data.images import open_sequence

    try:
        scale = open_sequence(path).scale
    except (CellectError, OSError, ValueError):
        return None
    return None if np.allclose(scale, 1.0) else float(scale[0] / scale[1])


class WarningCollector(logging.Handler):
    """Collects the distinct warnings napari_cellect logs between :meth:`start` and
    :meth:`stop` (from any thread), so a widget can show what the console said."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._messages: dict[str, None] = {}

    def start(self) -> None:
        self._messages = {}
        logging.getLogger("napari_cellect").addHandler(self)

    def stop(self) -> None:
        logging.getLogger("napari_cellect").removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self._messages[record.getMessage()] = None

    def messages(self) -> list[str]:
        return list(self._messages)
