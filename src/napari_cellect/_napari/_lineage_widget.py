"""Lineage view dock widget: the lineage trees of the active session, time downwards.

A custom-painted QWidget (no item per node): the layout (:mod:`._lineage_layout`) is turned into
one QPainterPath per track colour, cached until the graph changes, and drawn with a view
transform and cosmetic pens, so panning and zooming thousands of tracks only re-issues a few
dozen path draws. Node dots and track labels appear only when zoomed in far enough to read them
(level of detail), and only for what is on screen.

Clicking a node selects it and moves the viewer to its frame and position; the viewer's
selection is circled in the tree; a horizontal line marks the viewer's current frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt, Signal
from qtpy.QtGui import (
    QColor,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QPen,
    QTransform,
    QWheelEvent,
)
from qtpy.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from napari_cellect._napari._changes import ChangeSet
from napari_cellect._napari._colors import N_COLORS, PALETTE, palette_index
from napari_cellect._napari._controller import CellectController, controller_for
from napari_cellect._napari._lineage_layout import (
    LineageLayout,
    approved_runs,
    compute_layout,
    segments,
)
from napari_cellect._napari._qt_utils import disconnect_on_destroy, scrolled_content

if TYPE_CHECKING:
    import napari

    from napari_cellect.session import TrackingSession


class LineageStyle:
    """Sizes and colours of the lineage view (pixels unless stated)."""

    background = QColor(30, 30, 36)
    approved = QColor(80, 255, 100)
    selection = QColor(255, 255, 255)
    current_frame = QColor(255, 220, 60, 140)
    margin = 24.0
    line_width = 1.5
    approved_width = 4.0
    #: draw node dots when a frame is at least this many pixels tall
    dots_min_frame_px = 7.0
    #: skip the dots when more than this many nodes are on screen (the lines carry the picture)
    max_dots = 3000
    #: draw track labels when a column is at least this many pixels wide
    labels_min_column_px = 28.0
    #: most labels drawn at once
    max_labels = 400
    #: click tolerance around a node
    pick_radius = 8.0
    zoom_step = 1.15


class LineageCanvas(QWidget):
    """Draws a :class:`LineageLayout`; emits :attr:`node_clicked` with a node id."""

    node_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.style_ = LineageStyle()
        self.layout_: LineageLayout | None = None
        self._paths: list[tuple[QColor, QPainterPath]] = []
        self._division_paths: list[tuple[QColor, QPainterPath]] = []
        self._approved_path = QPainterPath()
        self.selected_ids: tuple[int, ...] = ()
        self.current_frame: int | None = None
        # view transform: screen = (column * sx + dx, frame * st + dy)
        self._sx = 20.0
        self._st = 12.0
        self._dx = 0.0
        self._dy = 0.0
        self._press: QPointF | None = None
        self._press_offset = (0.0, 0.0)
        self._dragged = False
        self.setMinimumSize(200, 200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(False)

    # ------------------------------------------------------------------ data
    def set_layout(self, layout: LineageLayout | None, approved: np.ndarray | None = None) -> None:
        """Replace what is drawn (rebuilds the cached paths)."""
        self.layout_ = layout
        self._paths, self._division_paths = [], []
        if layout is not None and layout.n_branches:
            stems, divisions = segments(layout)
            colour_of_branch = palette_index(layout.track)
            self._paths = _paths_by_colour(stems, colour_of_branch)
            child = np.flatnonzero(layout.parent >= 0)
            self._division_paths = _paths_by_colour(divisions, colour_of_branch[child])
        self.set_approved(approved if approved is not None else np.zeros((0, 4)))

    def set_approved(self, approved_segments: np.ndarray) -> None:
        path = QPainterPath()
        for x0, t0, x1, t1 in approved_segments:
            path.moveTo(x0, t0)
            path.lineTo(x1, t1)
        self._approved_path = path
        self.update()

    def fit(self) -> None:
        """Show every tree."""
        layout = self.layout_
        if layout is None or layout.n_branches == 0:
            return
        m = self.style_.margin
        t_min, t_max = float(layout.t0.min()), float(layout.t1.max())
        self._sx = max((self.width() - 2 * m) / max(layout.width, 1.0), 0.5)
        self._st = max((self.height() - 2 * m) / max(t_max - t_min, 1.0), 0.5)
        self._dx = m + 0.5 * self._sx
        self._dy = m - t_min * self._st
        self.update()

    def centre_on(self, column: float, frame: float) -> None:
        """Scroll so that (column, frame) is in the middle of the view."""
        self._dx = self.width() / 2 - column * self._sx
        self._dy = self.height() / 2 - frame * self._st
        self.update()

    def to_screen(self, column: float, frame: float) -> QPointF:
        return QPointF(column * self._sx + self._dx, frame * self._st + self._dy)

    def node_at(self, pos: QPointF) -> int | None:
        """The id of the node nearest to a screen position, within the pick radius."""
        layout = self.layout_
        if layout is None or len(layout.node_ids) == 0:
            return None
        sx = layout.node_x * self._sx + self._dx
        sy = layout.node_t * self._st + self._dy
        d2 = (sx - pos.x()) ** 2 + (sy - pos.y()) ** 2
        best = int(np.argmin(d2))
        if d2[best] > self.style_.pick_radius**2:
            return None
        return int(layout.node_ids[best])

    # ------------------------------------------------------------------ painting
    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.style_.background)
        layout = self.layout_
        if layout is None or layout.n_branches == 0:
            painter.setPen(QColor(200, 200, 200))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "no tracks")
            painter.end()
            return
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.save()
        painter.setTransform(QTransform(self._sx, 0, 0, self._st, self._dx, self._dy))
        style = self.style_
        self._draw_paths(painter, self._approved_path, style.approved, style.approved_width)
        # stems are vertical lines, which antialiasing only blurs; drawn without it they paint
        # about twice as fast (most of the view's paint time on large results)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        for colour, path in self._paths:
            self._draw_paths(painter, path, colour, self.style_.line_width)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        for colour, path in self._division_paths:
            self._draw_paths(painter, path, colour, self.style_.line_width)
        painter.restore()
        self._draw_current_frame(painter)
        self._draw_dots(painter, layout)
        self._draw_labels(painter, layout)
        self._draw_selection(painter, layout)
        painter.end()

    @staticmethod
    def _draw_paths(painter: QPainter, path: QPainterPath, colour: QColor, width: float) -> None:
        pen = QPen(colour, width)
        pen.setCosmetic(True)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(path)

    def _visible_nodes(self, layout: LineageLayout) -> np.ndarray:
        sx = layout.node_x * self._sx + self._dx
        sy = layout.node_t * self._st + self._dy
        return np.flatnonzero(
            (sx >= -10) & (sx <= self.width() + 10) & (sy >= -10) & (sy <= self.height() + 10)
        )

    def _draw_dots(self, painter: QPainter, layout: LineageLayout) -> None:
        if self._st < self.style_.dots_min_frame_px:
            return
        rows = self._visible_nodes(layout)
        if len(rows) > self.style_.max_dots:
            return
        radius = min(self._st * 0.25, 4.0)
        painter.setPen(Qt.PenStyle.NoPen)
        colours = palette_index(layout.track[layout.node_branch[rows]])
        for k in np.unique(colours):
            painter.setBrush(_qcolor(int(k)))
            for r in rows[colours == k]:
                centre = self.to_screen(layout.node_x[r], layout.node_t[r])
                painter.drawEllipse(centre, radius, radius)

    def _draw_labels(self, painter: QPainter, layout: LineageLayout) -> None:
        if self._sx < self.style_.labels_min_column_px:
            return
        sx = layout.x * self._sx + self._dx
        sy = layout.t0 * self._st + self._dy
        on_screen = (sx >= 0) & (sx <= self.width()) & (sy >= -20) & (sy <= self.height())
        visible = np.flatnonzero(on_screen)
        painter.setPen(QColor(220, 220, 220))
        for b in visible[: self.style_.max_labels]:
            painter.drawText(QPointF(sx[b] + 3, sy[b] - 3), str(int(layout.track[b])))

    def _draw_current_frame(self, painter: QPainter) -> None:
        if self.current_frame is None:
            return
        y = self.current_frame * self._st + self._dy
        pen = QPen(self.style_.current_frame, 1.0)
        painter.setPen(pen)
        painter.drawLine(QPointF(0, y), QPointF(self.width(), y))

    def _draw_selection(self, painter: QPainter, layout: LineageLayout) -> None:
        if not self.selected_ids:
            return
        order = np.argsort(layout.node_ids)
        ids = np.asarray(self.selected_ids, dtype=np.int64)
        pos = np.searchsorted(layout.node_ids[order], ids)
        pos = np.minimum(pos, len(order) - 1)
        found = layout.node_ids[order][pos] == ids
        pen = QPen(self.style_.selection, 2.0)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        for row in order[pos[found]]:
            centre = self.to_screen(layout.node_x[row], layout.node_t[row])
            painter.drawEllipse(centre, 6.0, 6.0)

    # ------------------------------------------------------------------ interaction
    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120.0
        if steps == 0:
            return
        factor = self.style_.zoom_step**steps
        pos = event.position()
        mods = event.modifiers()
        zoom_x = not (mods & Qt.KeyboardModifier.ShiftModifier)
        zoom_t = not (mods & Qt.KeyboardModifier.ControlModifier)
        if zoom_x:
            column = (pos.x() - self._dx) / self._sx
            self._sx = float(np.clip(self._sx * factor, 0.05, 400.0))
            self._dx = pos.x() - column * self._sx
        if zoom_t:
            frame = (pos.y() - self._dy) / self._st
            self._st = float(np.clip(self._st * factor, 0.05, 400.0))
            self._dy = pos.y() - frame * self._st
        self.update()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._press = event.position()
            self._press_offset = (self._dx, self._dy)
            self._dragged = False

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._press is None:
            return
        delta = event.position() - self._press
        if abs(delta.x()) + abs(delta.y()) > 3:
            self._dragged = True
        self._dx = self._press_offset[0] + delta.x()
        self._dy = self._press_offset[1] + delta.y()
        self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._press is not None and not self._dragged:
            node = self.node_at(event.position())
            if node is not None:
                self.node_clicked.emit(node)
        self._press = None

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        self.fit()


def _qcolor(index: int) -> QColor:
    r, g, b, a = (float(v) for v in PALETTE[index % N_COLORS])
    return QColor.fromRgbF(r, g, b, a)


def _paths_by_colour(
    segs: np.ndarray, colour_index: np.ndarray
) -> list[tuple[QColor, QPainterPath]]:
    """One path per palette colour holding the segments of that colour."""
    out = []
    for k in np.unique(colour_index):
        path = QPainterPath()
        for x0, t0, x1, t1 in segs[colour_index == k]:
            path.moveTo(x0, t0)
            path.lineTo(x1, t1)
        out.append((_qcolor(int(k)), path))
    return out


class LineageWidget(QWidget):
    """Dock widget: the lineage trees of the viewer's active tracking session."""

    def __init__(self, napari_viewer: napari.Viewer, controller: CellectController | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.controller = controller or controller_for(napari_viewer)
        assert self.controller is not None
        self.canvas = LineageCanvas(self)
        self._session: TrackingSession | None = None
        self._fitted = False

        self.follow = QCheckBox("Follow selection")
        self.follow.setChecked(True)
        self.fit_button = QPushButton("Fit")
        self.fit_button.clicked.connect(self.canvas.fit)
        self.info = QLabel()
        bar = QHBoxLayout()
        bar.addWidget(self.fit_button)
        bar.addWidget(self.follow)
        bar.addStretch(1)
        bar.addWidget(self.info)
        layout = QVBoxLayout(scrolled_content(self))
        layout.addLayout(bar)
        layout.addWidget(self.canvas, 1)
        self.setToolTip(
            "Click a node to select it and go there. Wheel: zoom (Shift: time only, "
            "Ctrl: columns only). Drag: pan. Double-click: fit."
        )

        self.canvas.node_clicked.connect(self._on_node_clicked)
        disconnect_on_destroy(
            self,
            [
                (self.controller.session_changed, self._on_session_changed),
                (self.controller.refreshed, self._on_refreshed),
                (self.controller.selection_changed, self._on_selection_changed),
                (napari_viewer.dims.events.current_step, self._on_current_step),
            ],
        )
        self._on_session_changed(self.controller.session)

    # ------------------------------------------------------------------ updates
    def _on_session_changed(self, session: TrackingSession | None) -> None:
        self._session = session
        self._fitted = False
        self._rebuild()

    def _on_refreshed(self, changes: ChangeSet) -> None:
        if changes.structure_changed:
            self._rebuild()
        elif "approved" in changes.columns and self._session is not None and self.canvas.layout_:
            self.canvas.set_approved(approved_runs(self._session.graph, self.canvas.layout_))

    def _rebuild(self) -> None:
        session = self._session
        if session is None:
            self.canvas.set_layout(None)
            self.info.setText("")
            return
        layout = compute_layout(session.graph)
        self.canvas.set_layout(layout, approved_runs(session.graph, layout))
        self.info.setText(f"{layout.n_branches} branches, {len(session.graph)} nodes")
        if not self._fitted and self.canvas.isVisible():
            self.canvas.fit()
            self._fitted = True

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if not self._fitted and self.canvas.layout_ is not None:
            self.canvas.fit()
            self._fitted = True

    def _on_selection_changed(self, ids: tuple[int, ...]) -> None:
        self.canvas.selected_ids = tuple(ids)
        layout = self.canvas.layout_
        if ids and layout is not None and self.follow.isChecked():
            rows = np.flatnonzero(layout.node_ids == ids[-1])
            if len(rows):
                point = self.canvas.to_screen(layout.node_x[rows[0]], layout.node_t[rows[0]])
                if not QRectF(self.canvas.rect()).contains(point):
                    self.canvas.centre_on(layout.node_x[rows[0]], layout.node_t[rows[0]])
        self.canvas.update()

    def _on_current_step(self, event: Any = None) -> None:
        step = self.viewer.dims.current_step
        self.canvas.current_frame = int(step[0]) if len(step) else None
        self.canvas.update()

    def _on_node_clicked(self, node: int) -> None:
        self.controller.select([node], center=True)
