"""Replace the vertices and the division graph of a napari Tracks layer in one step.

napari's ``Tracks.data`` setter rebuilds the whole layer, including a KD-tree over every vertex
that it only queries to report the track under the mouse (about a third of the setter's time at
50,000 vertices), then resets the division graph, which ``Tracks.graph`` rebuilds with one
sparse-matrix look-up per division. An edit needs both, so for the napari versions whose Tracks
internals this module mirrors (:data:`MIRRORED_NAPARI`; ``tests/_napari/test_tracks_update.py``
compares the result with napari's own setters attribute by attribute) :func:`set_tracks` does
the work of the two setters once, building the division graph vectorised and the KD-tree on its
first query. Any other napari version gets the public setters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari.layers import Tracks
    from scipy.spatial import cKDTree

#: napari (major, minor) versions whose ``Tracks``/``TrackManager`` setters
#: :func:`_replace_directly` mirrors
MIRRORED_NAPARI = frozenset({(0, 9)})

#: what :func:`_replace_directly` reads or writes on the layer and on its track manager
_LAYER_ATTRIBUTES = (
    "_manager",
    "_recolor_tracks",
    "_update_dims",
    "_block_refresh",
    "_reset_editable",
)
_MANAGER_ATTRIBUTES = (
    "_data",
    "_order",
    "_ordered_points_idx",
    "_points",
    "_kdtree",
    "_points_lookup",
    "_id2idxs",
    "_track_end_times",
    "_graph",
    "_graph_vertices",
    "_graph_connex",
    "_fast_points_lookup",
    "build_tracks",
)


class LazyKDTree:
    """A ``scipy.spatial.cKDTree`` of ``points`` built on first use."""

    def __init__(self, points: np.ndarray):
        self._points = points
        self._tree: cKDTree | None = None

    def tree(self) -> cKDTree:
        if self._tree is None:
            from scipy.spatial import cKDTree

            self._tree = cKDTree(self._points)
        return self._tree

    def query(self, *args: Any, **kwargs: Any) -> Any:
        return self.tree().query(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_points", "_tree"):
            raise AttributeError(name)
        return getattr(self.tree(), name)


def set_tracks(
    layer: Tracks, data: np.ndarray, graph_dict: dict[int, list[int]], *, thumbnail: bool = True
) -> None:
    """``layer.data = data; layer.graph = graph_dict``, in one step where napari allows it.

    ``data`` is (N, 4|5) ``track_id, t, (z), y, x``; ``graph_dict`` maps a daughter track to
    its one mother track. ``thumbnail=False`` leaves the layer-list thumbnail to the caller
    (napari's public setters, the fallback, always redraw it).
    """
    data = validate_tracks_data(np.asarray(data))
    single_mothers = all(len(mothers) == 1 for mothers in graph_dict.values())
    if len(data) and single_mothers and mirrors_napari(layer):
        _check_graph_tracks(data, graph_dict)
        _replace_directly(layer, data, graph_dict, thumbnail)
    else:
        layer.data = data
        layer.graph = graph_dict


def mirrors_napari(layer: Tracks) -> bool:
    """True when the layer is a napari version :func:`_replace_directly` was checked against."""
    import napari

    try:
        version = tuple(int(part) for part in napari.__version__.split(".")[:2])
    except ValueError:
        return False
    manager = getattr(layer, "_manager", None)
    return (
        version in MIRRORED_NAPARI
        and all(hasattr(layer, name) for name in _LAYER_ATTRIBUTES)
        and all(hasattr(manager, name) for name in _MANAGER_ATTRIBUTES)
    )


def _replace_directly(
    layer: Tracks, data: np.ndarray, graph_dict: dict[int, list[int]], thumbnail: bool
) -> None:
    """napari 0.9's ``Tracks.data`` and ``Tracks.graph`` setters, run as one.

    The same steps in the same order (see ``napari/layers/tracks/tracks.py`` and
    ``_track_utils.py``), except: the KD-tree is a :class:`LazyKDTree`, the graph is set
    directly instead of first to ``{}``, the division vertices come from
    :func:`division_vertices`, and the thumbnail is redrawn only when ``thumbnail``.
    """
    from scipy.sparse import coo_matrix

    manager = layer._manager
    # TrackManager.data: sort by track then time, index the vertices by time
    order = np.lexsort((data[:, 1], data[:, 0]))
    sorted_data = data[order]
    by_time = np.argsort(sorted_data[:, 1])
    points = sorted_data[by_time, 1:]
    manager._order = order
    manager._data = sorted_data
    manager._ordered_points_idx = by_time
    manager._points = points
    manager._kdtree = LazyKDTree(points)
    manager._points_lookup = manager._fast_points_lookup(np.round(points[:, 0]).astype(np.uint))
    track_ids = sorted_data[:, 0].astype(np.uint32)
    manager._id2idxs = coo_matrix(
        (np.broadcast_to(1, track_ids.size), (track_ids, np.arange(track_ids.size)))
    ).tocsr()
    manager._track_end_times = None
    # Tracks.data
    manager.build_tracks()
    layer.features = {}
    layer._recolor_tracks()
    # Tracks.graph
    vertices, connex = division_vertices(sorted_data, graph_dict)
    manager._graph = {int(k): [int(v[0])] for k, v in graph_dict.items()}
    manager._graph_vertices = vertices
    manager._graph_connex = connex
    # Tracks.data: redraw and tell listeners
    with layer._block_refresh():
        layer._update_dims()
    layer.refresh(thumbnail=thumbnail)
    layer.events.rebuild_tracks()
    layer.events.rebuild_graph()
    layer.events.data(value=layer.data)
    layer._reset_editable()


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


def _check_graph_tracks(data: np.ndarray, graph_dict: dict[int, list[int]]) -> None:
    """napari's check that every track of the division graph has vertices, vectorised."""
    if not graph_dict:
        return
    daughters = np.fromiter(graph_dict.keys(), dtype=np.int64, count=len(graph_dict))
    mothers = np.fromiter(
        (m[0] for m in graph_dict.values()), dtype=np.int64, count=len(graph_dict)
    )
    known = np.isin(daughters, data[:, 0]) & np.isin(mothers, data[:, 0])
    if not np.all(known):
        raise ValueError(f"graph node {int(daughters[~known][0])} not found")


def validate_tracks_data(data: np.ndarray) -> np.ndarray:
    """napari's check of Tracks data, vectorised (napari loops over every vertex in Python)."""
    if data.ndim != 2 or data.shape[1] not in (4, 5):
        raise ValueError(f"track vertices should be a (N, 4) or (N, 5) array, got {data.shape}")
    if not np.array_equal(np.floor(data[:, 0]), data[:, 0]):
        raise ValueError("track id must be an integer")
    if np.any(data[:, 1] < 0):
        raise ValueError("track timestamps must be >= 0")
    return data
