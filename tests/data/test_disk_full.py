"""A full disk (simulated: writing or flushing raises ENOSPC) on save: a clear error, the
previous file kept byte for byte, no temporary file left behind; the CLI prints one line."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from napari_cellect.data import atomic
from napari_cellect.data.atomic import TEMP_PREFIX, atomic_path, atomic_write
from napari_cellect.data.export import write_csv, write_geff
from napari_cellect.errors import CellectError, WriteError
from napari_cellect.track.graph import TrackGraph


def graph(n: int = 5) -> TrackGraph:
    return TrackGraph.from_arrays(
        id=np.arange(n),
        t=np.arange(n),
        z=np.zeros(n),
        y=np.arange(n, dtype=float),
        x=np.ones(n),
        parent_id=np.arange(n) - 1,
    )


def full_disk(monkeypatch) -> None:
    """Every fsync fails as on a full disk (data is flushed there; so do written bytes)."""

    def no_space(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", no_space)


def leftovers(folder) -> list[str]:
    return [p.name for p in folder.rglob("*") if TEMP_PREFIX in p.name]


def test_a_full_disk_keeps_the_previous_csv(tmp_path, monkeypatch):
    path = tmp_path / "tracks.csv"
    write_csv(graph(3), path)
    before = path.read_bytes()
    full_disk(monkeypatch)
    with pytest.raises(
        WriteError,
        match=r"cannot write .*tracks.csv: the disk is full \(No space "
        r"left on device\); the previous file is kept",
    ) as info:
        write_csv(graph(5), path)
    assert isinstance(info.value, OSError) and isinstance(info.value, CellectError)
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_a_full_disk_while_writing_bytes(tmp_path):
    """Bytes refused by the disk in the middle of the body (not only at fsync)."""
    path = tmp_path / "model.pt"
    path.write_bytes(b"the trained model")
    with pytest.raises(WriteError, match="the disk is full"):
        with atomic_write(path, "wb") as handle:
            handle.write(b"half a model")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert path.read_bytes() == b"the trained model"
    assert leftovers(tmp_path) == []


def test_a_full_disk_keeps_the_previous_geff_folder(tmp_path, monkeypatch):
    path = tmp_path / "tracks.geff"
    write_geff(graph(3), path)
    before = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    full_disk(monkeypatch)
    with pytest.raises(WriteError, match="the disk is full"):
        write_geff(graph(5), path)
    after = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert after == before
    assert leftovers(tmp_path) == []


def test_nothing_there_before_says_no_file_was_written(tmp_path, monkeypatch):
    full_disk(monkeypatch)
    with pytest.raises(WriteError, match="no file was written"):
        with atomic_path(tmp_path / "labels.npy") as tmp:
            np.save(tmp, np.zeros(3))
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_folder_is_named(tmp_path, monkeypatch):
    def read_only(*_args, **_kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(atomic, "open", read_only, raising=False)
    with pytest.raises(WriteError, match="the disk is read-only"):
        write_csv(graph(), tmp_path / "tracks.csv")


@pytest.mark.parametrize("cache", [False, True], ids=["no cache", "cache beside the output"])
def test_cellect_track_on_a_full_disk_prints_one_line_and_keeps_the_old_tracks(
    cache, tmp_path, monkeypatch, capsys
):
    import tifffile

    from napari_cellect.cli import main
    from napari_cellect.model.bundle import ModelBundle

    images = tmp_path / "movie.tif"
    tifffile.imwrite(
        images,
        (np.random.default_rng(0).random((2, 4, 32, 32)) * 900).astype(np.uint16),
        imagej=True,
        metadata={"axes": "TZYX"},
    )
    weights = ModelBundle.random(preset="small", seed=0).save(tmp_path / "model.pt")
    out = tmp_path / "tracks.csv"
    out.write_text("id,t,z,y,x,parent_id\n1,0,0,0,0,-1\n")
    before = out.read_bytes()
    full_disk(monkeypatch)
    code = main(
        [
            "track",
            str(images),
            "-o",
            str(out),
            "--weights",
            str(weights),
            "--device",
            "cpu",
            *([] if cache else ["--no-cache"]),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if "error" in line]
    if cache:  # the detection cache is the first thing written
        manifest = tmp_path / "tracks.csv.cellect-cache" / "cache.json"
        assert lines == [
            f"cellect track: error: cannot write {manifest}: the disk is full (No "
            "space left on device); no file was written; free some space or save "
            "elsewhere"
        ]
    else:
        assert lines == [
            f"cellect track: error: cannot write {out}: the disk is full (No space "
            "left on device); the previous file is kept unchanged; free some space "
            "or save elsewhere"
        ]
    assert out.read_bytes() == before
    assert leftovers(tmp_path) == []
