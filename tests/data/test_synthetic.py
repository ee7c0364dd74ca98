"""Tests of the synthetic nuclei generator and the ``cellect synth`` command."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_cellect.cli import main
from napari_cellect.data.annotations import read_tracks
from napari_cellect.data.synthetic import (
    GT_COLUMNS,
    PRESETS,
    cells_for_density,
    generate,
    iter_frames,
    sample_config,
    simulate,
    write_synthetic,
)
from napari_cellect.data.synthetic.config import SyntheticConfig
from napari_cellect.errors import InputError

#: a tiny 3D sequence: every test stays well under a second
TINY = dataclasses.replace(PRESETS["default"], shape=(8, 64, 64), frames=6, n_cells=10, seed=1)
#: the tiny sequence with frequent divisions
DIVIDING = dataclasses.replace(
    TINY, n_cells=8, max_cells=40, division_rate=0.5, min_cycle=3, frames=8, seed=2
)


@pytest.fixture(scope="module")
def tiny():
    return generate(TINY, labels=True)


@pytest.fixture(scope="module")
def dividing():
    return generate(DIVIDING, labels=True)


def _values_at(images: np.ndarray, tracks: pd.DataFrame) -> np.ndarray:
    idx = np.rint(tracks[["t", "z", "y", "x"]].to_numpy()).astype(int)
    return images[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]].astype(float)


def _children(tracks: pd.DataFrame) -> pd.Series:
    parents = tracks["parent_id"]
    return parents[parents >= 0].value_counts().reindex(tracks["id"], fill_value=0)


# ---------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_sequence(tiny):
    again = generate(TINY, labels=True)
    assert np.array_equal(again.images, tiny.images)
    assert np.array_equal(again.labels, tiny.labels)
    pd.testing.assert_frame_equal(again.tracks, tiny.tracks)


def test_other_seed_gives_other_sequence(tiny):
    other = generate(dataclasses.replace(TINY, seed=2))
    assert not np.array_equal(other.images, tiny.images)
    assert not np.allclose(other.tracks["x"].to_numpy()[:5], tiny.tracks["x"].to_numpy()[:5])


def test_frames_render_independently(tiny):
    sim = simulate(TINY)
    image, labels = sim.render(4, labels=True)
    assert np.array_equal(image, tiny.images[4])
    assert np.array_equal(labels, tiny.labels[4])
    streamed = list(iter_frames(TINY))
    assert len(streamed) == TINY.frames
    assert all(np.array_equal(a, b) for a, b in zip(streamed, tiny.images, strict=True))


# ---------------------------------------------------------------------- images vs ground truth


def test_output_is_uint16_of_the_configured_shape(tiny):
    assert tiny.images.dtype == np.uint16
    assert tiny.images.shape == (TINY.frames, *TINY.shape)
    assert tiny.images.min() > 0  # camera offset + background


def test_ground_truth_centres_lie_on_bright_nuclei(tiny):
    background = np.median(tiny.images)
    dimmest = TINY.brightness_range[0]
    at_centres = _values_at(tiny.images, tiny.tracks)
    assert len(at_centres) >= TINY.n_cells * TINY.frames
    assert np.all(at_centres > background + 0.3 * dimmest)


def test_nuclei_are_much_brighter_than_their_surroundings(tiny):
    inside = tiny.labels > 0
    signal = tiny.images.astype(float) - TINY.offset
    assert signal[inside].mean() > 3 * signal[~inside].mean()


def test_nuclei_are_round_in_physical_space_so_squashed_in_slices(tiny):
    labels = tiny.labels[0]
    row = tiny.tracks[tiny.tracks["t"] == 0].iloc[0]
    track_id = tiny.graph.track_ids()[tiny.graph.index_of(int(row["id"]))][0]
    zs, ys, _ = np.nonzero(labels == track_id)
    z_extent = (zs.max() - zs.min() + 1) * TINY.z_ratio
    y_extent = ys.max() - ys.min() + 1
    assert 0.5 < z_extent / y_extent < 2.0  # similar physical size ...
    assert zs.max() - zs.min() + 1 < y_extent  # ... but fewer slices than rows


def test_labels_hold_the_track_id_at_each_centre(tiny):
    graph = tiny.graph
    idx = np.rint(graph.positions()).astype(int)
    found = tiny.labels[graph["t"], idx[:, 0], idx[:, 1], idx[:, 2]]
    assert np.mean(found == graph.track_ids()) > 0.95


# ---------------------------------------------------------------------------- graph


def test_ground_truth_graph_invariants(tiny):
    tracks = tiny.tracks
    assert list(tracks.columns) == list(GT_COLUMNS)
    ids = tracks["id"].to_numpy()
    assert ids.min() == 1 and len(np.unique(ids)) == len(ids)
    by_id = tracks.set_index("id")
    linked = tracks[tracks["parent_id"] >= 0]
    assert np.all(by_id.loc[linked["parent_id"], "t"].to_numpy() == linked["t"].to_numpy() - 1)
    assert _children(tracks).max() <= 2
    upper = np.array(TINY.shape) - 1
    positions = tracks[["z", "y", "x"]].to_numpy()
    assert np.all(positions >= 0) and np.all(positions <= upper)
    assert tracks["approved"].all()
    graph = tiny.graph
    graph.validate()
    assert len(graph) == len(tracks)


def test_closed_embryo_keeps_every_cell_in_view(tiny):
    """The default embryo lies inside the field of view and nothing appears or dies."""
    tracks = tiny.tracks
    assert np.all(tracks.loc[tracks["parent_id"] < 0, "t"] == 0)
    n_children = _children(tracks).to_numpy()
    ends = (n_children == 0) & (tracks["t"].to_numpy() < TINY.frames - 1)
    assert not np.any(ends)


# ---------------------------------------------------------------------------- divisions


def test_divisions_have_two_daughters_a_radius_apart(dividing):
    tracks = dividing.tracks
    mothers = tracks[tracks["division_score"] == 1]
    assert len(mothers) >= 3
    n_children = _children(tracks)
    assert np.all(n_children.loc[mothers["id"]].to_numpy() == 2)
    scale = np.array([DIVIDING.z_ratio, 1.0, 1.0])
    for _, mother in mothers.iterrows():
        daughters = tracks[tracks["parent_id"] == mother["id"]]
        assert np.all(daughters["t"] == mother["t"] + 1)
        xyz = daughters[["z", "y", "x"]].to_numpy() * scale
        gap = np.linalg.norm(xyz[0] - xyz[1])
        assert 0.7 * mother["radius"] < gap < 1.8 * mother["radius"]
        assert np.all(daughters["radius"] < mother["radius"])


def test_division_score_marks_exactly_the_mothers(dividing):
    tracks = dividing.tracks
    two = _children(tracks).to_numpy() == 2
    assert np.array_equal(two, tracks["division_score"].to_numpy() == 1)
    assert set(np.unique(tracks["division_score"])) <= {0.0, 1.0}


def test_mother_condenses_and_brightens_before_dividing():
    config = dataclasses.replace(
        DIVIDING,
        frames=10,
        min_cycle=6,
        division_rate=0.3,
        noise=0.0,
        texture=0.0,
        brightness_variation=0.0,
    )
    seq = generate(config)
    tracks = seq.tracks.set_index("id")
    ratios = []
    for mother_id in tracks.index[tracks["division_score"] == 1]:
        chain = [mother_id]  # walk back along the mother's branch
        while len(chain) <= config.mitosis_frames + 1 and tracks.loc[chain[-1], "parent_id"] >= 0:
            parent = tracks.loc[chain[-1], "parent_id"]
            if (tracks["parent_id"] == parent).sum() != 1:
                break  # the branch starts at a division
            chain.append(parent)
        if len(chain) <= config.mitosis_frames:
            continue
        last, before = tracks.loc[[chain[0]]], tracks.loc[[chain[config.mitosis_frames]]]
        ratios.append(_values_at(seq.images, last)[0] / _values_at(seq.images, before)[0])
    assert len(ratios) >= 2
    assert np.median(ratios) > 1.1


# ---------------------------------------------------------------------------- presets and motion


def test_2d_sequence():
    config = dataclasses.replace(PRESETS["sparse2d"], shape=(1, 64, 64), frames=6, n_cells=6)
    seq = generate(config, labels=True)
    assert seq.images.shape == (6, 1, 64, 64)
    assert np.all(seq.tracks["z"] == 0)
    assert len(seq.tracks) >= 6 * 6
    assert np.all(_values_at(seq.images, seq.tracks) > np.median(seq.images) + 200)
    moved = seq.tracks.groupby(seq.tracks["id"] > 0)["x"].std().iloc[0]
    assert moved > 0
    seq.graph.validate()


def test_cells_enter_and_leave_in_the_hard_preset():
    config = dataclasses.replace(PRESETS["hard"], shape=(8, 64, 64), frames=8, n_cells=20, seed=0)
    tracks = simulate(config).tracks
    entering = (tracks["parent_id"] < 0) & (tracks["t"] > 0)
    n_children = _children(tracks).to_numpy()
    leaving = (n_children == 0) & (tracks["t"].to_numpy() < config.frames - 1)
    assert entering.sum() >= 1
    assert leaving.sum() >= 1


def test_cells_move_smoothly_at_the_configured_speed():
    config = dataclasses.replace(TINY, speed=2.0, frames=8, division_rate=0.0)
    tracks = simulate(config).tracks
    linked = tracks[tracks["parent_id"] >= 0]
    parents = tracks.set_index("id").loc[linked["parent_id"]]
    scale = np.array([config.z_ratio, 1.0, 1.0])
    steps = (linked[["z", "y", "x"]].to_numpy() - parents[["z", "y", "x"]].to_numpy()) * scale
    step = np.linalg.norm(steps, axis=1)
    assert 0.5 * config.speed < np.median(step) < 2.0 * config.speed
    assert step.max() < 5 * config.speed


def test_nuclei_do_not_overlap_much():
    tracks = simulate(dataclasses.replace(PRESETS["dense"], shape=(16, 96, 96), frames=3)).tracks
    scale = np.array([PRESETS["dense"].z_ratio, 1.0, 1.0])
    frame = tracks[tracks["t"] == 2]
    xyz = frame[["z", "y", "x"]].to_numpy() * scale
    r = frame["radius"].to_numpy()
    dist = np.linalg.norm(xyz[:, None] - xyz[None], axis=2)
    contact = r[:, None] + r[None, :]
    np.fill_diagonal(dist, np.inf)
    assert np.median(np.min(dist / contact, axis=1)) > 0.8


def test_all_presets_are_valid_configs():
    assert {"default", "dense", "noisy", "fast", "hard", "sparse2d"} <= set(PRESETS)
    assert PRESETS["sparse2d"].is_2d
    assert PRESETS["hard"].n_cells > PRESETS["default"].n_cells
    assert PRESETS["hard"].noise > PRESETS["default"].noise
    assert PRESETS["hard"].speed > PRESETS["default"].speed
    assert PRESETS["hard"].division_rate > PRESETS["default"].division_rate


def test_photobleaching_dims_later_frames():
    config = dataclasses.replace(TINY, bleach_rate=0.15, noise=0.0, flicker=0.0, division_rate=0.0)
    images = generate(config).images.astype(float) - config.offset
    assert images[-1].max() < 0.7 * images[0].max()


# ---------------------------------------------------------------------------- config


def test_config_validation_names_the_bad_fields():
    with pytest.raises(InputError, match="frames must be >= 1"):
        SyntheticConfig(frames=0)
    with pytest.raises(InputError, match="shape must be three positive sizes"):
        SyntheticConfig(shape=(0, 64, 64))
    with pytest.raises(InputError, match="radius_range"):
        SyntheticConfig(radius_range=(8.0, 4.0))
    with pytest.raises(InputError, match="min_cycle must exceed"):
        SyntheticConfig(min_cycle=2, mitosis_frames=2)


def test_config_round_trips_through_a_dict():
    config = PRESETS["hard"]
    again = SyntheticConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(InputError, match="unknown synthetic config key"):
        SyntheticConfig.from_dict({"frames": 3, "colour": "green"})


def test_density_sets_the_number_of_cells():
    low, high = cells_for_density(TINY, 0.05), cells_for_density(TINY, 0.2)
    assert 0 < low < high
    assert high == pytest.approx(4 * low, rel=0.25)
    with pytest.raises(InputError, match="density"):
        cells_for_density(TINY, 1.5)


def test_sample_config_is_seeded_and_varied():
    first, again, other = sample_config(5, TINY), sample_config(5, TINY), sample_config(6, TINY)
    assert first == again and first != other
    assert first.shape == TINY.shape and first.frames == TINY.frames
    assert len(simulate(first).tracks) > 0


# ---------------------------------------------------------------------------- writing


def test_write_synthetic_layout(tmp_path):
    out = tmp_path / "synth"
    paths = write_synthetic(out, TINY, labels=True)
    assert [p.name for p in paths.images] == [f"t{t:03d}.tif" for t in range(TINY.frames)]
    with tifffile.TiffFile(paths.images[2]) as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["spacing"] == pytest.approx(TINY.z_ratio)
        assert tif.series[0].axes == "ZYX"
        frame = tif.asarray()
    assert frame.dtype == np.uint16 and frame.shape == TINY.shape
    assert np.array_equal(frame, generate(TINY).images[2])
    assert len(paths.labels) == TINY.frames
    truth = simulate(TINY).graph
    written = read_tracks(paths.tracks)
    assert np.array_equal(written.ids, truth.ids)
    assert np.array_equal(written["parent_id"], truth["parent_id"])
    assert np.allclose(written.positions(), truth.positions())
    assert np.array_equal(written["division_score"], truth["division_score"])
    assert (paths.ctc / "TRA" / "man_track.txt").is_file()
    assert len(list((paths.ctc / "TRA").glob("man_track*.tif"))) == TINY.frames
    ctc = read_tracks(paths.ctc)
    assert len(ctc) == len(truth) and len(ctc.divisions()) == len(truth.divisions())
    meta = json.loads(paths.metadata.read_text())
    assert SyntheticConfig.from_dict(meta["config"]) == TINY
    assert meta["summary"]["nodes"] == len(truth)
    assert meta["summary"]["divisions"] == len(truth.divisions())


def test_written_images_open_as_a_sequence(tmp_path):
    from napari_cellect.data.images import open_sequence

    paths = write_synthetic(tmp_path / "s", TINY)
    sequence = open_sequence(paths.root / "images")
    assert sequence.data.shape == (TINY.frames, *TINY.shape)
    assert sequence.z_ratio == pytest.approx(TINY.z_ratio)


def test_write_refuses_a_non_empty_folder_unless_overwriting(tmp_path):
    out = tmp_path / "s"
    write_synthetic(out, TINY, labels=True)
    with pytest.raises(InputError, match="not empty"):
        write_synthetic(out, TINY)
    shorter = dataclasses.replace(TINY, frames=3)
    paths = write_synthetic(out, shorter, overwrite=True)
    assert sorted(p.name for p in (out / "images").iterdir()) == [p.name for p in paths.images]
    assert not any((out / "labels").iterdir())  # stale labels of the first run are gone


# ---------------------------------------------------------------------------- CLI


def test_cli_writes_the_dataset(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        [
            "synth",
            str(out),
            "--frames",
            "4",
            "--shape",
            "6",
            "48",
            "48",
            "--cells",
            "5",
            "--seed",
            "3",
            "--z-ratio",
            "2",
            "--noise",
            "0.5",
            "--speed",
            "1.5",
            "--division-rate",
            "0.1",
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "4 frames of 6x48x48" in lines[0]
    config = SyntheticConfig.from_dict(json.loads((out / "synthetic.json").read_text())["config"])
    assert (config.frames, config.shape, config.n_cells, config.seed) == (4, (6, 48, 48), 5, 3)
    assert (config.z_ratio, config.noise, config.speed, config.division_rate) == (2, 0.5, 1.5, 0.1)
    assert len(list((out / "images").glob("t*.tif"))) == 4
    assert (out / "tracks.csv").is_file()


def test_cli_preset_and_density(tmp_path, capsys):
    out = tmp_path / "cli2d"
    code = main(
        [
            "synth",
            str(out),
            "--preset",
            "sparse2d",
            "--frames",
            "3",
            "--shape",
            "1",
            "64",
            "64",
            "--density",
            "0.1",
        ]
    )
    assert code == 0
    config = json.loads((out / "synthetic.json").read_text())["config"]
    assert config["shape"] == [1, 64, 64]
    assert config["n_cells"] == cells_for_density(
        dataclasses.replace(PRESETS["sparse2d"], shape=(1, 64, 64)), 0.1
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--shape", "8", "64"], "--shape needs three sizes"),
        (["--shape", "8", "0", "64"], "--shape sizes must be positive"),
        (["--frames", "0"], "--frames must be a positive"),
        (["--cells", "-2"], "--cells must be a positive"),
        (["--cells", "3", "--density", "0.1"], "not both"),
        (["--z-ratio", "0"], "--z-ratio must be positive"),
        (["--noise", "-1"], "noise must be >= 0"),
    ],
)
def test_cli_bad_arguments_exit_2(tmp_path, capsys, extra, message):
    code = main(["synth", str(tmp_path / "bad"), *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("cellect synth: error:") and message in err
    assert not (tmp_path / "bad").exists()


def test_cli_refuses_a_non_empty_output_folder(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["synth", str(out), "--frames", "2", "--shape", "4", "32", "32"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"
