"""Learning from corrections in the viewer: the Fine-tune widget, re-linking and its undo.

The end-to-end tests track a tiny synthetic embryo (4 frames of 8 x 48 x 48) with an untrained
``ModelBundle.random('small')`` saved to a file, through the Track cells widget, so the session
holds real detections; fine-tuning runs a few short epochs. The edit that applies a re-link is
also checked on its own (no Qt), including its replay from the journal.
"""

from __future__ import annotations

import dataclasses
import hashlib
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from napari_cellect._napari import _dialogs
from napari_cellect._napari._changed_links import LINK_ROLE
from napari_cellect._napari._controller import controller_for
from napari_cellect._napari._finetune_widget import NO_DETECTIONS, FinetuneState, FinetuneWidget
from napari_cellect._napari._layer_data import PointsStyle
from napari_cellect._napari._tracking_widget import TrackingWidget
from napari_cellect.session import Geometry, TrackingSession
from napari_cellect.session.graph_replace import replace_command
from napari_cellect.track.corrections import load_corrections
from napari_cellect.track.edits import History
from napari_cellect.track.graph import TrackGraph
from napari_cellect.track.journal import restore
from napari_cellect.train.finetune_config import FinetuneConfig

WAIT_MS = 60000
#: a few short epochs: the flow is under test, not the optimiser; every part adopted unchecked
QUICK = FinetuneConfig(epochs=3, steps_per_epoch=2, patience=3, guard=False)
#: the same with the guard on
GUARDED = dataclasses.replace(QUICK, guard=True)
#: a run long enough to be cancelled in the middle
ENDLESS = FinetuneConfig(epochs=10_000, steps_per_epoch=50, patience=10_000)


def tiny_embryo():
    from napari_cellect.data.synthetic import PRESETS, generate

    config = dataclasses.replace(
        PRESETS["default"],
        frames=4,
        shape=(8, 48, 48),
        z_ratio=2.0,
        n_cells=6,
        radius_range=(4.0, 5.0),
        seed=3,
    )
    return generate(config)


def table(graph: TrackGraph) -> pd.DataFrame:
    return graph.to_dataframe().sort_values("id").reset_index(drop=True)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def state(bundle) -> dict[str, torch.Tensor]:
    return {
        f"{i}.{k}": v.clone()
        for i, m in enumerate(bundle.modules())
        for k, v in m.state_dict().items()
    }


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def notifications(monkeypatch):
    """The messages napari was asked to show as error notifications."""
    import napari.utils.notifications as notes

    shown: list[str] = []
    monkeypatch.setattr(notes, "show_error", lambda message: shown.append(str(message)))
    return shown


@pytest.fixture
def tracked(make_napari_viewer, qtbot, tmp_path):
    """A viewer with a tiny embryo tracked by a random model loaded from ``model.pt``."""
    from napari_cellect.model.bundle import ModelBundle

    model_file = tmp_path / "model.pt"
    ModelBundle.random("small", seed=0).save(model_file)
    viewer = make_napari_viewer()
    viewer.add_image(tiny_embryo().images, scale=(1, 2, 1, 1), name="embryo")
    tracking = TrackingWidget(viewer)
    tracking.model_combo.setCurrentIndex(1)
    tracking.model_path.setText(str(model_file))
    tracking.device_combo.setCurrentText("cpu")
    tracking.run()
    qtbot.waitUntil(lambda: not tracking.running, timeout=WAIT_MS)
    session = tracking.result_session
    assert session is not None, tracking.status.text()
    return viewer, controller_for(viewer), session, model_file


def correct(controller, graph) -> tuple[list[int], int]:
    """Approve three links and break one, through the controller's key actions."""
    children = [int(i) for i in graph.ids[graph["parent_id"] >= 0]]
    approved = children[:3]
    controller.select(approved)
    controller.edits.approve_selected()
    broken = children[-1]
    controller.select([broken])
    controller.edits.break_selected()
    return approved, broken


