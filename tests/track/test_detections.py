from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from napari_cellect.errors import InputError
from napari_cellect.track.detections import (
    DetectionCache,
    Detections,
    file_digest,
    make_fingerprint,
)


def _dets(t: int = 3, n: int = 4, dim: int = 5, seed: int = 0) -> Detections:
    rng = np.random.default_rng(seed)
    return Detections(
        t=t,
        positions=rng.uniform(0, 50, (n, 3)),
        embeddings=rng.normal(size=(n, dim)),
        radius=rng.uniform(2, 8, n),
        division=rng.uniform(0, 1, (n, 2)),
        score=rng.uniform(0.5, 1, n),
    )


def test_dtypes_are_coerced_and_length():
    d = _dets()
    assert len(d) == 4
    assert d.positions.dtype == np.float64
    assert d.embeddings.dtype == np.float32 and d.embeddings.shape == (4, 5)
    assert d.radius.dtype == d.score.dtype == d.division.dtype == np.float32
    assert d.embedding_dim == 5


def test_mismatched_lengths_raise_with_field_name():
    with pytest.raises(InputError, match="radius"):
        Detections(
            t=0,
            positions=np.zeros((3, 3)),
            embeddings=np.zeros((3, 2)),
            radius=np.zeros(2),
            division=np.zeros((3, 2)),
            score=np.zeros(3),
        )


def test_empty():
    d = Detections.empty(7, 64)
    assert len(d) == 0 and d.t == 7
    assert d.embeddings.shape == (0, 64) and d.positions.shape == (0, 3)
    assert d.division.shape == (0, 2)


def test_subset_by_mask_and_index():
    d = _dets(n=5)
    mask = np.array([True, False, True, False, False])
    s = d.subset(mask)
    assert len(s) == 2
    np.testing.assert_array_equal(s.positions, d.positions[[0, 2]])
    np.testing.assert_array_equal(s.embeddings, d.embeddings[[0, 2]])
    s2 = d.subset([4, 1])
    np.testing.assert_array_equal(s2.score, d.score[[4, 1]])
    assert d.subset([]).embedding_dim == 5
    with pytest.raises(InputError, match="length 5"):
        d.subset(np.array([True, False]))


def test_concat_and_its_checks():
    a, b = _dets(n=2, seed=1), _dets(n=3, seed=2)
    c = Detections.concat([a, b])
    assert len(c) == 5
    np.testing.assert_array_equal(c.radius, np.concatenate([a.radius, b.radius]))
    with pytest.raises(InputError, match="frame"):
        Detections.concat([a, _dets(t=4)])
    with pytest.raises(InputError, match="embeddings"):
        Detections.concat([a, _dets(dim=3)])
    with pytest.raises(InputError, match="at least one"):
        Detections.concat([])


def test_scaled_positions():
    d = _dets(n=1)
    np.testing.assert_allclose(d.scaled_positions(5.0), d.positions * [5, 1, 1])


def test_cache_round_trip_is_exact(tmp_path):
    cache = DetectionCache(tmp_path / "cache", fingerprint="abc")
    d = _dets(t=12)
    assert not cache.has(12)
    path = cache.save(d)
    assert path.name == "t000012.npz"
    assert cache.has(12) and not cache.has(11)
    back = cache.load(12)
    assert back.t == 12
    for name in ("positions", "embeddings", "radius", "division", "score"):
        np.testing.assert_array_equal(getattr(back, name), getattr(d, name))
        assert getattr(back, name).dtype == getattr(d, name).dtype
    assert cache.frames() == [12]
    # no temporary files left behind by the atomic write
    assert sorted(os.listdir(tmp_path / "cache")) == ["t000012.npz"]


def test_empty_detections_round_trip(tmp_path):
    cache = DetectionCache(tmp_path, "x")
    cache.save(Detections.empty(0, 16))
    back = cache.load(0)
    assert len(back) == 0 and back.embedding_dim == 16


