"""Dock widgets in a real napari window (pytest-qt + make_napari_viewer under Xvfb).

Each viewer costs one to two seconds, so the tests are few and each checks a whole workflow.
The tracking widget runs a small fake pipeline (same signature and protocol as
``napari_cellect.pipeline.iter_tracking``) so these tests need neither torch nor a model.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import QEvent, QPoint, Qt
from qtpy.QtGui import QHelpEvent
from qtpy.QtWidgets import QApplication

from napari_cellect._napari import _dialogs
from napari_cellect._napari._colors import track_colors
from napari_cellect._napari._controller import controller_for
from napari_cellect._napari._export_widget import ExportWidget
from napari_cellect._napari._lineage_widget import LineageWidget
from napari_cellect._napari._tracking_widget import TrackingWidget
from napari_cellect.data.annotations import read_tracks
from napari_cellect.data.export import write_csv
from napari_cellect.track.graph import TrackGraph

pytestmark = pytest.mark.gui

WAIT_MS = 15000


def fake_pipeline(truth, labels, delay=0.0, calls=None, produced=None):
    """A tracking generator that 'finds' the ground truth, one frame pair at a time (``produced``
    gets each frame as the worker finishes it)."""

    def iter_tracking(
        images,
        bundle=None,
        *,
        z_ratio,
        device,
        tile,
        cache_dir,
        should_stop,
        keep_foreground=False,
        cell_radius=None,
        scheduler=None,
    ):
        n = images.shape[0]
        if calls is not None:
            calls.append(
                dict(
                    shape=images.shape,
                    z_ratio=z_ratio,
                    device=device,
                    tile=tile,
                    cell_radius=cell_radius,
                    scheduler=scheduler,
                )
            )
        for t in range(n):
            if should_stop():
                from napari_cellect.errors import Cancelled

                raise Cancelled(f"stopped after {t} frames")
            time.sleep(delay)
            if produced is not None:
                produced.append(t)
            rows = truth.frame(t)
            detections = SimpleNamespace(t=t, positions=truth.positions(rows))
            before = truth.ids[truth.frame(t - 1)] if t else np.zeros(0, np.int64)
            parents = truth["parent_id"][rows]  # as an index into the frame before, -1: none
            index = np.array(
                [np.flatnonzero(before == p)[0] if p in before else -1 for p in parents]
            )
            yield SimpleNamespace(
                stage="detect", done=t + 1, total=n, detections=detections, parent_index=index
            )
        return SimpleNamespace(graph=truth.copy(), detections=[], labels=labels, cell_radius=None)

    return iter_tracking


def open_sample(viewer):
    viewer.open_sample("napari-cellect", "synthetic_embryo")
    controller = controller_for(viewer, create=False)
    assert controller is not None and controller.session is not None
    return controller


def sample_image_and_truth(viewer):
    """The sample's image alone in the viewer, and its ground truth (graph, labels) to fake a
    tracking result with."""
    controller = open_sample(viewer)
    truth = controller.session.graph
    truth_labels = controller.bound.labels.data.copy()
    for name in (
        "embryo ground truth labels",
        "embryo ground truth tracks",
        "embryo ground truth centres",
    ):
        viewer.layers.remove(name)
    return truth, truth_labels


def test_tracking_runs_in_a_worker_and_gives_centres_tracks_and_labels(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    truth, truth_labels = sample_image_and_truth(viewer)
    calls: list = []
    fake = fake_pipeline(truth, truth_labels, 0.02, calls)
    widget = TrackingWidget(viewer, tracking_function=fake)
    viewer.window.add_dock_widget(widget)
    assert widget.image_layer().name == "synthetic embryo"
    assert widget.z_ratio.value() == pytest.approx(2.0)  # from the layer scale
    widget.tile_auto.setChecked(False)
    widget.device_combo.setCurrentText("cpu")
    seen_preview, seen_layers = [], set()
    widget.run_button.click()
    assert widget.running and not widget.run_button.isEnabled()
    widget.jobs.worker.yielded.connect(
        lambda p: seen_preview.append(len(widget._preview.points()) if widget._preview else 0)
    )
    widget.jobs.worker.yielded.connect(
        lambda p: seen_layers.update(layer.name for layer in viewer.layers)
    )
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)

    from napari_cellect.settings.tiling import TilingConfig

    assert calls == [
        dict(
            shape=(10, 16, 96, 96),
            z_ratio=pytest.approx(2.0),
            device="cpu",
            tile=tuple(TilingConfig().tile),  # the boxes start at the default
            cell_radius="auto",  # the radius field holds the estimate
            scheduler=None,
        )
    ]  # and the scheduler field empty: this machine
    assert seen_preview and seen_preview[-1] > 0  # centres appeared while frames finished
    assert "synthetic embryo tracks (running)" in seen_layers  # tracks before the masks
    names = [layer.name for layer in viewer.layers]
    assert names == [
        "synthetic embryo",
        "synthetic embryo tracked labels",
        "synthetic embryo tracked tracks",
        "synthetic embryo tracked centres",
    ]
    result = widget.result_session
    assert controller_for(viewer).session is result and len(result.graph) == len(truth)
    points = viewer.layers["synthetic embryo tracked centres"]
    assert set(points.features.columns) >= {
        "id",
        "track_id",
        "score",
        "radius",
        "division_score",
        "approved",
    }
    np.testing.assert_array_equal(points.features["track_id"], result.graph.track_ids())
    tracks = viewer.layers["synthetic embryo tracked tracks"]
    assert len(tracks.graph) == 2 * len(result.graph.divisions())
    labels = viewer.layers["synthetic embryo tracked labels"]
    np.testing.assert_array_equal(labels.data, truth_labels)
    # a label, its centre and its track line share a colour
    tid = int(result.graph.track_ids()[0])
    np.testing.assert_allclose(labels.colormap.map(tid), track_colors(tid)[0], atol=1e-6)
    np.testing.assert_allclose(
        tracks.colormaps_dict["track_id"].map(np.array([tid]))[0], track_colors(tid)[0], atol=1e-6
    )
    assert widget.progress.value() == widget.progress.maximum()
    assert "cells" in widget.status.text()
    assert result.journal is not None and (result.journal_folder / "base.csv").is_file()


def test_centres_are_appended_frame_by_frame_and_the_result_replaces_them(
    make_napari_viewer, qtbot
):
    """Each finished frame's centres join the preview without napari restyling the points shown
    before (no data event: rows reserved ahead are filled in place), and the result's layers
    take the previews' place."""
    viewer = make_napari_viewer()
    truth, truth_labels = sample_image_and_truth(viewer)
    widget = TrackingWidget(viewer, tracking_function=fake_pipeline(truth, truth_labels, 0.02))
    viewer.window.add_dock_widget(widget)
    rebuilt: list = []  # napari data events: the layer's points set anew
    previews: list = []

    def watch(event):
        if event.value.name == "synthetic embryo centres (running)":
            previews.append(event.value)
            event.value.events.data.connect(rebuilt.append)

    shown: list[np.ndarray] = []  # the points the preview shows after each frame
    tracks: list[np.ndarray | None] = []  # the preview tracks' vertices after each frame

    def record(progress):
        if getattr(progress, "stage", "") == "detect":
            layer = previews[-1]
            shown.append(layer.data[layer.shown].copy())
            name = "synthetic embryo tracks (running)"
            tracks.append(viewer.layers[name].data.copy() if name in viewer.layers else None)

    viewer.layers.events.inserted.connect(watch)
    widget.run_button.click()
    widget.jobs.worker.yielded.connect(record)  # after the widget's own handler
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)

    per_frame = [len(truth.frame(t)) for t in range(int(truth["t"].max()) + 1)]
    assert [len(points) for points in shown] == list(np.cumsum(per_frame))
    for t, points in enumerate(shown):  # frame t's centres, in the image's voxels
        np.testing.assert_allclose(
            points[points[:, 0] == t][:, 1:], truth.positions(truth.frame(t))
        )
    # tracks grow as frames finish: after frame t, the links of frames 0..t, as in the truth
    assert tracks[0] is None  # one frame has no links yet
    for t, data in enumerate(tracks[1:], start=1):
        table = truth.to_dataframe()
        so_far = TrackGraph.from_dataframe(table[table["t"] <= t])
        expected, _ = so_far.to_napari_tracks()
        assert data is not None and len(data) == len(expected)
        assert len(np.unique(data[:, 0])) == len(np.unique(expected[:, 0]))  # same tracks
        np.testing.assert_allclose(
            data[np.lexsort(data[:, 1:].T)][:, 1:], expected[np.lexsort(expected[:, 1:].T)][:, 1:]
        )
    assert len(previews) == 1 and rebuilt == []
    assert tuple(previews[0].scale) == tuple(viewer.layers["synthetic embryo"].scale)
    names = [layer.name for layer in viewer.layers]  # the previews gone, the result in place
    assert names == [
        "synthetic embryo",
        "synthetic embryo tracked labels",
        "synthetic embryo tracked tracks",
        "synthetic embryo tracked centres",
    ]
    assert len(viewer.layers["synthetic embryo tracked centres"].data) == len(truth)


