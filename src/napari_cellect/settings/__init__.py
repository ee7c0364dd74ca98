"""Settings of the inference pipeline, one module per concern; each class is importable from its
module only (no re-exports here).

- :mod:`.normalization` -- :class:`NormalizationConfig`: intensities -> U-Net input
- :mod:`.detection`     -- :class:`DetectionConfig`: the peak finder
- :mod:`.merge`         -- :class:`MergeConfig`: merging duplicate detections within a frame
- :mod:`.linking`       -- :class:`LinkingConfig`: linking consecutive frames, division tests
- :mod:`.refinement`    -- :class:`DivisionRefinementConfig`: magnified second look at divisions
- :mod:`.tracking`      -- :class:`TrackingConfig`: the four above, a model bundle's
                           ``thresholds``
- :mod:`.tiling`        -- :class:`TilingConfig`: sliding-window prediction
- :mod:`.formats`       -- defaults of the file readers that the command line shows
- :mod:`.checks`        -- validation helpers; :mod:`.conversion` -- to and from plain dicts

They hold plain values only (no torch, no numpy arrays), are frozen, validate themselves on
construction (:class:`~napari_cellect.errors.InputError` names the field) and import nothing
heavy, so torch-free code (``track/``, ``data/``) and the command line can use them. Dicts
become settings only where they cross a file boundary (a model bundle's metadata, a
checkpoint: :func:`~napari_cellect.settings.conversion.config_from_dict`); the core takes the
dataclasses themselves. Settings of training, of the networks' architecture, of the synthetic
data and of review sit beside the code they configure: ``docs/architecture.md`` (Settings)
lists where each lives.

Distances are in scaled voxel space ``(z * z_ratio, y, x)``, i.e. in XY pixels, and radii are
the U-Net's radius head (XY pixels). Probabilities are in [0, 1].
"""
