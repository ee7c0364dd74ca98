"""napari-cellect: CELLECT cell tracking for 3D+t microscopy, in napari and from Python."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-cellect")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
