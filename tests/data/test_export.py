from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_cellect.data.annotations import read_csv, read_ctc, read_geff, read_tracks
from napari_cellect.data.export import (
    ctc_tracks,
    draw_markers,
    lineage_ids,
    write_csv,
    write_ctc,
    write_geff,
    write_label_series,
)
from napari_cellect.errors import InputError
from napari_cellect.track.graph import CSV_COLUMNS, TrackGraph

SHAPE = (6, 5, 32, 32)  # T, Z, Y, X


@pytest.fixture
def graph() -> TrackGraph:
    """0 -> 1 -> 2 divides into 3 and 4; 4 -> 5 skips frame 4; 6 stands alone."""
    return TrackGraph.from_arrays(
        id=[0, 1, 2, 3, 4, 5, 6],
        t=[0, 1, 2, 3, 3, 5, 0],
        z=[2.0, 2, 2, 2, 2, 2, 1],
        y=[8.0, 9, 10, 6, 16, 17, 26],
        x=[8.0, 8, 8, 7, 10, 11, 26],
        parent_id=[-1, 0, 1, 2, 2, 4, -1],
        radius=[2.5, 2.5, 2.5, 2, 2, 2, np.nan],
        score=[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3],
        division_score=[0, 0, 0.95, 0, 0, 0, 0],
        link_score=[np.nan, 0.9, 0.8, 0.7, 0.6, 0.5, np.nan],
        approved=[True, False, True, False, False, True, False],
    )


def _edges_by_place(graph) -> set:
    """Edges named by (t, rounded z y x) of both ends, independent of node ids."""
    place = {
        int(i): (int(t), *np.round(p).astype(int).tolist())
        for i, t, p in zip(graph.ids, graph["t"], graph.positions())
    }
    return {(place[a], place[b]) for a, b in graph.edges().tolist()}


# ------------------------------------------------------------------ CSV


def test_csv_round_trip_and_format(tmp_path, graph):
    path = tmp_path / "tracks.csv"
    write_csv(graph, path)
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS)
    assert lines[0] == (
        "id,t,z,y,x,parent_id,track_id,parent_track_id,radius,division_score,link_score,approved"
    )
    first = dict(zip(lines[0].split(","), lines[1].split(",")))
    assert first["approved"] == "1" and first["link_score"] == ""
    back = read_csv(path)
    rows = back.index_of(graph.ids)
    for column in (
        "t",
        "z",
        "y",
        "x",
        "parent_id",
        "division_score",
        "link_score",
        "approved",
        "radius",
        "track_id",
        "parent_track_id",
    ):
        np.testing.assert_array_equal(back[column][rows], graph[column], err_msg=column)


def test_csv_write_is_atomic_on_error(tmp_path, graph, monkeypatch):
    path = tmp_path / "tracks.csv"
    path.write_text("previous")
    import pandas as pd

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError, match="disk full"):
        write_csv(graph, path)
    assert path.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tracks.csv"]


# ------------------------------------------------------------------ CTC


def test_ctc_table_cuts_gaps(graph):
    labels, table = ctc_tracks(graph)
    # graph track ids: 1 (nodes 0-2), 4 (node 3), 5 (nodes 4, 5), 7 (node 6); the edge 4 -> 5
    # skips frame 4, so node 5 starts a new CTC track 8 whose parent is 5
    assert table.tolist() == [[1, 0, 2, 0], [4, 3, 3, 1], [5, 3, 3, 1], [7, 0, 0, 0], [8, 5, 5, 5]]
    assert labels[graph.index_of([0, 1, 2, 3, 4, 5, 6])].tolist() == [1, 1, 1, 4, 5, 8, 7]


def test_ctc_results_from_points_round_trip(tmp_path, graph):
    folder = write_ctc(graph, tmp_path / "01_RES", shape=SHAPE, z_ratio=2.0).folder
    assert folder == tmp_path / "01_RES"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"mask{t:03d}.tif" for t in range(6)] + ["res_track.txt"]
    assert (folder / "res_track.txt").read_text() == "1 0 2 0\n4 3 3 1\n5 3 3 1\n7 0 0 0\n8 5 5 5\n"
    mask = tifffile.imread(folder / "mask000.tif")
    assert mask.dtype == np.uint16 and mask.shape == SHAPE[1:]
    assert set(np.unique(mask)) == {0, 1, 7}
    back = read_ctc(folder)
    assert len(back) == len(graph)
    np.testing.assert_allclose(
        np.sort(back.positions(), axis=0), np.sort(graph.positions(), axis=0), atol=1e-9
    )
    assert _edges_by_place(back) == _edges_by_place(graph)


