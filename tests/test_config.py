"""Tests of the configuration dataclasses (``napari_cellect.config``): conversion and validation.

Saving and loading them in a model bundle is tested in tests/model/test_bundle.py.
"""

from __future__ import annotations

import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from napari_cellect import config as cfg
from napari_cellect.errors import InputError

SECTIONS = (
    (cfg.DetectionConfig, "detection", "threshold", 0.7),
    (cfg.MergeConfig, "merge", "k", 3),
    (cfg.LinkingConfig, "link", "link_threshold", 0.2),
    (cfg.NormalizationConfig, "normalization", "high_percentile", 99.0),
    (cfg.TilingConfig, "tiling", "pad_mode", "edge"),
)


@pytest.mark.parametrize(("cls", "section", "name", "value"), SECTIONS)
def test_from_any_accepts_every_form(cls, section, name, value):
    changed = cls(**{name: value})
    assert cls.from_any(None) == cls()
    assert cls.from_any(changed) is changed
    assert cls.from_any({name: value}) == changed
    assert cls.from_any({section: {name: value}}) == changed  # a saved TrackingConfig dict
    assert cls.from_any(SimpleNamespace(**{section: changed})) == changed  # bundle, thresholds
    with pytest.raises(InputError, match=f"found unknown {name}x"):
        cls.from_any({f"{name}x": value})


def test_from_any_reads_objects_with_the_same_fields():
    detection = SimpleNamespace(threshold=0.3, min_nms_radius=6.0, unrelated=1)
    found = cfg.DetectionConfig.from_any(detection)
    assert (found.threshold, found.min_nms_radius, found.peak_radius) == (0.3, 6.0, 2.0)
    assert cfg.LinkingConfig.from_any(cfg.TrackingConfig()) == cfg.LinkingConfig()
    with pytest.raises(InputError, match="expected a MergeConfig, a mapping"):
        cfg.MergeConfig.from_any(object())
    with pytest.raises(InputError, match="found str"):
        cfg.DetectionConfig.from_any("softmax")


def test_normalization_from_a_mode_string_and_only_objects_with_a_mode():
    assert cfg.NormalizationConfig.from_any("cellect-log").mode == "cellect-log"
    bundle_like = SimpleNamespace(normalization=cfg.NormalizationConfig(mode="none"))
    assert cfg.NormalizationConfig.from_any(bundle_like).mode == "none"
    with pytest.raises(InputError, match="normalisation settings"):
        cfg.NormalizationConfig.from_any(SimpleNamespace(offset=1000.0))  # no mode
    with pytest.raises(InputError, match="mode must be one of"):
        cfg.NormalizationConfig.from_any("zscore")


def test_tiling_from_a_tile_shape_keeps_a_valid_overlap():
    default = cfg.TilingConfig()
    tiled = cfg.TilingConfig.from_any((16, 64, 64))
    assert tiled.tile == (16, 64, 64) and tiled.overlap == default.overlap
    assert cfg.TilingConfig.from_any(8).overlap == (7, 7, 7)
    assert cfg.TilingConfig(tile=[8, 32, 32], overlap=np.array([2, 8, 8])).overlap == (2, 8, 8)
    with pytest.raises(InputError, match="tile must be 3 integers"):
        cfg.TilingConfig.from_any((8, 8))


def test_integers_are_stored_as_python_ints_and_bools_refused():
    merge = cfg.MergeConfig(k=np.int64(4))
    assert merge.k == 4 and type(merge.k) is int
    assert type(cfg.NormalizationConfig(max_samples=np.int32(10)).max_samples) is int
    with pytest.raises(InputError, match="k must be an integer >= 1"):
        cfg.LinkingConfig(k=True)
    with pytest.raises(InputError, match="max_samples must be an integer >= 1"):
        cfg.NormalizationConfig(max_samples=0)
    with pytest.raises(InputError, match="min_depth must be an integer >= 1, found 0"):
        cfg.NormalizationConfig(min_depth=0)
    # settings saved before min_depth existed: no z padding, as those models were run
    assert cfg.NormalizationConfig.from_any({"mode": "percentile"}).min_depth == 1


def test_distances_reject_nan_and_detection_radii_reject_infinity():
    with pytest.raises(InputError, match="max_distance_floor must be >= 0"):
        cfg.MergeConfig(max_distance_floor=math.nan)
    with pytest.raises(InputError, match="gap_cost must be >= 0"):
        cfg.LinkingConfig(gap_cost=math.nan)
    assert cfg.LinkingConfig(max_distance=math.inf).max_distance == math.inf  # no hard cap
    with pytest.raises(InputError, match="peak_radius must be a finite number >= 0"):
        cfg.DetectionConfig(peak_radius=math.inf)
    with pytest.raises(InputError, match=r"foreground_threshold must be in \[0, 1\]"):
        cfg.DetectionConfig(foreground_threshold=math.nan)


def test_border_margin_forms():
    assert cfg.DetectionConfig(border_margin=2).border_margin == (2, 2, 2)
    assert cfg.DetectionConfig(border_margin=[0, 1, 1]).border_margin == (0, 1, 1)
    with pytest.raises(InputError, match="border_margin must be 3 integers >= 0"):
        cfg.DetectionConfig(border_margin=(0, -1, 0))
    with pytest.raises(InputError, match="border_margin must be 3 integers"):
        cfg.DetectionConfig(border_margin="abc")


def test_choice_errors_name_the_choices():
    with pytest.raises(InputError, match="symmetric must be 'mean' or 'max', found 'min'"):
        cfg.MergeConfig(symmetric="min")
    with pytest.raises(InputError, match="pad_mode must be one of 'reflect', 'edge', 'constant'"):
        cfg.TilingConfig(pad_mode="wrap")


def test_config_imports_nothing_heavy():
    code = (
        "import sys\n"
        "import napari_cellect.config\n"
        "heavy = {'numpy', 'torch', 'pandas', 'scipy'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
