"""Coalesce a graph's ``changed`` signals into one :class:`ChangeSet` per user action.

A user action is a ``Compound`` of primitives, and each primitive emits ``graph.changed``. Views
that redraw on every primitive would rebuild the Tracks layer three times for one delete. The
:class:`ChangeCollector` is the single subscriber of ``graph.changed`` for the views: outside a
:meth:`~ChangeCollector.batch` it forwards each change at once; inside, it merges them and emits
one :class:`ChangeSet` when the outermost batch ends. The controller wraps every history call in
a batch, so one key press is one refresh.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from psygnal import Signal

from napari_cellect.track.graph import GraphChange, TrackGraph

#: columns that move nodes in space or time
POSITION_COLUMNS = frozenset({"t", "z", "y", "x"})


@dataclass
class ChangeSet:
    """What changed in the graph since the last refresh."""

    kinds: set[str] = field(default_factory=set)
    columns: set[str] = field(default_factory=set)

    def add(self, change: GraphChange) -> None:
        self.kinds.add(change.kind)
        if change.column is not None:
            self.columns.add(change.column)

    @classmethod
    def everything(cls) -> ChangeSet:
        """A change set that asks for a full refresh."""
        return cls(kinds={"reset"})

    @property
    def rows_changed(self) -> bool:
        """Nodes were added or removed (row indices moved)."""
        return bool(self.kinds & {"add", "remove", "reset"})

    @property
    def positions_changed(self) -> bool:
        return self.rows_changed or bool(self.columns & POSITION_COLUMNS)

    @property
    def structure_changed(self) -> bool:
        """Edges, nodes or times changed, so track ids and the lineage may differ."""
        return self.rows_changed or "link" in self.kinds or "t" in self.columns

    def __bool__(self) -> bool:
        return bool(self.kinds)


class ChangeCollector:
    """Subscribes to ``graph.changed`` and re-emits merged :class:`ChangeSet` objects."""

    #: emitted with a ChangeSet after a change (or at the end of a batch)
    changed = Signal(object)

    def __init__(self, graph: TrackGraph):
        self.graph = graph
        self._depth = 0
        self._pending = ChangeSet()
        graph.changed.connect(self._on_change)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Merge every change made inside the block into one emission."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._flush()

    def _on_change(self, change: GraphChange) -> None:
        self._pending.add(change)
        if self._depth == 0:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, ChangeSet()
        self.changed.emit(pending)

    def close(self) -> None:
        """Stop listening to the graph."""
        self.graph.changed.disconnect(self._on_change)