def test_ctc_ground_truth_markers_round_trip(tmp_path, graph):
    write_ctc(graph, tmp_path / "01_GT", gt=True, shape=SHAPE, z_ratio=2.0, radius=1.5)
    tra = tmp_path / "01_GT" / "TRA"
    assert (tra / "man_track.txt").exists() and (tra / "man_track005.tif").exists()
    back = read_tracks(tmp_path / "01_GT")
    assert _edges_by_place(back) == _edges_by_place(graph)
    assert back["division_score"][back["t"] == 2].tolist() == [1.0]


def painted_labels(graph, dtype) -> np.ndarray:
    """Label masks of ``SHAPE`` with each node a 1 x 3 x 3 patch of its track id."""
    labels = np.zeros(SHAPE, dtype)
    track = graph.track_ids()
    for row in range(len(graph)):
        z, y, x = graph.positions()[row].astype(int)
        labels[graph["t"][row], z, y - 1 : y + 2, x - 1 : x + 2] = track[row]
    return labels


def test_ctc_masks_from_label_array_and_callable(tmp_path, graph):
    labels = painted_labels(graph, np.uint32)
    labels[1, 0, 0, 0] = 99  # a label with no node: dropped
    folder = write_ctc(graph, tmp_path / "res", labels=labels).folder
    mask5 = tifffile.imread(folder / "mask005.tif")
    assert set(np.unique(mask5)) == {0, 8}  # track 5 after its gap is CTC track 8
    assert 99 not in tifffile.imread(folder / "mask001.tif")
    back = read_ctc(folder)
    assert _edges_by_place(back) == _edges_by_place(graph)

    folder2 = write_ctc(graph, tmp_path / "res2", labels=lambda t: labels[t]).folder
    for t in range(SHAPE[0]):
        np.testing.assert_array_equal(
            tifffile.imread(folder2 / f"mask{t:03d}.tif"),
            tifffile.imread(folder / f"mask{t:03d}.tif"),
        )


def test_ctc_nodes_without_mask_pixels_become_markers_on_background(tmp_path, graph):
    labels = painted_labels(graph, np.uint16)
    track = graph.track_ids()
    missed = graph.index_of([1, 3])
    for row in missed:  # the segmentation missed node 1, and node 3 lies under node 4's cell
        labels[graph["t"][row]][labels[graph["t"][row]] == track[row]] = 0
    cell4 = track[graph.index_of([4])[0]]
    labels[3, :, 2:12, 3:12] = cell4  # covers node 3's whole ball
    written = write_ctc(graph, tmp_path / "res", labels=labels)
    assert sorted(written.marked.tolist()) == [1, 3] and len(written.left_out) == 0
    mask1 = tifffile.imread(written.folder / "mask001.tif")
    assert mask1[2, 9, 8] == 1  # node 1's track label at its centre
    mask3 = tifffile.imread(written.folder / "mask003.tif")
    assert mask3[2, 6, 7] == 4  # node 3 (CTC track 4) keeps at least its centre voxel
    assert np.count_nonzero(mask3 == 5) == np.count_nonzero(labels[3] == cell4) - 1
    back = read_ctc(written.folder)
    assert len(back) == len(graph) and back.n_edges == graph.n_edges
    assert len(back.divisions()) == 1
    node1 = back.positions()[back["t"] == 1]
    np.testing.assert_allclose(node1, graph.positions()[graph.index_of([1])], atol=0.5)


def test_ctc_2d_and_uint32(tmp_path):
    graph = TrackGraph.from_arrays(
        id=[70000, 70001], t=[0, 1], z=[0.0, 0], y=[5.0, 6], x=[5.0, 6], parent_id=[-1, 70000]
    )
    folder = write_ctc(graph, tmp_path / "res", shape=(2, 12, 12)).folder
    mask = tifffile.imread(folder / "mask001.tif")
    assert mask.shape == (12, 12) and mask.dtype == np.uint32
    assert (folder / "res_track.txt").read_text() == "70001 0 1 0\n"
    assert mask[6, 6] == 70001


def test_ctc_removes_stale_masks_and_keeps_other_files(tmp_path, graph):
    folder = tmp_path / "res"
    folder.mkdir()
    (folder / "mask009.tif").write_bytes(b"old")
    (folder / "notes.txt").write_text("mine")
    write_ctc(graph, folder, shape=SHAPE)
    names = {p.name for p in folder.iterdir()}
    assert "mask009.tif" not in names and "notes.txt" in names and "mask005.tif" in names
    assert not any(n.startswith(".cellect-tmp") for n in names)


def test_ctc_bad_input_writes_nothing(tmp_path, graph):
    with pytest.raises(InputError, match="reach frame 5 but the images have 3 frames"):
        write_ctc(graph, tmp_path / "a", shape=(3, 5, 32, 32))
    assert not (tmp_path / "a").exists()

    labels = np.zeros(SHAPE, np.uint16)

    def bad_frames(t):
        return labels[t] if t < 4 else labels[t, :, :10]

    existing = tmp_path / "b"
    existing.mkdir()
    (existing / "res_track.txt").write_text("old\n")
    with pytest.raises(InputError, match=r"frame 4"):
        write_ctc(graph, existing, labels=bad_frames, shape=SHAPE)
    assert sorted(p.name for p in existing.iterdir()) == ["res_track.txt"]
    assert (existing / "res_track.txt").read_text() == "old\n"

    with pytest.raises(InputError, match=r"frame 4"):
        write_ctc(graph, tmp_path / "c" / "01_GT", gt=True, labels=bad_frames, shape=SHAPE)
    assert not (tmp_path / "c").exists()


