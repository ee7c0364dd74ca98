"""Image-layer helpers of the tracking widgets (the worker's generator is
:func:`napari_cellect.session.jobs.tracking_job`).

:func:`model_reference_radius` tells the widget the nucleus size a model was trained on.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_cellect._napari._model_files import BUNDLED_MODEL
from napari_cellect.errors import CellectError
from napari_cellect.session.geometry import Geometry

if TYPE_CHECKING:
    from napari.layers import Image

logger = logging.getLogger(__name__)


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
