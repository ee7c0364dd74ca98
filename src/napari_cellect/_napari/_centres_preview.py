"""The centres Track cells has found so far, in a Points layer that grows by whole frames.

Growing a napari Points layer (``Points.add`` or assigning ``data``) restyles every point in
Python (napari re-checks all symbols, sizes and colours), so a preview grown frame by frame
would cost more on each frame, on the GUI thread. Instead the layer is made with hidden rows
reserved for the frames still to come; each frame's centres fill the next rows in place and are
shown, then the layer is refreshed (napari's documented way after changing a layer's arrays in
place: it re-slices, vectorised). When the reserve runs out it is doubled (one restyle, so
appending stays cheap on average).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari.layers import Points

#: rows reserved per expected centre (the number of cells usually grows as they divide)
RESERVE_FACTOR = 1.5


class CentresPreview:
    """A Points layer whose first ``len(points())`` rows are the centres found so far."""

    def __init__(self, layer: Points, filled: int):
        self.layer = layer
        self._filled = filled

    @classmethod
    def create(
        cls, viewer: Any, coords: np.ndarray, expected: int, **kwargs: Any
    ) -> CentresPreview:
        """Add the layer to ``viewer`` with ``coords`` shown and room for about ``expected``
        centres in all (``kwargs`` go to ``viewer.add_points``)."""
        capacity = max(int(expected * RESERVE_FACTOR), len(coords))
        data, shown = _reserved(coords, len(coords), capacity)
        return cls(viewer.add_points(data, shown=shown, **kwargs), len(coords))

    def points(self) -> np.ndarray:
        """The centres found so far."""
        return self.layer.data[: self._filled]

    def append(self, coords: np.ndarray) -> None:
        """Show one more frame's centres."""
        start, end = self._filled, self._filled + len(coords)
        if end > len(self.layer.data):
            data, shown = _reserved(self.points(), start, 2 * end)
            self.layer.data = data
            self.layer.shown = shown
        self.layer.data[start:end] = coords
        self.layer.shown[start:end] = True
        self._filled = end
        self.layer.refresh()


def _reserved(points: np.ndarray, filled: int, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """``points`` followed by hidden rows up to ``capacity`` (copies of the first point, so the
    layer's extent does not change), and which rows are shown."""
    data = np.repeat(points[:1], capacity, axis=0)
    data[:filled] = points[:filled]
    shown = np.zeros(capacity, dtype=bool)
    shown[:filled] = True
    return data, shown