def test_cancel_stops_within_one_frame_pair(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((40, 2, 16, 16), np.uint8), name="img")
    from napari_cellect.track.graph import TrackGraph

    truth = TrackGraph.from_arrays(
        id=np.arange(1, 41), t=np.arange(40), z=np.zeros(40), y=np.full(40, 5.0), x=np.full(40, 5.0)
    )
    produced: list[int] = []  # frames the worker finished (the main thread may lag behind)
    widget = TrackingWidget(
        viewer, tracking_function=fake_pipeline(truth, None, delay=0.1, produced=produced)
    )
    widget.run()
    qtbot.waitUntil(lambda: len(produced) >= 2, timeout=WAIT_MS)
    widget.cancel_button.click()
    at_cancel = len(produced)
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert len(produced) <= at_cancel + 1
    assert widget.result_session is None and "cancelled" in widget.status.text()
    assert [layer.name for layer in viewer.layers] == ["img"]  # preview removed, no result
    assert widget.run_button.isEnabled()


def test_errors_are_shown_in_the_widget(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 2, 8, 8), np.uint8), name="img")

    def broken(images, bundle=None, **kwargs):
        from napari_cellect.errors import ModelError

        raise ModelError("the model file is damaged")
        yield  # a generator, like the pipeline

    widget = TrackingWidget(viewer, tracking_function=broken)
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert "damaged" in widget.status.text() and widget.result_session is None
    # a radius estimate that ends later (a blank image: no size found) keeps the error shown
    widget._estimate_radius(viewer.layers["img"])
    qtbot.waitUntil(lambda: widget._estimate_worker is None, timeout=WAIT_MS)
    assert "could not find" in widget.cell_radius_spin.statusTip()
    assert "damaged" in widget.status.text()


