"""The review queue in the viewer: N / Shift+N jump to uncertain links and divisions.

Runs on a ``ViewerModel`` and presses keys through napari's KeymapHandler (as the canvas does).
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.key_bindings import KeymapHandler

from napari_cellect._napari._controller import controller_for
from napari_cellect._napari._keybindings import KEYBINDINGS
from napari_cellect.session import Geometry, TrackingSession
from napari_cellect.track.graph import TrackGraph
from napari_cellect.track.link import MARGIN_COLUMN

SCALE = (2.0, 1.0, 1.0)
#: incoming-link certainty per child (conftest graph: 1 -> 2 -> 3 -> {4, 5}, 6 -> 7 -> 8)
MARGINS = {2: 0.9, 3: 0.3, 4: -0.2, 5: 0.1, 7: 0.05, 8: 0.8}
#: node 3 divides with a score just above the threshold: a division item of certainty 0.2
DIVISION_SCORE_3 = 0.6
#: most uncertain first: links 4, 7, 5, the division of 3, link 3 (all below 0.5); then the
#: links of 8 and 2 and the (certain) non-divisions of the other nodes
EXPECTED_UNCERTAIN = 5


def press(viewer, key: str) -> None:
    handler = KeymapHandler()
    active = viewer.layers.selection.active
    handler.keymap_providers = [active, viewer] if active is not None else [viewer]
    handler.press_key(key)
    handler.release_key(key)


def graph_with_margins(make_graph) -> TrackGraph:
    base = make_graph()
    columns = {name: base[name] for name in base.columns}
    columns[MARGIN_COLUMN] = np.array([MARGINS.get(int(i), np.nan) for i in base.ids])
    columns["division_score"] = np.where(base.ids == 3, DIVISION_SCORE_3, 0.0)
    return TrackGraph.from_arrays(**columns)


@pytest.fixture
def review(model_viewer, make_graph):
    graph = graph_with_margins(make_graph)
    session = TrackingSession.from_graph(graph, name="test", geometry=Geometry(3, SCALE))
    controller = controller_for(model_viewer)
    controller.add_session(session)
    messages: list[str] = []
    controller.message.connect(lambda level, text: messages.append(text))
    return model_viewer, controller, graph, messages


def test_n_and_shift_n_are_in_the_one_keybinding_table():
    keys = {binding.method: binding.keys for binding in KEYBINDINGS}
    assert keys["review.next_uncertain"] == ("N",)
    assert keys["review.previous_uncertain"] == ("Shift-N",)


def test_n_jumps_to_the_most_uncertain_link_and_approving_it_lowers_the_count(review):
    viewer, controller, graph, messages = review
    assert controller.review.count() == EXPECTED_UNCERTAIN
    press(viewer, "n")
    assert controller.selection == (4,)
    assert viewer.dims.current_step[0] == 3  # the child's frame
    node = graph.node(4)
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], (node["y"], node["x"]))
    assert "link 3 -> 4" in messages[-1]
    press(viewer, "y")  # approve what N selected
    assert graph.node(4)["approved"]
    assert controller.review.count() == EXPECTED_UNCERTAIN - 1
    press(viewer, "n")  # the next one after the approved link
    assert controller.selection == (7,) and viewer.dims.current_step[0] == 1
    press(viewer, "n")
    assert controller.selection == (5,)
    press(viewer, "Shift-N")  # back along the items visited
    assert controller.selection == (7,)


def test_a_division_item_selects_the_daughters_and_approving_them_reviews_it(review):
    viewer, controller, _graph, messages = review
    for _ in range(4):  # links 4, 7, 5, then the division of 3
        press(viewer, "n")
    assert controller.selection == (4, 5)
    assert "division of 3 into 4, 5" in messages[-1]
    press(viewer, "y")  # both daughters' links approved: the division and two links reviewed
    assert controller.review.count() == EXPECTED_UNCERTAIN - 3
    press(viewer, "n")
    assert controller.selection == (3,)  # the last uncertain one: the link 2 -> 3


def test_after_the_last_item_n_starts_again_and_says_when_nothing_is_left(review):
    viewer, controller, graph, _messages = review
    n_items = len(controller.review.state().queue)
    seen = []
    for _ in range(n_items + 1):
        press(viewer, "n")
        seen.append(controller.selection)
    assert seen[-1] == seen[0] == (4,)  # wrapped around to the most uncertain
    controller.select(list(graph.ids))
    press(viewer, "y")  # every link approved; divisions of nodes with children are reviewed
    remaining = controller.review.state().queue.items()
    assert all(
        item.kind == "division" and not len(graph.children_of(item.node)) for item in remaining
    )


def test_a_graph_without_margins_is_ranked_by_geometry_and_nan_margins_count_as_none(
    model_viewer, make_graph
):
    controller = controller_for(model_viewer)
    plain = TrackingSession.from_graph(make_graph(), name="plain", geometry=Geometry(3, SCALE))
    controller.add_session(plain)
    expected = [(i.kind, i.node) for i in controller.review.state().queue.items()]
    assert expected and all(np.isfinite(i.margin) for i in controller.review.state().queue)
    # a margin column of NaNs only (left behind when a re-link is undone) is no margin at all
    graph = make_graph()
    columns = {name: graph[name] for name in graph.columns}
    columns[MARGIN_COLUMN] = np.full(len(graph), np.nan)
    nan_session = TrackingSession.from_graph(
        TrackGraph.from_arrays(**columns), name="nan", geometry=Geometry(3, SCALE)
    )
    controller.add_session(nan_session)
    assert controller.session is nan_session
    got = [(i.kind, i.node) for i in controller.review.state().queue.items()]
    assert got == expected


def test_n_without_tracks_reports_instead_of_failing(model_viewer):
    controller = controller_for(model_viewer)
    messages: list[tuple[str, str]] = []
    controller.message.connect(lambda level, text: messages.append((level, text)))
    controller.review.next_uncertain()
    controller.review.previous_uncertain()
    assert messages and all(level == "error" for level, _ in messages)
    assert controller.review.count() is None


@pytest.mark.gui
def test_the_widgets_show_the_count_and_it_drops_after_approving_from_the_canvas(
    make_napari_viewer, make_graph, qtbot
):
    from qtpy.QtCore import Qt

    from napari_cellect._napari._editor_widget import EditorWidget
    from napari_cellect._napari._finetune_widget import FinetuneWidget

    viewer = make_napari_viewer()
    controller = controller_for(viewer)
    controller.add_session(
        TrackingSession.from_graph(
            graph_with_margins(make_graph), name="test", geometry=Geometry(3, SCALE)
        )
    )
    editor, finetune = EditorWidget(viewer), FinetuneWidget(viewer)
    assert f"To review: {EXPECTED_UNCERTAIN} uncertain" in editor.review_label.text()
    assert f"not reviewed: {EXPECTED_UNCERTAIN} " in finetune.review_label.text()
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.keyClick(canvas, Qt.Key.Key_N)
    assert controller.selection == (4,)
    qtbot.keyClick(canvas, Qt.Key.Key_Y)
    left = EXPECTED_UNCERTAIN - 1
    assert f"To review: {left} uncertain" in editor.review_label.text()
    qtbot.waitUntil(lambda: f"not reviewed: {left} " in finetune.review_label.text(), timeout=2000)
    qtbot.keyClick(canvas, Qt.Key.Key_N, Qt.KeyboardModifier.ShiftModifier)  # nothing before
    assert controller.selection == (4,)
