"""Track-cells dock widget: run the CELLECT pipeline on an image layer in a worker thread.

The pipeline (``napari_cellect.pipeline.iter_tracking``) is a generator that yields a progress
record after each frame pair and returns the result; the widget's :class:`~._jobs.JobRunner`
runs it in a thread, so the viewer stays responsive. Centres appear in a preview layer as frames
finish, and the tracks as soon as they are linked, while the masks are still being segmented.
Cancel sets the ``should_stop`` flag the pipeline checks before each frame pair *and* asks the
worker to quit at its next yield, so a run stops within one frame pair.

The tracking function is an attribute (``tracking_function``) so tests and other front ends can
pass their own generator with the same signature.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_cellect._napari import _dialogs
from napari_cellect._napari._cell_radius import (
    AUTO_RADIUS_HELP,
    CELL_RADIUS_HELP,
    CELL_RADIUS_LABEL,
    NAPARI_RADIUS,
    CellRadiusSpinBox,
    radius_tooltip,
)
from napari_cellect._napari._centres_preview import CentresPreview
from napari_cellect._napari._controller import CellectController, controller_for
from napari_cellect._napari._growing_tracks import GrowingTracks
from napari_cellect._napari._jobs import JobRunner, Outcome
from napari_cellect._napari._layer_data import tracks_layer_data
from napari_cellect._napari._model_files import BUNDLED_MODEL
from napari_cellect._napari._qt_utils import (
    disconnect_on_destroy,
    scrolled_content,
    show_status,
    trackable_images,
)
from napari_cellect._napari._tracking_job import (
    WarningCollector,
    as_tzyx,
    geometry_of,
    image_path,
    model_reference_radius,
    tiff_z_ratio,
)
from napari_cellect._napari._tracks_update import set_tracks
from napari_cellect.session import TrackingSession
from napari_cellect.session.jobs import (
    TrackingFunction,
    TrackingOutput,
    TracksReady,
    default_tracking_function,
    tracking_job,
)
from napari_cellect.track.journal import Journal, journal_folder_for

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Tracks

logger = logging.getLogger(__name__)

#: how the status line starts when it tells about the nucleus radius estimate
RADIUS_STATUS = "Nucleus radius: "

DEVICES = ("auto", "cpu", "cuda", "mps")
#: largest tile edge offered in the widget
MAX_TILE = 4096
PREVIEW_COLOR = "yellow"
PREVIEW_SIZE = 5.0
TILE_HELP = (
    "The image is processed in blocks of this many voxels (depth, height, width), "
    "overlapping a little. Smaller blocks need less memory; automatic fits the model."
)
#: most distinct warnings shown with a result
MAX_WARNINGS_SHOWN = 3

#: progress text per pipeline stage
STAGE_TEXT = {
    "detect": "detecting cells: {done}/{total} frame pairs",
    "refine": "looking again, magnified, at predicted divisions...",
    "link": "linking tracks...",
    "labels": "segmenting: {done}/{total} frames",
}


def _format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def _why_untrackable(layer: Image) -> str:
    """Why an image layer is not offered for tracking (RGB, or not a time series)."""
    if layer.rgb:
        return (
            f"'{layer.name}' is an RGB image: track its nuclear channel on its own "
            "(right-click the layer, Split RGB)"
        )
    if layer.ndim == 2:
        return (
            f"'{layer.name}' is a single 2D image (Y, X) without a time axis: open a time "
            "series, (T, Y, X) or (T, Z, Y, X)"
        )
    return (
        f"'{layer.name}' has {layer.ndim} dimensions: expected (T, Z, Y, X) or (T, Y, X); "
        "save each channel on its own"
    )


def _what_was_said(warnings: list[str], found: bool) -> str:
    """The warnings the core logged during a run, as a line under the result (an empty image
    says why nothing was found)."""
    if not warnings:
        return (
            ""
            if found
            else ("\nNo cells were found: check the image, the model and the nucleus radius")
        )
    more = len(warnings) - MAX_WARNINGS_SHOWN
    said = "; ".join(warnings[:MAX_WARNINGS_SHOWN]) + (f" (and {more} more)" if more > 0 else "")
    return "\n" + ("Warnings: " if found else "No cells, because: ") + said


class TrackingWidget(QWidget):
    """Runs detection, merging and linking on an image layer and shows the result."""

    def __init__(
        self,
        napari_viewer: napari.Viewer,
        controller: CellectController | None = None,
        tracking_function: TrackingFunction | None = None,
    ):
        super().__init__()
        self.viewer = napari_viewer
        self.controller = controller or controller_for(napari_viewer)
        assert self.controller is not None
        #: the generator function run by the worker (None: the CELLECT pipeline)
        self.tracking_function = tracking_function
        self.result_session: TrackingSession | None = None
        self._preview: CentresPreview | None = None
        self._tracks_preview: Tracks | None = None
        self._growing = GrowingTracks()
        self._started = 0.0
        self._run_layer: Image | None = None
        self._run_model_file: str | None = None
        self._run_cell_radius: float | str | None = None
        #: the radius estimated from the chosen image and shown in the radius field (None: none
        #: found, or not yet), and the estimate's worker while it runs
        self._estimated_radius: float | None = None
        self._estimate_worker: Any = None
        self._stage, self._stage_started, self._stage_first = "", 0.0, 0
        #: the warnings the core logs during a run, shown with the result
        self._warnings = WarningCollector()
        #: the status line's why-no-layer-can-be-tracked text, cleared once it no longer holds
        self._layers_said = ""
        self._build()
        self._connect_viewer()
        self._refresh_layers()

    # ------------------------------------------------------------------ UI
    def _build(self) -> None:
        from napari_cellect.settings.tiling import TilingConfig

        self.image_combo = QComboBox()
        self.model_combo = QComboBox()
        installed = "" if BUNDLED_MODEL.exists() else " (not installed)"
        self.model_combo.addItem(f"Bundled default model{installed}", "default")
        self.model_combo.addItem("Model file...", "file")
        self.model_path = QLineEdit()
        self.model_path.setPlaceholderText("a .pt model bundle")
        self.model_browse = QPushButton("Browse...")
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.z_ratio = QDoubleSpinBox()
        self.z_ratio.setRange(0.01, 100.0)
        self.z_ratio.setDecimals(3)
        self.z_ratio.setValue(1.0)
        self.z_ratio.setToolTip("z spacing / xy spacing (from the image layer's scale)")
        self.cell_radius_spin = CellRadiusSpinBox(self.cell_radius_tooltip, zero="auto")
        self.cell_radius_spin.valueChanged.connect(self._on_radius_typed)
        self.scheduler_edit = QLineEdit()
        self.scheduler_edit.setPlaceholderText("this machine")
        self.scheduler_edit.setToolTip(
            "optional: run the U-Net on a dask cluster, tcp://HOST:PORT of a running scheduler "
            "or local:N for N worker processes here (needs dask.distributed)"
        )
        self.tile_auto = QCheckBox("automatic")
        self.tile_auto.setChecked(True)
        self.tile_auto.setToolTip(TILE_HELP)
        self.tile_spins = []
        for value in TilingConfig().tile:
            spin = QSpinBox()
            spin.setRange(1, MAX_TILE)
            spin.setValue(int(value))
            spin.setEnabled(False)
            spin.setToolTip(TILE_HELP)
            self.tile_spins.append(spin)
        self.run_button = QPushButton("Run tracking")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress_label = QLabel()
        self.status = QLabel()
        self.status.setWordWrap(True)

        model_row = QHBoxLayout()
        model_row.addWidget(self.model_path, 1)
        model_row.addWidget(self.model_browse)
        tile_row = QHBoxLayout()
        for axis, spin in zip(("depth", "height", "width"), self.tile_spins, strict=True):
            tile_row.addWidget(QLabel(axis))
            tile_row.addWidget(spin, 1)
        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Model", self.model_combo)
        form.addRow("", model_row)
        form.addRow("Device", self.device_combo)
        form.addRow("z step / xy pixel", self.z_ratio)
        form.addRow(CELL_RADIUS_LABEL, self.cell_radius_spin)
        form.addRow("Block size (voxels)", self.tile_auto)
        form.addRow("", tile_row)
        form.addRow("Scheduler", self.scheduler_edit)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(scrolled_content(self))
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.model_combo.currentIndexChanged.connect(self._on_model_kind)
        self.model_browse.clicked.connect(self._browse_model)
        self.tile_auto.toggled.connect(lambda on: [s.setEnabled(not on) for s in self.tile_spins])
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        self.run_button.clicked.connect(self.run)
        self.jobs = JobRunner(
            self,
            cancel_button=self.cancel_button,
            progress=self.progress,
            progress_label=self.progress_label,
            report=self._show,
            on_finished=self._on_finished,
            cancelling_text="cancelling after the current frame pair...",
        )
        self._on_model_kind()

    def _connect_viewer(self) -> None:
        events = self.viewer.layers.events
        disconnect_on_destroy(
            self,
            [
                (emitter, self._refresh_layers)
                for emitter in (events.inserted, events.removed, events.reordered)
            ],
        )

    def _refresh_layers(self, *_args: Any) -> None:
        current = self.image_layer()
        layers = trackable_images(self.viewer)
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        for layer in layers:
            self.image_combo.addItem(layer.name)
        if current in layers:
            self.image_combo.setCurrentIndex(layers.index(current))
        self.image_combo.blockSignals(False)
        if current not in layers:
            self._on_image_changed()
        self._update_run_button()

    def _update_run_button(self) -> None:
        has_image = self.image_combo.count() > 0
        self.run_button.setEnabled(has_image and not self.running)
        self.run_button.setToolTip(
            "Track the cells of the chosen image" if has_image else self._nothing_to_track()
        )
        said = self._nothing_to_track() if not has_image and self._untrackable_layers() else ""
        if said or (self._layers_said and self.status.text() == self._layers_said):  # stale: gone
            self._show("error", said)
        self._layers_said = said

    def _untrackable_layers(self) -> list[Image]:
        from napari.layers import Image

        trackable = trackable_images(self.viewer)
        return [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Image) and layer not in trackable
        ]

    def _nothing_to_track(self) -> str:
        """Why no image layer can be tracked: none is open, or what is wrong with each."""
        reasons = [_why_untrackable(layer) for layer in self._untrackable_layers()]
        if not reasons:
            return "Open an image first (T, Z, Y, X) or (T, Y, X): there is nothing to track"
        return "\n".join(reasons)

    def image_layer(self) -> Image | None:
        name = self.image_combo.currentText() if hasattr(self, "image_combo") else ""
        return next((lyr for lyr in trackable_images(self.viewer) if lyr.name == name), None)

    def set_image_layer(self, layer: Image) -> None:
        self.image_combo.setCurrentText(layer.name)

    def _on_image_changed(self, *_args: Any) -> None:
        layer = self.image_layer()
        if layer is None:
            return
        ratio, origin = geometry_of(layer).z_ratio, "from the image layer's scale"
        if layer.ndim >= 4 and np.allclose(layer.scale[1:], 1.0):
            from_file = tiff_z_ratio(image_path(layer))
            if from_file is not None:  # a TIFF napari's own reader opened without its voxel size
                ratio, origin = from_file, f"from the voxel size in {image_path(layer).name}"
        self.z_ratio.setValue(ratio)
        self.z_ratio.setToolTip(f"z spacing / xy spacing ({origin})")
        self._estimate_radius(layer)

    def _estimate_radius(self, layer: Image) -> None:
        """Estimate the chosen image's nucleus radius off the GUI thread; it fills the radius
        field unless the user typed a radius there."""
        from napari.qt.threading import create_worker

        from napari_cellect.infer.radius_estimate import estimate_radius

        if self._estimate_worker is not None:
            self._estimate_worker.quit()
        try:
            images = as_tzyx(layer)
        except ValueError:
            return
        worker = create_worker(
            estimate_radius,
            images,
            float(self.z_ratio.value()),
            _start_thread=False,
            _ignore_errors=True,
        )
        worker.returned.connect(lambda estimate: self._on_estimate(worker, estimate))
        worker.errored.connect(
            lambda error: logger.warning("cannot estimate the nucleus radius: %s", error)
        )
        self._estimate_worker = worker
        worker.start()

    def _on_estimate(self, worker: Any, estimate: Any) -> None:
        if worker is not self._estimate_worker:  # another image was chosen meanwhile
            return
        self._estimate_worker = None
        try:
            spin = self.cell_radius_spin
            spin.value()
        except RuntimeError:  # the widget was closed meanwhile
            return
        if spin.radius() is not None and spin.radius() != self._estimated_radius:
            return  # typed by the user: theirs wins
        self._estimated_radius = None if estimate.radius is None else round(estimate.radius, 2)
        spin.blockSignals(True)
        spin.setValue(self._estimated_radius or 0.0)
        spin.setSuffix(" (estimated)" if self._estimated_radius else "")
        spin.blockSignals(False)
        spin.setStatusTip(estimate.describe())
        shown = self.status.text()
        if estimate.radius is None and not (shown and not shown.startswith(RADIUS_STATUS)):
            # never over what a run reported: the field's status tip keeps the reason anyway
            self._show(
                "warning",
                f"{RADIUS_STATUS}{estimate.describe()}; the frames are used "
                "as they are unless you type a radius",
            )

    def _on_radius_typed(self, *_args: Any) -> None:
        spin = self.cell_radius_spin
        if spin.suffix() and spin.radius() != self._estimated_radius:
            spin.setSuffix("")

    def _on_model_kind(self, *_args: Any) -> None:
        is_file = self.model_combo.currentData() == "file"
        self.model_path.setEnabled(is_file)
        self.model_browse.setEnabled(is_file)

    def _browse_model(self) -> None:
        path = _dialogs.ask_open_path(self, "Model bundle", str(Path.home()), "Model (*.pt)")
        if path:
            self.model_path.setText(path)

    # ------------------------------------------------------------------ parameters
    def tile(self) -> tuple[int, int, int] | None:
        if self.tile_auto.isChecked():
            return None
        return tuple(int(s.value()) for s in self.tile_spins)  # type: ignore[return-value]

    def model_file(self) -> str | None:
        if self.model_combo.currentData() != "file":
            return None
        return self.model_path.text().strip() or None

    def cell_radius(self) -> float | str:
        """The nucleus radius to resize the frames for: the one typed in, or ``"auto"`` (the
        field shows the estimate, or nothing yet): the run estimates it the same way and
        leaves the frames as they are when it is close to the model's size."""
        radius = self.cell_radius_spin.radius()
        return "auto" if radius is None or radius == self._estimated_radius else radius

    def cell_radius_tooltip(self) -> str:
        """The radius field's help and the nucleus radius the chosen model was trained on
        (read from the model file the first time, which can take a second)."""
        estimate = self.cell_radius_spin.statusTip()
        auto = f"\n{AUTO_RADIUS_HELP}" + (f"\nEstimated: {estimate}" if estimate else "")
        if self.model_combo.currentData() == "file" and self.model_file() is None:
            return (
                f"{CELL_RADIUS_HELP}\nChoose a model file to see the radius it was trained "
                f"on.{auto}"
            )
        return radius_tooltip(lambda: model_reference_radius(self.model_file())) + auto

    # ------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        return self.jobs.running

    def scheduler(self) -> str | None:
        """The dask scheduler typed in (checked), or None to run here; raises InputError."""
        from napari_cellect.infer.distributed import parse_scheduler

        text = self.scheduler_edit.text().strip()
        if not text:
            return None
        parse_scheduler(text)
        return text

    def run(self) -> None:
        """Start tracking the chosen image layer in a worker thread."""
        if self.running:
            return
        layer = self.image_layer()
        if layer is None:
            self._show(
                "error",
                self._nothing_to_track()
                if self._untrackable_layers()
                else "choose an image layer (T, Z, Y, X) or (T, Y, X) to track",
            )
            return
        if self.model_combo.currentData() == "file" and self.model_file() is None:
            self._show("error", "choose a model file, or use the bundled default model")
            return
        try:
            images = as_tzyx(layer)
            scheduler = self.scheduler()
        except ValueError as error:  # InputError is a ValueError
            self._show("error", str(error))
            return
        self._run_layer = layer
        self._run_model_file = self.model_file()
        self._run_cell_radius = self.cell_radius()
        self.result_session = None
        self._started = self._stage_started = time.monotonic()
        self._stage, self._stage_first = "", 0
        self._warnings.start()
        self._show("info", f"tracking {layer.name}...")
        function = self.tracking_function or functools.partial(
            default_tracking_function(), radius_option=NAPARI_RADIUS
        )
        self.jobs.start(
            tracking_job,
            function,
            images,
            self.model_file(),
            z_ratio=float(self.z_ratio.value()),
            device=self.device_combo.currentText(),
            tile=self.tile(),
            cell_radius=self._run_cell_radius,
            scheduler=scheduler,
            what="tracking",
            busy_text="loading the model...",
            on_step=self._on_progress,
            on_result=self._on_result,
        )
        self.run_button.setEnabled(False)

    def _on_progress(self, progress: Any) -> None:
        if isinstance(progress, TracksReady):
            self._show_tracks(progress.graph)
            return
        done = int(getattr(progress, "done", 0))
        total = max(int(getattr(progress, "total", 0)), 1)
        stage = str(getattr(progress, "stage", ""))
        if stage != self._stage:  # each stage has its own pace, timed from its first record
            self._stage, self._stage_started = stage, time.monotonic()
            self._stage_first = done
        elapsed = time.monotonic() - self._stage_started
        rate_done = done - self._stage_first
        left = ""
        if done < total:
            left = (
                f", about {_format_seconds(elapsed / rate_done * (total - done))} left"
                if rate_done > 0
                else ", estimating the time left..."
            )
        self.jobs.show_step(
            done,
            total,
            STAGE_TEXT.get(stage, "{done}/{total}").format(done=done, total=total) + left,
        )
        detections = getattr(progress, "detections", None)
        if detections is not None and len(getattr(detections, "positions", ())):
            self._show_centres(detections, total)
        parents = getattr(progress, "parent_index", None)
        if detections is not None and parents is not None:
            self._growing.add(int(detections.t), detections.positions, parents)
            if self._growing.n_links:
                self._show_tracks(self._growing.graph(), linked=False)

    def _show_centres(self, detections: Any, frames: int) -> None:
        """One more frame's centres (``frames``: the run's number of frames)."""
        layer = self._run_layer
        if layer is None:
            return
        geometry = geometry_of(layer)
        positions = np.asarray(detections.positions, dtype=np.float64).reshape(-1, 3)
        coords = np.column_stack([np.full(len(positions), float(detections.t)), positions])
        if geometry.spatial_ndim == 2:
            coords = np.delete(coords, 1, axis=1)
        if self._preview is None or self._preview.layer not in self.viewer.layers:
            self._preview = CentresPreview.create(
                self.viewer,
                coords,
                expected=len(coords) * frames,
                name=f"{layer.name} centres (running)",
                scale=geometry.layer_scale,
                face_color=PREVIEW_COLOR,
                size=PREVIEW_SIZE,
            )
            self.viewer.layers.selection.active = layer
        else:
            self._preview.append(coords)

    def _show_tracks(self, graph: Any, linked: bool = True) -> None:
        """Tracks while the run goes on: the frames finished so far, linked pair by pair
        (``linked=False``), then the whole linking, shown while the masks are segmented; the
        result replaces them."""
        from napari.layers import Layer

        layer = self._run_layer
        if layer is None or graph.n_edges == 0:
            return
        data, kwargs, kind = tracks_layer_data(graph, geometry_of(layer), layer.name, {})
        preview = self._tracks_preview
        if preview is not None and preview in self.viewer.layers:
            set_tracks(preview, data, kwargs["graph"])
        else:
            kwargs["name"] = f"{layer.name} tracks (running)"
            self._tracks_preview = Layer.create(data, kwargs, kind)
            self.viewer.add_layer(self._tracks_preview)
            self.viewer.layers.selection.active = layer
        if linked:
            self.progress_label.setText("tracks linked; making the masks...")

    def _on_result(self, output: TrackingOutput) -> bool:
        layer = self._run_layer
        self._remove_preview()
        if layer is None:
            self._show("error", "tracking returned no result")
            return False
        graph = output.result.graph
        geometry = geometry_of(layer)
        labels = output.labels
        if labels is not None:
            labels = np.array(labels)  # writable, in memory: edits relabel it in place
            if geometry.spatial_ndim == 2 and labels.ndim == 4:
                labels = labels[:, 0]
        session = TrackingSession.from_tracking(
            dataclasses.replace(output, labels=labels),
            z_ratio=float(self.z_ratio.value()),
            model_path=self._run_model_file,
            name=f"{layer.name} tracked",
            geometry=geometry,
            image_shape=tuple(int(n) for n in as_tzyx(layer).shape),
            journal_folder=self._journal_folder(layer),
            cell_radius=(
                output.result.cell_radius
                if self._run_cell_radius == "auto"
                else self._run_cell_radius
            ),  # what the frames were resized for
        )
        try:
            session.ensure_journal()
        except OSError as error:
            logger.warning("cannot autosave the tracking result: %s", error)
        self.controller.add_session(session)
        self.result_session = session
        n_tracks = len(np.unique(graph.track_ids())) if len(graph) else 0
        text = (
            f"{len(graph)} cells, {n_tracks} tracks, {len(graph.divisions())} divisions in "
            f"{_format_seconds(time.monotonic() - self._started)}"
        )
        self._show(
            "info" if len(graph) else "error",
            text + _what_was_said(self._warnings.messages(), found=len(graph) > 0),
        )
        return True

    @staticmethod
    def _journal_folder(layer: Image) -> Path | None:
        """Beside the image (as for the CSV one would save there), unless that is taken."""
        path = image_path(layer)
        if path is None or not path.parent.is_dir():
            return None
        folder = journal_folder_for(path.with_name(f"{path.stem}_tracks.csv"))
        if Journal.exists(folder):  # never overwrite unsaved edits of an earlier session
            folder = folder.with_name(
                f"{path.stem}_tracks-{time.strftime('%Y%m%d-%H%M%S')}.csv.cellect-journal"
            )
        return folder

    def _on_finished(self, _outcome: Outcome) -> None:
        self._remove_preview()  # a failed or cancelled run leaves none behind
        self._warnings.stop()
        self._update_run_button()

    def _remove_preview(self) -> None:
        centres = self._preview.layer if self._preview is not None else None
        for preview in (centres, self._tracks_preview):
            if preview is not None and preview in self.viewer.layers:
                self.viewer.layers.remove(preview)
        self._preview = self._tracks_preview = None
        self._growing = GrowingTracks()

    def _show(self, level: str, text: str) -> None:
        show_status(self.status, level, text)
