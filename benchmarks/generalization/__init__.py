"""The generalisation benchmark's own data: a lineage simulator, a renderer and real lineages.

Written independently of :mod:`napari_cellect.data.synthetic` (nothing is imported or copied
from it) so that the default model, trained on that generator's images, is measured on images
it could not have learned the look of. Used only for validation and testing, never for
training: ``src/`` must never import this package.
"""
