"""Refresh the Points, Tracks and Labels layers of a session from its graph.

The graph is the one source of truth; this class only reads it, and after every refresh the
layers are exactly what :mod:`._layer_data` would build from the graph (row ``i`` of the Points
layer is row ``i`` of the graph). Refreshing is driven by :class:`~._changes.ChangeSet` objects
and does only what the change needs:

- values only (approve, division score ...): update those feature columns (and the border
  colours for ``approved``) in place; the Tracks layer is left alone;
- links: recompute the (cached, vectorised) track ids, update the ``track_id`` feature and the
  face colours of the nodes whose track id changed, relabel their voxels, replace the Tracks
  layer's data;
- nodes added or removed: the graph deletes rows in place and appends new ones, and the Points
  layer does the same (``Points.remove``/``Points.add``) with napari's per-array refreshes
  collapsed into one; then features and styles are set from the graph;
- nodes moved: reset the Points coordinates (one vectorised assignment).

The Tracks layer cannot be edited in place, so it is replaced from
``TrackGraph.to_napari_tracks`` in one step (:mod:`._tracks_update`). The layer-list thumbnails
of both layers are redrawn shortly after an edit rather than during it (:mod:`._thumbnails`).
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
from napari_cellect._napari._thumbnails import ThumbnailUpdates
from napari_cellect._napari._tracks_update import set_tracks

if TYPE_CHECKING:
    from napari.layers import Labels, Layer, Points, Tracks

    from napari_cellect.session import TrackingSession

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
        thumbnails: ThumbnailUpdates | None = None,
    ):
        self.session = session
        self.points = points
        self.tracks = tracks
        self.labels = labels
        self.style = style or PointsStyle()
        #: redraws the layer-list icons after edits instead of during them
        self.thumbnails = thumbnails or ThumbnailUpdates()
        self._labels_sync = LabelsSync(labels.data) if labels is not None else None
        self._hidden_for_empty = False
        #: node ids drawn with the highlight border (see :meth:`set_highlight`)
        self.highlighted = (
            np.zeros(0, np.int64) if highlighted is None else np.asarray(highlighted, np.int64)
        )
        self._updating = 0
        #: every per-point style was set from the graph during the current refresh
        self._restyled = False
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
        self._restyled = False
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
            self._refresh_track_ids()
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
        """Nodes were added or removed: rows, features and every per-point style.

        napari refreshes the layer's slice after each per-point array it grows or sets (a few
        ms each at 50,000 points); inside :func:`refreshes_collapsed` those refreshes are held
        back and done once. The colours are set after that refresh: their events make the
        canvas read the sliced view, which must be current by then.
        """
        graph = self.session.graph
        points = self.points
        with refreshes_collapsed(points):
            points.selected_data = set()  # row indices are about to move
            if not self._mirror_rows():
                points.data = self.session.geometry.coords(graph)
            points.selected_data = set()  # Points.add selects what it added
            points.features = points_features(graph)
            if len(graph):
                points.size = point_sizes(graph, self.style)
        points.refresh(thumbnail=False)
        if not points.visible:  # refresh() skips a hidden layer, but the colour events below
            points.set_view_slice()  # make the canvas read its slice: it must fit the new rows
        self.thumbnails.request(points)
        if len(graph):
            points.border_color = self._borders()
            points.face_color = track_colors(graph.track_ids())
        self._restyled = True

    def _mirror_rows(self) -> bool:
        """Remove and append rows as the graph did; False when it did not change that way.

        The graph deletes rows in place (order kept) and appends new rows at the end, so the
        layer can do the same with ``Points.remove``/``Points.add`` and keep the other rows.
        (Growing re-validates every point's symbol in napari, ~10 ms at 50,000 points, by any
        public path.) The layer no longer mirrors the old rows when napari's own point tools
        changed it first; then the caller resets the data.
        """
        graph = self.session.graph
        old, new = self._ids, graph.ids
        kept = np.isin(old, new)
        n_kept = int(kept.sum())
        if len(self.points.data) != len(old) or not np.array_equal(new[:n_kept], old[kept]):
            return False
        if n_kept < len(old):
            self.points.remove(np.flatnonzero(~kept).tolist())
        if len(new) > n_kept:
            rows = np.arange(n_kept, len(new))
            self.points.add(self.session.geometry.coords(graph)[rows])
        return True

    # ------------------------------------------------------------------ track ids
    def _refresh_track_ids(self) -> None:
        """Face colours and the ``track_id`` feature of nodes whose track id changed, and the
        labels."""
        if not self._restyled:  # the rows did not change: compare row by row
            track = self.session.graph.track_ids()
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
        existed = (
            (pos < len(old_sorted)) & (old_sorted[pos_c] == ids)
            if len(old_sorted)
            else (np.zeros(len(ids), bool))
        )
        previous = self._track_ids[old_order][pos_c] if len(old_sorted) else 0
        old_track = np.where(existed, previous, 0)
        touched: set[int] = set()
        gone = ~np.isin(self._ids, ids)
        if np.any(gone):
            touched |= self._labels_sync.erase(
                self._ids[gone], self._t[gone], self._track_ids[gone], self._positions[gone]
            )
        moved = existed & (old_track != track)
        if np.any(moved):
            touched |= self._labels_sync.relabel(graph["t"][moved], old_track[moved], track[moved])
        if np.any(~existed):
            new = ~existed
            touched |= self._labels_sync.restore(
                ids[new], graph["t"][new], track[new], graph.positions(np.flatnonzero(new))
            )
        if self._labels_sync.labels is not self.labels.data:
            self.labels.data = self._labels_sync.labels
        elif touched:
            self.labels.refresh(thumbnail=False)
            self.thumbnails.request(self.labels)

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
        set_tracks(self.tracks, data, graph_dict, thumbnail=False)
        self.thumbnails.request(self.tracks)
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


@contextmanager
def refreshes_collapsed(layer: Layer) -> Iterator[None]:
    """Hold back the refreshes napari makes after each change to a layer's arrays (the caller
    refreshes once afterwards).

    napari's own ``Layer._block_refresh`` (which it uses the same way while building a Points
    layer); where a napari version lacks it, nothing is held back.
    """
    block = getattr(layer, "_block_refresh", None)
    if block is None:
        yield
        return
    with block():
        yield
