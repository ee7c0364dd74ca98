"""What a new user meets first: dropping files, adding nodes with A, closing with unsaved edits.

Driven through the real window (drop events, key presses on the canvas, the close event).
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from qtpy.QtCore import QMimeData, QPointF, Qt, QUrl
from qtpy.QtGui import QCloseEvent, QDropEvent

from napari_cellect._napari._tracking_widget import TrackingWidget

pytestmark = pytest.mark.gui


def drop(viewer, path) -> None:
    """Drop ``path`` on the viewer as a file manager does.

    Qt delivers a drop event only during a real drag (to the drag manager's current target), so
    this does what that delivery does: the plugin's event filter on napari's viewer widget, if
    installed, sees the event first; unless it takes it, napari's ``dropEvent`` handles it.
    """
    from napari_cellect._napari._controller import controller_for

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(
        QPointF(10, 10),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    qt_viewer = viewer.window._qt_viewer
    controller = controller_for(viewer, create=False)
    opener = getattr(controller, "drop_opener", None)
    if opener is None or not opener.eventFilter(qt_viewer, event):
        qt_viewer.dropEvent(event)


@pytest.fixture
def reader_dialogs(monkeypatch):
    """What napari's 'Choose reader' dialogs offered: (path, choices, pre-selected); each is
    cancelled."""
    from napari._qt.dialogs import qt_reader_dialog

    asked: list[tuple[str, list[str], str]] = []

    def record(dialog):
        buttons = dialog.reader_btn_group.buttons()
        asked.append(
            (dialog._current_file, [b.text() for b in buttons], dialog._get_plugin_choice())
        )
        return "", False

    monkeypatch.setattr(qt_reader_dialog.QtReaderDialog, "get_user_choices", record)
    return asked


def tiff_folder(folder, n_frames=3):
    """A folder of per-time (Z, Y, X) TIFFs with a z step of 2.5 pixels."""
    folder.mkdir()
    for t in range(n_frames):
        tifffile.imwrite(
            folder / f"embryo_t{t}.tif",
            np.full((4, 16, 16), t, np.uint8),
            imagej=True,
            resolution=(1.0, 1.0),
            metadata={"spacing": 2.5, "axes": "ZYX"},
        )
    return folder


@pytest.fixture
def no_reader_dialog(monkeypatch):
    """Fail where napari would ask the person to choose a reader."""
    from napari._qt.dialogs import qt_reader_dialog

    def refuse(*_args, **_kwargs):
        raise AssertionError("napari asked which reader to use")

    monkeypatch.setattr(qt_reader_dialog.QtReaderDialog, "exec", refuse)
    monkeypatch.setattr(qt_reader_dialog.QtReaderDialog, "exec_", refuse, raising=False)


def test_a_dropped_tiff_opens_without_asking_and_keeps_its_voxel_size(
    make_napari_viewer, tmp_path, no_reader_dialog
):
    path = tmp_path / "embryo.tif"
    tifffile.imwrite(
        path,
        np.zeros((3, 4, 16, 16), np.uint8),
        imagej=True,
        resolution=(1.0, 1.0),
        metadata={"spacing": 2.5, "axes": "TZYX"},
    )
    viewer = make_napari_viewer()
    drop(viewer, path)
    assert [layer.name for layer in viewer.layers] == ["embryo"]
    assert viewer.layers["embryo"].data.shape == (3, 4, 16, 16)
    widget = TrackingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.z_ratio.value() == pytest.approx(2.5)
    assert "embryo.tif" in widget.z_ratio.toolTip()


def test_our_tiff_folder_and_tracks_csv_open_without_asking_once_the_plugin_is_open(
    make_napari_viewer, tmp_path, no_reader_dialog, graph
):
    from napari.utils.notifications import notification_manager

    from napari_cellect._napari._controller import controller_for
    from napari_cellect.data.export import write_csv

    folder = tiff_folder(tmp_path / "embryo")
    tracks = tmp_path / "embryo_tracks.csv"
    write_csv(graph, tracks)
    viewer = make_napari_viewer()
    viewer.window.add_dock_widget(TrackingWidget(viewer))
    drop(viewer, folder)
    assert [layer.name for layer in viewer.layers] == ["embryo"]
    image = viewer.layers["embryo"]
    assert image.data.shape == (3, 4, 16, 16)
    assert tuple(image.scale) == pytest.approx((1.0, 2.5, 1.0, 1.0))  # our reader: voxel size
    drop(viewer, tracks)
    session = controller_for(viewer).session
    assert session is not None and session.source == tracks and len(session.graph) == len(graph)
    assert len(viewer.layers) == 3
    broken = tmp_path / "broken_tracks.csv"  # ours by its columns, but not readable
    broken.write_text("id,t,z,y,x,parent_id\n1,0,0,north,5,-1\n")
    drop(viewer, broken)
    assert len(viewer.layers) == 3
    said = notification_manager.records[-1].message
    assert said.startswith(f"Could not open {broken}: ")
    assert "column 'y': expected a number, found 'north'" in said


def test_other_files_and_a_napari_without_the_plugin_open_still_ask(
    make_napari_viewer, tmp_path, graph, reader_dialogs
):
    from napari_cellect.data.export import write_csv

    tracks = tmp_path / "embryo_tracks.csv"
    write_csv(graph, tracks)
    other = tmp_path / "measurements.csv"
    other.write_text("a,b\n1,2\n")
    viewer = make_napari_viewer()
    drop(viewer, tracks)  # before any CELLECT tool is open napari asks; ours comes first, chosen
    assert reader_dialogs == [
        (str(tracks), ["CELLECT tracking", "napari builtins"], "CELLECT tracking")
    ]
    viewer.window.add_dock_widget(TrackingWidget(viewer))
    drop(viewer, other)  # not ours: napari's question as before
    assert [path for path, _, _ in reader_dialogs] == [str(tracks), str(other)]
    assert len(viewer.layers) == 0


def test_a_adds_only_where_the_pointer_is_on_the_canvas(make_napari_viewer, qtbot):
    from qtpy.QtCore import QEvent
    from qtpy.QtWidgets import QApplication

    from napari_cellect._napari._controller import controller_for
    from napari_cellect._napari._editor_widget import EditorWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-cellect", "synthetic_embryo")
    editor = EditorWidget(viewer)
    viewer.window.add_dock_widget(editor)
    controller = controller_for(viewer)
    graph = controller.session.graph
    canvas = viewer.window._qt_viewer.canvas.native
    viewer.dims.set_point(0, 4)
    QApplication.sendEvent(canvas, QEvent(QEvent.Type.Enter))  # the pointer comes onto the image
    viewer.cursor.position = (4.0, 8.0, 40.0, 41.0)
    n = len(graph)
    qtbot.keyClick(canvas, Qt.Key.Key_A)
    assert len(graph) == n + 1
    added = graph.node(int(graph.ids[-1]))
    assert (added["t"], added["y"], added["x"]) == (4, 40.0, 41.0)
    # the pointer moves over the dock: napari keeps the last canvas position, A must not use it
    QApplication.sendEvent(canvas, QEvent(QEvent.Type.Leave))
    qtbot.keyClick(canvas, Qt.Key.Key_A)
    assert len(graph) == n + 1
    assert "move the pointer over the canvas" in editor.message_label.text()


def test_closing_with_unsaved_edits_asks_and_saves_or_stays_open(
    make_napari_viewer, qtbot, tmp_path, monkeypatch, unsaved_edits_prompts
):
    from napari_cellect._napari import _dialogs
    from napari_cellect._napari._controller import controller_for
    from napari_cellect.data.annotations import read_tracks

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-cellect", "synthetic_embryo")
    controller = controller_for(viewer)
    session = controller.session
    window = viewer.window._qt_window
    graph = session.graph
    node = int(graph.ids[graph["parent_id"] >= 0][0])
    controller.select([node])
    qtbot.keyClick(viewer.window._qt_viewer.canvas.native, Qt.Key.Key_Delete)
    assert session.has_unsaved_edits

    answers = iter(["cancel", "save"])

    def answer(names, journals, _parent=None):
        unsaved_edits_prompts.append(list(names))
        assert journals == [str(session.journal_folder)]
        return next(answers)

    monkeypatch.setattr(_dialogs, "ask_unsaved_edits", answer)
    target = tmp_path / "embryo_tracks.csv"
    monkeypatch.setattr(_dialogs, "ask_save_path", lambda *_args: str(target))
    window.close()  # Cancel: the window stays, nothing written
    assert window.isVisible() and not target.exists()
    assert unsaved_edits_prompts == [[session.name]]
    # Save: asked where (the sample has no file), saved, and the close goes on (the event is
    # handed to the guard itself, so the fixture can still tear the viewer down)
    assert not controller.close_guard.eventFilter(window, QCloseEvent())
    assert unsaved_edits_prompts == [[session.name]] * 2
    assert not session.has_unsaved_edits
    back = read_tracks(target)
    assert len(back) == len(graph) and not back.has(node)


def test_track_cells_says_what_it_needs_and_why_it_found_nothing(make_napari_viewer, qtbot):
    from types import SimpleNamespace

    viewer = make_napari_viewer()
    widget = TrackingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert not widget.run_button.isEnabled()  # nothing to track yet
    assert "Open an image first" in widget.run_button.toolTip()
    from qtpy.QtWidgets import QLabel

    labels = {label.text() for label in widget.findChildren(QLabel)}
    assert "Block size (voxels)" in labels and not {"Tile", "z", "y", "x"} & labels  # no jargon
    viewer.add_image(np.zeros((3, 4, 32, 32), np.uint8), name="empty")
    assert widget.run_button.isEnabled()
    # the first frame's record gives no pace yet: no "about 0:00 left"
    widget._on_progress(SimpleNamespace(stage="detect", done=1, total=10, detections=None))
    assert "0:00 left" not in widget.progress_label.text()
    assert "estimating" in widget.progress_label.text()
    widget.device_combo.setCurrentText("cpu")
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60000)
    status = widget.status.text()
    assert status.startswith("0 cells") and "No cells, because: " in status
    assert "no contrast" in status  # what the console said, said here
    assert widget.progress_label.text() == ""  # no stale "segmenting: 3/3 frames"
    assert widget.run_button.isEnabled()
