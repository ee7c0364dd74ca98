"""Shared fixtures of the training tests."""

from __future__ import annotations

import dataclasses

import pytest

from napari_cellect.data.synthetic import PRESETS, generate


@pytest.fixture(scope="module")
def sequences():
    """Tiny annotated training and validation series: (images, graph, z ratio) lists."""
    base = dataclasses.replace(
        PRESETS["default"],
        frames=4,
        shape=(4, 48, 48),
        n_cells=6,
        radius_range=(4.0, 5.0),
        z_ratio=2.0,
    )
    train = generate(dataclasses.replace(base, seed=1))
    val = generate(dataclasses.replace(base, seed=2))
    return [(train.images, train.graph, train.config.z_ratio)], [
        (val.images, val.graph, val.config.z_ratio)
    ]
