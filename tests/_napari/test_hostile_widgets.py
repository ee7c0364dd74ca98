"""Hostile inputs in the widgets (issue 15): bad image layers, bad files, export targets that
cannot be written and a disk that fills up while editing.

Each case ends with a clear message in the widget or in napari's notifications, and the viewer
stays usable (Run enabled again, no worker left running). pytest-qt fails a test on any
exception raised out of the Qt event loop. The readers and the CLI have their own battery
(``tests/test_hostile_inputs.py``); fine-tuning without corrections is in
``test_finetune_widget.py::test_errors_from_the_core_are_shown_and_notified``.
"""

from __future__ import annotations

import errno
import os
import time

import numpy as np
import pytest
import tifffile
from qtpy.QtCore import QMimeData, QPointF, Qt, QUrl
from qtpy.QtGui import QDropEvent

from napari_cellect._napari._controller import controller_for
from napari_cellect._napari._editor_widget import EditorWidget
from napari_cellect._napari._export_widget import ExportWidget
from napari_cellect._napari._tracking_widget import TrackingWidget

pytestmark = pytest.mark.gui

WAIT_MS = 60000


def notified() -> list[str]:
    from napari.utils.notifications import notification_manager

    return [str(record.message) for record in notification_manager.records]


def drop(viewer, path) -> None:
    """Drop ``path`` on the viewer as a file manager does (as in ``test_first_use.py``: the
    plugin's event filter first, then napari's ``dropEvent``)."""
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
    opener = getattr(controller_for(viewer, create=False), "drop_opener", None)
    if opener is None or not opener.eventFilter(qt_viewer, event):
        qt_viewer.dropEvent(event)


def test_track_cells_on_hostile_pixels_ends_with_a_result_and_runs_again(
    make_napari_viewer, qtbot, tmp_path
):
    """All NaN, infinite voxels, one frame, negative floats: the real pipeline (a random model
    that records the nucleus size it was trained on) tracks each and says what it met, naming
    the widget's own field where it says what to do; Run is enabled again after each."""
    import dataclasses

    from napari_cellect.model.bundle import ModelBundle

    bundle = ModelBundle.random("small", seed=0)
    normalization = dataclasses.replace(bundle.normalization, reference_radius=4.0)
    model = dataclasses.replace(bundle, normalization=normalization).save(tmp_path / "model.pt")
    rng = np.random.default_rng(0)
    noisy = rng.random((2, 4, 32, 32)).astype(np.float32)
    noisy[0, 1, 5, 5], noisy[1, 2, 6, 6], noisy[1, 0, 9, 9] = np.inf, -np.inf, np.nan
    images = {
        "all nan": np.full((2, 4, 32, 32), np.nan, np.float32),
        "infinite": noisy,
        "one frame": rng.random((1, 4, 32, 32)).astype(np.float32),
        "negative": (rng.random((2, 4, 32, 32)) - 2.0) * 1000.0,
    }
    viewer = make_napari_viewer()
    for name, data in images.items():
        viewer.add_image(data, name=name)
    widget = TrackingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_combo.setCurrentIndex(1)
    widget.model_path.setText(str(model))
    widget.device_combo.setCurrentText("cpu")
    said = {}
    for name in images:
        widget.set_image_layer(viewer.layers[name])
        widget.run_button.click()
        qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
        said[name] = widget.status.text()
        assert widget.jobs.worker is None and widget.run_button.isEnabled(), said
        assert "failed" not in said[name] and " cells, " in said[name], said
    assert "No cells, because: " in said["all nan"] and "no finite voxel" in said["all nan"]
    assert "give their radius (Nucleus radius (px) in Track cells)" in said["all nan"]
    assert "--cell-radius" not in " ".join(said.values())
    assert "NaN or infinite" in said["infinite"]


