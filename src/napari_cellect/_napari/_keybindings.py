"""The one keybinding table of the track editor.

Each entry names a controller method, its keys (napari key strings) and what it does. The
napari bindings (on the viewer and on the session's layers) and the table shown in the editor
widget are both derived from :data:`KEYBINDINGS`, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_cellect._napari._controller import CellectController


@dataclass(frozen=True)
class KeyBinding:
    """One editor action: ``method`` is the name of a no-argument controller method."""

    name: str
    keys: tuple[str, ...]
    description: str
    method: str

    @property
    def key_text(self) -> str:
        """The keys as shown to people (``Ctrl+Shift+Z``)."""
        return " / ".join(k.replace("Control", "Ctrl").replace("-", "+") for k in self.keys)


KEYBINDINGS: tuple[KeyBinding, ...] = (
    KeyBinding("Link", ("L",), "Link the two selected nodes (earlier to later). A second child "
               "makes the earlier node divide.", "link_selected"),
    KeyBinding("Break link", ("B",), "Remove the link into the selected node (the later one if "
               "two are selected).", "break_selected"),
    KeyBinding("Delete node", ("Delete", "Backspace"), "Delete the selected nodes; a track with "
               "one node deleted from its middle is healed over the gap.", "delete_selected"),
    KeyBinding("Add node", ("A",), "Add a node where the pointer is on the canvas, in the "
               "current frame. If one node of an earlier frame is selected, the new node is "
               "linked to it.", "add_at_cursor"),
    KeyBinding("Division", ("D",), "Mark the selected node as dividing, or unmark it (unmarking "
               "a node with two children unlinks the farther one).", "toggle_division"),
    KeyBinding("Swap parents", ("S",), "Exchange the parents of the two selected nodes (two "
               "crossing cells).", "swap_selected"),
    KeyBinding("Approve link", ("Y",), "Approve the incoming link of the selected nodes.",
               "approve_selected"),
    KeyBinding("Approve track", ("Shift-Y",), "Approve every link of the selected node's track.",
               "approve_track_selected"),
    KeyBinding("Next node", (".",), "Select the next node of the track and move the view to it.",
               "next_node"),
    KeyBinding("Previous node", (",",), "Select the previous node of the track and move the view "
               "to it.", "previous_node"),
    KeyBinding("Next uncertain", ("N",), "Jump to the next most uncertain link or division "
               "nobody approved yet (review queue) and select what approving it takes.",
               "next_uncertain"),
    KeyBinding("Previous uncertain", ("Shift-N",), "Go back to the review item shown before.",
               "previous_uncertain"),
    KeyBinding("Undo", ("Control-Z",), "Undo the last edit.", "undo"),
    KeyBinding("Redo", ("Control-Shift-Z",), "Redo the last undone edit.", "redo"),
)


def binding_callbacks(controller: CellectController) -> dict[str, Callable[[Any], None]]:
    """napari key -> callback (the callback ignores the viewer/layer napari passes it)."""
    out: dict[str, Callable[[Any], None]] = {}
    for binding in KEYBINDINGS:
        action = getattr(controller, binding.method)

        def callback(_provider: Any, _action: Callable[[], Any] = action) -> None:
            _action()

        callback.__doc__ = binding.description
        callback.__name__ = f"cellect_{binding.method}"
        for key in binding.keys:
            out[key] = callback
    return out


def bind(provider: Any, callbacks: dict[str, Callable[[Any], None]]) -> None:
    """Bind the callbacks on a napari keymap provider (viewer or layer), replacing its own keys."""
    for key, callback in callbacks.items():
        provider.bind_key(key, callback, overwrite=True)


def unbind(provider: Any, callbacks: dict[str, Callable[[Any], None]]) -> None:
    """Remove the bindings :func:`bind` made (only where they are still ours)."""
    from napari.utils.key_bindings import coerce_keybinding

    for key, callback in callbacks.items():
        bound = provider.keymap.get(coerce_keybinding(key))
        if bound is callback:
            provider.bind_key(key, None)