@pytest.mark.gui
def test_finetune_relink_undo_redo_and_save(tracked, qtbot, tmp_path, monkeypatch, notifications):
    viewer, controller, session, model_file = tracked
    graph = session.graph
    assert session.detections and len(session.detections) == 4  # kept by the tracking widget
    assert session.model is not None and session.model_path == model_file
    old_model, old_weights, old_digest = session.model, state(session.model), digest(model_file)
    widget = FinetuneWidget(viewer, config=QUICK)
    viewer.window.add_dock_widget(widget)
    assert not widget.detect_box.isVisibleTo(widget) and widget.finetune_button.isEnabled()

    approved, _broken = correct(controller, graph)
    old_parents = {c: graph.parent_of(c) for c in approved}
    widget.update_counts()
    assert "3 approved links, 1 broken link" in widget.counts_label.text()
    before_relink = table(graph)

    widget.finetune_button.click()
    assert widget.running and not widget.finetune_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert not notifications, notifications
    # what was trained and the guard's verdict wait for Keep or Discard; nothing applied yet
    plan = widget.plan_label.text().lower()
    assert "will train link scorer" in plan and "about" in plan
    assert widget.result_box.isVisibleTo(widget) and session.model is old_model
    assert "adopted unchecked" in widget.result_label.text()
    assert not widget.finetune_button.isEnabled()
    widget.keep_button.click()
    qtbot.waitUntil(
        lambda: widget.relink_command is not None and not widget.running, timeout=WAIT_MS
    )
    assert not widget.result_box.isVisibleTo(widget) and widget.finetune_button.isEnabled()
    # the tuned model is in use; the one it started from is untouched, in memory and on disk
    assert session.model is not old_model and session.model_tuned
    assert session.model.metadata.name.endswith("+ft1")
    assert same_weights(state(old_model), old_weights) and digest(model_file) == old_digest
    assert not same_weights(state(session.model), old_weights)
    # the corrections were saved beside the journal, and read back they are the same labels
    stored = load_corrections(session.journal_folder)
    assert len(stored.positive_links) == 3 and len(stored.broken_links) == 1

    # re-linking kept every approved link and was one edit
    for child, parent in old_parents.items():
        assert graph.parent_of(child) == parent and graph.node(child)["approved"]
    assert session.history.done[-1] is widget.relink_command
    changed, removed = widget.changed_list.links, widget.changed_list.removed
    assert len(changed) > 0
    assert widget.changed_list.count() == len(changed) + len(removed)
    bound = controller.bound_for(session)
    highlight = np.all(
        np.isclose(bound.points.border_color, PointsStyle().highlight_border), axis=1
    )
    assert set(graph.ids[highlight].tolist()) == set(changed[:, 1]) | set(removed[:, 1])
    # a click on a listed link selects its child and moves the viewer there
    item = widget.changed_list.item(0)
    parent, child = item.data(LINK_ROLE)
    assert [parent, child] in changed.tolist()
    widget.changed_list.itemClicked.emit(item)
    assert controller.selection == (child,)
    assert viewer.dims.current_step[0] == graph.node(child)["t"]
    # the journal replays the re-link exactly
    after_relink = table(graph)
    pd.testing.assert_frame_equal(table(restore(session.journal_folder).graph), after_relink)

    controller.undo()  # Ctrl+Z: the tracks of before the re-link, highlight gone
    pd.testing.assert_frame_equal(table(graph), before_relink)
    assert widget.changed_list.count() == 0
    assert not np.any(
        np.all(np.isclose(bound.points.border_color, PointsStyle().highlight_border), axis=1)
    )
    controller.redo()
    pd.testing.assert_frame_equal(table(graph), after_relink)
    assert widget.changed_list.count() == len(changed) + len(removed)

    # Save model... never over the file the model came from
    monkeypatch.setattr(_dialogs, "ask_save_path", lambda *args: str(model_file))
    assert widget.save_model() is None and digest(model_file) == old_digest
    assert notifications and "another name" in notifications[-1]
    target = tmp_path / "tuned.pt"
    monkeypatch.setattr(_dialogs, "ask_save_path", lambda *args: str(target))
    widget.save_model_button.click()
    from napari_cellect.model.bundle import ModelBundle

    assert ModelBundle.load(target).metadata.name == session.model.metadata.name
    assert session.model_saved_as == target and "tuned.pt" in widget.model_label.text()


def edge_set(graph: TrackGraph) -> set[tuple[int, int]]:
    return {(int(p), int(c)) for p, c in graph.edges()}


