from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cellect.data.annotations import (
    LINAJEA_Z_RATIO,
    detect_format,
    label_centroids,
    read_csv,
    read_ctc,
    read_geff,
    read_linajea,
    read_tracks,
)
from napari_cellect.errors import InputError

MINIMAL = """id,t,z,y,x,parent_id
10,0,1,5,5,-1
11,1,1,6,5,10
12,2,1.5,7,5,11
13,2,2,20,20,11
14,0,0,30,30,
"""


def _edges(graph) -> set[tuple[int, int]]:
    return {tuple(e) for e in graph.edges().tolist()}


# ------------------------------------------------------------------ CSV


def test_minimal_csv_derives_tracks(tmp_path):
    path = tmp_path / "hand.csv"
    path.write_text(MINIMAL)
    graph = read_tracks(path)
    assert sorted(graph.ids.tolist()) == [10, 11, 12, 13, 14]
    assert _edges(graph) == {(10, 11), (11, 12), (11, 13)}
    rows = graph.index_of([10, 11, 12, 13, 14])
    assert graph["track_id"][rows].tolist() == [11, 11, 13, 14, 15]
    assert graph["parent_track_id"][rows].tolist() == [-1, -1, 11, 11, -1]
    assert graph["z"][rows[2]] == 1.5
    assert not graph["approved"].any()
    assert np.isnan(graph["radius"]).all()


def test_csv_approved_words_2d_and_extra_columns(tmp_path):
    path = tmp_path / "2d.csv"
    path.write_text(
        "id,t,y,x,parent_id,approved,area,name\n0,0,5,5,-1,true,12.5,a\n\n1,1,6,6,0,0,13,b\n"
    )
    graph = read_csv(path)
    assert graph["z"].tolist() == [0.0, 0.0]
    assert graph["approved"].tolist() == [True, False]
    assert graph["area"].tolist() == [12.5, 13.0]
    assert "name" not in graph.columns


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("id,t,z,y\n0,0,1,1\n", r"bad\.csv, line 1: missing column\(s\) x, parent_id"),
        (
            "id,t,z,y,x,parent_id\n0,0,1,1,1,-1\n1,1,1,abc,1,0\n",
            r"bad\.csv, line 3: column 'y': expected a number, found 'abc'",
        ),
        (
            "id,t,z,y,x,parent_id\n0,0.5,1,1,1,-1\n",
            r"bad\.csv, line 2: column 't': expected a whole number, found '0.5'",
        ),
        (
            "id,t,z,y,x,parent_id\n0,0,1,1,1,-1\n1,1,1,1,1,7\n",
            r"bad\.csv, line 3: parent 7 of id 1 does not exist",
        ),
        (
            "id,t,z,y,x,parent_id\n0,0,1,1,1,-1\n0,1,1,1,1,-1\n",
            r"bad\.csv, line 3: id 0 is used twice \(also on line 2\)",
        ),
        (
            "id,t,z,y,x,parent_id\n0,1,1,1,1,-1\n1,1,1,1,1,0\n",
            r"bad\.csv, line 3: parent 0 \(frame 1\) of id 1 \(frame 1\) is not in an earlier",
        ),
        (
            "id,t,z,y,x,parent_id\n0,0,1,1,1,-1\n1,1,1,1,1,0\n2,1,1,1,1,0\n3,1,1,1,1,0\n",
            r"bad\.csv, line 2: id 0 has 3 children .* lines 3, 4, 5",
        ),
        (
            "id,t,z,y,x,parent_id,approved\n0,0,1,1,1,-1,maybe\n",
            r"bad\.csv, line 2: column 'approved': expected 0/1 or true/false, found 'maybe'",
        ),
        (
            "id,t,z,y,x,parent_id\n0,,1,1,1,-1\n",
            r"bad\.csv, line 2: column 't': expected a whole number, found ''",
        ),
    ],
)
def test_csv_bad_input(tmp_path, text, pattern):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=pattern):
        read_tracks(path)


# ------------------------------------------------------------------ linajea tracks.txt

TRACKS_TXT = (
    "t\tz\ty\tx\tcell_id\tparent_id\ttrack_id\tradius\tname\tdiv_state\n"
    "0\t50.0\t100.0\t200.0\t1\t-1\t1\t12.0\tP0\t0\n"
    "1\t55.0\t101.0\t201.0\t2\t1\t1\t12.0\tP0\t1\n"
    "2\t60.0\t90.0\t190.0\t3\t2\t1\t9.0\tAB\t2\n"
    "2\t60.0\t110.0\t210.0\t4\t2\t1\t9.0\tP1\t2\n"
)


