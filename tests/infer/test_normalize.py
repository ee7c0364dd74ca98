from __future__ import annotations

import logging

import numpy as np
import pytest

from napari_cellect.errors import InputError
from napari_cellect.infer.normalize import has_contrast, normalize_pair
from napari_cellect.settings.normalization import NormalizationConfig


def test_percentiles_map_to_zero_and_one():
    rng = np.random.default_rng(0)
    pair = rng.uniform(100, 1100, size=(2, 4, 32, 32)).astype(np.uint16)
    before = pair.copy()
    out = normalize_pair(pair, NormalizationConfig(low_percentile=1, high_percentile=99))
    assert out.dtype == np.float32 and out.shape == pair.shape
    np.testing.assert_array_equal(pair, before)  # input untouched
    assert np.percentile(out, 1) == pytest.approx(0.0, abs=1e-3)
    assert np.percentile(out, 99) == pytest.approx(1.0, abs=1e-3)
    clipped = normalize_pair(pair, NormalizationConfig(clip_output=True))
    assert clipped.min() == 0.0 and clipped.max() == 1.0


def test_frames_of_a_pair_share_statistics():
    pair = np.stack([np.linspace(0, 100, 4096), np.linspace(0, 200, 4096)]).reshape(2, 1, 64, 64)
    out = normalize_pair(pair, NormalizationConfig(low_percentile=0, high_percentile=100))
    assert out[1].max() == pytest.approx(1.0) and out[0].max() == pytest.approx(0.5)


def test_subsampled_percentiles_are_close_to_exact():
    rng = np.random.default_rng(1)
    pair = rng.gamma(2.0, 100.0, size=(2, 8, 128, 128)).astype(np.float32)
    cfg = NormalizationConfig(max_samples=10_000)
    out = normalize_pair(pair, cfg)
    lo, hi = np.percentile(pair, [cfg.low_percentile, cfg.high_percentile])
    exact = (pair - lo) / (hi - lo)
    np.testing.assert_allclose(out, exact, rtol=0.03, atol=0.01)


def test_nan_is_treated_as_low_with_a_warning(caplog):
    pair = np.tile(np.arange(100, dtype=np.float32), (2, 1, 1, 1))
    pair[0, 0, 0, 50] = np.nan
    pair[1, 0, 0, 10] = np.inf
    with caplog.at_level(logging.WARNING):
        out = normalize_pair(pair, NormalizationConfig(low_percentile=0, high_percentile=100))
    assert "2 of 200 voxels are NaN or infinite" in caplog.text
    assert np.all(np.isfinite(out))
    assert out[0, 0, 0, 50] == 0.0 and out[1, 0, 0, 10] == 0.0


def test_all_nan_and_constant_frames_become_zeros(caplog):
    with np.errstate(all="raise"):  # no division by zero anywhere
        nan = normalize_pair(np.full((2, 2, 4, 4), np.nan, np.float32))
        const = normalize_pair(np.full((2, 2, 4, 4), 7, np.uint16))
    assert np.all(nan == 0) and np.all(const == 0)


def test_sparse_bright_cell_is_not_lost():
    pair = np.zeros((2, 4, 64, 64), np.float32)
    pair[0, 2, 30:32, 30:32] = 500.0  # 4 voxels: far above the 99.8th percentile
    out = normalize_pair(pair, NormalizationConfig(max_samples=100))
    assert out.max() == pytest.approx(1.0) and out.min() == 0.0


def test_cellect_log_mode():
    pair = np.array([0, 0, 120, 200, 70000, np.nan], np.float32).reshape(2, 1, 1, 3)
    out = normalize_pair(pair, NormalizationConfig(mode="cellect-log"))
    m = 120.0  # smallest positive value
    expected = np.log1p(np.array([m, m, 120, 200, 65535, m]) - m + 1900).reshape(2, 1, 1, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    original = normalize_pair(
        pair, NormalizationConfig(mode="cellect-log", subtract_minimum=False, enhance=2.0)
    )
    assert original[0, 0, 0, 2] == pytest.approx(np.log1p(2 * 120 + 1900))
    zeroed = normalize_pair(pair, NormalizationConfig(mode="cellect-log", zero_below=150))
    assert zeroed[0, 0, 0, 2] == pytest.approx(np.log1p(1900))  # 120 -> 0 -> raised to 200


def test_none_mode_keeps_values():
    pair = np.array([[-1.5, 2.0], [np.nan, 3.0]], np.float32).reshape(2, 1, 1, 2)
    out = normalize_pair(pair, NormalizationConfig(mode="none"))
    np.testing.assert_array_equal(out.reshape(-1), [-1.5, 2.0, 0.0, 3.0])


def test_config_validation():
    with pytest.raises(InputError, match="mode"):
        NormalizationConfig(mode="zscore")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="low_percentile"):
        NormalizationConfig(low_percentile=50, high_percentile=10)
    with pytest.raises(InputError, match="clip_low"):
        NormalizationConfig(clip_low=10, clip_high=1)
    with pytest.raises(InputError, match="non-empty"):
        normalize_pair(np.zeros((2, 0, 4, 4)))


def test_has_contrast():
    assert has_contrast(np.array([0.0, 1.0]))
    assert not has_contrast(np.zeros(5))
    assert not has_contrast(np.array([np.nan, np.nan]))
    assert not has_contrast(np.array([2.0, np.nan, 2.0]))
    assert has_contrast(np.array([1, 2], np.uint8))