def test_stale_cache_is_ignored_and_overwritten(tmp_path):
    DetectionCache(tmp_path, "old").save(_dets(t=1, seed=1))
    fresh = DetectionCache(tmp_path, "new")
    assert not fresh.has(1)
    assert fresh.frames() == []
    with pytest.raises(InputError, match="stale"):
        fresh.load(1)
    d = _dets(t=1, seed=2)
    fresh.save(d)
    assert fresh.has(1)
    np.testing.assert_array_equal(fresh.load(1).positions, d.positions)
    assert not DetectionCache(tmp_path, "old").has(1)


def test_corrupt_file_is_a_miss_and_a_clear_error(tmp_path, caplog):
    cache = DetectionCache(tmp_path, "f")
    cache.path(2).write_bytes(b"not a zip file")
    with caplog.at_level(logging.WARNING):
        assert not cache.has(2)
    assert "unreadable" in caplog.text
    with pytest.raises(InputError, match=r"t000002\.npz"):
        cache.load(2)
    with pytest.raises(InputError, match="no file"):
        cache.load(3)


def test_clear_removes_only_frame_files(tmp_path):
    cache = DetectionCache(tmp_path, "f")
    cache.save(_dets(t=0))
    cache.save(_dets(t=1))
    (tmp_path / "notes.txt").write_text("keep me")
    assert cache.clear() == 2
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_fingerprint_tracks_model_sources_and_config(tmp_path):
    src = tmp_path / "frame0.tif"
    src.write_bytes(b"1234")
    base = make_fingerprint("model-a", [src], {"threshold": 0.5})
    assert base == make_fingerprint("model-a", [src], {"threshold": 0.5})
    assert base != make_fingerprint("model-b", [src], {"threshold": 0.5})
    assert base != make_fingerprint("model-a", [src], {"threshold": 0.6})
    assert base != make_fingerprint("model-a", [], {"threshold": 0.5})
    src.write_bytes(b"12345")  # the input changed on disk
    assert base != make_fingerprint("model-a", [src], {"threshold": 0.5})


def _age(folder, seconds: int = 60) -> None:
    """Set back the modification time of ``folder`` and everything below it."""
    for path in [folder, *folder.rglob("*")]:
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 10**9))


def test_a_zarr_chunk_rewritten_in_place_changes_the_fingerprint(tmp_path):
    """zarr renames a rewritten chunk into its own folder, deep in the store: the store's top
    folder keeps its time, the fingerprint must still change."""
    zarr = pytest.importorskip("zarr")
    store = tmp_path / "series.zarr"
    array = zarr.open_array(str(store), mode="w", shape=(3, 4, 8, 8), chunks=(1, 4, 4, 4))
    array[:] = 1
    _age(store)
    top = store.stat().st_mtime_ns
    base = make_fingerprint("model", [store])
    np.asarray(zarr.open_array(str(store), mode="r")[:])  # reading changes nothing
    assert make_fingerprint("model", [store]) == base
    zarr.open_array(str(store), mode="r+")[1, :, :4, :4] = 2
    assert store.stat().st_mtime_ns == top
    assert make_fingerprint("model", [store]) != base


def test_file_digest(tmp_path):
    p = tmp_path / "bundle.pt"
    p.write_bytes(b"weights")
    q = tmp_path / "other.pt"
    q.write_bytes(b"weights")
    assert file_digest(p) == file_digest(q)
    q.write_bytes(b"weights2")
    assert file_digest(p) != file_digest(q)


def test_truncated_file_is_a_miss(tmp_path):
    cache = DetectionCache(tmp_path, "f")
    path = cache.save(_dets(t=5))
    path.write_bytes(path.read_bytes()[:60])  # an interrupted copy: a zip header, no data
    assert not cache.has(5)
    with pytest.raises(InputError, match=r"t000005\.npz"):
        cache.load(5)
