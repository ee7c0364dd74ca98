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
    ):
        self.session = session
        self.points = points
        self.tracks = tracks
        self.labels = labels
        self.style = style or PointsStyle()
        self._labels_sync = LabelsSync(labels.data) if labels is not None else None
        self._hidden_for_empty = False
        self._updating = 0
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
        if changes.rows_changed:
            self._refresh_rows()
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

    def full_refresh(self) -> None:
        self.refresh(ChangeSet.everything())

    # ------------------------------------------------------------------ points
    def _set_points_data(self, coords: np.ndarray) -> None:
        self.points.data = coords

    def _set_feature(self, column: str) -> None:
        graph = self.session.graph
        values = graph.track_ids() if column == "track_id" else np.asarray(graph[column])
        self.points.features[column] = values
        if column == "approved":
            self.points.border_color = border_colors(values, self.style)

    def _refresh_rows(self) -> None:
        """Nodes were added or removed: reset coordinates, features and colours."""
        graph = self.session.graph
        self.points.selected_data = set()
        self.points.data = self.session.geometry.coords(graph)
        self.points.features = points_features(graph)
        if len(graph):
            self.points.size = point_sizes(graph, self.style)
            self.points.border_color = border_colors(graph["approved"], self.style)
            self.points.face_color = track_colors(graph.track_ids())

    # ------------------------------------------------------------------ track ids
    def _refresh_track_ids(self, changes: ChangeSet) -> None:
        graph = self.session.graph
        track = graph.track_ids()
        if not changes.rows_changed and len(track) == len(self._track_ids):
            changed_rows = np.flatnonzero(track != self._track_ids)
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
        old_track = np.where(existed, self._track_ids[old_order][pos_c] if len(old_sorted) else 0, 0)
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
        self.tracks.data = data
        self.tracks.graph = graph_dict
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
