"""Edit commands on a :class:`TrackGraph`, with undo and redo.

Two tiers, as in funtracks: small invertible *primitives* (add nodes, remove nodes, set parents,
set values) and *user actions* (link, break, delete with healing, mark a division, swap parents,
approve ...) that check the domain rules and compose primitives.

A command is a plain object: building it changes nothing; :class:`History` calls ``apply`` and
``revert``. Primitives record what they need to revert when they are applied, including the
columns they created (a revert removes those again, so an undo leaves the same columns, with the
same dtypes, as before; a redo re-applies and so re-creates them). Every command can be
written as a dict (``to_dict``) and rebuilt (``command_from_dict``), which is how the autosave
journal replays a session.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Concatenate, ParamSpec

import numpy as np
from psygnal import Signal

from napari_cellect.errors import GraphError
from napari_cellect.track.graph import NO_PARENT, TrackGraph

#: the arguments of a user action after the graph (:meth:`History.do`)
P = ParamSpec("P")

# ---------------------------------------------------------------------------- primitives


class Command:
    """Base class: ``apply`` then ``revert`` restores the graph exactly."""

    name: ClassVar[str] = "command"

    def apply(self, graph: TrackGraph) -> None:
        raise NotImplementedError

    def revert(self, graph: TrackGraph) -> None:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass
class AddNodes(Command):
    """Append nodes given as columns (``id`` included, so a replay makes the same ids)."""

    columns: dict[str, list[Any]]
    #: extra columns the graph did not have before (the other nodes got NaN / 0 there)
    _created: list[str] = field(default_factory=list, repr=False)
    name: ClassVar[str] = "add_nodes"

    def apply(self, graph: TrackGraph) -> None:
        created = [c for c in self.columns if c not in graph.columns]
        graph.add_nodes(**{k: np.asarray(v) for k, v in self.columns.items()})
        self._created = created

    def revert(self, graph: TrackGraph) -> None:
        graph.remove_nodes(np.asarray(self.columns["id"], dtype=np.int64))
        for column in self._created:
            graph.drop_column(column)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.name, "columns": self.columns}


@dataclass
class RemoveNodes(Command):
    """Delete nodes; reverting restores them with all their attributes and their children's links."""

    ids: list[int]
    _removed: dict[str, list] | None = field(default=None, repr=False)
    _children: tuple[list[int], list[int], list[float]] | None = field(default=None, repr=False)
    name: ClassVar[str] = "remove_nodes"

    def apply(self, graph: TrackGraph) -> None:
        rows = graph.index_of(self.ids)
        self._removed = {c: graph[c][rows].tolist() for c in graph.columns}
        orphan_rows = np.flatnonzero(np.isin(graph["parent_id"], self.ids))
        self._children = (
            graph.ids[orphan_rows].tolist(),
            graph["parent_id"][orphan_rows].tolist(),
            graph["link_score"][orphan_rows].tolist(),
        )
        graph.remove_nodes(self.ids)

    def revert(self, graph: TrackGraph) -> None:
        assert self._removed is not None and self._children is not None
        removed = dict(self._removed)
        parents = np.asarray(removed.pop("parent_id"), dtype=np.int64)
        graph.add_nodes(
            **{k: np.asarray(v) for k, v in removed.items()}, parent_id=np.full(len(parents), -1)
        )
        # restore edges in two steps so that parents among the removed nodes exist first
        linked = parents != NO_PARENT
        if np.any(linked):
            graph.set_parent(np.asarray(removed["id"])[linked], parents[linked])
        child_ids, parent_ids, scores = self._children
        if child_ids:
            graph.set_parent(child_ids, parent_ids)
            graph.set_values("link_score", child_ids, scores)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.name, "ids": list(map(int, self.ids))}


