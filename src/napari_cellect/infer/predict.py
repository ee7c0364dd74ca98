"""Run the U-Net over a time series: one pass per frame pair, per-frame Detections out.

Frame ``t`` is described by the pair (t, t+1): the U-Net sees both frames as two channels
and its outputs describe frame t, frame t+1 giving motion and division context. Each pair goes
through the network exactly once. The **last frame is paired with itself**: its detections
are as good as any other frame's, but its division cues (a mother about to divide, a
newborn daughter in the next frame) are absent, since the network sees no next frame. A
single-frame input is handled the same way, with a logged warning.

Frames are read lazily, one at a time, so a dask array or a folder of TIFFs never has more
than two frames in memory. A frame without contrast (constant, or all NaN) still runs through
the network, but yields empty Detections: it cannot contain cells.

Cancel: ``should_stop()`` is checked before each frame pair; when it returns True the
generator raises :class:`napari_cellect.errors.Cancelled` (so a caller can tell a stopped run
from a finished one). Detections yielded before that are complete and already cached.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch

from napari_cellect.errors import Cancelled, DeviceError, InputError, ModelError
from napari_cellect.infer.detect import finalize_detections, find_detections
from napari_cellect.infer.device import autocast_context, resolve_device
from napari_cellect.infer.normalize import has_contrast, normalize_pair
from napari_cellect.infer.rescale import (
    detections_to_original,
    grid_z_ratio,
    resize,
    resize_factors,
    scaled_shape,
    xy_scale,
    z_scale,
)
from napari_cellect.infer.tiling import (
    HeadStitcher,
    Tile,
    TileGrid,
    TileOutput,
    model_size_multiple,
    pad_volume,
    plan_tiles,
    predict_batch,
    predict_tiles,
    smaller_tiling,
)
from napari_cellect.progress import OnStep, Progress
from napari_cellect.settings.detection import DetectionConfig
from napari_cellect.settings.normalization import NormalizationConfig
from napari_cellect.settings.tiling import TilingConfig, tiling_for
from napari_cellect.track.detections import (
    Detections,
    FrameCache,
    fingerprint_of,
    fingerprint_parts,
)

if TYPE_CHECKING:
    from napari_cellect.data.arrays import ImageData
    from napari_cellect.model.bundle import ModelBundle

logger = logging.getLogger(__name__)

HeadsCallback = Callable[[int, dict[str, np.ndarray]], None]


@dataclass(frozen=True)
class InferenceModel:
    """A U-Net together with the settings it must be used with."""

    unet: torch.nn.Module
    detection: DetectionConfig
    normalization: NormalizationConfig


#: what prediction runs: a model bundle, a U-Net with its settings, or a bare U-Net module
ModelSource = Union["ModelBundle", InferenceModel, torch.nn.Module]


@dataclass
class FramePrediction:
    """One frame's detections, and optionally the stitched small-head maps (C, Z, Y, X)."""

    detections: Detections
    heads: dict[str, np.ndarray] | None = None


def resolve_model(
    bundle_or_model: ModelSource,
    detection: DetectionConfig | None = None,
    normalization: NormalizationConfig | None = None,
) -> InferenceModel:
    """Accept a ModelBundle (attributes ``unet``, ``thresholds``, ``normalization``) or a bare
    U-Net module; explicit ``detection`` / ``normalization`` settings override the bundle's."""
    if isinstance(bundle_or_model, InferenceModel):
        unet = bundle_or_model.unet
        det: DetectionConfig | None = bundle_or_model.detection
        norm: NormalizationConfig | None = bundle_or_model.normalization
    elif isinstance(bundle_or_model, torch.nn.Module):
        unet, det, norm = bundle_or_model, DetectionConfig(), None
    else:
        found = getattr(bundle_or_model, "unet", None)
        if not isinstance(found, torch.nn.Module):
            raise ModelError(
                "expected a model bundle with a U-Net (attribute 'unet') or a torch module, "
                f"found {type(bundle_or_model).__name__}"
            )
        unet = found
        det = getattr(getattr(bundle_or_model, "thresholds", None), "detection", None)
        norm = getattr(bundle_or_model, "normalization", None)
        if det is None and detection is None:
            logger.warning(
                "the model's thresholds hold no detection settings; using the defaults (%s)",
                DetectionConfig(),
            )
    return InferenceModel(
        unet,
        detection if detection is not None else det or DetectionConfig(),
        normalization if normalization is not None else norm or NormalizationConfig(),
    )