def test_the_nucleus_radius_typed_in_goes_to_the_run(make_napari_viewer, qtbot, tmp_path):
    from napari_cellect.model.bundle import ModelBundle
    from napari_cellect.track.graph import TrackGraph

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 2, 16, 16), np.uint8), name="img")
    truth = TrackGraph.from_arrays(
        id=[1, 2, 3], t=[0, 1, 2], z=[0.0] * 3, y=[5.0] * 3, x=[5.0] * 3, parent_id=[-1, 1, 2]
    )
    calls: list = []
    widget = TrackingWidget(viewer, tracking_function=fake_pipeline(truth, None, calls=calls))
    spin = widget.cell_radius_spin
    qtbot.waitUntil(lambda: widget._estimate_worker is None, timeout=WAIT_MS)
    # a blank image has no nuclei: no estimate, the field stays at auto and the status says so
    assert spin.value() == 0 and spin.text() == "auto" and widget.cell_radius() == "auto"
    assert "could not find a nucleus size" in widget.status.text()
    hover = QHelpEvent(QEvent.Type.ToolTip, QPoint(2, 2), spin.mapToGlobal(QPoint(2, 2)))
    QApplication.sendEvent(spin, hover)  # the tooltip is written as it shows: the bundled model's
    reference = ModelBundle.load_default().normalization.reference_radius
    assert f"trained on nuclei of radius {reference:g} px" in spin.toolTip()
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin.lineEdit(), "7.5")
    spin.interpretText()
    assert widget.cell_radius() == pytest.approx(7.5)
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert [c["cell_radius"] for c in calls] == [pytest.approx(7.5)]
    assert widget.result_session is not None
    # a model that does not record its training nucleus size: the tooltip and the run say so
    model = ModelBundle.random("small", seed=0).save(tmp_path / "model.pt")
    widget.model_combo.setCurrentIndex(1)
    assert "Choose a model file" in widget.cell_radius_tooltip()
    widget.model_path.setText(str(model))
    assert "does not record the nucleus size" in widget.cell_radius_tooltip()
    widget.tracking_function = None  # the real pipeline refuses before the U-Net runs
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    status = widget.status.text()
    assert "tracking failed" in status and "does not record the nucleus size" in status
    assert widget.cell_radius() == pytest.approx(7.5) and widget.run_button.isEnabled()


