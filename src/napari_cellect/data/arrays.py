"""The array types the core reads images and labels from.

Images come as numpy arrays or as lazy arrays (dask, zarr) read a frame at a time, so the core
asks only for what all of them have: a shape, a dtype and numpy-style indexing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np

if TYPE_CHECKING:
    from napari_cellect.data.images import ImageSequence


class ImageData(Protocol):
    """A numpy, dask or zarr array; ``np.asarray(images[t])`` reads frame ``t``."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def ndim(self) -> int: ...

    @property
    def dtype(self) -> np.dtype[Any]: ...

    # what an index returns depends on the array library (numpy, dask or zarr array)
    def __getitem__(self, key: Any, /) -> Any: ...


#: labels per frame: a (T, Z, Y, X) array, or a function that gives frame t's (Z, Y, X) labels
LabelSource: TypeAlias = ImageData | Callable[[int], np.ndarray]

#: what the tracking entry points take: an array, or an ImageSequence (whose ``data`` is read)
ImageInput: TypeAlias = "ImageData | ImageSequence"
