from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_cellect.errors import InputError
from napari_cellect.infer.detect import (
    centre_logit,
    centre_probability,
    detect,
    ellipsoid_offsets,
    find_detections,
    foreground_mask,
    non_max_suppression,
)
from napari_cellect.settings.conversion import config_from_dict
from napari_cellect.settings.detection import DetectionConfig

FAR = -1.0e4  # a logit that never wins a softmax


def centre_from_probability(p: np.ndarray) -> np.ndarray:
    """5-level centre logits whose softmax top-level probability is exactly ``p``."""
    p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    lower = np.full(p.shape, FAR)
    return np.stack([np.log1p(-p), lower, lower, lower, np.log(p)]).astype(np.float32)


def seg_from_foreground(fg: np.ndarray, other: np.ndarray | None = None) -> np.ndarray:
    """3-class logits: confident background where not ``fg``, class 2 where ``other``."""
    bg = np.where(fg, -5.0, 5.0)
    nucleus = np.where(fg, 5.0, -5.0)
    oth = np.full(fg.shape, -5.0) if other is None else np.where(other, 9.0, -5.0)
    return np.stack([bg, nucleus, oth]).astype(np.float32)


def heads_for(p: np.ndarray, **extra) -> dict[str, np.ndarray]:
    return {"centre": centre_from_probability(p), **extra}


def nearest_errors(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(found[:, None, :] - truth[None, :, :], axis=2)
    return d.min(axis=0)


# --------------------------------------------------------------------------- config


def test_config_validation_and_coercion():
    with pytest.raises(InputError, match="threshold"):
        DetectionConfig(threshold=1.5)
    with pytest.raises(InputError, match="centre_mode"):
        DetectionConfig(centre_mode="argmax")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="peak_radius"):
        DetectionConfig(peak_radius=-1)
    assert DetectionConfig(border_margin=2).border_margin == (2, 2, 2)
    assert DetectionConfig(threshold=0.0).threshold == 0.0  # the original had no threshold


def test_config_from_saved_settings():
    assert config_from_dict(DetectionConfig, {"threshold": 0.7}).threshold == 0.7
    saved = config_from_dict(DetectionConfig, {"border_margin": [1, 2, 3]})  # JSON has lists
    assert saved.border_margin == (1, 2, 3)
    with pytest.raises(InputError, match="unknown"):
        config_from_dict(DetectionConfig, {"treshold": 0.5}, strict=True)


# --------------------------------------------------------------------------- maps


def test_centre_logit_modes():
    logits = np.zeros((5, 1, 1, 2), np.float32)
    logits[:, 0, 0, 0] = [0.0, 1.0, 2.0, 0.5, 3.0]
    logits[:, 0, 0, 1] = [4.0, 0.0, 0.0, 0.0, 1.0]
    soft = centre_probability(logits, "softmax")[0, 0]
    e = np.exp(logits[:, 0, 0, 0])
    assert soft[0] == pytest.approx(e[4] / e.sum(), rel=1e-5)
    ordinal = centre_probability(logits, "ordinal")[0, 0]
    assert ordinal[0] == pytest.approx(1 / (1 + math.exp(-(3.0 - 2.0))), rel=1e-5)
    assert ordinal[1] == pytest.approx(1 / (1 + math.exp(-(1.0 - 4.0))), rel=1e-5)
    # the logit map does not saturate where the probability does
    big = np.zeros((5, 1, 1, 2), np.float32)
    big[4] = [[[40.0, 60.0]]]
    lg = centre_logit(big)
    assert lg[0, 0, 1] > lg[0, 0, 0] > 30
    # torch input gives the same numbers, also with the levels adjacent in memory (the U-Net's
    # channels-last output), which is reduced by torch rather than numpy
    np.testing.assert_allclose(centre_logit(torch.from_numpy(logits)), centre_logit(logits))
    levels_last = torch.from_numpy(np.ascontiguousarray(np.moveaxis(logits, 0, -1)))
    levels_last = levels_last.permute(3, 0, 1, 2)
    assert levels_last.stride(0) == 1
    for mode in ("softmax", "ordinal"):
        np.testing.assert_allclose(
            centre_logit(levels_last, mode), centre_logit(logits, mode), rtol=1e-6
        )