def test_the_nucleus_radius_is_estimated_from_the_image_and_a_typed_one_wins(
    make_napari_viewer, qtbot
):
    viewer = make_napari_viewer()
    truth, truth_labels = sample_image_and_truth(viewer)
    calls: list = []
    widget = TrackingWidget(
        viewer, tracking_function=fake_pipeline(truth, truth_labels, calls=calls)
    )
    viewer.window.add_dock_widget(widget)
    spin = widget.cell_radius_spin
    qtbot.waitUntil(lambda: spin.value() > 0, timeout=WAIT_MS)  # filled off the GUI thread
    median = float(np.median(truth["radius"]))
    assert abs(spin.value() / median - 1) <= 0.2 and spin.text().endswith("(estimated)")
    assert "nucleus radius" in spin.statusTip()
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert calls[-1]["cell_radius"] == "auto"  # the run estimates the same way
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin.lineEdit(), "12")
    spin.interpretText()
    assert widget.cell_radius() == pytest.approx(12.0) and "(estimated)" not in spin.text()
    viewer.add_image(np.zeros((2, 4, 32, 32), np.uint16), name="other")
    widget.set_image_layer(viewer.layers["other"])  # a new estimate does not overwrite it
    qtbot.waitUntil(lambda: widget._estimate_worker is None, timeout=WAIT_MS)
    assert widget.cell_radius() == pytest.approx(12.0)
    widget.set_image_layer(viewer.layers["synthetic embryo"])
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert calls[-1]["cell_radius"] == pytest.approx(12.0)


def test_the_scheduler_typed_in_goes_to_the_run_and_bad_ones_are_refused(make_napari_viewer, qtbot):
    from napari_cellect.track.graph import TrackGraph

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 2, 16, 16), np.uint8), name="img")
    truth = TrackGraph.from_arrays(
        id=[1, 2], t=[0, 1], z=[0.0] * 2, y=[5.0] * 2, x=[5.0] * 2, parent_id=[-1, 1]
    )
    calls: list = []
    widget = TrackingWidget(viewer, tracking_function=fake_pipeline(truth, None, calls=calls))
    qtbot.keyClicks(widget.scheduler_edit, "localhost:8786")
    widget.run()
    assert not widget.running and calls == []
    assert "expected an address like tcp://HOST:PORT or local:N" in widget.status.text()
    widget.scheduler_edit.clear()
    qtbot.keyClicks(widget.scheduler_edit, "tcp://10.1.2.3:8786")
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    widget.scheduler_edit.clear()
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert [c["scheduler"] for c in calls] == ["tcp://10.1.2.3:8786", None]
    # the real pipeline with a scheduler nobody runs: a clear error, within seconds
    widget.tracking_function = None
    qtbot.keyClicks(widget.scheduler_edit, "tcp://127.0.0.1:9")
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60000)
    assert "cannot reach the dask scheduler at tcp://127.0.0.1:9" in widget.status.text()


@pytest.mark.slow
def test_the_real_pipeline_runs_from_a_model_file(make_napari_viewer, qtbot, tmp_path):
    """The widget wired to napari_cellect.pipeline, with an untrained model saved to a file."""
    from napari_cellect.model.bundle import ModelBundle

    model = tmp_path / "model.pt"
    ModelBundle.random("small", seed=0).save(model)
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((3, 8, 48, 48)).astype(np.float32), scale=(1, 3, 1, 1), name="img")
    widget = TrackingWidget(viewer)
    widget.model_combo.setCurrentIndex(1)
    widget.model_path.setText(str(model))
    widget.device_combo.setCurrentText("cpu")
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=120000)
    session = widget.result_session
    assert session is not None, widget.status.text()
    assert session.geometry.z_ratio == pytest.approx(3.0)
    labels = viewer.layers["img tracked labels"].data
    assert labels.shape == (3, 8, 48, 48)
    values = np.unique(labels)
    assert set(values[values > 0].tolist()) <= set(session.graph.track_ids().tolist())


