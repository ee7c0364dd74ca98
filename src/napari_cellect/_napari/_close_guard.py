"""Asks before a viewer with unsaved edits closes (Save / Discard / Cancel).

The edits are autosaved in a journal either way, but a person closing the window expects to be
asked, not to find the work only in a journal folder. The guard is an event filter on napari's
main window, installed with the viewer's controller; a viewer without a window (a bare
``ViewerModel``) has none, and a script's ``viewer.close()`` is not asked about.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QWidget

from napari_cellect._napari import _dialogs
from napari_cellect._napari._qt_utils import ParentEventFilter

if TYPE_CHECKING:
    from napari_cellect._napari._controller import CellectController
    from napari_cellect.session import TrackingSession


class CloseGuard(ParentEventFilter):
    """Intercepts the main window's close event while sessions hold unsaved edits."""

    def __init__(self, window: QObject, controller: CellectController):
        super().__init__(window)
        self._controller = controller

    def _by_person(self) -> bool:
        """False when a script closes the viewer (``viewer.close()`` closes the canvas before
        the window, so it is already hidden): only the window's close button, menu or keys
        ask."""
        try:
            canvas = self._controller.viewer.window._qt_viewer
            return bool(canvas.isVisible())
        except (AttributeError, RuntimeError):  # torn down already
            return False

    def eventFilter(self, watched: QObject | None, event: QEvent | None) -> bool:
        if event is None or event.type() != QEvent.Type.Close or not self._by_person():
            return False
        unsaved = [s for s in self._controller.sessions if s.has_unsaved_edits]
        if not unsaved:
            return False
        window = watched if isinstance(watched, QWidget) else None
        answer = _dialogs.ask_unsaved_edits(
            [s.name for s in unsaved], [str(s.journal_folder) for s in unsaved], window
        )
        if answer == "discard" or (
            answer == "save" and all(_save(session, window) for session in unsaved)
        ):
            return False
        event.ignore()  # cancelled, or a save did not happen: the window stays open
        return True


def _save(session: TrackingSession, parent: QWidget | None) -> bool:
    """Save ``session`` to its file, asking for one if it has none; False if not saved."""
    target: str | Path | None = session.source
    if target is None:
        target = _dialogs.ask_save_path(
            parent,
            f"Save {session.name}",
            str(Path.home() / f"{session.name}_tracks.csv"),
            "Tracks CSV (*.csv)",
        )
        if not target:
            return False
    try:
        session.save(target)
    except (OSError, ValueError) as error:
        from napari.utils.notifications import show_error

        show_error(f"could not save {session.name}: {error}")
        return False
    return True


def install_close_guard(viewer: Any, controller: CellectController) -> CloseGuard | None:
    """Guard the main window of ``viewer`` (None for a viewer without a window)."""
    window = getattr(getattr(viewer, "window", None), "_qt_window", None)
    return CloseGuard(window, controller) if window is not None else None