@pytest.mark.gui
def test_relink_reports_every_changed_link_and_touches_nothing_else(tracked, qtbot):
    viewer, controller, session, _ = tracked
    graph = session.graph
    widget = FinetuneWidget(viewer, config=QUICK)
    viewer.window.add_dock_widget(widget)
    # deleting a node from the middle of a track bridges the gap with a new link
    middle = next(
        int(i)
        for i in graph.ids
        if graph.parent_of(int(i)) >= 0 and len(graph.children_of(int(i))) == 1
    )
    bridge = (graph.parent_of(middle), int(graph.children_of(middle)[0]))
    controller.select([middle])
    controller.edits.delete_selected()
    assert bridge in edge_set(graph)
    widget.update_counts()
    review_before = widget.review_label.text()
    before, edges_before = table(graph), edge_set(graph)
    widget.relink_button.click()
    qtbot.waitUntil(
        lambda: widget.relink_command is not None and not widget.running, timeout=WAIT_MS
    )
    listed = {
        tuple(item)
        for item in (
            widget.changed_list.item(i).data(LINK_ROLE) for i in range(widget.changed_list.count())
        )
    }
    edges_after = edge_set(graph)
    # every link made or removed is listed and counted, and nothing else
    assert listed == edges_before ^ edges_after
    assert f"{len(listed)} link(s) changed" in widget.message_label.text()
    # nodes no changed link touches are as they were (so is their place in the review queue)
    touched = {n for link in listed for n in link}
    after = table(graph)
    keep = ~before["id"].isin(touched) & before["id"].isin(after["id"])
    columns = [
        c
        for c in before.columns
        if c in after.columns  # track ids follow the links
        and c not in ("track_id", "parent_track_id")
    ]
    pd.testing.assert_frame_equal(
        after[after["id"].isin(before["id"][keep])][columns].reset_index(drop=True),
        before[keep][columns].reset_index(drop=True),
    )
    if not listed:
        assert widget.review_label.text() == review_before
    # the case the issue met: this re-link removes the link that bridged the deleted node's gap
    # (seeded model, so always), and it is listed and counted
    assert bridge not in edges_after and bridge in listed

    # a re-link that changes nothing says so and leaves the tracks and the review queue alone
    first, review_after = widget.relink_command, widget.review_label.text()
    widget.relink_button.click()
    qtbot.waitUntil(
        lambda: widget.relink_command is not first and not widget.running, timeout=WAIT_MS
    )
    assert "re-linked: 0 link(s) changed" in widget.message_label.text()
    assert widget.changed_list.count() == 0
    assert edge_set(graph) == edges_after
    widget.update_counts()
    assert widget.review_label.text() == review_after


@pytest.mark.gui
def test_cancel_leaves_the_model_and_the_tracks_untouched(tracked, qtbot, notifications):
    viewer, controller, session, _ = tracked
    widget = FinetuneWidget(viewer, config=ENDLESS)
    correct(controller, session.graph)
    model, weights, before = session.model, state(session.model), table(session.graph)
    epochs: list[int] = []
    widget.fine_tune()
    widget.jobs.worker.yielded.connect(lambda report: epochs.append(getattr(report, "epoch", -1)))
    qtbot.waitUntil(lambda: len(epochs) >= 3, timeout=WAIT_MS)
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert session.model is model and same_weights(state(model), weights)
    assert not session.model_tuned and widget.relink_command is None
    pd.testing.assert_frame_equal(table(session.graph), before)
    assert "cancelled" in widget.message_label.text() and not notifications
    assert widget.finetune_button.isEnabled()


def enabled(widget: FinetuneWidget) -> dict[str, bool]:
    """Which of the widget's buttons can be pressed."""
    buttons = {
        "fine-tune": widget.finetune_button,
        "re-link": widget.relink_button,
        "cancel": widget.cancel_button,
        "model": widget.model_button,
        "radius": widget.cell_radius_spin,
    }
    return {name: button.isEnabled() for name, button in buttons.items()}


def allows(*names: str) -> dict[str, bool]:
    return {name: name in names for name in ("fine-tune", "re-link", "cancel", "model", "radius")}