def test_keys_on_the_canvas_edit_and_undo(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    controller = open_sample(viewer)
    graph = controller.session.graph
    canvas = viewer.window._qt_viewer.canvas.native
    before = graph.to_dataframe().sort_values("id").reset_index(drop=True)
    child = int(graph.ids[(graph["parent_id"] >= 0)][0])
    controller.select([child])
    qtbot.keyClick(canvas, Qt.Key.Key_B)
    assert graph.parent_of(child) == -1
    qtbot.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    after_undo = graph.to_dataframe().sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(after_undo, before)
    qtbot.keyClick(
        canvas,
        Qt.Key.Key_Z,
        Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier,
    )
    assert graph.parent_of(child) == -1
    qtbot.keyClick(canvas, Qt.Key.Key_Period)  # next node of the (now shorter) track
    assert controller.selection == (int(graph.children_of(child)[0]),)


def test_lineage_view_click_selects_and_moves_the_viewer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    controller = open_sample(viewer)
    widget = LineageWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.canvas.resize(400, 400)
    widget.canvas.fit()
    graph = controller.session.graph
    layout = widget.canvas.layout_
    assert layout is not None and layout.n_branches == len(np.unique(graph.track_ids()))
    row = int(np.flatnonzero(graph["t"] == 5)[0])
    node = int(graph.ids[row])
    point = widget.canvas.to_screen(layout.node_x[row], layout.node_t[row])
    qtbot.mouseClick(
        widget.canvas, Qt.MouseButton.LeftButton, pos=QPoint(round(point.x()), round(point.y()))
    )
    assert controller.selection == (node,)
    assert viewer.dims.current_step[0] == 5
    _z, y, x = graph.positions(np.array([row]))[0]
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], (y, x))
    assert widget.canvas.selected_ids == (node,)
    # selecting in the viewer highlights in the tree
    controller.select([int(graph.ids[0])])
    assert widget.canvas.selected_ids == (int(graph.ids[0]),)
    # a closed view stops listening: later edits do not reach the deleted widget
    viewer.window.remove_dock_widget(widget)
    widget.deleteLater()
    qtbot.waitUntil(lambda: len(controller.selection_changed) == 0, timeout=5000)
    controller.edits.approve_selected()


def test_export_writes_csv_geff_and_ctc_that_read_back(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    controller = open_sample(viewer)
    graph = controller.session.graph
    widget = ExportWidget(viewer)

    def table(g):
        cols = ["id", "t", "z", "y", "x", "parent_id", "track_id", "approved"]
        return g.to_dataframe()[cols].sort_values("id").reset_index(drop=True)

    widget.set_format("csv")
    widget.path_edit.setText(str(tmp_path / "tracks.csv"))
    assert widget.export() == tmp_path / "tracks.csv"
    pd.testing.assert_frame_equal(table(read_tracks(tmp_path / "tracks.csv")), table(graph))

    widget.set_format("geff")
    widget.path_edit.setText(str(tmp_path / "tracks.geff"))
    widget.export()
    pd.testing.assert_frame_equal(table(read_tracks(tmp_path / "tracks.geff")), table(graph))

    # a cell the segmentation missed: its node has no pixels in the Labels layer
    labelled = controller.bound.labels.data
    row = int(np.flatnonzero(graph["t"] == 3)[0])
    missed = int(graph.ids[row])
    labelled[3][labelled[3] == graph.track_ids()[row]] = 0
    widget.set_format("ctc")
    widget.path_edit.setText(str(tmp_path / "01_RES"))
    widget.export()
    assert (tmp_path / "01_RES" / "res_track.txt").is_file()
    masks = sorted((tmp_path / "01_RES").glob("mask*.tif"))
    assert len(masks) == graph.n_frames
    back = read_tracks(tmp_path / "01_RES")
    assert len(back) == len(graph)  # every node, the missed one as a marker
    assert len(back.divisions()) == len(graph.divisions())
    near = np.linalg.norm(back.positions()[back["t"] == 3] - graph.positions()[row], axis=1)
    assert near.min() < 1.0
    assert "1 node(s) had no pixels in the Labels layer" in widget.status.text()
    assert str(missed) in widget.status.text()

    widget.set_format("csv")
    widget.path_edit.setText(str(tmp_path / "missing" / "deeper" / "x.csv"))
    assert widget.export() is None and "failed" in widget.status.text()


def test_journal_restores_edits_of_a_viewer_closed_without_saving(
    make_napari_viewer, tmp_path, graph, monkeypatch
):
    path = tmp_path / "tracks.csv"
    write_csv(graph, path)
    first = make_napari_viewer()
    first.open(str(path), plugin="napari-cellect")
    controller = controller_for(first, create=False)
    assert controller is not None and controller.session.source == path
    controller.select([7])
    controller.edits.break_selected()
    controller.select([2])
    controller.edits.approve_selected()
    expected = controller.session.graph.to_dataframe().sort_values("id").reset_index(drop=True)
    first.close()  # no save

    asked = []
    monkeypatch.setattr(
        _dialogs, "ask_restore_journal", lambda folder: asked.append(folder) or True
    )
    second = make_napari_viewer()
    second.open(str(path), plugin="napari-cellect")
    restored = controller_for(second, create=False).session
    assert asked and restored is not controller.session
    got = restored.graph.to_dataframe().sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)
    controller_for(second).undo()  # the restored history still undoes
    assert restored.graph.node(2)["approved"] == graph.node(2)["approved"]


