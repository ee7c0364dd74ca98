"""Corrections -> training labels for the pair scorers (no torch, no Qt).

A person corrects a tracking result: approves links, breaks or replaces wrong ones, marks
divisions, deletes false detections and adds missed cells. :func:`build_corrections` turns the
corrected :class:`TrackGraph` (its ``approved`` column) and, optionally, the correction records of
the edit history (``Compound.corrections`` of ``History.done``, see
:func:`corrections_from_history`) into a :class:`CorrectionSet`:

- **positive links** ``(parent, child)``: every approved link (graph ``approved`` column, plus
  ``link`` / ``approve`` records whose edge is still in the graph).
- **broken links**: ``unlink`` records whose edge is not in the final graph (the user broke or
  replaced it). A record that later links the same edge again cancels it.
- **candidate negatives**: for each approved link, the ``k`` nearest nodes of the child's frame
  around the parent that are not the parent's children (the rivals the link scorer had to beat;
  an unapproved second child is left out, it may be a real daughter). For each approved track
  start (an approved node without a parent, after the first frame), the ``k`` nearest nodes of
  the previous frame are not its parent.
- **division labels** ``node -> divides``: ``division`` records (mark / unmark; a mark is
  withdrawn when the mother later loses a child, since linking a second child marks one), a
  mother with two approved children (divides) and a node whose single child is approved (does
  not divide).
- **merge labels**: a deleted false detection within a radius of a kept node was a duplicate of
  it (merge positive); two approved nodes close together in one frame are distinct cells (merge
  negative).

Contradictions are refused with :class:`ContradictoryCorrections` naming the nodes: a node with
two approved parents (records against the graph), a link both approved and broken, a division
mark that disagrees with the approved children.

A :class:`CorrectionSet` is self-contained: it stores the positions of every node its labels
touch and of their close neighbours (so fine-tuning can match them to cached detections without
the graph), and is saved as ``corrections.json`` in the journal folder (:func:`save_corrections`,
:func:`load_corrections`).

Module layout: :mod:`~napari_cellect.track.correction_set` (the set, its file and shared
helpers), :mod:`~napari_cellect.track.correction_records` (the edit history's records),
:mod:`~napari_cellect.track.correction_labels` (the label builders); this module gathers their
public API, and :mod:`napari_cellect.errors` holds the two exceptions.
"""

from __future__ import annotations

from napari_cellect.errors import ContradictoryCorrections, NotEnoughCorrections
from napari_cellect.track.correction_labels import build_corrections
from napari_cellect.track.correction_records import KINDS, corrections_from_history
from napari_cellect.track.correction_set import (
    CORRECTIONS_FORMAT,
    CORRECTIONS_NAME,
    CORRECTIONS_VERSION,
    NODE_COLUMNS,
    REMOVED_COLUMNS,
    CorrectionSet,
    load_corrections,
    save_corrections,
)

__all__ = [
    "CORRECTIONS_FORMAT",
    "CORRECTIONS_NAME",
    "CORRECTIONS_VERSION",
    "KINDS",
    "NODE_COLUMNS",
    "REMOVED_COLUMNS",
    "ContradictoryCorrections",
    "CorrectionSet",
    "NotEnoughCorrections",
    "build_corrections",
    "corrections_from_history",
    "load_corrections",
    "save_corrections",
]
