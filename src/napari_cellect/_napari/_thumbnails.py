"""Redraw the layer-list thumbnails of edited layers shortly after an edit, not during it.

napari redraws a layer's thumbnail (the small icon in the layer list) on every refresh, from every
point or track vertex: 2 to 4 ms per layer at 50,000 nodes, paid on each key press although the
icon hardly changes. The layer sync refreshes the canvas at once and asks this class for the
thumbnails, which are redrawn at most once per :attr:`ThumbnailUpdates.delay_ms` (at once where
no Qt application runs, as in headless use). The controller shares one instance between the
sessions of a viewer.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from napari.layers import Layer
    from qtpy.QtCore import QTimer

#: how long thumbnails may lag behind edits (ms); a burst of edits redraws them once
THUMBNAIL_DELAY_MS = 250


class ThumbnailUpdates:
    """Collects layers whose thumbnail is out of date and redraws them together."""

    def __init__(self, delay_ms: int = THUMBNAIL_DELAY_MS):
        self.delay_ms = delay_ms
        self._pending: dict[int, weakref.ref[Layer]] = {}
        self._timer: QTimer | None = None

    def request(self, layer: Layer) -> None:
        """Redraw ``layer``'s thumbnail soon."""
        self._pending[id(layer)] = weakref.ref(layer)
        if self._timer is None:
            from qtpy.QtCore import QCoreApplication, QTimer

            if QCoreApplication.instance() is None:
                self.flush()
                return
            self._timer = QTimer()
            self._timer.setSingleShot(True)
            self._timer.timeout.connect(self.flush)
        if not self._timer.isActive():
            self._timer.start(self.delay_ms)

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def cancel(self) -> None:
        """Forget the pending thumbnails (their layers are going away)."""
        if self._timer is not None:
            self._timer.stop()
        self._pending.clear()

    def flush(self) -> None:
        """Redraw every pending thumbnail now."""
        if self._timer is not None:
            self._timer.stop()
        pending, self._pending = self._pending, {}
        for ref in pending.values():
            layer = ref()
            if layer is not None:
                # re-slices (cheap) and redraws the thumbnail; the canvas is already up to date
                layer.refresh(data_displayed=False, highlight=False, extent=False)
