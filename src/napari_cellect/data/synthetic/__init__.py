"""Seeded synthetic 3D+t (and 2D+t) fluorescent-nuclei time series with ground truth.

The default deep-learning model is trained and tested on these sequences, so they imitate an early
embryo imaged with a confocal or light-sheet microscope:

- nuclei are (slightly irregular) ellipsoids in *physical* space, sampled on an anisotropic grid
  (``z_ratio`` = z spacing / xy spacing), with chromatin speckles and nucleoli that move with them;
- they move by a smooth random walk, repel each other, stay inside an ellipsoidal embryo that may
  extend past the field of view, and may share a slow rotation and stage drift;
- they divide after a minimum cell-cycle length: for ``mitosis_frames`` frames the mother condenses
  into a bright metaphase plate, then two smaller, brighter daughters appear about a radius apart
  along the spindle axis and drift apart; cells can also appear and disappear at small rates;
- the image adds embryo autofluorescence, a smooth inhomogeneous background, uneven illumination,
  depth attenuation, an anisotropic PSF, photobleaching, laser flicker, Poisson and Gaussian noise,
  a camera offset, and is returned as uint16.

The simulation (positions and appearance, cheap) runs first for the whole sequence; frames are then
rendered one at a time, each nucleus inside its own bounding box, so large volumes (41x512x512)
need only a few frame-sized buffers. Every random draw comes from a stream seeded by
``config.seed`` (and the frame index for the noise), so the same config gives the same pixels.

Ground truth is a :class:`~napari_cellect.track.graph.TrackGraph` (one node per nucleus whose
centre lies in the volume, z in slices): a cell whose centre leaves the volume ends its track, a
cell that (re-)enters starts a new root track, and the mother's last frame before a division has
``division_score`` 1.

Training also draws from a far wider distribution, :func:`sample_wide_config` (2D or 1-64
slices, anisotropy 1-10, elongated, lobed and touching nuclei, dim nuclei, background structures
and debris, motion regimes, divisions with or without condensation or brightening, large
nuclei that never divide); every such effect is off in the presets, which give the same pixels
as before it existed (its draws come from their own streams).

Modules: :mod:`.config` (parameters, presets, randomised configs), :mod:`.geometry` (the embryo),
:mod:`.simulation` (the cells, frame by frame), :mod:`.render` (image formation),
:mod:`.sequence` (ground truth, :func:`simulate`, :func:`generate`), :mod:`.write` (datasets on
disk), :mod:`.streams` (the random streams). The names below are imported lazily, so
``from napari_cellect.data.synthetic import PRESETS`` (the command line's option choices) loads
only the parameters, not scipy, pandas or the writers. The settings classes
(:class:`SyntheticConfig`, :class:`ConfigRanges`, :class:`WideRanges`) are imported from
:mod:`.config` only.
"""

from __future__ import annotations

from napari_cellect.lazy_exports import LazyExports

_LAZY = LazyExports(
    __name__,
    {
        "PRESETS": ".config",
        "sample_config": ".config",
        "sample_wide_config": ".config",
        "EmbryoGeometry": ".geometry",
        "embryo_geometry": ".geometry",
        "cells_for_density": ".geometry",
        "FrameCells": ".simulation",
        "GT_COLUMNS": ".sequence",
        "Simulation": ".sequence",
        "SyntheticSequence": ".sequence",
        "simulate": ".sequence",
        "iter_frames": ".sequence",
        "generate": ".sequence",
        "SyntheticPaths": ".write",
        "iter_write_synthetic": ".write",
        "write_synthetic": ".write",
        "summarise": ".write",
    },
)

__all__ = _LAZY.public
__getattr__ = _LAZY.load
__dir__ = _LAZY.names