def test_screenshot_shows_the_tracks(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    controller = open_sample(viewer)
    for name in ("synthetic embryo", "embryo ground truth labels", "embryo ground truth centres"):
        viewer.layers[name].visible = False
    viewer.dims.set_point(0, controller.session.graph.n_frames - 1)
    viewer.reset_view()
    tracks = viewer.layers["embryo ground truth tracks"]
    tracks.tail_width = 4
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    assert shot.max() > 0, "the canvas is black"
    coloured = np.abs(shot - shot[0, 0]).sum(axis=-1) > 60
    assert coloured.mean() > 0.002, "no tracks drawn"
    # the drawn colours are track colours, dimmed by the fading tails (compare chromaticity)
    palette = track_colors(np.unique(controller.session.graph.track_ids()))[:, :3]
    palette = palette / palette.max(axis=1, keepdims=True)
    pixels = shot[coloured][:: max(coloured.sum() // 500, 1)].astype(float)
    pixels = pixels / pixels.max(axis=1, keepdims=True)
    nearest = np.min(np.abs(pixels[:, None, :] - palette[None]).sum(-1), axis=1)
    assert np.median(nearest) < 0.25
    tracks.visible = False
    empty = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    assert (np.abs(empty - empty[0, 0]).sum(axis=-1) > 60).mean() < coloured.mean() / 10


def test_editor_widget_shows_the_keys_runs_actions_and_saves(
    make_napari_viewer, tmp_path, monkeypatch
):
    from napari_cellect._napari._editor_widget import EditorWidget
    from napari_cellect._napari._keybindings import KEYBINDINGS

    viewer = make_napari_viewer()
    controller = open_sample(viewer)
    widget = EditorWidget(viewer)
    assert widget.table.rowCount() == len(KEYBINDINGS)
    keys = {
        widget.table.item(r, 0).text(): widget.table.item(r, 1).text()
        for r in range(widget.table.rowCount())
    }
    assert keys["Redo"] == "Ctrl+Shift+Z" and keys["Delete node"] == "Delete\nBackspace"
    graph = controller.session.graph
    child = int(graph.ids[graph["parent_id"] >= 0][0])
    controller.select([child])
    assert f"node {child}" in widget.selection_label.text()
    widget.buttons["edits.break_selected"].click()
    assert graph.parent_of(child) == -1 and "break link" in widget.message_label.text()
    widget.buttons["edits.link_selected"].click()  # one node selected: refused, said in red
    assert "select 2 nodes" in widget.message_label.text()

    target = tmp_path / "saved.csv"
    monkeypatch.setattr(_dialogs, "ask_save_path", lambda *a: str(target))
    widget.save_button.click()  # never saved: asks where
    assert target.is_file() and controller.session.source == target
    assert not controller.session.dirty and "saved.csv" in widget.session_label.text()
    widget.set_journal_folder(tmp_path)
    assert controller.session.journal_folder.parent == tmp_path

    session = widget.new_empty_session()
    assert controller.session is session and len(session.graph) == 0
    assert session.geometry.z_ratio == pytest.approx(2.0)
