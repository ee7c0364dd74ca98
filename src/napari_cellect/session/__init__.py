"""The interactive loop as a Qt-free API: a :class:`TrackingSession` (tracks, undo history,
autosave journal, detections, model, corrections) and the long steps it runs
(:mod:`~napari_cellect.session.jobs`). The napari widgets, ``cellect finetune`` and
``cellect track --keep-approved`` all go through it; ``examples/correction_loop.py`` runs the
whole loop from Python.
"""

from napari_cellect.session.geometry import Geometry
from napari_cellect.session.tracking_session import TrackingSession, default_journal_root

__all__ = ["Geometry", "TrackingSession", "default_journal_root"]