def test_the_centre_logit_of_a_tile_is_computed_only_where_the_data_is():
    """A 2D frame padded to the model's depth: peaks, features and positions are those of the
    unpadded maps (the padding's logits are never computed, and never a peak)."""
    rng = np.random.default_rng(4)
    p = np.zeros((1, 24, 24))
    for y, x in [(5, 6), (14, 17), (20, 4)]:
        yy, xx = np.mgrid[:24, :24]
        p[0] = np.maximum(p[0], np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 6.0))
    heads = heads_for(p, radius=rng.random((1, 1, 24, 24)).astype(np.float32) + 2)
    padded = {
        k: np.pad(v, [(0, 0), (3, 4), (0, 0), (0, 0)], constant_values=9.0)
        for k, v in heads.items()
    }
    cfg = DetectionConfig(threshold=0.5)
    alone = find_detections(heads, z_ratio=1.0, config=cfg)
    valid = (slice(3, 4), slice(None), slice(None))
    tiled = find_detections(padded, z_ratio=1.0, config=cfg, region=valid, valid=valid)
    assert len(alone) == 3
    np.testing.assert_array_equal(tiled.positions - [3, 0, 0], alone.positions)
    np.testing.assert_array_equal(tiled.radius, alone.radius)
    np.testing.assert_array_equal(tiled.score, alone.score)


def test_foreground_mask_threshold_and_other_class():
    seg = np.zeros((3, 1, 1, 3), np.float32)
    seg[:, 0, 0, 0] = [3.0, 0.0, 0.0]  # background
    seg[:, 0, 0, 1] = [0.0, 3.0, 0.0]  # nucleus
    seg[:, 0, 0, 2] = [0.0, 0.0, 3.0]  # other
    assert foreground_mask(seg)[0, 0].tolist() == [False, True, False]
    assert foreground_mask(seg, include_other_class=True)[0, 0].tolist() == [False, True, True]
    assert foreground_mask(seg, threshold=0.99)[0, 0].tolist() == [False, False, False]


def test_ellipsoid_offsets_are_physical():
    assert len(ellipsoid_offsets(2.0, 1.0)) == 33  # lattice points in a ball of radius 2
    flat = ellipsoid_offsets(2.0, 4.0)  # z semi-axis 0.5 slice: a single disc
    assert set(flat[:, 0]) == {0} and len(flat) == 13
    thick = ellipsoid_offsets(2.0, 4.0, min_z=1.0)
    assert len(thick) == 15 and {tuple(o) for o in thick} >= {(1, 0, 0), (-1, 0, 0)}
    assert ellipsoid_offsets(0.0, 5.0).tolist() == [[0, 0, 0]]
    fine_z = ellipsoid_offsets(1.0, 0.5)  # z finer than xy: 2 slices per pixel
    assert fine_z[:, 0].max() == 2
    with pytest.raises(InputError, match="z_ratio"):
        ellipsoid_offsets(1.0, 0.0)


# --------------------------------------------------------------------------- peaks


def test_finds_anisotropic_blobs_with_subvoxel_positions(blobs):
    z_ratio = 3.0
    truth = np.array([[3.3, 10.6, 12.2], [6.0, 30.0, 35.5], [9.0, 20.4, 40.0]])
    p = 0.9 * blobs((12, 48, 48), truth, sigma_xy=3.0, z_ratio=z_ratio)
    dets = detect(heads_for(p), z_ratio=z_ratio, config=DetectionConfig(threshold=0.5))
    assert len(dets) == 3
    errors = nearest_errors(dets.positions, truth)
    rounding = nearest_errors(np.round(truth), truth)
    assert errors.max() < 0.15
    assert errors.sum() < rounding.sum()  # the refinement beats voxel positions
    assert np.all(dets.score >= 0.5) and np.all(dets.score <= 0.9 + 1e-6)
    # sorted by position (z, y, x)
    assert np.all(np.diff(dets.positions[:, 0]) >= 0)


