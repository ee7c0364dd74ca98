"""The wider training distribution of the synthetic generator: each new randomisation happens,
is seeded, and keeps the ground truth (masks, centres, lineage) consistent."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from skimage.measure import regionprops

from napari_cellect.data.synthetic import (
    PRESETS,
    generate,
    sample_config,
    sample_wide_config,
    simulate,
)
from napari_cellect.data.synthetic.config import SyntheticConfig
from napari_cellect.errors import InputError

#: a small noise-free 2D+t sequence whose nuclei are easy to measure in the masks
FLAT = dataclasses.replace(
    PRESETS["sparse2d"],
    shape=(1, 96, 96),
    frames=3,
    n_cells=12,
    noise=0.0,
    texture=0.0,
    shape_irregularity=0.0,
    psf_sigma_xy=0.0,
    division_rate=0.0,
    radius_range=(7.0, 7.0),
    seed=3,
    flicker=0.0,
    brightness_variation=0.0,
)
#: a small 3D sequence with frequent divisions
DIVIDING = dataclasses.replace(
    PRESETS["default"],
    shape=(8, 64, 64),
    frames=8,
    n_cells=8,
    max_cells=40,
    division_rate=0.5,
    min_cycle=3,
    seed=2,
)


def _children(tracks: pd.DataFrame) -> pd.Series:
    parents = tracks["parent_id"]
    return parents[parents >= 0].value_counts().reindex(tracks["id"], fill_value=0)


def _frame0_props(config: SyntheticConfig) -> list:
    seq = generate(config, labels=True)
    return regionprops(seq.labels[0, 0])


def _centres_on_labels(seq) -> float:
    """Share of ground-truth nodes whose centre voxel holds the node's own track id."""
    graph = seq.graph
    idx = np.rint(graph.positions()).astype(int)
    found = seq.labels[graph["t"], idx[:, 0], idx[:, 1], idx[:, 2]]
    return float(np.mean(found == graph.track_ids()))


# ---------------------------------------------------------------------------- the sampler


def test_wide_configs_are_seeded_and_cover_the_ranges():
    configs = [sample_wide_config(seed, PRESETS["default"]) for seed in range(60)]
    assert configs[7] == sample_wide_config(7, PRESETS["default"])
    assert len({c for c in configs}) == len(configs)
    depths = np.array([c.shape[0] for c in configs])
    assert np.any(depths == 1) and depths.max() > 30 and depths.max() <= 64
    ratios = [c.z_ratio for c in configs if not c.is_2d]
    assert min(ratios) < 2 and max(ratios) > 6 and max(ratios) <= 10
    for field in ("lobes", "rim", "dim_fraction", "giant_fraction", "structures"):
        on = [getattr(c, field) > 0 for c in configs]
        assert 0 < sum(on) < len(on), field  # optional: sometimes on, sometimes off
    assert any(c.elongation[1] > 1 for c in configs)
    assert any(c.condensation_probability < 0.3 for c in configs)
    assert any(c.brightening_probability < 0.3 for c in configs)
    assert any(c.doublets > 0 for c in configs) and any(c.debris > 0 for c in configs)
    assert all(c.frames == PRESETS["default"].frames for c in configs)
    assert all(c.n_cells <= 200 for c in configs)


def test_sample_config_is_unchanged_by_the_wide_sampler():
    """The validation series made by sample_config (seed 304) must stay what they were."""
    config = sample_config(304, dataclasses.replace(PRESETS["default"], seed=304))
    assert config.lobes == 0 and config.doublets == 0 and config.condensation_probability == 1
    assert config.shape == PRESETS["default"].shape


