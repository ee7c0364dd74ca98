"""The whole tracker on tiny synthetic data, through the API and the command line."""

import dataclasses
import json

import numpy as np
import pytest
import tifffile

from napari_cellect.cli import main
from napari_cellect.data.annotations import read_tracks
from napari_cellect.data.synthetic import PRESETS, generate, write_synthetic
from napari_cellect.errors import Cancelled, InputError
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.pipeline import iter_tracking, make_labeler, track_images
from napari_cellect.track.link import link_sequence


@pytest.fixture(scope="module")
def bundle():
    return ModelBundle.random(preset="small", seed=0)


@pytest.fixture(scope="module")
def tiny():
    config = dataclasses.replace(PRESETS["default"], frames=3, shape=(8, 48, 48), n_cells=5, seed=3)
    return config, generate(config)


def test_track_images_gives_a_valid_graph_with_every_frame(bundle, tiny):
    config, seq = tiny
    result = track_images(seq.images, bundle, z_ratio=config.z_ratio, keep_foreground=True)
    graph = result.graph
    graph.validate()
    assert len(result.detections) == 3
    assert sorted(set(graph["t"].tolist())) <= [0, 1, 2]
    assert len(graph) == sum(len(d) for d in result.detections)
    labels = make_labeler(graph, result.shape, z_ratio=config.z_ratio, foreground=result.foreground)
    frame = labels(0)
    assert frame.shape == config.shape
    assert set(np.unique(frame)) - {0} <= set(graph.track_ids()[graph["t"] == 0].tolist())


def test_progress_per_frame_then_link_and_cancel(bundle, tiny):
    config, seq = tiny
    stages = [(p.stage, p.done) for p in iter_tracking(seq.images, bundle, z_ratio=config.z_ratio)]
    refine = [("refine", 0)] if bundle.thresholds.division_refinement.enabled else []
    assert stages == [("detect", 1), ("detect", 2), ("detect", 3), *refine, ("link", 3)]
    calls = []

    def stop_after_one() -> bool:
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Cancelled):
        list(iter_tracking(seq.images, bundle, z_ratio=config.z_ratio, should_stop=stop_after_one))


def test_each_finished_frame_comes_with_its_links_to_the_frame_before(bundle, tiny):
    config, seq = tiny
    steps = [p for p in iter_tracking(seq.images, bundle, z_ratio=config.z_ratio)]
    frames = [p.detections for p in steps if p.stage == "detect"]
    parents = [p.parent_index for p in steps if p.stage == "detect"]
    link_config = dataclasses.replace(bundle.thresholds.link, gap_closing=False)
    linked = link_sequence(frames, bundle.candidate_scorer("link"), link_config, config.z_ratio)
    assert linked.n_edges > 0
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in frames])])
    as_ids = [
        np.where(index >= 0, offsets[max(f - 1, 0)] + index, -1) for f, index in enumerate(parents)
    ]
    assert np.all(parents[0] == -1)
    np.testing.assert_array_equal(np.concatenate(as_ids), linked["parent_id"])


def test_single_frame_gives_detections_only(bundle, tiny):
    config, seq = tiny
    result = track_images(seq.images[:1], bundle, z_ratio=config.z_ratio)
    assert result.graph.n_edges == 0 and len(result.detections) == 1


def test_empty_and_constant_frames_give_no_tracks(bundle):
    images = np.zeros((3, 4, 32, 32), np.uint16)
    result = track_images(images, bundle, z_ratio=1.0)
    assert len(result.graph) == 0


