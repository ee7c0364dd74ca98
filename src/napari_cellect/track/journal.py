"""Autosave journal: every edit is on disk the moment it is made.

A journal is a folder holding ``base.csv`` (the graph when the session started, written atomically)
and ``edits.jsonl`` (one line per executed, undone or redone command, flushed and fsynced as it
happens). Replaying the lines on the base rebuilds the graph *and* the undo history, so nothing a
person corrected is lost when the viewer crashes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import IO, Any

import pandas as pd

from napari_cellect.data.atomic import atomic_write
from napari_cellect.errors import InputError, WriteError
from napari_cellect.track.edits import Command, History, command_from_dict
from napari_cellect.track.graph import TrackGraph

logger = logging.getLogger(__name__)

BASE_NAME = "base.csv"
EDITS_NAME = "edits.jsonl"
META_NAME = "journal.json"


def journal_folder_for(tracks_path: str | os.PathLike[str]) -> Path:
    """Where the journal of a tracks file lives by default: ``<name>.cellect-journal`` beside it."""
    path = Path(tracks_path)
    return path.with_name(path.name + ".cellect-journal")


class Journal:
    """Writes the edits of one :class:`History` to a folder as they happen."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)
        self._file: IO[str] | None = None
        self._history: History | None = None
        #: why autosaving stopped (a full disk...), or None while it works
        self.error: WriteError | None = None

    # -------------------------------------------------------------- writing
    def start(self, history: History, source: str | None = None) -> None:
        """Begin a new journal for ``history`` (its graph is saved as the base)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.folder / BASE_NAME, mode="w") as fh:
            history.graph.to_dataframe().to_csv(fh, index=False)
        with atomic_write(self.folder / META_NAME, mode="w") as fh:
            json.dump({"format": "napari-cellect-journal", "version": 1, "source": source}, fh)
        with atomic_write(self.folder / EDITS_NAME, mode="w") as fh:
            fh.write("")
        self._attach(history)

    def resume(self, history: History) -> None:
        """Keep appending to an existing journal (after :func:`restore`)."""
        self._attach(history)

    def _attach(self, history: History) -> None:
        self.close()
        self._history = history
        self._file = open(self.folder / EDITS_NAME, "a", encoding="utf-8")  # noqa: SIM115
        history.executed.connect(self._on_executed)

    def _on_executed(self, command: Command, how: str) -> None:
        entry: dict[str, Any] = {"how": how}
        if how == "do":
            entry["command"] = command.to_dict()
        self._append(entry)

    def _append(self, entry: dict[str, Any]) -> None:
        if self._file is None:
            return
        try:
            self._file.write(json.dumps(entry) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as error:
            self._stop(error)

    def _stop(self, error: OSError) -> None:
        """Stop autosaving after a failed append (a full disk...). Appending later edits after
        a missing one would make the journal replay something else, so the journal stays the
        edits up to the failure (a line cut short is ignored on restore)."""
        self.error = WriteError(
            f"autosave to {self.folder / EDITS_NAME} stopped: {error.strerror or error}; the "
            "edits made from now on are not autosaved: save the tracks to keep them"
        )
        logger.error("%s", self.error)
        try:
            self.close()  # disconnects from the history first
        except OSError:  # closing flushes again, into the same full disk
            self._file = None

    def close(self) -> None:
        if self._history is not None:
            self._history.executed.disconnect(self._on_executed)
            self._history = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def discard(self) -> None:
        """Delete the journal (after the user saved or declined to restore)."""
        self.close()
        for name in (BASE_NAME, EDITS_NAME, META_NAME):
            (self.folder / name).unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:
            logger.debug("journal folder %s not empty; left in place", self.folder)

    # -------------------------------------------------------------- reading
    @staticmethod
    def exists(folder: str | os.PathLike[str]) -> bool:
        """True when ``folder`` holds a journal with at least one edit to restore."""
        edits = Path(folder) / EDITS_NAME
        return (Path(folder) / BASE_NAME).is_file() and edits.is_file() and edits.stat().st_size > 0


def restore(folder: str | os.PathLike[str]) -> History:
    """Rebuild the graph and its undo history from a journal folder.

    A last line cut short by a crash is ignored (with a warning); any other unreadable line is an
    :class:`InputError` naming the line.
    """
    folder = Path(folder)
    base = folder / BASE_NAME
    if not base.is_file():
        raise InputError(f"no journal here: expected {BASE_NAME} in the folder", folder)
    graph = TrackGraph.from_dataframe(pd.read_csv(base))
    history = History(graph)
    lines = (folder / EDITS_NAME).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                logger.warning("ignoring the last journal line, cut short by a crash: %s", error)
                break
            raise InputError(
                f"unreadable journal entry ({error})", folder / EDITS_NAME, number
            ) from None
        how = entry.get("how")
        if how == "do":
            history.execute(command_from_dict(entry["command"]))
        elif how == "undo":
            history.undo()
        elif how == "redo":
            history.redo()
        else:
            raise InputError(
                f"journal entry has how={how!r}; expected do, undo or redo",
                folder / EDITS_NAME,
                number,
            )
    return history
