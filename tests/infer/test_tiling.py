from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cellect.errors import InputError, ModelError
from napari_cellect.infer.predict import predict_frame
from napari_cellect.infer.tiling import (
    HeadStitcher,
    pad_volume,
    plan_tiles,
    predict_tiles,
    unpack_output,
)
from napari_cellect.settings.detection import DetectionConfig
from napari_cellect.settings.tiling import TilingConfig, tiling_for


def ownership_count(grid) -> np.ndarray:
    count = np.zeros(grid.shape, np.int32)
    for tile in grid:
        count[tile.owned_in_volume] += 1
    return count


@pytest.mark.parametrize(
    "shape, tile, overlap, multiple",
    [
        ((41, 100, 130), (16, 64, 64), (4, 16, 16), (1, 16, 16)),
        ((41, 512, 512), (32, 256, 256), (8, 32, 32), (1, 16, 16)),
        ((7, 33, 70), (4, 16, 16), (2, 6, 6), (1, 4, 4)),
        ((5, 64, 64), (5, 64, 64), (0, 0, 0), (1, 1, 1)),
    ],
)
def test_owned_regions_partition_the_volume(shape, tile, overlap, multiple):
    grid = plan_tiles(shape, TilingConfig(tile=tile, overlap=overlap), multiple)
    assert np.all(ownership_count(grid) == 1)
    for t in grid:
        assert t.shape == grid.tile_shape
        assert all(n % m == 0 for n, m in zip(t.shape, multiple))
        # every window lies inside the padded volume
        assert all(s >= 0 and s + n <= p for s, n, p in zip(t.start, t.shape, grid.padded_shape))
        # owned voxels stay overlap // 2 away from inner tile edges
        for axis in range(3):
            own, size = t.owned[axis], t.shape[axis]
            at_volume_start = t.origin[axis] + own.start == 0
            at_volume_end = t.origin[axis] + own.stop == shape[axis]
            if not at_volume_start:
                assert own.start >= overlap[axis] // 2
            if not at_volume_end:
                assert size - own.stop >= overlap[axis] // 2


def test_large_frame_tile_count():
    fixed = TilingConfig(tile=(32, 256, 256), pad_to_tile=True)
    grid = plan_tiles((41, 512, 512), fixed, (1, 16, 16))
    assert len(grid) == 2 * 3 * 3  # the original's 18 patches, with wider overlaps
    assert grid.padded_shape == (41, 512, 512)
    default = plan_tiles((41, 512, 512), TilingConfig(), (1, 16, 16))
    assert len(default) == 4  # the default tile cuts an embryo frame into 2 x 2
    assert default.tile_shape == (41, 272, 272)  # equal halves, not 288 + a shifted 288


def computed_voxels(grid) -> int:
    return len(grid) * int(np.prod(grid.tile_shape))


@pytest.mark.parametrize(
    "shape",
    [
        (1, 314, 345),
        (16, 128, 128),
        (41, 512, 512),
        (64, 512, 512),
        (100, 1024, 1024),
        (5, 700, 90),
        (3, 40, 2000),
    ],
)
def test_fitted_tiles_follow_the_volume(shape):
    """Tiles of at most the configured voxel count, never more voxels computed than the
    fixed tile would, and a partition of the volume."""
    config = TilingConfig()
    multiple, minimum = (1, 16, 16), (16, 1, 1)
    fitted = plan_tiles(shape, config, multiple, minimum)
    fixed = plan_tiles(shape, TilingConfig(pad_to_tile=True), multiple, minimum)
    assert np.prod(fitted.tile_shape) <= np.prod(config.tile)
    assert computed_voxels(fitted) <= computed_voxels(fixed)
    assert all(n % m == 0 for n, m in zip(fitted.tile_shape[1:], multiple[1:]))
    assert np.all(ownership_count(fitted) == 1)