@pytest.mark.gui
def test_the_state_alone_says_which_buttons_work(tracked, qtbot, notifications):
    """Ready -> fine-tuning -> cancelling -> ready -> re-linking -> ready; a contradiction and
    no tracks at all, each with its buttons, through the real widget."""
    viewer, controller, session, _ = tracked
    widget = FinetuneWidget(viewer, config=ENDLESS)
    viewer.window.add_dock_widget(widget)
    widget.relink_after.setChecked(False)
    assert widget.state is FinetuneState.READY
    assert enabled(widget) == allows("fine-tune", "re-link", "model", "radius")
    correct(controller, session.graph)
    epochs: list[int] = []
    widget.finetune_button.click()
    widget.jobs.worker.yielded.connect(
        lambda report: epochs.append(report.epoch) if hasattr(report, "epoch") else None
    )
    assert widget.state is FinetuneState.FINETUNING and enabled(widget) == allows("cancel")
    widget.update_counts()  # an edit during the run recounts, and keeps what is running
    assert widget.state is FinetuneState.FINETUNING and enabled(widget) == allows("cancel")
    qtbot.waitUntil(lambda: len(epochs) >= 1, timeout=WAIT_MS)
    widget.cancel_button.click()
    assert widget.state is FinetuneState.CANCELLING and enabled(widget) == allows()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert widget.state is FinetuneState.READY
    assert enabled(widget) == allows("fine-tune", "re-link", "model", "radius")

    widget.relink_button.click()
    assert widget.state is FinetuneState.RELINKING and enabled(widget) == allows("cancel")
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert widget.state is FinetuneState.READY and widget.relink_command is not None
    assert not notifications, notifications

    graph = session.graph  # a node marked dividing whose single child is approved
    mother = next(int(i) for i in graph.ids if len(graph.children_of(int(i))) == 1)
    controller.select([mother])
    controller.edits.toggle_division()
    controller.select([int(graph.children_of(mother)[0])])
    controller.edits.approve_selected()
    widget.update_counts()
    assert widget.state is FinetuneState.CONTRADICTION
    assert enabled(widget) == allows("model", "radius")
    assert "contradict each other" in widget.finetune_button.toolTip()
    controller.undo()  # the approval
    controller.undo()  # the division mark
    widget.update_counts()
    assert widget.state is FinetuneState.READY

    viewer.layers.clear()
    assert widget.state is FinetuneState.NO_TRACKS and enabled(widget) == allows()
    assert "open or compute tracks first" in widget.relink_button.toolTip()


@pytest.mark.gui
def test_the_guard_figures_are_shown_and_discard_changes_nothing(tracked, qtbot, notifications):
    viewer, controller, session, _model_file = tracked
    widget = FinetuneWidget(viewer, config=GUARDED)
    viewer.window.add_dock_widget(widget)
    correct(controller, session.graph)
    model, weights, before = session.model, state(session.model), table(session.graph)
    n_done = len(session.history.done)
    widget.finetune_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert not notifications, notifications
    assert widget.result_box.isVisibleTo(widget)
    text = widget.result_label.text()
    assert (
        "checked on" in text and "held back" in text and "link errors on your corrections" in (text)
    )
    assert widget.keep_button.isEnabled() == widget.pending.changed
    # deciding: only Keep and Discard work
    assert widget.state is FinetuneState.DECIDING and enabled(widget) == allows()
    assert widget.discard_button.isEnabled() and "keep or discard" in (
        widget.relink_button.toolTip()
    )
    widget.discard_button.click()
    assert not widget.result_box.isVisibleTo(widget) and widget.pending is None
    assert widget.state is FinetuneState.READY
    assert "discarded" in widget.message_label.text()
    # the model in use and the tracks are exactly as before; no re-link ran
    assert session.model is model and same_weights(state(model), weights)
    assert not session.model_tuned and widget.relink_command is None
    pd.testing.assert_frame_equal(table(session.graph), before)
    assert len(session.history.done) == n_done and widget.finetune_button.isEnabled()


@pytest.mark.gui
def test_a_model_from_other_images_is_refused_and_nothing_changes(
    tracked, qtbot, tmp_path, notifications
):
    from napari_cellect.model.bundle import ModelBundle

    viewer, controller, session, _model_file = tracked
    widget = FinetuneWidget(viewer, config=QUICK)
    correct(controller, session.graph)
    other = tmp_path / "other.pt"
    ModelBundle.random("small", seed=5).save(other)  # another U-Net: trained on other images
    widget.set_model_file(other)
    before = table(session.graph)
    widget.finetune_button.click()
    assert not widget.running and "another U-Net" in notifications[-1]
    widget.relink_button.click()
    assert not widget.running and "another U-Net" in notifications[-1]
    pd.testing.assert_frame_equal(table(session.graph), before)


