"""The one keybinding table of the track editor.

Each entry names a controller action, its keys (napari key strings) and what it does. The
napari bindings (on the viewer and on the session's layers) and the table shown in the editor
widget are both derived from :data:`KEYBINDINGS`, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_cellect._napari._controller import CellectController


@dataclass(frozen=True)
class KeyBinding:
    """One editor action: ``method`` names a no-argument method of the controller or of one of
    its parts (``"undo"``, ``"edits.link_selected"``, ``"review.next_uncertain"``)."""

    name: str
    keys: tuple[str, ...]
    description: str
    method: str

    def action(self, controller: CellectController) -> Callable[[], Any]:
        """The controller's method this binding runs."""
        return attrgetter(self.method)(controller)

    @property
    def key_text(self) -> str:
        """The keys as shown to people (``Ctrl+Shift+Z``)."""
        return " / ".join(k.replace("Control", "Ctrl").replace("-", "+") for k in self.keys)


KEYBINDINGS: tuple[KeyBinding, ...] = (
    KeyBinding(
        "Link",
        ("L",),
        "Link the two selected nodes (earlier to later). A second child "
        "makes the earlier node divide.",
        "edits.link_selected",
    ),
    KeyBinding(
        "Break link",
        ("B",),
        "Remove the link into the selected node (the later one if two are selected).",
        "edits.break_selected",
    ),
    KeyBinding(
        "Delete node",
        ("Delete", "Backspace"),
        "Delete the selected nodes; a track with "
        "one node deleted from its middle is healed over the gap.",
        "edits.delete_selected",
    ),
    KeyBinding(
        "Add node",
        ("A",),
        "Add a node where the pointer is on the canvas, in the "
        "current frame. If one node of an earlier frame is selected, the new node is "
        "linked to it.",
        "edits.add_at_cursor",
    ),
    KeyBinding(
        "Division",
        ("D",),
        "Mark the selected node as dividing, or unmark it (unmarking "
        "a node with two children unlinks the farther one).",
        "edits.toggle_division",
    ),
    KeyBinding(
        "Swap parents",
        ("S",),
        "Exchange the parents of the two selected nodes (two crossing cells).",
        "edits.swap_selected",
    ),
    KeyBinding(
        "Approve link",
        ("Y",),
        "Approve the incoming link of the selected nodes.",
        "edits.approve_selected",
    ),
    KeyBinding(
        "Approve track",
        ("Shift-Y",),
        "Approve every link of the selected node's track.",
        "edits.approve_track_selected",
    ),
    KeyBinding(
        "Next node",
        (".",),
        "Select the next node of the track and move the view to it.",
        "edits.next_node",
    ),
    KeyBinding(
        "Previous node",
        (",",),
        "Select the previous node of the track and move the view to it.",
        "edits.previous_node",
    ),
    KeyBinding(
        "Next uncertain",
        ("N",),
        "Jump to the next most uncertain link or division "
        "nobody approved yet (review queue) and select what approving it takes.",
        "review.next_uncertain",
    ),
    KeyBinding(
        "Previous uncertain",
        ("Shift-N",),
        "Go back to the review item shown before.",
        "review.previous_uncertain",
    ),
    KeyBinding("Undo", ("Control-Z",), "Undo the last edit.", "undo"),
    KeyBinding("Redo", ("Control-Shift-Z",), "Redo the last undone edit.", "redo"),
)


def binding_callbacks(controller: CellectController) -> dict[str, Callable[[Any], None]]:
    """napari key -> callback (the callback ignores the viewer/layer napari passes it)."""
    out: dict[str, Callable[[Any], None]] = {}
    for binding in KEYBINDINGS:
        action = binding.action(controller)

        def callback(_provider: Any, _action: Callable[[], Any] = action) -> None:
            _action()

        callback.__doc__ = binding.description
        callback.__name__ = f"cellect_{binding.method.rsplit('.', 1)[-1]}"
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