def test_threshold_is_respected(blobs):
    truth = [[4, 12, 12], [4, 30, 30]]
    p = blobs((8, 44, 44), truth, sigma_xy=2.5, amplitude=[0.9, 0.45])
    strict = detect(heads_for(p), z_ratio=1.0, config=DetectionConfig(threshold=0.5))
    assert len(strict) == 1 and np.allclose(strict.positions[0], truth[0], atol=0.1)
    loose = detect(heads_for(p), z_ratio=1.0, config=DetectionConfig(threshold=0.3))
    assert len(loose) == 2 and loose.score.min() == pytest.approx(0.45, abs=0.01)


def test_plateau_gives_one_detection():
    p = np.full((9, 30, 30), 0.01, np.float32)
    p[3:6, 10:17, 12:19] = 0.8  # a flat box, exactly equal values
    cfg = DetectionConfig(threshold=0.5, nms_radius_factor=0.0, min_nms_radius=0.0)
    dets = detect(heads_for(p), z_ratio=1.0, config=cfg)
    assert len(dets) == 1
    z, y, x = dets.positions[0]
    assert 3 <= z <= 5 and 10 <= y <= 16 and 12 <= x <= 18


def test_foreground_masks_peaks(blobs):
    truth = [[4, 12, 12], [4, 30, 30]]
    p = 0.9 * blobs((8, 44, 44), truth, sigma_xy=2.5)
    fg = np.zeros(p.shape, bool)
    fg[:, :22, :22] = True  # only the first blob lies in the foreground
    dets = detect(heads_for(p, seg=seg_from_foreground(fg)), z_ratio=1.0)
    assert len(dets) == 1 and np.allclose(dets.positions[0], truth[0], atol=0.1)
    # a background voxel right next to the peak: excluded by the foreground ball...
    fg2 = np.ones(p.shape, bool)
    fg2[4, 12, 13] = False
    heads = heads_for(p, seg=seg_from_foreground(fg2))
    assert len(detect(heads, z_ratio=1.0)) == 1
    # ...but not when the ball is the voxel itself
    assert len(detect(heads, z_ratio=1.0, config=DetectionConfig(foreground_radius=0.0))) == 2


def test_other_class_is_excluded_unless_asked(blobs):
    truth = [[4, 12, 12], [4, 30, 30]]
    p = 0.9 * blobs((8, 44, 44), truth, sigma_xy=2.5)
    other = np.zeros(p.shape, bool)
    other[:, 25:35, 25:35] = True  # the second blob is a polar body
    heads = heads_for(p, seg=seg_from_foreground(np.ones(p.shape, bool), other))
    assert len(detect(heads, z_ratio=1.0)) == 1
    assert len(detect(heads, z_ratio=1.0, config=DetectionConfig(include_other_class=True))) == 2


def test_z_equals_one(blobs):
    truth = [[0, 8, 9], [0, 20, 22]]
    p = 0.9 * blobs((1, 32, 32), truth, sigma_xy=2.0)
    dets = detect(heads_for(p), z_ratio=5.0)
    assert len(dets) == 2
    assert np.all(dets.positions[:, 0] == 0)
    assert nearest_errors(dets.positions, np.array(truth, float)).max() < 0.1


def test_border_margin_and_min_radius(blobs):
    truth = [[4, 1, 20], [4, 20, 20]]
    p = 0.9 * blobs((8, 40, 40), truth, sigma_xy=2.0)
    radius = np.full((1, *p.shape), 6.0, np.float32)
    radius[0, :, 15:25, 15:25] = 1.0
    heads = heads_for(p, radius=radius)
    assert len(detect(heads, z_ratio=1.0)) == 2
    near_border = detect(heads, z_ratio=1.0, config=DetectionConfig(border_margin=(0, 2, 2)))
    assert len(near_border) == 1 and near_border.positions[0, 1] > 10
    big_only = detect(heads, z_ratio=1.0, config=DetectionConfig(min_radius=2.0))
    assert len(big_only) == 1 and big_only.radius[0] == 6.0