def test_a_2d_frame_a_little_larger_than_the_tile_is_one_tile():
    """A 314 x 345 frame (padded to 16 slices) fits the default tile's voxel count: one tile
    of 16 x 320 x 352, a third of the four 16 x 288 x 288 tiles a fixed tile computes."""
    grid = plan_tiles((1, 314, 345), TilingConfig(), (1, 16, 16), min_shape=(16, 1, 1))
    assert len(grid) == 1 and grid.tile_shape == (16, 320, 352)
    fixed = plan_tiles((1, 314, 345), TilingConfig(pad_to_tile=True), (1, 16, 16), (16, 1, 1))
    assert computed_voxels(fixed) >= 2.9 * computed_voxels(grid)


def test_small_volume_and_z1_are_padded():
    grid = plan_tiles((1, 20, 30), TilingConfig(tile=(32, 256, 256), pad_to_tile=True), (1, 16, 16))
    assert len(grid) == 1
    assert grid.padded_shape == grid.tile_shape == (32, 256, 256)
    (tile,) = grid.tiles
    assert tile.owned_in_volume == (slice(0, 1), slice(0, 20), slice(0, 30))
    assert np.all(ownership_count(grid) == 1)
    lean = plan_tiles((1, 20, 30), TilingConfig(pad_to_tile=False), (1, 16, 16))
    assert lean.padded_shape == (1, 32, 32)
    volume = np.arange(2 * 20 * 30, dtype=np.float32).reshape(2, 1, 20, 30)
    for mode in ("reflect", "edge", "constant"):
        padded = pad_volume(volume, grid, mode)
        assert padded.shape == (2, 32, 256, 256)
        (bz, by, bx) = grid.pad_before
        np.testing.assert_array_equal(padded[:, bz : bz + 1, by : by + 20, bx : bx + 30], volume)


def test_pad_volume_checks_shape_and_skips_when_not_needed():
    grid = plan_tiles((4, 16, 16), TilingConfig(tile=(4, 16, 16), overlap=(0, 0, 0)))
    volume = np.zeros((2, 4, 16, 16), np.float32)
    assert pad_volume(volume, grid) is volume
    with pytest.raises(InputError, match="shape"):
        pad_volume(np.zeros((2, 4, 16, 17), np.float32), grid)


def test_tiling_config_validation_and_coercion():
    with pytest.raises(InputError, match="overlap"):
        TilingConfig(tile=(8, 8, 8), overlap=(8, 0, 0))
    with pytest.raises(InputError, match="pad_mode"):
        TilingConfig(pad_mode="wrap")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="3 integers"):
        TilingConfig(tile=(8, 8))  # type: ignore[arg-type]
    cfg = tiling_for((16, 64, 64))
    assert cfg.tile == (16, 64, 64) and cfg.overlap == (8, 32, 32)
    assert tiling_for([4, 8, 8]).overlap == (3, 7, 7)
    with pytest.raises(InputError, match="volume"):
        plan_tiles((0, 10, 10))


def test_stitcher_reassembles_a_global_map():
    shape = (9, 40, 52)
    grid = plan_tiles(shape, TilingConfig(tile=(4, 16, 16), overlap=(2, 6, 6)))
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    truth = 1000 * z + 10 * y + x
    stitcher = HeadStitcher(grid, np.float32)
    for tile in grid:
        tz, ty, tx = np.meshgrid(
            *(np.arange(n) + o for n, o in zip(tile.shape, tile.origin)), indexing="ij"
        )
        local = (1000 * tz + 10 * ty + tx).astype(np.float32)
        heads = {
            "seg": np.stack([local] * 3),
            "centre": np.stack([local] * 5),
            "division": torch.from_numpy(np.stack([local] * 2)),  # tensors are accepted
            "radius": local[None],
        }
        stitcher.add(tile, heads)
    out = stitcher.result()
    assert out["seg"].shape == (3, *shape) and out["radius"].shape == (1, *shape)
    for name in ("seg", "centre", "division", "radius"):
        np.testing.assert_array_equal(out[name], np.broadcast_to(truth, out[name].shape))


