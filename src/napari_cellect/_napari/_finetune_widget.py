"""Fine-tune dock widget: learn from the corrections of the active tracks, then re-link.

1. The widget shows what the active session's corrections hold (approved links, broken links,
   division labels) and how many uncertain links and divisions nobody reviewed yet (``N`` jumps
   to the next one), updated after every edit.
2. **Fine-tune** runs the guarded fine-tune (:meth:`TrackingSession.finetune_job`,
   :mod:`napari_cellect.train.finetune_guard`) on the detections the tracking run kept
   (:attr:`TrackingSession.detections`) in a thread worker, with what it will train and about
   how long, a progress bar and **Cancel**. A cancelled or failed run leaves the model in use
   untouched; a finished one shows the guard's figures before and after on the held-back
   corrections, with **Keep** (the tuned model becomes the session's, in memory; **Save
   model...** writes it, never over the file it started from; then the re-link) and
   **Discard** (nothing changes). Tracks read from a file have no detections: the widget says so and offers
   to detect cells on an image layer (the tracks are not changed), with the nucleus radius of
   the tracking run the tracks come from, or one typed in (as in the Track cells widget).
   **Also adapt the detector** adds the U-Net's heads as one more guarded part
   (:meth:`TrackingSession.detector_trainer`, on the image chosen in the image box); when a kept
   model adopted it, the frames nobody approved are predicted again with it and re-linked
   keeping approved work (:func:`~napari_cellect.session.jobs.redetect_relink_job`), instead of
   the plain re-link.
3. **Re-link** (automatic after a fine-tune, or by hand) runs
   :func:`~napari_cellect.train.finetune.relink` in a worker with every approved link pinned,
   and applies the result as ONE edit of the session's history (Ctrl+Z restores the tracks of
   before). The changed links are drawn with a highlight border and listed; a click on one
   jumps there.

Errors from the core (no corrections, only one kind of label, contradictions) are shown in the
widget and as napari notifications with the core's message.

What the widget can do at any moment is one :class:`FinetuneState`; :data:`CONTROLS` says, in
one place, which buttons each state enables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_cellect._napari import _dialogs
from napari_cellect._napari._cell_radius import (
    CELL_RADIUS_HELP,
    CELL_RADIUS_LABEL,
    CellRadiusSpinBox,
    radius_tooltip,
)
from napari_cellect._napari._changed_links import ChangedLinks
from napari_cellect._napari._controller import CellectController, controller_for
from napari_cellect._napari._jobs import JobRunner, Outcome, failed_text
from napari_cellect._napari._model_files import (
    describe_model,
    has_model,
    model_name,
    save_tuned_model,
    suggested_path,
)
from napari_cellect._napari._qt_utils import (
    ERROR_STYLE,
    disconnect_on_destroy,
    scrolled_content,
    show_status,
    trackable_images,
)
from napari_cellect._napari._tracking_job import as_tzyx, geometry_of, model_reference_radius
from napari_cellect.errors import CellectError, ContradictoryCorrections
from napari_cellect.session.jobs import (
    DetectOutput,
    RedetectOutput,
    RelinkOutput,
    detect_job,
    frames_to_redetect,
    redetect_relink_job,
)
from napari_cellect.train.finetune_config import FinetuneProgress
from napari_cellect.train.finetune_guard import FinetunePlan, FinetuneResult

if TYPE_CHECKING:
    import napari

    from napari_cellect.session import TrackingSession
    from napari_cellect.track.edits import Command
    from napari_cellect.train.adapt_unet import AdaptConfig
    from napari_cellect.train.finetune_config import FinetuneConfig

logger = logging.getLogger(__name__)

#: the message after any cancelled job
CANCELLED = "cancelled: the model in use and the tracks are unchanged"
#: wait this long after the last edit before recounting the corrections (edits come in bursts)
COUNT_DELAY_MS = 200

ADAPT_HELP = (
    "Also adapt the detector's U-Net heads to your corrections (added cells, deleted "
    "detections, divisions, approved links) on the image chosen below, as one more part of the "
    "checked update: the corrected frames are detected again with it and the scorers tuned on "
    "those detections; it is adopted only where it does better on the held-back corrections. "
    "After Keep, the frames nobody approved are detected again and re-linked, keeping approved "
    "work."
)

NO_DETECTIONS = (
    "These tracks have no cached detections (they were read from a file, or made by hand), so "
    "there is nothing to fine-tune on. Detect cells on the image they belong to (the tracks are "
    "not changed), or track the image with the Track cells widget."
)


class FinetuneState(Enum):
    """What the widget is doing, or why it cannot fine-tune yet."""

    NO_TRACKS = "no tracks"
    NO_DETECTIONS = "tracks without detections"
    CONTRADICTION = "the corrections contradict each other"
    READY = "ready"
    DETECTING = "detecting"
    FINETUNING = "fine-tuning"
    RELINKING = "re-linking"
    CANCELLING = "cancelling"
    DECIDING = "a fine-tuned model waits for Keep or Discard"


@dataclass(frozen=True)
class Controls:
    """What one state allows."""

    learn: bool = False
    """Fine-tune and Re-link."""
    edit_session: bool = False
    """Detect cells, choose the model file, set the nucleus radius, save the model (each also
    needs what it works on: a model, an image, a tuned model)."""
    cancel: bool = False
    decide: bool = False
    """Keep and Discard a fine-tuned model (Keep also needs a model the guard changed)."""
    why_not: str = ""
    """Why Fine-tune and Re-link are disabled ("" when they are not, or a job runs)."""


#: the one place that says which buttons each state enables
CONTROLS: dict[FinetuneState, Controls] = {
    FinetuneState.NO_TRACKS: Controls(why_not="open or compute tracks first"),
    FinetuneState.NO_DETECTIONS: Controls(
        edit_session=True, why_not="no cached detections: detect cells first (below)"
    ),
    FinetuneState.CONTRADICTION: Controls(
        edit_session=True,
        why_not="your corrections contradict each other: resolve that first (see above)",
    ),
    FinetuneState.READY: Controls(learn=True, edit_session=True),
    FinetuneState.DETECTING: Controls(cancel=True),
    FinetuneState.FINETUNING: Controls(cancel=True),
    FinetuneState.RELINKING: Controls(cancel=True),
    FinetuneState.CANCELLING: Controls(),
    FinetuneState.DECIDING: Controls(
        decide=True, why_not="keep or discard the fine-tuned model first (below)"
    ),
}


class FinetuneWidget(QWidget):
    """Fine-tunes the model of the active tracking session on its corrections and re-links."""

    def __init__(
        self,
        napari_viewer: napari.Viewer,
        controller: CellectController | None = None,
        config: FinetuneConfig | None = None,
        adapt_config: AdaptConfig | None = None,
    ):
        super().__init__()
        self.viewer = napari_viewer
        self.controller = controller or controller_for(napari_viewer)
        assert self.controller is not None
        #: the FinetuneConfig used (None: the core's defaults)
        self.config = config
        #: the AdaptConfig of the detector part (None: the core's defaults)
        self.adapt_config = adapt_config
        self.state = FinetuneState.NO_TRACKS
        #: the last re-link edit applied
        self.relink_command: Command | None = None
        #: the frames the last re-detection (after keeping an adapted detector) predicted again
        self.redetected_frames: list[int] = []
        self._count_timer = QTimer(self)
        self._count_timer.setSingleShot(True)
        self._count_timer.setInterval(COUNT_DELAY_MS)
        self._count_timer.timeout.connect(self.update_counts)
        self._build()
        disconnect_on_destroy(
            self,
            [
                (self.controller.session_changed, self._on_session_changed),
                (self.controller.refreshed, self._on_refreshed),
                *(
                    (emitter, self._refresh_images)
                    for emitter in (
                        napari_viewer.layers.events.inserted,
                        napari_viewer.layers.events.removed,
                    )
                ),
            ],
        )
        self._refresh_images()
        self._on_session_changed(self.controller.session)

    # ------------------------------------------------------------------ UI
    def _build(self) -> None:
        self.session_label = QLabel()
        self.model_label = QLabel()
        self.counts_label = QLabel()
        self.review_label = QLabel()
        for label in (self.session_label, self.model_label, self.counts_label, self.review_label):
            label.setWordWrap(True)
        #: the corrections' contradiction, if any (Fine-tune and Re-link cannot run then)
        self.contradiction: ContradictoryCorrections | None = None
        self.conflict_button = QPushButton()
        self.conflict_button.setToolTip("Select the node and move the viewer to it")
        self.conflict_button.setVisible(False)
        self.conflict_button.clicked.connect(self._go_to_conflict)

        self.detect_box = QGroupBox("No detections")
        self.detect_text = QLabel(NO_DETECTIONS)
        self.detect_text.setWordWrap(True)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip(
            "The image the tracks belong to (detection and the detector's adaptation run on it)"
        )
        #: the image combo with its label: shown to detect, or to adapt the detector
        self.image_row = QWidget()
        image_layout = QHBoxLayout(self.image_row)
        image_layout.setContentsMargins(0, 0, 0, 0)
        image_layout.addWidget(QLabel("Image:"))
        image_layout.addWidget(self.image_combo, 1)
        self.detect_button = QPushButton("Detect cells")
        self.model_button = QPushButton("Model file...")
        self.model_button.setToolTip("The model bundle (.pt) to detect with and fine-tune")
        self.cell_radius_spin = CellRadiusSpinBox(self.cell_radius_tooltip)
        form = QFormLayout()
        form.addRow(CELL_RADIUS_LABEL, self.cell_radius_spin)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.model_button)
        row.addWidget(self.detect_button)
        box = QVBoxLayout(self.detect_box)
        box.addWidget(self.detect_text)
        box.addLayout(form)
        box.addLayout(row)

        self.finetune_button = QPushButton("Fine-tune")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.relink_after = QCheckBox("Re-link after fine-tuning")
        self.relink_after.setChecked(True)
        self.relink_after.setToolTip(
            "Track the detections again with the tuned model, keeping "
            "every approved link (one edit: Ctrl+Z undoes it)"
        )
        self.adapt_detector = QCheckBox("Also adapt the detector (U-Net heads)")
        self.adapt_detector.setChecked(False)
        self.adapt_detector.setToolTip(ADAPT_HELP)
        self.adapt_detector.toggled.connect(lambda _on: self._update_controls())
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress_label = QLabel()
        self.progress_label.setWordWrap(True)
        self.relink_button = QPushButton("Re-link")
        self.save_model_button = QPushButton("Save model...")
        self.message_label = QLabel()
        self.message_label.setWordWrap(True)
        #: what the next fine-tune trains and about how long (the guard's plan)
        self.plan_label = QLabel()
        self.plan_label.setWordWrap(True)
        self.result_box = QGroupBox("Fine-tuned model, checked on held-back corrections")
        self.result_label = QLabel()
        self.result_label.setWordWrap(True)
        self.keep_button = QPushButton("Keep")
        self.keep_button.setToolTip("Use the tuned model (then re-link, if ticked above)")
        self.discard_button = QPushButton("Discard")
        self.discard_button.setToolTip(
            "Drop the tuned model: the model in use and the tracks stay as they are"
        )
        decide = QHBoxLayout()
        decide.addWidget(self.keep_button)
        decide.addWidget(self.discard_button)
        result_layout = QVBoxLayout(self.result_box)
        result_layout.addWidget(self.result_label)
        result_layout.addLayout(decide)
        self.result_box.setVisible(False)
        #: the last fine-tune's result, until kept or discarded
        self.pending: FinetuneResult | None = None
        self._pending_session: TrackingSession | None = None
        self.changed_list = ChangedLinks(self.controller, self._show)

        buttons = QHBoxLayout()
        buttons.addWidget(self.finetune_button)
        buttons.addWidget(self.cancel_button)
        after = QHBoxLayout()
        after.addWidget(self.relink_button)
        after.addWidget(self.save_model_button)
        layout = QVBoxLayout(scrolled_content(self))
        for widget in (
            self.session_label,
            self.model_label,
            self.counts_label,
            self.conflict_button,
            self.review_label,
            self.detect_box,
        ):
            layout.addWidget(widget)
        layout.addWidget(self.adapt_detector)
        layout.addWidget(self.image_row)
        layout.addLayout(buttons)
        layout.addWidget(self.relink_after)
        layout.addWidget(self.plan_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.result_box)
        layout.addLayout(after)
        layout.addWidget(self.message_label)
        layout.addWidget(QLabel("Links changed by the last re-link:"))
        layout.addWidget(self.changed_list, 1)

        self.finetune_button.clicked.connect(self.fine_tune)
        self.jobs = JobRunner(
            self,
            cancel_button=self.cancel_button,
            progress=self.progress,
            progress_label=self.progress_label,
            report=self._report_job,
            on_finished=self._on_job_finished,
            error_text=_error_text,
            on_cancel=lambda: self._set_state(FinetuneState.CANCELLING),
        )
        self.relink_button.clicked.connect(self.relink)
        self.keep_button.clicked.connect(self.keep)
        self.discard_button.clicked.connect(self.discard)
        self.save_model_button.clicked.connect(lambda: self.save_model())
        self.detect_button.clicked.connect(self.detect)
        self.model_button.clicked.connect(self._choose_model)

    # ------------------------------------------------------------------ display
    @property
    def running(self) -> bool:
        return self.jobs.running

    def _on_session_changed(self, session: TrackingSession | None) -> None:
        # the radius of the run the tracks come from (the Track cells widget's), else as trained
        self.cell_radius_spin.set_radius(session.cell_radius if session is not None else None)
        self._update_controls()
        self.update_counts()

    def _on_refreshed(self, _changes: Any) -> None:
        self._count_timer.start()

    def _idle_state(self) -> FinetuneState:
        """The state when no job runs, from the active session and its corrections."""
        session = self.controller.session
        if session is None:
            return FinetuneState.NO_TRACKS
        if not session.detections:
            return FinetuneState.NO_DETECTIONS
        if self.pending is not None:
            return FinetuneState.DECIDING
        if self.contradiction is not None:
            return FinetuneState.CONTRADICTION
        return FinetuneState.READY

    def _set_state(self, state: FinetuneState) -> None:
        self.state = state
        self._update_controls()

    def _update_controls(self) -> None:
        """Enable the buttons the state allows (see :data:`CONTROLS`) and describe the session."""
        if not self.running:
            self.state = self._idle_state()
        allowed = CONTROLS[self.state]
        session = self.controller.session
        self.detect_box.setVisible(session is not None and not session.detections)
        self.image_row.setVisible(
            self.detect_box.isVisibleTo(self) or self.adapt_detector.isChecked()
        )
        self.adapt_detector.setEnabled(allowed.learn)
        model = session is not None and has_model(session)
        self.model_button.setEnabled(allowed.edit_session)
        self.cell_radius_spin.setEnabled(allowed.edit_session)
        self.detect_button.setEnabled(
            allowed.edit_session and model and self.image_combo.count() > 0
        )
        self.detect_button.setToolTip(
            "Run the model's detector on the image (no linking): fine-tuning then matches your "
            "tracks to the detections"
            if model
            else "no model: choose a model file (the bundled model is not installed)"
        )
        self.result_box.setVisible(self.pending is not None)
        self.keep_button.setEnabled(
            allowed.decide and self.pending is not None and self.pending.changed
        )
        self.discard_button.setEnabled(allowed.decide)
        self.finetune_button.setEnabled(allowed.learn)
        self.relink_button.setEnabled(allowed.learn)
        self.finetune_button.setToolTip(
            allowed.why_not or "Fine-tune the link, division and merge scorers on your corrections"
        )
        self.relink_button.setToolTip(
            allowed.why_not
            or "Link the detections again with the "
            "session's model, keeping every "
            "approved link and node"
        )
        self.save_model_button.setEnabled(allowed.edit_session and session.model_tuned)
        self.cancel_button.setEnabled(allowed.cancel)
        if session is None:
            self.session_label.setText("No tracks. Track an image or open a tracks file.")
            self.model_label.setText("")
            return
        frames = (
            f"{len(session.detections)} frames of detections"
            if session.detections
            else ("no detections")
        )
        self.session_label.setText(f"<b>{session.name}</b>: {len(session.graph)} nodes, {frames}")
        self.model_label.setText(f"Model: {describe_model(session)}")

    def update_counts(self) -> None:
        """Recount the corrections and the review queue of the active session."""
        self._count_timer.stop()
        session = self.controller.session
        self.contradiction = None
        self.conflict_button.setVisible(False)
        if session is None:
            self.counts_label.setText("")
            self.review_label.setText("")
            self._update_controls()
            return
        try:
            counts = session.corrections().counts()
        except ContradictoryCorrections as error:
            self._show_contradiction(error)
        except CellectError as error:
            self.counts_label.setStyleSheet(ERROR_STYLE)
            self.counts_label.setText(f"Corrections cannot be used: {error}")
        else:
            self.counts_label.setStyleSheet("")
            n_div = counts["divides"] + counts["does_not_divide"]
            self.counts_label.setText(
                f"Corrections: {_plural(counts['positive_links'], 'approved link')}, "
                f"{_plural(counts['broken_links'], 'broken link')}, "
                f"{_plural(n_div, 'division label')} ({counts['divides']} dividing)"
            )
            self.counts_label.setToolTip(
                "\n".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items())
            )
        count = self.controller.review.count()
        self.review_label.setText(
            f"Uncertain links and divisions not reviewed: {count} "
            "(N: jump to the next, Shift+N: back)"
        )
        self._update_controls()

    def _show_contradiction(self, error: ContradictoryCorrections) -> None:
        """Say once, in full, what contradicts what, and offer to go to the first node."""
        self.contradiction = error
        conflicts = error.conflicts or (str(error),)
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        self.counts_label.setStyleSheet(ERROR_STYLE)
        self.counts_label.setText(
            f"Your corrections contradict each other: {conflicts[0]}"
            f"{more}. Undo one of the edits, or fix the node, to fine-tune "
            "or re-link."
        )
        self.counts_label.setToolTip("\n".join(conflicts))
        if error.nodes:
            self.conflict_button.setText(f"Go to node {error.nodes[0]}")
            self.conflict_button.setVisible(True)

    def _go_to_conflict(self) -> None:
        error = self.contradiction
        session = self.controller.session
        if error is None or not error.nodes or session is None:
            return
        node = error.nodes[0]
        if not session.graph.has(node):
            self._show("error", f"node {node} is gone (deleted or undone)")
            return
        self.controller.select([node], center=True)

    def _refresh_images(self, *_args: Any) -> None:
        current = self.image_combo.currentText()
        self.image_combo.clear()
        for layer in trackable_images(self.viewer):
            self.image_combo.addItem(layer.name)
        if current:
            self.image_combo.setCurrentText(current)
        self._update_controls()

    def cell_radius_tooltip(self) -> str:
        """The radius field's help and the nucleus radius the session's model was trained on
        (read from the model file the first time, which can take a second)."""
        session = self.controller.session
        if session is None:
            return CELL_RADIUS_HELP
        if session.model is not None:
            return radius_tooltip(lambda: session.model.normalization.reference_radius)
        path = str(session.model_path) if session.model_path is not None else None
        return radius_tooltip(lambda: model_reference_radius(path))

    def _show(self, level: str, text: str) -> None:
        show_status(self.message_label, level, text)
        (logger.info if level == "info" else logger.warning)("%s", text)

    def _report_job(self, level: str, text: str) -> None:
        """How a job's end is told: errors also as a notification."""
        if level == "error":
            self._error(text)
        else:
            self._show(level, text)

    def _error(self, text: str) -> None:
        """In the widget and as a napari notification."""
        from napari.utils.notifications import show_error

        self._show("error", text)
        show_error(text)

    # ------------------------------------------------------------------ fine-tuning
    def fine_tune(self) -> None:
        """Start fine-tuning the active session's model on its corrections."""
        session = self._ready_session()
        if session is None:
            return
        self.discard(quiet=True)
        try:
            trainers = [self._detector_trainer(session)] if self.adapt_detector.isChecked() else []
            job = session.finetune_job(
                self.config, should_stop=self.jobs.should_stop, trainers=trainers
            )
        except (CellectError, ValueError) as error:
            self._error(str(error))
            return
        self._start(
            FinetuneState.FINETUNING,
            "fine-tuning: preparing the training rows...",
            job,
            what="fine-tuning",
            on_step=self._on_finetune_progress,
            on_result=lambda result: self._on_finetuned(session, result),
        )

    def _chosen_images(self, session: TrackingSession) -> Any:
        """The (T, Z, Y, X) data of the image chosen in the image box, checked against the
        tracks (ValueError or CellectError say what is wrong)."""
        layer = next(
            (
                lyr
                for lyr in trackable_images(self.viewer)
                if lyr.name == self.image_combo.currentText()
            ),
            None,
        )
        if layer is None:
            raise ValueError("choose the image the tracks belong to (the Image box)")
        images = as_tzyx(layer)
        last = int(session.graph["t"].max()) if len(session.graph) else -1
        if last >= images.shape[0]:
            raise ValueError(
                f"the tracks reach frame {last} but {layer.name!r} has only "
                f"{images.shape[0]} frames: choose the image the tracks belong to"
            )
        return images

    def _detector_trainer(self, session: TrackingSession) -> Any:
        images = self._chosen_images(session)
        trainer = session.detector_trainer(images, self.adapt_config)
        try:
            seconds = trainer.estimate_seconds(session.corrections())
        except CellectError:
            seconds = None
        self._set_adapt_estimate(seconds, "estimate")
        return trainer

    def _set_adapt_estimate(self, seconds: float | None, source: str) -> None:
        extra = (
            ""
            if seconds is None
            else (
                f"\n\nExtra time: about {_minutes(seconds)} ({source}, on 2 CPU cores; a GPU is "
                "used when there is one)."
            )
        )
        self.adapt_detector.setToolTip(ADAPT_HELP + extra)

    def _on_finetune_progress(self, report: Any) -> None:
        if isinstance(report, FinetunePlan):
            self.plan_label.setText(report.describe().capitalize())
            if "detector" in report.part_seconds:
                self._set_adapt_estimate(report.part_seconds["detector"], "from the plan")
            return
        if not isinstance(report, FinetuneProgress):
            what = (
                report.stage
                if str(report.stage).startswith("detector")
                else "checking the update on held-back corrections"
            )
            self.jobs.show_step(report.done, report.total, f"{what}: {report.done}/{report.total}")
            return
        epochs = max(int(report.epochs), 1)
        rows = ", ".join(f"{v} {k}" for k, v in report.n_rows.items())
        if report.epoch == 0:
            self.jobs.show_step(0, epochs, f"fine-tuning on {rows} training rows...")
            return
        val = (
            ""
            if np.isnan(report.val_loss)
            else (f", validation {report.val_loss:.3f} (best {report.best_val_loss:.3f})")
        )
        self.jobs.show_step(
            report.epoch,
            epochs,
            f"{report.stage}: epoch {report.epoch}/"
            f"{epochs}, training loss "
            f"{report.train_loss:.3f}{val}",
        )

    def _on_finetuned(self, session: TrackingSession, result: FinetuneResult) -> None:
        self.pending, self._pending_session = result, session
        lines = result.report.lines()
        if result.changed:
            lines.append(
                "Keep uses the tuned model; Discard leaves the model and tracks as they are."
            )
            self._show(
                "info", f"fine-tuned: {model_name(result.bundle)} is ready: keep or discard it"
            )
        else:
            lines.append("The guard adopted nothing: the model in use stays.")
            self._show(
                "info",
                "fine-tuned, but nothing did better on your held-back "
                "corrections: the model in use stays",
            )
        self.result_label.setText("\n".join(lines))

    def keep(self) -> None:
        """Make the pending tuned model the session's model, then re-link if asked."""
        result, session = self.pending, self._pending_session
        if result is None or session is None or self.running:
            return
        self.pending = self._pending_session = None
        kept = session.keep_finetune(result)
        self._update_controls()
        if not kept:
            return
        self._show(
            "info",
            f"kept: {model_name(result.bundle)} is now the model of "
            f"{session.name} (Save model... writes it)",
        )
        if self.controller.session is not session:
            return
        if session.needs_redetection:  # the detector was adopted: its detections are needed
            self.redetect()
        elif self.relink_after.isChecked():
            self.relink()

    def discard(self, quiet: bool = False) -> None:
        """Drop the pending tuned model; the model in use and the tracks are untouched."""
        if self.pending is None:
            return
        self.pending = self._pending_session = None
        self._update_controls()
        if not quiet:
            self._show("info", "discarded: the model in use and the tracks are unchanged")

    # ------------------------------------------------------------------ re-linking
    def relink(self) -> None:
        """Link the active session's detections again with its model, keeping approved work."""
        session = self._ready_session()
        if session is None:
            return
        try:
            job = session.relink_job(should_stop=self.jobs.should_stop)
        except CellectError as error:
            self._error(str(error))
            return
        top = session.history.last_done  # the result applies only to the tracks of now
        self._start(
            FinetuneState.RELINKING,
            "re-linking (approved links are kept)...",
            job,
            what="re-linking",
            on_result=lambda output: self._on_relinked(session, top, output),
        )

    def _on_relinked(
        self, session: TrackingSession, top: Command | None, output: RelinkOutput
    ) -> bool:
        if session.history.last_done is not top:
            self._error(
                "the tracks were edited while re-linking, so the result was not applied; "
                "press Re-link again"
            )
            return False
        command = session.apply_relink(
            output, lambda edit: self.controller.execute(edit, session=session)
        )
        if command is None:
            return False
        self.relink_command = command
        self.changed_list.show_links(session, command, output.changed, output.removed)
        made, gone = len(output.changed), len(output.removed)
        self._show(
            "info",
            f"re-linked: {made + gone} link(s) changed ({made} made, {gone} "
            "removed; listed and highlighted); Ctrl+Z undoes the re-link",
        )
        return True

    def redetect(self) -> None:
        """Predict again, with the session's adapted U-Net, only the frames nobody approved
        (and their neighbours), then re-link keeping approved work: one edit."""
        session = self._ready_session()
        if session is None:
            return
        try:
            images = self._chosen_images(session)
        except (CellectError, ValueError) as error:
            self._error(f"{error}; the detector's frames were not detected again")
            return
        top = session.history.last_done
        graph = session.graph.copy()
        n = len(frames_to_redetect(graph, int(images.shape[0])))
        self._start(
            FinetuneState.RELINKING,
            f"detecting {n} frame(s) nobody approved with the adapted "
            "detector, then re-linking (approved links are kept)...",
            redetect_relink_job,
            images,
            session.model,
            graph,
            session.detections,
            z_ratio=session.anisotropy,
            corrections=session.corrections(),
            device="auto",
            cell_radius=session.cell_radius,
            what="re-detection",
            on_step=lambda step: self.jobs.show_step(
                step.done, step.total, f"{step.stage}: {step.done}/{max(step.total, 1)}"
            ),
            on_result=lambda output: self._on_redetected(session, top, output),
        )

    def _on_redetected(
        self, session: TrackingSession, top: Command | None, output: RedetectOutput
    ) -> None:
        if session.history.last_done is not top:
            self._error(
                "the tracks were edited while re-detecting, so the result was not "
                "applied; keep editing, then press Re-link"
            )
            return
        self.redetected_frames = list(output.frames)
        command = session.apply_redetect(
            output, lambda edit: self.controller.execute(edit, session=session)
        )
        if command is None:
            return
        relink = output.relink
        self.relink_command = command
        self.changed_list.show_links(session, command, relink.changed, relink.removed)
        made, gone = len(relink.changed), len(relink.removed)
        self._show(
            "info",
            f"detected {len(output.frames)} frame(s) nobody approved again and "
            f"re-linked: {made + gone} link(s) changed ({made} made, {gone} "
            "removed; listed and highlighted); Ctrl+Z undoes the re-link",
        )

    # ------------------------------------------------------------------ detection
    def detect(self) -> None:
        """Detect cells on the chosen image for tracks that have no detections."""
        session = self.controller.session
        layer = next(
            (
                lyr
                for lyr in trackable_images(self.viewer)
                if lyr.name == self.image_combo.currentText()
            ),
            None,
        )
        if session is None or self.running:
            return
        if layer is None:
            self._error("choose the image the tracks belong to")
            return
        try:
            images = as_tzyx(layer)
        except ValueError as error:
            self._error(str(error))
            return
        last = int(session.graph["t"].max()) if len(session.graph) else -1
        if last >= images.shape[0]:
            self._error(
                f"the tracks reach frame {last} but {layer.name!r} has only "
                f"{images.shape[0]} frames: choose the image the tracks belong to"
            )
            return
        z_ratio = geometry_of(layer).z_ratio
        radius = self.cell_radius_spin.radius()
        size = f" (nuclei of radius {radius:g} px)" if radius else ""
        self._start(
            FinetuneState.DETECTING,
            f"detecting cells in {layer.name}{size}...",
            detect_job,
            images,
            session.model,
            session.model_path,
            z_ratio=z_ratio,
            device="auto",
            cell_radius=radius,
            what="detection",
            on_step=lambda step: self.jobs.show_step(
                step.done, step.total, f"detecting cells: {step.done}/{max(step.total, 1)} frames"
            ),
            on_result=lambda output: self._on_detected(session, output, z_ratio, radius),
        )

    def _on_detected(
        self,
        session: TrackingSession,
        output: DetectOutput,
        z_ratio: float,
        cell_radius: float | None,
    ) -> None:
        session.use_detections(output, z_ratio, cell_radius)
        n = sum(len(d) for d in output.detections)
        self._show("info", f"{n} detections in {len(output.detections)} frames: ready to fine-tune")

    def _choose_model(self) -> None:
        session = self.controller.session
        if session is None:
            return
        path = _dialogs.ask_open_path(self, "Model bundle", str(Path.home()), "Model (*.pt)")
        if path:
            self.set_model_file(path)

    def set_model_file(self, path: str | Path) -> None:
        """Use the model bundle ``path`` for the active session (loaded when a job needs it)."""
        session = self.controller.session
        if session is None:
            return
        session.model, session.model_path = None, Path(path)
        session.model_tuned, session.model_saved_as = False, None
        self._update_controls()

    # ------------------------------------------------------------------ saving the model
    def save_model(self, path: str | Path | None = None) -> Path | None:
        """Write the session's fine-tuned model (asks where when ``path`` is None); never over
        the file the session's model came from, nor over the bundled model."""
        session = self.controller.session
        if session is None:
            return None
        if path is None and session.model_tuned:
            path = _dialogs.ask_save_path(
                self, "Save fine-tuned model", str(suggested_path(session)), "Model bundle (*.pt)"
            )
            if not path:
                return None
        try:
            target = save_tuned_model(session, path or "")
        except (CellectError, OSError) as error:
            self._error(f"could not save the model: {error}")
            return None
        self._show("info", f"saved {model_name(session.model)} to {target}")
        self._update_controls()
        return target

    # ------------------------------------------------------------------ running jobs
    def _ready_session(self) -> TrackingSession | None:
        session = self.controller.session
        if self.running:
            return None
        if session is None:
            self._error("no tracks: track an image or open a tracks file first")
            return None
        if not session.detections:
            self._error(NO_DETECTIONS)
            return None
        return session

    def _start(
        self,
        state: FinetuneState,
        text: str,
        job: Callable[..., Any] | Generator[Any, None, Any],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self._show("info", text)
        if self.jobs.start(job, *args, busy_text=text, cancelled_text=CANCELLED, **kwargs):
            self._set_state(state)

    def _on_job_finished(self, _outcome: Outcome) -> None:
        self._update_controls()
        self.update_counts()


def _error_text(what: str, error: BaseException) -> str:
    """The core's own errors say what is wrong; anything else is named with the job."""
    return str(error) if isinstance(error, CellectError) else failed_text(what, error)


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
