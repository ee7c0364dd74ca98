"""Small Qt helpers shared by the dock widgets."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QEvent, QObject, QSize, QTimer
from qtpy.QtWidgets import (
    QDockWidget,
    QFrame,
    QLabel,
    QMainWindow,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

#: the most a dock widget asks for in height before it scrolls: five of them and napari's own
#: layer controls fit a 1080 px screen
DOCK_MIN_HEIGHT = 120
#: Qt property marking the plugin's dock widgets (docked together as tabs)
TAB_GROUP = "cellect_tab_group"
#: style of a status line that reports an error or a warning
ERROR_STYLE = "color: #ff7070;"


def show_status(label: QLabel, level: str, text: str) -> None:
    """Show ``text`` on a widget's status line, in the error colour unless ``level`` is
    ``"info"``."""
    label.setStyleSheet(ERROR_STYLE if level != "info" else "")
    label.setText(text)


def trackable_images(viewer: napari.Viewer) -> list[Image]:
    """The viewer's image layers that can be tracked: a time series, (T, Y, X) or
    (T, Z, Y, X), of one channel."""
    from napari.layers import Image

    return [
        layer
        for layer in viewer.layers
        if isinstance(layer, Image) and layer.ndim in (3, 4) and not layer.rgb
    ]


def scrolled_content(widget: QWidget) -> QWidget:
    """Give ``widget`` a scroll area and return the widget to lay its controls out on.

    A dock widget's minimum height is that of everything in it; several docked in one column
    would make the window taller than the screen. Inside a scroll area the dock can be made as
    short as :data:`DOCK_MIN_HEIGHT` and scrolls instead. Once docked, the widget also joins
    the plugin's other docks in that area as a tab (:class:`_JoinTabs`), so each tool gets the
    full height; a person can still drag a tab out.
    """
    widget.setProperty(TAB_GROUP, True)
    widget.installEventFilter(_JoinTabs(widget))
    content = QWidget()
    area = _VerticalScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setWidget(content)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    return content


def disconnect_on_destroy(widget: QObject, pairs: Sequence[tuple[Any, Callable[..., Any]]]) -> None:
    """Connect each ``(signal, slot)`` now and disconnect them all when ``widget`` is destroyed.

    The controller and the viewer outlive dock widgets; without this, a closed widget's slots
    would still be called (on a deleted C++ object) at the next edit.
    """
    for signal, slot in pairs:
        signal.connect(slot)

    def disconnect(*_args: Any) -> None:
        for signal, slot in pairs:
            with contextlib.suppress(TypeError, ValueError, RuntimeError):  # already gone
                signal.disconnect(slot)

    widget.destroyed.connect(disconnect)


class ParentEventFilter(QObject):
    """An event filter on its parent, installed when it is made; :meth:`remove` takes it off
    (the parent may already be gone)."""

    def __init__(self, parent: QObject):
        super().__init__(parent)
        parent.installEventFilter(self)

    def remove(self) -> None:
        try:
            watched = self.parent()
            if watched is not None:
                watched.removeEventFilter(self)
        except RuntimeError:  # the C++ object was deleted first
            pass


class _VerticalScrollArea(QScrollArea):
    """Scrolls up and down only: as wide as its content needs, as short as
    :data:`DOCK_MIN_HEIGHT`."""

    def minimumSizeHint(self) -> QSize:
        content = self.widget()
        width = content.minimumSizeHint().width() if content is not None else 0
        return QSize(width + self.verticalScrollBar().sizeHint().width(), DOCK_MIN_HEIGHT)

    def sizeHint(self) -> QSize:
        content = self.widget()
        hint = content.sizeHint() if content is not None else QSize(0, 0)
        return QSize(hint.width() + self.verticalScrollBar().sizeHint().width(), hint.height())

    def eventFilter(self, watched: QObject | None, event: QEvent | None) -> bool:
        # the hints above follow the content: when its layout changes (say, the style gives it
        # larger fonts once shown), let that layout settle, then make the dock ask again
        handled = super().eventFilter(watched, event)
        if (
            watched is self.widget()
            and event is not None
            and (event.type() == QEvent.Type.LayoutRequest)
        ):
            layout = watched.layout()
            if layout is not None:
                layout.activate()
            self.updateGeometry()
            holder = self.parentWidget()
            if holder is not None and holder.layout() is not None:
                holder.layout().invalidate()
        return handled


class _JoinTabs(QObject):
    """Each time its widget is put in a dock, tabs that dock with the plugin's other docks in
    the same area of the main window (on the next turn of the event loop: napari adds the dock
    to the window after setting its widget)."""

    def eventFilter(self, watched: QObject | None, event: QEvent | None) -> bool:
        if event is not None and event.type() == QEvent.Type.ParentChange:
            QTimer.singleShot(0, self._join)
        return False

    def _join(self) -> None:
        widget = self.parent()
        dock = widget.parentWidget() if isinstance(widget, QWidget) else None
        if not isinstance(dock, QDockWidget) or dock.isFloating():
            return
        window = dock.parentWidget()
        if not isinstance(window, QMainWindow):
            return
        area = window.dockWidgetArea(dock)
        siblings = [
            other
            for other in window.findChildren(QDockWidget)
            if other is not dock
            and not other.isFloating()
            and not other.isHidden()
            and window.dockWidgetArea(other) == area
            and other.widget() is not None
            and other.widget().property(TAB_GROUP)
        ]
        if siblings and dock not in window.tabifiedDockWidgets(siblings[0]):
            window.tabifyDockWidget(siblings[0], dock)
            dock.raise_()
