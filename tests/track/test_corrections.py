"""Corrections -> training labels (track/corrections.py) on small constructed graphs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_cellect.errors import CellectError, InputError
from napari_cellect.track import edits
from napari_cellect.track.correction_labels import CorrectionConfig
from napari_cellect.track.corrections import (
    CORRECTIONS_NAME,
    ContradictoryCorrections,
    CorrectionSet,
    NotEnoughCorrections,
    build_corrections,
    corrections_from_history,
    load_corrections,
    save_corrections,
)
from napari_cellect.track.edits import History
from napari_cellect.track.graph import TrackGraph

RADIUS = 4.0


def pairs(array: np.ndarray) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in np.asarray(array).reshape(-1, 2)}


@pytest.fixture
def graph() -> TrackGraph:
    """Track 1 -> 2 -> 3 -> 4 along y; track 5 -> 6 -> {7, 8} far away; 9 alone near 7/8."""
    return TrackGraph.from_arrays(
        id=[1, 2, 3, 4, 5, 6, 7, 8, 9],
        t=[0, 1, 2, 3, 0, 1, 2, 2, 2],
        z=[0.0] * 9,
        y=[10.0, 11, 12, 13, 40, 41, 36, 46, 60],
        x=[10.0, 10, 10, 10, 40, 40, 40, 40, 40],
        parent_id=[-1, 1, 2, 3, -1, 5, 6, 6, -1],
        radius=[RADIUS] * 9,
    )


def build(graph, history=None, **config):
    records = corrections_from_history(history) if history is not None else None
    return build_corrections(graph, records, z_ratio=1.0, config=CorrectionConfig(**config))


def test_positive_links_are_the_approved_links(graph):
    history = History(graph)
    history.do(edits.approve_track, 3)  # the branch 1 -> 2 -> 3 -> 4
    cs = build(graph, history)
    assert pairs(cs.positive_links) == {(1, 2), (2, 3), (3, 4)}
    assert cs.starts.tolist() == [1]
    # the graph alone (no records) gives the same positives
    assert pairs(build(graph).positive_links) == {(1, 2), (2, 3), (3, 4)}


def test_broken_and_replaced_links_are_negatives(graph):
    history = History(graph)
    history.do(edits.break_link, 8)  # 6 -> 8 was wrong
    history.do(edits.link, 2, 9)  # 9's link from 2 (2 already has child 3: a division)
    history.do(edits.link, 6, 9)  # changed mind: 9 comes from 6, replacing 2 -> 9
    cs = build(graph, history)
    assert (6, 8) in pairs(cs.broken_links)
    assert (2, 9) in pairs(cs.broken_links)
    assert (6, 9) in pairs(cs.positive_links)
    assert not pairs(cs.positive_links) & pairs(cs.negative_links)


def test_relinking_a_broken_link_cancels_the_negative(graph):
    history = History(graph)
    history.do(edits.break_link, 8)
    history.do(edits.link, 6, 8)
    cs = build(graph, history)
    assert (6, 8) not in pairs(cs.broken_links)
    assert (6, 8) in pairs(cs.positive_links)


def test_candidate_negatives_are_the_other_nearby_cells():
    # parent 1 at y=10; frame 1 holds its approved child 2 (y=11), a rival 3 (y=16), its
    # unapproved second child 4 (y=5) and a far cell 5 (y=80)
    graph = TrackGraph.from_arrays(
        id=[1, 2, 3, 4, 5],
        t=[0, 1, 1, 1, 1],
        z=[0.0] * 5,
        y=[10.0, 11, 16, 5, 80],
        x=[10.0] * 5,
        parent_id=[-1, 1, -1, 1, -1],
        approved=[False, True, False, False, False],
        radius=[RADIUS] * 5,
    )
    cs = build(graph, link_k=3, start_negatives=False)
    assert pairs(cs.positive_links) == {(1, 2)}
    # the 3 nearest are 2 (own child), 4 (own, unapproved child: maybe a daughter), 3 (rival)
    assert pairs(cs.candidate_negatives) == {(1, 3)}
    wider = build(graph, link_k=4, start_negatives=False)
    assert pairs(wider.candidate_negatives) == {(1, 3), (1, 5)}


def test_approved_track_start_rejects_the_cells_before_it():
    graph = TrackGraph.from_arrays(
        id=[1, 2, 3],
        t=[0, 0, 1],
        z=[0.0] * 3,
        y=[10.0, 30, 12],
        x=[10.0] * 3,
        parent_id=[-1, -1, -1],
        approved=[False, False, True],
        radius=[RADIUS] * 3,
    )
    cs = build(graph, link_k=2)
    assert cs.starts.tolist() == [3]
    assert pairs(cs.candidate_negatives) == {(1, 3), (2, 3)}
    assert len(build(graph, link_k=2, start_negatives=False).candidate_negatives) == 0


def test_division_labels(graph):
    history = History(graph)
    history.do(edits.approve, [7, 8])  # 6 has two approved children: divides
    history.do(edits.approve, [2])  # 1's single child is approved: does not divide
    history.do(edits.mark_division, 3)  # 3 marked dividing (no approved child)
    cs = build(graph, history)
    assert cs.divides == {6: True, 1: False, 3: True}


def test_second_child_moved_away_again_is_no_division(graph):
    history = History(graph)
    history.do(edits.link, 2, 9)  # 2 gets a second child: marked dividing
    history.do(edits.break_link, 3)  # 3 was 2's other child: 2 is back to one child
    cs = build(graph, history)  # no contradiction: the mark went with the lost child
    assert cs.divides[2] is False
    assert (2, 3) in pairs(cs.broken_links) and (2, 9) in pairs(cs.positive_links)


def test_unmarking_a_division_breaks_the_far_child(graph):
    history = History(graph)
    history.do(edits.mark_division, 6, divides=False)
    cs = build(graph, history)
    assert cs.divides[6] is False
    assert (6, 8) in pairs(cs.broken_links) or (6, 7) in pairs(cs.broken_links)


def test_deleted_duplicate_is_a_merge_positive_and_close_approved_cells_are_distinct():
    # frame 0: cell 1, its duplicate 2 (1.5 px away), a false positive 3 far from everyone;
    # frame 1: approved cells 4 and 5 close together, approved cell 6 far away
    graph = TrackGraph.from_arrays(
        id=[1, 2, 3, 4, 5, 6],
        t=[0, 0, 0, 1, 1, 1],
        z=[0.0] * 6,
        y=[10.0, 11.5, 60, 10, 17, 70],
        x=[10.0] * 6,
        parent_id=[-1] * 6,
        approved=[False, False, False, True, True, True],
        radius=[RADIUS] * 6,
    )
    history = History(graph)
    history.do(edits.delete_node, 2)
    history.do(edits.delete_node, 3)
    cs = build(graph, history)
    assert pairs(cs.duplicates) == {(1, 2)}
    assert set(cs.removed["id"].tolist()) == {2, 3}
    assert cs.removed["y"][cs.removed["id"] == 2][0] == pytest.approx(11.5)
    assert pairs(cs.distinct) == {(4, 5)}
    # the nodes table can place every labelled node
    assert cs.node_positions([1, 4, 5]).shape == (3, 3)


def test_history_records_carry_the_position_of_deleted_nodes(graph):
    history = History(graph)
    history.do(edits.delete_node, 9)
    (record,) = corrections_from_history(history)
    assert record["kind"] == "false_detection" and record["node"] == 9
    assert (record["t"], record["y"], record["x"]) == (2, 60.0, 40.0)


def test_two_approved_parents_are_refused_with_the_nodes_named(graph):
    graph.set_values("approved", [9], True)
    records = [{"kind": "link", "parent": 6, "child": 9}]  # the graph says 9 is an approved start
    with pytest.raises(ContradictoryCorrections, match=r"node 9 has two approved parents.*6"):
        build_corrections(graph, records)
    graph.set_parent(9, 2)
    with pytest.raises(ContradictoryCorrections, match=r"node 9.*parent 6.*parent 2"):
        build_corrections(graph, records)


def test_link_both_approved_and_broken_is_refused(graph):
    graph.set_values("approved", [3], True)
    records = [
        {"kind": "approve", "parent": 2, "child": 3},
        {"kind": "unlink", "parent": 2, "child": 3},
    ]
    with pytest.raises(ContradictoryCorrections, match=r"link 2 -> 3 is both approved and broken"):
        build_corrections(graph, records)


def test_dividing_mark_with_a_single_approved_child_is_refused(graph):
    history = History(graph)
    history.do(edits.mark_division, 2)
    history.do(edits.approve, [3])  # 2's only child, approved: 2 does not divide
    expected = r"node 2 is marked dividing.*single approved child \(3\)"
    with pytest.raises(ContradictoryCorrections, match=expected):
        build(graph, history)
    assert issubclass(ContradictoryCorrections, CellectError)


def test_malformed_record_is_an_input_error(graph):
    with pytest.raises(InputError, match="record 1"):
        records = [{"kind": "approve", "parent": 1, "child": 2}, {"kind": "teleport"}]
        build_corrections(graph, records)
    with pytest.raises(InputError, match=r"record 0.*parent and child"):
        build_corrections(graph, [{"kind": "link", "parent": 1}])


def test_no_corrections_or_only_positives_cannot_be_trained():
    lone = TrackGraph.from_arrays(
        id=[1, 2, 3],
        t=[0, 1, 2],
        z=[0.0] * 3,
        y=[10.0] * 3,
        x=[10.0] * 3,
        parent_id=[-1, 1, 2],
    )
    with pytest.raises(NotEnoughCorrections, match="no corrections"):
        build_corrections(lone).require_trainable()
    lone.set_values("approved", [2, 3], True)
    cs = build_corrections(lone)
    assert len(cs.positive_links) == 2 and len(cs.negative_links) == 0
    with pytest.raises(NotEnoughCorrections, match=r"only one kind of label.*2 positive links"):
        cs.require_trainable()


def test_saved_to_the_journal_folder_and_read_back(graph, tmp_path):
    history = History(graph)
    history.do(edits.approve, [7, 8])
    history.do(edits.break_link, 3)
    history.do(edits.delete_node, 9)
    cs = build(graph, history)
    folder = tmp_path / "tracks.csv.cellect-journal"
    path = save_corrections(cs, folder)
    assert path == folder / CORRECTIONS_NAME
    assert sorted(p.name for p in folder.iterdir()) == [CORRECTIONS_NAME]  # no temp file left
    back = load_corrections(folder)
    assert back.counts() == cs.counts()
    for name in ("positive_links", "broken_links", "candidate_negatives", "duplicates", "distinct"):
        np.testing.assert_array_equal(getattr(back, name), getattr(cs, name))
    assert back.divides == cs.divides
    for column in cs.nodes:
        np.testing.assert_array_equal(back.nodes[column], cs.nodes[column])


def test_bad_corrections_file_names_the_file(tmp_path):
    path = tmp_path / CORRECTIONS_NAME
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InputError, match=str(path)):
        load_corrections(path)
    path.write_text("{ not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_corrections(path)
    data = CorrectionSet().to_dict()
    data["positive_links"] = [[1, 2, 3]]
    with pytest.raises(InputError, match="positive_links"):
        CorrectionSet.from_dict(data, source="x.json")


def test_combine_unions_labels_and_refuses_conflicts(graph):
    graph.set_parent(8, -1)  # the user broke 6 -> 8
    a = build_corrections(graph, [{"kind": "unlink", "parent": 6, "child": 8}])
    graph.set_values("approved", [2], True)
    b = build_corrections(graph)
    both = a.combine(b)
    assert (6, 8) in pairs(both.broken_links) and (1, 2) in pairs(both.positive_links)
    graph.set_parent(8, 6)  # a later file approves it again
    graph.set_values("approved", [8], True)
    with pytest.raises(ContradictoryCorrections, match="6 -> 8"):
        a.combine(build_corrections(graph))
