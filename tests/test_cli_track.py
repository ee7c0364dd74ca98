"""``cellect track`` / ``cellect finetune`` with ``--cell-radius``: frames resized to the model's
training nucleus size, and a detection cache that belongs to one radius."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_cellect.cli import main
from napari_cellect.data.annotations import read_tracks
from napari_cellect.data.synthetic import PRESETS, write_synthetic
from napari_cellect.model.bundle import ModelBundle

#: the nucleus radius (xy pixels) the test model claims it was trained on
REFERENCE = 3.0
SHAPE = (8, 64, 64)


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    plain = ModelBundle.random(preset="small", seed=0)
    norm = dataclasses.replace(plain.normalization, reference_radius=REFERENCE)
    return dataclasses.replace(plain, normalization=norm)


@pytest.fixture
def weights(bundle, tmp_path) -> Path:
    return bundle.save(tmp_path / "model.pt")


@pytest.fixture
def images(tmp_path) -> Path:
    config = dataclasses.replace(PRESETS["default"], frames=3, shape=SHAPE, n_cells=5, seed=7)
    return write_synthetic(tmp_path / "embryo", config).root / "images"


def track(images: Path, weights: Path, out: Path, *extra: str) -> int:
    return main(
        ["track", str(images), "-o", str(out), "--weights", str(weights), "--device", "cpu", *extra]
    )


def fingerprints(cache: Path) -> dict[str, tuple[str, int]]:
    """Frame file -> (fingerprint it was written under, modification time)."""
    found = {}
    for path in sorted(cache.glob("t*.npz")):
        with np.load(path) as npz:
            found[path.name] = (str(npz["fingerprint"]), path.stat().st_mtime_ns)
    return found


def assert_inside(graph, shape: tuple[int, int, int]) -> None:
    assert len(graph), "the random model finds something in these frames"
    for axis, size in zip("zyx", shape, strict=True):
        values = np.asarray(graph[axis], np.float64)
        assert values.min() >= -0.5 and values.max() <= size - 0.5, axis


def test_tracks_with_and_without_a_cell_radius_lie_in_the_image(images, weights, tmp_path, caplog):
    plain, resized = tmp_path / "plain.csv", tmp_path / "resized.csv"
    with caplog.at_level(logging.INFO, logger="napari_cellect.infer.predict"):
        assert track(images, weights, plain, "--cell-radius", "none") == 0
        assert "resized" not in caplog.text
        assert track(images, weights, resized, "--cell-radius", str(2 * REFERENCE)) == 0
    assert "frames resized by 0.5 in y and x" in caplog.text
    for out in (plain, resized):
        assert_inside(read_tracks(out), SHAPE)
    assert not pd.read_csv(plain)[["y", "x"]].equals(pd.read_csv(resized)[["y", "x"]])


def test_by_default_the_nucleus_radius_is_estimated_logged_and_the_frames_resized(
    images, weights, tmp_path, caplog
):
    """The synthetic nuclei have a radius of about 6 px, the model claims 3 px: without
    --cell-radius the estimate says so, how to override it, and the frames are halved."""
    with caplog.at_level(logging.INFO):
        assert track(images, weights, tmp_path / "t.csv") == 0
    estimate = [
        r
        for r in caplog.records
        if "nucleus radius" in r.getMessage() and r.name == "napari_cellect.infer.radius_estimate"
    ]
    assert len(estimate) == 1 and "--cell-radius" in estimate[0].getMessage()
    radius = float(estimate[0].getMessage().split("nucleus radius ")[1].split(" px")[0])
    assert 5.0 <= radius <= 7.5
    assert "frames resized by 0.5" in caplog.text or "frames resized by 0.4" in caplog.text
    assert_inside(read_tracks(tmp_path / "t.csv"), SHAPE)


@pytest.mark.parametrize("value", ["0", "-2", "nan", "big"])
def test_a_bad_cell_radius_is_a_usage_error(value, images, weights, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        track(images, weights, tmp_path / "t.csv", "--cell-radius", value)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "--cell-radius" in err and "expected a number" in err
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.parametrize("tile", [["0", "64", "64"], ["-3", "64", "64"], ["8", "x", "64"]])
def test_a_bad_tile_is_a_usage_error_naming_the_option(tile, images, weights, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        track(images, weights, tmp_path / "t.csv", "--tile", *tile)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "--tile" in err and "expected a whole number" in err and "TilingConfig" not in err
    assert not (tmp_path / "t.csv").exists()


def test_a_tile_larger_than_the_frames_tracks_them(images, weights, tmp_path):
    assert track(images, weights, tmp_path / "t.csv", "--tile", "100", "1000", "1000") == 0
    assert_inside(read_tracks(tmp_path / "t.csv"), SHAPE)


def test_a_model_without_a_reference_radius_refuses_a_cell_radius(images, tmp_path, capsys):
    weights = ModelBundle.random(preset="small", seed=0).save(tmp_path / "plain.pt")
    assert track(images, weights, tmp_path / "t.csv", "--cell-radius", "6") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not record the nucleus size" in err
    assert track(images, weights, tmp_path / "t.csv") == 0  # without a radius it tracks


def test_show_config_prints_the_reference_radius(weights, capsys):
    assert main(["track", "--show-config", "--weights", str(weights)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["normalization"]["reference_radius"] == REFERENCE
    assert set(shown) == {"thresholds", "normalization"}
    assert main(["track", "--show-config"]) == 0  # the bundled model records its own
    default = ModelBundle.load_default().normalization.reference_radius
    assert default is not None
    assert json.loads(capsys.readouterr().out)["normalization"]["reference_radius"] == default


def fake_finetune(seen: list):
    """A stand-in for ``finetune`` (training is not tested here) that keeps the detections it
    is given in ``seen``."""

    from napari_cellect.track.correction_scores import CorrectionScores
    from napari_cellect.train.finetune_guard import FinetuneResult, GuardReport

    def finetune(bundle, corrections, detections, **kwargs):
        seen.append(detections)
        report = GuardReport(
            "nothing",
            CorrectionScores(),
            CorrectionScores(),
            thresholds={"division threshold": (0.5, 0.4)},
        )
        return FinetuneResult(bundle, bundle, report)
        yield  # a generator, as the real one

    return finetune


def test_a_cache_made_at_another_radius_is_not_reused(images, weights, tmp_path):
    cache = tmp_path / "cache"
    out = tmp_path / "t.csv"
    assert track(images, weights, out, "--cache", str(cache), "--cell-radius", "6") == 0
    first = fingerprints(cache)
    assert len(first) == 3
    assert track(images, weights, out, "--cache", str(cache), "--cell-radius", "6") == 0
    assert fingerprints(cache) == first  # same radius: every frame from the cache
    assert track(images, weights, out, "--cache", str(cache), "--cell-radius", "4.5") == 0
    other = fingerprints(cache)
    assert other.keys() == first.keys()
    assert all(other[name][0] != first[name][0] for name in first)  # predicted again
    assert track(images, weights, out, "--cache", str(cache)) == 0
    assert {fp for fp, _ in fingerprints(cache).values()}.isdisjoint(
        {fp for fp, _ in first.values()} | {fp for fp, _ in other.values()}
    )


def test_finetune_reuses_the_cache_of_a_run_at_the_same_radius(
    images, weights, tmp_path, monkeypatch, caplog
):
    """``cellect finetune --cell-radius R`` finds what ``cellect track --cell-radius R`` cached;
    at another radius it predicts (resized) frames of its own."""
    import napari_cellect._cli.finetune as finetune_cli

    cache, tracks = tmp_path / "cache", tmp_path / "tracks.csv"
    assert track(images, weights, tracks, "--cache", str(cache), "--cell-radius", "6") == 0
    cached = fingerprints(cache)
    df = pd.read_csv(tracks)
    df["approved"] = (df["parent_id"] >= 0).astype(int)
    assert df["approved"].any(), "the random model links something in 3 frames"
    df.to_csv(tracks, index=False)
    seen: list[list] = []
    monkeypatch.setattr(finetune_cli, "iter_guarded_finetune", fake_finetune(seen))
    common = [
        "finetune",
        "--tracks",
        str(tracks),
        "--images",
        str(images),
        "--weights",
        str(weights),
        "--cache",
        str(cache),
        "--device",
        "cpu",
        "--epochs",
        "1",
    ]
    assert main([*common, "-o", str(tmp_path / "a.pt"), "--cell-radius", "6"]) == 0
    assert fingerprints(cache) == cached  # nothing predicted, nothing rewritten
    graph = read_tracks(tracks)
    frames = sorted({d.t for d in seen[0]})
    for dets in seen[0]:  # the cached (resized-run) detections, as tracked
        assert len(dets) >= int((graph["t"] == dets.t).sum())
    with caplog.at_level(logging.INFO, logger="napari_cellect.infer.predict"):
        assert main([*common, "-o", str(tmp_path / "b.pt"), "--cell-radius", "4.5"]) == 0
    assert f"frames resized by {REFERENCE / 4.5:.3g} in y and x" in caplog.text
    after = fingerprints(cache)
    assert all(after[f"t{t:06d}.npz"][0] != cached[f"t{t:06d}.npz"][0] for t in frames)
    assert len(seen) == 2
    with pytest.raises(SystemExit) as done:
        main([*common, "-o", str(tmp_path / "c.pt"), "--cell-radius", "0"])
    assert done.value.code == 2


def test_finetune_finds_the_cache_track_left_beside_the_tracks(
    images, weights, tmp_path, monkeypatch
):
    """Neither command is told where the cache is: ``cellect track`` keeps it beside its CSV,
    ``cellect finetune --tracks`` that CSV reads it and predicts nothing."""
    import napari_cellect._cli.finetune as finetune_cli

    tracks = tmp_path / "tracks.csv"
    assert track(images, weights, tracks) == 0
    cache = tmp_path / "tracks.csv.cellect-cache"
    cached = fingerprints(cache)
    assert len(cached) == 3
    df = pd.read_csv(tracks)
    df["approved"] = (df["parent_id"] >= 0).astype(int)
    df.to_csv(tracks, index=False)
    seen: list = []
    monkeypatch.setattr(finetune_cli, "iter_guarded_finetune", fake_finetune(seen))
    assert (
        main(
            [
                "finetune",
                "--tracks",
                str(tracks),
                "--images",
                str(images),
                "--weights",
                str(weights),
                "--device",
                "cpu",
                "--epochs",
                "1",
                "-o",
                str(tmp_path / "tuned.pt"),
            ]
        )
        == 0
    )
    assert seen and fingerprints(cache) == cached  # read, nothing predicted or rewritten
    assert not images.with_name(images.name + ".cellect-cache").exists()


def test_a_relink_reads_the_cache_the_corrected_tracks_were_made_with(images, weights, tmp_path):
    """``cellect track --keep-approved tracks.csv -o relinked.csv`` finds the cache that
    ``cellect track -o tracks.csv`` left beside its CSV: nothing is predicted or rewritten, the
    approved link is kept. Corrected tracks with no cache beside them get the output's own."""
    tracks = tmp_path / "tracks.csv"
    assert track(images, weights, tracks) == 0
    cache = tmp_path / "tracks.csv.cellect-cache"
    cached = fingerprints(cache)
    assert len(cached) == 3
    df = pd.read_csv(tracks)
    child = int(df.loc[df["parent_id"] >= 0, "id"].iloc[0])
    df["approved"] = (df["id"] == child).astype(int)
    df.to_csv(tracks, index=False)
    relinked = tmp_path / "relinked.csv"
    assert track(images, weights, relinked, "--keep-approved", str(tracks)) == 0
    assert fingerprints(cache) == cached  # read, nothing predicted or rewritten
    assert not relinked.with_name("relinked.csv.cellect-cache").exists()
    assert read_tracks(relinked).parent_of(child) == read_tracks(tracks).parent_of(child)

    elsewhere = tmp_path / "saved" / "corrected.csv"
    elsewhere.parent.mkdir()
    df.to_csv(elsewhere, index=False)
    again = tmp_path / "again.csv"
    assert track(images, weights, again, "--keep-approved", str(elsewhere)) == 0
    assert len(fingerprints(tmp_path / "again.csv.cellect-cache")) == 3


def test_zarr_in_masks_out_frame_by_frame(images, weights, tmp_path):
    """A zarr series is tracked and its instance masks written to a zarr array, one chunk per
    frame, with the track ids of the CSV."""
    import zarr

    from napari_cellect.data.images import open_sequence

    series = open_sequence(images).data
    source = zarr.open_array(
        str(tmp_path / "series.zarr"),
        mode="w",
        shape=series.shape,
        chunks=(1, 4, 32, 32),
        dtype=series.dtype,
    )
    source[:] = np.asarray(series)
    out, masks = tmp_path / "tracks.csv", tmp_path / "masks.zarr"
    assert track(tmp_path / "series.zarr", weights, out, "--labels", str(masks)) == 0
    written = zarr.open_array(str(masks), mode="r")
    assert written.shape == series.shape and written.chunks == (1, *series.shape[1:])
    graph = read_tracks(out)
    values = np.unique(written[:])
    assert set(values[values > 0].tolist()) <= set(graph.track_ids().tolist())
