"""How a session's graph coordinates map onto image axes (voxel size, 2D or 3D)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_cellect.track.graph import TrackGraph


@dataclass(frozen=True)
class Geometry:
    """How graph coordinates map onto layer axes.

    ``spatial_ndim`` is 3 for (T, Z, Y, X) data and 2 for (T, Y, X) data, whose graph has z = 0.
    ``scale`` is the voxel size (z, y, x), the same as the image layer's.
    """

    spatial_ndim: int = 3
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def layer_scale(self) -> tuple[float, ...]:
        return (1.0, *self.scale[3 - self.spatial_ndim :])

    @property
    def z_ratio(self) -> float:
        return float(self.scale[0] / self.scale[1]) if self.scale[1] else 1.0

    def coords(self, graph: TrackGraph) -> np.ndarray:
        """(N, 1 + spatial_ndim) layer coordinates ``t, (z), y, x`` (graph row order)."""
        cols = ("t", "z", "y", "x") if self.spatial_ndim == 3 else ("t", "y", "x")
        if len(graph) == 0:
            return np.zeros((0, len(cols)), dtype=np.float64)
        return np.column_stack([graph[c] for c in cols]).astype(np.float64)

    def position_of(self, coords: np.ndarray) -> tuple[float, float, float]:
        """Graph (z, y, x) of a layer point ``(t, (z), y, x)`` without its time."""
        spatial = [float(v) for v in np.asarray(coords)[1:]]
        if self.spatial_ndim == 2:
            y, x = spatial
            return 0.0, y, x
        z, y, x = spatial
        return z, y, x

    def to_layer_point(self, t: int, zyx: tuple[float, float, float]) -> np.ndarray:
        return np.asarray([t, *zyx[3 - self.spatial_ndim :]], dtype=np.float64)
