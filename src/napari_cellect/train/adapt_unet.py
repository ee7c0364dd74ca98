"""Adapting the detector (the U-Net's heads) to a person's corrections.

Corrections on a few frames become sparse targets (:mod:`~napari_cellect.train.adapt_targets`):
added and approved cells are nuclei, deleted detections background, approved divisions
division targets, approved links positive pairs of the embedding; what nobody reviewed is
ignored. Starting from the current bundle, only the heads train by default (the 1x1 head
convolutions, the embedding and the centre-refinement network; optionally the last decoder
block too, :attr:`AdaptConfig.decoder_blocks`), on crops around the corrections, for a few
dozen Adam steps with an L2-SP penalty towards the starting weights. The centre-refinement
network runs on the new segmentation logits at every step, but only its last layer trains
unless :attr:`AdaptConfig.train_cen`.

Speed: the trunk (everything the trained part does not contain) runs once per corrected frame
(:meth:`~napari_cellect.model.unet.CompactUNet3D.trunk_features`), without gradients; every
step then runs only the trained part on crops of those features. On 2 CPU cores one step costs
about what the U-Net costs on a crop, not a full forward and backward pass.

The given bundle is never modified (the work happens on a copy); a cancelled run (``should_stop``
or the generator closed) leaves it as it was. Only the ``compact`` architecture can be adapted.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from napari_cellect.errors import Cancelled, InputError
from napari_cellect.infer.device import resolve_device
from napari_cellect.infer.normalize import normalize_pair
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.model.unet import CompactUNet3D, TrunkFeatures, UNetOutput
from napari_cellect.progress import OnStep, Progress, run_to_end
from napari_cellect.settings.normalization import NormalizationConfig
from napari_cellect.track.correction_set import CorrectionSet
from napari_cellect.track.detections import Detections
from napari_cellect.track.matching import DetectionCounts, match_detections
from napari_cellect.train.adapt_targets import (
    CorrectionAnnotation,
    CropTargets,
    ReviewedRegionConfig,
    correction_annotation,
    crop_targets,
)
from napari_cellect.train.data import next_frame
from napari_cellect.train.losses import (
    LossConfig,
    batch_hard_triplet_loss,
    division_loss,
    ordinal_centre_loss,
    radius_loss,
    segmentation_loss,
)
from napari_cellect.train.targets import NUCLEUS, crop_slices

if TYPE_CHECKING:
    from napari_cellect.data.arrays import ImageData

logger = logging.getLogger(__name__)

#: The progress stages of an adaptation.
STAGE_FEATURES = "detector: frames"
STAGE_TRAIN = "detector: training"
#: Modules of the compact U-Net that make the heads (trained by default): the 1x1 head
#: convolutions, the embedding and the last layer of the centre-refinement network (CEN).
HEAD_MODULES = ("heads", "embed", "cen_out")


@dataclass(frozen=True)
class AdaptConfig:
    """How the detector is adapted (see the module docstring)."""

    steps: int = 30
    """Adam steps."""
    crops_per_step: int = 2
    """Crops around corrections per step."""
    crop: tuple[int, int] = (64, 64)
    """(Y, X) of a crop in voxels (rounded up to the U-Net's grid); crops span the whole Z."""
    lr: float = 2e-3
    """Adam learning rate."""
    l2sp: float = 1e-2
    """Weight of ``||w - w0||^2`` (keeps the weights near the starting ones)."""
    decoder_blocks: int = 0
    """0: the heads only; 1: the last decoder block (and its upsampling) too."""
    train_cen: bool = False
    """Train the whole centre-refinement network, not only its last layer (several times
    slower on the CPU: its narrow 3D convolutions cost more than the rest of the heads)."""
    device: str = "auto"
    """Where to train: auto (a GPU when there is one), cpu, cuda, mps."""
    threads: int | None = None
    """Torch CPU threads while adapting (None: leave as is)."""
    seed: int = 0
    losses: LossConfig = field(default_factory=LossConfig)
    review: ReviewedRegionConfig = field(default_factory=ReviewedRegionConfig)

    def __post_init__(self) -> None:
        for name in ("steps", "crops_per_step"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"AdaptConfig.{name}: expected >= 1, found {getattr(self, name)}")
        if self.decoder_blocks not in (0, 1):
            raise InputError(
                f"AdaptConfig.decoder_blocks: expected 0 or 1, found {self.decoder_blocks}"
            )
        if not (self.lr > 0 and self.l2sp >= 0):
            raise InputError(
                f"AdaptConfig: expected lr > 0 and l2sp >= 0, found {self.lr} and {self.l2sp}"
            )
        if len(self.crop) != 2 or min(self.crop) < 1:
            raise InputError(f"AdaptConfig.crop: expected (Y, X) > 0, found {self.crop}")


# --------------------------------------------------------------------------------- the part


def adapt_detector_part(
    bundle: ModelBundle,
    corrections: CorrectionSet,
    images: ImageData,
    detections: Sequence[Detections] | None,
    should_stop: Callable[[], bool] | None = None,
    config: AdaptConfig | None = None,
) -> Generator[Progress, None, ModelBundle]:
    """The detector part of an update, as the guard calls every part: yields progress steps,
    returns a new bundle whose U-Net is adapted (``bundle`` is not modified).

    Args:
        bundle: the model that made the corrected tracks.
        corrections: the person's corrections (their ``z_ratio`` is the images').
        images: the (T, Z, Y, X) images the corrections were made on (numpy, dask, zarr).
        detections: the raw detections of the tracking run (radii for nodes without one).
        should_stop: polled before each step; True raises :class:`Cancelled`.

    Raises:
        InputError: not a compact U-Net, nothing reviewed, corrections outside the images.
        Cancelled: ``should_stop`` said so.
    """
    cfg = config or AdaptConfig()
    unet = bundle.unet
    if not isinstance(unet, CompactUNet3D):
        raise InputError(
            f"only a compact U-Net can be adapted to corrections; this model's is "
            f"{bundle.unet_config.architecture!r}"
        )
    annotation = correction_annotation(corrections, list(detections or []), cfg.review)
    shape = tuple(int(s) for s in getattr(images, "shape", ()))
    if len(shape) != 4:
        raise InputError(f"expected (T, Z, Y, X) images, found shape {shape}")
    frames = annotation.frames
    outside = frames[(frames < 0) | (frames >= shape[0])]
    if len(outside):
        raise InputError(
            f"corrections in frame(s) {outside[:10].tolist()}, but the images have "
            f"{shape[0]} frames (0..{shape[0] - 1})"
        )
    return _adapt(bundle, annotation, images, cfg, should_stop)


def adapt_detector(
    bundle: ModelBundle,
    corrections: CorrectionSet,
    images: ImageData,
    detections: Sequence[Detections] | None = None,
    *,
    config: AdaptConfig | None = None,
    progress: OnStep[Progress] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ModelBundle:
    """:func:`adapt_detector_part` run to the end: the adapted bundle."""
    work = adapt_detector_part(bundle, corrections, images, detections, should_stop, config)
    return run_to_end(work, progress)


def trained_parameters(
    unet: CompactUNet3D, decoder_blocks: int = 0, train_cen: bool = False
) -> dict[str, Tensor]:
    """The parameters an adaptation trains, by name."""
    prefixes = list(HEAD_MODULES) + (["cen"] if train_cen else [])
    if decoder_blocks:
        n = len(unet.trunk.dec)
        prefixes += [f"trunk.dec.{n - 1}.", f"trunk.up.{n - 1}."]
    return {
        name: p
        for name, p in unet.named_parameters()
        if any(name == pre or name.startswith(pre.rstrip(".") + ".") for pre in prefixes)
    }


# ------------------------------------------------------------------------------ frames


@dataclass
class _Frame:
    """One corrected frame: the trunk's features of its pair and its full-frame targets."""

    t: int
    features: TrunkFeatures
    targets: CropTargets
    points: np.ndarray  # (N, 3) corrections (padded-frame voxels): crop centres
    shape: tuple[int, int, int]  # padded frame (Z, Y, X)


def _padding(
    shape: tuple[int, int, int], multiple: tuple[int, int, int], min_depth: int
) -> list[tuple[int, int]]:
    """Symmetric padding of a frame up to the grid (and the model's smallest depth)."""
    out = []
    for axis, (n, m) in enumerate(zip(shape, multiple)):
        target = max(n, min_depth) if axis == 0 else n
        target = -(-target // m) * m
        out.append(((target - n) // 2, target - n - (target - n) // 2))
    return out


def _frame(
    unet: CompactUNet3D,
    normalization: NormalizationConfig,
    annotation: CorrectionAnnotation,
    images: ImageData,
    t: int,
    device: torch.device,
) -> _Frame:
    n_frames = int(images.shape[0])
    pair = np.stack([np.asarray(images[t]), np.asarray(images[next_frame(t, n_frames)])])
    pair = normalize_pair(pair.astype(np.float32), normalization)
    shape = (int(pair.shape[1]), int(pair.shape[2]), int(pair.shape[3]))
    stem, pooling, size_multiple = unet.config.stem, unet.config.pooling, unet.size_multiple
    multiple = (
        max(stem[0] * pooling[0], size_multiple[0]),
        max(stem[1] * pooling[1], size_multiple[1]),
        max(stem[2] * pooling[2], size_multiple[2]),
    )
    pad = _padding(shape, multiple, normalization.min_depth)
    mode: Literal["reflect", "edge"] = (
        "reflect" if all(n > max(p) for n, p in zip(shape, pad)) else "edge"
    )
    padded = np.pad(pair, [(0, 0), *pad], mode=mode)
    origin = (-pad[0][0], -pad[1][0], -pad[2][0])
    frame_shape = (int(padded.shape[1]), int(padded.shape[2]), int(padded.shape[3]))
    _, inside = crop_slices(origin, frame_shape, shape)
    x = torch.from_numpy(np.ascontiguousarray(padded[None])).to(device)
    if device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():  # the trunk stays fixed: its features carry no graph
        features = unet.trunk_features(x)
    previous = t - 1 if t > 0 else None
    targets = crop_targets(annotation, t, origin, frame_shape, inside=inside, previous=previous)
    points = annotation.points(t) - np.asarray(origin, np.float64)
    return _Frame(t, features, targets, points, frame_shape)


def _frames(
    unet: CompactUNet3D,
    normalization: NormalizationConfig,
    annotation: CorrectionAnnotation,
    images: ImageData,
    device: torch.device,
    stop_if_asked: Callable[[], None],
) -> Generator[Progress, None, dict[int, _Frame]]:
    frames: dict[int, _Frame] = {}
    times = annotation.frames.tolist()
    yield Progress(STAGE_FEATURES, 0, len(times))
    for i, t in enumerate(times):
        stop_if_asked()
        frames[t] = _frame(unet, normalization, annotation, images, t, device)
        yield Progress(STAGE_FEATURES, i + 1, len(times))
    return frames


def _align(unet: CompactUNet3D) -> tuple[int, int]:
    """(y, x) step of crop windows: the coarsest feature grid the trained part reads."""
    ucfg = unet.config
    return ucfg.stem[1] * ucfg.pooling[1], ucfg.stem[2] * ucfg.pooling[2]


def correction_loss(
    bundle: ModelBundle,
    corrections: CorrectionSet,
    images: ImageData,
    detections: Sequence[Detections] | None = None,
    config: AdaptConfig | None = None,
) -> float:
    """The adaptation's loss on the whole corrected frames (mean over frames): how well a
    bundle's heads fit the corrections."""
    cfg = config or AdaptConfig()
    annotation = correction_annotation(corrections, list(detections or []), cfg.review)
    unet = bundle.unet
    if not isinstance(unet, CompactUNet3D):
        raise InputError(
            f"only a compact U-Net has a correction loss; this model's is "
            f"{bundle.unet_config.architecture!r}"
        )
    device = next(unet.parameters()).device
    with torch.no_grad():
        frames = run_to_end(
            _frames(unet, bundle.normalization, annotation, images, device, lambda: None)
        )
        losses = [
            float(_crop_loss(unet, f, frames, slice(0, f.shape[1]), slice(0, f.shape[2]), cfg))
            for f in frames.values()
        ]
    return float(np.mean(losses))


def detection_counts(
    bundle: ModelBundle,
    corrections: CorrectionSet,
    images: ImageData,
    frames: Sequence[int],
    *,
    detections: Sequence[Detections] | None = None,
    device: str = "auto",
    config: AdaptConfig | None = None,
) -> DetectionCounts:
    """How well ``bundle`` detects the reviewed cells of ``frames`` (say the corrected frames a
    guard held back): the frames are predicted and merged as tracking does, then matched to the
    reviewed cells (:func:`~napari_cellect.track.matching.match_detections`). True positives
    are matched reviewed cells, false negatives missed ones, false positives detections that
    match none and lie where a person looked (a frame reviewed whole, the shell around a
    reviewed cell, a deleted detection). ``detections``: the tracking run's raw ones, which
    tell whole reviewed frames (as in training)."""
    from napari_cellect.pipeline import iter_detect

    cfg = config or AdaptConfig()
    annotation = correction_annotation(corrections, list(detections or []), cfg.review)
    z = annotation.z_ratio
    merged: dict[int, Detections] = {}
    for step in iter_detect(images, bundle, z_ratio=z, device=device, frames=list(frames)):
        if step.detections is not None:  # each detect step carries its frame's merged ones
            merged[step.detections.t] = step.detections
    index = annotation.index
    total = DetectionCounts()
    for t, dets in merged.items():
        rows = index.rows_in_frame(t)
        matching = match_detections(dets.positions, index.positions[rows], index.radius[rows], z)
        tp = matching.n_matched
        stray = dets.positions[matching.primary < 0]
        if t not in annotation.complete and len(stray):
            stray = stray[_looked_at(annotation, t, stray)]
        total = total + DetectionCounts(tp, len(stray), len(rows) - tp)
    return total


def _looked_at(annotation: CorrectionAnnotation, t: int, points: np.ndarray) -> np.ndarray:
    """(N,) bool: points within the reviewed shell of a cell or a deleted detection of ``t``."""
    cfg = annotation.config
    index, gone = annotation.index, annotation.negatives
    rows = index.rows_in_frame(t)
    at = gone["t"] == t
    centres = np.concatenate([index.positions[rows], gone["positions"][at]])
    reach = np.concatenate(
        [index.radius[rows] * cfg.context_radii, gone["radius"][at] * cfg.negative_radii]
    ).astype(np.float64)
    if len(centres) == 0:
        return np.zeros(len(points), bool)
    scale = np.array([annotation.z_ratio, 1.0, 1.0])
    dist, nearest = cKDTree(centres * scale).query(points * scale)
    return dist <= reach[nearest]


# ----------------------------------------------------------------------------- training


def _adapt(
    bundle: ModelBundle,
    annotation: CorrectionAnnotation,
    images: ImageData,
    cfg: AdaptConfig,
    should_stop: Callable[[], bool] | None,
) -> Generator[Progress, None, ModelBundle]:
    started = time.perf_counter()
    threads_before = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    try:
        device = resolve_device(cfg.device)
        tuned = copy.deepcopy(bundle)
        # the heads learn the frames as they are (never resized, in z either), so the adapted
        # model predicts them as they are, where the base model shrinks stacks fine in z
        tuned.normalization = replace(tuned.normalization, min_z_ratio=None)
        tuned.to(device).eval()
        unet = tuned.unet
        assert isinstance(unet, CompactUNet3D)
        if device.type == "cpu":  # the narrow convolutions are 2-3x faster channels-last
            unet.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
        params = trained_parameters(unet, cfg.decoder_blocks, cfg.train_cen)
        trained = set(map(id, params.values()))
        for p in unet.parameters():
            p.requires_grad_(id(p) in trained)

        def stop_if_asked() -> None:
            if should_stop is not None and should_stop():
                raise Cancelled("detector adaptation cancelled; the model is unchanged")

        frames = yield from _frames(
            unet, tuned.normalization, annotation, images, device, stop_if_asked
        )
        times = list(frames)
        align = _align(unet)
        anchors = {name: p.detach().clone() for name, p in params.items()}
        optimiser = torch.optim.Adam(params.values(), lr=cfg.lr)
        rng = np.random.default_rng(cfg.seed)
        weights = np.array([max(1, len(f.points)) for f in frames.values()], np.float64)
        order = list(frames.values())
        first_loss = last_loss = float("nan")
        for step in range(cfg.steps):
            stop_if_asked()
            optimiser.zero_grad()
            picks = rng.choice(len(order), size=cfg.crops_per_step, p=weights / weights.sum())
            windows = [(order[k], *_crop_window(order[k], rng, cfg.crop, align)) for k in picks]
            losses = [_crop_loss(unet, f, frames, ys, xs, cfg) for f, ys, xs in windows]
            loss = torch.stack(losses).mean()
            data_loss = float(loss.detach())
            if cfg.l2sp > 0:
                loss = loss + cfg.l2sp * sum(
                    ((p - anchors[n]) ** 2).sum() for n, p in params.items()
                )
            loss.backward()
            optimiser.step()
            first_loss = data_loss if step == 0 else first_loss
            last_loss = data_loss
            yield Progress(STAGE_TRAIN, step + 1, cfg.steps)
        stop_if_asked()
        for p in unet.parameters():
            p.requires_grad_(True)
        tuned.to("cpu").eval()
        seconds = time.perf_counter() - started
        _record(tuned, annotation, cfg, times, first_loss, last_loss, seconds)
        logger.info(
            "adapted the detector on %d frame(s) in %.1f s: loss %.4g -> %.4g",
            len(times),
            seconds,
            first_loss,
            last_loss,
        )
        return tuned
    finally:
        torch.set_num_threads(threads_before)


def _crop_window(
    frame: _Frame, rng: np.random.Generator, crop: tuple[int, int], align: tuple[int, int]
) -> tuple[slice, slice]:
    """(y, x) slices of a crop holding a random correction, aligned to the feature grids."""
    centre = frame.points[rng.integers(len(frame.points))] if len(frame.points) else None
    out = []
    for axis, (size, a) in enumerate(zip(crop, align)):
        n = frame.shape[1 + axis]
        size = min(-(-size // a) * a, n)
        hi = n - size
        if centre is None:
            start = int(rng.integers(0, hi + 1))
        else:
            jitter = rng.uniform(-0.25, 0.25) * size
            start = int(np.clip(round(centre[1 + axis] - size / 2 + jitter), 0, hi))
        start = start // a * a
        out.append(slice(start, start + size))
    return out[0], out[1]


def _features_crop(
    features: TrunkFeatures, ys: slice, xs: slice, stem: tuple[int, ...], pool: tuple[int, ...]
) -> TrunkFeatures:
    def cut(tensor: Tensor, fy: int, fx: int) -> Tensor:
        return tensor[..., ys.start // fy : ys.stop // fy, xs.start // fx : xs.stop // fx]

    sy, sx = stem[1], stem[2]
    coarse = features.coarse
    return TrunkFeatures(
        cut(features.fine, sy, sx),
        None if coarse is None else cut(coarse, sy * pool[1], sx * pool[2]),
        cut(features.skip, sy, sx),
        cut(features.pooled_input, sy, sx),
    )


def _crop_loss(
    unet: CompactUNet3D,
    frame: _Frame,
    frames: dict[int, _Frame],
    ys: slice,
    xs: slice,
    cfg: AdaptConfig,
) -> Tensor:
    """The voxel losses of the crop ``ys, xs`` of ``frame`` and the triplet loss of its cells
    with their approved successors in the next frame (same crop of that frame's features)."""
    out = _heads(unet, frame, ys, xs, cfg)
    device = out.seg.device
    tg = frame.targets

    def tensor(array: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(array[..., ys, xs])[None]).to(device)

    seg, valid, centre = tensor(tg.seg), tensor(tg.valid), tensor(tg.centre)
    division = tensor(tg.division)
    w = cfg.losses
    voxel_weight = 1.0 + (w.dividing_voxel_weight - 1.0) * division.amax(dim=1)
    total = (
        w.segmentation * segmentation_loss(out.seg, seg, valid, w.seg_class_weights, voxel_weight)
        + w.centre
        * ordinal_centre_loss(out.centre, centre, valid, w.centre_pos_weights, voxel_weight)
        + w.radius * radius_loss(out.radius, tensor(tg.radius), valid & (seg == NUCLEUS))
        + w.division
        * division_loss(out.division, division, tensor(tg.division_valid), w.division_pos_weight)
    )
    following = frames.get(frame.t + 1)
    if w.triplet > 0 and following is not None:
        total = total + w.triplet * _triplet(unet, frame, following, out, ys, xs, cfg)
    return total


def _heads(
    unet: CompactUNet3D, frame: _Frame, ys: slice, xs: slice, cfg: AdaptConfig
) -> UNetOutput:
    ucfg = unet.config
    crop = _features_crop(frame.features, ys, xs, ucfg.stem, ucfg.pooling)
    out = unet.heads_from(
        crop, coarse_embedding=True, redo_last_block=cfg.decoder_blocks > 0, cen_grad=cfg.train_cen
    )
    return UNetOutput(*(o.float() for o in out))


def _triplet(
    unet: CompactUNet3D,
    frame: _Frame,
    following: _Frame,
    out: UNetOutput,
    ys: slice,
    xs: slice,
    cfg: AdaptConfig,
) -> Tensor:
    """Batch-hard triplet loss on the cells of the crop in both frames: a cell and its approved
    successor (or daughters) share a label, every other cell is a negative."""
    ucfg = unet.config
    crop = _features_crop(following.features, ys, xs, ucfg.stem, ucfg.pooling)
    emb_next = unet.embedding_from(crop, redo_last_block=cfg.decoder_blocks > 0).float()
    stride = np.asarray(unet.embedding_stride)
    origin = np.array([0, ys.start, xs.start])
    shape = np.array([frame.shape[0], ys.stop - ys.start, xs.stop - xs.start])
    embeddings, labels = [], []
    for cells, emb, lab in (
        (frame.targets.cells, out.embedding, frame.targets.cells.label),
        (following.targets.cells, emb_next, following.targets.cells.lineage),
    ):
        vox = np.rint(cells.positions).astype(np.int64) - origin
        keep = np.all((vox >= 0) & (vox < shape), axis=1)
        if not np.any(keep):
            continue
        grid = vox[keep] // stride
        embeddings.append(emb[0, :, grid[:, 0], grid[:, 1], grid[:, 2]].T)
        labels.append(lab[keep])
    if not embeddings:
        return out.embedding.sum() * 0.0
    labels_t = torch.as_tensor(np.concatenate(labels), device=out.embedding.device)
    return batch_hard_triplet_loss(torch.cat(embeddings), labels_t, cfg.losses.triplet_margin)


def _record(
    bundle: ModelBundle,
    annotation: CorrectionAnnotation,
    cfg: AdaptConfig,
    frames: list[int],
    first_loss: float,
    last_loss: float,
    seconds: float,
) -> None:
    bundle.metadata.record_version(
        "adapt_detector",
        "det",
        replace=False,
        frames=", ".join(map(str, frames)),
        positives=len(annotation.index),
        negatives=len(annotation.negatives["t"]),
        steps=cfg.steps,
        decoder_blocks=cfg.decoder_blocks,
        lr=cfg.lr,
        l2sp=cfg.l2sp,
        loss_first_step=round(first_loss, 5),
        loss_last_step=round(last_loss, 5),
        seconds=round(float(seconds), 2),
    )
