import numpy as np
import pytest

from napari_cellect.errors import InputError
from napari_cellect.segment import paint_spheres, segment_frame


def test_each_foreground_blob_goes_to_its_nearest_cell():
    fg = np.zeros((5, 40, 40), bool)
    fg[1:4, 5:15, 5:15] = True
    fg[1:4, 20:30, 20:30] = True
    fg[1:4, 36:39, 1:3] = True  # a blob far from every cell stays background
    out = segment_frame(
        fg, np.array([[2, 10, 10], [2, 25, 25]]), np.array([6.0, 6.0]), np.array([7, 9])
    )
    assert out.dtype == np.uint16
    assert set(np.unique(out[1:4, 5:15, 5:15])) == {7}
    assert set(np.unique(out[1:4, 20:30, 20:30])) == {9}
    assert not out[1:4, 36:39, 1:3].any()
    assert not out[~fg].any()


def test_touching_nuclei_split_between_centres_with_anisotropy():
    fg = np.zeros((6, 20, 40), bool)
    fg[:, 5:15, 5:35] = True
    out = segment_frame(
        fg,
        np.array([[2.5, 10, 12], [2.5, 10, 28]]),
        np.array([10.0, 10.0]),
        np.array([1, 2]),
        z_ratio=3.0,
    )
    assert (out[:, :, :20][fg[:, :, :20]] == 1).all()
    assert (out[:, :, 21:][fg[:, :, 21:]] == 2).all()


def test_empty_inputs_and_bad_labels():
    fg = np.ones((1, 8, 8), bool)
    assert not segment_frame(fg, np.zeros((0, 3)), np.zeros(0), np.zeros(0, int)).any()
    with pytest.raises(InputError, match="positive"):
        segment_frame(fg, np.array([[0, 4, 4]]), np.array([2.0]), np.array([0]))
    with pytest.raises(InputError, match=r"\(Z, Y, X\)"):
        segment_frame(np.ones((8, 8)), np.array([[0, 4, 4]]), np.array([2.0]), np.array([1]))


def test_large_label_values_use_uint32():
    out = segment_frame(
        np.ones((1, 4, 4), bool), np.array([[0, 2, 2]]), np.array([3.0]), np.array([70000])
    )
    assert out.dtype == np.uint32 and out.max() == 70000


def test_paint_spheres_respects_radius_and_z_ratio():
    out = paint_spheres(
        (9, 30, 30), np.array([[4.0, 15, 15]]), np.array([6.0]), np.array([3]), z_ratio=3.0
    )
    assert out[4, 15, 15] == 3 and out[4, 15, 20] == 3 and out[4, 15, 22] == 0
    assert out[6, 15, 15] == 3 and out[7, 15, 15] == 0  # 6 px / z_ratio 3 = 2 slices
