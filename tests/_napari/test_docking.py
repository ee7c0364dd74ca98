"""The five widgets docked together, as a person docks them from the Plugins menu.

napari hands each docked widget its own proxy of the viewer; every widget must still share the
viewer's one editing state, whatever the docking order, and the five must fit a 1080 px screen.
"""

from __future__ import annotations

import logging

import pytest
from qtpy.QtCore import QEvent, Qt
from qtpy.QtWidgets import QApplication

from napari_cellect._napari._controller import controller_for

pytestmark = pytest.mark.gui

WIDGETS = ("Track cells", "Edit tracks", "Lineage view", "Export tracks", "Fine-tune")
ORDERS = (
    WIDGETS,
    WIDGETS[::-1],
    ("Lineage view", "Fine-tune", "Edit tracks", "Track cells", "Export tracks"),
)
SCREEN = (1920, 1080)


def dock_all(viewer, order):
    docked = {}
    for name in order:
        _dock, widget = viewer.window.add_plugin_dock_widget("napari-cellect", name)
        docked[name] = widget
    return docked


def test_one_editing_state_per_viewer_whatever_the_docking_order(make_napari_viewer, qtbot, caplog):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(*SCREEN)
    viewer.open_sample("napari-cellect", "synthetic_embryo")
    canvas = viewer.window._qt_viewer.canvas.native
    for order in ORDERS:
        docked = dock_all(viewer, order)
        controller = controller_for(viewer)
        assert {id(w.controller) for w in docked.values()} == {id(controller)}, order
        QApplication.processEvents()
        # the window fits the screen with all five docked: they share one tab group, and each
        # scrolls when short of room
        assert window.minimumSizeHint().height() <= SCREEN[1], order
        assert window.minimumSize().height() <= SCREEN[1], order
        docks = [docked[name].parentWidget() for name in order]
        assert set(window.tabifiedDockWidgets(docks[0])) == set(docks[1:]), order
        for dock in docks:  # and nothing is cut off sideways
            assert dock.width() >= dock.widget().minimumSizeHint().width(), order

        graph = controller.session.graph
        child = int(graph.ids[graph["parent_id"] >= 0][-1])
        controller.select([child])
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            qtbot.keyClick(canvas, Qt.Key.Key_Delete)
            assert not graph.has(child)
            # the message line of Edit tracks shows the edit, whichever widget came last
            assert "delete" in docked["Edit tracks"].message_label.text().lower()
            qtbot.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
            assert graph.has(child)
            # A adds at the pointer, and undoing the add warns nothing either
            QApplication.sendEvent(canvas, QEvent(QEvent.Type.Enter))
            viewer.cursor.position = (float(viewer.dims.current_step[0]), 8.0, 40.0, 41.0)
            n = len(graph)
            qtbot.keyClick(canvas, Qt.Key.Key_A)
            assert len(graph) == n + 1
            assert "add" in docked["Edit tracks"].message_label.text().lower()
            qtbot.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
            assert len(graph) == n
        assert not [r for r in caplog.records if "unknown node" in r.getMessage()]
        viewer.window.remove_dock_widget("all")
