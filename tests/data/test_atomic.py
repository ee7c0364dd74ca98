from __future__ import annotations

import os

import numpy as np
import pytest

from napari_cellect.data.atomic import TEMP_PREFIX, atomic_path, atomic_write, temp_sibling


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_text_write_replaces_file(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with atomic_write(target) as handle:
        handle.write("a,b\n1,2\n")
        assert target.read_text() == "old"  # nothing visible before the body ends
    assert target.read_text() == "a,b\n1,2\n"
    assert _leftovers(tmp_path) == []


def test_failure_keeps_old_content_and_removes_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("good")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target) as handle:
            handle.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "good"
    assert _leftovers(tmp_path) == []


def test_binary_mode(tmp_path):
    target = tmp_path / "data.bin"
    with atomic_write(target, "wb") as handle:
        handle.write(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"


def test_mode_none_yields_path_with_same_suffix(tmp_path):
    target = tmp_path / "arr.npy"
    with atomic_write(target, mode=None) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith("arr.npy")
        np.save(tmp, np.arange(3))  # np.save keeps the name because it already ends in .npy
    np.testing.assert_array_equal(np.load(target), np.arange(3))
    assert _leftovers(tmp_path) == []


def test_rejects_non_write_modes_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "x", "a"):
            pass
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with atomic_write(tmp_path / "nope" / "x.txt"):
            pass


def test_atomic_path_replaces_a_folder(tmp_path):
    target = tmp_path / "store.zarr"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").exists()
    assert sorted(os.listdir(target)) == ["new.txt"]
    assert _leftovers(tmp_path) == []


def test_atomic_path_failure_keeps_old_folder(tmp_path):
    target = tmp_path / "store.zarr"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "partial").write_text("x")
            raise KeyError("x")
    assert sorted(os.listdir(target)) == ["old.txt"]
    assert _leftovers(tmp_path) == []


def test_atomic_path_writes_nothing_if_body_creates_nothing(tmp_path):
    target = tmp_path / "file.tif"
    with atomic_path(target):
        pass
    assert not target.exists()


def test_temp_sibling_is_unique_and_hidden(tmp_path):
    names = {temp_sibling(tmp_path / "a.txt").name for _ in range(20)}
    assert len(names) == 20
    assert all(n.startswith(".") and n.endswith("a.txt") for n in names)
