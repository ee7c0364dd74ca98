import json

import numpy as np
import pandas as pd
import pytest

from napari_cellect.errors import GraphError
from napari_cellect.track import edits
from napari_cellect.track.edits import History, command_from_dict
from napari_cellect.track.graph import TrackGraph
from napari_cellect.track.journal import Journal, restore


@pytest.fixture(params=[3, 2], ids=["3d", "2d"])
def graph(request) -> TrackGraph:
    """Two tracks: 1 -> 2 -> 3 -> 4 and 5 -> 6 -> {7, 8}; 9 alone in frame 2."""
    z = [1.0] * 9 if request.param == 3 else [0.0] * 9
    return TrackGraph.from_arrays(
        id=[1, 2, 3, 4, 5, 6, 7, 8, 9],
        t=[0, 1, 2, 3, 0, 1, 2, 2, 2],
        z=z,
        y=[10.0, 11, 12, 13, 40, 41, 36, 46, 70],
        x=[10.0, 10, 10, 10, 40, 40, 40, 40, 70],
        parent_id=[-1, 1, 2, 3, -1, 5, 6, 6, -1],
        link_score=[np.nan, 0.9, 0.8, 0.7, np.nan, 0.9, 0.6, 0.5, np.nan],
    )


def snapshot(g: TrackGraph) -> pd.DataFrame:
    return g.to_dataframe().sort_values("id").reset_index(drop=True)


ACTIONS = [
    ("link", lambda g: edits.link(g, 2, 9)),  # 2 already has child 3: a division
    ("break", lambda g: edits.break_link(g, 3)),
    ("delete_heal", lambda g: edits.delete_node(g, 2)),
    ("delete_leaf", lambda g: edits.delete_node(g, 4)),
    ("delete_mother", lambda g: edits.delete_node(g, 6)),
    ("add", lambda g: edits.add_node(g, 3, (1.0, 20.0, 20.0), radius=4.0)),
    ("add_linked", lambda g: edits.add_node(g, 3, (1.0, 60.0, 60.0), parent=9)),
    ("mark_division", lambda g: edits.mark_division(g, 2)),
    ("unmark_division", lambda g: edits.mark_division(g, 6, divides=False)),
    ("swap", lambda g: edits.swap_parents(g, 3, 7)),
    ("approve", lambda g: edits.approve(g, [2, 3])),
    ("approve_track", lambda g: edits.approve_track(g, 3)),
]


@pytest.mark.parametrize("name, make", ACTIONS, ids=[a[0] for a in ACTIONS])
def test_do_undo_redo_restores_exactly(graph, name, make):
    history = History(graph)
    before = snapshot(graph)
    history.execute(make(graph))
    after = snapshot(graph)
    assert not after.equals(before)
    history.undo()
    pd.testing.assert_frame_equal(snapshot(graph), before)
    history.redo()
    pd.testing.assert_frame_equal(snapshot(graph), after)
    history.undo()
    pd.testing.assert_frame_equal(snapshot(graph), before)


@pytest.mark.parametrize("name, make", ACTIONS, ids=[a[0] for a in ACTIONS])
def test_journal_round_trip_replays_the_same_result(graph, name, make):
    replica = graph.copy()
    command = make(graph)
    History(graph).execute(command)
    restored = command_from_dict(json.loads(json.dumps(command.to_dict())))
    History(replica).execute(restored)
    pd.testing.assert_frame_equal(snapshot(replica), snapshot(graph))


def test_link_makes_division_and_is_approved(graph):
    History(graph).do(edits.link, 2, 9)
    assert set(graph.children_of(2)) == {3, 9}
    row = graph.index_of(9)[0]
    assert graph["approved"][row] and graph["division_score"][graph.index_of(2)[0]] == 1.0


def test_link_within_one_frame_is_refused(graph):
    with pytest.raises(GraphError, match="same frame"):
        edits.link(graph, 3, 9)


def test_link_replaces_old_parent_and_orders_by_time(graph):
    command = History(graph).do(
        edits.link, 9, 2
    )  # given child first: the earlier node is the parent
    assert graph.parent_of(9) == 2
    assert {"kind": "link", "parent": 2, "child": 9} in command.corrections


def test_link_to_a_node_with_two_children_is_refused(graph):
    with pytest.raises(GraphError, match="already has two children"):
        edits.link(graph, 6, 9)


def test_delete_heals_only_when_unambiguous(graph):
    History(graph).do(edits.delete_node, 2)
    assert graph.parent_of(3) == 1
    History(graph).do(edits.delete_node, 6)  # two children: no healing
    assert graph.parent_of(7) == -1 and graph.parent_of(8) == -1


def test_unmark_division_breaks_the_farther_child(graph):
    # 7 is at distance 5 from 6, 8 at distance 5 too -> move 8 farther away first
    graph.set_values("y", [8], 60.0)
    History(graph).do(edits.mark_division, 6, divides=False)
    assert graph.children_of(6).tolist() == [7]


def test_swap_parents(graph):
    History(graph).do(edits.swap_parents, 3, 7)
    assert graph.parent_of(3) == 6 and graph.parent_of(7) == 2


def test_failed_action_leaves_graph_untouched(graph):
    before = snapshot(graph)
    command = edits.add_node(graph, 2, (1.0, 5.0, 5.0), parent=6)  # 6 already has two children
    with pytest.raises(GraphError):
        History(graph).execute(command)
    pd.testing.assert_frame_equal(snapshot(graph), before)


