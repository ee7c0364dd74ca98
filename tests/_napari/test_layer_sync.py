"""The layer sync keeps Points and Tracks equal to layers built fresh from the graph.

Nodes added or removed take the incremental path (napari's ``Points.remove``/``Points.add``, one
slice refresh, the Tracks layer replaced in one step); after every edit, undo and redo the layers
must be indistinguishable from new ones: coordinates, every feature column with its dtype, sizes,
border widths, symbols, face and border colours (highlight included), the selection, the track
lines and the division graph.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from napari.layers import Layer, Points, Tracks

from napari_cellect._napari import _thumbnails
from napari_cellect._napari._controller import controller_for
from napari_cellect._napari._layer_data import (
    Geometry,
    border_colors,
    points_layer_data,
    tracks_layer_data,
)
from napari_cellect._napari._thumbnails import ThumbnailUpdates
from napari_cellect.session import TrackingSession

SCALE = (2.0, 1.0, 1.0)


@pytest.fixture
def setup(model_viewer, make_graph, make_labels):
    graph = make_graph()
    session = TrackingSession.from_graph(
        graph, name="sync", labels=make_labels(graph), geometry=Geometry(3, SCALE)
    )
    controller = controller_for(model_viewer)
    controller.add_session(session)
    return SimpleNamespace(
        viewer=model_viewer,
        controller=controller,
        session=session,
        graph=graph,
        bound=controller.bound,
    )


def _fresh(layer_data: tuple) -> Layer:
    data, kwargs, kind = layer_data
    return Layer.create(data, {k: v for k, v in kwargs.items() if k != "metadata"}, kind)


def assert_layers_as_built_fresh(s) -> None:
    """The live layers equal layers built from the graph now, and the selection maps to rows."""
    graph, bound, geometry = s.graph, s.bound, s.session.geometry
    live: Points = bound.points
    fresh: Points = _fresh(points_layer_data(graph, geometry, "x", {}, bound.sync.style))
    np.testing.assert_array_equal(live.data, fresh.data)
    pd.testing.assert_frame_equal(
        live.features.reset_index(drop=True), fresh.features.reset_index(drop=True)
    )
    for name in ("size", "border_width", "face_color", "shown"):
        np.testing.assert_array_equal(getattr(live, name), getattr(fresh, name), err_msg=name)
    assert [str(v) for v in live.symbol] == [str(v) for v in fresh.symbol]
    highlighted = np.isin(graph.ids, bound.sync.highlighted)
    np.testing.assert_allclose(
        live.border_color, border_colors(graph["approved"], bound.sync.style, highlighted)
    )
    rows = graph.index_of(list(s.controller.selection)) if s.controller.selection else []
    assert set(live.selected_data) == {int(r) for r in rows}

    tracks: Tracks = bound.tracks
    expected: Tracks = _fresh(tracks_layer_data(graph, geometry, "x", {}))
    np.testing.assert_array_equal(tracks.data, expected.data)
    assert tracks.graph == expected.graph
    np.testing.assert_array_equal(tracks.track_connex, expected.track_connex)
    np.testing.assert_array_equal(tracks.track_colors, expected.track_colors)
    np.testing.assert_array_equal(tracks._manager.graph_vertices, expected._manager.graph_vertices)


def _snapshot(graph) -> pd.DataFrame:
    return graph.to_dataframe().sort_values("id").reset_index(drop=True)


def test_adds_deletes_undos_and_redos_keep_the_layers_as_built_fresh(setup):
    s, c = setup, setup.controller
    c.highlight(s.session, [3, 7])

    def add_linked():
        c.select([8])
        c.edits.add_at_world((3.0, 4.0, 20.0, 21.0))  # linked to 8, then selected
        assert s.graph.parent_of(9) == 8 and c.selection == (9,)

    def add_alone():
        c.select([])
        c.edits.add_at_world((1.0, 4.0, 5.0, 30.0))  # a track of its own

    def delete_two():
        c.select([2, 5])
        c.edits.delete_selected()  # one edit; deleting 2 heals 1 -> 3
        assert not s.graph.has(2) and s.graph.parent_of(3) == 1

    def delete_highlighted():
        c.select([7])
        c.edits.delete_selected()  # 6 -> 8 heals over the highlighted node

    states = [_snapshot(s.graph)]
    for edit in (add_linked, add_alone, delete_two, delete_highlighted):
        edit()
        assert_layers_as_built_fresh(s)
        states.append(_snapshot(s.graph))
    c.select([3, 9])
    for state in reversed(states[:-1]):
        c.undo()
        pd.testing.assert_frame_equal(_snapshot(s.graph), state)
        assert_layers_as_built_fresh(s)
    for state in states[1:]:
        c.redo()
        pd.testing.assert_frame_equal(_snapshot(s.graph), state)
        assert_layers_as_built_fresh(s)


def test_napari_point_tools_keep_the_layers_as_built_fresh(setup):
    points, graph = setup.bound.points, setup.graph
    points.add([[4.0, 4.0, 30.0, 3.0]])  # napari's add mode: the layer grew before the graph
    assert len(graph) == 9
    assert_layers_as_built_fresh(setup)
    points.selected_data = {int(graph.index_of(6)[0]), int(graph.index_of(4)[0])}
    points.remove_selected()  # napari's delete button
    assert not graph.has(6) and not graph.has(4)
    assert_layers_as_built_fresh(setup)
    setup.controller.undo()
    setup.controller.undo()
    assert len(graph) == 8
    assert_layers_as_built_fresh(setup)


@pytest.mark.gui
def test_edits_with_the_centres_layer_hidden_keep_the_canvas_consistent(
    make_napari_viewer, make_graph
):
    viewer = make_napari_viewer()
    controller = controller_for(viewer)
    graph = make_graph()
    session = TrackingSession.from_graph(graph, name="hidden", geometry=Geometry(3, SCALE))
    controller.add_session(session)
    s = SimpleNamespace(
        viewer=viewer, controller=controller, session=session, graph=graph, bound=controller.bound
    )
    controller.select([8], center=True)  # the last row, in view
    assert int(graph.index_of(8)[0]) in s.bound.points._view_indices
    s.bound.points.visible = False
    controller.edits.delete_selected()  # napari's canvas must not read past the end of the layer
    controller.select([])
    controller.edits.add_at_world((1.0, 4.0, 5.0, 30.0))
    controller.undo()
    controller.undo()
    s.bound.points.visible = True
    assert len(graph) == 8
    assert_layers_as_built_fresh(s)


def test_a_row_change_slices_the_points_once_and_leaves_thumbnails_for_later(setup, monkeypatch):
    points, tracks = setup.bound.points, setup.bound.tracks
    slices, thumbnails = [], []
    for layer in (points, tracks):
        monkeypatch.setattr(
            layer,
            "set_view_slice",
            lambda layer=layer: (slices.append(layer), type(layer).set_view_slice(layer))[1],
        )
        monkeypatch.setattr(
            layer,
            "_update_thumbnail",
            lambda layer=layer: (thumbnails.append(layer), type(layer)._update_thumbnail(layer))[1],
        )
    deferred = setup.bound.sync.thumbnails
    monkeypatch.setattr(deferred, "request", lambda layer: requested.append(layer))
    requested: list[Layer] = []
    setup.controller.select([])
    setup.controller.edits.add_at_world((2.0, 4.0, 12.0, 30.0))
    assert slices.count(points) == 1  # napari alone slices after each per-point array it grows
    assert thumbnails == []
    assert {id(layer) for layer in requested} == {id(points), id(tracks)}


def test_thumbnails_wait_for_the_event_loop(qtbot):
    layer = Points(np.array([[0.0, 0.0], [10.0, 10.0]]))
    before = layer.thumbnail.copy()
    with layer._block_refresh():
        layer.data = np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 10.0]])
    updates = ThumbnailUpdates(delay_ms=20)
    updates.request(layer)
    assert updates.pending
    np.testing.assert_array_equal(layer.thumbnail, before)
    qtbot.waitUntil(lambda: not updates.pending, timeout=2000)
    assert not np.array_equal(layer.thumbnail, before)

    redrawn = layer.thumbnail.copy()
    with layer._block_refresh():
        layer.data = np.array([[0.0, 0.0]])
    updates.request(layer)
    updates.cancel()  # the controller closes: nothing is redrawn any more
    qtbot.wait(3 * updates.delay_ms)
    assert not updates.pending
    np.testing.assert_array_equal(layer.thumbnail, redrawn)


def test_thumbnails_are_redrawn_at_once_without_a_qt_application(monkeypatch):
    from qtpy.QtCore import QCoreApplication

    monkeypatch.setattr(QCoreApplication, "instance", staticmethod(lambda: None))
    layer = Points(np.array([[0.0, 0.0], [10.0, 10.0]]))
    before = layer.thumbnail.copy()
    with layer._block_refresh():
        layer.data = np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 10.0]])
    updates = ThumbnailUpdates()
    updates.request(layer)
    assert not updates.pending
    assert not np.array_equal(layer.thumbnail, before)
    assert updates.delay_ms == _thumbnails.THUMBNAIL_DELAY_MS
