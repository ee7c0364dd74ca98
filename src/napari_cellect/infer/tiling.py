"""Sliding-window prediction over volumes of any size: tile layout, padding, stitching.

Geometry (per axis):

* The tile follows the volume (the default, ``pad_to_tile=False``): ``TilingConfig.tile`` sets
  the largest tile by its voxel count (what bounds memory), and the plan takes, among the tile
  shapes of at most that many voxels, the one whose tiles compute the fewest voxels in all,
  each axis cut into equal tiles rounded up to the model's ``size_multiple`` (z into as many as
  a fixed tile needs: it is never pooled, and thinner tiles would cut its context). So cost follows
  the volume: a 1 x 314 x 345 frame is one 16 x 320 x 352 tile (not four 16 x 288 x 288 ones),
  a 41 x 512 x 512 frame four 41 x 272 x 272 tiles. With ``pad_to_tile=True`` the tile is
  ``TilingConfig.tile`` exactly (rounded up to the size multiple) and a smaller volume is
  padded (symmetrically, ``pad_mode``) up to it. Volumes with Z = 1 are padded like any other.
  A volume thinner than the model's training crops (``NormalizationConfig.min_depth``: a 2D
  frame, a thin stack) is padded in z to that depth, centred and mirrored (a single slice
  repeated), exactly as training padded its crops: a 2D frame on its own, between zero padding,
  is an input the network never saw.
* Tiles start every ``tile - overlap`` voxels; the last one is shifted back to end at the
  volume edge, so every tile has the same shape and no tile reads past the volume.
* Every voxel is **owned** by exactly one tile: the one in which it is most central. Between
  two neighbouring tiles the boundary is the middle of their overlap, so an owned region is
  at least ``overlap // 2`` voxels away from the tile's inner edges, where a network sees too
  little context. Stitched maps take each voxel from its owner; detections are kept only
  from the tile that owns their voxel, so cells in an overlap are never found twice.

The embedding map is never stitched: a 41x512x512 frame with 64-d embeddings is 2.7 GB in
float32. :func:`predict_tiles` yields each tile's outputs while they are still on the device,
so the caller reads embeddings at that tile's owned detections and drops the rest.

The settings are :class:`napari_cellect.settings.tiling.TilingConfig`. torch is
imported only to run a model.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import numpy as np
from numpy.typing import DTypeLike

from napari_cellect.errors import InputError, ModelError
from napari_cellect.settings.checks import int_triple
from napari_cellect.settings.tiling import PadMode, TilingConfig

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Most tiles one axis is cut into when the plan fits the tile to the volume.
_MAX_TILES_PER_AXIS = 64

_T = TypeVar("_T")

#: Channels of the small heads that are stitched over the whole volume, in this order.
SMALL_HEADS = (("seg", 3), ("centre", 5), ("division", 2), ("radius", 1))


@dataclass(frozen=True)
class Tile:
    """One window of a :class:`TileGrid`.

    Attributes:
        index: position in the grid's tile list.
        start: first voxel in the padded volume.
        shape: tile shape (the same for every tile of a grid).
        origin: coordinate in the original volume of the tile's first voxel (negative where
            the tile starts in the padding). Tile-local + origin = volume coordinate.
        owned: tile-local slices of the voxels this tile owns (always inside the volume).
        valid: tile-local slices of the tile's voxels that are inside the original volume.
    """

    index: int
    start: tuple[int, int, int]
    shape: tuple[int, int, int]
    origin: tuple[int, int, int]
    owned: tuple[slice, slice, slice]
    valid: tuple[slice, slice, slice]

    @property
    def window(self) -> tuple[slice, slice, slice]:
        """Slices of this tile in the padded volume."""
        return _zyx(slice(s, s + n) for s, n in zip(self.start, self.shape))

    @property
    def owned_in_volume(self) -> tuple[slice, slice, slice]:
        """Slices of the owned voxels in the original volume."""
        return _zyx(slice(sl.start + o, sl.stop + o) for sl, o in zip(self.owned, self.origin))


@dataclass(frozen=True)
class TileGrid:
    """The padding and tiles that cover a volume of ``shape``."""

    shape: tuple[int, int, int]
    padded_shape: tuple[int, int, int]
    pad_before: tuple[int, int, int]
    tile_shape: tuple[int, int, int]
    tiles: tuple[Tile, ...]

    def __len__(self) -> int:
        return len(self.tiles)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)

    @property
    def pad_width(self) -> tuple[tuple[int, int], ...]:
        """(before, after) padding per axis (Z, Y, X)."""
        return tuple(
            (b, p - s - b) for b, p, s in zip(self.pad_before, self.padded_shape, self.shape)
        )


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class _AxisPlan(NamedTuple):
    tile: int
    padded: int
    before: int
    starts: list[int]
    owned: list[tuple[int, int]]  # padded coordinates


def _plan_axis(
    size: int, tile: int, overlap: int, multiple: int, pad_to_tile: bool, minimum: int = 1
) -> _AxisPlan:
    minimum = _round_up(minimum, multiple)
    tile = max(_round_up(tile, multiple), minimum)
    if not pad_to_tile:
        tile = min(tile, max(_round_up(size, multiple), minimum))
    padded = max(size, tile)
    before = (padded - size) // 2
    stride = tile - min(overlap, tile - 1)
    count = 1 if padded <= tile else math.ceil((padded - tile) / stride) + 1
    starts = [min(i * stride, padded - tile) for i in range(count)]
    # Boundary between tiles i-1 and i: the middle of their overlap, where both are equally
    # far from their own edge; each voxel goes to the tile in which it is most central.
    bounds = [0] + [(starts[i] + starts[i - 1] + tile) // 2 for i in range(1, count)] + [padded]
    owned = [(max(bounds[i], before), min(bounds[i + 1], before + size)) for i in range(count)]
    return _AxisPlan(tile, padded, before, starts, owned)


def smaller_tiling(config: TilingConfig, grid: TileGrid) -> TilingConfig:
    """Tiling settings with tiles about half the size of ``grid``'s in y and x (in z once y and
    x are down to a quarter of z's size or less), for a retry after running out of memory.
    The overlap shrinks with the tile, to at most a quarter of it. :func:`plan_tiles` rounds
    the tile up to the model's size multiple, so compare the grids to see whether it shrank."""
    z, y, x = grid.tile_shape
    if max(y, x) > z // 4 and max(y, x) > 1:
        tile = (z, max(y // 2, 1), max(x // 2, 1))
    else:
        tile = (max(z // 2, 1), y, x)
    oz, oy, ox = (min(o, t // 4) for o, t in zip(config.overlap, tile))
    return dataclasses.replace(config, tile=tile, overlap=(oz, oy, ox))


def _axis_options(size: int, overlap: int, multiple: int, minimum: int) -> list[tuple[int, int]]:
    """(tile, count) for cutting one axis into 1, 2, ... equal tiles, smallest tile last. No
    tile is thinner than twice the overlap (where the axis is longer): its owned core would be
    narrower than the context on its sides."""
    floor = _round_up(max(minimum, min(size, 2 * overlap + 1), 1), multiple)
    options: list[tuple[int, int]] = []
    for count in range(1, _MAX_TILES_PER_AXIS + 1):
        tile = max(_round_up(-(-(size + (count - 1) * overlap) // count), multiple), floor)
        if count > 1 and tile <= overlap:
            break  # too small to keep the overlap
        if options and tile >= options[-1][0]:
            continue  # rounding gave no smaller tile
        padded = max(size, tile)
        stride = tile - min(overlap, tile - 1)
        n = 1 if padded <= tile else math.ceil((padded - tile) / stride) + 1
        options.append((tile, n))
        if tile == floor:
            break
    return options


def _zyx(values: Iterable[_T]) -> tuple[_T, _T, _T]:
    """Per-axis values as a (z, y, x) triple (ValueError unless there are three)."""
    z, y, x = values
    return z, y, x


def fitted_tile(
    shape: tuple[int, int, int],
    config: TilingConfig,
    size_multiple: tuple[int, int, int],
    min_shape: tuple[int, int, int],
) -> tuple[int, int, int]:
    """The tile shape that covers ``shape`` computing the fewest voxels, among those of at most
    ``prod(config.tile)`` voxels (each axis rounded up to its multiple); fewer tiles break ties.
    Where no shape is that small, the smallest one.

    Z is cut into as many tiles as with a fixed tile (``config.tile[0]``), of equal size: it is
    the anisotropic axis that the networks never pool, whose context thinner tiles would cut.
    Y and X are fitted to the voxels left.
    """
    budget = math.prod(_round_up(t, m) for t, m in zip(config.tile, size_multiple))
    z_cuts = len(
        _plan_axis(
            shape[0], config.tile[0], config.overlap[0], size_multiple[0], False, min_shape[0]
        ).starts
    )
    z_options = _axis_options(shape[0], config.overlap[0], size_multiple[0], min_shape[0])
    per_axis = [[min(z_options, key=lambda option: abs(option[1] - z_cuts))]] + [
        _axis_options(s, o, m, lo)
        for s, o, m, lo in zip(shape[1:], config.overlap[1:], size_multiple[1:], min_shape[1:])
    ]
    best: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None
    for choice in itertools.product(*per_axis):
        voxels = math.prod(tile for tile, _ in choice)
        tiles = math.prod(n for _, n in choice[1:])  # the same z cut for every choice
        key = (0, tiles * voxels, tiles) if voxels <= budget else (1, voxels, tiles)
        if best is None or key < best[0]:
            best = (key, _zyx(tile for tile, _ in choice))
    assert best is not None
    return best[1]


def plan_tiles(
    shape: tuple[int, int, int],
    config: TilingConfig | None = None,
    size_multiple: tuple[int, int, int] | int = 1,
    min_shape: tuple[int, int, int] | int = 1,
) -> TileGrid:
    """The tiles (and padding) that cover a volume of ``shape`` (Z, Y, X); a volume smaller
    than ``min_shape`` along an axis is padded (centred) to it, whatever ``pad_to_tile``."""
    cfg = config or TilingConfig()
    shape = int_triple(shape, "volume shape")
    multiple = int_triple(size_multiple, "size_multiple")
    minimum = int_triple(min_shape, "min_shape")
    if min(shape) < 1:
        raise InputError(f"tiling: expected a volume with every axis >= 1, found shape {shape}")
    if min(multiple) < 1 or min(minimum) < 1:
        raise InputError(
            f"tiling: expected size_multiple and min_shape >= 1, found {multiple} and {minimum}"
        )
    tile = cfg.tile if cfg.pad_to_tile else fitted_tile(shape, cfg, multiple, minimum)
    axes = [
        _plan_axis(s, t, o, m, cfg.pad_to_tile, lo)
        for s, t, o, m, lo in zip(shape, tile, cfg.overlap, multiple, minimum)
    ]
    tile_shape = _zyx(a.tile for a in axes)
    pad_before = _zyx(a.before for a in axes)
    tiles: list[Tile] = []
    for iz, iy, ix in np.ndindex(*(len(a.starts) for a in axes)):
        picks = (iz, iy, ix)
        start = _zyx(a.starts[i] for a, i in zip(axes, picks))
        owned = _zyx(
            slice(a.owned[i][0] - s, a.owned[i][1] - s) for a, i, s in zip(axes, picks, start)
        )
        valid = _zyx(
            slice(max(a.before - s, 0), min(a.before + sz - s, a.tile))
            for a, s, sz in zip(axes, start, shape)
        )
        origin = _zyx(s - b for s, b in zip(start, pad_before))
        tiles.append(Tile(len(tiles), start, tile_shape, origin, owned, valid))
    grid = TileGrid(
        shape=shape,
        padded_shape=_zyx(a.padded for a in axes),
        pad_before=pad_before,
        tile_shape=tile_shape,
        tiles=tuple(tiles),
    )
    logger.debug(
        "volume %s -> padded %s, %d tile(s) of %s", shape, grid.padded_shape, len(tiles), tile_shape
    )
    return grid


def pad_volume(volume: np.ndarray, grid: TileGrid, mode: PadMode = "reflect") -> np.ndarray:
    """Pad a (C, Z, Y, X) volume to ``grid.padded_shape``; returns the input when no pad is due."""
    if tuple(volume.shape[-3:]) != grid.shape:
        raise InputError(
            f"tiling: expected a volume of shape (C, {', '.join(map(str, grid.shape))}), "
            f"found {volume.shape}"
        )
    widths = grid.pad_width
    if not any(b or a for b, a in widths):
        return volume
    pad = ((0, 0),) * (volume.ndim - 3) + widths
    if mode == "constant":
        return np.pad(volume, pad, mode="constant", constant_values=0)
    return np.pad(volume, pad, mode=mode)


class HeadStitcher:
    """Assembles the small heads (seg, centre, division, radius) of all tiles into full maps.

    Each voxel is taken from the tile that owns it. Memory: 11 values per voxel in
    ``dtype`` (236 MB in float16 for a 41x512x512 frame).
    """

    def __init__(self, grid: TileGrid, dtype: DTypeLike = np.float16) -> None:
        self.grid = grid
        channels = sum(n for _, n in SMALL_HEADS)
        self.data = np.zeros((channels, *grid.shape), dtype=np.dtype(dtype))
        self._written = 0

    def add(self, tile: Tile, heads: Mapping[str, np.ndarray | torch.Tensor]) -> None:
        """Write the owned part of one tile's small heads ((C, z, y, x) each)."""
        c0 = 0
        for name, n in SMALL_HEADS:
            part = heads[name][(slice(None), *tile.owned)]
            if not isinstance(part, np.ndarray):  # a torch tensor, possibly on a GPU
                part = part.detach().float().cpu().numpy()
            self.data[(slice(c0, c0 + n), *tile.owned_in_volume)] = part
            c0 += n
        self._written += 1

    def result(self) -> dict[str, np.ndarray]:
        """The stitched maps by head name, each (C, Z, Y, X) (views of one array)."""
        if self._written != len(self.grid):
            raise RuntimeError(
                f"stitching incomplete: {self._written} of {len(self.grid)} tiles were added"
            )
        out, c0 = {}, 0
        for name, n in SMALL_HEADS:
            out[name] = self.data[c0 : c0 + n]
            c0 += n
        return out


# --------------------------------------------------------------------------- model windows


class TileOutput(NamedTuple):
    """One tile's network outputs, batch dimension removed, still on the model's device."""

    seg: torch.Tensor
    centre: torch.Tensor
    embedding: torch.Tensor
    division: torch.Tensor
    radius: torch.Tensor


_HEAD_NAMES = TileOutput._fields


def model_size_multiple(model: torch.nn.Module) -> tuple[int, int, int]:
    """The (z, y, x) multiple a model's input must have (its ``size_multiple``, default 1)."""
    return int_triple(getattr(model, "size_multiple", 1), "model.size_multiple")


def unpack_output(output: object, item: int = 0) -> TileOutput:
    """Read the five heads from a UNetOutput, a plain 5-tuple or a mapping, batch ``item``."""
    if isinstance(output, Mapping):
        heads = [output[name] for name in _HEAD_NAMES]
    elif all(hasattr(output, name) for name in _HEAD_NAMES):
        heads = [getattr(output, name) for name in _HEAD_NAMES]
    elif isinstance(output, (tuple, list)) and len(output) == len(_HEAD_NAMES):
        heads = list(output)
    else:
        raise ModelError(
            "expected the U-Net to return (seg, centre, embedding, division, radius), "
            f"found {type(output).__name__}"
        )
    return TileOutput(*(h[item] for h in heads))


def embedding_stride(model: torch.nn.Module) -> tuple[int, int, int]:
    """The grid step of a model's embedding (:attr:`UNet3D.embedding_stride`, default 1)."""
    return int_triple(getattr(model, "embedding_stride", 1), "model.embedding_stride")


def _run_model(model: torch.nn.Module, x: torch.Tensor) -> object:
    """The model's outputs for ``x``, with the embedding left on its own grid where the model
    computes it coarser (it is read only at detections)."""
    if embedding_stride(model) != (1, 1, 1):
        return model(x, coarse_embedding=True)
    return model(x)


def _check_output(
    out: TileOutput, tile_shape: tuple[int, int, int], stride: tuple[int, int, int] = (1, 1, 1)
) -> None:
    for name, head in zip(_HEAD_NAMES, out):
        step = stride if name == "embedding" else (1, 1, 1)
        expected = tuple(n // s for n, s in zip(tile_shape, step))
        if head.ndim != 4 or tuple(head.shape[1:]) != expected:
            where = "at the input resolution" if step == (1, 1, 1) else f"on a grid of step {step}"
            raise ModelError(
                f"expected the U-Net's {name} head {where} "
                f"(C, {', '.join(map(str, expected))}), found {tuple(head.shape)}"
            )
    want = {"seg": 2, "centre": 2, "division": 2, "radius": 1}
    for name, minimum in want.items():
        channels = getattr(out, name).shape[0]
        if channels < minimum or (name in ("division", "radius") and channels != minimum):
            raise ModelError(
                f"expected {'' if name in ('division', 'radius') else 'at least '}{minimum} "
                f"channel(s) in the U-Net's {name} head, found {channels}"
            )


def predict_tiles(
    model: torch.nn.Module,
    padded: np.ndarray,
    grid: TileGrid,
    device: torch.device,
    *,
    channels_last: bool = False,
) -> Iterator[tuple[Tile, TileOutput]]:
    """Run ``model`` on every tile of a padded (C, Z, Y, X) float32 volume, one at a time.

    Call under ``torch.inference_mode()`` and, on a GPU, :func:`autocast_context`. The outputs
    stay on ``device``; the caller reads what it needs before asking for the next tile.
    """
    if tuple(padded.shape[-3:]) != grid.padded_shape:
        raise InputError(
            f"tiling: expected a padded volume of shape (C, {grid.padded_shape}), "
            f"found {padded.shape}"
        )
    for tile in grid:
        window = padded[(slice(None), *tile.window)]
        (out,) = _forward(model, window[None], tile.shape, device, channels_last)
        yield tile, out


def predict_batch(
    model: torch.nn.Module,
    volumes: np.ndarray,
    grid: TileGrid,
    device: torch.device,
    *,
    channels_last: bool = False,
) -> list[TileOutput]:
    """Run ``model`` once on a batch (B, C, Z, Y, X) of padded volumes that ``grid`` covers with
    one tile each; one :class:`TileOutput` per volume, still on ``device``.

    Call as :func:`predict_tiles`. Normalisation is per sample, so each output is what the
    volume alone would give (to float rounding: oneDNN's channels-last kernels sum in an
    order that depends on the batch size).
    """
    if len(grid) != 1 or tuple(volumes.shape[-3:]) != grid.padded_shape:
        raise InputError(
            f"tiling: expected a batch of volumes of shape (B, C, {grid.padded_shape}) that one "
            f"tile covers, found {volumes.shape} and {len(grid)} tile(s)"
        )
    return _forward(model, volumes, grid.tile_shape, device, channels_last)


def _forward(
    model: torch.nn.Module,
    volumes: np.ndarray,
    tile_shape: tuple[int, int, int],
    device: torch.device,
    channels_last: bool,
) -> list[TileOutput]:
    """One model call on a batch (B, C, Z, Y, X) of tiles; their checked outputs."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(volumes, dtype=np.float32))
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    output = _run_model(model, x)
    stride = embedding_stride(model)
    outs = [unpack_output(output, item) for item in range(len(volumes))]
    for out in outs:
        _check_output(out, tile_shape, stride)
    return outs
