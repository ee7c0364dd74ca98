"""A lineage: cell positions and radii per frame with parent links, as plain numpy columns.

Positions are voxel coordinates of the rendered series (z in slices, y and x in pixels); the
radius is in xy pixels. It converts to a :class:`~napari_cellect.track.graph.TrackGraph` and our
CSV, the ground truth ``cellect evaluate`` reads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from napari_cellect.track.graph import TrackGraph


@dataclass(frozen=True)
class Lineage:
    """One row per cell per frame; ``parent`` is the id of the cell in an earlier frame, or -1."""

    id: np.ndarray
    t: np.ndarray
    z: np.ndarray
    y: np.ndarray
    x: np.ndarray
    radius: np.ndarray
    parent: np.ndarray

    def __len__(self) -> int:
        return len(self.id)

    @property
    def n_frames(self) -> int:
        return int(self.t.max()) + 1 if len(self) else 0

    @property
    def positions(self) -> np.ndarray:
        """(N, 3) z, y, x."""
        return np.stack([self.z, self.y, self.x], axis=1)

    def take(self, rows: np.ndarray) -> Lineage:
        """The rows selected (a mask or indices); a parent that is dropped becomes -1."""
        kept = replace(self, **{f: getattr(self, f)[rows] for f in _FIELDS})
        parent = np.where(np.isin(kept.parent, kept.id), kept.parent, -1)
        return replace(kept, parent=parent)

    def n_children(self) -> np.ndarray:
        """Number of children of each row."""
        order = np.argsort(self.id)
        counts = np.bincount(
            np.searchsorted(self.id[order], self.parent[self.parent >= 0]), minlength=len(self)
        )
        out = np.empty(len(self), dtype=np.int64)
        out[order] = counts
        return out

    def n_divisions(self) -> int:
        return int(np.count_nonzero(self.n_children() >= 2))

    def to_graph(self) -> TrackGraph:
        return TrackGraph.from_arrays(
            id=self.id,
            t=self.t,
            z=self.z,
            y=self.y,
            x=self.x,
            parent_id=self.parent,
            radius=self.radius.astype(np.float32),
        )

    def write_csv(self, path: str | Path) -> None:
        """Our CSV (``id,t,z,y,x,parent_id,radius``), readable by ``cellect evaluate``."""
        header = "id,t,z,y,x,parent_id,radius"
        rows = np.column_stack([self.id, self.t, self.z, self.y, self.x, self.parent, self.radius])
        np.savetxt(
            path,
            rows,
            delimiter=",",
            header=header,
            comments="",
            fmt=["%d", "%d", "%.3f", "%.3f", "%.3f", "%d", "%.3f"],
        )

    @classmethod
    def read_csv(cls, path: str | Path) -> Lineage:
        data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        ints = data[:, [0, 1, 5]].astype(np.int64)
        return cls(
            id=ints[:, 0],
            t=ints[:, 1],
            z=data[:, 2],
            y=data[:, 3],
            x=data[:, 4],
            radius=data[:, 6],
            parent=ints[:, 2],
        )

    @classmethod
    def from_graph(cls, graph: TrackGraph) -> Lineage:
        radius = graph["radius"] if "radius" in graph.columns else np.full(len(graph), np.nan)
        return cls(
            id=graph["id"].astype(np.int64),
            t=graph["t"].astype(np.int64),
            z=graph["z"].astype(float),
            y=graph["y"].astype(float),
            x=graph["x"].astype(float),
            radius=np.asarray(radius, dtype=float),
            parent=graph["parent_id"].astype(np.int64),
        )


_FIELDS = ("id", "t", "z", "y", "x", "radius", "parent")


def track_ids(lineage: Lineage) -> np.ndarray:
    """The branch each row belongs to: a row continues its parent's branch when it is the
    parent's only child; otherwise (a root or a daughter) it starts a branch of its own id."""
    order = np.lexsort((lineage.id, lineage.t))
    index = {int(i): k for k, i in enumerate(lineage.id)}
    children = lineage.n_children()
    branch = np.empty(len(lineage), dtype=np.int64)
    for k in order:
        p = int(lineage.parent[k])
        if p >= 0 and children[index[p]] == 1:
            branch[k] = branch[index[p]]
        else:
            branch[k] = lineage.id[k]
    return branch
