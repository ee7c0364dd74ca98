"""Arrays and keyword arguments for the napari layers that show a TrackGraph.

Pure functions of the graph (vectorised, no Qt), used both to build layers (reader, sample,
tracking widget) and to refresh them after an edit (:mod:`._layer_sync`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from napari_cellect._napari._colors import labels_colormap, track_colors, tracks_colormap
from napari_cellect.session.geometry import Geometry
from napari_cellect.track.graph import TrackGraph

if TYPE_CHECKING:
    from napari_cellect.session import TrackingSession

LayerData = tuple[Any, dict[str, Any], str]

#: features of the centres Points layer, in table order
POINT_FEATURES = (
    "id",
    "track_id",
    "parent_id",
    "score",
    "radius",
    "division_score",
    "link_score",
    "approved",
)

#: keys of the layer metadata that tie a layer to its tracking session
SESSION_KEY = "cellect_session"
ROLE_KEY = "cellect_role"


@dataclass(frozen=True)
class PointsStyle:
    """How centres are drawn."""

    #: point diameter (voxels) for nodes whose radius is unknown
    default_diameter: float = 6.0
    #: smallest diameter drawn, so tiny cells stay clickable
    min_diameter: float = 3.0
    #: border width as a fraction of the diameter
    border_width: float = 0.18
    #: border of nodes whose incoming link a person approved
    approved_border: tuple[float, float, float, float] = (0.2, 1.0, 0.3, 1.0)
    #: border of the other nodes
    unapproved_border: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 0.6)
    #: border of highlighted nodes (links a re-link changed, to review), over the two above
    highlight_border: tuple[float, float, float, float] = (1.0, 0.2, 1.0, 1.0)


@dataclass(frozen=True)
class TracksStyle:
    """How track lines are drawn."""

    tail_width: float = 2.0
    tail_length: int = 30
    head_length: int = 0


def points_features(graph: TrackGraph) -> pd.DataFrame:
    """The feature table of the centres layer (one row per node, graph row order)."""
    return pd.DataFrame({name: np.asarray(graph[name]) for name in POINT_FEATURES})


def point_sizes(graph: TrackGraph, style: PointsStyle) -> np.ndarray:
    diameter = 2.0 * np.asarray(graph["radius"], dtype=np.float64)
    diameter = np.where(np.isfinite(diameter), diameter, style.default_diameter)
    return np.maximum(diameter, style.min_diameter)


def border_colors(
    approved: np.ndarray, style: PointsStyle, highlighted: np.ndarray | None = None
) -> np.ndarray:
    """Border colour per node: approved or not, and ``highlighted`` (a boolean mask) on top."""
    out = np.empty((len(approved), 4), dtype=np.float32)
    out[:] = style.unapproved_border
    out[np.asarray(approved, dtype=bool)] = style.approved_border
    if highlighted is not None:
        out[np.asarray(highlighted, dtype=bool)] = style.highlight_border
    return out


def napari_tracks(graph: TrackGraph, geometry: Geometry) -> tuple[np.ndarray, dict[int, list[int]]]:
    """``(data, graph_dict)`` for a Tracks layer (the z column dropped for 2D data)."""
    data, graph_dict = graph.to_napari_tracks()
    if geometry.spatial_ndim == 2:
        data = np.delete(data, 2, axis=1)
    return data, graph_dict


def points_layer_data(
    graph: TrackGraph,
    geometry: Geometry,
    name: str,
    metadata: dict[str, Any],
    style: PointsStyle | None = None,
) -> tuple[np.ndarray, dict[str, Any], str]:
    """A napari LayerData tuple for the centres."""
    style = style or PointsStyle()
    kwargs: dict[str, Any] = {
        "name": f"{name} centres",
        "scale": geometry.layer_scale,
        "features": points_features(graph),
        "face_color": track_colors(graph.track_ids()) if len(graph) else "white",
        "border_color": border_colors(graph["approved"], style) if len(graph) else "white",
        "border_width": style.border_width,
        "border_width_is_relative": True,
        "size": point_sizes(graph, style) if len(graph) else style.default_diameter,
        "metadata": {**metadata, ROLE_KEY: "centres"},
    }
    return geometry.coords(graph), kwargs, "points"


def tracks_layer_data(
    graph: TrackGraph,
    geometry: Geometry,
    name: str,
    metadata: dict[str, Any],
    style: TracksStyle | None = None,
) -> tuple[np.ndarray, dict[str, Any], str]:
    """A napari LayerData tuple for the track lines and the division graph."""
    style = style or TracksStyle()
    data, graph_dict = napari_tracks(graph, geometry)
    kwargs: dict[str, Any] = {
        "name": f"{name} tracks",
        "scale": geometry.layer_scale,
        "graph": graph_dict,
        "tail_width": style.tail_width,
        "tail_length": style.tail_length,
        "head_length": style.head_length,
        "colormaps_dict": {"track_id": tracks_colormap()},
        "color_by": "track_id",
        "metadata": {**metadata, ROLE_KEY: "tracks"},
    }
    return data, kwargs, "tracks"


def labels_layer_data(
    labels: np.ndarray, geometry: Geometry, name: str, metadata: dict[str, Any]
) -> tuple[np.ndarray, dict[str, Any], str]:
    """A napari LayerData tuple for masks whose values are track ids."""
    kwargs: dict[str, Any] = {
        "name": f"{name} labels",
        "scale": geometry.layer_scale,
        "colormap": labels_colormap(),
        "opacity": 0.5,
        "metadata": {**metadata, ROLE_KEY: "labels"},
    }
    return labels, kwargs, "labels"


def session_layer_data(session: TrackingSession) -> list[LayerData]:
    """LayerData tuples for a session: labels (if any), tracks, then centres (on top).

    The session rides in each layer's metadata, which is how the controller binds the layers.
    A Tracks layer cannot be empty, so an empty graph gets none until it has nodes.
    """
    meta = {SESSION_KEY: session}
    out: list[LayerData] = []
    if session.labels is not None:
        out.append(labels_layer_data(session.labels, session.geometry, session.name, meta))
    if len(session.graph):
        out.append(tracks_layer_data(session.graph, session.geometry, session.name, meta))
    out.append(points_layer_data(session.graph, session.geometry, session.name, meta))
    return out