def model_digest(unet: torch.nn.Module) -> str:
    """SHA-256 of a module's class and state dict (names, dtypes, shapes and values)."""
    h = hashlib.sha256(f"{type(unet).__module__}.{type(unet).__qualname__}".encode())
    for name, tensor in sorted(unet.state_dict().items()):
        data = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{data.dtype}|{tuple(tensor.shape)}".encode())
        h.update(data.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_identity(
    bundle_or_model: ModelSource,
    sources: Sequence[object],
    *,
    z_ratio: float,
    tile: TilingConfig | Sequence[int] | None = None,
    detection: DetectionConfig | None = None,
    normalization: NormalizationConfig | None = None,
    cell_radius: float | None = None,
) -> dict[str, Any]:
    """What makes a prediction run's detections (:func:`fingerprint_parts`): the model's
    digest, the input files and the settings."""
    model = resolve_model(bundle_or_model, detection, normalization)
    config = {
        "z_ratio": float(z_ratio),
        "xy_scale": xy_scale(cell_radius, model.normalization.reference_radius),
        "tiling": tiling_for(tile),
        "detection": model.detection,
        "normalization": model.normalization,
    }
    return fingerprint_parts(model_digest(model.unet), sources, config)


def cache_fingerprint(
    bundle_or_model: ModelSource, sources: Sequence[object], **settings: Any
) -> str:
    """The :class:`DetectionCache` fingerprint of a prediction run with these settings
    (the keyword arguments of :func:`cache_identity`)."""
    return fingerprint_of(cache_identity(bundle_or_model, sources, **settings))


def predict_frame(
    unet: torch.nn.Module,
    pair: np.ndarray,
    *,
    t: int,
    z_ratio: float,
    detection: DetectionConfig | None = None,
    tiling: TilingConfig | None = None,
    device: torch.device | None = None,
    return_heads: bool = False,
    min_depth: int = 1,
) -> FramePrediction:
    """Detections of frame ``t`` from a normalised pair (2, Z, Y, X) float32, tile by tile.

    The U-Net must already be on ``device``; it runs in eval mode (its mode is restored). Each
    tile's embedding map is read at the detections that tile owns and then dropped; only the
    small heads are stitched, and only when ``return_heads`` is set.

    When the device runs out of memory the frame is tried again with tiles half the size in y
    and x (a warning says so), down to the model's smallest tile; then DeviceError.
    """
    det_cfg = detection or DetectionConfig()
    tiling = tiling or TilingConfig()
    device = device or torch.device("cpu")
    grid = plan_tiles(pair.shape[-3:], tiling, model_size_multiple(unet), (min_depth, 1, 1))
    while True:
        try:
            return _predict_frame_tiled(
                unet, pair, grid, tiling, t, z_ratio, det_cfg, device, return_heads
            )
        except torch.OutOfMemoryError as error:
            tiling, grid = _after_out_of_memory(
                error, unet, pair, tiling, grid, min_depth, device, t
            )


def _after_out_of_memory(
    error: torch.OutOfMemoryError,
    unet: torch.nn.Module,
    pair: np.ndarray,
    tiling: TilingConfig,
    grid: TileGrid,
    min_depth: int,
    device: torch.device,
    t: int,
) -> tuple[TilingConfig, TileGrid]:
    """Smaller tiles after the device ran out of memory (and says so), or DeviceError when the
    tiles cannot get any smaller."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    smaller = smaller_tiling(tiling, grid)
    new_grid = plan_tiles(pair.shape[-3:], smaller, model_size_multiple(unet), (min_depth, 1, 1))
    if new_grid.tile_shape == grid.tile_shape:
        raise DeviceError(
            f"out of memory on {device} even with tiles of {_shape_text(grid.tile_shape)} "
            f"voxels (frame {t}); free memory on the device (close other programs using it) or "
            f"run on the CPU ({_first_line(error)})"
        ) from error
    logger.warning(
        "out of memory on %s with tiles of %s voxels (frame %d); retrying with tiles of %s",
        device,
        _shape_text(grid.tile_shape),
        t,
        _shape_text(new_grid.tile_shape),
    )
    return smaller, new_grid


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:160] if lines else type(error).__name__


def _predict_frame_tiled(
    unet: torch.nn.Module,
    pair: np.ndarray,
    grid: TileGrid,
    tiling: TilingConfig,
    t: int,
    z_ratio: float,
    det_cfg: DetectionConfig,
    device: torch.device,
    return_heads: bool,
) -> FramePrediction:
    """One pass of :func:`predict_frame` over the tiles of ``grid``."""
    padded = pad_volume(pair, grid, tiling.pad_mode)
    stitcher = HeadStitcher(grid, tiling.heads_dtype) if return_heads else None
    parts = []
    with _evaluating(unet, device):
        tiles = predict_tiles(unet, padded, grid, device, channels_last=device.type == "cpu")
        for tile, out in tiles:
            parts.append(_tile_detections(out, tile, z_ratio, det_cfg, t))
            if stitcher is not None:
                stitcher.add(tile, out._asdict())
    dets = finalize_detections(parts, shape=grid.shape, z_ratio=z_ratio, config=det_cfg)
    return FramePrediction(dets, stitcher.result() if stitcher is not None else None)


def predict_volumes(
    unet: torch.nn.Module,
    pairs: Sequence[np.ndarray],
    *,
    t: int,
    z_ratios: Sequence[float],
    detection: DetectionConfig | None = None,
    tiling: TilingConfig | None = None,
    device: torch.device | None = None,
    min_depth: int = 1,
) -> list[Detections]:
    """Detections of several normalised volumes (2, Z, Y, X) of frame ``t``, as
    :func:`predict_frame` gives them one by one, with fewer U-Net calls.

    Volumes of one shape (and z ratio) that one tile covers go through the U-Net together, in
    batches of at most the voxels of ``tiling.tile``; the others are predicted one by one.
    Division refinement predicts its many small crops of a frame this way.
    """
    det_cfg = detection or DetectionConfig()
    tiling = tiling or TilingConfig()
    device = device or torch.device("cpu")
    if len(z_ratios) != len(pairs):
        raise InputError(
            f"expected one z ratio per volume, found {len(z_ratios)} for {len(pairs)} volumes"
        )
    groups: dict[tuple[tuple[int, int, int], float], list[int]] = {}
    for i, (pair, z_ratio) in enumerate(zip(pairs, z_ratios)):
        z, y, x = pair.shape[-3:]
        groups.setdefault(((z, y, x), float(z_ratio)), []).append(i)
    budget = math.prod(tiling.tile)
    found: dict[int, Detections] = {}

    def one_by_one(indices: Sequence[int], z_ratio: float) -> None:
        for i in indices:
            found[i] = predict_frame(
                unet,
                pairs[i],
                t=t,
                z_ratio=z_ratio,
                detection=det_cfg,
                tiling=tiling,
                device=device,
                min_depth=min_depth,
            ).detections

    for (shape, z_ratio), members in groups.items():
        grid = plan_tiles(shape, tiling, model_size_multiple(unet), (min_depth, 1, 1))
        if len(grid) > 1:
            one_by_one(members, z_ratio)
            continue
        (tile,) = grid.tiles
        per_call = max(1, budget // math.prod(grid.tile_shape))
        for start in range(0, len(members), per_call):
            chunk = members[start : start + per_call]
            batch = np.stack([pad_volume(pairs[i], grid, tiling.pad_mode) for i in chunk])
            try:
                with _evaluating(unet, device):
                    outs = predict_batch(
                        unet, batch, grid, device, channels_last=device.type == "cpu"
                    )
                    for i, out in zip(chunk, outs):
                        part = _tile_detections(out, tile, z_ratio, det_cfg, t)
                        found[i] = finalize_detections(
                            [part], shape=grid.shape, z_ratio=z_ratio, config=det_cfg
                        )
            except torch.OutOfMemoryError:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                logger.warning(
                    "out of memory on %s with a batch of %d volumes (frame %d); "
                    "predicting them one by one",
                    device,
                    len(chunk),
                    t,
                )
                one_by_one(chunk, z_ratio)
    return [found[i] for i in range(len(pairs))]


@contextmanager
def _evaluating(unet: torch.nn.Module, device: torch.device) -> Iterator[None]:
    """The U-Net in eval mode (its mode restored after), under inference mode and, on a GPU,
    autocast."""
    was_training = unet.training
    unet.eval()
    try:
        with torch.inference_mode(), autocast_context(device):
            yield
    finally:
        unet.train(was_training)


def _tile_detections(
    out: TileOutput, tile: Tile, z_ratio: float, config: DetectionConfig, t: int
) -> Detections:
    """The detections one tile owns, in volume coordinates."""
    return find_detections(
        out,
        z_ratio=z_ratio,
        config=config,
        t=t,
        region=tile.owned,
        valid=tile.valid,
        origin=tile.origin,
    )


class _FrameReader:
    """Reads frames of a (T, Z, Y, X) array-like on demand, keeping at most two in memory."""

    def __init__(self, images: ImageData) -> None:
        self.images = images
        self._kept: dict[int, np.ndarray] = {}

    def get(self, t: int, keep: Iterable[int]) -> np.ndarray:
        keep = set(keep)
        for old in [k for k in self._kept if k not in keep]:
            del self._kept[old]
        if t not in self._kept:
            frame = np.asarray(self.images[t])
            if frame.ndim != 3:
                raise InputError(
                    f"expected frame {t} of shape (Z, Y, X), found shape {frame.shape}"
                )
            self._kept[t] = frame
        return self._kept[t]


def _check_images(images: object) -> tuple[int, int, int, int]:
    shape = tuple(getattr(images, "shape", ()))
    if len(shape) != 4:
        raise InputError(
            "expected images of shape (T, Z, Y, X) (use Z = 1 for 2D), found "
            + (f"shape {shape}" if shape else type(images).__name__)
        )
    if min(shape) < 1:
        raise InputError(f"expected images with every axis >= 1, found shape {shape}")
    n_t, z, y, x = (int(s) for s in shape)
    return n_t, z, y, x


def _frame_list(frames: Iterable[int] | None, n_frames: int) -> list[int]:
    if frames is None:
        return list(range(n_frames))
    chosen = sorted({int(t) for t in frames})
    bad = [t for t in chosen if not 0 <= t < n_frames]
    if bad:
        raise InputError(
            f"expected frame indices in 0..{n_frames - 1}, found {', '.join(map(str, bad[:5]))}"
        )
    return chosen


def predict_sequence(
    images: ImageData,
    bundle_or_model: ModelSource,
    *,
    z_ratio: float,
    device: str | torch.device = "auto",
    tile: TilingConfig | Sequence[int] | None = None,
    cache: FrameCache | None = None,
    frames: Iterable[int] | None = None,
    progress: OnStep[Progress] | None = None,
    should_stop: Callable[[], bool] | None = None,
    detection: DetectionConfig | None = None,
    normalization: NormalizationConfig | None = None,
    on_heads: HeadsCallback | None = None,
    cell_radius: float | None = None,
) -> Iterator[Detections]:
    """Detect cells in every frame of a (T, Z, Y, X) series; yields one Detections per frame.

    Args:
        images: numpy or dask array (or any array-like with ``shape`` and frame indexing), or
            an ImageSequence (its ``data``).
        bundle_or_model: a ModelBundle or a bare U-Net module (see :func:`resolve_model`).
        z_ratio: z spacing / xy spacing.
        device: 'auto', 'cpu', 'cuda[:i]' or 'mps' (see :func:`resolve_device`).
        tile: tiling settings, or just a tile shape (Z, Y, X).
        cache: frames it holds are loaded instead of predicted; new ones are saved to it.
        frames: the frames to process (default all), yielded in increasing order.
        progress: called with a ``Progress("detect", done, total)`` after each frame.
        should_stop: checked before each frame pair; True raises Cancelled.
        detection, normalization: override the bundle's settings.
        on_heads: called as ``on_heads(t, heads)`` with the stitched small-head maps
            (``seg``, ``centre``, ``division``, ``radius``; each (C, Z, Y, X)) of every frame the
            U-Net runs on (not for frames loaded from the cache); used for instance masks.
        cell_radius: the typical nucleus radius of the images (xy pixels); each pair is resized
            in y and x to the model's ``normalization.reference_radius`` first and the
            detections (and heads) are mapped back (:mod:`~napari_cellect.infer.rescale`).
            None: the images as they are.

    Argument errors (shape, frames, device, model) are raised at the call, not at the first
    ``next()``.
    """
    if not hasattr(images, "shape") and hasattr(images, "data"):
        images = images.data  # an ImageSequence
    n_frames, depth = _check_images(images)[:2]
    todo = _frame_list(frames, n_frames)
    if not (math.isfinite(z_ratio) and z_ratio > 0):
        raise InputError(f"z_ratio: expected a finite number > 0, found {z_ratio}")
    model = resolve_model(bundle_or_model, detection, normalization)
    scale = xy_scale(cell_radius, model.normalization.reference_radius)
    if scale != 1.0:
        logger.info(
            "nuclei of radius %g px, model trained on %g px: frames resized by %.3g in y and x",
            cell_radius,
            model.normalization.reference_radius,
            scale,
        )
    min_z_ratio = model.normalization.min_z_ratio
    z_factor = z_scale(z_ratio, scale, depth, min_z_ratio)
    if z_factor != 1.0:
        logger.info(
            "z spacing %.3g of the model's pixel, below the %g it learned: frames resized by "
            "%.3g in z",
            z_ratio * scale,
            min_z_ratio,
            z_factor,
        )
    tiling = tiling_for(tile)
    dev = resolve_device(device)
    if n_frames == 1:
        logger.warning(
            "only one frame: it is paired with itself, so its detections carry no motion or "
            "division cues"
        )
    return _run(
        images,
        model,
        todo,
        n_frames,
        z_ratio,
        tiling,
        dev,
        cache,
        progress,
        should_stop,
        on_heads,
        scale,
    )


def _run(
    images: ImageData,
    model: InferenceModel,
    todo: list[int],
    n_frames: int,
    z_ratio: float,
    tiling: TilingConfig,
    device: torch.device,
    cache: FrameCache | None,
    progress: OnStep[Progress] | None,
    should_stop: Callable[[], bool] | None,
    on_heads: HeadsCallback | None = None,
    scale: float = 1.0,
) -> Iterator[Detections]:
    prepared = False
    reader = _FrameReader(images)
    for done, t in enumerate(todo):
        if should_stop is not None and should_stop():
            raise Cancelled(f"prediction cancelled after {done} of {len(todo)} frames")
        if cache is not None and cache.has(t):
            dets = cache.load(t)
            logger.debug("frame %d: %d detections from the cache", t, len(dets))
        else:
            if not prepared:  # only when the U-Net is needed: a full cache never moves it
                model.unet.to(device)
                if device.type == "cpu":
                    _channels_last(model.unet)
                prepared = True
            dets = _predict_one(
                reader, model, t, n_frames, z_ratio, tiling, device, on_heads, scale
            )
            if cache is not None:
                cache.save(dets)
        if progress is not None:
            progress(Progress("detect", done + 1, len(todo)))
        yield dets


def _heads_to_original(
    heads: dict[str, np.ndarray], shape: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """Head maps of a resized frame back on the frame's own grid (radii in its pixels)."""
    if all(h.shape[-3:] == tuple(shape[-3:]) for h in heads.values()):
        return heads
    out = {}
    for name, head in heads.items():
        factor = head.shape[-1] / shape[-1]
        resized = resize(head, tuple(shape[-3:]))
        out[name] = (resized / factor).astype(head.dtype) if name == "radius" else resized
    return out


def _channels_last(unet: torch.nn.Module) -> None:
    """channels_last_3d weights: about 25 % faster 3D convolutions on CPU."""
    try:
        # torch's stubs leave out Module.to's memory_format keyword, which it documents
        unet.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    except RuntimeError as err:  # a module with 4-D weights cannot take the 3-D format
        logger.debug("channels_last_3d not applied: %s", err)


def _predict_one(
    reader: _FrameReader,
    model: InferenceModel,
    t: int,
    n_frames: int,
    z_ratio: float,
    tiling: TilingConfig,
    device: torch.device,
    on_heads: HeadsCallback | None = None,
    scale: float = 1.0,
) -> Detections:
    start = time.perf_counter()
    nxt = t + 1 if t + 1 < n_frames else t
    first = reader.get(t, keep=(t, nxt))
    second = reader.get(nxt, keep=(t, nxt))
    if first.shape != second.shape:
        raise InputError(
            f"expected frames of one shape, found {first.shape} (frame {t}) and "
            f"{second.shape} (frame {nxt})"
        )
    pair = normalize_pair(np.stack([first, second]), model.normalization)
    shape = (int(pair.shape[1]), int(pair.shape[2]), int(pair.shape[3]))
    z_factor = z_scale(z_ratio, scale, shape[0], model.normalization.min_z_ratio)
    if scale != 1.0 or z_factor != 1.0:
        pair = resize(pair, scaled_shape(shape, scale, z_factor))
    factors = resize_factors(shape, pair.shape)
    result = predict_frame(
        model.unet,
        pair,
        t=t,
        z_ratio=grid_z_ratio(z_ratio, factors),
        detection=model.detection,
        tiling=tiling,
        device=device,
        return_heads=on_heads is not None,
        min_depth=model.normalization.min_depth,
    )
    dets = result.detections
    dets = detections_to_original(dets, factors)
    if on_heads is not None and result.heads is not None:
        on_heads(t, _heads_to_original(result.heads, shape))
    if not has_contrast(pair[0]):
        logger.warning("frame %d has no contrast (constant or NaN): no detections", t)
        dets = Detections.empty(t, dets.embedding_dim)
    logger.debug(
        "frame %d (pair %d, %d): %d detections in %.2f s",
        t,
        t,
        nxt,
        len(dets),
        time.perf_counter() - start,
    )
    return dets