@pytest.mark.gui
def test_errors_from_the_core_are_shown_and_notified(tracked, notifications):
    viewer, controller, session, _ = tracked
    widget = FinetuneWidget(viewer, config=QUICK)
    widget.finetune_button.click()  # no corrections at all
    assert not widget.running
    assert "no corrections to learn from" in widget.message_label.text()
    assert notifications[-1] == widget.message_label.text()
    # a contradiction: a node marked dividing whose single child is approved
    graph = session.graph
    mother = next(int(i) for i in graph.ids if len(graph.children_of(int(i))) == 1)
    child = int(graph.children_of(mother)[0])
    controller.select([mother])
    controller.edits.toggle_division()
    controller.select([child])
    controller.edits.approve_selected()
    widget.update_counts()
    assert "contradict" in widget.counts_label.text()
    widget.fine_tune()
    assert not widget.running and f"node {mother}" in notifications[-1]
    assert "single approved child" in widget.message_label.text()


@pytest.mark.gui
def test_a_contradiction_is_said_at_the_edit_and_blocks_only_what_cannot_run(tracked, qtbot):
    from qtpy.QtCore import Qt

    from napari_cellect._napari._editor_widget import EditorWidget

    viewer, controller, session, _ = tracked
    editor, widget = EditorWidget(viewer), FinetuneWidget(viewer, config=QUICK)
    viewer.window.add_dock_widget(editor)
    viewer.window.add_dock_widget(widget)
    canvas = viewer.window._qt_viewer.canvas.native
    graph = session.graph
    mother = next(int(i) for i in graph.ids if len(graph.children_of(int(i))) == 1)
    child = int(graph.children_of(mother)[0])
    controller.select([mother])
    qtbot.keyClick(canvas, Qt.Key.Key_D)  # D on a node with one child: warned at once
    assert f"node {mother} is marked dividing but has one child ({child})" in (
        editor.message_label.text()
    )
    controller.select([child])
    qtbot.keyClick(canvas, Qt.Key.Key_Y)  # approving its only child now contradicts the mark
    assert "contradicts an earlier one" in editor.message_label.text()
    assert f"node {mother}" in editor.message_label.text()
    widget.update_counts()
    text = widget.counts_label.text()
    assert text.count("contradict") == 1 and "single approved child" in text
    assert widget.counts_label.wordWrap()
    assert not widget.finetune_button.isEnabled() and not widget.relink_button.isEnabled()
    assert "contradict" in widget.finetune_button.toolTip()
    assert widget.conflict_button.isVisibleTo(widget)
    assert widget.conflict_button.text() == f"Go to node {mother}"
    controller.select([])
    widget.conflict_button.click()  # goes to the node
    assert controller.selection == (mother,)
    assert viewer.dims.current_step[0] == graph.node(mother)["t"]
    qtbot.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # undo the approval
    widget.update_counts()
    assert "contradict" not in widget.counts_label.text()
    assert widget.finetune_button.isEnabled() and not widget.conflict_button.isVisibleTo(widget)


def tracks_from_a_file(embryo, name: str = "truth") -> TrackingSession:
    """The embryo's tracks as if read from a file: no detections."""
    return TrackingSession.from_graph(
        embryo.graph.copy(), name=name, geometry=Geometry(3, (2.0, 1.0, 1.0))
    )


def finetune_on_tracks_from_a_file(make_napari_viewer):
    """A viewer showing the tiny embryo and its tracks from a file, with a docked Fine-tune
    widget: (viewer, embryo, session, widget)."""
    viewer = make_napari_viewer()
    embryo = tiny_embryo()
    viewer.add_image(embryo.images, scale=(1, 2, 1, 1), name="embryo")
    session = tracks_from_a_file(embryo)
    controller_for(viewer).add_session(session)
    widget = FinetuneWidget(viewer, config=QUICK)
    viewer.window.add_dock_widget(widget)
    return viewer, embryo, session, widget


