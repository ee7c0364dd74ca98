"""The nucleus radius estimated from the images (``infer/radius_estimate.py``): within 20 % of the
true median radius in 2D and 3D, anisotropic, small, large, dim and crowded regimes, on images of
our synthetic generator and on blobs drawn here (elongated, irregular, with a background
gradient); no size, and a warning, for frames without nuclei."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from scipy import ndimage

from napari_cellect.data.synthetic import PRESETS, generate
from napari_cellect.infer.radius_estimate import estimate_radius, resolve_cell_radius

REFERENCE = 5.6


def drawn_blobs(
    radius: float,
    *,
    depth: int = 1,
    z_ratio: float = 1.0,
    side: int = 192,
    spacing: float = 3.0,
    elongation: float = 1.5,
    irregular: float = 0.15,
    contrast: float = 400.0,
    noise: float = 10.0,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """One (Z, Y, X) frame of elongated, irregular blobs (xy area that of a disk of each blob's
    radius) on a jittered grid ``spacing`` radii apart, blurred (xy 1 px, z 2 px physical), on a
    background gradient with Gaussian noise; and the median radius."""
    rng = np.random.default_rng(seed)
    image = np.zeros((depth, side, side), np.float32)
    zz, yy, xx = np.meshgrid(
        np.arange(depth) * z_ratio, np.arange(side), np.arange(side), indexing="ij"
    )
    step = spacing * radius
    radii = []
    for cy in np.arange(step / 2, side, step):
        for cx in np.arange(step / 2, side, step):
            r = radius * rng.uniform(0.85, 1.15)
            radii.append(r)
            y, x = cy + rng.uniform(-0.1, 0.1) * step, cx + rng.uniform(-0.1, 0.1) * step
            z = rng.uniform(0.3, 0.7) * (depth - 1) * z_ratio
            angle, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
            a, b = r * np.sqrt(elongation), r / np.sqrt(elongation)  # area pi r^2
            u = (yy - y) * np.cos(angle) + (xx - x) * np.sin(angle)
            v = -(yy - y) * np.sin(angle) + (xx - x) * np.cos(angle)
            theta = np.arctan2(v, u)
            wobble = 1 + irregular * np.cos(3 * theta + phase)
            inside = (u / a) ** 2 + (v / b) ** 2 + ((zz - z) / r) ** 2 <= wobble**2
            image[inside] = rng.uniform(0.7, 1.0)
    image = ndimage.gaussian_filter(image, (2.0 / z_ratio if depth > 1 else 0, 1.0, 1.0))
    gradient = np.linspace(50, 150, side, dtype=np.float32)[None, None, :]
    frame = 100 + gradient + contrast * image + rng.normal(0, noise, image.shape)
    return frame.astype(np.float32), float(np.median(radii))


def synthetic(radius: float, **changes) -> tuple[np.ndarray, float, float]:
    config = dataclasses.replace(
        PRESETS["default"], frames=2, seed=305, radius_range=(radius * 0.9, radius * 1.1), **changes
    )
    sequence = generate(config)
    return sequence.images, float(np.median(sequence.graph["radius"])), config.z_ratio


def assert_close(estimate, truth: float) -> None:
    assert estimate.radius is not None, estimate.reason
    assert abs(estimate.radius / truth - 1) <= 0.2, (estimate.radius, truth)


@pytest.mark.parametrize("radius", [2.5, 6.0, 13.0, 28.0])
def test_drawn_2d_blobs_from_small_to_large(radius):
    frame, truth = drawn_blobs(radius, side=int(min(512, 14 * radius + 64)))
    assert_close(estimate_radius(frame[None]), truth)


@pytest.mark.parametrize(
    ("depth", "z_ratio", "radius"), [(32, 1.0, 4.0), (16, 4.0, 10.0), (6, 10.0, 8.0)]
)
def test_drawn_3d_blobs_anisotropic(depth, z_ratio, radius):
    frame, truth = drawn_blobs(radius, depth=depth, z_ratio=z_ratio, side=128, elongation=1.3)
    assert_close(estimate_radius(frame[None], z_ratio), truth)


def test_dim_blobs_close_to_the_noise():
    frame, truth = drawn_blobs(6.0, contrast=60.0, noise=12.0)
    assert_close(estimate_radius(frame[None]), truth)


def test_crowded_blobs_that_touch():
    frame, truth = drawn_blobs(6.0, spacing=2.05, elongation=1.2, irregular=0.05)
    assert_close(estimate_radius(frame[None]), truth)


@pytest.mark.parametrize(
    ("radius", "changes"),
    [
        (3.0, dict(shape=(1, 128, 128), n_cells=60)),
        (12.0, dict(shape=(1, 256, 256), n_cells=25)),
        (12.0, dict(shape=(12, 160, 160), z_ratio=5.0, n_cells=15)),
        (6.0, dict(shape=(24, 96, 96), z_ratio=2.0, n_cells=60, preset_dense=True)),
    ],
)
def test_synthetic_sequences(radius, changes):
    changes = dict(changes)
    if changes.pop("preset_dense", False):
        changes["max_packing"] = 0.45
    images, truth, z_ratio = synthetic(radius, **changes)
    assert_close(estimate_radius(np.stack(images), z_ratio), truth)


def bad_frames() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:256, 0:256]
    huge = 1000.0 * ((yy - 128) ** 2 + (xx - 128) ** 2 < 110**2)
    return {
        "empty": np.full((1, 256, 256), 100.0),
        "noise": rng.normal(100, 10, (1, 256, 256)),
        "noise 3d": rng.normal(100, 10, (16, 96, 96)),
        "saturated": np.full((1, 256, 256), 65535.0),
        "one huge object": ndimage.gaussian_filter(huge, 1.0)[None]
        + rng.normal(0, 10, (1, 256, 256)),
    }


@pytest.mark.parametrize("name", list(bad_frames()))
def test_no_nuclei_gives_no_size_a_warning_and_the_model_radius(name, caplog):
    frame = bad_frames()[name]
    estimate = estimate_radius(frame[None])
    assert estimate.radius is None and estimate.reason
    with caplog.at_level(logging.WARNING):
        assert resolve_cell_radius("auto", frame[None], 1.0, REFERENCE) is None
    assert "could not find a nucleus size" in caplog.text and "(cell_radius=R)" in caplog.text


def test_an_estimate_near_the_model_radius_leaves_the_frames_alone_and_a_far_one_resizes(caplog):
    near, _ = drawn_blobs(REFERENCE * 1.1)
    far, truth = drawn_blobs(13.0, side=256)
    with caplog.at_level(logging.INFO):
        assert resolve_cell_radius("auto", near[None], 1.0, REFERENCE) is None
        assert "used as they are" in caplog.text
        radius = resolve_cell_radius("auto", far[None], 1.0, REFERENCE)
    assert abs(radius / truth - 1) <= 0.2
    assert "frames are resized by" in caplog.text and "(cell_radius=R overrides it)" in caplog.text


def test_given_radii_pass_through_and_nonsense_is_refused():
    frame = np.zeros((1, 1, 8, 8))
    assert resolve_cell_radius(9.0, frame, 1.0, REFERENCE) == 9.0
    assert resolve_cell_radius(None, frame, 1.0, REFERENCE) is None
    assert resolve_cell_radius("auto", frame, 1.0, None) is None  # a model without a size
    with pytest.raises(ValueError, match="'auto' or None"):
        resolve_cell_radius("big", frame, 1.0, REFERENCE)