def test_linajea_tracks_txt(tmp_path):
    path = tmp_path / "tracks.txt"
    path.write_text(TRACKS_TXT)
    assert detect_format(path) == ("linajea", path)
    graph = read_tracks(path)
    rows = graph.index_of([1, 2, 3, 4])
    np.testing.assert_allclose(graph["z"][rows], np.array([50, 55, 60, 60]) / LINAJEA_Z_RATIO)
    np.testing.assert_allclose(graph["y"][rows], [100, 101, 90, 110])
    assert graph["division_score"][rows].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert graph["radius"][rows].tolist() == [12.0, 12.0, 9.0, 9.0]
    assert _edges(graph) == {(1, 2), (2, 3), (2, 4)}
    assert graph["track_id"][rows].tolist() == [2, 2, 4, 5]  # branch ids, not lineage ids
    assert read_tracks(path, z_ratio=10.0)["z"][rows[0]] == pytest.approx(5.0)


def test_linajea_without_div_state_and_commented_header(tmp_path):
    path = tmp_path / "tracks.txt"
    lines = TRACKS_TXT.splitlines()
    header = "#" + "\t".join(lines[0].split("\t")[:8])
    body = ["\t".join(line.split("\t")[:8]) for line in lines[1:]]
    path.write_text("\n".join([header, *body]) + "\n")
    graph = read_linajea(path)
    assert graph["division_score"][graph.index_of([2])].tolist() == [1.0]


def test_linajea_missing_parent(tmp_path):
    path = tmp_path / "tracks.txt"
    path.write_text(TRACKS_TXT.replace("4\t2\t1\t9.0", "4\t99\t1\t9.0"))
    with pytest.raises(
        InputError,
        match=r"tracks\.txt, line 5: parent 99 of cell_id 4 does "
        r"not exist",
    ):
        read_tracks(path)


# ------------------------------------------------------------------ CTC


def _ball(shape, centre, radius, value, out):
    zz, yy, xx = np.indices(shape)
    inside = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius**2
    out[inside] = value


def _write_ctc_gt(folder, with_gap=True):
    """Track 1 (t0-1) divides into 2 and 3 (t2); track 3 has a gap continued by 4 (t4)."""
    folder.mkdir(parents=True)
    shape = (6, 24, 24)
    frames = {
        0: [(1, (3, 5, 5))],
        1: [(1, (3, 6, 6))],
        2: [(2, (3, 4, 10)), (3, (3, 12, 16))],
        3: [(2, (3, 5, 11))],
        4: [(4, (2, 14, 18))] if with_gap else [],
    }
    for t, objects in frames.items():
        image = np.zeros(shape, np.uint16)
        for label, centre in objects:
            _ball(shape, centre, 1.5, label, image)
        tifffile.imwrite(folder / f"man_track{t:03d}.tif", image)
    table = "1 0 1 0\n2 2 3 1\n3 2 2 1\n" + ("4 4 4 3\n" if with_gap else "")
    (folder / "man_track.txt").write_text(table)


def test_ctc_ground_truth(tmp_path):
    _write_ctc_gt(tmp_path / "01_GT" / "TRA")
    assert detect_format(tmp_path / "01_GT") == ("ctc", tmp_path / "01_GT" / "TRA")
    graph = read_tracks(tmp_path / "01_GT")
    assert len(graph) == 6
    by_frame = {int(t): graph.positions(graph.frame(t)) for t in range(5)}
    np.testing.assert_allclose(by_frame[0], [[3, 5, 5]])
    np.testing.assert_allclose(by_frame[2], [[3, 4, 10], [3, 12, 16]])
    # the edges, described by the (t, y) of their ends
    key = {int(i): (int(t), int(round(y))) for i, t, y in zip(graph.ids, graph["t"], graph["y"])}
    edges = {(key[a], key[b]) for a, b in graph.edges().tolist()}
    assert edges == {
        ((0, 5), (1, 6)),
        ((1, 6), (2, 4)),
        ((1, 6), (2, 12)),
        ((2, 4), (3, 5)),
        ((2, 12), (4, 14)),
    }
    mother = graph.ids[(graph["t"] == 1)]
    assert graph["division_score"][graph.index_of(mother)].tolist() == [1.0]
    assert np.all(graph["radius"] > 1)


def test_ctc_results_folder_2d(tmp_path):
    folder = tmp_path / "01_RES"
    folder.mkdir()
    for t in range(3):
        image = np.zeros((20, 20), np.uint16)
        image[4:8, 4 + t : 8 + t] = 5
        tifffile.imwrite(folder / f"mask{t:03d}.tif", image)
    (folder / "res_track.txt").write_text("5 0 2 0\n")
    graph = read_ctc(folder / "res_track.txt")
    assert len(graph) == 3 and graph.n_edges == 2
    np.testing.assert_allclose(graph.positions(), [[0, 5.5, 5.5], [0, 5.5, 6.5], [0, 5.5, 7.5]])
    np.testing.assert_allclose(graph["radius"], np.sqrt(16 / np.pi), rtol=1e-6)


