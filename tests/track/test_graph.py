import numpy as np
import pandas as pd
import pytest

from napari_cellect.errors import GraphError
from napari_cellect.track.graph import CSV_COLUMNS, GraphChange, TrackGraph


def division_graph() -> TrackGraph:
    """1 -> 2 -> {3, 4}; 3 -> 5; 6 alone in frame 3."""
    return TrackGraph.from_arrays(
        id=[1, 2, 3, 4, 5, 6],
        t=[0, 1, 2, 2, 3, 3],
        z=[1.0, 1, 1, 1, 1, 2],
        y=[10.0, 11, 5, 17, 5, 30],
        x=[10.0, 10, 10, 10, 11, 30],
        parent_id=[-1, 1, 2, 2, 3, -1],
    )


def test_track_ids_are_per_branch_and_start_at_first_node_plus_one():
    g = division_graph()
    np.testing.assert_array_equal(g.track_ids(), [2, 2, 4, 5, 4, 7])
    np.testing.assert_array_equal(g.parent_track_ids(), [-1, -1, 2, 2, 2, -1])
    assert g.track_graph_dict() == {4: [2], 5: [2]}
    np.testing.assert_array_equal(g.divisions(), [2])
    np.testing.assert_array_equal(g.children_of(2), [3, 4])
    assert g.parent_of(5) == 3


def test_napari_tracks_sorted_by_track_then_time():
    data, graph = division_graph().to_napari_tracks()
    assert data.shape == (6, 5)
    keys = list(zip(data[:, 0], data[:, 1]))
    assert keys == sorted(keys)
    assert graph == {4: [2], 5: [2]}


@pytest.mark.parametrize(
    "parents, message",
    [
        ([-1, 1, 2, 2, 2, -1], "at most two children"),
        ([-1, 1, 2, 2, 99, -1], "do not exist"),
        ([-1, 1, 2, 2, 3, 5], "forward in time"),
    ],
)
def test_invalid_structure_is_refused_with_node_names(parents, message):
    g = division_graph()
    with pytest.raises(GraphError, match=message):
        TrackGraph.from_arrays(
            **{**{c: g[c] for c in ("id", "t", "z", "y", "x")}, "parent_id": parents}
        )


def test_duplicate_ids_refused():
    with pytest.raises(GraphError, match="unique; repeated: 1"):
        TrackGraph.from_arrays(id=[1, 1], t=[0, 1], z=[0, 0], y=[0, 0], x=[0, 0])


def test_missing_required_column():
    with pytest.raises(GraphError, match="missing required column"):
        TrackGraph.from_arrays(id=[1], t=[0], y=[0], x=[0])


def test_dataframe_round_trip_keeps_everything():
    g = division_graph()
    g.set_values("approved", [3], True)
    g.set_values("link_score", [3, 4], [0.9, 0.8])
    df = g.to_dataframe()
    assert tuple(df.columns[: len(CSV_COLUMNS)]) == CSV_COLUMNS
    back = TrackGraph.from_dataframe(df)
    pd.testing.assert_frame_equal(back.to_dataframe(), df)


def test_mutations_emit_changes_and_keep_invariants():
    g = division_graph()
    seen: list[GraphChange] = []
    g.changed.connect(seen.append)
    new = g.add_nodes(t=[4], z=[1.0], y=[5.0], x=[12.0], parent_id=[5])
    assert new.tolist() == [7]
    assert g.track_ids()[g.index_of(7)[0]] == 4  # continues the branch of node 3
    g.set_parent(6, 3)  # 3 now has two children: 5 and 6 -> a division
    assert set(g.children_of(3)) == {5, 6}
    with pytest.raises(GraphError, match="at most two children"):
        g.add_nodes(t=[4], z=[0.0], y=[0.0], x=[0.0], parent_id=[3])
    assert g.n_children()[g.index_of(3)[0]] == 2  # the failed add was rolled back
    assert len(g) == 7
    g.remove_nodes([3])
    assert g.parent_of(5) == -1 and g.parent_of(6) == -1
    assert [c.kind for c in seen] == ["add", "link", "remove"]


def test_failed_set_parent_rolls_back():
    g = division_graph()
    with pytest.raises(GraphError, match="forward in time"):
        g.set_parent(1, 5)
    assert g.parent_of(1) == -1


def test_unknown_ids_named():
    g = division_graph()
    with pytest.raises(GraphError, match=r"unknown node id.*42"):
        g.index_of([1, 42])


def test_extra_columns_survive_add():
    g = TrackGraph.from_arrays(id=[1], t=[0], z=[0], y=[0], x=[0], margin=[0.5])
    g.add_nodes(t=[1], z=[0.0], y=[0.0], x=[0.0], parent_id=[1])
    assert g["margin"].tolist()[0] == 0.5 and np.isnan(g["margin"][1])


def test_large_graph_is_vectorised():
    n_tracks, length = 2000, 50
    ids = np.arange(1, n_tracks * length + 1)
    t = np.tile(np.arange(length), n_tracks)
    parent = np.where(t == 0, -1, ids - 1)
    zeros = np.zeros(len(ids))
    g = TrackGraph.from_arrays(id=ids, t=t, z=zeros, y=zeros, x=zeros, parent_id=parent)
    tracks = g.track_ids()
    assert len(np.unique(tracks)) == n_tracks
    np.testing.assert_array_equal(tracks, ids[(ids - 1) // length * length] + 1)


def test_drop_column_removes_an_extra_column_and_emits_a_values_change():
    g = division_graph()
    g.set_values("flag", [2], 1.0)
    seen: list[GraphChange] = []
    g.changed.connect(seen.append)
    g.drop_column("flag")
    assert "flag" not in g.columns and "flag" not in g.to_dataframe().columns
    assert [(c.kind, c.column) for c in seen] == [("values", "flag")]
    np.testing.assert_array_equal(seen[0].ids, g.ids)


@pytest.mark.parametrize(
    "column, message", [("radius", "core column"), ("nope", "no column 'nope'")]
)
def test_drop_column_refuses_core_and_unknown_columns(column, message):
    g = division_graph()
    with pytest.raises(GraphError, match=message):
        g.drop_column(column)
    assert "radius" in g.columns


def test_failed_set_values_does_not_leave_a_new_column():
    g = division_graph()
    with pytest.raises(ValueError):
        g.set_values("flag", [1, 2], [1.0, 2.0, 3.0])  # three values for two nodes
    assert "flag" not in g.columns


def test_new_integer_column_from_add_is_zero_for_the_older_nodes():
    g = division_graph()
    g.add_nodes(t=[4], z=[1.0], y=[5.0], x=[12.0], label=np.array([3], np.int64))
    assert g["label"].dtype == np.int64
    np.testing.assert_array_equal(g["label"], [0, 0, 0, 0, 0, 0, 3])
