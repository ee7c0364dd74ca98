"""The few questions the plugin asks, each a function so tests can replace the answer."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QFileDialog, QMessageBox, QWidget


def ask_restore_journal(folder: Path, parent: QWidget | None = None) -> bool:
    """Ask whether to restore the unsaved edits autosaved in ``folder``."""
    answer = QMessageBox.question(
        parent,
        "Restore unsaved edits?",
        f"Edits to these tracks were autosaved but never saved:\n{folder}\n\n"
        "Restore them? (No discards them.)",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.Yes,
    )
    return answer == QMessageBox.StandardButton.Yes


def ask_save_path(parent: QWidget | None, caption: str, start: str, filter_: str) -> str:
    """A save-file dialog; returns '' when cancelled."""
    path, _ = QFileDialog.getSaveFileName(parent, caption, start, filter_)
    return path


def ask_open_path(parent: QWidget | None, caption: str, start: str, filter_: str) -> str:
    """An open-file dialog; returns '' when cancelled."""
    path, _ = QFileDialog.getOpenFileName(parent, caption, start, filter_)
    return path


def ask_folder(parent: QWidget | None, caption: str, start: str) -> str:
    """A folder dialog; returns '' when cancelled."""
    return QFileDialog.getExistingDirectory(parent, caption, start)


def ask_unsaved_edits(names: list[str], journals: list[str], parent: QWidget | None = None) -> str:
    """Closing with unsaved edits: returns "save", "discard" or "cancel"."""
    where = "\n".join(journals)
    answer = QMessageBox.question(
        parent,
        "Save your edits?",
        f"Edits to {', '.join(names)} are not saved.\n\nSave them before closing? Discard "
        f"keeps them only in the autosave journal:\n{where}",
        QMessageBox.StandardButton.Save
        | QMessageBox.StandardButton.Discard
        | QMessageBox.StandardButton.Cancel,
        QMessageBox.StandardButton.Save,
    )
    if answer == QMessageBox.StandardButton.Save:
        return "save"
    return "discard" if answer == QMessageBox.StandardButton.Discard else "cancel"
