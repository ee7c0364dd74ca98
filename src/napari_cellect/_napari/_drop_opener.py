"""Opens a dropped folder of TIFFs or tracks file of ours without napari's 'Choose reader'.

napari picks a reader by the path's name alone (npe2's filename patterns; a folder matches
every reader that accepts folders) and asks whenever more than one matches and the user's
settings name none. napari's own reader claims every folder and every ``*.csv``, so a folder of
per-time TIFFs or our tracks CSV always has two candidates; a manifest cannot claim a file by
its content, and the only other thing napari consults is a reader preference in the user's
settings, which we do not write behind their back.

Once the plugin is active in a viewer (its controller exists: a CELLECT widget, sample or file
was opened), this event filter on napari's viewer widget opens a drop of exactly one folder or
CSV that :func:`get_reader` recognises with our reader. Everything else goes to napari as
before: other files (single TIFFs included), several paths, a drop with Alt (napari's 'choose
a reader') or Shift (stack), and paths the user's settings give a reader for. A single TIFF
that is not readable, damaged or truncated is refused with our reader's message instead (napari's
reader would fail with a traceback, or read a truncated stack as fewer frames).
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtGui import QDropEvent, QGuiApplication

from napari_cellect._napari._qt_utils import ParentEventFilter
from napari_cellect._napari._reader import TIFF_SUFFIXES, get_reader

PLUGIN_NAME = "napari-cellect"
#: held during a drop, these ask napari for its own handling (choose a reader, stack)
NAPARI_MODIFIERS = Qt.KeyboardModifier.AltModifier | Qt.KeyboardModifier.ShiftModifier


def ours(path: Path) -> bool:
    """A folder or CSV that napari would ask about and our reader opens."""
    if not (path.is_dir() or (path.is_file() and path.suffix.lower() == ".csv")):
        return False
    return get_reader(str(path)) is not None


def _user_prefers_a_reader(path: Path) -> bool:
    from napari.plugins.utils import get_preferred_reader

    return get_preferred_reader(str(path)) is not None


class DropOpener(ParentEventFilter):
    """Event filter: drops of one path of ours open with our reader, with no dialog."""

    def __init__(self, qt_viewer: QObject, viewer: Any):
        super().__init__(qt_viewer)
        self._viewer_ref = weakref.ref(viewer)

    def eventFilter(self, watched: QObject | None, event: QEvent | None) -> bool:
        if not isinstance(event, QDropEvent) or event.type() != QEvent.Type.Drop:
            return False
        path = _single_local_path(event)
        viewer = self._viewer_ref()
        if (
            viewer is None
            or path is None
            or QGuiApplication.keyboardModifiers() & NAPARI_MODIFIERS
            or _user_prefers_a_reader(path)
        ):
            return False
        if not ours(path):
            return self._refuse_damaged_tiff(path, event)
        event.acceptProposedAction()
        try:
            viewer.open(str(path), plugin=PLUGIN_NAME)
        except Exception as error:
            from napari.utils.notifications import show_error

            show_error(f"Could not open {path}: {getattr(error, 'original_error', None) or error}")
        return True

    @staticmethod
    def _refuse_damaged_tiff(path: Path, event: QDropEvent) -> bool:
        """Say why a dropped TIFF file cannot be read (not a TIFF, damaged, truncated), as our
        reader would, instead of letting napari's reader fail with a traceback or read a cut
        file as fewer frames; a readable one goes to napari."""
        from napari_cellect.data.images import check_tiff
        from napari_cellect.errors import InputError

        if not (path.is_file() and path.suffix.lower() in TIFF_SUFFIXES):
            return False
        try:
            check_tiff(path)
        except InputError as error:
            from napari.utils.notifications import show_error

            event.acceptProposedAction()
            show_error(f"Could not open {path}: {error}")
            return True
        return False


def _single_local_path(event: QDropEvent) -> Path | None:
    mime = event.mimeData()
    urls = mime.urls() if mime is not None else []
    if len(urls) != 1 or not urls[0].isLocalFile():
        return None
    return Path(urls[0].toLocalFile())


def install_drop_opener(viewer: Any) -> DropOpener | None:
    """Filter the drops on ``viewer``'s window (None for a viewer without one)."""
    qt_viewer = getattr(getattr(viewer, "window", None), "_qt_viewer", None)
    return DropOpener(qt_viewer, viewer) if qt_viewer is not None else None
