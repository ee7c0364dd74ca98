"""Correction records of the edit history (``Compound.corrections`` of ``History.done``), read
and replayed in order for :func:`napari_cellect.track.correction_labels.build_corrections`."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_cellect.errors import InputError

if TYPE_CHECKING:
    from napari_cellect.track.edits import Command, History

logger = logging.getLogger(__name__)

#: Record kinds written by ``track/edits.py``.
KINDS = (
    "link",
    "unlink",
    "division",
    "approve",
    "unapprove",
    "false_detection",
    "missed_detection",
)

# ------------------------------------------------------------------------------------ history


def corrections_from_history(history: History | Iterable[Command]) -> list[dict[str, Any]]:
    """The correction records of the applied commands, oldest first.

    Accepts a :class:`~napari_cellect.track.edits.History` (its ``done`` commands) or a sequence
    of commands. Each ``false_detection`` record is completed with the deleted node's frame,
    position and radius (``t, z, y, x, radius``), read from the ``RemoveNodes`` step that deleted
    it, because the node itself is gone from the graph afterwards.
    """
    commands = history.done if hasattr(history, "done") else list(history)
    records: list[dict[str, Any]] = []
    for command in commands:
        removed = _removed_rows(command)
        for record in getattr(command, "corrections", []) or []:
            record = dict(record)
            if record.get("kind") == "false_detection" and record.get("node") in removed:
                record.update(removed[record["node"]])
            records.append(record)
    return records


def _removed_rows(command: Command) -> dict[int, dict[str, float]]:
    """``{id: {t, z, y, x, radius}}`` of the nodes deleted by the RemoveNodes steps of a command
    (searched through nested compounds)."""
    out: dict[int, dict[str, float]] = {}
    removed = getattr(command, "_removed", None)
    if isinstance(removed, Mapping) and "id" in removed:
        for i, node in enumerate(removed["id"]):
            out[int(node)] = {
                key: (int(removed[key][i]) if key == "t" else float(removed[key][i]))
                for key in ("t", "z", "y", "x", "radius")
                if key in removed
            }
    for step in getattr(command, "steps", []) or []:
        out.update(_removed_rows(step))
    return out


# ------------------------------------------------------------------------------------ replay


@dataclass
class RecordState:
    """What the correction records say once replayed in order."""

    approved: dict[int, int] = field(default_factory=dict)  # child -> parent (-1: a start)
    broken: set[tuple[int, int]] = field(default_factory=set)
    divisions: dict[int, bool] = field(default_factory=dict)
    removed: dict[int, dict[str, float]] = field(default_factory=dict)
    hand_added: set[int] = field(default_factory=set)


def replay_records(records: Iterable[Mapping[str, Any]]) -> RecordState:
    """Replay records in order: a later record about the same link or node wins."""
    state = RecordState()
    for number, record in enumerate(records):
        kind = record.get("kind") if isinstance(record, Mapping) else None
        if kind not in KINDS:
            raise InputError(
                f"correction record {number}: expected a dict with 'kind' among "
                f"{', '.join(KINDS)}, found {record!r}"
            )
        about_link = kind in ("link", "unlink", "approve", "unapprove")
        try:
            if about_link:
                parent, child = int(record["parent"]), int(record["child"])
            else:
                node = int(record["node"])
        except (KeyError, TypeError, ValueError):
            raise InputError(
                f"correction record {number} ({kind}): expected integer "
                f"{'parent and child' if about_link else 'node'}, found {dict(record)!r}"
            ) from None
        if kind in ("link", "approve"):
            state.approved[child] = parent
            state.broken.discard((parent, child))
        elif kind == "unlink":
            state.broken.add((parent, child))
            if state.approved.get(child) == parent:
                del state.approved[child]
            # linking a second child marks a division (edits.link); losing a child withdraws it
            if state.divisions.get(parent):
                del state.divisions[parent]
        elif kind == "unapprove":
            if state.approved.get(child) == parent:
                del state.approved[child]
        elif kind == "division":
            state.divisions[node] = bool(record.get("divides", True))
        elif kind == "missed_detection":
            state.hand_added.add(node)
        else:  # false_detection: the node is gone, with whatever was said about it
            state.hand_added.discard(node)
            state.divisions.pop(node, None)
            state.approved = {c: p for c, p in state.approved.items() if node not in (c, p)}
            state.broken = {(p, c) for p, c in state.broken if node not in (p, c)}
            if all(k in record for k in ("t", "z", "y", "x")):
                state.removed[node] = {
                    "t": int(record["t"]),
                    "z": float(record["z"]),
                    "y": float(record["y"]),
                    "x": float(record["x"]),
                    "radius": float(record.get("radius", np.nan)),
                }
            else:
                logger.debug("false detection %d has no position; no merge label from it", node)
    return state
