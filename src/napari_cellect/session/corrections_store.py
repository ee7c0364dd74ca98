"""A session's corrections: built from its graph and history, kept beside its journal.

The edit history holds every correction of the current session (each ``Compound`` carries
records, :func:`~napari_cellect.track.corrections.corrections_from_history`), and the graph's
``approved`` column the confirmed links. What a saved tracks file cannot hold -- broken links,
division marks, deleted false detections, hand-added cells -- would be lost with the history
when the viewer closes, so it is written to ``corrections.json`` in the journal folder
(:func:`~napari_cellect.track.corrections.save_corrections`) when the tracks are saved and when
a fine-tune starts, and read back when the tracks are opened again. Corrections of the current
session override stored ones they contradict (a link broken last week and approved today is
approved). No Qt here.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from napari_cellect.errors import CellectError
from napari_cellect.track.corrections import (
    CORRECTIONS_NAME,
    CorrectionSet,
    load_corrections,
)

logger = logging.getLogger(__name__)

#: record kinds a tracks file cannot represent (an approved link is its ``approved`` column)
UNSAVED_KINDS = frozenset({"unlink", "division", "false_detection", "missed_detection"})


def needs_file(records: Iterable[Mapping[str, Any]]) -> bool:
    """True when the records hold something the tracks file alone would lose."""
    return any(record.get("kind") in UNSAVED_KINDS for record in records)


def load_stored(folder: Path | None) -> CorrectionSet | None:
    """The corrections saved in a journal folder, or None (none there, or unreadable: logged)."""
    if folder is None or not (folder / CORRECTIONS_NAME).is_file():
        return None
    try:
        stored = load_corrections(folder)
    except CellectError as error:
        logger.warning("ignoring the saved corrections: %s", error)
        return None
    logger.info("read earlier corrections from %s: %s", folder, stored.counts())
    return stored


def newer_wins(old: CorrectionSet, new: CorrectionSet) -> CorrectionSet:
    """``old`` without the labels ``new`` contradicts, combined with ``new``.

    A link ``new`` approves is no longer broken, a link ``new`` breaks is no longer approved, a
    child ``new`` gives an approved parent loses its older approved parent, and ``new``'s
    division labels replace older ones of the same nodes.
    """
    new_pos = _keys(new.positive_links)
    new_broken = _keys(new.broken_links)
    old_pos = old.positive_links
    keep_pos = ~np.isin(_keys(old_pos), new_broken) & ~np.isin(
        old_pos[:, 1], new.positive_links[:, 1]
    )
    keep_broken = ~np.isin(_keys(old.broken_links), new_pos)
    keep_div = ~np.isin(old.division_nodes, new.division_nodes)
    kept = dataclasses.replace(
        old,
        positive_links=old_pos[keep_pos],
        broken_links=old.broken_links[keep_broken],
        division_nodes=old.division_nodes[keep_div],
        division_divides=old.division_divides[keep_div],
    )
    return kept.combine(new)


def _keys(pairs: np.ndarray) -> np.ndarray:
    """One complex number per (a, b) pair, for vectorised set tests (ids fit a float64)."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    return pairs[:, 0].astype(np.float64) + 1j * pairs[:, 1].astype(np.float64)
