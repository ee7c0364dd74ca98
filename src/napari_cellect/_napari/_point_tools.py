"""napari's own point tools (add mode, delete button, dragging) turned into graph edits.

:class:`PointTools` is a part of :class:`~._controller.CellectController` (its
``point_tools``), and turns those edits into the controller's edit actions. The graph stays the
one source of truth:
a point added, deleted or moved with napari's Points tools becomes the matching undoable edit,
and the layer is then refreshed from the graph like after any other edit. Moves made by
dragging are collected during the gesture and committed as one edit on release.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_cellect.track import edits

if TYPE_CHECKING:
    from napari.layers import Points

    from napari_cellect._napari._controller import BoundSession, CellectController
    from napari_cellect._napari._edit_actions import EditActions


class PointTools:
    """Listens to the centres layer's data events and drags (bound by the controller)."""

    def __init__(self, controller: CellectController, edits: EditActions):
        self.controller = controller
        self.edits = edits
        #: the rows moved by the drag in progress (None: no drag)
        self._drag_moves: set[int] | None = None

    def on_drag(self, layer: Points, event: Any) -> Any:
        """Collect moves made by dragging points; commit them as one edit on release."""
        if layer.mode != "select":
            return
        self._drag_moves = set()
        yield
        while event.type == "mouse_move":
            yield
        moved, self._drag_moves = self._drag_moves, None
        if moved:
            self._commit_moves(layer, sorted(moved))

    def on_data(self, bound: BoundSession, event: Any) -> None:
        """Turn edits made with napari's point tools into graph edits."""
        if bound.sync is None or bound.sync.is_updating:
            return
        action = str(getattr(event, "action", ""))
        indices = [int(i) for i in getattr(event, "data_indices", ())]
        if action.endswith("added"):
            self.controller.activate(bound)
            points = bound.points
            assert points is not None
            n_new = len(points.data) - len(bound.session.graph)
            if n_new > 0:
                self._add_from_layer(bound, points.data[-n_new:])
        elif action.endswith("removed"):
            self.controller.activate(bound)
            known = bound.sync._ids  # the rows the layer showed before the removal
            ids = [int(known[i]) for i in indices if 0 <= i < len(known)]
            if ids:
                self.edits.delete(ids)
        elif action.endswith("changed"):
            if self._drag_moves is not None:
                self._drag_moves.update(indices)
            else:
                assert bound.points is not None
                self._commit_moves(bound.points, indices)

    def _add_from_layer(self, bound: BoundSession, coords: np.ndarray) -> None:
        geometry = bound.session.geometry
        builders = [
            lambda g, c=c: edits.add_node(g, int(round(c[0])), geometry.position_of(c))
            for c in np.asarray(coords)
        ]
        self.edits.try_execute(lambda: self.edits.batch(f"add {len(builders)} node(s)", builders))

    def _commit_moves(self, layer: Points, rows: Sequence[int]) -> None:
        bound = self.controller.bound
        if bound is None or layer is not bound.points:
            return
        graph = bound.session.graph
        rows = [r for r in rows if r < len(graph)]
        if not rows:
            return
        geometry = bound.session.geometry
        rows_arr = np.asarray(rows)
        shown = np.asarray(layer.data)[rows_arr]
        moved = np.any(shown != geometry.coords(graph)[rows_arr], axis=1)
        if not np.any(moved):
            return
        positions = np.array([geometry.position_of(c) for c in shown[moved]])
        self.edits.move_nodes(graph.ids[rows_arr[moved]], positions)
