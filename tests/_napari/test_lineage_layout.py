"""Lineage layout: columns, mothers over daughters, approved runs (pure numpy)."""

from __future__ import annotations

import numpy as np

from napari_cellect._napari._lineage_layout import approved_runs, compute_layout, segments
from napari_cellect.track.graph import TrackGraph


def lineage_graph() -> TrackGraph:
    """Root 1 (t 0-2) divides into 4 and 6; 4 (t 3-4) divides into 8 and 9; a second root 20."""
    return TrackGraph.from_arrays(
        id=[1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 21],
        t=[0, 1, 2, 3, 4, 3, 4, 5, 5, 0, 1],
        z=[0.0] * 11,
        y=[0.0] * 11,
        x=[0.0] * 11,
        parent_id=[-1, 1, 2, 3, 4, 3, 6, 5, 5, -1, 20],
        approved=[0, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1],
    )


def test_leaves_get_columns_and_mothers_are_centred_over_their_leaves():
    graph = lineage_graph()
    layout = compute_layout(graph)
    x = dict(zip(layout.track.tolist(), layout.x.tolist(), strict=True))
    # leaves 9 (id 8), 10 (id 9), 7 (id 6) take columns 0, 1, 2; the second tree starts after a gap
    assert (x[9], x[10], x[7]) == (0.0, 1.0, 2.0)
    assert x[5] == 0.5 and x[2] == 1.0 and x[21] == 4.0
    assert layout.width == 5.0
    assert layout.t0[layout.branch_of_track(5)] == 3 and layout.t1[layout.branch_of_track(5)] == 4
    node_x = dict(zip(layout.node_ids.tolist(), layout.node_x.tolist(), strict=True))
    assert node_x[3] == x[2] and node_x[8] == x[9]


def test_segments_are_one_stem_per_branch_and_one_connector_per_daughter():
    layout = compute_layout(lineage_graph())
    stems, divisions = segments(layout)
    assert len(stems) == layout.n_branches == 6
    assert np.all(stems[:, 0] == stems[:, 2])  # stems are vertical
    assert len(divisions) == 4
    np.testing.assert_array_equal(np.sort(divisions[:, 1]), [2, 2, 4, 4])  # from mothers' ends


def test_approved_links_merge_into_runs():
    graph = lineage_graph()
    runs = approved_runs(graph, compute_layout(graph))
    as_set = {tuple(r) for r in runs.tolist()}
    # 1->2->3 is one vertical run, 3->4 and 5->8 are division connectors, 20->21 one run
    assert as_set == {
        (1.0, 0.0, 1.0, 2.0),
        (1.0, 2.0, 0.5, 3.0),
        (0.5, 4.0, 0.0, 5.0),
        (4.0, 0.0, 4.0, 1.0),
    }


def test_empty_graph_has_an_empty_layout():
    layout = compute_layout(TrackGraph())
    assert layout.n_branches == 0 and layout.width == 0.0
    assert approved_runs(TrackGraph(), layout).shape == (0, 4)


def test_layout_of_many_tracks_with_divisions():
    rng = np.random.default_rng(0)
    n_tracks, frames, split = 300, 40, 20
    ids = np.arange(1, n_tracks * frames + 1).reshape(n_tracks, frames)
    t = np.tile(np.arange(frames), (n_tracks, 1))
    parent = np.where(t == 0, -1, ids - 1)
    keep = np.ones_like(ids, dtype=bool)
    # track i+1 (i a multiple of 10) starts at frame 20 as the second daughter of track i
    mothers_rows = np.arange(0, n_tracks, 10)
    keep[mothers_rows + 1, :split] = False
    parent[mothers_rows + 1, split] = ids[mothers_rows, split - 1]
    graph = TrackGraph.from_arrays(
        id=ids[keep],
        t=t[keep],
        z=np.zeros(keep.sum()),
        y=rng.random(keep.sum()),
        x=rng.random(keep.sum()),
        parent_id=parent[keep],
    )
    layout = compute_layout(graph)
    n_div = len(mothers_rows)
    assert layout.n_branches == n_tracks + n_div  # the mother's own track splits in two
    leaves = np.setdiff1d(np.arange(layout.n_branches), layout.parent[layout.parent >= 0])
    assert len(np.unique(layout.x[leaves])) == len(leaves)  # leaves never share a column
    n_children = np.bincount(layout.parent[layout.parent >= 0], minlength=layout.n_branches)
    mothers = np.flatnonzero(n_children == 2)
    assert len(mothers) == n_div
    for m in mothers:  # each mother sits between its two daughters, above them
        daughters = np.flatnonzero(layout.parent == m)
        assert layout.x[daughters].min() < layout.x[m] < layout.x[daughters].max()
        assert np.all(layout.t0[daughters] == layout.t1[m] + 1)
