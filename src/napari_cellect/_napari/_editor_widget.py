"""Edit-tracks dock widget: the keybinding table, the selection, autosave and saving.

Every button runs the same controller method as its key (both come from
:data:`~._keybindings.KEYBINDINGS`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_cellect._napari import _dialogs
from napari_cellect._napari._controller import (
    CellectController,
    autosave_stopped_text,
    controller_for,
)
from napari_cellect._napari._keybindings import KEYBINDINGS
from napari_cellect._napari._qt_utils import (
    ERROR_STYLE,
    disconnect_on_destroy,
    scrolled_content,
    show_status,
)
from napari_cellect.session import Geometry, TrackingSession
from napari_cellect.track.graph import TrackGraph

if TYPE_CHECKING:
    import napari

#: buttons per row in the action grid
BUTTON_COLUMNS = 3


class EditorWidget(QWidget):
    """Corrects the active tracking session of a viewer."""

    def __init__(self, napari_viewer: napari.Viewer, controller: CellectController | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.controller = controller or controller_for(napari_viewer)
        assert self.controller is not None

        self.session_label = QLabel()
        self.session_label.setWordWrap(True)
        self.selection_label = QLabel()
        self.selection_label.setWordWrap(True)
        self.message_label = QLabel()
        self.message_label.setWordWrap(True)
        self.review_label = QLabel()
        self.review_label.setWordWrap(True)
        self.review_label.setToolTip(
            "Links and divisions nobody approved yet whose certainty is "
            "low (the review queue); N jumps to the next"
        )

        self.buttons: dict[str, QPushButton] = {}
        grid = QGridLayout()
        for k, binding in enumerate(KEYBINDINGS):
            button = QPushButton(binding.name)
            button.setToolTip(f"{binding.description} [{binding.key_text}]")
            button.clicked.connect(binding.action(self.controller))
            grid.addWidget(button, k // BUTTON_COLUMNS, k % BUTTON_COLUMNS)
            self.buttons[binding.method] = button

        self.table = QTableWidget(len(KEYBINDINGS), 3)
        self.table.setHorizontalHeaderLabels(["Action", "Key", "Description"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(True)
        for row, binding in enumerate(KEYBINDINGS):
            keys = binding.key_text.replace(" / ", "\n")  # one key per line keeps it narrow
            for col, text in enumerate((binding.name, keys, binding.description)):
                item = QTableWidgetItem(text)
                item.setToolTip(binding.description)
                self.table.setItem(row, col, item)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        # rows grow to fit the wrapped descriptions whenever the column width changes
        header.sectionResized.connect(lambda *_: self.table.resizeRowsToContents())

        self.journal_label = QLabel()
        self.journal_label.setWordWrap(True)
        self.journal_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.journal_button = QPushButton("Autosave folder...")
        self.save_button = QPushButton("Save")
        self.save_as_button = QPushButton("Save as...")
        self.new_button = QPushButton("New empty tracks")
        self.new_button.setToolTip("Start tracking by hand on the selected image layer")
        self.journal_button.clicked.connect(self._choose_journal_folder)
        self.save_button.clicked.connect(lambda: self.save())
        self.save_as_button.clicked.connect(self._save_as)
        self.new_button.clicked.connect(self.new_empty_session)

        file_box = QGroupBox("File and autosave")
        file_layout = QVBoxLayout(file_box)
        row = QHBoxLayout()
        for button in (self.save_button, self.save_as_button, self.new_button):
            row.addWidget(button)
        file_layout.addLayout(row)
        file_layout.addWidget(self.journal_label)
        file_layout.addWidget(self.journal_button)

        layout = QVBoxLayout(scrolled_content(self))
        layout.addWidget(self.session_label)
        layout.addWidget(self.selection_label)
        layout.addWidget(self.review_label)
        layout.addLayout(grid)
        layout.addWidget(self.message_label)
        layout.addWidget(file_box)
        layout.addWidget(QLabel("Keys (work when a layer of the tracks is selected):"))
        layout.addWidget(self.table, 1)

        disconnect_on_destroy(
            self,
            [
                (self.controller.session_changed, self._on_session_changed),
                (self.controller.selection_changed, self._on_selection_changed),
                (self.controller.refreshed, self._on_refreshed),
                (self.controller.message, self._on_message),
            ],
        )
        self._on_session_changed(self.controller.session)

    # ------------------------------------------------------------------ display
    def _on_session_changed(self, session: TrackingSession | None) -> None:
        has = session is not None
        for button in (
            *self.buttons.values(),
            self.save_button,
            self.save_as_button,
            self.journal_button,
        ):
            button.setEnabled(has)
        self._update_session_text()
        self._on_selection_changed(self.controller.selection)

    def _on_refreshed(self, _changes: Any) -> None:
        self._update_session_text()
        self._on_selection_changed(self.controller.selection)

    def _update_session_text(self) -> None:
        session = self.controller.session
        if session is None:
            self.session_label.setText(
                "No tracks. Open a tracks file, run tracking, or start "
                "new empty tracks on an image."
            )
            self.journal_label.setText("")
            self.review_label.setText("")
            return
        self.review_label.setText(
            f"To review: {self.controller.review.count()} uncertain links "
            "and divisions (N: next, Shift+N: back)"
        )
        graph = session.graph
        n_tracks = len(set(graph.track_ids().tolist())) if len(graph) else 0
        dirty = " (unsaved edits)" if session.dirty and session.source else ""
        where = session.source.name if session.source else "not saved yet"
        self.session_label.setText(
            f"<b>{session.name}</b>: {len(graph)} nodes, {n_tracks} tracks, "
            f"{len(graph.divisions())} divisions - {where}{dirty}"
        )
        journal = session.journal_folder
        stopped = session.journal.error if session.journal is not None else None
        self.journal_label.setStyleSheet(ERROR_STYLE if stopped else "")
        if stopped is not None:  # stays in view while later edits' messages replace the last one
            self.journal_label.setText(autosave_stopped_text(stopped))
        else:
            self.journal_label.setText(
                f"Autosave: {journal}" if journal else "Autosave: starts at the first edit"
            )

    def _on_selection_changed(self, ids: tuple[int, ...]) -> None:
        graph = self.controller.graph
        if graph is None or not ids:
            self.selection_label.setText("Selected: nothing (click a centre or a label)")
            return
        parts = []
        for node in ids[-2:]:
            info = graph.node(node)
            children = ", ".join(str(c) for c in graph.children_of(node)) or "none"
            parent = info["parent_id"] if info["parent_id"] >= 0 else "none"
            ok = "approved" if info["approved"] else "not approved"
            parts.append(
                f"node {node} (t={info['t']}, track {info['track_id']}, parent {parent}, "
                f"children {children}, {ok})"
            )
        more = f" and {len(ids) - 2} more" if len(ids) > 2 else ""
        self.selection_label.setText("Selected: " + "; ".join(parts) + more)

    def _on_message(self, level: str, text: str) -> None:
        show_status(self.message_label, level, text)

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path | None = None) -> Path | None:
        """Save the active session as our CSV (to its file, or ``path``)."""
        session = self.controller.session
        if session is None:
            return None
        if path is None and session.source is None:
            return self._save_as()
        try:
            target = session.save(path)
        except (OSError, ValueError) as error:
            self._on_message("error", f"could not save: {error}")
            return None
        self._on_message("info", f"saved {target}")
        self._update_session_text()
        return target

    def _save_as(self) -> Path | None:
        session = self.controller.session
        if session is None:
            return None
        start = str(session.source or Path.home() / f"{session.name}_tracks.csv")
        path = _dialogs.ask_save_path(self, "Save tracks", start, "Tracks CSV (*.csv)")
        return self.save(path) if path else None

    def _choose_journal_folder(self) -> None:
        session = self.controller.session
        if session is None:
            return
        folder = _dialogs.ask_folder(self, "Autosave folder", str(Path.home()))
        if folder:
            self.set_journal_folder(folder)

    def set_journal_folder(self, folder: str | Path) -> None:
        """Autosave the active session into ``folder`` from now on."""
        session = self.controller.session
        if session is None:
            return
        target = Path(folder) / f"{session.name}.cellect-journal"
        try:
            session.move_journal(target)
        except OSError as error:
            self._on_message("error", f"cannot autosave to {target}: {error}")
            return
        self._on_message("info", f"autosaving to {target}")
        self._update_session_text()

    def new_empty_session(self) -> TrackingSession | None:
        """Start empty tracks on the selected (or first) image layer, to track by hand."""
        from napari.layers import Image

        layer = self.viewer.layers.selection.active
        if not isinstance(layer, Image):
            layer = next((lyr for lyr in self.viewer.layers if isinstance(lyr, Image)), None)
        if layer is None:
            self._on_message("error", "open an image first: new tracks are drawn on an image")
            return None
        spatial = 3 if layer.ndim >= 4 else 2
        scale = tuple(float(s) for s in layer.scale[1:])
        voxel = scale if spatial == 3 else (scale[0], *scale)
        geometry = Geometry(spatial, voxel)  # type: ignore[arg-type]
        session = TrackingSession.from_graph(
            TrackGraph(), name=f"{layer.name} manual", geometry=geometry
        )
        self.controller.add_session(session)
        self._on_message("info", "empty tracks created: press A to add a node at the cursor")
        return session
