"""Training data: sources, frame-triplet crops, oversampling of divisions, augmentation.

A **source** is one annotated image series: images (T, Z, Y, X) (numpy, dask or zarr; read one
frame at a time), a :class:`~napari_cellect.track.graph.TrackGraph` of point annotations, the
``z_ratio`` and optionally an ``annotated_mask`` (see :mod:`napari_cellect.train.targets` for
the sparse-annotation policy).

A **sample** is a crop of three consecutive frames (t, t+1, t+2) seen as the two U-Net passes
that inference makes (docs/method.md §8.2): pass A on the pair (t, t+1) describes frame t,
pass B on (t+1, t+2) describes frame t+1. Pass B's embeddings of frame t+1 are the ones a
frame-t cell is linked to, so the triplet and link losses compare A's frame t with B's frame
t+1, exactly as at inference. Like inference (``infer/predict.py``) the last frame is paired
with itself. Frames t without annotations are never sampled; pass B only counts when frame t+1
is annotated.

**Normalisation is the inference one**: each pair is normalised as a whole frame pair with
:func:`napari_cellect.infer.normalize.normalize_pair` and the bundle's
:class:`NormalizationConfig`, then cropped; volumes smaller than the crop are padded with the
tiler's pad mode (the padding is ignored by the losses). Normalised pairs are cached (LRU).

**Augmentation** (one random draw per sample, applied identically to all four image channels,
to every target map and to the annotated points): flips in y and x, 90-degree rotations in yx
(only when the crop is square in yx), then, on the normalised intensities, a contrast scale and
brightness shift, a gamma on the positive part, Poisson (shot) noise and Gaussian noise.
Intensity changes come after normalisation because percentile normalisation already removes a
global gain, and what varies between microscopes afterwards is contrast, gamma and noise.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_cellect.data.arrays import ImageData
from napari_cellect.errors import InputError
from napari_cellect.infer.normalize import normalize_pair
from napari_cellect.settings.normalization import NormalizationConfig
from napari_cellect.settings.tiling import PAD_MODES, PadMode
from napari_cellect.track.graph import TrackGraph
from napari_cellect.train.targets import (
    AnnotationIndex,
    FrameCells,
    PairTargets,
    TargetConfig,
    crop_slices,
    pair_targets,
)

logger = logging.getLogger(__name__)

SOURCE_WEIGHTINGS = ("uniform", "cells")


# ------------------------------------------------------------------------------- sources


@dataclass
class TrainSource:
    """One annotated image series."""

    images: ImageData
    """(T, Z, Y, X) array-like; frames are read with ``np.asarray(images[t])``."""
    graph: TrackGraph
    """Point annotations (t, z, y, x voxels, radius, parent links)."""
    z_ratio: float = 1.0
    """z spacing over xy spacing."""
    annotated_mask: ImageData | None = None
    """Optional (T, Z, Y, X) or (Z, Y, X) bool array-like: where annotations are complete."""
    name: str = ""

    @property
    def shape(self) -> tuple[int, int, int, int]:
        n_t, z, y, x = self.images.shape
        return int(n_t), int(z), int(y), int(x)


def as_source(value: object, position: int = 0) -> TrainSource:
    """Accept a :class:`TrainSource` or a tuple ``(images, graph, z_ratio[, annotated_mask])``."""
    if isinstance(value, TrainSource):
        source = value
    elif isinstance(value, (tuple, list)) and 2 <= len(value) <= 4:
        given = dict(zip(("images", "graph", "z_ratio", "annotated_mask"), value))
        source = TrainSource(**given, name=f"source {position}")
    else:
        raise InputError(
            f"training source {position}: expected (images, TrackGraph, z_ratio) or a "
            f"TrainSource, found {type(value).__name__}"
        )
    check_source(source)
    return source


def check_source(source: TrainSource) -> None:
    """Raise :class:`InputError` when images and annotations cannot be trained on together."""
    name = source.name or "training source"
    shape = getattr(source.images, "shape", None)
    if shape is None or len(shape) != 4:
        raise InputError(
            f"{name}: expected images of shape (T, Z, Y, X), found "
            f"{'no array' if shape is None else tuple(shape)}"
        )
    if min(shape) < 1:
        raise InputError(f"{name}: expected non-empty images, found shape {tuple(shape)}")
    if not isinstance(source.graph, TrackGraph):
        raise InputError(
            f"{name}: expected annotations as a TrackGraph, found {type(source.graph).__name__}"
        )
    if not (np.isfinite(source.z_ratio) and source.z_ratio > 0):
        raise InputError(f"{name}: z_ratio must be a positive number, found {source.z_ratio}")
    graph = source.graph
    if len(graph) == 0:
        raise InputError(f"{name}: the annotations are empty (expected at least one cell)")
    n_t = shape[0]
    t = np.asarray(graph["t"])
    pos = graph.positions()
    in_time = (t >= 0) & (t < n_t)
    in_space = np.all((pos >= -0.5) & (pos <= np.asarray(shape[1:]) - 0.5), axis=1)
    usable = in_time & in_space
    if not np.any(usable):
        raise InputError(
            f"{name}: no annotation lies inside the images: images have {n_t} frames of "
            f"(Z, Y, X) = {tuple(shape[1:])}, annotations cover frames "
            f"{int(t.min())}..{int(t.max())}"
            f" and z {pos[:, 0].min():.1f}..{pos[:, 0].max():.1f}, y {pos[:, 1].min():.1f}.."
            f"{pos[:, 1].max():.1f}, x {pos[:, 2].min():.1f}..{pos[:, 2].max():.1f}"
        )
    if not np.all(usable):
        logger.warning(
            "%s: %d of %d annotations lie outside the images (%d frames of %s) and are ignored",
            name,
            int(np.count_nonzero(~usable)),
            len(graph),
            n_t,
            tuple(shape[1:]),
        )
    if n_t < 2:
        raise InputError(f"{name}: training needs at least 2 frames, found {n_t}")
    if source.annotated_mask is not None:
        mshape = tuple(getattr(source.annotated_mask, "shape", ()))
        if mshape not in (tuple(shape), tuple(shape[1:])):
            raise InputError(
                f"{name}: expected an annotated_mask of shape {tuple(shape)} or "
                f"{tuple(shape[1:])}, found {mshape}"
            )


def next_frame(t: int, n_frames: int) -> int:
    """The second frame of the pair that describes frame ``t``; the last frame pairs with itself."""
    return t + 1 if t + 1 < n_frames else t


# ---------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SamplingConfig:
    """Where crops are taken."""

    crop: tuple[int, int, int] = (16, 96, 96)
    """Crop shape (Z, Y, X); Y and X must be multiples of the U-Net's size multiple."""
    division_fraction: float = 0.25
    """Fraction of crops centred on a division (a mother in frame t or t+1), when any exist."""
    cell_fraction: float = 0.5
    """Fraction of crops centred on a random annotated cell of frame t; the rest are uniform."""
    centre_jitter: float = 0.25
    """Random shift of a cell-centred crop, as a fraction of the crop size."""
    source_weighting: str = "uniform"
    """How a sample picks its series: ``uniform`` (each series equally often) or ``cells``
    (in proportion to its annotated cells)."""
    pad_mode: PadMode = "reflect"
    """How volumes smaller than the crop are padded (the tiler's pad modes)."""
    cache_pairs: int = 64
    """Number of normalised frame pairs kept in memory."""

    def __post_init__(self) -> None:
        crop = tuple(int(c) for c in self.crop)
        if len(crop) != 3 or min(crop) < 1:
            raise InputError(f"SamplingConfig.crop: expected 3 positive sizes, found {self.crop}")
        object.__setattr__(self, "crop", crop)
        for name in ("division_fraction", "cell_fraction", "centre_jitter"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(
                    f"SamplingConfig.{name}: expected a value in [0, 1], found {value}"
                )
        if self.division_fraction + self.cell_fraction > 1.0 + 1e-9:
            raise InputError(
                "SamplingConfig: division_fraction + cell_fraction must be <= 1, found "
                f"{self.division_fraction} + {self.cell_fraction}"
            )
        if self.source_weighting not in SOURCE_WEIGHTINGS:
            raise InputError(
                f"SamplingConfig.source_weighting: expected one of {SOURCE_WEIGHTINGS}, found "
                f"{self.source_weighting!r}"
            )
        if self.pad_mode not in PAD_MODES:
            raise InputError(
                f"SamplingConfig.pad_mode: expected one of {PAD_MODES}, found {self.pad_mode!r}"
            )


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentations (set ``enabled=False`` for validation)."""

    enabled: bool = True
    flip: bool = True
    """Random flips in y and x."""
    rotate90: bool = True
    """Random multiples of 90 degrees in yx (square yx crops only)."""
    intensity_probability: float = 0.8
    """Probability of the contrast / brightness / gamma change."""
    contrast: tuple[float, float] = (0.75, 1.33)
    """Range of the multiplicative contrast factor (log-uniform)."""
    brightness: tuple[float, float] = (-0.1, 0.1)
    """Range of the additive brightness shift (normalised units)."""
    gamma: tuple[float, float] = (0.7, 1.4)
    """Range of the gamma applied to positive values (log-uniform)."""
    poisson_probability: float = 0.3
    """Probability of shot noise."""
    poisson_photons: tuple[float, float] = (20.0, 500.0)
    """Photons per unit normalised intensity (log-uniform; fewer = noisier)."""
    gaussian_probability: float = 0.5
    """Probability of additive Gaussian noise."""
    gaussian_sigma: tuple[float, float] = (0.0, 0.08)
    """Range of the Gaussian noise standard deviation (normalised units)."""


# ---------------------------------------------------------------------------- samples


@dataclass
class PassTargets:
    """The targets of both passes of a sample (A: frame t, B: frame t+1)."""

    a: PairTargets
    b: PairTargets


@dataclass
class TrainSample:
    """One training crop: two U-Net inputs and their targets."""

    images: np.ndarray
    """(2, 2, Z, Y, X) float32: pass A = (t, t+1), pass B = (t+1, t+2), normalised."""
    targets: PassTargets
    z_ratio: float
    source: int
    t: int
    origin: tuple[int, int, int]
    next_annotated: bool = True
    """Frame t+1 has annotations (else pass B and the cross-frame losses are skipped)."""
    transform: tuple[int, bool, bool] = (0, False, False)
    """(rot90 k, flip y, flip x) applied, for debugging."""


class Sampler:
    """Draws :class:`TrainSample` crops from training sources."""

    def __init__(
        self,
        sources: Sequence[Any],
        sampling: SamplingConfig | None = None,
        augment: AugmentConfig | None = None,
        targets: TargetConfig | None = None,
        normalization: NormalizationConfig | None = None,
    ):
        self.sources = [as_source(s, i) for i, s in enumerate(sources)]
        if not self.sources:
            raise InputError("training needs at least one annotated image series, found none")
        self.sampling = sampling or SamplingConfig()
        self.augment = augment or AugmentConfig()
        self.target_config = targets or TargetConfig()
        self.normalization = normalization or NormalizationConfig()
        self.indices = [AnnotationIndex(s.graph, self.target_config) for s in self.sources]
        self._cache: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        # frames t that can start a sample: annotated, with a frame t+1 in the images
        self.frames: list[np.ndarray] = []
        self.division_events: list[np.ndarray] = []
        for source, index in zip(self.sources, self.indices):
            n_t = source.shape[0]
            frames = index.annotated_frames
            frames = frames[(frames >= 0) & (frames + 1 < n_t)]
            self.frames.append(frames)
            # (t, row) of mothers: a crop at t shows the division when the mother is in t or t+1
            rows = np.flatnonzero(index.mother)
            self.division_events.append(rows)
        n_frames = sum(len(f) for f in self.frames)
        if n_frames == 0:
            raise InputError(
                "no annotated frame t has a next frame t+1 in its images; training needs pairs"
            )
        usable = np.array([len(f) > 0 for f in self.frames], dtype=np.float64)
        if self.sampling.source_weighting == "cells":
            usable *= [
                sum(len(index.rows_in_frame(int(t))) for t in f)
                for f, index in zip(self.frames, self.indices)
            ]
        self.source_weights = usable
        self.source_weights /= self.source_weights.sum()

    # -------------------------------------------------------------------- images
    def normalized_pair(self, source: int, t: int) -> np.ndarray:
        """(2, Z, Y, X) float32 normalised pair (t, next frame), as at inference (cached)."""
        src = self.sources[source]
        t_next = next_frame(t, src.shape[0])
        key = (source, t, t_next)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        pair = np.stack([np.asarray(src.images[t]), np.asarray(src.images[t_next])])
        out = normalize_pair(pair, self.normalization)
        self._cache[key] = out
        while len(self._cache) > max(1, self.sampling.cache_pairs):
            self._cache.popitem(last=False)
        return out

    def _crop(
        self, volume: np.ndarray, origin: tuple[int, int, int], fill_mode: PadMode
    ) -> np.ndarray:
        """Crop the last three axes at ``origin`` with the crop shape, padding outside."""
        crop = self.sampling.crop
        z, y, x = volume.shape[-3:]
        vol_sl, crop_sl = crop_slices(origin, crop, (z, y, x))
        lead = volume.shape[:-3]
        part = volume[(..., *vol_sl)]
        if part.shape[-3:] == crop:
            return np.ascontiguousarray(part)
        pad = [(0, 0)] * len(lead) + [(c.start, size - c.stop) for c, size in zip(crop_sl, crop)]
        if fill_mode == "constant" or min(part.shape[-3:]) == 0:
            return np.pad(part, pad, mode="constant")
        return np.pad(part, pad, mode=fill_mode)

    # -------------------------------------------------------------------- crops
    def choose_origin(self, rng: np.random.Generator, source: int, t: int) -> tuple[int, int, int]:
        """A crop origin: centred on a division, on a cell, or uniform (SamplingConfig)."""
        cfg = self.sampling
        shape = np.asarray(self.sources[source].shape[1:])
        crop = np.asarray(cfg.crop)
        index = self.indices[source]
        roll = rng.random()
        centre = None
        if roll < cfg.division_fraction:
            mothers = self.division_events[source]
            near = mothers[(index.t[mothers] == t) | (index.t[mothers] == t + 1)]
            if len(near):
                centre = index.positions[rng.choice(near)]
        if centre is None and roll < cfg.division_fraction + cfg.cell_fraction:
            rows = index.rows_in_frame(t)
            if len(rows):
                centre = index.positions[rng.choice(rows)]
        origin = np.zeros(3, dtype=np.int64)
        for axis in range(3):
            if crop[axis] >= shape[axis]:
                origin[axis] = -((crop[axis] - shape[axis]) // 2)  # centred padding, like the tiler
                continue
            hi = shape[axis] - crop[axis]
            if centre is None:
                origin[axis] = rng.integers(0, hi + 1)
            else:
                jitter = rng.uniform(-cfg.centre_jitter, cfg.centre_jitter) * crop[axis]
                origin[axis] = int(np.clip(round(centre[axis] - crop[axis] / 2 + jitter), 0, hi))
        return int(origin[0]), int(origin[1]), int(origin[2])

    def sample(
        self,
        rng: np.random.Generator,
        source: int | None = None,
        t: int | None = None,
        origin: tuple[int, int, int] | None = None,
        augment: bool | None = None,
    ) -> TrainSample:
        """Draw one sample (any of ``source``, ``t``, ``origin`` may be fixed)."""
        if source is None:
            source = int(rng.choice(len(self.sources), p=self.source_weights))
        if t is None:
            frames = self.frames[source]
            if len(frames) == 0:
                raise InputError(f"source {source} has no annotated frame with a next frame")
            t = int(rng.choice(frames))
        if origin is None:
            origin = self.choose_origin(rng, source, t)
        sample = self.build(source, t, origin)
        if self.augment.enabled if augment is None else augment:
            sample = augment_sample(sample, self.augment, rng)
        return sample

    def build(self, source: int, t: int, origin: tuple[int, int, int]) -> TrainSample:
        """The un-augmented sample of frames (t, t+1, t+2) at ``origin``."""
        src = self.sources[source]
        index = self.indices[source]
        n_t = src.shape[0]
        if not 0 <= t < n_t - 1:
            raise InputError(f"frame {t}: a sample needs frames t and t+1 within 0..{n_t - 1}")
        mode = self.sampling.pad_mode
        crop = self.sampling.crop
        pair_a = self._crop(self.normalized_pair(source, t), origin, mode)
        pair_b = self._crop(self.normalized_pair(source, t + 1), origin, mode)
        images = np.stack([pair_a, pair_b]).astype(np.float32, copy=False)
        _, inside = crop_slices(origin, crop, src.shape[1:])
        mask_a = self._mask(source, t, origin)
        mask_b = self._mask(source, t + 1, origin)
        t_b_next = t + 2 if t + 2 < n_t else -1
        targets_a = pair_targets(
            index, t, origin, crop, src.z_ratio, next_t=t + 1, annotated_mask=mask_a, inside=inside
        )
        targets_b = pair_targets(
            index,
            t + 1,
            origin,
            crop,
            src.z_ratio,
            next_t=t_b_next,
            annotated_mask=mask_b,
            inside=inside,
        )
        next_annotated = index.is_annotated(t + 1)
        if not next_annotated:
            targets_b.valid[...] = False
            targets_b.division_valid[...] = False
        return TrainSample(
            images=images,
            targets=PassTargets(targets_a, targets_b),
            z_ratio=float(src.z_ratio),
            source=source,
            t=t,
            origin=origin,
            next_annotated=next_annotated,
        )

    def _mask(self, source: int, t: int, origin: tuple[int, int, int]) -> np.ndarray | None:
        mask = self.sources[source].annotated_mask
        if mask is None:
            return None
        frame = mask[t] if len(mask.shape) == 4 else mask
        return self._crop(np.asarray(frame, dtype=bool), origin, "constant").astype(bool)


# ---------------------------------------------------------------------------- augmentation


def _log_uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    if lo <= 0 or hi <= 0:
        return float(rng.uniform(lo, hi))
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def transform_maps(array: np.ndarray, k: int, flip_y: bool, flip_x: bool) -> np.ndarray:
    """Rotate by ``k`` x 90 degrees in the last two axes (y, x), then flip y and/or x."""
    out = np.rot90(array, k, axes=(-2, -1)) if k % 4 else array
    if flip_y:
        out = out[..., ::-1, :]
    if flip_x:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)


def transform_points(
    points: np.ndarray, shape_yx: tuple[int, int], k: int, flip_y: bool, flip_x: bool
) -> np.ndarray:
    """The (N, 3) z, y, x positions after :func:`transform_maps` of a map with ``shape_yx``."""
    pts = np.array(points, dtype=np.float64, copy=True).reshape(-1, 3)
    ny, nx = shape_yx
    for _ in range(k % 4):
        # np.rot90 (axes y, x) moves [y, x] to [nx - 1 - x, y]; the yx shape swaps
        y, x = pts[:, 1].copy(), pts[:, 2].copy()
        pts[:, 1] = nx - 1 - x
        pts[:, 2] = y
        ny, nx = nx, ny
    if flip_y:
        pts[:, 1] = ny - 1 - pts[:, 1]
    if flip_x:
        pts[:, 2] = nx - 1 - pts[:, 2]
    return pts


def _transform_cells(
    cells: FrameCells, shape_yx: tuple[int, int], k: int, fy: bool, fx: bool
) -> FrameCells:
    out = cells.subset(np.ones(len(cells), dtype=bool))
    out.positions = transform_points(cells.positions, shape_yx, k, fy, fx)
    return out


def _transform_targets(tg: PairTargets, k: int, fy: bool, fx: bool) -> PairTargets:
    shape_yx = tg.seg.shape[-2:]
    return PairTargets(
        seg=transform_maps(tg.seg, k, fy, fx),
        centre=transform_maps(tg.centre, k, fy, fx),
        radius=transform_maps(tg.radius, k, fy, fx),
        division=transform_maps(tg.division, k, fy, fx),
        valid=transform_maps(tg.valid, k, fy, fx),
        division_valid=tg.division_valid.copy(),
        ids_t=transform_maps(tg.ids_t, k, fy, fx),
        ids_next=transform_maps(tg.ids_next, k, fy, fx),
        cells_t=_transform_cells(tg.cells_t, shape_yx, k, fy, fx),
        cells_next=_transform_cells(tg.cells_next, shape_yx, k, fy, fx),
        t=tg.t,
    )


def augment_geometry(sample: TrainSample, k: int, flip_y: bool, flip_x: bool) -> TrainSample:
    """The same rotation / flips applied to the images, every target map and every point."""
    return TrainSample(
        images=transform_maps(sample.images, k, flip_y, flip_x),
        targets=PassTargets(
            _transform_targets(sample.targets.a, k, flip_y, flip_x),
            _transform_targets(sample.targets.b, k, flip_y, flip_x),
        ),
        z_ratio=sample.z_ratio,
        source=sample.source,
        t=sample.t,
        origin=sample.origin,
        next_annotated=sample.next_annotated,
        transform=(k, flip_y, flip_x),
    )


def augment_intensity(
    images: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> np.ndarray:
    """Contrast, brightness, gamma, shot and Gaussian noise on normalised images (a copy)."""
    out = np.array(images, dtype=np.float32, copy=True)
    if rng.random() < cfg.intensity_probability:
        gamma = _log_uniform(rng, cfg.gamma)
        positive = out > 0
        out[positive] = out[positive] ** np.float32(gamma)
        out *= np.float32(_log_uniform(rng, cfg.contrast))
        out += np.float32(rng.uniform(*cfg.brightness))
    if rng.random() < cfg.poisson_probability:
        photons = _log_uniform(rng, cfg.poisson_photons)
        counts = rng.poisson(np.clip(out, 0.0, None) * photons)
        out = np.where(out > 0, counts / photons, out).astype(np.float32)
    if rng.random() < cfg.gaussian_probability:
        sigma = float(rng.uniform(*cfg.gaussian_sigma))
        if sigma > 0:
            out += rng.normal(0.0, sigma, size=out.shape).astype(np.float32)
    return out


def augment_sample(
    sample: TrainSample, cfg: AugmentConfig, rng: np.random.Generator
) -> TrainSample:
    """Random geometric and intensity augmentation of one sample (see the module docstring)."""
    k, flip_y, flip_x = 0, False, False
    ny, nx = sample.images.shape[-2:]
    if cfg.rotate90 and ny == nx:
        k = int(rng.integers(0, 4))
    if cfg.flip:
        flip_y, flip_x = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    if k or flip_y or flip_x:
        sample = augment_geometry(sample, k, flip_y, flip_x)
    sample.images = augment_intensity(sample.images, cfg, rng)
    return sample


# ---------------------------------------------------------------------------- batching


@dataclass
class Batch:
    """Samples stacked for one forward pass of 2B inputs: all A passes, then all B passes."""

    x: np.ndarray
    """(2B, 2, Z, Y, X) float32 network input."""
    seg: np.ndarray
    centre: np.ndarray
    radius: np.ndarray
    division: np.ndarray
    """(2B, 2, Z, Y, X)."""
    valid: np.ndarray
    division_valid: np.ndarray
    """(2B, 2, Z, Y, X) bool."""
    dividing: np.ndarray
    """(2B, Z, Y, X) bool: voxels of mothers and daughters (extra loss weight)."""
    samples: list[TrainSample] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.samples)


def collate(samples: Sequence[TrainSample]) -> Batch:
    """Stack samples into a :class:`Batch` (numpy; the training loop moves it to the device)."""
    if not samples:
        raise InputError("collate: expected at least one sample")
    targets = [s.targets.a for s in samples] + [s.targets.b for s in samples]
    x = np.concatenate(
        [np.stack([s.images[0] for s in samples]), np.stack([s.images[1] for s in samples])]
    )
    division = np.stack([tg.division for tg in targets])
    valid = np.stack([tg.valid for tg in targets])
    div_known = np.stack([tg.division_valid for tg in targets])  # (2B, 2)
    division_valid = valid[:, None] & div_known[:, :, None, None, None]
    return Batch(
        x=x,
        seg=np.stack([tg.seg for tg in targets]),
        centre=np.stack([tg.centre for tg in targets]),
        radius=np.stack([tg.radius for tg in targets]),
        division=division,
        valid=valid,
        division_valid=division_valid,
        dividing=np.any(division, axis=1),
        samples=list(samples),
    )
