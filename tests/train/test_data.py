"""Sources, crops, sampling and augmentation (src/napari_cellect/train/data.py)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from napari_cellect.errors import InputError
from napari_cellect.infer.normalize import normalize_pair
from napari_cellect.settings.normalization import NormalizationConfig
from napari_cellect.track.graph import TrackGraph
from napari_cellect.train.data import (
    AugmentConfig,
    Sampler,
    SamplingConfig,
    TrainSource,
    augment_geometry,
    augment_intensity,
    collate,
    transform_maps,
    transform_points,
)
from napari_cellect.train.targets import render_cells

SHAPE = (6, 40, 40)
Z_RATIO = 2.0
TOP = 4


def lineage_graph() -> TrackGraph:
    """Frames 0-3 annotated, frame 4 not; cell 1 divides into 3, 4 after frame 1."""
    rows = [
        # id, t, z, y, x, parent
        (1, 0, 3, 12, 10, -1),
        (2, 0, 3, 28, 30, -1),
        (5, 1, 3, 13, 11, 1),
        (6, 1, 3, 27, 29, 2),
        (7, 2, 3, 8, 9, 5),
        (8, 2, 3, 18, 14, 5),
        (9, 2, 3, 26, 28, 6),
        (10, 3, 3, 7, 9, 7),
        (11, 3, 3, 19, 15, 8),
        (12, 3, 3, 25, 27, 9),
    ]
    ids, t, z, y, x, parent = (np.array(c) for c in zip(*rows))
    return TrackGraph.from_arrays(
        id=ids, t=t, z=z, y=y, x=x, parent_id=parent, radius=np.full(len(ids), 5.0)
    )


def images_from(graph: TrackGraph, n_frames: int = 5) -> np.ndarray:
    """Images whose bright voxels are exactly the annotated nuclei (frame 4 stays dark)."""
    images = np.full((n_frames, *SHAPE), 10, np.uint16)
    for t in range(n_frames):
        rows = graph.frame(t)
        if len(rows):
            render = render_cells(graph.positions(rows), graph["radius"][rows], SHAPE, Z_RATIO)
            images[t][render.owner >= 0] = 1000
    return images


@pytest.fixture
def sampler() -> Sampler:
    graph = lineage_graph()
    return Sampler(
        [(images_from(graph), graph, Z_RATIO)],
        SamplingConfig(crop=(6, 32, 32), division_fraction=0.5, cell_fraction=0.5),
        AugmentConfig(enabled=False),
    )


def test_only_annotated_frames_with_a_next_frame_are_sampled(sampler):
    rng = np.random.default_rng(0)
    ts = {sampler.sample(rng).t for _ in range(40)}
    assert ts == {0, 1, 2, 3}  # frame 4 has no annotations (and no next frame)
    last = sampler.build(0, 3, (0, 0, 0))
    assert not last.next_annotated  # frame 4 is not annotated: pass B does not count
    assert not last.targets.b.valid.any() and not last.targets.b.division_valid.any()
    assert not last.targets.a.division_valid.any()
    first = sampler.build(0, 0, (0, 0, 0))
    assert first.next_annotated and first.targets.b.valid.all()


def test_crops_match_inference_normalisation(sampler):
    sample = sampler.build(0, 1, (0, 4, 6))
    images = sampler.sources[0].images
    pair_a = normalize_pair(np.stack([images[1], images[2]]), NormalizationConfig())
    pair_b = normalize_pair(np.stack([images[2], images[3]]), NormalizationConfig())
    np.testing.assert_array_equal(sample.images[0], pair_a[:, :, 4:36, 6:38])
    np.testing.assert_array_equal(sample.images[1], pair_b[:, :, 4:36, 6:38])


def test_small_volumes_are_padded_and_padding_ignored():
    graph = lineage_graph()
    sampler = Sampler(
        [(images_from(graph), graph, Z_RATIO)],
        SamplingConfig(crop=(8, 48, 32)),
        AugmentConfig(enabled=False),
    )
    sample = sampler.sample(np.random.default_rng(0))
    assert sample.images.shape == (2, 2, 8, 48, 32)
    assert sample.origin[0] == -1 and sample.origin[1] == -4  # centred, like the tiler
    valid = sample.targets.a.valid
    assert not valid[0].any() and not valid[7].any() and valid[1:7, 4:44].any()
    assert not valid[:, :4].any() and not valid[:, 44:].any()


def test_division_crops_are_oversampled(sampler):
    rng = np.random.default_rng(3)
    config = dataclasses.replace(
        sampler.sampling,
        division_fraction=1.0,
        cell_fraction=0.0,
        crop=(6, 16, 16),
        centre_jitter=0.0,
    )
    sampler.sampling = config
    for _ in range(10):
        origin = sampler.choose_origin(rng, 0, 1)
        # the mother (node 5, frame 1, at y=13, x=11) lies in the crop
        assert origin[1] <= 13 < origin[1] + 16 and origin[2] <= 11 < origin[2] + 16


@pytest.mark.parametrize(
    "k,flip_y,flip_x", list(itertools.product(range(4), (False, True), (False, True)))
)
def test_augmentation_keeps_images_and_targets_aligned(sampler, k, flip_y, flip_x):
    sample = augment_geometry(sampler.build(0, 1, (0, 2, 5)), k, flip_y, flip_x)
    targets = sample.targets.a
    bright = sample.images[0, 0] > 0.5
    np.testing.assert_array_equal(bright, targets.seg > 0)
    np.testing.assert_array_equal(sample.images[1, 0] > 0.5, sample.targets.b.seg > 0)
    # the points moved with the maps: top level and own label at every centre in the crop
    cells = targets.cells_t
    inside = cells.in_crop(targets.shape)
    vox = cells.centre_voxels(targets.shape)[inside]
    assert np.all(targets.centre[vox[:, 0], vox[:, 1], vox[:, 2]] == TOP)
    np.testing.assert_array_equal(
        targets.ids_t[vox[:, 0], vox[:, 1], vox[:, 2]], cells.label[inside]
    )
    nxt = targets.cells_next
    inside = nxt.in_crop(targets.shape)
    vox = nxt.centre_voxels(targets.shape)[inside]
    np.testing.assert_array_equal(
        targets.ids_next[vox[:, 0], vox[:, 1], vox[:, 2]], nxt.lineage[inside]
    )


@pytest.mark.parametrize("k", range(4))
def test_points_follow_maps_on_non_square_volumes(k):
    volume = np.zeros((3, 7, 11), np.int64)
    points = np.array([[1.0, 2.0, 9.0], [2.0, 6.0, 0.0], [0.0, 3.0, 4.0]])
    for i, (z, y, x) in enumerate(points.astype(int)):
        volume[z, y, x] = i + 1
    for flip_y, flip_x in itertools.product((False, True), repeat=2):
        moved = transform_maps(volume, k, flip_y, flip_x)
        new = transform_points(points, volume.shape[1:], k, flip_y, flip_x).astype(int)
        for i, (z, y, x) in enumerate(new):
            assert moved[z, y, x] == i + 1


def test_random_augmentation_skips_rotation_for_non_square_crops():
    graph = lineage_graph()
    sampler = Sampler(
        [(images_from(graph), graph, Z_RATIO)],
        SamplingConfig(crop=(6, 32, 16)),
        AugmentConfig(intensity_probability=0.0, poisson_probability=0.0, gaussian_probability=0.0),
    )
    rng = np.random.default_rng(0)
    for _ in range(8):
        sample = sampler.sample(rng)
        assert sample.transform[0] == 0 and sample.images.shape[-2:] == (32, 16)
        np.testing.assert_array_equal(sample.images[0, 0] > 0.5, sample.targets.a.seg > 0)


def test_intensity_augmentation_changes_values_not_shape():
    rng = np.random.default_rng(0)
    images = np.random.default_rng(1).uniform(0, 1, (2, 2, 4, 8, 8)).astype(np.float32)
    config = AugmentConfig(
        intensity_probability=1.0, poisson_probability=1.0, gaussian_probability=1.0
    )
    out = augment_intensity(images, config, rng)
    assert out.shape == images.shape and out.dtype == np.float32
    assert not np.allclose(out, images)
    # contrast is preserved in order on average: bright stays brighter than dark
    assert out[images > 0.8].mean() > out[images < 0.2].mean()
    np.testing.assert_array_equal(
        images, np.random.default_rng(1).uniform(0, 1, images.shape).astype(np.float32)
    )  # the input is untouched


def test_collate_stacks_both_passes(sampler):
    rng = np.random.default_rng(0)
    batch = collate([sampler.sample(rng, t=0), sampler.sample(rng, t=3)])
    assert batch.x.shape == (4, 2, 6, 32, 32)
    assert batch.seg.shape == (4, 6, 32, 32) and batch.division.shape == (4, 2, 6, 32, 32)
    # pass B of the t=3 sample (index 3) has no annotated frame 4: nothing counts
    assert batch.valid[0].any() and not batch.valid[3].any()
    assert not batch.division_valid[3].any()
    np.testing.assert_array_equal(batch.dividing, batch.division.any(axis=1))


def test_annotated_mask_limits_valid_voxels():
    graph = lineage_graph()
    mask = np.zeros(SHAPE, bool)
    mask[:, :20] = True
    source = TrainSource(images_from(graph), graph, Z_RATIO, annotated_mask=mask)
    sampler = Sampler([source], SamplingConfig(crop=(6, 32, 32)), AugmentConfig(enabled=False))
    sample = sampler.build(0, 0, (0, 0, 0))
    assert sample.targets.a.valid[:, :20].all() and not sample.targets.a.valid[:, 20:].any()


def test_bad_sources_raise_input_errors():
    graph = lineage_graph()
    images = images_from(graph)
    with pytest.raises(InputError, match="empty"):
        Sampler([(images, TrackGraph(), Z_RATIO)])
    with pytest.raises(InputError, match="no annotation lies inside the images"):
        Sampler(
            [
                (
                    images[:, :, :5, :5],
                    TrackGraph.from_arrays(id=[1], t=[0], z=[3], y=[30], x=[30]),
                    Z_RATIO,
                )
            ]
        )
    late = TrackGraph.from_arrays(id=[1], t=[9], z=[3], y=[10], x=[10])
    with pytest.raises(InputError, match=r"frames 9\.\.9"):
        Sampler([(images, late, Z_RATIO)])
    with pytest.raises(InputError, match=r"\(T, Z, Y, X\)"):
        Sampler([(images[0], graph, Z_RATIO)])
    with pytest.raises(InputError, match="z_ratio"):
        Sampler([(images, graph, 0.0)])
    with pytest.raises(InputError, match="annotated_mask"):
        Sampler([TrainSource(images, graph, Z_RATIO, annotated_mask=np.ones((3, 3), bool))])
    # only the last frame annotated: no pair to train on
    last = TrackGraph.from_arrays(id=[1], t=[4], z=[3], y=[10], x=[10])
    with pytest.raises(InputError, match="next frame"):
        Sampler([(images, last, Z_RATIO)])