def test_cli_track_end_to_end_scored_by_evaluate(bundle, tmp_path, capsys):
    config = dataclasses.replace(PRESETS["default"], frames=3, shape=(8, 48, 48), n_cells=5, seed=4)
    write_synthetic(tmp_path / "embryo", config)
    weights = bundle.save(tmp_path / "model.pt")
    out = tmp_path / "tracks.csv"
    code = main(
        [
            "track",
            str(tmp_path / "embryo" / "images"),
            "-o",
            str(out),
            "--weights",
            str(weights),
            "--labels",
            str(tmp_path / "labels.tif"),
            "--ctc",
            str(tmp_path / "ctc"),
            "--geff",
            str(tmp_path / "tracks.geff"),
            "--cache",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0
    graph = read_tracks(out)
    labels = tifffile.imread(tmp_path / "labels.tif")
    assert labels.shape == (3, *config.shape)
    assert set(np.unique(labels)) - {0} <= set(graph.track_ids().tolist())
    assert (tmp_path / "ctc" / "res_track.txt").is_file()
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3
    capsys.readouterr()
    code = main(["evaluate", str(out), str(tmp_path / "embryo" / "tracks.csv"), "--json"])
    assert code == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["n_pred"] == len(graph) and 0.0 <= scores["det_f1"] <= 1.0


def test_cli_track_keep_approved_keeps_the_approved_links(bundle, tmp_path):
    config = dataclasses.replace(PRESETS["default"], frames=3, shape=(8, 48, 48), n_cells=5, seed=5)
    write_synthetic(tmp_path / "embryo", config)
    weights = bundle.save(tmp_path / "model.pt")
    first = tmp_path / "first.csv"
    assert (
        main(
            [
                "track",
                str(tmp_path / "embryo" / "images"),
                "-o",
                str(first),
                "--weights",
                str(weights),
            ]
        )
        == 0
    )
    graph = read_tracks(first)
    linked = np.flatnonzero(graph["parent_id"] >= 0)
    assert len(linked), "the random model should link something in 3 frames"
    import pandas as pd

    df = pd.read_csv(first)
    approved_child = int(graph.ids[linked[0]])
    df.loc[df["id"] == approved_child, "approved"] = 1
    df.to_csv(tmp_path / "corrected.csv", index=False)
    again = tmp_path / "again.csv"
    assert (
        main(
            [
                "track",
                str(tmp_path / "embryo" / "images"),
                "-o",
                str(again),
                "--weights",
                str(weights),
                "--keep-approved",
                str(tmp_path / "corrected.csv"),
            ]
        )
        == 0
    )
    relinked = read_tracks(again)
    assert relinked.parent_of(approved_child) == graph.parent_of(approved_child)
    assert "changed" in pd.read_csv(again).columns


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["track", "{tmp}/missing", "-o", "{tmp}/t.csv", "--weights", "{w}"],
            "no such file or folder",
        ),
        (
            ["track", "{tmp}/embryo/images", "-o", "{tmp}/t.csv", "--weights", "{tmp}/nope.pt"],
            "not found",
        ),
        (
            [
                "track",
                "{tmp}/embryo/images",
                "-o",
                "{tmp}/t.csv",
                "--weights",
                "{w}",
                "--device",
                "cuda",
            ],
            "CUDA",
        ),
        (
            ["track", "{tmp}/embryo/images", "-o", "{tmp}/no/t.csv", "--weights", "{w}"],
            "does not exist",
        ),
    ],
)
def test_cli_track_bad_input_exits_2_with_one_line(bundle, tmp_path, capsys, args, message):
    config = dataclasses.replace(PRESETS["default"], frames=2, shape=(8, 32, 32), n_cells=3, seed=6)
    write_synthetic(tmp_path / "embryo", config)
    weights = bundle.save(tmp_path / "model.pt")
    argv = [a.format(tmp=tmp_path, w=weights) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_cli_demo_headless_tracks_and_scores_the_example(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "demo"), "--headless", "--frames", "2"]) == 0
    scores = json.loads((tmp_path / "demo" / "scores.json").read_text())
    assert scores["n_gt"] > 0 and scores["det_f1"] > 0.5  # the bundled model finds the nuclei
    assert read_tracks(tmp_path / "demo" / "tracked.csv").n_frames == 2


def test_detection_cache_needs_images_from_files(bundle, tiny, tmp_path):
    config, seq = tiny
    with pytest.raises(InputError, match="opened from files"):
        track_images(seq.images, bundle, z_ratio=config.z_ratio, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
