"""Resumable runs: `cellect track` keeps detections beside its output, a run killed halfway
finishes on restart with the same tracks and redoes only the frame pairs that were not done,
and a cache made with another model, other settings or other images is not reused."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import napari_cellect.infer.predict as predict_module
from napari_cellect.cli import main
from napari_cellect.data.annotations import read_tracks
from napari_cellect.data.export import write_csv
from napari_cellect.data.images import open_sequence
from napari_cellect.data.synthetic import PRESETS, write_synthetic
from napari_cellect.errors import Cancelled
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.pipeline import make_labeler, track_images

N_FRAMES = 10


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    config = dataclasses.replace(
        PRESETS["default"], frames=N_FRAMES, shape=(8, 64, 64), n_cells=6, seed=11
    )
    return write_synthetic(tmp_path_factory.mktemp("resume") / "embryo", config).root / "images"


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return ModelBundle.load_default()


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    """The tracks of one uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "tracks.csv"
    assert main(["track", str(images), "-o", str(out), "--no-cache"]) == 0
    return read_tracks(out).to_dataframe()


@pytest.fixture
def unet_runs(monkeypatch) -> list[int]:
    """The frames the U-Net runs on in this process."""
    runs: list[int] = []
    real = predict_module.predict_frame

    def counting(*args, **kwargs):
        runs.append(kwargs["t"])
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_module, "predict_frame", counting)
    return runs


def _cached(folder) -> set[int]:
    return {int(p.stem[1:]) for p in folder.glob("t*.npz")}


def test_a_run_killed_halfway_finishes_on_restart_and_redoes_only_what_was_not_done(
    images, reference, unet_runs, tmp_path
):
    out = tmp_path / "tracks.csv"
    cache = tmp_path / "tracks.csv.cellect-cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_cellect.cli", "track", str(images), "-o", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while len(_cached(cache)) < N_FRAMES // 2 and proc.poll() is None:
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    done = _cached(cache)
    assert not out.exists(), "the run finished before it could be killed"
    assert N_FRAMES // 2 <= len(done) < N_FRAMES
    assert main(["track", str(images), "-o", str(out)]) == 0
    assert sorted(unet_runs) == sorted(set(range(N_FRAMES)) - done)
    assert read_tracks(out).to_dataframe().equals(reference)
    assert _cached(cache) == set(range(N_FRAMES))


def test_a_stopped_run_resumes_in_process(images, bundle, reference, unet_runs, tmp_path):
    seq = open_sequence(images)
    cache = tmp_path / "cache"
    with pytest.raises(Cancelled):
        track_images(
            seq,
            bundle,
            z_ratio=seq.z_ratio,
            cache_dir=cache,
            should_stop=lambda: len(unet_runs) >= 4,
        )
    assert sorted(unet_runs) == [0, 1, 2, 3] and _cached(cache) == {0, 1, 2, 3}
    result = track_images(seq, bundle, z_ratio=seq.z_ratio, cache_dir=cache)
    assert sorted(unet_runs) == list(range(N_FRAMES))
    write_csv(result.graph, tmp_path / "resumed.csv")
    assert read_tracks(tmp_path / "resumed.csv").to_dataframe().equals(reference)


def test_a_resumed_run_gives_the_same_instance_masks(images, bundle, unet_runs, tmp_path):
    seq = open_sequence(images)
    whole = track_images(seq, bundle, z_ratio=seq.z_ratio, keep_foreground=True)
    cache = tmp_path / "cache"
    track_images(seq, bundle, z_ratio=seq.z_ratio, cache_dir=cache)  # detections only
    del unet_runs[:]
    with pytest.raises(Cancelled):  # masks wanted now: frames cached without one run again
        track_images(
            seq,
            bundle,
            z_ratio=seq.z_ratio,
            cache_dir=cache,
            keep_foreground=True,
            should_stop=lambda: len(unet_runs) >= 3,
        )
    assert sorted(unet_runs) == [0, 1, 2]
    resumed = track_images(seq, bundle, z_ratio=seq.z_ratio, cache_dir=cache, keep_foreground=True)
    assert sorted(unet_runs) == list(range(N_FRAMES))
    labels = [
        make_labeler(r.graph, r.shape, z_ratio=seq.z_ratio, foreground=r.foreground)
        for r in (whole, resumed)
    ]
    for t in range(N_FRAMES):
        np.testing.assert_array_equal(labels[0](t), labels[1](t))


def test_a_cache_from_another_model_or_other_settings_or_images_is_not_reused(
    images, bundle, unet_runs, tmp_path, caplog
):
    seq = open_sequence(images)
    cache = tmp_path / "cache"
    track_images(seq, bundle, z_ratio=seq.z_ratio, cache_dir=cache)
    assert len(unet_runs) == N_FRAMES
    track_images(seq, bundle, z_ratio=seq.z_ratio, cache_dir=cache)
    assert len(unet_runs) == N_FRAMES, "the same run again is read from the cache"

    other_model = ModelBundle.random(preset="small", seed=1)
    cases = [
        (dict(bundle=other_model, z_ratio=seq.z_ratio), "another model"),
        (dict(bundle=bundle, z_ratio=seq.z_ratio * 2), "other settings"),
    ]
    for kwargs, words in cases:
        del unet_runs[:]
        with caplog.at_level(logging.WARNING, logger="napari_cellect.pipeline"):
            caplog.clear()
            track_images(seq, kwargs.pop("bundle"), cache_dir=cache, **kwargs)
        assert words in caplog.text and "not reused" in caplog.text
        assert len(unet_runs) == N_FRAMES

    del unet_runs[:]  # the cache now holds the last run's (z_ratio * 2): touch one image
    first = sorted(images.iterdir())[0]
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
    with caplog.at_level(logging.WARNING, logger="napari_cellect.pipeline"):
        caplog.clear()
        track_images(seq, bundle, z_ratio=seq.z_ratio * 2, cache_dir=cache)
    assert "other images" in caplog.text
    assert len(unet_runs) == N_FRAMES


def test_a_zarr_series_rewritten_in_place_is_other_images(
    images, bundle, unet_runs, tmp_path, caplog
):
    """A zarr frame overwritten after the run (same shape, same store) is not read from the
    cache: the chunk's folder deep in the store changed, so the cache says "other images"."""
    zarr = pytest.importorskip("zarr")
    frames = np.asarray(open_sequence(images).data[:3])
    store = tmp_path / "series.zarr"
    array = zarr.open_array(
        str(store), mode="w", shape=frames.shape, chunks=(1, 8, 32, 32), dtype=frames.dtype
    )
    array[:] = frames
    for path in [store, *store.rglob("*")]:  # a store written a minute ago
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 60 * 10**9))
    cache = tmp_path / "cache"
    track_images(open_sequence(store), bundle, z_ratio=1.0, cache_dir=cache)
    track_images(open_sequence(store), bundle, z_ratio=1.0, cache_dir=cache)
    assert len(unet_runs) == 3, "the same store again is read from the cache"
    zarr.open_array(str(store), mode="r+")[1] = frames[2]
    with caplog.at_level(logging.WARNING, logger="napari_cellect.pipeline"):
        track_images(open_sequence(store), bundle, z_ratio=1.0, cache_dir=cache)
    assert "other images" in caplog.text and "not reused" in caplog.text
    assert len(unet_runs) == 6


def test_no_cache_keeps_nothing_beside_the_output(images, tmp_path):
    out = tmp_path / "tracks.csv"
    assert main(["track", str(images), "-o", str(out), "--no-cache"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tracks.csv"]
