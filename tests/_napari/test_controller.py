"""The per-viewer controller: keys -> edits through the history, layers in sync, undo exact.

Runs on a ``ViewerModel`` (no Qt window) and presses keys through napari's KeymapHandler, which
resolves them exactly as the canvas does (active layer's keymap first, then the viewer's).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from napari.utils.key_bindings import KeymapHandler

from napari_cellect._napari._colors import labels_colormap, tracks_colormap
from napari_cellect._napari._controller import controller_for
from napari_cellect._napari._layer_data import napari_tracks
from napari_cellect.session import Geometry, TrackingSession

SCALE = (2.0, 1.0, 1.0)


def snapshot(graph) -> pd.DataFrame:
    return graph.to_dataframe().sort_values("id").reset_index(drop=True)


def press(viewer, key: str) -> None:
    handler = KeymapHandler()
    active = viewer.layers.selection.active
    handler.keymap_providers = [active, viewer] if active is not None else [viewer]
    handler.press_key(key)
    handler.release_key(key)


@pytest.fixture
def setup(model_viewer, make_graph, make_labels):
    graph = make_graph()
    labels = make_labels(graph)
    session = TrackingSession.from_graph(
        graph, name="test", labels=labels, geometry=Geometry(3, SCALE)
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


def assert_layers_match_graph(s) -> None:
    """Points, Tracks and Labels all show exactly the graph."""
    graph, bound = s.graph, s.bound
    np.testing.assert_array_equal(bound.points.data, s.session.geometry.coords(graph))
    np.testing.assert_array_equal(bound.points.features["id"], graph.ids)
    np.testing.assert_array_equal(bound.points.features["track_id"], graph.track_ids())
    np.testing.assert_array_equal(bound.points.features["approved"], graph["approved"])
    np.testing.assert_allclose(
        bound.points.face_color, tracks_colormap().map(graph.track_ids()), atol=1e-6
    )
    data, graph_dict = napari_tracks(graph, s.session.geometry)
    np.testing.assert_array_equal(bound.tracks.data, data)
    assert bound.tracks.graph == graph_dict
    painted = graph.ids <= 8  # the nodes make_labels drew (hand-added ones have no voxels)
    for row in np.flatnonzero(painted):  # their centre voxel carries their current track id
        t, z, y, x = (int(round(graph[c][row])) for c in "tzyx")
        assert bound.labels.data[t, z, y, x] == graph.track_ids()[row]
    values = np.unique(bound.labels.data)
    assert set(values[values > 0]) <= set(graph.track_ids()[painted])


def test_session_layers_show_the_graph_with_one_colour_per_track(setup):
    names = [layer.name for layer in setup.viewer.layers]
    assert names == ["test labels", "test tracks", "test centres"]
    assert setup.viewer.layers.selection.active is setup.bound.points
    assert list(setup.bound.points.features.columns)[:2] == ["id", "track_id"]
    assert_layers_match_graph(setup)
    track = setup.graph.track_ids()
    # the Labels colormap gives each label the colour its centre and track line have
    np.testing.assert_allclose(
        labels_colormap().map(track), tracks_colormap().map(track), atol=1e-6
    )
    assert len(np.unique(tracks_colormap().map(np.unique(track)), axis=0)) == len(np.unique(track))


def _link(s):
    s.controller.select([8, 4])
    return "L", lambda g: g.parent_of(4) == 8 and g.node(4)["approved"]


def _break(s):
    s.controller.select([7])
    return "B", lambda g: g.parent_of(7) == -1 and g.node(8)["track_id"] == 8


def _delete(s):
    s.controller.select([2])
    return "Delete", lambda g: not g.has(2) and g.parent_of(3) == 1


def _backspace(s):
    s.controller.select([7])
    return "Backspace", lambda g: not g.has(7) and g.parent_of(8) == 6


def _add(s):
    s.controller.select([8])  # frame 2: the new node in frame 3 is linked to it
    s.viewer.dims.set_point(0, 3)
    s.viewer.cursor.position = (3.0, 2.0 * SCALE[0], 20.0, 21.0)
    s.viewer.mouse_over_canvas = True
    new_id = s.graph.next_id()

    def check(g):
        node = g.node(new_id)
        got = (node["t"], node["z"], node["y"], node["x"], node["parent_id"])
        return got == (3, 2.0, 20.0, 21.0, 8)

    return "A", check


def _division_mark(s):
    s.controller.select([7])
    return "D", lambda g: g.node(7)["division_score"] == 1.0


def _division_unmark(s):
    s.controller.select([3])  # divides into 4 (dist ~4.5) and 5 (dist ~4.5 -> the later id)
    return "D", lambda g: len(g.children_of(3)) == 1 and g.node(3)["division_score"] == 0.0


def _swap(s):
    s.controller.select([2, 7])
    return "S", lambda g: g.parent_of(2) == 6 and g.parent_of(7) == 1


def _approve(s):
    s.controller.select([2])
    return "Y", lambda g: g.node(2)["approved"] and not g.node(3)["approved"]


def _approve_track(s):
    s.controller.select([2])
    return "Shift-Y", lambda g: all(g.node(n)["approved"] for n in (1, 2, 3))


EDITS = [
    _link,
    _break,
    _delete,
    _backspace,
    _add,
    _division_mark,
    _division_unmark,
    _swap,
    _approve,
    _approve_track,
]


@pytest.mark.parametrize("edit", EDITS, ids=[e.__name__.strip("_") for e in EDITS])
def test_each_key_edits_the_graph_and_undo_restores_it_exactly(setup, edit):
    before = snapshot(setup.graph)
    labels_before = setup.bound.labels.data.copy()
    key, expected = edit(setup)
    press(setup.viewer, key)
    assert expected(setup.graph), f"{key} did not make the expected change"
    assert not snapshot(setup.graph).equals(before)
    assert_layers_match_graph(setup)
    after = snapshot(setup.graph)

    press(setup.viewer, "Control-Z")
    pd.testing.assert_frame_equal(snapshot(setup.graph), before)
    np.testing.assert_array_equal(setup.bound.labels.data, labels_before)
    assert_layers_match_graph(setup)

    press(setup.viewer, "Control-Shift-Z")
    pd.testing.assert_frame_equal(snapshot(setup.graph), after)
    assert_layers_match_graph(setup)


def test_edits_are_journalled_as_they_happen(setup):
    setup.controller.select([2])
    press(setup.viewer, "Y")
    journal = setup.session.journal_folder
    lines = (journal / "edits.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"approve' in lines[0]
    press(setup.viewer, "Control-Z")
    assert (journal / "edits.jsonl").read_text().splitlines()[-1] == '{"how": "undo"}'


def test_next_and_previous_node_move_time_and_camera(setup):
    viewer, controller = setup.viewer, setup.controller
    controller.select([1])
    press(viewer, ".")
    assert controller.selection == (2,)
    assert viewer.dims.current_step[0] == 1
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], (9.0, 9.0))
    press(viewer, ".")
    press(viewer, ".")  # node 3 divides: '.' goes to its first child
    assert controller.selection == (4,)
    assert viewer.dims.current_step[0] == 3
    press(viewer, ",")
    assert controller.selection == (3,)
    press(viewer, ",")
    press(viewer, ",")
    press(viewer, ",")  # already at the first node: stays, says so
    assert controller.selection == (1,)


def test_bad_edit_is_reported_and_changes_nothing(setup):
    messages = []
    setup.controller.message.connect(lambda level, text: messages.append((level, text)))
    before = snapshot(setup.graph)
    setup.controller.select([2])
    press(setup.viewer, "L")  # needs two nodes
    setup.controller.select([1, 6])
    press(setup.viewer, "L")  # same frame
    pd.testing.assert_frame_equal(snapshot(setup.graph), before)
    assert [level for level, _ in messages] == ["error", "error"]
    assert "same frame" in messages[-1][1]
    assert not setup.session.history.can_undo


def test_clicking_points_selects_nodes_in_click_order(setup):
    points = setup.bound.points
    rows = setup.graph.index_of([7, 2])
    points.selected_data = {int(rows[0])}
    points.selected_data = {int(rows[0]), int(rows[1])}
    assert setup.controller.selection == (7, 2)
    setup.controller.select([3])
    assert set(points.selected_data) == {int(setup.graph.index_of(3)[0])}


def test_clicking_a_label_selects_its_node(setup):
    labels = setup.bound.labels
    setup.viewer.layers.selection.active = labels
    callback = labels.mouse_drag_callbacks[-1]
    event = SimpleNamespace(
        type="mouse_press",
        position=(2.0, 2.0 * SCALE[0], 25.0, 24.0),
        view_direction=None,
        dims_displayed=[2, 3],
    )
    callback(labels, event)  # frame 2, on node 8's voxels (track 7)
    assert setup.controller.selection == (8,)


def test_napari_point_tools_become_undoable_edits(setup):
    points, graph = setup.bound.points, setup.graph
    before = snapshot(graph)
    points.add([[4.0, 4.0, 30.0, 3.0]])  # napari's add mode
    assert len(graph) == 9 and graph.node(9)["t"] == 4 and graph.node(9)["z"] == 4.0
    assert_layers_match_graph(setup)

    points.selected_data = {int(graph.index_of(2)[0])}
    points.remove_selected()  # napari's delete button: the track heals
    assert not graph.has(2) and graph.parent_of(3) == 1
    assert_layers_match_graph(setup)

    row = int(graph.index_of(8)[0])
    moved = points.data.copy()
    moved[row, 2:] = [27.0, 27.0]
    points.data = moved  # a drag, outside a mouse gesture: committed at once
    assert (graph.node(8)["y"], graph.node(8)["x"]) == (27.0, 27.0)
    for _ in range(3):
        setup.controller.undo()
    pd.testing.assert_frame_equal(snapshot(graph), before)
    assert_layers_match_graph(setup)


def test_active_layer_decides_which_session_is_edited(setup, make_graph):
    other = TrackingSession.from_graph(make_graph(), name="other", geometry=Geometry(3, SCALE))
    setup.controller.add_session(other)
    assert setup.controller.session is other
    setup.viewer.layers.selection.active = setup.viewer.layers["test tracks"]
    assert setup.controller.session is setup.session
    setup.controller.select([2])
    press(setup.viewer, "Y")
    assert setup.session.graph.node(2)["approved"] and not other.graph.node(2)["approved"]


def test_removing_the_points_layer_unbinds_the_session(setup):
    viewer, controller = setup.viewer, setup.controller
    viewer.layers.remove(setup.bound.points)
    assert controller.session is None
    setup.graph.set_values("score", [1], [0.1])  # no layer left to refresh: must not fail
    press(viewer, "Y")  # the viewer key still reports instead of raising


def test_empty_session_grows_a_tracks_layer(model_viewer):
    from napari_cellect.track.graph import TrackGraph

    controller = controller_for(model_viewer)
    session = TrackingSession.from_graph(TrackGraph(), name="manual", geometry=Geometry(3, SCALE))
    controller.add_session(session)
    assert [layer.name for layer in model_viewer.layers] == ["manual centres"]
    controller.edits.add_at_world((0.0, 2.0, 5.0, 5.0))
    controller.edits.add_at_world((1.0, 2.0, 6.0, 6.0))  # linked to the selected new node
    assert session.graph.parent_of(2) == 1
    assert [layer.name for layer in model_viewer.layers] == ["manual tracks", "manual centres"]
    assert model_viewer.layers.selection.active is model_viewer.layers["manual centres"]


def test_dragging_points_is_one_undoable_move(setup):
    from napari.layers.base._base_constants import ActionType

    points, graph = setup.bound.points, setup.graph
    before = snapshot(graph)
    drag = setup.controller.point_tools.on_drag
    event = SimpleNamespace(type="mouse_press")
    gesture = drag(points, event)
    next(gesture)  # press
    row = int(graph.index_of(8)[0])
    for step in (1.0, 2.0):  # napari moves the point and reports each step of the drag
        event.type = "mouse_move"
        points.data[row, 2:] = [26.0 + step, 25.0 + step]
        points.events.data(
            value=points.data, action=ActionType.CHANGED, data_indices=(row,), vertex_indices=((),)
        )
        next(gesture)
    assert graph.node(8)["y"] == 26.0  # nothing committed while dragging
    event.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(gesture)
    assert (graph.node(8)["y"], graph.node(8)["x"]) == (28.0, 27.0)
    assert len(setup.session.history.done) == 1
    setup.controller.undo()
    pd.testing.assert_frame_equal(snapshot(graph), before)
    np.testing.assert_array_equal(points.data[row], [2.0, 2.0, 26.0, 25.0])


def test_painting_the_labels_by_hand_is_picked_up_by_later_relabels(setup):
    labels, graph = setup.bound.labels, setup.graph
    track_7 = graph.node(7)["track_id"]
    setup.controller.select([7])
    press(setup.viewer, "B")
    press(setup.viewer, "Control-Z")  # frame 1's label boxes are now cached
    # paint more voxels of node 7's label (frame 1) far from its box, as the paint tool would
    labels.data[1, 0, 28:30, 28:30] = track_7
    labels.events.paint(value=[])
    setup.controller.select([7])
    press(setup.viewer, "B")  # node 7 starts its own track: all its voxels follow
    assert np.all(labels.data[1, 0, 28:30, 28:30] == graph.node(7)["track_id"])
    assert graph.node(7)["track_id"] != track_7