@pytest.mark.gui
def test_tracks_without_detections_offer_detection_instead_of_failing(
    make_napari_viewer, qtbot, tmp_path, notifications
):
    from napari_cellect._napari._tracking_widget import BUNDLED_MODEL
    from napari_cellect.model.bundle import ModelBundle

    _viewer, _embryo, session, widget = finetune_on_tracks_from_a_file(make_napari_viewer)
    assert widget.detect_box.isVisibleTo(widget) and not widget.finetune_button.isEnabled()
    assert widget.state is FinetuneState.NO_DETECTIONS
    assert "detect cells first" in widget.finetune_button.toolTip()
    widget.fine_tune()  # called anyway: said clearly, nothing runs
    assert not widget.running and notifications[-1] == NO_DETECTIONS
    if not BUNDLED_MODEL.exists():
        assert not widget.detect_button.isEnabled() and "no model" in (
            widget.detect_button.toolTip()
        )
    model_file = tmp_path / "model.pt"
    ModelBundle.random("small", seed=1).save(model_file)
    widget.set_model_file(model_file)
    assert widget.detect_button.isEnabled() and "model.pt" in widget.model_label.text()
    before = table(session.graph)
    widget.detect_button.click()
    assert widget.state is FinetuneState.DETECTING and enabled(widget) == allows("cancel")
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert widget.state is FinetuneState.READY
    assert session.detections is not None and len(session.detections) == 4
    assert session.z_ratio == pytest.approx(2.0) and session.model is not None
    pd.testing.assert_frame_equal(table(session.graph), before)  # the tracks are not changed
    assert not widget.detect_box.isVisibleTo(widget) and widget.finetune_button.isEnabled()


#: the nucleus radius the sized test model says it was trained on (xy pixels)
REFERENCE = 4.5


def sized_model(path, reference=REFERENCE):
    """A small untrained model saved to ``path`` that records (or, with None, lacks) the nucleus
    size it was trained on."""
    from napari_cellect.model.bundle import ModelBundle

    bundle = ModelBundle.random("small", seed=1)
    bundle = dataclasses.replace(
        bundle, normalization=dataclasses.replace(bundle.normalization, reference_radius=reference)
    )
    return bundle.save(path)


@pytest.fixture
def predicted(monkeypatch):
    """The ``cell_radius`` of every call of the U-Net's ``predict_sequence`` (the real one runs)."""
    from napari_cellect.infer import predict

    real = predict.predict_sequence
    radii: list = []

    def spy(*args, **kwargs):
        radii.append(kwargs.get("cell_radius"))
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "predict_sequence", spy)
    return radii


def type_radius(qtbot, spin, text: str) -> None:
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin.lineEdit(), text)
    spin.interpretText()


@pytest.mark.gui
def test_detection_for_tracks_from_a_file_uses_the_nucleus_radius_typed_in(
    make_napari_viewer, qtbot, tmp_path, notifications, predicted
):
    from qtpy.QtCore import QEvent, QPoint
    from qtpy.QtGui import QHelpEvent
    from qtpy.QtWidgets import QApplication

    viewer, embryo, session, widget = finetune_on_tracks_from_a_file(make_napari_viewer)
    widget.set_model_file(sized_model(tmp_path / "model.pt"))
    spin = widget.cell_radius_spin
    assert spin.isVisibleTo(widget) and spin.isEnabled()
    assert spin.text() == "as trained" and spin.radius() is None
    hover = QHelpEvent(QEvent.Type.ToolTip, QPoint(2, 2), spin.mapToGlobal(QPoint(2, 2)))
    QApplication.sendEvent(spin, hover)  # the tooltip names the session's model's size
    assert f"trained on nuclei of radius {REFERENCE:g} px" in spin.toolTip()

    type_radius(qtbot, spin, "9")  # nuclei twice the model's size: frames resized by 0.5
    widget.detect_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert not notifications, notifications
    assert predicted == [pytest.approx(9.0)]
    assert session.cell_radius == pytest.approx(9.0) and len(session.detections) == 4

    # other tracks from a file start at 'as trained'; back on the first, its radius is shown
    other = tracks_from_a_file(embryo, name="other")
    controller = controller_for(viewer)
    controller.add_session(other)
    assert controller.session is other and spin.radius() is None
    viewer.layers.selection.active = controller.bound_for(session).points
    assert controller.session is session and spin.radius() == pytest.approx(9.0)

    # a model that does not record its nucleus size cannot resize: said, nothing detected
    viewer.layers.selection.active = controller.bound_for(other).points
    widget.set_model_file(sized_model(tmp_path / "plain.pt", reference=None))
    type_radius(qtbot, spin, "9")
    widget.detect_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert "does not record the nucleus size" in widget.message_label.text()
    assert notifications and other.detections is None and other.cell_radius is None


