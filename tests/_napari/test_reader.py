"""npe2 reader: TIFF series (lazy, scaled) and tracks CSV (bound to a session)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile

from napari_cellect._napari import _dialogs
from napari_cellect._napari._layer_data import SESSION_KEY
from napari_cellect._napari._reader import get_reader, read_image, read_journal, read_tracks_file
from napari_cellect.data.export import write_csv
from napari_cellect.errors import InputError
from napari_cellect.track import edits
from napari_cellect.track.journal import journal_folder_for


def write_imagej(path, array, spacing, axes):
    tifffile.imwrite(
        path,
        array,
        imagej=True,
        resolution=(1.0, 1.0),
        metadata={"spacing": spacing, "axes": axes, "unit": "um"},
    )


def test_reader_claims_only_what_it_opens(tmp_path, graph):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(2):
        tifffile.imwrite(
            folder / f"t{t:03d}.tif", np.zeros((3, 8, 8), np.uint8), photometric="minisblack"
        )
    write_csv(graph, tmp_path / "tracks.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    (tmp_path / "notes.txt").write_text("hello")
    assert get_reader(str(folder)) is read_image
    assert get_reader(str(folder / "t000.tif")) is read_image
    assert get_reader(str(tmp_path / "tracks.csv")) is read_tracks_file
    assert get_reader(str(tmp_path / "other.csv")) is None
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader([str(tmp_path / "tracks.csv"), str(folder)]) is None


def test_tiff_folder_opens_lazily_with_the_voxel_size(tmp_path):
    folder = tmp_path / "embryo"
    folder.mkdir()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(3, 4, 16, 16), dtype=np.uint8)
    for t, frame in enumerate(frames):
        write_imagej(folder / f"embryo_t{t}.tif", frame, spacing=2.5, axes="ZYX")
    [(data, kwargs, kind)] = read_image(str(folder))
    assert kind == "image" and isinstance(data, da.Array)
    assert data.shape == (3, 4, 16, 16) and data.chunksize[0] == 1
    assert kwargs["scale"] == pytest.approx((1.0, 2.5, 1.0, 1.0))
    np.testing.assert_array_equal(np.asarray(data), frames)


def test_2d_time_series_tiff_opens_as_t_y_x(tmp_path):
    path = tmp_path / "cells.tif"
    write_imagej(path, np.ones((5, 12, 10), np.uint16), spacing=1.0, axes="TYX")
    [(data, kwargs, _)] = read_image(str(path))
    assert data.shape == (5, 12, 10) and len(kwargs["scale"]) == 3


def test_tracks_csv_opens_as_centres_and_tracks_of_one_session(tmp_path, graph):
    path = tmp_path / "tracks.csv"
    write_csv(graph, path)
    layers = read_tracks_file(str(path))
    assert [kind for _, _, kind in layers] == ["tracks", "points"]
    (tracks, tkw, _), (points, pkw, _) = layers
    session = pkw["metadata"][SESSION_KEY]
    assert tkw["metadata"][SESSION_KEY] is session and session.source == path
    assert points.shape == (len(graph), 4)
    assert list(pkw["features"].columns)[:6] == [
        "id",
        "track_id",
        "parent_id",
        "score",
        "radius",
        "division_score",
    ]
    assert {"approved"} <= set(pkw["features"].columns)
    np.testing.assert_array_equal(np.unique(tracks[:, 0]), np.unique(graph.track_ids()))
    assert tkw["graph"] == {5: [2], 6: [2]}  # node 3 divides into 4 and 5 (tracks 5 and 6)


def test_2d_tracks_csv_gives_t_y_x_layers(tmp_path):
    path = tmp_path / "tracks2d.csv"
    path.write_text("id,t,y,x,parent_id\n1,0,5,5,-1\n2,1,6,5,1\n")
    (tracks, _, _), (points, pkw, _) = read_tracks_file(str(path))
    assert points.shape == (2, 3) and tracks.shape == (2, 4)
    assert pkw["metadata"][SESSION_KEY].geometry.spatial_ndim == 2


def test_reopening_a_csv_with_a_journal_asks_and_restores(tmp_path, graph, monkeypatch):
    """(In a folder with spaces and non-ASCII names: the journal goes beside the file there.)"""
    path = tmp_path / "dossier à espaces" / "pistes été.csv"
    path.parent.mkdir()
    write_csv(graph, path)
    (_, pkw, _) = read_tracks_file(str(path))[-1]
    session = pkw["metadata"][SESSION_KEY]
    session.ensure_journal()
    session.history.do(edits.delete_node, 7)
    session.close()
    asked = []
    monkeypatch.setattr(
        _dialogs, "ask_restore_journal", lambda folder: asked.append(folder) or True
    )
    (_, pkw, _) = read_tracks_file(str(path))[-1]
    assert asked == [journal_folder_for(path)]
    restored = pkw["metadata"][SESSION_KEY]
    assert not restored.graph.has(7) and restored.graph.parent_of(8) == 6
    # the journal folder itself opens too
    assert get_reader(str(journal_folder_for(path))) is read_journal
    (_, jkw, _) = read_journal(str(journal_folder_for(path)))[-1]
    assert not jkw["metadata"][SESSION_KEY].graph.has(7)


def test_napari_reader_refuses_bad_files_with_what_a_napari_user_can_do(tmp_path):
    """The message names what a napari user can do (there is no option to pass); the bad
    tracks file is left as it was and gets no journal."""
    volume = tmp_path / "volume.tif"
    tifffile.imwrite(volume, np.zeros((4, 8, 8), np.uint16), photometric="minisblack")
    with pytest.raises(InputError, match="Save the file with its axes in the metadata") as info:
        get_reader(str(volume))(str(volume))
    assert "--axes" not in str(info.value) and "axes=" not in str(info.value)
    bad = tmp_path / "tracks.csv"
    bad.write_text("id,t,z,y,x,parent_id\n1,0,0,0,0,-1\n2,1,0,0,0,1\n3,1,0,0,0,1\n4,1,0,0,0,1\n")
    before = bad.read_bytes()
    with pytest.raises(InputError, match="id 1 has 3 children"):
        get_reader(str(bad))(str(bad))
    assert bad.read_bytes() == before
    assert not journal_folder_for(bad).exists()