def test_layers_that_cannot_be_tracked_say_why(make_napari_viewer):
    """A 2D image without a time axis and an RGB image are not offered; the widget says why
    instead of 'open an image first', and forgets it once a trackable image is there."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((16, 16), np.uint8), name="flat")
    viewer.add_image(np.zeros((3, 16, 16, 3), np.uint8), name="photo", rgb=True)
    widget = TrackingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert not widget.run_button.isEnabled()
    for text in (widget.status.text(), widget.run_button.toolTip()):
        assert "'flat' is a single 2D image (Y, X) without a time axis" in text
        assert "'photo' is an RGB image" in text
    widget.run()  # as the button would, were it enabled
    assert not widget.running and "'photo' is an RGB image" in widget.status.text()
    viewer.add_image(np.zeros((2, 16, 16), np.uint8), name="movie")
    assert widget.run_button.isEnabled() and widget.status.text() == ""


@pytest.mark.parametrize("case", ["text named .tif", "truncated TIFF", "bad tracks CSV"])
def test_a_dropped_bad_file_is_notified_and_adds_nothing(make_napari_viewer, tmp_path, case):
    viewer = make_napari_viewer()
    viewer.window.add_dock_widget(TrackingWidget(viewer))  # the plugin is active: drops are ours
    if case == "text named .tif":
        path = tmp_path / "embryo.tif"
        path.write_text("not an image\n")
        expected = "not a readable TIFF file"
    elif case == "truncated TIFF":
        path = tmp_path / "embryo.tif"
        tifffile.imwrite(
            path, np.ones((4, 4, 32, 32), np.uint16), imagej=True, metadata={"axes": "TZYX"}
        )
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
        expected = "truncated"
    else:
        path = tmp_path / "embryo_tracks.csv"
        path.write_text("id,t,z,y,x,parent_id\n1,0,0,5,5,-1\n2,1,0,5,5,7\n")
        expected = "parent 7 of id 2 does not exist"
    drop(viewer, path)
    assert len(viewer.layers) == 0
    assert any(expected in message for message in notified()), notified()


def test_export_to_a_place_that_cannot_be_written_says_so(
    make_napari_viewer, tmp_path, monkeypatch
):
    from napari_cellect.data import atomic

    viewer = make_napari_viewer()
    viewer.open_sample("napari-cellect", "synthetic_embryo")
    widget = ExportWidget(viewer)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine\n")
    for key, path in (
        ("csv", a_file / "tracks.csv"),
        ("geff", a_file / "tracks.geff"),
        ("ctc", a_file),
    ):
        widget.set_format(key)
        widget.path_edit.setText(str(path))
        widget.export_button.click()
        assert widget.status.text().startswith("export failed: "), (key, widget.status.text())
        assert widget.status.text() in notified()
        assert widget.export_button.isEnabled()
    assert a_file.read_text() == "mine\n"  # the file in the way is untouched

    def read_only(*_args, **_kwargs):  # as a read-only disk (chmod does not stop root)
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(atomic, "open", read_only, raising=False)
    widget.set_format("csv")
    widget.path_edit.setText(str(tmp_path / "tracks.csv"))
    widget.export_button.click()
    assert "the disk is read-only" in widget.status.text()
    assert not (tmp_path / "tracks.csv").exists()


def test_a_full_disk_while_editing_says_autosave_stopped_and_what_to_do(
    make_napari_viewer, qtbot, monkeypatch, tmp_path
):
    """The journal stops at the edit it could not write; the person editing is told at once,
    in Edit tracks (the message, and the autosave line that stays) and as a notification."""
    from napari_cellect.track import journal as journal_module

    viewer = make_napari_viewer()
    viewer.open_sample("napari-cellect", "synthetic_embryo")
    controller = controller_for(viewer)
    editor = EditorWidget(viewer)
    viewer.window.add_dock_widget(editor)
    graph = controller.session.graph
    canvas = viewer.window._qt_viewer.canvas.native
    children = [int(i) for i in graph.ids[graph["parent_id"] >= 0]]
    controller.select([children[0]])
    qtbot.keyClick(canvas, Qt.Key.Key_B)  # the first edit starts the journal, on a good disk
    assert graph.parent_of(children[0]) == -1 and controller.session.journal.error is None
    assert "Autosave: " in editor.journal_label.text()

    def no_space(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(journal_module.os, "fsync", no_space)
    controller.select([children[1]])
    qtbot.keyClick(canvas, Qt.Key.Key_B)
    monkeypatch.undo()
    assert graph.parent_of(children[1]) == -1  # the edit is made all the same
    message = editor.message_label.text()
    assert message.startswith("Autosave to ") and "stopped: No space left on device" in message
    assert "Save as..." in message and "another disk" in message
    assert message in notified()
    assert editor.journal_label.text() == message and "ff7070" in editor.journal_label.styleSheet()
    controller.select([children[2]])
    qtbot.keyClick(canvas, Qt.Key.Key_B)  # later edits: said once, the autosave line stays
    assert editor.message_label.text().startswith("break link")
    assert editor.journal_label.text() == message
    editor.set_journal_folder(tmp_path / "elsewhere")  # another disk: autosaving again, there
    assert controller.session.journal.error is None
    assert editor.journal_label.text().startswith("Autosave: ")
    assert editor.journal_label.styleSheet() == ""


class _Payload:
    """Unpickling this runs code: a model file must never be unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).touch, (self.marker,))


