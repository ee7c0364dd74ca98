"""Re-linking keeps the divisions a person ruled out (and allows the ones a person marked).

The scorer is the geometric one behind a stand-in for a model bundle: its division probability
is the detector's, so each case sets whether the scorer would divide a cell.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest

from napari_cellect.settings.tracking import TrackingConfig
from napari_cellect.track.correction_set import CorrectionSet
from napari_cellect.track.corrections import build_corrections
from napari_cellect.track.detections import Detections
from napari_cellect.track.graph import TrackGraph
from napari_cellect.track.relink import CHANGED_COLUMN, no_division_ids, relink
from napari_cellect.track.scoring_protocol import GeometricScorer

Z_RATIO = 1.0
E = 4  # embedding length
RADIUS = 3.0
MOTHER, NEAR, FAR, OTHER, OTHER_CHILD = 100, 101, 102, 103, 104  # node ids of the old tracks


@dataclass
class GeometricBundle:
    """What :func:`relink` uses of a ModelBundle, with the geometric link scorer."""

    thresholds: TrackingConfig = field(default_factory=TrackingConfig)
    link_config: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(embedding_dim=E))

    def candidate_scorer(self, kind: str) -> GeometricScorer:
        return GeometricScorer.for_merge() if kind == "merge" else GeometricScorer.for_link()


def _det(t: int, positions, division) -> Detections:
    pos = np.asarray(positions, np.float64).reshape(-1, 3)
    n = len(pos)
    return Detections(
        t,
        pos,
        np.ones((n, E), np.float32),
        np.full(n, RADIUS, np.float32),
        np.asarray(division, np.float32),
        np.ones(n, np.float32),
    )


def _frames() -> list[Detections]:
    """A mother with a strong division cue and two daughters (one nearer than the other), and
    a lone cell far away that moves one voxel."""
    return [
        _det(0, [[2, 20, 20], [2, 50, 50]], [[0.95, 0.0], [0.0, 0.0]]),
        _det(1, [[2, 20, 17], [2, 20, 24.5], [2, 50, 51]], np.zeros((3, 2))),
    ]


def _graph(parent: dict[int, int], approved: set[int]) -> TrackGraph:
    """The old tracks on :func:`_frames`' cells, with the given links and approved nodes."""
    ids = [MOTHER, OTHER, NEAR, FAR, OTHER_CHILD]
    pos = np.concatenate([d.positions for d in _frames()])
    return TrackGraph.from_arrays(
        id=ids,
        t=[0, 0, 1, 1, 1],
        z=pos[:, 0],
        y=pos[:, 1],
        x=pos[:, 2],
        parent_id=[parent.get(i, -1) for i in ids],
        approved=[i in approved for i in ids],
        radius=np.full(5, RADIUS),
    )


def _relink(graph: TrackGraph, corrections: CorrectionSet | None = None) -> TrackGraph:
    new, _ = relink(
        _frames(), GeometricBundle(), graph, None, Z_RATIO, corrections=corrections, merge=False
    )
    return new


def _labels(divides: dict[int, bool]) -> CorrectionSet:
    return CorrectionSet(division_nodes=list(divides), division_divides=list(divides.values()))


def test_the_scorer_divides_the_mother_when_nothing_is_approved():
    new = _relink(_graph({MOTHER: -1, FAR: MOTHER, OTHER_CHILD: OTHER}, set()))
    assert new.children_of(MOTHER).tolist() == [NEAR, FAR]
    assert new.parent_of(OTHER_CHILD) == OTHER


def test_an_approved_single_child_gets_no_sibling():
    # the person approved the farther daughter as the mother's only child
    graph = _graph({FAR: MOTHER, OTHER_CHILD: OTHER}, {FAR})
    assert no_division_ids(graph).tolist() == [MOTHER]
    new = _relink(graph)
    assert new.children_of(MOTHER).tolist() == [FAR]
    assert new.parent_of(NEAR) == -1  # a track start, not a second daughter
    assert len(new.divisions()) == 0
    assert not new.node(NEAR)[CHANGED_COLUMN]  # it was a track start before too
    assert new.parent_of(OTHER_CHILD) == OTHER
    # the labels fine-tuning learns from say the same, and give the same result
    cs = build_corrections(graph, z_ratio=Z_RATIO)
    assert cs.divides == {MOTHER: False}
    assert _relink(graph, cs).children_of(MOTHER).tolist() == [FAR]


def test_a_parent_marked_dividing_may_get_a_second_child():
    graph = _graph({FAR: MOTHER, OTHER_CHILD: OTHER}, {FAR})
    marked = _labels({MOTHER: True})
    assert no_division_ids(graph, marked).tolist() == []
    new = _relink(graph, marked)
    assert new.children_of(MOTHER).tolist() == [NEAR, FAR]
    assert new.node(FAR)["approved"] and not new.node(NEAR)["approved"]
    assert new.node(NEAR)[CHANGED_COLUMN]  # the new daughter is marked for review


def test_a_parent_with_two_children_is_not_restricted_by_one_approved_child():
    # one approved child, but the unapproved second daughter is in the tracks: no ruling
    graph = _graph({FAR: MOTHER, NEAR: MOTHER, OTHER_CHILD: OTHER}, {FAR})
    assert no_division_ids(graph).tolist() == []
    assert _relink(graph).children_of(MOTHER).tolist() == [NEAR, FAR]


def test_a_node_marked_not_dividing_keeps_one_child():
    graph = _graph({NEAR: MOTHER, FAR: MOTHER, OTHER_CHILD: OTHER}, set())
    labels = _labels({MOTHER: False, 999: False})  # 999: not a node of these tracks
    assert no_division_ids(graph, labels).tolist() == [MOTHER]
    new = _relink(graph, labels)
    assert new.children_of(MOTHER).tolist() == [NEAR]  # the nearer, better scored daughter
    assert new.parent_of(FAR) == -1 and new.node(FAR)[CHANGED_COLUMN]


def test_not_dividing_label_against_two_approved_children_keeps_the_approved_links(caplog):
    graph = _graph({NEAR: MOTHER, FAR: MOTHER, OTHER_CHILD: OTHER}, {NEAR, FAR})
    with caplog.at_level(logging.WARNING, logger="napari_cellect.track.relink"):
        assert no_division_ids(graph, _labels({MOTHER: False})).tolist() == []
    assert "two approved children" in caplog.text
    assert _relink(graph, _labels({MOTHER: False})).children_of(MOTHER).tolist() == [NEAR, FAR]


@pytest.mark.parametrize("approved", [set(), {OTHER_CHILD}])
def test_labels_of_cells_that_never_divide_change_nothing(approved):
    graph = _graph({FAR: MOTHER, OTHER_CHILD: OTHER}, approved)
    plain = _relink(graph)
    labelled = _relink(graph, _labels({OTHER: False}))
    assert labelled.edges().tolist() == plain.edges().tolist()