def test_history_is_capped_and_redo_cleared(graph):
    history = History(graph, max_length=2)
    for node in (2, 3, 4):
        history.do(edits.approve, [node])
    assert len(history.done) == 2
    history.undo()
    assert history.can_redo
    history.do(edits.approve, [7])
    assert not history.can_redo


def test_last_done_names_the_tracks_of_now(graph):
    history = History(graph)
    assert history.last_done is None
    first = history.do(edits.approve, [2])
    second = history.do(edits.approve, [3])
    assert history.last_done is second
    history.undo()
    assert history.last_done is first
    history.undo()
    assert history.last_done is None
    history.redo()
    assert history.last_done is first


# ---------------------------------------------------------------- columns created by an edit


def column_dtypes(g: TrackGraph) -> list[tuple[str, np.dtype]]:
    return [(c, g[c].dtype) for c in g.columns]


def new_node(node_id: int, t: int, **extra) -> dict[str, list]:
    return {"id": [node_id], "t": [t], "z": [1.0], "y": [90.0], "x": [90.0], **extra}


CREATING = [
    ("set_values", lambda: [edits.SetValues("flag", [2, 7], [1.0, 0.0])], {"flag"}),
    ("add_float", lambda: [edits.AddNodes(new_node(20, 4, link_margin=[0.25]))], {"link_margin"}),
    (
        "add_int_and_bool",
        lambda: [edits.AddNodes(new_node(20, 4, label=[3], seen=[True]))],
        {"label", "seen"},
    ),
    # as a re-link does it: new nodes bring the column, then the old nodes get their values
    (
        "add_then_set",
        lambda: [
            edits.AddNodes(new_node(20, 4, link_margin=[0.25])),
            edits.SetValues("link_margin", [3, 4], [0.5, 0.75]),
            edits.SetValues("flag", [20], [1.0]),
        ],
        {"link_margin", "flag"},
    ),
]


@pytest.mark.parametrize("name, steps, created", CREATING, ids=[c[0] for c in CREATING])
def test_undo_removes_the_columns_an_edit_created_and_redo_restores_them(
    graph, name, steps, created
):
    history = History(graph)
    columns_before, before = column_dtypes(graph), snapshot(graph)
    history.execute(edits.Compound(name, steps()))
    columns_after, after = column_dtypes(graph), snapshot(graph)
    assert {c for c, _ in columns_after} - {c for c, _ in columns_before} == created
    history.undo()
    assert column_dtypes(graph) == columns_before
    pd.testing.assert_frame_equal(snapshot(graph), before)
    history.redo()
    assert column_dtypes(graph) == columns_after
    pd.testing.assert_frame_equal(snapshot(graph), after)
    history.undo()
    assert column_dtypes(graph) == columns_before


def test_redo_recreates_a_set_column_with_nan_elsewhere(graph):
    history = History(graph)
    history.execute(edits.Compound("flag", [edits.SetValues("flag", [2], [1.0])]))
    history.undo()
    assert "flag" not in graph.columns
    history.redo()
    assert graph["flag"].dtype == np.float64
    flags = dict(zip(graph.ids.tolist(), graph["flag"].tolist(), strict=True))
    assert flags[2] == 1.0 and all(np.isnan(v) for k, v in flags.items() if k != 2)


def test_undo_of_a_change_to_an_existing_column_keeps_it(graph):
    graph.set_values("flag", [2, 3], [1.0, 0.0])
    history = History(graph)
    columns_before, before = column_dtypes(graph), snapshot(graph)
    history.execute(edits.Compound("reflag", [edits.SetValues("flag", [2, 5], [0.0, 1.0])]))
    history.undo()
    assert column_dtypes(graph) == columns_before
    pd.testing.assert_frame_equal(snapshot(graph), before)
    # a node added to a graph that has the column keeps it too
    history.execute(edits.Compound("add", [edits.AddNodes(new_node(20, 4, flag=[1.0]))]))
    history.undo()
    pd.testing.assert_frame_equal(snapshot(graph), before)


def test_failed_action_removes_the_column_it_created(graph):
    columns_before, before = column_dtypes(graph), snapshot(graph)
    command = edits.Compound(
        "bad",
        [
            edits.AddNodes(new_node(20, 4, link_margin=[0.25])),
            edits.SetParents([20], [6]),  # 6 already has two children
        ],
    )
    with pytest.raises(GraphError, match="at most two children"):
        History(graph).execute(command)
    assert column_dtypes(graph) == columns_before
    pd.testing.assert_frame_equal(snapshot(graph), before)


def test_journal_replays_created_columns_through_undo_and_redo(graph, tmp_path):
    history = History(graph)
    journal = Journal(tmp_path / "journal")
    journal.start(history)
    history.execute(edits.Compound("flag", [edits.SetValues("flag", [2], [1.0])]))
    history.execute(edits.Compound("add", [edits.AddNodes(new_node(20, 4, link_margin=[0.25]))]))
    history.undo()  # link_margin gone again
    history.undo()  # flag gone again
    history.redo()  # flag back
    restored = restore(tmp_path / "journal")
    journal.close()
    assert restored.graph.columns == graph.columns and "flag" in graph.columns
    assert "link_margin" not in graph.columns
    pd.testing.assert_frame_equal(snapshot(restored.graph), snapshot(graph))
    restored.undo()
    assert "flag" not in restored.graph.columns
    restored.redo()
    restored.redo()
    assert restored.graph["link_margin"][restored.graph.index_of(20)[0]] == 0.25
