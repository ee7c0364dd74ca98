"""Export dock widget: the active session's tracks as CSV, Cell Tracking Challenge or GEFF.

CTC masks come from the session's Labels layer when there is one (values are track ids, as
``write_ctc`` expects); without one, each node is drawn as a ball of its radius when the image
size is known, else only ``res_track.txt`` is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_cellect._napari import _dialogs
from napari_cellect._napari._controller import CellectController, controller_for
from napari_cellect._napari._qt_utils import disconnect_on_destroy, scrolled_content, show_status
from napari_cellect.errors import CellectError
from napari_cellect.session.export import export_session

if TYPE_CHECKING:
    import napari

    from napari_cellect.session import TrackingSession


@dataclass(frozen=True)
class ExportFormat:
    """One export target: ``folder`` formats are chosen as a folder, others as a file."""

    key: str
    label: str
    suffix: str
    folder: bool
    dialog_filter: str


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("csv", "Tracks CSV", ".csv", False, "Tracks CSV (*.csv)"),
    ExportFormat("ctc", "Cell Tracking Challenge (res_track.txt + masks)", "_RES", True, ""),
    ExportFormat("geff", "GEFF (zarr)", ".geff", False, "GEFF (*.geff *.zarr)"),
)


class ExportWidget(QWidget):
    """Exports the viewer's active tracking session."""

    def __init__(self, napari_viewer: napari.Viewer, controller: CellectController | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.controller = controller or controller_for(napari_viewer)
        assert self.controller is not None

        self.format_combo = QComboBox()
        for fmt in FORMATS:
            self.format_combo.addItem(fmt.label, fmt.key)
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("file or folder to write")
        self.browse_button = QPushButton("Browse...")
        self.export_button = QPushButton("Export")
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.session_label = QLabel()
        self._suggested = ""

        path_row = QHBoxLayout()
        path_row.addWidget(self.path_edit, 1)
        path_row.addWidget(self.browse_button)
        form = QFormLayout()
        form.addRow("Tracks", self.session_label)
        form.addRow("Format", self.format_combo)
        form.addRow("Write to", path_row)
        layout = QVBoxLayout(scrolled_content(self))
        layout.addLayout(form)
        layout.addWidget(self.export_button)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.browse_button.clicked.connect(self._browse)
        self.export_button.clicked.connect(self.export)
        self.format_combo.currentIndexChanged.connect(self._suggest_path)
        disconnect_on_destroy(self, [(self.controller.session_changed, self._on_session_changed)])
        self._on_session_changed(self.controller.session)

    @property
    def format(self) -> ExportFormat:
        return FORMATS[self.format_combo.currentIndex()]

    def set_format(self, key: str) -> None:
        self.format_combo.setCurrentIndex([f.key for f in FORMATS].index(key))

    def _on_session_changed(self, session: TrackingSession | None) -> None:
        self.session_label.setText(session.name if session else "none (open or compute tracks)")
        self.export_button.setEnabled(session is not None)
        self._suggest_path()

    def _suggest_path(self, *_args: Any) -> None:
        """Propose a path beside the tracks file, unless the user typed one."""
        session = self.controller.session
        current = self.path_edit.text().strip()
        if session is None or (current and current != self._suggested):
            return
        base = session.source.parent if session.source else Path.home()
        stem = session.source.stem if session.source else session.name.replace(" ", "_")
        self._suggested = str(base / f"{stem}{self.format.suffix}")
        self.path_edit.setText(self._suggested)

    def _browse(self) -> None:
        fmt = self.format
        start = self.path_edit.text() or str(Path.home())
        if fmt.folder:
            path = _dialogs.ask_folder(self, "Export CTC into folder", start)
        else:
            path = _dialogs.ask_save_path(self, f"Export {fmt.label}", start, fmt.dialog_filter)
        if path:
            self.path_edit.setText(path)

    def export(self) -> Path | None:
        """Export to the path in the path box; report the outcome in the widget."""
        session = self.controller.session
        path = self.path_edit.text().strip()
        if session is None or not path:
            self._show("error", "nothing to export" if session is None else "choose where to write")
            return None
        bound = self.controller.bound
        labels = bound.labels.data if bound is not None and bound.labels is not None else None
        try:
            written, note = export_session(session, self.format.key, path, labels=labels)
        except (CellectError, OSError, ValueError) as error:
            self._show("error", f"export failed: {error}")
            return None
        self._show("info", f"wrote {written}" + (f"\n{note}" if note else ""))
        return written

    def _show(self, level: str, text: str) -> None:
        show_status(self.status, level, text)
        if level == "error":
            from napari.utils.notifications import show_error

            show_error(text)