def no_detections_pipeline(graph):
    """A tracking generator whose result keeps no raw detections (like tracks from a file)."""

    def iter_tracking(images, bundle=None, *, should_stop, cell_radius=None, **_kwargs):
        yield SimpleNamespace(stage="detect", done=1, total=1, detections=None)
        return SimpleNamespace(
            graph=graph.copy(), labels=np.zeros(images.shape, np.uint16), cell_radius=None
        )

    return iter_tracking


@pytest.mark.gui
def test_detection_uses_the_nucleus_radius_of_the_tracking_run(
    make_napari_viewer, qtbot, tmp_path, notifications, predicted
):
    viewer = make_napari_viewer()
    embryo = tiny_embryo()
    viewer.add_image(embryo.images, scale=(1, 2, 1, 1), name="embryo")
    finetune = FinetuneWidget(viewer, config=QUICK)
    viewer.window.add_dock_widget(finetune)
    tracking = TrackingWidget(viewer, tracking_function=no_detections_pipeline(embryo.graph))
    viewer.window.add_dock_widget(tracking)
    tracking.model_combo.setCurrentIndex(1)
    tracking.model_path.setText(str(sized_model(tmp_path / "model.pt")))
    type_radius(qtbot, tracking.cell_radius_spin, "9")
    tracking.run_button.click()
    qtbot.waitUntil(lambda: not tracking.running, timeout=WAIT_MS)
    session = tracking.result_session
    assert session is not None and session.detections is None, tracking.status.text()
    assert session.cell_radius == pytest.approx(9.0)  # the session keeps the run's radius
    type_radius(qtbot, tracking.cell_radius_spin, "3")  # changed after the run: not what ran

    assert controller_for(viewer).session is session
    assert finetune.detect_box.isVisibleTo(finetune)
    assert finetune.cell_radius_spin.radius() == pytest.approx(9.0)
    finetune.detect_button.click()
    qtbot.waitUntil(lambda: not finetune.running, timeout=WAIT_MS)
    assert not notifications, notifications
    assert predicted == [pytest.approx(9.0)]
    assert session.detections is not None and len(session.detections) == 4
    assert finetune.finetune_button.isEnabled()


def test_the_replace_command_edits_one_graph_into_another_and_undoes_exactly(make_graph):
    old = make_graph()
    new = make_graph()
    new.remove_nodes([8])  # a node gone
    new.add_nodes(id=[20], t=[3], z=[2.0], y=[30.0], x=[30.0], radius=[2.0])  # a new one
    new.set_parent([20], [7])
    new.set_parent([5], [-1])  # a link broken, another moved
    new.set_parent([7], [1])
    new.set_values("link_score", [2, 3], [0.25, 0.5])
    new.set_values("approved", [2], [True])
    columns = {name: new[name] for name in new.columns}
    columns["link_margin"] = np.linspace(-1, 1, len(new))  # a column the old graph lacks
    columns["changed"] = np.ones(len(new), bool)  # transient: stays out of the tracks
    new = TrackGraph.from_arrays(**columns)
    before = table(old)
    history = History(old)
    command = replace_command(old, new, "re-link")
    pd.testing.assert_frame_equal(table(old), before)  # building it changed nothing
    history.execute(command)
    expected = table(new).drop(columns=["changed"])
    pd.testing.assert_frame_equal(table(old), expected)
    history.undo()  # the column the re-link brought is gone again
    pd.testing.assert_frame_equal(table(old), before)
    history.redo()
    pd.testing.assert_frame_equal(table(old), expected)


def test_the_widget_is_in_the_manifest():
    from pathlib import Path

    from npe2 import PluginManifest

    root = Path(__file__).resolve().parents[2]
    manifest = PluginManifest.from_file(root / "napari.yaml")
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    widget = next(w for w in manifest.contributions.widgets if w.display_name == "Fine-tune")
    assert commands[widget.command] == "napari_cellect._napari._finetune_widget:FinetuneWidget"


