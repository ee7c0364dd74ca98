"""Tests of the settings dataclasses (``napari_cellect.settings``): conversion and validation.

Saving and loading them in a model bundle is tested in tests/model/test_bundle.py.
"""

from __future__ import annotations

import ast
import math
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_cellect import settings
from napari_cellect.errors import InputError
from napari_cellect.settings.conversion import config_from_dict, config_to_dict
from napari_cellect.settings.detection import DetectionConfig
from napari_cellect.settings.linking import LinkingConfig
from napari_cellect.settings.merge import MergeConfig
from napari_cellect.settings.normalization import NormalizationConfig
from napari_cellect.settings.tiling import TilingConfig, tiling_for

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_cellect"

SECTIONS = (
    (DetectionConfig, "threshold", 0.7),
    (MergeConfig, "k", 3),
    (LinkingConfig, "link_threshold", 0.2),
    (NormalizationConfig, "high_percentile", 99.0),
    (TilingConfig, "pad_mode", "edge"),
)


@pytest.mark.parametrize(("cls", "name", "value"), SECTIONS)
def test_saved_settings_load_and_unknown_fields_are_named(cls, name, value):
    changed = cls(**{name: value})
    assert config_from_dict(cls, config_to_dict(changed)) == changed
    assert config_from_dict(cls, {name: value}) == changed  # missing fields: the defaults
    with pytest.raises(InputError, match=f"unknown {cls.__name__} field.*{name}x"):
        config_from_dict(cls, {f"{name}x": value}, strict=True)
    with pytest.raises(InputError, match=f"expected a dict for {cls.__name__}, found str"):
        config_from_dict(cls, "softmax")


def test_tiling_from_a_tile_shape_keeps_a_valid_overlap():
    default = TilingConfig()
    assert tiling_for(None) == default and tiling_for(default) is default
    tiled = tiling_for((16, 64, 64))
    assert tiled.tile == (16, 64, 64) and tiled.overlap == default.overlap
    assert tiling_for(8).overlap == (7, 7, 7)
    assert TilingConfig(tile=[8, 32, 32], overlap=np.array([2, 8, 8])).overlap == (2, 8, 8)
    with pytest.raises(InputError, match="tile must be 3 integers"):
        tiling_for((8, 8))


def test_integers_are_stored_as_python_ints_and_bools_refused():
    merge = MergeConfig(k=np.int64(4))
    assert merge.k == 4 and type(merge.k) is int
    assert type(NormalizationConfig(max_samples=np.int32(10)).max_samples) is int
    with pytest.raises(InputError, match="k must be an integer >= 1"):
        LinkingConfig(k=True)
    with pytest.raises(InputError, match="max_samples must be an integer >= 1"):
        NormalizationConfig(max_samples=0)
    with pytest.raises(InputError, match="min_depth must be an integer >= 1, found 0"):
        NormalizationConfig(min_depth=0)
    # settings saved before min_depth existed: no z padding, as those models were run
    assert config_from_dict(NormalizationConfig, {"mode": "percentile"}).min_depth == 1


def test_distances_reject_nan_and_detection_radii_reject_infinity():
    with pytest.raises(InputError, match="max_distance_floor must be >= 0"):
        MergeConfig(max_distance_floor=math.nan)
    with pytest.raises(InputError, match="gap_cost must be >= 0"):
        LinkingConfig(gap_cost=math.nan)
    assert LinkingConfig(max_distance=math.inf).max_distance == math.inf  # no hard cap
    with pytest.raises(InputError, match="peak_radius must be a finite number >= 0"):
        DetectionConfig(peak_radius=math.inf)
    with pytest.raises(InputError, match=r"foreground_threshold must be in \[0, 1\]"):
        DetectionConfig(foreground_threshold=math.nan)


def test_border_margin_forms():
    assert DetectionConfig(border_margin=2).border_margin == (2, 2, 2)
    assert DetectionConfig(border_margin=[0, 1, 1]).border_margin == (0, 1, 1)
    with pytest.raises(InputError, match="border_margin must be 3 integers >= 0"):
        DetectionConfig(border_margin=(0, -1, 0))
    with pytest.raises(InputError, match="border_margin must be 3 integers"):
        DetectionConfig(border_margin="abc")


def test_choice_errors_name_the_choices():
    with pytest.raises(InputError, match="symmetric must be 'mean' or 'max', found 'min'"):
        MergeConfig(symmetric="min")
    with pytest.raises(InputError, match="pad_mode must be one of 'reflect', 'edge', 'constant'"):
        TilingConfig(pad_mode="wrap")


def test_settings_import_nothing_heavy():
    modules = [f"napari_cellect.settings.{m.name}" for m in pkgutil.iter_modules(settings.__path__)]
    assert len(modules) >= 10
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "heavy = {'numpy', 'torch', 'pandas', 'scipy'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _settings_classes() -> dict[str, str]:
    """Every config dataclass of the package: name -> the module that defines it."""
    homes = {}
    for path in SRC.rglob("*.py"):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name.endswith("Config"):
                assert node.name not in homes, f"{node.name} defined twice"
                homes[node.name] = module.removesuffix(".__init__")
    return homes


def test_each_settings_class_is_imported_from_the_module_that_defines_it():
    homes = _settings_classes()
    assert homes["LinkingConfig"] == "napari_cellect.settings.linking"
    wrong = []
    for folder in ("src", "tests", "benchmarks", "examples", "scripts"):
        for path in (SRC.parents[1] / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    wrong += [
                        f"{path}: {a.name} from {node.module}"
                        for a in node.names
                        if a.name in homes and homes[a.name] != node.module
                    ]
    assert not wrong, "import each setting from its own module:\n" + "\n".join(wrong)
