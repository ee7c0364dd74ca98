"""The list of links a re-link changed: highlighted in the viewer, a click jumps to one.

It follows the session's history: undoing the re-link empties the list (the controller drops
the highlight), redoing it fills the list again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QListWidget, QListWidgetItem

if TYPE_CHECKING:
    from napari_cellect._napari._controller import CellectController
    from napari_cellect.session import TrackingSession
    from napari_cellect.track.edits import Command

#: most links listed (all of them are highlighted in the viewer)
MAX_LISTED = 500
#: role of an item's data: the (parent, child) link it shows
LINK_ROLE = Qt.ItemDataRole.UserRole


class ChangedLinks(QListWidget):
    """Lists the ``(parent, child)`` links one re-link edit made or removed, earliest frame
    first."""

    def __init__(self, controller: CellectController, say: Callable[[str, str], None]):
        super().__init__()
        self.controller = controller
        #: reports ``(level, text)`` to the user
        self.say = say
        self.command: Command | None = None
        self.session: TrackingSession | None = None
        self.links = np.zeros((0, 2), np.int64)
        self.removed = np.zeros((0, 2), np.int64)
        self._history: Any = None
        self.setToolTip(
            "Links the last re-link changed (highlighted in the viewer); click one to go there"
        )
        self.itemClicked.connect(self.jump_to)
        self.itemActivated.connect(self.jump_to)
        self.destroyed.connect(lambda *_args, unwatch=self._unwatch: unwatch())

    def show_links(
        self,
        session: TrackingSession,
        command: Command,
        links: np.ndarray,
        removed: np.ndarray | None = None,
    ) -> None:
        """List and highlight the links the re-link ``command`` of ``session`` made (``links``)
        and took away (``removed``); the children of both are highlighted."""
        self._unwatch()
        self.session, self.command = session, command
        self.links = np.asarray(links, np.int64).reshape(-1, 2)
        self.removed = np.asarray(removed if removed is not None else [], np.int64).reshape(-1, 2)
        session.history.executed.connect(self._on_history)
        self._history = session.history
        self._fill()
        self.controller.highlight(
            session, np.unique(np.concatenate([self.links[:, 1], self.removed[:, 1]])), command
        )

    def _unwatch(self) -> None:
        if self._history is not None:
            self._history.executed.disconnect(self._on_history)
            self._history = None

    def _fill(self) -> None:
        self.clear()
        if self.session is None:
            return
        graph = self.session.graph
        made = self.links[np.isin(self.links[:, 1], graph.ids)]
        gone = self.removed[np.isin(self.removed[:, 1], graph.ids)]
        shown = np.concatenate([made, gone])
        is_gone = np.arange(len(shown)) >= len(made)
        times = graph["t"][graph.index_of(shown[:, 1])] if len(shown) else np.zeros(0, int)
        for i in np.lexsort((shown[:, 1], times))[:MAX_LISTED]:
            parent, child = (int(v) for v in shown[i])
            text = (
                f"t={int(times[i])}: {parent} -x- {child} (link removed)"
                if is_gone[i]
                else f"t={int(times[i])}: {parent} -> {child}"
            )
            item = QListWidgetItem(text)
            item.setData(LINK_ROLE, (parent, child))
            self.addItem(item)
        if len(shown) > MAX_LISTED:
            self.addItem(f"... and {len(shown) - MAX_LISTED} more (highlighted)")

    def jump_to(self, item: QListWidgetItem) -> None:
        """Select the child of the item's link and move the viewer to it."""
        link = item.data(LINK_ROLE)
        session = self.session
        if not link or session is None:
            return
        child = int(link[1])
        if not session.graph.has(child):
            self.say("error", f"node {child} is gone (deleted or undone)")
            return
        bound = self.controller.bound_for(session)
        if (
            bound is not None
            and bound.points is not None
            and (self.controller.session is not session)
        ):
            self.controller.viewer.layers.selection.active = bound.points  # edit this session
        self.controller.select([child], center=True)

    def _on_history(self, command: Command, how: str) -> None:
        if command is not self.command:
            return
        if how == "undo":
            self.clear()
            self.say("info", "re-link undone: the tracks are as before (Ctrl+Shift+Z redoes)")
        elif how == "redo":
            self._fill()
            self.say("info", "re-link redone")
