"""Exceptions whose messages are meant for the person running the tool.

Every message says what was expected and what was found, and names the file (and line) where
there is one. The CLI prints ``str(error)`` on one line and exits with code 2.
"""

from __future__ import annotations

import os
from pathlib import Path


class CellectError(Exception):
    """Base class of every error napari-cellect raises on purpose."""


class InputError(CellectError, ValueError):
    """Bad input data: a path, an image series, an annotation or a CSV file."""

    def __init__(
        self, message: str, path: str | os.PathLike[str] | None = None, line: int | None = None
    ):
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(where + message)
        self.path = None if path is None else Path(path)
        self.line = line


class GraphError(CellectError, ValueError):
    """An operation would break the TrackGraph's invariants."""


class ModelError(CellectError):
    """A model bundle or checkpoint file that cannot be used."""


class WriteError(CellectError, OSError):
    """A file could not be written (disk full, no permission, read-only disk...).

    Raised by the atomic writers (``data/atomic.py``), which keep the previous file; an OSError
    too, so code that catches OSError around a save still does.
    """


class DeviceError(CellectError):
    """The requested compute device is not available."""


class Cancelled(CellectError):
    """A long-running job was cancelled by the user."""


class ContradictoryCorrections(CellectError, ValueError):
    """The corrections contradict each other (the message names the nodes).

    ``conflicts`` holds one sentence per contradiction and ``nodes`` the node each is about
    (the child of a link), so a viewer can go there."""

    def __init__(self, message: str, conflicts: tuple[str, ...] = (), nodes: tuple[int, ...] = ()):
        super().__init__(message)
        self.conflicts = tuple(conflicts)
        self.nodes = tuple(nodes)


class NotEnoughCorrections(CellectError, ValueError):
    """The corrections hold too little to learn from (the message says what is missing)."""


class SchedulerError(CellectError):
    """The dask.distributed scheduler cannot be reached, or the cluster cannot run the work."""