def test_bad_model_files_are_refused_in_the_widget_and_never_run(
    make_napari_viewer, qtbot, tmp_path
):
    """A malicious pickle, a bundle from a newer napari-cellect, a text file and a missing file
    as the Track cells model: each run ends with the reason in the widget, Run enabled again."""
    import torch

    import napari_cellect
    from napari_cellect.model.bundle import ModelBundle

    marker = tmp_path / "pwned"
    malicious = tmp_path / "malicious.pt"
    torch.save({"format": "napari-cellect-bundle", "payload": _Payload(marker)}, malicious)
    data = torch.load(ModelBundle.random("small", seed=0).save(tmp_path / "ok.pt"))
    data.update(version=7, written_by="napari-cellect 3.2.0")
    newer = tmp_path / "newer.pt"
    torch.save(data, newer)
    text = tmp_path / "notes.pt"
    text.write_text("not a model\n")
    expected = {
        malicious: "objects other than tensors and plain values",
        newer: (
            f"unsupported bundle version 7; napari-cellect {napari_cellect.__version__} reads "
            "bundle version(s) [1]; it was written by napari-cellect 3.2.0"
        ),
        text: "notes.pt",
        tmp_path / "absent.pt": "absent.pt",
    }
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((2, 4, 32, 32), np.float32), name="img")
    widget = TrackingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_combo.setCurrentIndex(1)
    widget.device_combo.setCurrentText("cpu")
    for model, message in expected.items():
        widget.model_path.setText(str(model))
        widget.run_button.click()
        qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
        said = widget.status.text()
        assert message in said and "failed" in said, (model.name, said)
        assert widget.result_session is None and widget.run_button.isEnabled()
        assert [layer.name for layer in viewer.layers] == ["img"]
    assert not marker.exists()


def test_out_of_memory_in_the_widget_retries_with_smaller_tiles_and_says_so(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """The U-Net 'runs out of memory' on tiles wider than 32 voxels (as CUDA would, simulated
    on the CPU): the run ends with a result, and its line says what was retried."""
    import torch

    from napari_cellect.model.bundle import ModelBundle
    from napari_cellect.model.unet import UNet3D

    model = ModelBundle.random("small", seed=0).save(tmp_path / "model.pt")
    forward = UNet3D.forward

    def forward_with_limit(self, x, **kwargs):
        if max(x.shape[-2:]) > 32:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, x, **kwargs)

    monkeypatch.setattr(UNet3D, "forward", forward_with_limit)
    viewer = make_napari_viewer()
    rng = np.random.default_rng(1)
    viewer.add_image(rng.random((2, 8, 64, 64)).astype(np.float32), name="img")
    widget = TrackingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_combo.setCurrentIndex(1)
    widget.model_path.setText(str(model))
    widget.device_combo.setCurrentText("cpu")
    widget.tile_auto.setChecked(False)
    for spin, value in zip(widget.tile_spins, (8, 64, 64), strict=True):
        spin.setValue(value)
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    said = widget.status.text()
    assert widget.result_session is not None, said
    assert "Warnings: out of memory on cpu with tiles of 8x64x64 voxels (frame 0); " in said
    assert "retrying with tiles of 8x32x32" in said