@dataclass
class SetParents(Command):
    """Set the parent of each child (-1 unlinks)."""

    child_ids: list[int]
    parent_ids: list[int]
    _old: list[int] | None = field(default=None, repr=False)
    name: ClassVar[str] = "set_parents"

    def apply(self, graph: TrackGraph) -> None:
        self._old = graph["parent_id"][graph.index_of(self.child_ids)].tolist()
        # unlink first so that a swap never passes through a node with three children
        graph.set_parent(self.child_ids, NO_PARENT)
        try:
            graph.set_parent(self.child_ids, self.parent_ids)
        except GraphError:
            graph.set_parent(self.child_ids, self._old)
            raise

    def revert(self, graph: TrackGraph) -> None:
        assert self._old is not None
        graph.set_parent(self.child_ids, NO_PARENT)
        graph.set_parent(self.child_ids, self._old)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.name, "child_ids": self.child_ids, "parent_ids": self.parent_ids}


@dataclass
class SetValues(Command):
    """Set one attribute of some nodes."""

    column: str
    ids: list[int]
    values: list
    _old: list | None = field(default=None, repr=False)
    _created: bool = field(default=False, repr=False)
    name: ClassVar[str] = "set_values"

    def apply(self, graph: TrackGraph) -> None:
        created = self.column not in graph.columns
        old = None if created else graph[self.column][graph.index_of(self.ids)].tolist()
        graph.set_values(self.column, self.ids, self.values)
        self._created, self._old = created, old

    def revert(self, graph: TrackGraph) -> None:
        if self._created:
            graph.drop_column(self.column)
        else:
            assert self._old is not None
            graph.set_values(self.column, self.ids, self._old)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.name, "column": self.column, "ids": self.ids, "values": self.values}


@dataclass
class Compound(Command):
    """A user action: several primitives applied in order, reverted in reverse order."""

    description: str
    steps: list[Command]
    #: what this action teaches the scorers (see :func:`corrections_from_history`)
    corrections: list[dict[str, Any]] = field(default_factory=list)
    name: ClassVar[str] = "compound"

    def apply(self, graph: TrackGraph) -> None:
        done: list[Command] = []
        try:
            for step in self.steps:
                step.apply(graph)
                done.append(step)
        except Exception:
            for step in reversed(done):
                step.revert(graph)
            raise

    def revert(self, graph: TrackGraph) -> None:
        for step in reversed(self.steps):
            step.revert(graph)

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.name,
            "description": self.description,
            "steps": [s.to_dict() for s in self.steps],
            "corrections": self.corrections,
        }


_PRIMITIVES: dict[str, type[Command]] = {
    c.name: c for c in (AddNodes, RemoveNodes, SetParents, SetValues)
}


def command_from_dict(data: dict[str, Any]) -> Command:
    """Rebuild a command written by ``to_dict`` (used to replay a journal)."""
    op = data.get("op")
    if op == Compound.name:
        return Compound(
            description=data["description"],
            steps=[command_from_dict(s) for s in data["steps"]],
            corrections=list(data.get("corrections", [])),
        )
    if op not in _PRIMITIVES:
        raise GraphError(f"unknown edit command {op!r}; expected one of {sorted(_PRIMITIVES)}")
    kwargs = {k: v for k, v in data.items() if k != "op"}
    return _PRIMITIVES[op](**kwargs)


# ---------------------------------------------------------------------------- user actions


def _ints(ids: Sequence[int] | np.ndarray) -> list[int]:
    return [int(i) for i in np.atleast_1d(ids)]


