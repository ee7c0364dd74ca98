"""Writing a session's tracks in the export formats (CSV, Cell Tracking Challenge, GEFF)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from napari_cellect.data.arrays import LabelSource
    from napari_cellect.session.tracking_session import TrackingSession


def export_session(
    session: TrackingSession,
    fmt: str,
    path: str | os.PathLike[str],
    labels: LabelSource | None = None,
) -> tuple[Path, str]:
    """Write ``session`` in format ``fmt`` (``csv``, ``ctc`` or ``geff``) to ``path``.

    Returns the path written and a note for the user about what the export could not keep as
    it was ("" when everything was kept)."""
    from napari_cellect.data.export import write_csv, write_ctc, write_geff

    path = Path(path)
    graph = session.graph
    z_ratio = session.geometry.z_ratio
    if fmt == "csv":
        write_csv(graph, path)
        return path, ""
    if fmt == "geff":
        write_geff(graph, path, z_ratio=z_ratio)
        return path, ""
    if fmt == "ctc":
        shape = None if labels is not None else session.image_shape
        written = write_ctc(graph, path, labels=labels, shape=shape, z_ratio=z_ratio)
        return written.folder, _ctc_note(
            written.marked, written.left_out, labels is not None or shape is not None
        )
    raise ValueError(f"unknown export format {fmt!r}; expected one of csv, ctc, geff")


def _ctc_note(marked: np.ndarray, left_out: np.ndarray, masks: bool) -> str:
    """What a CTC export changed or left out, in words (ids shown: the first few)."""

    def some(ids: np.ndarray) -> str:
        shown = ", ".join(str(int(i)) for i in ids[:5])
        return shown + (", ..." if len(ids) > 5 else "")

    notes = []
    if not masks:
        notes.append("no masks written (no Labels layer and no image size): res_track.txt only")
    if len(marked):
        notes.append(
            f"{len(marked)} node(s) had no pixels in the Labels layer and were written "
            f"as round markers of their radius (ids {some(marked)})"
        )
    if len(left_out):
        notes.append(
            f"{len(left_out)} node(s) lie outside the image and are NOT in the masks "
            f"(ids {some(left_out)})"
        )
    return "; ".join(notes)
