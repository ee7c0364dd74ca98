"""npe2 reader: image time series and tracks.

- a folder of per-time-point TIFFs: an Image layer backed by a lazy dask array (one chunk per
  frame), scaled by the voxel size in the files' metadata. Single TIFF files are left to
  napari's own reader (the manifest claims no ``*.tif``, so dropping one asks nothing); the
  Track cells widget reads their voxel size from the file. :func:`read_image` still opens a
  single (T, Z, Y, X) / (T, Y, X) TIFF when called directly;
- our tracks CSV (also a CTC ``RES``/``TRA`` folder or a GEFF folder): a centres Points layer and
  a Tracks layer, bound to a tracking session so the editor keys work at once. If autosaved
  edits exist beside the file, the user is asked whether to restore them;
- an autosave journal folder (``*.cellect-journal``): the session it holds, with its undo history.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_cellect._napari import _dialogs
from napari_cellect._napari._controller import ensure_controller_for_current_viewer
from napari_cellect._napari._layer_data import session_layer_data
from napari_cellect.data.images import AxesOption
from napari_cellect.errors import CellectError
from napari_cellect.session import Geometry, TrackingSession

logger = logging.getLogger(__name__)

LayerData = tuple[Any, dict[str, Any], str]
ReaderFunction = Callable[[str], list[LayerData]]

TIFF_SUFFIXES = (".tif", ".tiff")
JOURNAL_SUFFIX = ".cellect-journal"
#: napari's open dialog takes no axes: the person saves them in the file instead
NAPARI_AXES = AxesOption(
    spell=str,
    lead="Save the file with its axes in the metadata (Fiji: Image > Hyperstacks > Re-order "
    "Hyperstack, then File > Save As > Tiff):",
    tail=", then open it again",
)


def get_reader(path: str | list[str]) -> ReaderFunction | None:
    """Return a reader for ``path`` when it is something napari-cellect opens, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.name.endswith(JOURNAL_SUFFIX) and p.is_dir():
        return read_journal
    if p.is_file() and p.suffix.lower() == ".csv":
        return read_tracks_file if _is_tracks_csv(p) else None
    if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES:
        return read_image
    if p.is_dir():
        if _is_tracks_folder(p):
            return read_tracks_file
        if any(c.suffix.lower() in TIFF_SUFFIXES for c in p.iterdir() if c.is_file()):
            return read_image
    return None


#: the columns of a tracks CSV (:func:`napari_cellect.data.annotations.read_tracks`)
TRACKS_COLUMNS = frozenset({"id", "t", "y", "x", "parent_id"})


def _is_tracks_csv(path: Path) -> bool:
    """A header with ``id`` and at least two more of the tracks columns: a tracks file, maybe
    with a column missing, which our reader then names (napari's CSV reader would only say it
    cannot read it)."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            header = handle.readline()
    except OSError:
        return False
    columns = {c.strip().strip('"').lower() for c in header.split(",")}
    return "id" in columns and len(TRACKS_COLUMNS & columns) >= 3


def _is_tracks_folder(path: Path) -> bool:
    from napari_cellect.data.annotations import detect_format

    try:
        detect_format(path)
    except CellectError:
        return False
    return True


# ---------------------------------------------------------------------------- images


def read_image(path: str) -> list[LayerData]:
    """An Image layer (lazy dask) for a TIFF folder or a multi-frame TIFF."""
    from napari_cellect.data.images import open_sequence

    sequence = open_sequence(path, axes_option=NAPARI_AXES)
    data = sequence.data
    spatial = 3
    if data.shape[1] == 1:  # 2D+t: drop the Z axis of size 1
        data = data[:, 0]
        spatial = 2
    scale = (1.0, *sequence.scale[3 - spatial :])
    metadata = {
        "cellect_image": {
            "path": str(path),
            "frames": list(sequence.frames),
            "voxel_size": tuple(sequence.scale),
        }
    }
    kwargs = {"name": sequence.name or Path(path).name, "scale": scale, "metadata": metadata}
    return [(data, kwargs, "image")]


# ---------------------------------------------------------------------------- tracks


def _geometry_for(path: Path) -> Geometry:
    """2D when the CSV has no z column; voxel size from a matching image already open."""
    spatial = 3
    if path.is_file() and path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            columns = {c.strip().strip('"').lower() for c in handle.readline().split(",")}
        spatial = 3 if "z" in columns else 2
    return Geometry(spatial_ndim=spatial, scale=_scale_from_viewer(spatial))


def _scale_from_viewer(spatial: int) -> tuple[float, float, float]:
    """The voxel size of an image of the same dimensionality in the current viewer, if any."""
    try:
        import napari
        from napari.layers import Image

        viewer = napari.current_viewer()
    except ImportError:  # pragma: no cover - napari is a dependency
        return (1.0, 1.0, 1.0)
    if viewer is None:
        return (1.0, 1.0, 1.0)
    for layer in viewer.layers:
        if isinstance(layer, Image) and layer.ndim == spatial + 1:
            scale = tuple(float(s) for s in layer.scale[1:])
            return scale if spatial == 3 else (scale[0], *scale)  # type: ignore[return-value]
    return (1.0, 1.0, 1.0)


def read_tracks_file(path: str) -> list[LayerData]:
    """Centres + Tracks layers for a tracks file, offering to restore autosaved edits."""
    p = Path(path)
    session = TrackingSession.open_tracks(
        p, ask_restore=_dialogs.ask_restore_journal, geometry=_geometry_for(p)
    )
    ensure_controller_for_current_viewer()
    return session_layer_data(session)


def read_journal(path: str) -> list[LayerData]:
    """The session an autosave journal holds (graph and undo history)."""
    folder = Path(path)
    base = folder.name[: -len(JOURNAL_SUFFIX)]
    source = folder.with_name(base) if base and folder.with_name(base).is_file() else None
    session = TrackingSession.open_journal(
        folder,
        source=source,
        geometry=Geometry(spatial_ndim=3 if _any_z(folder) else 2, scale=(1.0, 1.0, 1.0)),
    )
    ensure_controller_for_current_viewer()
    return session_layer_data(session)


def _any_z(folder: Path) -> bool:
    """Whether the journal's base graph has any node off the z = 0 plane."""
    import pandas as pd

    base = folder / "base.csv"
    if not base.is_file():
        return True
    z = pd.read_csv(base, usecols=["z"])["z"].to_numpy()
    return bool(len(z) == 0 or (z != 0).any())
