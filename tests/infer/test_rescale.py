from __future__ import annotations

import numpy as np
import pytest

from napari_cellect.errors import InputError
from napari_cellect.infer.predict import cache_fingerprint, predict_sequence
from napari_cellect.infer.rescale import (
    detections_to_original,
    resize_yx,
    scaled_shape,
    xy_scale,
    z_scale,
)
from napari_cellect.settings.normalization import NormalizationConfig
from napari_cellect.track.detections import Detections

REFERENCE = 3.0  # the nucleus radius the (fake) model "knows"
CENTRES = np.array([[3.0, 10.0, 8.0], [3.0, 22.0, 20.0]])  # on the model's own scale


def test_scale_is_the_reference_over_the_cell_radius():
    assert xy_scale(None, REFERENCE) == 1.0
    assert xy_scale(12.0, REFERENCE) == pytest.approx(0.25)
    assert xy_scale(1.5, REFERENCE) == pytest.approx(2.0)
    assert xy_scale(REFERENCE * 1.0001, REFERENCE) == 1.0  # no resize for a rounding error


@pytest.mark.parametrize("radius", [0.0, -2.0, float("nan"), float("inf"), "7"])
def test_a_bad_cell_radius_is_refused(radius):
    with pytest.raises(InputError, match="cell_radius"):
        xy_scale(radius, REFERENCE)


def test_a_model_without_a_reference_size_cannot_rescale():
    with pytest.raises(InputError, match="does not record the nucleus size"):
        xy_scale(6.0, None)


def test_resize_gives_the_exact_shape_and_keeps_the_dtype():
    volume = np.random.default_rng(0).random((2, 3, 50, 37)).astype(np.float16)
    out = resize_yx(volume, (3, 21, 90))
    assert out.shape == (2, 3, 21, 90) and out.dtype == np.float16
    assert resize_yx(volume, volume.shape[-3:]) is volume


def test_positions_map_back_onto_the_original_pixel_grid():
    # a centre at pixel c of the original lies at (c + 0.5) * s - 0.5 on a grid resized by s
    original = np.array([[1.0, 10.0, 4.0], [2.0, 0.0, 39.0]])
    s_y, s_x = 0.5, 0.25
    resized = original.copy()
    resized[:, 1] = (original[:, 1] + 0.5) * s_y - 0.5
    resized[:, 2] = (original[:, 2] + 0.5) * s_x - 0.5
    dets = Detections(
        0,
        resized,
        np.zeros((2, 4), np.float32),
        np.array([2.0, 3.0], np.float32),
        np.zeros((2, 2), np.float32),
        np.ones(2, np.float32),
    )
    back = detections_to_original(dets, np.array([1.0, s_y, s_x]))
    np.testing.assert_allclose(back.positions, original)
    np.testing.assert_allclose(back.radius, dets.radius / np.sqrt(s_y * s_x))


@pytest.mark.parametrize("factor", [2.0, 0.5])
def test_images_at_another_magnification_give_the_same_cells(fake_unet, blobs, factor):
    """The same two blobs drawn ``factor`` times larger (in y and x) and predicted with
    ``cell_radius = factor * reference`` are found where they are, with radii ``factor`` times
    the model's own, and the heads come back on the images' grid."""
    shape, zoomed = (6, 32, 32), (6, round(32 * factor), round(32 * factor))
    native = np.stack([blobs(shape, CENTRES, sigma_xy=2.5)] * 2)
    centres = CENTRES.copy()
    centres[:, 1:] = (CENTRES[:, 1:] + 0.5) * factor - 0.5
    # same physical blobs: z keeps its slices, so the z ratio of the zoomed images is factor x
    big = np.stack([blobs(zoomed, centres, sigma_xy=2.5 * factor, z_ratio=factor)] * 2)
    norm = NormalizationConfig(mode="none", reference_radius=REFERENCE)
    heads: dict[int, dict[str, np.ndarray]] = {}

    def run(images, z_ratio, **kw):
        return list(
            predict_sequence(
                images, fake_unet(), z_ratio=z_ratio, device="cpu", normalization=norm, **kw
            )
        )

    reference = run(native, 1.0)[0]
    found = run(
        big, factor, cell_radius=REFERENCE * factor, on_heads=lambda t, h: heads.__setitem__(t, h)
    )[0]
    assert len(found) == len(reference) == 2
    order = np.argsort(found.positions[:, 1])
    np.testing.assert_allclose(found.positions[order], centres, atol=0.5 * max(factor, 1.0))
    np.testing.assert_allclose(
        found.radius[order],
        reference.radius[np.argsort(reference.positions[:, 1])] * factor,
        rtol=0.05,
    )
    assert {k: v.shape[1:] for k, v in heads[0].items()} == {k: zoomed for k in heads[0]}


def test_the_cache_fingerprint_depends_on_the_cell_radius(fake_unet):
    norm = NormalizationConfig(mode="none", reference_radius=REFERENCE)
    model = fake_unet()
    prints = {
        radius: cache_fingerprint(
            model, ["a.tif"], z_ratio=1.0, normalization=norm, cell_radius=radius
        )
        for radius in (None, REFERENCE, 6.0, 9.0)
    }
    assert prints[None] == prints[REFERENCE]  # no resize either way
    assert len({prints[None], prints[6.0], prints[9.0]}) == 3


def test_z_is_shrunk_only_below_the_models_smallest_z_spacing():
    assert z_scale(1.0, 1.0, 20, None) == 1.0  # a model without a minimum never resizes z
    assert z_scale(1.0, 1.0, 1, 2.0) == 1.0  # nor does a 2D frame
    assert z_scale(3.0, 1.0, 20, 2.0) == 1.0
    assert z_scale(1.0, 1.0, 20, 2.0) == pytest.approx(0.5)
    # frames enlarged in y and x for small nuclei: z spacing over the new pixel is 1.4
    assert z_scale(1.0, 1.4, 20, 2.0) == pytest.approx(0.7)
    # frames shrunk in y and x for large nuclei: 6 x 0.25 = 1.5 -> 0.75
    assert z_scale(6.0, 0.25, 20, 2.0) == pytest.approx(0.75)
    assert scaled_shape((20, 64, 48), 1.5, 0.5) == (10, 96, 72)
    with pytest.raises(InputError, match="min_z_ratio: expected a number > 0 or None"):
        NormalizationConfig(min_z_ratio=0.0)


def test_a_stack_finer_in_z_than_the_model_knows_is_shrunk_in_z(fake_unet, blobs):
    """An isotropic stack (z ratio 1) for a model that knows z spacings of 2 and more: the U-Net
    sees half the slices, and the cells are found where they are in the stack's own slices."""
    shape = (12, 32, 32)
    centres = np.array([[3.0, 10.0, 8.0], [8.0, 22.0, 20.0]])
    frame = blobs(shape, centres, sigma_xy=2.5, z_ratio=1.0)
    images = np.stack([frame, frame])
    model = fake_unet()

    def run(min_z_ratio):
        norm = NormalizationConfig(mode="none", reference_radius=REFERENCE, min_z_ratio=min_z_ratio)
        dets = list(predict_sequence(images, model, z_ratio=1.0, device="cpu", normalization=norm))
        return dets[0]

    found = run(2.0)
    assert model.inputs[-1].shape[2] == 6
    order = np.argsort(found.positions[:, 0])
    assert len(found) == 2
    np.testing.assert_allclose(found.positions[order], centres, atol=0.6)
    run(None)
    assert model.inputs[-1].shape[2] == 12