def test_features_are_read_at_the_peak_voxel(blobs):
    truth = np.array([[2, 10, 12], [5, 25, 30]])
    shape = (8, 40, 40)
    p = 0.9 * blobs(shape, truth, sigma_xy=2.0)
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    embedding = np.stack([z, y, x, z + y + x]).astype(np.float32)
    division = np.stack([np.full(shape, 2.0), np.full(shape, -1.0)]).astype(np.float32)
    radius = (y / 10.0)[None].astype(np.float32)
    heads = heads_for(p, embedding=embedding, division=division, radius=radius)
    dets = detect(heads, z_ratio=1.0)
    assert len(dets) == 2
    np.testing.assert_array_equal(dets.embeddings[:, :3], truth)
    np.testing.assert_allclose(dets.radius, truth[:, 1] / 10.0, rtol=1e-6)
    np.testing.assert_allclose(dets.division[:, 0], 1 / (1 + np.exp(-2.0)), rtol=1e-6)
    np.testing.assert_allclose(dets.division[:, 1], 1 / (1 + np.exp(1.0)), rtol=1e-6)
    # torch heads give the same result
    tdets = detect({k: torch.from_numpy(v) for k, v in heads.items()}, z_ratio=1.0)
    np.testing.assert_array_equal(tdets.positions, dets.positions)
    np.testing.assert_array_equal(tdets.embeddings, dets.embeddings)


def test_region_and_origin(blobs):
    truth = [[4, 10, 10], [4, 10, 30]]
    p = 0.9 * blobs((8, 20, 40), truth, sigma_xy=2.0)
    part = find_detections(
        heads_for(p),
        z_ratio=1.0,
        region=(slice(None), slice(None), slice(20, 40)),
        origin=(100, 0, 5),
    )
    assert len(part) == 1
    np.testing.assert_allclose(part.positions[0], [104, 10, 35], atol=0.1)
    assert part.embeddings.shape == (1, 0)


def test_empty_map_gives_no_detections():
    dets = detect(heads_for(np.zeros((4, 16, 16), np.float32)), z_ratio=2.0)
    assert len(dets) == 0 and dets.positions.shape == (0, 3)


# --------------------------------------------------------------------------- NMS


def test_nms_uses_scaled_space_and_predicted_radius():
    pos = np.array([[0, 0, 0], [0, 0, 2.5], [0, 0, 10.0]])
    score = np.array([0.9, 0.8, 0.7])
    cfg = DetectionConfig(nms_radius_factor=0.6, min_nms_radius=2.0)
    radius5 = np.full(3, 5.0)  # reach max(2, 3) = 3
    assert non_max_suppression(pos, score, radius5, z_ratio=1.0, config=cfg).tolist() == [0, 2]
    radius20 = np.full(3, 20.0)  # reach 12
    assert non_max_suppression(pos, score, radius20, z_ratio=1.0, config=cfg).tolist() == [0]
    stacked = np.array([[0, 5, 5], [1, 5, 5.0]])  # one slice apart
    two = non_max_suppression(stacked, score[:2], radius5[:2], z_ratio=5.0, config=cfg)
    one = non_max_suppression(stacked, score[:2], radius5[:2], z_ratio=1.0, config=cfg)
    assert two.tolist() == [0, 1] and one.tolist() == [0]


def test_nms_keeps_the_best_and_breaks_ties_by_position():
    pos = np.array([[0, 0, 3.0], [0, 0, 0.0], [0, 0, 1.5]])
    cfg = DetectionConfig(nms_radius_factor=0.0, min_nms_radius=2.0)
    keep = non_max_suppression(pos, np.array([0.5, 0.5, 0.9]), np.ones(3), z_ratio=1.0, config=cfg)
    assert keep.tolist() == [2]
    tie = non_max_suppression(pos, np.full(3, 0.5), np.ones(3), z_ratio=1.0, config=cfg)
    assert tie.tolist() == [0, 1]  # (0,0,0) is visited first and removes (0,0,1.5)
    shuffled = non_max_suppression(pos[::-1], np.full(3, 0.5), np.ones(3), z_ratio=1.0, config=cfg)
    assert sorted(pos[::-1][shuffled].tolist()) == sorted(pos[tie].tolist())