def test_stitcher_refuses_an_incomplete_result():
    grid = plan_tiles((4, 32, 32), TilingConfig(tile=(4, 16, 16), overlap=(0, 4, 4)))
    with pytest.raises(RuntimeError, match="incomplete"):
        HeadStitcher(grid).result()


def test_predict_tiles_runs_each_tile_once(fake_unet):
    model = fake_unet(size_multiple=(1, 4, 4))
    grid = plan_tiles((6, 40, 40), TilingConfig(tile=(4, 16, 16), overlap=(2, 4, 4)), (1, 4, 4))
    padded = pad_volume(np.zeros((2, 6, 40, 40), np.float32), grid)
    with torch.inference_mode():
        outs = list(predict_tiles(model, padded, grid, torch.device("cpu")))
    assert model.calls == len(grid) == len(outs)
    for tile, out in outs:
        assert out.seg.shape == (3, *tile.shape) and out.embedding.shape[0] == 4


def test_wrong_model_output_is_a_model_error():
    class Shrinking(torch.nn.Module):
        def forward(self, x):
            small = x[:, :1, :, ::2, ::2]
            return (small, small, small, small, small)

    grid = plan_tiles((2, 8, 8), TilingConfig(tile=(2, 8, 8), overlap=(0, 0, 0)))
    padded = np.zeros((2, 2, 8, 8), np.float32)
    with pytest.raises(ModelError, match="seg head"):
        list(predict_tiles(Shrinking(), padded, grid, torch.device("cpu")))
    with pytest.raises(ModelError, match="expected the U-Net to return"):
        unpack_output(torch.zeros(1))


def _pair(blobs, shape, centres, z_ratio):
    frame = blobs(shape, centres, sigma_xy=2.5, z_ratio=z_ratio)
    return np.stack([frame, frame]).astype(np.float32)


def test_tiled_and_whole_volume_detections_are_identical(fake_unet, blobs):
    z_ratio = 2.0
    shape = (12, 96, 96)
    rng = np.random.default_rng(3)
    # blobs on a jittered grid, several of them on tile boundaries
    centres = [
        (rng.uniform(3, 9), y + rng.uniform(-2, 2), x + rng.uniform(-2, 2))
        for y in range(10, 90, 16)
        for x in range(10, 90, 16)
    ]
    pair = _pair(blobs, shape, centres, z_ratio)
    model = fake_unet(size_multiple=(1, 4, 4))
    cfg = DetectionConfig(threshold=0.5)
    whole = predict_frame(
        model,
        pair,
        t=0,
        z_ratio=z_ratio,
        detection=cfg,
        tiling=TilingConfig(tile=shape, overlap=(0, 0, 0)),
    ).detections
    assert model.calls == 1
    tiled_cfg = TilingConfig(tile=(8, 48, 48), overlap=(6, 24, 24), pad_to_tile=True)
    assert len(plan_tiles(shape, tiled_cfg, (1, 4, 4))) == 27  # seams on every axis
    tiled = predict_frame(
        model, pair, t=0, z_ratio=z_ratio, detection=cfg, tiling=tiled_cfg
    ).detections
    assert len(whole) == len(centres)
    assert len(tiled) == len(whole)
    np.testing.assert_array_equal(tiled.positions, whole.positions)
    np.testing.assert_array_equal(tiled.embeddings, whole.embeddings)
    np.testing.assert_array_equal(tiled.score, whole.score)
    np.testing.assert_array_equal(tiled.radius, whole.radius)
    np.testing.assert_array_equal(tiled.division, whole.division)


def test_stitched_heads_match_whole_volume_in_the_interior(fake_unet, blobs):
    shape = (8, 64, 64)
    pair = _pair(blobs, shape, [(4, 20, 20), (4, 40, 44)], 1.0)
    model = fake_unet()
    whole = predict_frame(
        model,
        pair,
        t=0,
        z_ratio=1.0,
        tiling=TilingConfig(tile=shape, overlap=(0, 0, 0), heads_dtype="float32"),
        return_heads=True,
    ).heads
    tiled = predict_frame(
        model,
        pair,
        t=0,
        z_ratio=1.0,
        tiling=TilingConfig(
            tile=(8, 32, 32), overlap=(0, 12, 12), heads_dtype="float32", pad_to_tile=True
        ),
        return_heads=True,
    ).heads
    for name in ("seg", "centre", "division", "radius"):
        assert tiled[name].shape == whole[name].shape
        # z has no tiling seams here; compare away from the volume's z faces (zero padding)
        np.testing.assert_allclose(tiled[name][:, 1:-1], whole[name][:, 1:-1], atol=1e-5)