def test_table_only_without_images(tmp_path, graph):
    folder = write_ctc(graph, tmp_path / "res").folder
    assert sorted(p.name for p in folder.iterdir()) == ["res_track.txt"]


def test_draw_markers_is_anisotropic():
    image = draw_markers(
        (9, 21, 21), np.array([[4.0, 10, 10]]), np.array([4.0]), np.array([3]), z_ratio=2.0
    )
    z, y, _x = np.nonzero(image)
    assert (z.min(), z.max()) == (2, 6)  # 4 px radius = 2 slices at z_ratio 2
    assert (y.min(), y.max()) == (6, 14)
    tiny = draw_markers((3, 5, 5), np.array([[1.0, 2, 2]]), np.array([0.1]), np.array([1]))
    assert tiny.sum() == 1 and tiny[1, 2, 2] == 1  # a marker always covers its centre


def test_overlapping_markers_split_between_centres():
    image = draw_markers(
        (1, 10, 20), np.array([[0.0, 5, 7], [0.0, 5, 11]]), np.array([4.0, 4.0]), np.array([1, 2])
    )
    assert image[0, 5, 8] == 1 and image[0, 5, 10] == 2
    assert image[0, 5, 7] == 1 and image[0, 5, 11] == 2


# ------------------------------------------------------------------ GEFF


def test_geff_round_trip(tmp_path, graph):
    path = tmp_path / "tracks.geff"
    write_geff(graph, path, z_ratio=5.0)
    attrs = json.loads((path / ".zattrs").read_text())["geff"]
    axes = {a["name"]: a for a in attrs["axes"]}
    assert axes["t"]["type"] == "time" and axes["z"]["type"] == "space"
    assert axes["z"]["scale"] == 5.0 and axes["y"]["unit"] == "pixel"
    assert attrs["track_node_props"] == {"tracklet": "track_id", "lineage": "lineage_id"}
    back = read_geff(path)
    rows = back.index_of(graph.ids)
    for column in (
        "t",
        "z",
        "y",
        "x",
        "parent_id",
        "radius",
        "score",
        "division_score",
        "link_score",
        "approved",
        "track_id",
    ):
        np.testing.assert_array_equal(back[column][rows], graph[column], err_msg=column)
    assert "lineage_id" not in back.columns


def test_geff_overwrites_atomically(tmp_path, graph):
    path = tmp_path / "tracks.geff"
    write_geff(graph, path)
    small = TrackGraph.from_arrays(id=[3], t=[0], z=[0.0], y=[1.0], x=[1.0])
    write_geff(small, path)
    assert len(read_tracks(path)) == 1
    with pytest.raises(InputError, match="z_ratio must be positive"):
        write_geff(graph, path, z_ratio=0)
    assert len(read_tracks(path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tracks.geff"]


def test_lineage_ids(graph):
    rows = graph.index_of([0, 3, 5, 6])
    assert lineage_ids(graph)[rows].tolist() == [1, 1, 1, 7]


@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
def test_label_series_are_written_frame_by_frame(tmp_path, suffix):
    """Each frame is in the (temporary) output before the next one is asked for, so the series
    is never held whole; the finished file holds every frame."""
    shape, n_frames = (4, 64, 64), 4
    frame_bytes = int(np.prod(shape)) * 4
    path = tmp_path / f"masks{suffix}"

    def frames():
        for t in range(n_frames):
            if t:
                (partial,) = tmp_path.glob(".cellect-tmp-*")
                if suffix == ".zarr":
                    import zarr

                    written = zarr.open_array(str(partial), mode="r")[t - 1]
                    np.testing.assert_array_equal(written, t)
                else:
                    assert partial.stat().st_size >= t * frame_bytes
            yield np.full(shape, t + 1, np.uint32)

    write_label_series(frames(), path, n_frames, shape)
    if suffix == ".zarr":
        import zarr

        stored = zarr.open_array(str(path), mode="r")
        assert stored.chunks == (1, *shape)
        result = stored[:]
    else:
        with tifffile.TiffFile(path) as tif:
            assert tif.series[0].axes == "TZYX"
            assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK
            result = tif.asarray()
    assert result.shape == (n_frames, *shape)
    assert [int(result[t].max()) for t in range(n_frames)] == [1, 2, 3, 4]
    assert not list(tmp_path.glob(".cellect-tmp-*"))
