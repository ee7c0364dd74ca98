"""The "Nucleus radius" field shared by the Track cells and Fine-tune widgets.

0 ("as trained") runs the U-Net on the frames as they are; a radius resizes them in y and x so
the nuclei look the size the model was trained on (``normalization.reference_radius``). The
tooltip names that size; it is written when it is about to show, because finding it may load
the model (about a second).
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QEvent, Qt
from qtpy.QtWidgets import QApplication, QDoubleSpinBox

from napari_cellect.errors import CellectError

#: the field's label in both widgets
CELL_RADIUS_LABEL = "Nucleus radius (px)"
#: the radius option a napari user has, as the core's messages about the estimate name it
NAPARI_RADIUS = f"{CELL_RADIUS_LABEL} in Track cells"
#: largest nucleus radius (xy pixels) offered; 0 is "as trained" (no resizing)
MAX_CELL_RADIUS = 1000.0
AUTO_RADIUS_HELP = (
    "'auto' (0): estimated from the chosen image (shown here once found, marked 'estimated'); "
    "the frames are left as they are when it is close to the model's size or none is found. "
    "Type a radius to use yours."
)
CELL_RADIUS_HELP = (
    "Typical nucleus radius of the image in xy pixels: the frames are resized so the nuclei "
    "look the size the model was trained on. 'as trained' (0): no resizing, for nuclei near "
    "that size."
)


class CellRadiusSpinBox(QDoubleSpinBox):
    """The radius field; ``tooltip`` writes its tooltip when it is about to show; ``zero`` is
    what 0 means ("as trained", or "auto": estimated from the images)."""

    def __init__(self, tooltip: Callable[[], str], zero: str = "as trained") -> None:
        super().__init__()
        self._tooltip = tooltip
        self.setRange(0.0, MAX_CELL_RADIUS)
        self.setDecimals(2)
        self.setSingleStep(0.5)
        self.setSpecialValueText(zero)
        self.setValue(0.0)
        self.setToolTip(CELL_RADIUS_HELP)

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip:
            self.setToolTip(self._tooltip())
        return super().event(event)

    def radius(self) -> float | None:
        """The radius in the field (None: at 0, "as trained" or "auto")."""
        value = float(self.value())
        return value if value > 0 else None

    def set_radius(self, radius: float | None) -> None:
        self.setValue(float(radius) if radius else 0.0)


def radius_tooltip(reference: Callable[[], float | None]) -> str:
    """The field's help and the nucleus radius the model was trained on, as ``reference``
    finds it (it may load the model: a wait cursor meanwhile)."""
    QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
    try:
        radius = reference()
    except (OSError, CellectError) as error:
        return f"{CELL_RADIUS_HELP}\nCannot read the model: {error}"
    finally:
        QApplication.restoreOverrideCursor()
    if radius is None:
        return (
            f"{CELL_RADIUS_HELP}\nThis model does not record the nucleus size it was "
            "trained on: leave 'as trained'."
        )
    return f"{CELL_RADIUS_HELP}\nThis model was trained on nuclei of radius {radius:g} px."
