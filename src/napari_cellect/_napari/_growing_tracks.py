"""The tracks Track cells has linked so far, frame pair by frame pair, as a growing graph.

The pipeline links each finished frame to the one before
(:class:`~napari_cellect.track.link.FrameByFrameLinker`); this keeps those cells and links and
gives the graph they make, for a preview Tracks layer that the run's result replaces.
"""

from __future__ import annotations

import numpy as np

from napari_cellect.track.graph import TrackGraph


class GrowingTracks:
    """Cells and provisional links of the frames finished so far; node ids 0, 1, ... in
    arrival order."""

    def __init__(self) -> None:
        self._t: list[np.ndarray] = []
        self._positions: list[np.ndarray] = []
        self._parent: list[np.ndarray] = []
        self._n = 0
        self._previous_start = 0

    def add(self, t: int, positions: np.ndarray, parent_index: np.ndarray) -> None:
        """One more frame: its (N, 3) centres and each one's parent as an index into the frame
        added before (-1: none)."""
        parent_index = np.asarray(parent_index, np.int64)
        self._t.append(np.full(len(positions), t, np.int64))
        self._positions.append(np.asarray(positions, np.float64).reshape(-1, 3))
        self._parent.append(np.where(parent_index >= 0, self._previous_start + parent_index, -1))
        self._previous_start = self._n
        self._n += len(positions)

    @property
    def n_links(self) -> int:
        return int(sum(np.count_nonzero(p >= 0) for p in self._parent))

    def graph(self) -> TrackGraph:
        positions = np.concatenate(self._positions) if self._positions else np.zeros((0, 3))
        return TrackGraph.from_arrays(
            validate=False,
            id=np.arange(self._n, dtype=np.int64),
            t=np.concatenate(self._t) if self._t else np.zeros(0, np.int64),
            z=positions[:, 0],
            y=positions[:, 1],
            x=positions[:, 2],
            parent_id=np.concatenate(self._parent) if self._parent else np.zeros(0, np.int64),
        )
