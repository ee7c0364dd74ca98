"""How a volume is cut into network-sized tiles: :class:`TilingConfig` (``infer/tiling.py``)."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from napari_cellect.errors import InputError
from napari_cellect.settings.checks import check_choice, int_triple

PadMode = Literal["reflect", "edge", "constant"]
PAD_MODES: tuple[str, ...] = typing.get_args(PadMode)
HeadsDtype = Literal["float16", "float32"]
HEADS_DTYPES: tuple[str, ...] = typing.get_args(HeadsDtype)


@dataclass(frozen=True)
class TilingConfig:
    """How a volume is cut into network-sized tiles (``infer/tiling.py``)."""

    tile: tuple[int, int, int] = (48, 288, 288)
    """Largest tile (Z, Y, X) in voxels. Its voxel count bounds a tile's memory (about 1.5 GB of
    activations for the ``small`` preset at the default); each volume gets the tiles of at most
    that many voxels that cover it computing the fewest voxels (``infer/tiling.py``): a
    41x512x512 embryo frame four of 41x272x272, a 314x345 2D frame one. Use 32x256x256, what the
    original CELLECT network was trained on, for ``cellect-original``."""
    overlap: tuple[int, int, int] = (8, 32, 32)
    """Overlap (Z, Y, X) between neighbouring tiles. Each tile's owned region stays
    ``overlap // 2`` away from its inner edges; make it at least twice the width of the
    tile-edge artefacts of the network."""
    pad_mode: PadMode = "reflect"
    """How volumes smaller than a tile are padded: ``reflect`` (mirror, keeps texture
    statistics), ``edge`` (repeat the border) or ``constant`` (zeros, i.e. the low percentile
    after normalisation)."""
    pad_to_tile: bool = False
    """Use ``tile`` exactly (rounded up to the model's size multiple) and pad small volumes up
    to it. False fits the tiles to each volume: the networks are fully convolutional with
    per-sample normalisation, and a full tile for a small frame is wasted work."""
    heads_dtype: HeadsDtype = "float16"
    """dtype of the stitched small-head maps (``float16`` halves their memory)."""

    def __post_init__(self) -> None:
        tile = int_triple(self.tile, "TilingConfig.tile")
        overlap = int_triple(self.overlap, "TilingConfig.overlap")
        object.__setattr__(self, "tile", tile)
        object.__setattr__(self, "overlap", overlap)
        if min(tile) < 1 or min(overlap) < 0 or any(o >= t for o, t in zip(overlap, tile)):
            raise InputError(
                "TilingConfig needs tile >= 1 and 0 <= overlap < tile on every axis, "
                f"found tile {tile} and overlap {overlap}"
            )
        check_choice(self, "pad_mode", PAD_MODES)
        check_choice(self, "heads_dtype", HEADS_DTYPES)


def tiling_for(tile: TilingConfig | Sequence[int] | int | None) -> TilingConfig:
    """The tiling of a ``tile`` argument: the settings themselves, a tile shape (Z, Y, X) (one
    number for all axes) with the default overlap shrunk where the tile is smaller (what
    ``--tile`` and the Track cells widget give), or None for the defaults."""
    if tile is None:
        return TilingConfig()
    if isinstance(tile, TilingConfig):
        return tile
    shape = int_triple(tile, "tile")
    overlap = int_triple([min(o, t - 1) for o, t in zip(TilingConfig().overlap, shape)], "overlap")
    return TilingConfig(tile=shape, overlap=overlap)