def link(graph: TrackGraph, parent: int, child: int) -> Compound:
    """Link ``parent -> child`` by hand (approved). A second child makes a division.

    The child's previous parent, if any, is replaced.
    """
    p_row, c_row = graph.index_of([parent, child])
    if graph["t"][p_row] == graph["t"][c_row]:
        raise GraphError(
            f"nodes {parent} and {child} are in the same frame ({graph['t'][p_row]}); "
            "a link joins a node to one in a later frame"
        )
    if graph["t"][p_row] > graph["t"][c_row]:
        parent, child = child, parent
        p_row, c_row = c_row, p_row
    children = graph.children_of(parent)
    if child not in children and len(children) >= 2:
        raise GraphError(
            f"node {parent} already has two children ({children[0]}, {children[1]}); "
            "break one of those links first"
        )
    old_parent = int(graph["parent_id"][c_row])
    corrections: list[dict[str, Any]] = [
        {"kind": "link", "parent": int(parent), "child": int(child)}
    ]
    if old_parent not in (NO_PARENT, parent):
        corrections.append({"kind": "unlink", "parent": old_parent, "child": int(child)})
    steps: list[Command] = [
        SetParents([int(child)], [int(parent)]),
        SetValues("approved", [int(child)], [True]),
        SetValues("link_score", [int(child)], [1.0]),
    ]
    if len(children) == 1 and child not in children:
        steps.append(SetValues("division_score", [int(parent)], [1.0]))
        corrections.append({"kind": "division", "node": int(parent), "divides": True})
    return Compound(f"link {parent} -> {child}", steps, corrections)


def break_link(graph: TrackGraph, child: int) -> Compound:
    """Remove the link into ``child``; the user said this link is wrong."""
    parent = graph.parent_of(child)
    if parent == NO_PARENT:
        raise GraphError(f"node {child} has no parent link to break")
    steps: list[Command] = [
        SetParents([int(child)], [NO_PARENT]),
        SetValues("approved", [int(child)], [False]),
    ]
    if len(graph.children_of(parent)) == 2:
        steps.append(SetValues("division_score", [int(parent)], [0.0]))
    return Compound(
        f"break link {parent} -> {child}",
        steps,
        [{"kind": "unlink", "parent": int(parent), "child": int(child)}],
    )


def delete_node(graph: TrackGraph, node: int) -> Compound:
    """Delete a node. Its track heals over the gap where that is unambiguous.

    Unambiguous means the node has a parent and exactly one child: the child is then linked to
    the node's parent (the gap is one frame wide).
    """
    parent = graph.parent_of(node)
    children = graph.children_of(node)
    steps: list[Command] = [RemoveNodes([int(node)])]
    description = f"delete node {node}"
    if parent != NO_PARENT and len(children) == 1:
        steps.append(SetParents([int(children[0])], [int(parent)]))
        description += f" (healed {parent} -> {children[0]})"
    return Compound(description, steps, [{"kind": "false_detection", "node": int(node)}])


def add_node(
    graph: TrackGraph,
    t: int,
    position: Sequence[float],
    *,
    radius: float = float("nan"),
    parent: int | None = None,
) -> Compound:
    """Add a hand-placed node (approved) at ``position`` (z, y, x) in frame ``t``."""
    node_id = graph.next_id()
    z, y, x = (float(v) for v in position)
    columns: dict[str, list[Any]] = {
        "id": [node_id],
        "t": [int(t)],
        "z": [z],
        "y": [y],
        "x": [x],
        "radius": [float(radius)],
        "score": [1.0],
        "approved": [True],
        "parent_id": [NO_PARENT],
    }
    steps: list[Command] = [AddNodes(columns)]
    corrections: list[dict[str, Any]] = [{"kind": "missed_detection", "node": node_id}]
    if parent is not None:
        steps.append(SetParents([node_id], [int(parent)]))
        corrections.append({"kind": "link", "parent": int(parent), "child": node_id})
    return Compound(f"add node {node_id} at t={t}", steps, corrections)


def mark_division(graph: TrackGraph, mother: int, divides: bool = True) -> Compound:
    """Mark (or unmark) ``mother`` as dividing.

    Unmarking a node that has two children breaks the link to the child farther away.
    """
    steps: list[Command] = [
        SetValues("division_score", [int(mother)], [1.0 if divides else 0.0]),
    ]
    corrections: list[dict[str, Any]] = [
        {"kind": "division", "node": int(mother), "divides": divides}
    ]
    children = graph.children_of(mother)
    if not divides and len(children) == 2:
        pos = graph.positions(graph.index_of([mother, *children]))
        far = int(children[int(np.argmax(np.linalg.norm(pos[1:] - pos[0], axis=1)))])
        steps.append(SetParents([far], [NO_PARENT]))
        corrections.append({"kind": "unlink", "parent": int(mother), "child": far})
    verb = "mark" if divides else "unmark"
    return Compound(f"{verb} division at {mother}", steps, corrections)


