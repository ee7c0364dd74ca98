"""CentresPreview: a Points layer grown frame by frame in reserved rows."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from napari.layers import Points

from napari_cellect._napari._centres_preview import CentresPreview


def frame(t: int, n: int) -> np.ndarray:
    return np.column_stack([np.full(n, float(t)), np.arange(3 * n, dtype=float).reshape(n, 3)])


def test_frames_fill_the_reserve_in_place_and_a_full_reserve_doubles():
    viewer = SimpleNamespace(add_points=lambda data, **kwargs: Points(data, **kwargs))
    preview = CentresPreview.create(viewer, frame(0, 4), expected=8, size=3.0)
    layer = preview.layer
    assert len(layer.data) == 12 and layer.shown.sum() == 4  # 1.5 x expected rows, 4 shown
    data_events: list = []
    layer.events.data.connect(data_events.append)
    preview.append(frame(1, 4))
    preview.append(frame(2, 4))
    assert data_events == [] and len(layer.data) == 12  # filled in place
    preview.append(frame(3, 5))  # 17 > 12 rows: the reserve doubles once
    assert len(layer.data) == 34 and len(data_events) == 2  # napari's before/after events
    expected = np.concatenate([frame(0, 4), frame(1, 4), frame(2, 4), frame(3, 5)])
    np.testing.assert_array_equal(preview.points(), expected)
    np.testing.assert_array_equal(layer.data[layer.shown], expected)
    assert layer.size.tolist() == [3.0] * 34
    # the hidden rows sit on the first centre, so the layer's extent is that of its centres
    np.testing.assert_array_equal(layer.extent.data, [expected.min(0), expected.max(0)])