def test_a_cancelled_run_leaves_the_earlier_result_untouched(make_napari_viewer, qtbot, tmp_path):
    """Track, then track again and cancel: the first result's layers, tracks and autosave
    journal are as they were."""
    from napari_cellect.track.graph import TrackGraph

    n = 30
    truth = TrackGraph.from_arrays(
        id=np.arange(1, n + 1),
        t=np.arange(n),
        z=np.zeros(n),
        y=np.full(n, 5.0),
        x=np.arange(n, dtype=float),
        parent_id=np.r_[-1, np.arange(1, n)],
    )
    slow = {"delay": 0.0}

    def pipeline(images, bundle=None, *, should_stop, **_kwargs):
        from types import SimpleNamespace

        from napari_cellect.errors import Cancelled

        for t in range(images.shape[0]):
            if should_stop():
                raise Cancelled(f"stopped after {t} frames")
            time.sleep(slow["delay"])
            detections = SimpleNamespace(t=t, positions=truth.positions(truth.frame(t)))
            yield SimpleNamespace(stage="detect", done=t + 1, total=n, detections=detections)
        return SimpleNamespace(graph=truth.copy(), detections=[], labels=None, cell_radius=None)

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((n, 2, 16, 32), np.uint8), name="img")
    widget = TrackingWidget(viewer, tracking_function=pipeline)
    viewer.window.add_dock_widget(widget)
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    first = widget.result_session
    assert first is not None, widget.status.text()
    layers = {layer.name: np.array(layer.data, copy=True) for layer in viewer.layers}
    journal = {p.name: p.read_bytes() for p in first.journal.folder.iterdir()}
    slow["delay"] = 0.1
    widget.run_button.click()
    qtbot.waitUntil(
        lambda: any("(running)" in layer.name for layer in viewer.layers), timeout=WAIT_MS
    )
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert "cancelled" in widget.status.text()
    assert [layer.name for layer in viewer.layers] == list(layers)
    for layer in viewer.layers:
        np.testing.assert_array_equal(np.asarray(layer.data), layers[layer.name])
    assert controller_for(viewer).session is first
    assert first.graph.to_dataframe().equals(truth.to_dataframe())
    assert {p.name: p.read_bytes() for p in first.journal.folder.iterdir()} == journal


def test_export_on_a_full_disk_keeps_the_previous_file_and_says_so(
    make_napari_viewer, tmp_path, monkeypatch
):
    from napari_cellect.data import atomic

    viewer = make_napari_viewer()
    viewer.open_sample("napari-cellect", "synthetic_embryo")
    widget = ExportWidget(viewer)
    path = tmp_path / "tracks.csv"
    path.write_text("id,t,z,y,x,parent_id\n1,0,0,0,0,-1\n")

    def no_space(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    widget.set_format("csv")
    widget.path_edit.setText(str(path))
    widget.export_button.click()
    said = widget.status.text()
    assert said.startswith("export failed: cannot write ") and "the disk is full" in said
    assert "the previous file is kept unchanged" in said and said in notified()
    assert path.read_text() == "id,t,z,y,x,parent_id\n1,0,0,0,0,-1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tracks.csv"]
    assert widget.export_button.isEnabled()
