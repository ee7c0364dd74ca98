"""One undoable edit that turns a graph into another one (used to apply a re-link).

Re-linking builds a whole new :class:`TrackGraph`; the session's graph is the one object every
layer, the lineage view and the journal follow, so it is not swapped but *edited* into the new
graph by a single :class:`~napari_cellect.track.edits.Compound` of the four journal primitives:
remove the nodes the new graph lacks (and those it puts in another frame), add the new ones
(unlinked), set every parent that differs, then set the values that differ, column by column.
The history undoes it in one step and the journal replays it like any other edit. No Qt here.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from napari_cellect.track.edits import (
    AddNodes,
    Command,
    Compound,
    RemoveNodes,
    SetParents,
    SetValues,
)
from napari_cellect.track.graph import NO_PARENT, TrackGraph

#: columns that only describe the result of one re-link and stay out of the tracks
TRANSIENT_COLUMNS = frozenset({"changed"})
#: columns the primitives set themselves (never through SetValues)
_STRUCTURE = frozenset({"id", "parent_id"})


def replace_command(
    old: TrackGraph,
    new: TrackGraph,
    description: str,
    skip: Iterable[str] = TRANSIENT_COLUMNS,
) -> Compound:
    """A command that makes ``old`` equal to ``new`` (node ids, parents and every column of
    ``new`` except ``skip``). ``old`` is not changed; the diff is worked out on a copy."""
    skip = frozenset(skip)
    columns = [c for c in new.columns if c not in skip]
    scratch = old.copy()
    steps: list[Command] = []

    def run(step: Command) -> None:
        step.apply(scratch)
        steps.append(step)

    # a node that moves to another frame is removed and added again: its links are only valid
    # in its new frame, and setting them before its frame would go back in time
    shared = np.intersect1d(old.ids, new.ids)
    kept = shared[old["t"][old.index_of(shared)] == new["t"][new.index_of(shared)]]
    gone = np.setdiff1d(old.ids, kept)
    if len(gone):
        run(RemoveNodes(gone.tolist()))
    added_rows = np.flatnonzero(~np.isin(new.ids, kept))
    if len(added_rows):
        run(
            AddNodes(
                {
                    c: (
                        np.full(len(added_rows), NO_PARENT)
                        if c == "parent_id"
                        else new[c][added_rows]
                    ).tolist()
                    for c in columns
                }
            )
        )
    rows = scratch.index_of(new.ids)
    relinked = np.flatnonzero(scratch["parent_id"][rows] != new["parent_id"])
    if len(relinked):
        run(SetParents(new.ids[relinked].tolist(), new["parent_id"][relinked].tolist()))
    for column in columns:
        if column in _STRUCTURE:
            continue
        target = np.asarray(new[column])
        current = np.asarray(scratch[column][rows]) if column in scratch.columns else None
        differ = np.ones(len(target), bool) if current is None else ~_same(current, target)
        if np.any(differ):
            run(SetValues(column, new.ids[differ].tolist(), target[differ].tolist()))
    return Compound(description, steps)


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise equality where two NaNs are equal."""
    equal = a == b
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        equal |= np.isnan(a.astype(np.float64)) & np.isnan(b.astype(np.float64))
    return equal