def test_a_wide_sequence_has_consistent_ground_truth():
    config = dataclasses.replace(sample_wide_config(11, PRESETS["default"]), frames=6)
    small = (min(config.shape[0], 12), 64, 64)
    config = dataclasses.replace(config, shape=small, n_cells=min(config.n_cells, 25))
    seq = generate(config, labels=True)
    assert np.array_equal(seq.images, generate(config).images)
    seq.graph.validate()
    assert _centres_on_labels(seq) > 0.9
    tracks = seq.tracks
    two = _children(tracks).to_numpy() == 2
    assert np.array_equal(two, tracks["division_score"].to_numpy() == 1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"elongation": (0.5, 2.0)}, "elongation"),
        ({"dim_factor": (0.2, 1.5)}, "dim_factor"),
        ({"giant_fraction": 1.5}, "giant_fraction"),
        ({"lobes": 0.9}, "lobes"),
        ({"debris": -1}, "debris"),
    ],
)
def test_new_fields_are_validated(changes, message):
    with pytest.raises(InputError, match=message):
        SyntheticConfig(**changes)


# ---------------------------------------------------------------------------- shape


def test_elongated_nuclei():
    def median_aspect(config: SyntheticConfig) -> float:
        props = _frame0_props(config)
        return float(np.median([p.axis_major_length / p.axis_minor_length for p in props]))

    round_ = median_aspect(FLAT)
    long = median_aspect(dataclasses.replace(FLAT, elongation=(2.2, 2.2)))
    assert round_ < 1.15
    assert long > 1.4


def test_lobed_nuclei_are_irregular_but_centred():
    lobed = dataclasses.replace(FLAT, lobes=0.4)
    smooth = [p.solidity for p in _frame0_props(FLAT)]
    lobed_seq = generate(lobed, labels=True)
    props = regionprops(lobed_seq.labels[0, 0])
    # a discretised disc has solidity about 0.95; lobed outlines have concave parts
    assert min(smooth) > 0.93
    assert np.percentile([p.solidity for p in props], 25) < min(smooth) - 0.02
    # the outline changes, the centre (the ground truth) does not
    assert _centres_on_labels(lobed_seq) > 0.95
    gt = lobed_seq.tracks[lobed_seq.tracks["t"] == 0]
    centroids = np.array([p.centroid for p in props])
    for _, row in gt.iterrows():
        nearest = np.min(np.linalg.norm(centroids - [row["y"], row["x"]], axis=1))
        assert nearest < 1.5


def test_touching_doublets_are_unrelated_pairs_in_contact():
    def touching_pairs(config: SyntheticConfig) -> int:
        first = simulate(config).tracks.query("t == 0")
        xy = first[["y", "x"]].to_numpy()
        r = first["radius"].to_numpy()
        d = np.linalg.norm(xy[:, None] - xy[None], axis=2) / (r[:, None] + r[None, :])
        return int(np.sum(np.triu(d < 1.05, 1)))

    config = dataclasses.replace(FLAT, n_cells=8, contact_distance=0.9)
    with_pairs = dataclasses.replace(config, doublets=4)
    assert touching_pairs(with_pairs) >= touching_pairs(config) + 3
    tracks = simulate(with_pairs).tracks
    assert np.all(tracks.loc[tracks["t"] == 0, "parent_id"] < 0)  # not sisters: no mother


# ---------------------------------------------------------------------------- appearance


def test_dim_nuclei():
    config = dataclasses.replace(
        FLAT, n_cells=20, brightness_range=(800.0, 800.0), dim_fraction=0.5, dim_factor=(0.2, 0.2)
    )
    seq = generate(config)
    first = seq.tracks.query("t == 0")
    idx = np.rint(first[["z", "y", "x"]].to_numpy()).astype(int)
    values = seq.images[0][idx[:, 0], idx[:, 1], idx[:, 2]].astype(float) - config.offset
    dim = values < 0.5 * values.max()
    assert 0.2 < dim.mean() < 0.8


def test_rim_and_background_structures_change_pixels_not_ground_truth():
    plain = generate(FLAT, labels=True)
    for changes in ({"rim": 0.8}, {"structures": 300.0, "structure_scale": 8.0}):
        other = generate(dataclasses.replace(FLAT, **changes), labels=True)
        assert not np.array_equal(other.images, plain.images), changes
        assert np.array_equal(other.labels, plain.labels), changes
        pd.testing.assert_frame_equal(other.tracks, plain.tracks)
    structured = generate(
        dataclasses.replace(FLAT, structures=300.0, structure_scale=8.0), labels=True
    )
    outside = plain.labels == 0
    added = structured.images.astype(float) - plain.images
    # thin bright lines, not a uniform offset
    assert added[outside].max() > 150
    assert np.median(added[outside]) < 50


