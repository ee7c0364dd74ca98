"""The independent random streams of the synthetic generator.

Each part draws from its own generator ``np.random.default_rng([config.seed, STREAM, ...])``, so
the same config always gives the same sequence, and a change in one part (one more draw) never
shifts the draws of another.
"""

#: cell placement, motion, cycle and appearance (:mod:`.simulation`)
SIMULATION = 1
#: the embryo's position, orientation and drift (:mod:`.geometry`)
EMBRYO = 2
#: smooth background, illumination and autofluorescence fields (:mod:`.render`)
FIELDS = 3
#: per-frame camera noise and laser flicker, with the frame index (:mod:`.render`)
NOISE = 4
#: :func:`~napari_cellect.data.synthetic.config.sample_config`
SAMPLE = 5
#: per-cell draws of the wider appearance (elongation, lobes, dim and large nuclei, division
#: appearance) in :mod:`.simulation`: apart from SIMULATION, so that presets that do not use
#: them give the same sequences as before they existed
APPEARANCE = 6
#: :func:`~napari_cellect.data.synthetic.config.sample_wide_config`
SAMPLE_WIDE = 7
