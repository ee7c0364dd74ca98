"""Small Qt helpers shared by the dock widgets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from qtpy.QtCore import QObject
from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

#: the most a dock widget asks for in height before it scrolls: five of them and napari's own
#: layer controls fit a 1080 px screen
DOCK_MIN_HEIGHT = 120


def scrolled_content(widget: QWidget) -> QWidget:
    """Give ``widget`` a scroll area and return the widget to lay its controls out on.

    A dock widget's minimum height is that of everything in it; several docked in one column
    would make the window taller than the screen. Inside a scroll area the dock can be made as
    short as :data:`DOCK_MIN_HEIGHT` and scrolls instead.
    """
    content = QWidget()
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setWidget(content)
    area.setMinimumHeight(DOCK_MIN_HEIGHT)
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
            try:
                signal.disconnect(slot)
            except (TypeError, ValueError, RuntimeError):  # already gone
                pass

    widget.destroyed.connect(disconnect)