def test_debris_is_bright_but_untracked():
    config = dataclasses.replace(FLAT, debris=5, debris_brightness=(1.0, 1.0))
    sim = simulate(config)
    frame = sim.frames[0]
    assert np.count_nonzero(~frame.tracked) == 5
    image, labels = sim.render(0, labels=True)
    for pos in frame.position[~frame.tracked]:
        z, y, x = np.rint(pos).astype(int)
        if 0 <= y < 96 and 0 <= x < 96:
            assert labels[z, y, x] == 0
            assert image[z, y, x] > np.median(image) + 0.3 * config.brightness_range[0]
    assert len(sim.tracks.query("t == 0")) == len(simulate(FLAT).tracks.query("t == 0"))


# ---------------------------------------------------------------------------- divisions


def _mother_brightening(config: SyntheticConfig) -> float:
    """Median intensity ratio of a mother's last frame to two frames before, at its centre."""
    seq = generate(config)
    tracks = seq.tracks.set_index("id")
    ratios = []
    for mother in tracks.index[tracks["division_score"] == 1]:
        chain = [mother]
        while len(chain) < 3 and tracks.loc[chain[-1], "parent_id"] >= 0:
            parent = tracks.loc[chain[-1], "parent_id"]
            if (tracks["parent_id"] == parent).sum() != 1:
                break
            chain.append(parent)
        if len(chain) < 3:
            continue
        rows = tracks.loc[[chain[0], chain[2]]]
        idx = np.rint(rows[["t", "z", "y", "x"]].to_numpy()).astype(int)
        v = seq.images[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]].astype(float)
        ratios.append(v[0] / v[1])
    assert len(ratios) >= 2
    return float(np.median(ratios))


def test_divisions_with_and_without_condensation_and_brightening():
    quiet = dict(
        noise=0.0,
        texture=0.0,
        brightness_variation=0.0,
        flicker=0.0,
        frames=10,
        min_cycle=6,
        division_rate=0.3,
    )
    usual = dataclasses.replace(DIVIDING, **quiet)
    plain = dataclasses.replace(usual, condensation_probability=0.0, brightening_probability=0.0)
    assert _mother_brightening(usual) > 1.1
    assert _mother_brightening(plain) < 1.08
    # without brightening the daughters start at their inherited brightness
    first = simulate(plain).frames
    assert all(np.all(f.intensity[f.tracked] < 2 * plain.brightness_range[1]) for f in first)


def test_daughters_far_apart_and_unequal():
    config = dataclasses.replace(
        DIVIDING, daughter_separation=2.4, daughter_asymmetry=0.25, separation_jitter=0.0
    )
    tracks = simulate(config).tracks
    mothers = tracks[tracks["division_score"] == 1]
    assert len(mothers) >= 3
    scale = np.array([config.z_ratio, 1.0, 1.0])
    differences = []
    for _, mother in mothers.iterrows():
        daughters = tracks[tracks["parent_id"] == mother["id"]]
        xyz = daughters[["z", "y", "x"]].to_numpy() * scale
        assert np.linalg.norm(xyz[0] - xyz[1]) > 1.8 * mother["radius"]
        r = daughters["radius"].to_numpy()
        differences.append(abs(r[0] - r[1]) / r.mean())
    assert max(differences) > 0.1


def test_large_nuclei_never_divide():
    config = dataclasses.replace(
        DIVIDING, giant_fraction=0.4, giant_factor=(1.8, 1.8), radius_range=(5.0, 5.0), frames=10
    )
    tracks = simulate(config).tracks
    large = tracks["radius"] > 7.0
    assert large.sum() > 0
    assert not np.any(tracks.loc[large, "division_score"] == 1)
    assert np.all(_children(tracks).to_numpy()[large.to_numpy()] <= 1)
    assert tracks["division_score"].sum() >= 2  # the others still divide
