"""Small Qt helpers shared by the dock widgets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from qtpy.QtCore import QObject


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
