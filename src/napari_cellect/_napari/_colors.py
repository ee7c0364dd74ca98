"""One colour per track id, shared by the Points, Tracks and Labels layers and the lineage view.

napari colours the three layer types by different machinery:

- a ``CyclicLabelColormap`` maps a label value ``v`` to ``colors[(v - 1) % K + 1]`` (``colors[0]``
  is the transparent background, ``K = len(colors) - 1``);
- the Tracks layer maps its ``color_by`` feature through a ``Colormap``; when that feature has its
  own entry in ``colormaps_dict`` the values are passed *unnormalised*;
- Points take an explicit (N, 4) face colour array.

So we fix one palette of :data:`N_COLORS` colours and define the colour of track ``tid`` as
``PALETTE[(tid - 1) % N_COLORS]`` -- exactly the Labels rule. The Labels layer gets a
``CyclicLabelColormap`` built from the palette, the Tracks layer a :class:`TrackIdColormap` whose
``map`` applies the same rule to raw track ids, and the Points layer colours from
:func:`track_colors`. A label, its centre and its track line therefore always share a colour,
without any per-id table that would need rebuilding after an edit.
"""

from __future__ import annotations

import numpy as np
from napari.utils.colormaps import Colormap
from napari.utils.colormaps.colormap import CyclicLabelColormap

#: number of distinct track colours (neighbouring ids differ in hue by the golden angle)
N_COLORS = 61
#: colour used for ids <= 0 (no track)
NO_TRACK_COLOR = np.array([0.5, 0.5, 0.5, 1.0], dtype=np.float32)
#: golden-ratio hue step: consecutive ids get well separated hues
_HUE_STEP = 0.618033988749895
#: saturation / value cycles that separate colours with similar hues
_SATURATIONS = (0.85, 0.6, 0.95)
_VALUES = (1.0, 0.85)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack(
        [
            np.stack([v, t, p], -1),
            np.stack([q, v, p], -1),
            np.stack([p, v, t], -1),
            np.stack([p, q, v], -1),
            np.stack([t, p, v], -1),
            np.stack([v, p, q], -1),
        ]
    )
    return table[i, np.arange(len(h))]


def _make_palette(n: int) -> np.ndarray:
    k = np.arange(n)
    hue = (0.05 + k * _HUE_STEP) % 1.0
    sat = np.asarray(_SATURATIONS)[k % len(_SATURATIONS)]
    val = np.asarray(_VALUES)[(k // len(_SATURATIONS)) % len(_VALUES)]
    rgb = _hsv_to_rgb(hue, sat, val)
    return np.concatenate([rgb, np.ones((n, 1))], axis=1).astype(np.float32)


#: (N_COLORS, 4) RGBA in [0, 1]
PALETTE = _make_palette(N_COLORS)


def palette_index(track_ids: np.ndarray | int) -> np.ndarray:
    """Index into :data:`PALETTE` of each track id (the CyclicLabelColormap rule)."""
    tid = np.asarray(track_ids, dtype=np.int64)
    return (tid - 1) % N_COLORS


def track_colors(track_ids: np.ndarray | int) -> np.ndarray:
    """(N, 4) RGBA colour of each track id; ids <= 0 are grey."""
    tid = np.atleast_1d(np.asarray(track_ids, dtype=np.int64))
    out = PALETTE[palette_index(tid)]
    out[tid <= 0] = NO_TRACK_COLOR
    return out


def labels_colormap() -> CyclicLabelColormap:
    """A Labels colormap that gives label ``tid`` the colour :func:`track_colors` gives it."""
    colors = np.concatenate([np.zeros((1, 4), np.float32), PALETTE])
    return CyclicLabelColormap(colors=colors, name="cellect tracks", background_value=0)


class TrackIdColormap(Colormap):
    """A Tracks-layer colormap that maps raw track ids (not values in [0, 1]) to track colours.

    Put it in ``colormaps_dict["track_id"]``: napari then skips its min-max normalisation and
    calls :meth:`map` with the ids themselves.
    """

    def map(self, values: np.ndarray) -> np.ndarray:
        return track_colors(np.round(np.asarray(values, dtype=np.float64)).astype(np.int64))


def tracks_colormap() -> TrackIdColormap:
    """The colormap for the Tracks layer's ``track_id`` feature."""
    return TrackIdColormap(colors=PALETTE, name="cellect tracks", interpolation="zero")