def test_real_unet_tiled_close_to_whole():
    unet_mod = pytest.importorskip("napari_cellect.model.unet")
    torch.manual_seed(0)
    model = unet_mod.UNet3D(unet_mod.unet_preset("small")).eval()
    rng = np.random.default_rng(0)
    shape = (4, 64, 64)
    pair = rng.normal(size=(2, *shape)).astype(np.float32)
    cfg = DetectionConfig(threshold=0.0, foreground_threshold=0.0)
    whole = predict_frame(
        model,
        pair,
        t=0,
        z_ratio=2.0,
        detection=cfg,
        tiling=TilingConfig(tile=shape, overlap=(0, 0, 0)),
    ).detections
    tiled = predict_frame(
        model,
        pair,
        t=0,
        z_ratio=2.0,
        detection=cfg,
        tiling=TilingConfig(tile=(4, 48, 48), overlap=(0, 32, 32)),
    ).detections
    assert len(whole) > 0 and len(tiled) > 0
    # GroupNorm statistics depend on the tile, so only ask that most detections agree
    d = np.linalg.norm(tiled.positions[:, None] - whole.positions[None], axis=2)
    matched = (d.min(axis=1) <= 1.0).mean()
    assert matched >= 0.75  # measured: 0.90


def test_thin_volumes_are_padded_to_the_minimum_depth_centred():
    for pad_to_tile, tile in ((False, (48, 64, 64)), (True, (4, 64, 64))):
        config = TilingConfig(tile=tile, overlap=(0, 16, 16), pad_to_tile=pad_to_tile)
        grid = plan_tiles((1, 40, 40), config, (1, 16, 16), min_shape=(16, 1, 1))
        assert grid.padded_shape[0] == grid.tile_shape[0] == 16
        assert grid.pad_before[0] == 7  # where a training crop puts a single slice
        assert np.all(ownership_count(grid) == 1)
    thick = plan_tiles((30, 40, 40), TilingConfig(), (1, 16, 16), min_shape=(16, 1, 1))
    assert thick.padded_shape[0] == 30 and thick.pad_before[0] == 0
    with pytest.raises(InputError, match="min_shape >= 1"):
        plan_tiles((1, 40, 40), min_shape=(0, 1, 1))


def test_a_2d_frame_is_predicted_as_the_training_crops_showed_it():
    """With ``min_depth`` a single slice is seen between copies of itself, as in a training
    crop of a 2D series (reflect padding of one slice): the heads equal those of the middle
    slice of that crop, and differ from the slice on its own between zero padding."""
    from napari_cellect.model.bundle import ModelBundle

    unet = ModelBundle.random(preset="small", seed=0).unet
    rng = np.random.default_rng(0)
    pair = rng.random((2, 1, 32, 32), dtype=np.float32)
    tiling = TilingConfig(heads_dtype="float32")

    def heads(volume: np.ndarray, min_depth: int) -> dict[str, np.ndarray]:
        return predict_frame(
            unet, volume, t=0, z_ratio=1.0, tiling=tiling, return_heads=True, min_depth=min_depth
        ).heads

    padded = heads(pair, 16)
    crop = heads(np.repeat(pair, 16, axis=1), 1)
    alone = heads(pair, 1)
    for name in ("seg", "centre", "division", "radius"):
        assert padded[name].shape[1] == 1
        np.testing.assert_allclose(padded[name][:, 0], crop[name][:, 7], atol=1e-5)
    assert not np.allclose(alone["seg"], padded["seg"], atol=1e-3)