def swap_parents(graph: TrackGraph, a: int, b: int) -> Compound:
    """Exchange the parents of two nodes (the classic fix for two crossing cells)."""
    pa, pb = graph.parent_of(a), graph.parent_of(b)
    if pa == pb:
        raise GraphError(f"nodes {a} and {b} have the same parent ({pa}); nothing to swap")
    corrections = [
        {"kind": "unlink", "parent": pa, "child": int(a)},
        {"kind": "unlink", "parent": pb, "child": int(b)},
    ]
    corrections = [c for c in corrections if c["parent"] != NO_PARENT]
    corrections += [
        {"kind": "link", "parent": pb, "child": int(a)},
        {"kind": "link", "parent": pa, "child": int(b)},
    ]
    corrections = [c for c in corrections if c["parent"] != NO_PARENT]
    return Compound(
        f"swap parents of {a} and {b}",
        [
            SetParents([int(a), int(b)], [pb, pa]),
            SetValues("approved", [int(a), int(b)], [True, True]),
        ],
        corrections,
    )


def approve(
    graph: TrackGraph, nodes: Sequence[int] | np.ndarray, approved: bool = True
) -> Compound:
    """Approve (or un-approve) the incoming links of ``nodes``."""
    ids = _ints(nodes)
    graph.index_of(ids)
    kind = "approve" if approved else "unapprove"
    corrections = [
        {"kind": kind, "parent": int(p), "child": int(c)}
        for c, p in zip(ids, graph["parent_id"][graph.index_of(ids)], strict=True)
    ]
    return Compound(
        f"{kind} {len(ids)} link(s)",
        [SetValues("approved", ids, [approved] * len(ids))],
        corrections,
    )


def approve_track(graph: TrackGraph, node: int) -> Compound:
    """Approve every link of the branch (track id) that ``node`` belongs to."""
    track = graph.track_ids()[graph.index_of(node)[0]]
    members = graph.ids[graph.track_ids() == track]
    return approve(graph, members)


# ---------------------------------------------------------------------------- history


class History:
    """One undo/redo stack per graph; every edit in the app goes through :meth:`execute`."""

    #: emitted with (command, how) after a command was applied; how is "do", "undo" or "redo"
    executed = Signal(object, str)

    def __init__(self, graph: TrackGraph, max_length: int = 1000):
        self.graph = graph
        self.max_length = max_length
        self._undo: list[Command] = []
        self._redo: list[Command] = []

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def done(self) -> list[Command]:
        """The commands currently applied, oldest first."""
        return list(self._undo)

    @property
    def last_done(self) -> Command | None:
        """The newest command still applied (None when none is): it identifies the tracks of
        now, so a result computed from them applies only while it is unchanged."""
        return self._undo[-1] if self._undo else None

    @property
    def undone(self) -> list[Command]:
        """The commands undone and not yet redone, the next to redo last."""
        return list(self._redo)

    def execute(self, command: Command) -> Command:
        command.apply(self.graph)
        self._undo.append(command)
        del self._undo[: -self.max_length]
        self._redo.clear()
        self.executed.emit(command, "do")
        return command

    def do(
        self,
        action: Callable[Concatenate[TrackGraph, P], Command],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Command:
        """Build a user action against the current graph and execute it."""
        return self.execute(action(self.graph, *args, **kwargs))

    def undo(self) -> Command | None:
        if not self._undo:
            return None
        command = self._undo.pop()
        command.revert(self.graph)
        self._redo.append(command)
        self.executed.emit(command, "undo")
        return command

    def redo(self) -> Command | None:
        if not self._redo:
            return None
        command = self._redo.pop()
        command.apply(self.graph)
        self._undo.append(command)
        self.executed.emit(command, "redo")
        return command

    def clear(self) -> None:
        self._undo.clear()
        self._redo.clear()
