"""Refresh the Points, Tracks and Labels layers of a session from its graph.

The graph is the one source of truth; this class only reads it. Refreshing is driven by
:class:`~._changes.ChangeSet` objects and does only what the change needs:

- values only (approve, division score ...): update those feature columns (and the border
  colours for ``approved``) in place; the Tracks layer is left alone;
- links: recompute the (cached, vectorised) track ids, update the ``track_id`` feature and the
  face colours, relabel the voxels of nodes whose track id changed, rebuild the Tracks layer;
- nodes added, removed or moved: also reset the Points coordinates (one vectorised assignment).

The Tracks layer cannot be edited in place (napari rebuilds its vertex arrays on every
``data`` assignment), so it is rebuilt from ``TrackGraph.to_napari_tracks`` -- vectorised, and
skipped when only values changed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from napari_cellect._napari._changes import ChangeSet
from napari_cellect._napari._colors import track_colors
from napari_cellect._napari._labels_sync import LabelsSync
from napari_cellect._napari._layer_data import (
    POINT_FEATURES,
    PointsStyle,
    border_colors,
    napari_tracks,
    point_sizes,
    points_features,
)

if TYPE_CHECKING:
    from napari.layers import Labels, Points, Tracks

    from napari_cellect._napari._session import TrackingSession

logger = logging.getLogger(__name__)


class LayerSync:
    """Keeps one session's layers equal to its graph."""

    def __init__(
        self,
        session: TrackingSession,
        points: Points,
        tracks: Tracks | None = None,
        labels: Labels | None = None,
        style: PointsStyle | None = None,
        highlighted: np.ndarray | None = None,
    ):
        self.session = session
        self.points = points
        self.tracks = tracks
        self.labels = labels
        self.style = style or PointsStyle()
        self._labels_sync = LabelsSync(labels.data) if labels is not None else None
        self._hidden_for_empty = False
        #: node ids drawn with the highlight border (see :meth:`set_highlight`)
        self.highlighted = np.zeros(0, np.int64) if highlighted is None else np.asarray(
            highlighted, np.int64)
        self._updating = 0
        self._kept: np.ndarray | None = None
        # mirror of what the layers show, to find what an edit changed
        self._ids = np.zeros(0, np.int64)
        self._track_ids = np.zeros(0, np.int64)
        self._t = np.zeros(0, np.int64)
        self._positions = np.zeros((0, 3))
        self._remember()

    # ------------------------------------------------------------------ public
    @contextmanager
    def updating(self) -> Iterator[None]:
        """Marks layer changes made by this class (listeners ignore them)."""
        self._updating += 1
        try:
            yield
        finally:
            self._updating -= 1

    @property
    def is_updating(self) -> bool:
        return self._updating > 0

    def refresh(self, changes: ChangeSet) -> None:
        """Bring the layers up to date after ``changes``."""
        with self.updating():
            self._refresh(changes)

    def _refresh(self, changes: ChangeSet) -> None:
        graph = self.session.graph
        self._kept = None
        if changes.rows_changed:
            self._refresh_rows()
            if self._kept is not None:  # only removals: the other rows kept their styles
                if "approved" in changes.columns:
                    self.points.border_color = self._borders()
                if "radius" in changes.columns:
                    self.points.size = point_sizes(graph, self.style)
        else:
            if changes.positions_changed:
                self._set_points_data(self.session.geometry.coords(graph))
            for column in changes.columns & set(POINT_FEATURES):
                self._set_feature(column)
            if "radius" in changes.columns:
                self.points.size = point_sizes(graph, self.style)
        if changes.structure_changed or "track_id" in changes.columns:
            self._refresh_track_ids(changes)
        if changes.structure_changed or changes.positions_changed:
            self._refresh_tracks_layer()
        self._remember()

    def labels_edited(self) -> None:
        """The Labels data was changed outside this class (painting): re-scan it when needed."""
        if self._labels_sync is not None and not self.is_updating:
            if self.labels is not None and self.labels.data is not self._labels_sync.labels:
                self._labels_sync = LabelsSync(self.labels.data)
            self._labels_sync.forget_boxes()

    def full_refresh(self) -> None:
        self.refresh(ChangeSet.everything())

    def set_highlight(self, ids: np.ndarray) -> None:
        """Draw the centres of ``ids`` with the highlight border (ids not in the graph are kept
        for when they come back, for example after a redo)."""
        self.highlighted = np.unique(np.asarray(ids, np.int64))
        if len(self.session.graph):
            with self.updating():
                self.points.border_color = self._borders()

    def _borders(self) -> np.ndarray:
        graph = self.session.graph
        highlighted = np.isin(graph.ids, self.highlighted) if len(self.highlighted) else None
        return border_colors(graph["approved"], self.style, highlighted)

    # ------------------------------------------------------------------ points
    def _set_points_data(self, coords: np.ndarray) -> None:
        self.points.data = coords

    def _set_feature(self, column: str) -> None:
        graph = self.session.graph
        values = graph.track_ids() if column == "track_id" else np.asarray(graph[column])
        self.points.features[column] = values
        if column == "approved":
            self.points.border_color = self._borders()

    def _refresh_rows(self) -> None:
        """Nodes were added or removed.

        Sets ``_kept`` to the mask of old rows still shown when nodes were only removed (the
        layer kept the styles of the other rows), else to None (every style must be reset).
        """
        self._kept = None
        if not self._refresh_rows_incremental():
            self._refresh_rows_full()

    def _refresh_rows_incremental(self) -> bool:
        """Mirror a removal of some rows and an append of others, as the graph does them.

        The graph deletes rows in place (order kept) and appends new rows at the end, so the
        layer can do the same with ``Points.remove``/``Points.add`` instead of resetting every
        per-point array. Returns False when the rows did not change that way.
        """
        graph = self.session.graph
        old, new = self._ids, graph.ids
        kept = np.isin(old, new)
        n_kept = int(kept.sum())
        if len(self.points.data) != len(old) or not np.array_equal(new[:n_kept], old[kept]):
            return False
        self.points.selected_data = set()
        if n_kept < len(old):
            # remove() drops exactly these rows from every per-point array (~10 ms at 50k)
            self.points.remove(np.flatnonzero(~kept).tolist())
        if len(new) > n_kept:
            # growing re-validates every point's symbol in napari (~40 ms at 50k); a data
            # assignment does it once, Points.add() twice
            self.points.data = self.session.geometry.coords(graph)
        else:
            self._kept = kept
        self.points.features = points_features(graph)
        return True

    def _refresh_rows_full(self) -> None:
        graph = self.session.graph
        self.points.selected_data = set()
        self.points.data = self.session.geometry.coords(graph)
        self.points.features = points_features(graph)

    def _style_all(self) -> None:
        """Sizes, borders and colours of every point (after rows changed)."""
        graph = self.session.graph
        if len(graph):
            self.points.size = point_sizes(graph, self.style)
            self.points.border_color = self._borders()
            self.points.face_color = track_colors(graph.track_ids())

    # ------------------------------------------------------------------ track ids
    def _refresh_track_ids(self, changes: ChangeSet) -> None:
        graph = self.session.graph
        track = graph.track_ids()
        if changes.rows_changed and self._kept is None:
            self._style_all()
        else:
            before = self._track_ids if self._kept is None else self._track_ids[self._kept]
            changed_rows = np.flatnonzero(track != before)
            if len(changed_rows):
                self.points.features["track_id"] = track
                face = np.asarray(self.points.face_color).copy()
                face[changed_rows] = track_colors(track[changed_rows])
                self.points.face_color = face
        self._refresh_labels()

    def _refresh_labels(self) -> None:
        """Relabel, erase and restore voxels by comparing the old and the new node -> track map."""
        if self._labels_sync is None or self.labels is None:
            return
        graph = self.session.graph
        ids, track = graph.ids, graph.track_ids()
        old_order = np.argsort(self._ids)
        old_sorted = self._ids[old_order]
        pos = np.searchsorted(old_sorted, ids)
        pos_c = np.minimum(pos, max(len(old_sorted) - 1, 0))
        existed = (pos < len(old_sorted)) & (old_sorted[pos_c] == ids) if len(old_sorted) else (
            np.zeros(len(ids), bool))
        previous = self._track_ids[old_order][pos_c] if len(old_sorted) else 0
        old_track = np.where(existed, previous, 0)
        touched: set[int] = set()
        gone = ~np.isin(self._ids, ids)
        if np.any(gone):
            touched |= self._labels_sync.erase(
                self._ids[gone], self._t[gone], self._track_ids[gone], self._positions[gone])
        moved = existed & (old_track != track)
        if np.any(moved):
            touched |= self._labels_sync.relabel(graph["t"][moved], old_track[moved], track[moved])
        if np.any(~existed):
            new = ~existed
            touched |= self._labels_sync.restore(
                ids[new], graph["t"][new], track[new], graph.positions(np.flatnonzero(new)))
        if self._labels_sync.labels is not self.labels.data:
            self.labels.data = self._labels_sync.labels
        elif touched:
            self.labels.refresh()

    # ------------------------------------------------------------------ tracks layer
    def _refresh_tracks_layer(self) -> None:
        if self.tracks is None:
            return
        graph = self.session.graph
        if len(graph) == 0:
            if self.tracks.visible:
                self._hidden_for_empty = True
                self.tracks.visible = False
            return
        data, graph_dict = napari_tracks(graph, self.session.geometry)
        set_tracks(self.tracks, data, graph_dict)
        if self._hidden_for_empty:
            self._hidden_for_empty = False
            self.tracks.visible = True

    # ------------------------------------------------------------------ mirror
    def _remember(self) -> None:
        graph = self.session.graph
        self._ids = graph.ids.copy()
        self._track_ids = graph.track_ids().copy()
        self._t = graph["t"].copy()
        self._positions = graph.positions()


