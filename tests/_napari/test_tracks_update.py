"""set_tracks: the one-step Tracks update leaves the layer exactly as napari's own setters do."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Tracks

from napari_cellect._napari import _tracks_update
from napari_cellect._napari._tracks_update import (
    LazyKDTree,
    division_vertices,
    mirrors_napari,
    set_tracks,
    validate_tracks_data,
)


def _tracks(n_tracks: int = 6, length: int = 5, seed: int = 0, ndim: int = 5):
    """Tracks data in shuffled row order (napari sorts it) and a division graph."""
    rng = np.random.default_rng(seed)
    rows = []
    for track in range(1, n_tracks + 1):
        start = int(rng.integers(0, 3))
        for t in range(start, start + length):
            rows.append([track, t, *rng.uniform(0, 50, ndim - 2)])
    data = np.asarray(rows)[rng.permutation(len(rows))]
    graph = {k: v for k, v in {3: [1], 4: [1], 6: [2]}.items() if k <= n_tracks}
    return data, graph


def _state(layer: Tracks) -> dict[str, object]:
    """Everything napari derives from the data and the graph, by attribute."""
    manager = layer._manager
    return {
        "data": layer.data,
        "order": manager._order,
        "ordered": manager._ordered_points_idx,
        "points": manager._points,
        "points_id": manager._points_id,
        "lookup": {int(k): (v.start, v.stop) for k, v in manager._points_lookup.items()},
        "id2idxs": manager._id2idxs.toarray(),
        "vertices": manager.track_vertices,
        "connex": layer.track_connex,
        "times": layer.track_times,
        "colors": layer.track_colors,
        "graph": layer.graph,
        "graph_vertices": manager.graph_vertices,
        "graph_connex": layer.graph_connex,
        "graph_times": layer.graph_times,
        "view": layer._view_data,
        "view_graph": layer._view_graph,
        "features": layer.features.to_numpy(),
        "feature_names": list(layer.features.columns),
        "extent": layer.extent.data,
    }


def _assert_same(got: Tracks, expected: Tracks) -> None:
    a, b = _state(got), _state(expected)
    for key in b:
        if isinstance(b[key], dict):
            assert a[key] == b[key], key
        else:
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)
    for vertex in expected.data[::3]:  # the track under the mouse, through the (lazy) KD-tree
        assert got._get_value(vertex[1:]) == expected._get_value(vertex[1:])


@pytest.mark.parametrize("ndim", [5, 4], ids=["3d", "2d"])
def test_set_tracks_matches_napari_setters_attribute_by_attribute(ndim):
    assert mirrors_napari(Tracks(_tracks(ndim=ndim)[0]))  # this napari takes the direct path
    old_data, old_graph = _tracks(n_tracks=4, seed=1, ndim=ndim)
    data, graph = _tracks(ndim=ndim)
    layer = Tracks(old_data, graph=old_graph)
    events: list[str] = []
    for name in ("rebuild_tracks", "rebuild_graph", "data"):
        getattr(layer.events, name).connect(lambda _e, name=name: events.append(name))
    set_tracks(layer, data, graph)
    _assert_same(layer, Tracks(data, graph=graph))
    assert {"rebuild_tracks", "rebuild_graph", "data"} <= set(events)
    assert isinstance(layer._manager._kdtree, LazyKDTree)


def test_other_napari_versions_get_the_public_setters(monkeypatch):
    monkeypatch.setattr(_tracks_update, "MIRRORED_NAPARI", frozenset())
    data, graph = _tracks()
    layer = Tracks(_tracks(n_tracks=3, seed=2)[0])
    assert not mirrors_napari(layer)
    set_tracks(layer, data, graph)
    _assert_same(layer, Tracks(data, graph=graph))
    assert not isinstance(layer._manager._kdtree, LazyKDTree)


def test_thumbnail_is_left_to_the_caller_when_asked():
    data, graph = _tracks()
    layer = Tracks(_tracks(n_tracks=3, seed=2)[0])
    before = layer.thumbnail.copy()
    set_tracks(layer, data, graph, thumbnail=False)
    np.testing.assert_array_equal(layer.thumbnail, before)
    set_tracks(layer, data, graph)
    np.testing.assert_array_equal(layer.thumbnail, Tracks(data, graph=graph).thumbnail)


def test_lazy_kd_tree_is_built_once_on_first_query():
    points = np.random.default_rng(0).uniform(size=(50, 3))
    tree = LazyKDTree(points)
    assert tree._tree is None
    _, index = tree.query(points[7], k=1)
    assert index == 7 and tree._tree is not None
    built = tree._tree
    assert tree.n == 50 and tree._tree is built


def test_division_vertices_join_each_daughter_start_to_its_mother_end():
    data = np.array([[1, 0, 0, 0.0], [1, 1, 1, 1], [2, 2, 5, 5], [3, 2, 7, 7], [3, 3, 8, 8]])
    vertices, connex = division_vertices(data, {2: [1], 3: [1]})
    np.testing.assert_array_equal(vertices, [[2, 5, 5], [1, 1, 1], [2, 7, 7], [1, 1, 1]])
    np.testing.assert_array_equal(connex, [True, False, True, False])
    assert division_vertices(data, {}) == (None, None)


def test_a_division_of_unknown_tracks_is_refused_like_napari_does():
    data, _ = _tracks(n_tracks=3)
    with pytest.raises(ValueError, match="graph node 9 not found"):
        set_tracks(Tracks(data), data, {9: [1]})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.zeros((3, 3)), r"\(N, 4\) or \(N, 5\)"),
        (np.array([[1.5, 0, 0, 0]]), "integer"),
        (np.array([[1, -1, 0, 0.0]]), ">= 0"),
    ],
)
def test_bad_tracks_data_is_refused(data, message):
    with pytest.raises(ValueError, match=message):
        validate_tracks_data(data)
