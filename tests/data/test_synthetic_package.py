"""The ``napari_cellect.data.synthetic`` package exports its API lazily (behaviour is tested in
test_synthetic.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import napari_cellect.data.synthetic as synthetic


def test_every_exported_name_resolves():
    for name in synthetic.__all__:
        assert getattr(synthetic, name) is not None
        assert name in dir(synthetic)
    assert synthetic.simulate.__module__ == "napari_cellect.data.synthetic.sequence"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        synthetic.nope  # noqa: B018


def test_presets_load_without_the_simulation_and_writers():
    code = (
        "import sys\n"
        "from napari_cellect.data.synthetic import PRESETS\n"
        "assert 'default' in PRESETS\n"
        "loaded = {'scipy', 'pandas', 'tifffile', 'napari_cellect.data.synthetic.write',\n"
        "          'napari_cellect.data.synthetic.simulation'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