def division_vertices(
    sorted_data: np.ndarray, graph_dict: dict[int, list[int]]
) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """What napari's ``TrackManager.build_graph`` computes, vectorised.

    ``sorted_data`` is the Tracks data sorted by track id then time. For each daughter -> mother
    entry, the pair (daughter's first vertex, mother's last vertex) and the connex flags
    (True, False). napari looks each track up in a sparse matrix, one Python call per division,
    which costs tens of milliseconds on large results.
    """
    if not graph_dict:
        return None, None
    daughters = np.fromiter(graph_dict.keys(), dtype=np.int64, count=len(graph_dict))
    mothers = np.fromiter(
        (m[0] for m in graph_dict.values()), dtype=np.int64, count=len(graph_dict)
    )
    track = sorted_data[:, 0]
    first = np.searchsorted(track, daughters, side="left")
    last = np.searchsorted(track, mothers, side="right") - 1
    coords = sorted_data[:, 1:]
    vertices = np.empty((2 * len(daughters), coords.shape[1]), dtype=coords.dtype)
    vertices[0::2] = coords[first]
    vertices[1::2] = coords[last]
    connex = np.tile(np.array([True, False]), len(daughters))
    return vertices, connex


def _validate_tracks_data(data: np.ndarray) -> np.ndarray:
    """napari's Tracks data check, vectorised."""
    if data.ndim != 2 or data.shape[1] not in (4, 5):
        raise ValueError("track vertices should be a (N, 4) or (N, 5) array")
    if not np.array_equal(np.floor(data[:, 0]), data[:, 0]):
        raise ValueError("track id must be an integer")
    if np.any(data[:, 1] < 0):
        raise ValueError("track timestamps must be >= 0")
    return data


def set_tracks(layer: Tracks, data: np.ndarray, graph_dict: dict[int, list[int]]) -> None:
    """``layer.data = data; layer.graph = graph_dict``, with the division graph built vectorised.

    Uses the layer's track manager directly (napari has no public way to set data and graph
    together); when its attributes are not as expected (another napari version) it falls back to
    the public setters.
    """
    manager = getattr(layer, "_manager", None)
    if manager is not None and callable(getattr(manager, "_validate_track_data", None)):
        # napari checks t >= 0 with a Python loop over every vertex; ours is checked already
        manager._validate_track_data = _validate_tracks_data
    layer.data = data  # rebuilds the tracks and resets the graph to {}
    needed = ("_graph", "_graph_vertices", "_graph_connex", "data")
    if manager is None or not all(hasattr(manager, a) for a in needed) or any(
        len(mothers) != 1 for mothers in graph_dict.values()
    ):
        layer.graph = graph_dict
        return
    vertices, connex = division_vertices(np.asarray(manager.data), graph_dict)
    manager._graph = {int(k): [int(v[0])] for k, v in graph_dict.items()}
    manager._graph_vertices = vertices
    manager._graph_connex = connex
    layer.events.rebuild_graph()