def test_ctc_bad_inputs(tmp_path):
    folder = tmp_path / "TRA"
    _write_ctc_gt(folder)
    (folder / "man_track.txt").write_text("1 0 1 0\n2 2 3 1\n3 2 2 1\n4 4 4 9\n")
    with pytest.raises(
        InputError,
        match=r"man_track\.txt, line 4: parent track 9 of track 4 "
        r"is not listed",
    ):
        read_tracks(folder)
    (folder / "man_track.txt").write_text("1 0 1 0\n2 2 x 1\n")
    with pytest.raises(InputError, match=r"man_track\.txt, line 2: expected four whole numbers"):
        read_tracks(folder)
    (folder / "man_track.txt").write_text("1 0 1 0\n2 2 3 1\n3 2 2 1\n")
    with pytest.raises(
        InputError,
        match=r"man_track004\.tif: label\(s\) 4 are not in "
        r"man_track\.txt",
    ):
        read_tracks(folder)


def test_ctc_daughter_before_mother_ends(tmp_path):
    folder = tmp_path / "RES"
    folder.mkdir()
    for t in range(3):
        image = np.zeros((10, 10), np.uint8)
        image[1:3, 1:3] = 1
        if t >= 1:
            image[6:8, 6:8] = 2
        tifffile.imwrite(folder / f"mask{t:03d}.tif", image)
    (folder / "res_track.txt").write_text("1 0 2 0\n2 1 2 1\n")
    with pytest.raises(
        InputError,
        match=r"res_track\.txt, line 2: track 2 starts in frame 1 "
        r"but its parent track 1 ends in frame 2",
    ):
        read_tracks(folder)


def test_label_centroids():
    labels = np.zeros((2, 4, 4), np.uint16)
    labels[0, 0, 0:2] = 3
    labels[1, 3, 3] = 9
    values, centroids, counts = label_centroids(labels)
    assert values.tolist() == [3, 9]
    np.testing.assert_allclose(centroids, [[0, 0, 0.5], [1, 3, 3]])
    assert counts.tolist() == [2, 1]


# ------------------------------------------------------------------ GEFF and detection


def test_geff_with_two_parents_is_refused(tmp_path):
    from geff.core_io import write_arrays
    from geff_spec import Axis, GeffMetadata

    path = tmp_path / "merge.geff"
    props = {
        name: {"values": np.array(values, dtype=float), "missing": None}
        for name, values in (("t", [0, 0, 1]), ("y", [1, 5, 3]), ("x", [1, 1, 1]))
    }
    meta = GeffMetadata(
        directed=True,
        node_props_metadata={},
        edge_props_metadata={},
        axes=[
            Axis(name="t", type="time"),
            Axis(name="y", type="space"),
            Axis(name="x", type="space"),
        ],
    )
    write_arrays(
        path,
        np.array([0, 1, 2], np.uint64),
        props,
        np.array([[0, 2], [1, 2]], np.uint64),
        None,
        meta,
    )
    assert detect_format(path)[0] == "geff"
    with pytest.raises(
        InputError,
        match=r"merge\.geff: node\(s\) 2 have more than one "
        r"incoming edge",
    ):
        read_geff(path)


def test_geff_2d_from_another_tool(tmp_path):
    from geff.core_io import write_arrays
    from geff_spec import Axis, GeffMetadata

    path = tmp_path / "other.zarr"
    props = {
        "frame": {"values": np.array([0, 1]), "missing": None},
        "row": {"values": np.array([2.0, 3.0]), "missing": None},
        "col": {"values": np.array([4.0, 5.0]), "missing": None},
    }
    meta = GeffMetadata(
        directed=True,
        node_props_metadata={},
        edge_props_metadata={},
        axes=[
            Axis(name="frame", type="time"),
            Axis(name="row", type="space"),
            Axis(name="col", type="space"),
        ],
    )
    write_arrays(
        path, np.array([7, 8], np.uint64), props, np.array([[7, 8]], np.uint64), None, meta
    )
    graph = read_tracks(path)
    assert graph.positions().tolist() == [[0, 2, 4], [0, 3, 5]]
    assert _edges(graph) == {(7, 8)}


def test_detect_format_errors(tmp_path):
    with pytest.raises(InputError, match=r"nothing\.csv: no such file"):
        read_tracks(tmp_path / "nothing.csv")
    odd = tmp_path / "odd.txt"
    odd.write_text("a b c\n1 2 3\n")
    with pytest.raises(InputError, match=r"odd\.txt, line 1: cannot tell the tracks format"):
        read_tracks(odd)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(InputError, match=r"folder: expected a CTC folder"):
        read_tracks(folder)
    empty = tmp_path / "empty.csv"
    empty.write_text("\n")
    with pytest.raises(InputError, match=r"empty\.csv: the file is empty"):
        read_tracks(empty)
