"""The per-viewer track editor: sessions, selection, edit actions and navigation.

One :class:`CellectController` per viewer (see :func:`controller_for`; there is no process-wide
singleton). It binds tracking sessions to their layers, owns the selection and turns key presses,
clicks and napari's own point tools into edit commands that go through the session's
:class:`~napari_cellect.track.edits.History`. The layers and the lineage view never patch each
other: they refresh from the graph, through a :class:`~._changes.ChangeCollector` that merges the
``graph.changed`` signals of one action into one refresh.

Several sessions can be open in one viewer (say ground truth and a result); the one whose layer
is active receives the edits.

The controller owns three parts, each an object that is handed the controller it works for:
``edits`` (:class:`~._edit_actions.EditActions`, what the editing keys do), ``point_tools``
(:class:`~._point_tools.PointTools`, napari's own point tools turned into edits) and ``review``
(:class:`~._review.ReviewNavigation`, the review queue behind ``N`` / ``Shift+N``).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from psygnal import Signal

from napari_cellect._napari._changes import ChangeCollector, ChangeSet
from napari_cellect._napari._edit_actions import EditActions
from napari_cellect._napari._keybindings import bind, binding_callbacks, unbind
from napari_cellect._napari._layer_data import (
    ROLE_KEY,
    SESSION_KEY,
    session_layer_data,
    tracks_layer_data,
)
from napari_cellect._napari._layer_sync import LayerSync
from napari_cellect._napari._point_tools import PointTools
from napari_cellect._napari._review import ReviewNavigation, ReviewState
from napari_cellect._napari._thumbnails import ThumbnailUpdates
from napari_cellect.errors import CellectError
from napari_cellect.track.edits import Command
from napari_cellect.track.graph import TrackGraph

if TYPE_CHECKING:
    import napari
    from napari.layers import Labels, Layer, Points, Tracks

    from napari_cellect.session import TrackingSession

logger = logging.getLogger(__name__)


def autosave_stopped_text(error: BaseException) -> str:
    """What the person editing is told when the journal could not be written."""
    said = str(error)
    return (
        f"{said[:1].upper()}{said[1:]}. Your edits are still in the viewer: in Edit tracks, "
        "Save as... writes them to another disk, and Autosave folder... autosaves there."
    )


#: layer roles, in the order their layers are added
ROLES = ("labels", "tracks", "centres")


@dataclass(eq=False)
class BoundSession:
    """A session and the layers that show it."""

    session: TrackingSession
    collector: ChangeCollector
    points: Points | None = None
    tracks: Tracks | None = None
    labels: Labels | None = None
    sync: LayerSync | None = None
    #: False once the user removed the Tracks layer (do not bring it back)
    wants_tracks: bool = True
    #: the review queue of the session (built on first use)
    review: ReviewState | None = None
    #: node ids drawn with the highlight border (links a re-link changed)
    highlight: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: the edit whose undo removes the highlight (and whose redo brings it back)
    highlight_command: Command | None = None
    highlight_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: callables that undo each connection made when binding
    disconnects: list[Callable[[], None]] = field(default_factory=list)
    #: the journal's write error already told to the person (said once, when it happens)
    autosave_error_told: BaseException | None = None

    def layers(self) -> list[Layer]:
        return [layer for layer in (self.points, self.tracks, self.labels) if layer is not None]


class CellectController:
    """Edits the active tracking session of one viewer (see the module docstring for its
    parts)."""

    #: the selected node ids changed (tuple of ids, in the order they were selected)
    selection_changed = Signal(tuple)
    #: the active session changed (session or None)
    session_changed = Signal(object)
    #: the layers were refreshed after a graph change (ChangeSet)
    refreshed = Signal(object)
    #: something to tell the user: (level, text) with level "info", "warning" or "error"
    message = Signal(str, str)

    def __init__(self, viewer: napari.Viewer):
        self._viewer_ref = weakref.ref(viewer)
        self._bound: list[BoundSession] = []
        self._active: BoundSession | None = None
        self._selection: tuple[int, ...] = ()
        self._pushing_selection = False
        #: what the editing keys do
        self.edits = EditActions(self)
        #: napari's point tools (add, delete, drag) turned into edits
        self.point_tools = PointTools(self, self.edits)
        #: the review queue (N / Shift+N)
        self.review = ReviewNavigation(self)
        #: layer-list thumbnails of edited layers, redrawn shortly after edits
        self._thumbnails = ThumbnailUpdates()
        self._callbacks = binding_callbacks(self)
        #: asks before the viewer's window closes with unsaved edits (set by controller_for)
        self.close_guard: Any = None
        #: opens a dropped folder of TIFFs or tracks file of ours without asking (idem)
        self.drop_opener: Any = None
        bind(viewer, self._callbacks)
        viewer.layers.events.inserted.connect(self._on_layer_inserted)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        viewer.layers.selection.events.active.connect(self._on_active_layer)
        for layer in list(viewer.layers):
            self._adopt(layer)

    # ================================================================== properties
    @property
    def viewer(self) -> napari.Viewer:
        viewer = self._viewer_ref()
        if viewer is None:
            raise RuntimeError("the viewer of this controller was closed")
        return viewer

    @property
    def session(self) -> TrackingSession | None:
        """The session edits go to."""
        return self._active.session if self._active else None

    @property
    def sessions(self) -> list[TrackingSession]:
        return [b.session for b in self._bound]

    @property
    def graph(self) -> TrackGraph | None:
        return self._active.session.graph if self._active else None

    @property
    def bound(self) -> BoundSession | None:
        """The active session with its layers."""
        return self._active

    @property
    def selection(self) -> tuple[int, ...]:
        return self._selection

    def bound_for(self, session: TrackingSession) -> BoundSession | None:
        """The layers showing ``session`` (None once they were removed)."""
        return next((b for b in self._bound if b.session is session), None)

    # ================================================================== sessions and layers
    def add_session(self, session: TrackingSession) -> list[Layer]:
        """Add layers showing ``session`` to the viewer and make it the active session."""
        from napari.layers import Layer

        layers = []
        for data, kwargs, kind in session_layer_data(session):
            layer = Layer.create(data, kwargs, kind)
            self.viewer.add_layer(layer)
            layers.append(layer)
        return layers

    def _adopt(self, layer: Layer) -> None:
        session = layer.metadata.get(SESSION_KEY)
        role = layer.metadata.get(ROLE_KEY)
        if session is None or role not in ROLES:
            return
        bound = next((b for b in self._bound if b.session is session), None)
        if bound is None:
            bound = BoundSession(session=session, collector=ChangeCollector(session.graph))
            self._bound.append(bound)
            new = bound

            def on_changed(changes: ChangeSet) -> None:
                self._on_graph_changed(new, changes)

            bound.collector.changed.connect(on_changed)
        if role == "centres":
            self._bind_points(bound, layer)  # type: ignore[arg-type]
        elif role == "tracks":
            bound.tracks = layer  # type: ignore[assignment]
            self._bind_layer_keys(bound, layer)
        else:
            bound.labels = layer  # type: ignore[assignment]
            self._bind_labels(bound, layer)  # type: ignore[arg-type]
        if bound.points is not None:
            bound.sync = LayerSync(
                session,
                bound.points,
                bound.tracks,
                bound.labels,
                highlighted=bound.highlight,
                thumbnails=self._thumbnails,
            )
            if role != "centres":
                bound.sync.full_refresh()
        if bound.points is not None and self._active is not bound:
            self.activate(bound)

    def _bind_layer_keys(self, bound: BoundSession, layer: Layer) -> None:
        bind(layer, self._callbacks)
        bound.disconnects.append(lambda: unbind(layer, self._callbacks))

    def _bind_points(self, bound: BoundSession, points: Points) -> None:
        bound.points = points
        self._bind_layer_keys(bound, points)

        def on_select(*_args: Any) -> None:
            self._on_points_selected(bound)

        def on_data(event: Any) -> None:
            self.point_tools.on_data(bound, event)

        points.selected_data.events.items_changed.connect(on_select)
        points.events.data.connect(on_data)
        points.mouse_drag_callbacks.append(self.point_tools.on_drag)
        bound.disconnects += [
            lambda: points.selected_data.events.items_changed.disconnect(on_select),
            lambda: points.events.data.disconnect(on_data),
            lambda: _remove(points.mouse_drag_callbacks, self.point_tools.on_drag),
        ]
        points.mode = "select"

    def _bind_labels(self, bound: BoundSession, labels: Labels) -> None:
        self._bind_layer_keys(bound, labels)

        def callback(layer: Labels, event: Any) -> None:
            self._on_labels_click(bound, layer, event)

        def edited(_event: Any = None) -> None:
            if bound.sync is not None:
                bound.sync.labels_edited()

        labels.mouse_drag_callbacks.append(callback)
        labels.events.paint.connect(edited)
        labels.events.data.connect(edited)
        bound.disconnects += [
            lambda: _remove(labels.mouse_drag_callbacks, callback),
            lambda: labels.events.paint.disconnect(edited),
            lambda: labels.events.data.disconnect(edited),
        ]

    def activate(self, bound: BoundSession | None) -> None:
        """Make ``bound`` the session edits go to."""
        if bound is self._active:
            return
        self._active = bound
        self._set_selection((), push=False)
        self.session_changed.emit(bound.session if bound else None)

    def _unbind(self, bound: BoundSession) -> None:
        for disconnect in bound.disconnects:
            disconnect()
        bound.disconnects.clear()
        if bound.review is not None:
            bound.review.close()
            bound.review = None
        bound.collector.close()
        bound.session.close()
        self._bound.remove(bound)
        if self._active is bound:
            self._active = None
            self.activate(self._bound[-1] if self._bound else None)

    def _on_layer_inserted(self, event: Any) -> None:
        self._adopt(event.value)

    def _on_layer_removed(self, event: Any) -> None:
        layer = event.value
        for bound in list(self._bound):
            if layer is bound.points:
                self._unbind(bound)
            elif layer is bound.tracks or layer is bound.labels:
                unbind(layer, self._callbacks)
                if layer is bound.tracks:
                    bound.tracks = None
                    bound.wants_tracks = False
                else:
                    bound.labels = None
                if bound.points is not None:
                    bound.sync = LayerSync(
                        bound.session,
                        bound.points,
                        bound.tracks,
                        bound.labels,
                        highlighted=bound.highlight,
                        thumbnails=self._thumbnails,
                    )

    def _on_active_layer(self, event: Any) -> None:
        layer = event.value
        if layer is None:
            return
        for bound in self._bound:
            if layer in bound.layers() and bound.points is not None:
                self.activate(bound)
                return

    def close(self) -> None:
        """Unbind every session (journals with unsaved edits are kept) and the viewer keys."""
        self._thumbnails.cancel()
        if self.close_guard is not None:
            self.close_guard.remove()
            self.close_guard = None
        if self.drop_opener is not None:
            self.drop_opener.remove()
            self.drop_opener = None
        for bound in list(self._bound):
            self._unbind(bound)
        viewer = self._viewer_ref()
        if viewer is not None:
            unbind(viewer, self._callbacks)
            viewer.layers.events.inserted.disconnect(self._on_layer_inserted)
            viewer.layers.events.removed.disconnect(self._on_layer_removed)
            viewer.layers.selection.events.active.disconnect(self._on_active_layer)
        _REGISTRY.pop(id(viewer), None)

    # ================================================================== refresh
    def _on_graph_changed(self, bound: BoundSession, changes: ChangeSet) -> None:
        if bound.sync is not None:
            bound.sync.refresh(changes)
        if (
            bound.tracks is None
            and bound.wants_tracks
            and bound.points is not None
            and len(bound.session.graph)
        ):
            self._add_tracks_layer(bound)
        if bound is self._active:
            graph = bound.session.graph
            kept = tuple(i for i in self._selection if graph.has(i))
            self._set_selection(kept, push=True, emit=kept != self._selection)
            self.refreshed.emit(changes)

    def _add_tracks_layer(self, bound: BoundSession) -> None:
        """A session that started empty gets its Tracks layer once it has nodes."""
        from napari.layers import Layer

        session = bound.session
        data, kwargs, kind = tracks_layer_data(
            session.graph, session.geometry, session.name, {SESSION_KEY: session}
        )
        viewer = self.viewer
        points = bound.points
        index = viewer.layers.index(points) if points in viewer.layers else len(viewer.layers)
        viewer.layers.insert(index, Layer.create(data, kwargs, kind))
        if points is not None:
            viewer.layers.selection.active = points

    # ================================================================== executing edits
    def execute(self, command: Command, session: TrackingSession | None = None) -> Command | None:
        """Run ``command`` through the history of ``session`` (default: the active one; it
        must be shown in this viewer), autosaved; report errors."""
        bound = self.require() if session is None else self.bound_for(session)
        if bound is None:
            if session is not None:
                self.report("error", f"the tracks {session.name!r} are no longer shown")
            return None
        session = bound.session
        try:
            session.ensure_journal()
        except OSError as error:
            self.report("error", f"autosave is off: cannot write the journal ({error})")
        try:
            with bound.collector.batch():
                session.history.execute(command)
        except CellectError as error:
            self.report("error", str(error))
            return None
        description = getattr(command, "description", command.name)
        self.report("info", description)
        self._tell_if_autosave_stopped(bound)
        return command

    def do(self, action: Callable[..., Command], *args: Any, **kwargs: Any) -> Command | None:
        """Build a user action from :mod:`napari_cellect.track.edits` and execute it."""
        graph = self.graph
        if graph is None:
            self.require()
            return None
        try:
            command = action(graph, *args, **kwargs)
        except CellectError as error:
            self.report("error", str(error))
            return None
        return self.execute(command)

    def highlight(
        self,
        session: TrackingSession,
        ids: Sequence[int] | np.ndarray,
        command: Command | None = None,
    ) -> None:
        """Draw the centres of nodes ``ids`` of ``session`` with the highlight border (an empty
        list clears it). With ``command`` (the edit that made those nodes worth a look), undoing
        that edit clears the highlight and redoing it brings it back."""
        bound = self.bound_for(session)
        if bound is None:
            return
        bound.highlight_command = command
        bound.highlight_ids = np.unique(np.asarray(ids, np.int64))
        self._set_highlight(bound, bound.highlight_ids)

    def _set_highlight(self, bound: BoundSession, ids: np.ndarray) -> None:
        bound.highlight = ids
        if bound.sync is not None:
            bound.sync.set_highlight(ids)

    def _follow_highlight(self, bound: BoundSession, command: Command | None, how: str) -> None:
        if command is None or command is not bound.highlight_command:
            return
        self._set_highlight(bound, bound.highlight_ids if how == "redo" else np.zeros(0, np.int64))

    def undo(self) -> None:
        self._step_history("undo")

    def redo(self) -> None:
        self._step_history("redo")

    def _step_history(self, how: Literal["undo", "redo"]) -> None:
        bound = self.require()
        if bound is None:
            return
        history = bound.session.history
        with bound.collector.batch():
            command = history.undo() if how == "undo" else history.redo()
        self._follow_highlight(bound, command, how)
        did = "undid" if how == "undo" else "redid"
        self.report("info", f"{did}: {_describe(command)}" if command else f"nothing to {how}")
        self._tell_if_autosave_stopped(bound)

    def _tell_if_autosave_stopped(self, bound: BoundSession) -> None:
        """Say so, once, right after the edit whose autosave failed (a full disk...): the
        journal stops there (``Journal.error``) and later edits live only in the viewer."""
        journal = bound.session.journal
        error = journal.error if journal is not None else None
        if error is None or error is bound.autosave_error_told:
            return
        bound.autosave_error_told = error
        self.report("error", autosave_stopped_text(error))

    def require(self) -> BoundSession | None:
        """The active session with its layers; says so when there is none."""
        if self._active is None:
            self.report("error", "no tracks to edit: open a tracks file or run tracking first")
        return self._active

    def report(self, level: str, text: str) -> None:
        """Tell the user (``message``), as a napari notification too unless ``level`` is
        ``"info"``."""
        (logger.info if level == "info" else logger.warning)("%s", text)
        self.message.emit(level, text)
        if level != "info":
            from napari.utils.notifications import show_warning

            show_warning(text)

    def go_to(self, node: int) -> None:
        """Move the time step, the slice and the camera to a node."""
        bound = self._active
        if bound is None or bound.points is None:
            return
        graph = bound.session.graph
        info = graph.node(node)
        coords = bound.session.geometry.to_layer_point(info["t"], (info["z"], info["y"], info["x"]))
        world = np.asarray(bound.points.data_to_world(coords), dtype=np.float64)
        viewer = self.viewer
        offset = viewer.dims.ndim - len(world)
        displayed = set(viewer.dims.displayed)
        for k, value in enumerate(world):
            axis = offset + k
            if axis not in displayed:
                viewer.dims.set_point(axis, value)
        centre = [world[axis - offset] for axis in viewer.dims.displayed if axis >= offset]
        if len(centre) == len(viewer.dims.displayed):
            _camera(viewer).center = tuple(centre)

    # ================================================================== selection
    def select(self, ids: Sequence[int], *, center: bool = False, add: bool = False) -> None:
        """Select nodes by id (``add`` keeps the current selection)."""
        graph = self.graph
        if graph is None:
            return
        ids = tuple(int(i) for i in ids if graph.has(int(i)))
        if add:
            ids = tuple(i for i in self._selection if i not in ids) + ids
        self._set_selection(ids, push=True)
        if center and ids:
            self.go_to(ids[-1])

    def _set_selection(self, ids: tuple[int, ...], *, push: bool, emit: bool = True) -> None:
        self._selection = ids
        bound = self._active
        if push and bound is not None and bound.points is not None:
            rows = bound.session.graph.index_of(list(ids)) if ids else np.zeros(0, int)
            self._pushing_selection = True
            try:
                bound.points.selected_data = {int(r) for r in rows}
            finally:
                self._pushing_selection = False
        if emit:
            self.selection_changed.emit(ids)

    def _on_points_selected(self, bound: BoundSession) -> None:
        if self._pushing_selection or (bound.sync is not None and bound.sync.is_updating):
            return
        if bound is not self._active or bound.points is None:
            return
        graph = bound.session.graph
        rows = sorted(bound.points.selected_data)
        if rows and max(rows) >= len(graph):
            return  # the layer holds points the graph does not have yet (an add in progress)
        ids = [int(i) for i in graph.ids[rows]] if rows else []
        ordered = tuple(i for i in self._selection if i in ids) + tuple(
            i for i in ids if i not in self._selection
        )
        self._set_selection(ordered, push=False)

    def _on_labels_click(self, bound: BoundSession, layer: Labels, event: Any) -> None:
        if event.type != "mouse_press" or layer.mode != "pan_zoom":
            return
        value = layer.get_value(
            event.position,
            view_direction=event.view_direction,
            dims_displayed=event.dims_displayed,
            world=True,
        )
        if value is None or int(value) <= 0:
            return
        coords = np.asarray(layer.world_to_data(event.position))
        t = int(round(coords[0]))
        graph = bound.session.graph
        match = np.flatnonzero((graph.track_ids() == int(value)) & (graph["t"] == t))
        if len(match):
            self.activate(bound)
            self.select([int(graph.ids[match[0]])])


def _remove(callbacks: list[Any], callback: Any) -> None:
    if callback in callbacks:
        callbacks.remove(callback)


def _camera(viewer: napari.Viewer) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def _describe(command: Command | None) -> str:
    return getattr(command, "description", "") or (command.name if command else "")


# ====================================================================== per-viewer registry
#: viewer id -> (weak viewer, controller); the controller lives as long as the viewer's keymap
#: holds its callbacks, and is dropped when the viewer is gone
_REGISTRY: dict[int, tuple[weakref.ref, CellectController]] = {}


def controller_for(viewer: napari.Viewer, create: bool = True) -> CellectController | None:
    """The controller of ``viewer`` (created on first use when ``create``).

    napari hands each docked widget its own proxy of the viewer (``PublicOnlyProxy``); the
    registry keys on the viewer behind it, so every widget of one viewer shares one controller.
    """
    viewer = real_viewer(viewer)
    entry = _REGISTRY.get(id(viewer))
    if entry is not None and entry[0]() is viewer:
        return entry[1]
    if not create:
        return None
    controller = CellectController(viewer)
    from napari_cellect._napari._close_guard import install_close_guard
    from napari_cellect._napari._drop_opener import install_drop_opener

    controller.close_guard = install_close_guard(viewer, controller)
    controller.drop_opener = install_drop_opener(viewer)
    key = id(viewer)
    _REGISTRY[key] = (weakref.ref(viewer, lambda _ref, k=key: _REGISTRY.pop(k, None)), controller)
    return controller


def real_viewer(viewer: napari.Viewer) -> napari.Viewer:
    """The viewer behind napari's per-widget proxies (the viewer itself when not a proxy)."""
    while hasattr(viewer, "__wrapped__"):
        viewer = viewer.__wrapped__
    return viewer


def ensure_controller_for_current_viewer() -> CellectController | None:
    """Give the current viewer a controller, so session layers added next are bound at once.

    Readers and sample data return layer data, not layers, and do not get the viewer; this is
    how opening a tracks file makes it editable without any widget open.
    """
    import napari

    viewer = napari.current_viewer()
    return None if viewer is None else controller_for(viewer)
