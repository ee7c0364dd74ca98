"""npe2 writers: session layers write their graph; plain layers are converted."""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_cellect._napari._layer_data import SESSION_KEY
from napari_cellect._napari._reader import read_tracks_file
from napari_cellect._napari._writer import (
    graph_from_points,
    graph_from_tracks,
    write_points,
    write_tracks,
)
from napari_cellect.data.annotations import read_tracks
from napari_cellect.data.export import write_csv
from napari_cellect.track import edits


def table(graph) -> pd.DataFrame:
    return graph.to_dataframe().sort_values("id").reset_index(drop=True)


def test_session_layers_write_the_whole_graph_and_mark_it_saved(tmp_path, graph):
    write_csv(graph, tmp_path / "in.csv")
    (tracks, tkw, _), (points, pkw, _) = read_tracks_file(str(tmp_path / "in.csv"))
    session = pkw["metadata"][SESSION_KEY]
    session.ensure_journal()
    session.history.do(edits.approve, [2])
    assert session.dirty
    [out] = write_points(str(tmp_path / "out"), points, pkw)
    assert out.endswith("out.csv") and not session.dirty
    pd.testing.assert_frame_equal(table(read_tracks(out)), table(session.graph))
    [out2] = write_tracks(str(tmp_path / "out2.csv"), tracks, tkw)
    pd.testing.assert_frame_equal(table(read_tracks(out2)), table(session.graph))


def test_plain_points_use_their_id_and_parent_features(tmp_path):
    data = np.array([[0, 1.0, 2.0, 3.0], [1, 1.0, 2.5, 3.5]])
    features = {"id": np.array([10, 11]), "parent_id": np.array([-1, 10])}
    [out] = write_points(str(tmp_path / "p.csv"), data, {"features": pd.DataFrame(features)})
    graph = read_tracks(out)
    assert graph.parent_of(11) == 10 and graph.node(11)["y"] == 2.5
    bare = graph_from_points(data[:, [0, 2, 3]], None)  # 2D, no features
    assert list(bare.ids) == [1, 2] and np.all(bare["z"] == 0) and bare.n_edges == 0


def test_plain_tracks_link_consecutive_vertices_and_divisions(tmp_path):
    # track 1: t 0-1, divides into tracks 2 (t 2-3) and 3 (t 2); rows deliberately unsorted
    data = np.array(
        [
            [2, 3, 0, 5, 5],
            [1, 1, 0, 1, 1],
            [3, 2, 0, 9, 9],
            [1, 0, 0, 0, 0],
            [2, 2, 0, 4, 4],
        ],
        dtype=float,
    )
    graph = graph_from_tracks(data, {2: [1], 3: 1})
    assert len(graph) == 5 and graph.n_edges == 4
    mother_last = graph.ids[(graph["t"] == 1)][0]
    assert len(graph.children_of(mother_last)) == 2
    [out] = write_tracks(str(tmp_path / "t.csv"), data, {"graph": {2: [1], 3: [1]}})
    assert read_tracks(out).n_edges == 4
