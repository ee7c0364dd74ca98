"""npe2 sample data: a small synthetic embryo, simulated on the spot (nothing is downloaded)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from napari_cellect._napari._controller import ensure_controller_for_current_viewer
from napari_cellect._napari._layer_data import session_layer_data
from napari_cellect.session import Geometry, TrackingSession

#: the sample: a few dividing nuclei in a small anisotropic volume (renders in about a second)
SAMPLE_CHANGES: dict[str, Any] = {
    "frames": 10,
    "shape": (16, 96, 96),
    "z_ratio": 2.0,
    "n_cells": 12,
    "radius_range": (4.0, 6.0),
    "seed": 3,
}


def make_sample_data() -> list[tuple[Any, dict[str, Any], str]]:
    """Image, ground-truth labels, tracks and centres of a small synthetic embryo."""
    from napari_cellect.data.synthetic import PRESETS, generate

    config = dataclasses.replace(PRESETS["default"], **SAMPLE_CHANGES)
    sequence = generate(config, labels=True)
    geometry = Geometry(spatial_ndim=3, scale=(float(config.z_ratio), 1.0, 1.0))
    labels = None if sequence.labels is None else np.ascontiguousarray(sequence.labels)
    session = TrackingSession.from_graph(
        sequence.graph.copy(),
        name="embryo ground truth",
        geometry=geometry,
        labels=labels,
        image_shape=tuple(sequence.images.shape),
    )
    image = (
        sequence.images,
        {
            "name": "synthetic embryo",
            "scale": geometry.layer_scale,
            "blending": "additive",
            "colormap": "gray",
        },
        "image",
    )
    ensure_controller_for_current_viewer()
    return [image, *(_as_ground_truth(*layer) for layer in session_layer_data(session))]


def _as_ground_truth(
    data: Any, kwargs: dict[str, Any], kind: str
) -> tuple[Any, dict[str, Any], str]:
    """Ground truth must not look like a tracking result: its masks start hidden (they would
    cover the tracked ones) and its centres are crosses, not discs."""
    kwargs = dict(kwargs)
    if kind == "labels":
        kwargs["visible"] = False
    elif kind == "points":
        kwargs["symbol"] = "cross"
    return data, kwargs, kind