def test_corrections_survive_a_restart_and_newer_ones_win(tmp_path, graph):
    from napari_cellect.data.export import write_csv
    from napari_cellect.track import edits
    from napari_cellect.track.corrections import CORRECTIONS_NAME
    from napari_cellect.track.journal import journal_folder_for

    path = tmp_path / "tracks.csv"
    write_csv(graph, path)
    folder = journal_folder_for(path)
    session = TrackingSession.open_tracks(path)
    session.ensure_journal()
    session.history.do(edits.approve, [2])
    session.save()  # approvals are in the file itself: nothing else to keep
    assert not (folder / CORRECTIONS_NAME).exists()
    session.history.do(edits.break_link, 7)  # a broken link is not: kept beside the journal
    session.save()
    session.close()
    assert (folder / CORRECTIONS_NAME).is_file()

    reopened = TrackingSession.open_tracks(path)
    assert reopened.stored_corrections is not None
    labels = reopened.corrections()
    assert [6, 7] in labels.broken_links.tolist() and [1, 2] in labels.positive_links.tolist()
    reopened.history.do(edits.link, 6, 7)  # changed her mind: linked (approved) again
    labels = reopened.corrections()  # no contradiction: the newer correction wins
    assert [6, 7] in labels.positive_links.tolist()
    assert [6, 7] not in labels.broken_links.tolist()


@pytest.mark.gui
def test_the_detector_part_is_checked_and_kept_then_only_unapproved_frames_are_detected(
    tracked, qtbot, notifications, monkeypatch
):
    from napari_cellect.infer.predict import model_digest
    from napari_cellect.session.jobs import frames_to_redetect
    from napari_cellect.train.adapt_unet import AdaptConfig

    viewer, controller, session, _ = tracked
    graph = session.graph
    # frames 0 and 1 corrected and approved whole; frames 2 and 3 nobody reviewed
    controller.select([int(i) for i in graph.ids[graph["t"] <= 1]])
    controller.edits.approve_selected()
    widget = FinetuneWidget(viewer, config=QUICK, adapt_config=AdaptConfig(steps=2, device="cpu"))
    viewer.window.add_dock_widget(widget)
    assert not widget.adapt_detector.isChecked() and not widget.image_row.isVisibleTo(widget)
    assert "U-Net heads" in widget.adapt_detector.text()
    widget.adapt_detector.click()
    assert widget.image_row.isVisibleTo(widget) and widget.image_combo.currentText() == "embryo"
    asked: list[list[int]] = []
    import napari_cellect.pipeline as pipeline

    real = pipeline.iter_detect

    def spy(*args, frames=None, **kwargs):
        asked.append(list(frames))
        return (yield from real(*args, frames=frames, **kwargs))

    monkeypatch.setattr(pipeline, "iter_detect", spy)
    old_digest = session.detections_digest
    widget.finetune_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert not notifications, notifications
    # the plan names the detector with its time, the tooltip says it; the panel lists the part
    assert "detector about" in widget.plan_label.text()
    assert "Extra time: about" in widget.adapt_detector.toolTip()
    text = widget.result_label.text()
    assert "detector: adopted (errors 0 without, 0 with it)" in text  # the guard is off (QUICK)
    assert asked == [[0, 1, 2]]  # the corrected frames and the next, with the new detector
    asked.clear()
    unapproved = frames_to_redetect(graph, 4)
    widget.keep_button.click()
    qtbot.waitUntil(
        lambda: widget.relink_command is not None and not widget.running, timeout=WAIT_MS
    )
    assert not notifications, notifications
    # only the frames nobody approved (and their neighbours) were predicted again
    assert asked == [unapproved] and widget.redetected_frames == unapproved == [1, 2, 3]
    assert session.detections_digest == model_digest(session.model.unet) != old_digest
    assert not session.needs_redetection and "nobody approved" in widget.message_label.text()
    # the approved frames kept their nodes; the re-link is one edit
    assert np.all(graph["approved"][graph["t"] <= 1])
    assert session.history.done[-1] is widget.relink_command
    widget.relink_button.click()  # the kept model is accepted for re-linking now
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert not notifications, notifications
