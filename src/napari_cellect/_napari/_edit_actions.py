"""The editor's user actions: what each key (and each editor button) does.

:class:`EditActions` is a part of :class:`~._controller.CellectController` (its ``edits``):
every action reads the controller's selection, builds a user action from
:mod:`napari_cellect.track.edits` against the active graph and runs it through the controller
(so it lands in the session's history and journal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_cellect.errors import CellectError, ContradictoryCorrections
from napari_cellect.track import edits
from napari_cellect.track.edits import Command, Compound, SetValues
from napari_cellect.track.graph import NO_PARENT, TrackGraph

if TYPE_CHECKING:
    from napari_cellect._napari._controller import CellectController


class EditActions:
    """Selection-driven edit actions (see :data:`~._keybindings.KEYBINDINGS`) of the
    controller that owns them."""

    def __init__(self, controller: CellectController):
        self.controller = controller

    def batch(
        self, description: str, builders: Sequence[Callable[[TrackGraph], Command]]
    ) -> Compound:
        """One undoable command from several actions, each built on the graph the previous left.

        The actions are built against a scratch copy of the graph, so nothing changes until the
        returned command is executed.
        """
        graph = self.controller.graph
        assert graph is not None
        scratch = graph.copy()
        steps: list[Command] = []
        corrections: list[dict[str, Any]] = []
        for build in builders:
            command = build(scratch)
            command.apply(scratch)
            steps.append(command)
            corrections += getattr(command, "corrections", [])
        return Compound(description, steps, corrections)

    def _need(self, n: int, what: str) -> tuple[int, ...] | None:
        if self.controller.require() is None:
            return None
        if len(self.controller.selection) < n:
            selected = len(self.controller.selection)
            self.controller.report(
                "error",
                f"{what}: select {n} node{'s' if n > 1 else ''} first ({selected} selected)",
            )
            return None
        return self.controller.selection

    # ================================================================== user actions (keys)
    def link_selected(self) -> None:
        """Link the last two selected nodes."""
        sel = self._need(2, "link")
        if sel is not None:
            self.controller.do(edits.link, sel[-2], sel[-1])

    def break_selected(self) -> None:
        """Break the link into the selected node (into the later of two)."""
        sel = self._need(1, "break link")
        if sel is None:
            return
        graph = self.controller.graph
        assert graph is not None
        if len(sel) >= 2:
            a, b = sel[-2], sel[-1]
            child = b if graph.node(b)["t"] > graph.node(a)["t"] else a
        else:
            child = sel[-1]
        self.controller.do(edits.break_link, child)

    def delete_selected(self) -> None:
        sel = self._need(1, "delete")
        if sel is None:
            return
        self.delete(list(sel))

    def delete(self, ids: Sequence[int]) -> None:
        if len(ids) == 1:
            self.controller.do(edits.delete_node, ids[0])
            return
        builders = [lambda g, n=int(n): edits.delete_node(g, n) for n in ids]
        self.try_execute(lambda: self.batch(f"delete {len(ids)} nodes", builders))

    def try_execute(self, build: Callable[[], Command]) -> None:
        if self.controller.require() is None:
            return
        try:
            command = build()
        except CellectError as error:
            self.controller.report("error", str(error))
            return
        self.controller.execute(command)

    def add_at_cursor(self) -> None:
        """Add a node at the mouse position in the current frame (only while the pointer is on
        the canvas: elsewhere napari's cursor position is stale)."""
        bound = self.controller.require()
        if bound is None or bound.points is None:
            return
        if not self.controller.viewer.mouse_over_canvas:  # the cursor stays where it last left
            self.controller.report(
                "error",
                "A adds a node where the pointer is on the image: "
                "move the pointer over the canvas and press A again",
            )
            return
        self.add_at_world(self.controller.viewer.cursor.position)

    def add_at_world(self, world_position: Sequence[float]) -> None:
        """Add a node at a world position (all viewer dimensions, time first)."""
        bound = self.controller.require()
        if bound is None or bound.points is None:
            return
        points = bound.points
        world = np.asarray(world_position, dtype=np.float64)[-points.ndim :]
        coords = np.asarray(points.world_to_data(world), dtype=np.float64)
        t = int(round(coords[0]))
        zyx = bound.session.geometry.position_of(coords)
        graph = bound.session.graph
        parent = self._parent_for_new_node(graph, t)
        radius = np.nanmedian(graph["radius"]) if np.any(np.isfinite(graph["radius"])) else np.nan
        command = self.controller.do(edits.add_node, t, zyx, radius=float(radius), parent=parent)
        if command is not None:
            new_id = int(command.steps[0].columns["id"][0])  # type: ignore[attr-defined]
            self.controller.select([new_id])

    def _parent_for_new_node(self, graph: TrackGraph, t: int) -> int | None:
        if len(self.controller.selection) != 1:
            return None
        node = self.controller.selection[0]
        if graph.node(node)["t"] < t and len(graph.children_of(node)) < 2:
            return node
        return None

    def toggle_division(self) -> None:
        sel = self._need(1, "division")
        if sel is None:
            return
        graph = self.controller.graph
        assert graph is not None
        node = sel[-1]
        row = graph.index_of(node)[0]
        divides = graph.n_children()[row] == 2 or graph["division_score"][row] >= 0.5
        if self.controller.do(edits.mark_division, node, not divides) is None:
            return
        children = graph.children_of(node)
        if not divides and len(children) == 1:
            self.controller.report(
                "warning",
                f"node {node} is marked dividing but has one "
                f"child ({int(children[0])}): link its other "
                "daughter (select both, L). Approving the track as "
                "it is would contradict the mark; Ctrl+Z undoes it",
            )
        else:
            self._warn_contradictions()

    def _warn_contradictions(self) -> None:
        """Say at once when the edit just made contradicts an earlier correction (fine-tuning
        would refuse them later)."""
        session = self.controller.session
        if session is None:
            return
        try:
            session.corrections()
        except ContradictoryCorrections as error:
            self.controller.report(
                "warning",
                f"this edit contradicts an earlier one: {error.conflicts[0]} (Ctrl+Z undoes it)",
            )
        except CellectError:
            pass  # other problems are reported where the corrections are used

    def swap_selected(self) -> None:
        sel = self._need(2, "swap parents")
        if sel is not None:
            self.controller.do(edits.swap_parents, sel[-2], sel[-1])

    def approve_selected(self) -> None:
        sel = self._need(1, "approve")
        if sel is not None and self.controller.do(edits.approve, list(sel)) is not None:
            self._warn_contradictions()

    def approve_track_selected(self) -> None:
        sel = self._need(1, "approve track")
        if sel is not None and self.controller.do(edits.approve_track, sel[-1]) is not None:
            self._warn_contradictions()

    def move_nodes(self, ids: Sequence[int], positions: np.ndarray) -> None:
        """Move nodes to new (z, y, x) positions (one undoable edit)."""
        ids = [int(i) for i in ids]
        positions = np.asarray(positions, dtype=np.float64).reshape(len(ids), 3)
        steps: list[Command] = [
            SetValues(axis, ids, positions[:, k].tolist()) for k, axis in enumerate("zyx")
        ]
        self.try_execute(lambda: Compound(f"move {len(ids)} node(s)", steps))

    # ================================================================== navigation
    def next_node(self) -> None:
        self._step(+1)

    def previous_node(self) -> None:
        self._step(-1)

    def _step(self, direction: int) -> None:
        sel = self._need(1, "next/previous node")
        if sel is None:
            return
        graph = self.controller.graph
        assert graph is not None
        node = sel[-1]
        if direction > 0:
            children = graph.children_of(node)
            if len(children) == 0:
                self.controller.report("info", f"node {node} is the last of its track")
                return
            target = int(children[0])
        else:
            target = graph.parent_of(node)
            if target == NO_PARENT:
                self.controller.report("info", f"node {node} is the first of its track")
                return
        self.controller.select([target], center=True)
