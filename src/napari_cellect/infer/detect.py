"""The one peak finder: U-Net head maps -> per-frame :class:`Detections`.

Used by prediction, training and the widgets alike (CELLECT had three different ones).

1. **Centre probability.** The centre head has L ordinal levels (L = 5; the last level means
   "at a cell centre"). With ``centre_mode='softmax'`` the probability is the softmax of the
   top level, which is also P(level >= top) since no level is above it. With
   ``centre_mode='ordinal'`` it is ``sigmoid(l_top - max(l_lower))``, the quantity the original
   CELLECT ordinal loss trains (use it with imported original weights: p > 0.5 there means
   "the top level wins the argmax", CELLECT's own peak rule). Peaks are searched on the
   logit of that probability, which is monotone in it but does not saturate at 1.0 in float32,
   so confident cores stay peaked instead of turning into plateaus.
2. **Candidates.** Voxels with probability >= ``threshold`` that are foreground everywhere in a
   small physical-space ball (``foreground_radius``): foreground means
   ``1 - P(background) >= foreground_threshold`` and, unless ``include_other_class``, a
   segmentation argmax other than class 2 ("other", e.g. polar bodies).
3. **Local maxima** over a physical-space ellipsoid (``peak_radius``, never thinner than one
   slice above and below). Ties are broken by raster order (a voxel loses to an equal
   neighbour that comes before it), so a flat plateau yields one peak, not one per voxel.
4. **Sub-voxel refinement:** along each axis, a parabola through the centre logit at the peak
   voxel and its two neighbours; its vertex is the position (exact for a peak that is
   Gaussian in log space; about 0.1 voxel on smooth peaks, against 0.5 for voxel positions).
5. **Per detection:** embedding, radius and division probabilities (sigmoid) are read at the
   peak voxel; the score is the centre probability there.
6. **Filtering and NMS** (:func:`finalize_detections`): border margin, minimum radius, then
   greedy non-maximum suppression in scaled space ``(z * z_ratio, y, x)``: the best-scoring
   detection removes all others within ``max(min_nms_radius, nms_radius_factor * radius)``.

Steps 1-5 run per tile on the tile's own outputs (the embedding map never leaves the tile),
restricted to the voxels that tile owns; step 6 runs once per frame over all tiles.

The settings are :class:`napari_cellect.settings.detection.DetectionConfig`. The module
imports torch only when given tensors.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.spatial import cKDTree

from napari_cellect.errors import InputError
from napari_cellect.settings.detection import CENTRE_MODES, CentreMode, DetectionConfig
from napari_cellect.track.detections import Detections

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Candidates handled per vectorised neighbourhood gather; bounds the temporary memory
#: (candidates x footprint x 3 int64) to a few tens of MB.
_GATHER_CHUNK = 16384
#: Tolerance when deciding whether an integer offset lies inside an ellipsoid.
_EPS = 1e-9


# --------------------------------------------------------------------------- head maps


def centre_logit(centre: np.ndarray | torch.Tensor, mode: CentreMode = "softmax") -> np.ndarray:
    """The logit of the centre probability, (Z, Y, X) float32 numpy, from (L, Z, Y, X) logits.

    A GPU tensor is reduced on the GPU (only the result moves). On the CPU the reduction over
    the levels runs where it is fastest for the layout: torch for a channels-last tensor (the
    levels adjacent in memory, as the U-Net returns them on the CPU: four times faster than
    numpy there), numpy for maps whose levels are planes (several times faster than torch).
    """
    if mode not in CENTRE_MODES:
        raise InputError(f"centre_mode: expected one of {', '.join(CENTRE_MODES)}, found {mode!r}")
    if centre.ndim != 4 or centre.shape[0] < 2:
        raise InputError(
            f"centre head: expected (levels >= 2, Z, Y, X) logits, found {tuple(centre.shape)}"
        )
    if isinstance(centre, np.ndarray):
        return _centre_logit_numpy(centre.astype(np.float32, copy=False), mode)
    levels_adjacent = centre.stride(0) < min(centre.stride()[1:])
    if centre.device.type == "cpu" and not levels_adjacent:
        return _centre_logit_numpy(centre.detach().float().numpy(), mode)
    import torch

    on_device = centre.detach().float()
    top, lower = on_device[-1], on_device[:-1]
    out = top - (torch.logsumexp(lower, dim=0) if mode == "softmax" else lower.amax(dim=0))
    return out.cpu().numpy()


def _centre_logit_numpy(logits: np.ndarray, mode: CentreMode) -> np.ndarray:
    lower_max = logits[:-1].max(axis=0)
    out = logits[-1] - lower_max
    if mode == "softmax":  # top - logsumexp(lower), one level at a time to bound memory
        total = np.zeros_like(lower_max)
        for level in logits[:-1]:
            total += np.exp(level - lower_max)
        out -= np.log(total)
    return out


def centre_probability(
    centre: np.ndarray | torch.Tensor, mode: CentreMode = "softmax"
) -> np.ndarray:
    """The centre probability (Z, Y, X) float32 from (L, Z, Y, X) centre logits."""
    return _sigmoid(centre_logit(centre, mode))


def _foreground_rule(logits: np.ndarray, threshold: float, include_other_class: bool) -> np.ndarray:
    """The foreground test on segmentation logits (C, ...): ``1 - P(background) >= threshold``
    and, unless ``include_other_class``, argmax != 2 ("other")."""
    logits = logits.astype(np.float32, copy=False)
    shifted = np.exp(logits - logits.max(axis=0, keepdims=True))
    p_background = shifted[0] / shifted.sum(axis=0)
    mask = (1.0 - p_background) >= threshold
    if not include_other_class and logits.shape[0] > 2:
        mask &= logits.argmax(axis=0) != 2
    return mask


def foreground_mask(
    seg: np.ndarray | torch.Tensor,
    threshold: float = 0.5,
    include_other_class: bool = False,
) -> np.ndarray:
    """(Z, Y, X) bool map of the foreground test (see :class:`DetectionConfig`) from
    (classes, Z, Y, X) segmentation logits."""
    logits = seg if isinstance(seg, np.ndarray) else seg.detach().float().cpu().numpy()
    if logits.ndim != 4 or logits.shape[0] < 2:
        raise InputError(
            f"seg head: expected (classes >= 2, Z, Y, X) logits, found {tuple(logits.shape)}"
        )
    return _foreground_rule(logits, threshold, include_other_class)


def _centre_logit_within(
    centre: Any, mode: CentreMode, valid: Sequence[slice] | None
) -> np.ndarray:
    """:func:`centre_logit` of a tile's map, computed only where ``valid`` (real data): the
    peak search never reads beyond it, and a 2D frame padded to the model's depth is mostly
    padding. Elsewhere the logit is -inf (never a peak)."""
    if valid is None or centre.ndim != 4:
        return centre_logit(centre, mode)
    window = tuple(slice(*s.indices(n)[:2]) for s, n in zip(valid, centre.shape[1:]))
    inner = centre_logit(centre[(slice(None), *window)], mode)
    if inner.shape == tuple(centre.shape[1:]):
        return inner
    logit = np.full(tuple(centre.shape[1:]), -np.inf, dtype=np.float32)
    logit[window] = inner
    return logit


def _sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32, copy=False)


def _logit(p: float) -> float:
    """logit(p), with logit(0) = -inf and logit(1) = +inf."""
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p) - math.log1p(-p)


# --------------------------------------------------------------------------- neighbourhoods


def ellipsoid_offsets(radius: float, z_ratio: float, min_z: float = 0.0) -> np.ndarray:
    """Integer offsets (F, 3) (dz, dy, dx) inside an ellipsoid of physical radius ``radius``.

    The semi-axes are ``radius`` pixels in y and x and ``max(radius / z_ratio, min_z)`` slices
    in z. Always contains (0, 0, 0).
    """
    if not (z_ratio > 0 and math.isfinite(z_ratio)):
        raise InputError(f"z_ratio: expected a finite number > 0, found {z_ratio}")
    r = max(float(radius), 0.0)
    az = max(r / z_ratio, float(min_z))
    nz, nr = int(math.floor(az + _EPS)), int(math.floor(r + _EPS))
    dz, dy, dx = np.meshgrid(
        np.arange(-nz, nz + 1), np.arange(-nr, nr + 1), np.arange(-nr, nr + 1), indexing="ij"
    )

    def term(d: np.ndarray, a: float) -> np.ndarray:
        return (d / a) ** 2 if a > 0 else np.where(d == 0, 0.0, np.inf)

    inside = term(dz, az) + term(dy, r) + term(dx, r) <= 1.0 + _EPS
    return np.stack([dz[inside], dy[inside], dx[inside]], axis=1).astype(np.int64)


def _gather(
    array: np.ndarray, points: np.ndarray, offsets: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``array`` at points + offsets, (K, F), and whether each lies in [lo, hi)."""
    inside = np.ones((len(points), len(offsets)), dtype=bool)
    index = []
    for axis in range(3):
        c = points[:, axis, None] + offsets[None, :, axis]
        inside &= (c >= lo[axis]) & (c < hi[axis])
        index.append(np.clip(c, lo[axis], hi[axis] - 1))
    return array[index[0], index[1], index[2]], inside


def _bounds(shape: Sequence[int], valid: Sequence[slice] | None) -> tuple[np.ndarray, np.ndarray]:
    if valid is None:
        return np.zeros(3, np.int64), np.asarray(shape, np.int64)
    lo = np.array([s.start or 0 for s in valid], np.int64)
    hi = np.array([n if s.stop is None else s.stop for s, n in zip(valid, shape)], np.int64)
    return lo, hi


def _lexicographically_before(offsets: np.ndarray) -> np.ndarray:
    """True for offsets that come before (0, 0, 0) in raster (z, y, x) order."""
    first = np.argmax(offsets != 0, axis=1)
    lead = offsets[np.arange(len(offsets)), first]
    return lead < 0


# --------------------------------------------------------------------------- peaks


ForegroundTest = Callable[[np.ndarray], np.ndarray]


def find_peaks(
    logit: np.ndarray,
    foreground: np.ndarray | ForegroundTest | None,
    *,
    z_ratio: float,
    config: DetectionConfig | None = None,
    region: Sequence[slice] | None = None,
    valid: Sequence[slice] | None = None,
) -> np.ndarray:
    """Integer voxel indices (K, 3) of the centre peaks found inside ``region``.

    Args:
        logit: (Z, Y, X) centre logit map (see :func:`centre_logit`).
        foreground: (Z, Y, X) bool foreground mask, or a function mapping integer points
            (M, 3) to bools (M,) (cheaper: only the local maxima are tested), or None to
            skip the foreground test.
        region: slices where peaks may lie (a tile's owned voxels); default everywhere.
        valid: slices of real data (not padding); neighbours outside are ignored.
    """
    cfg = config or DetectionConfig()
    logit = np.asarray(logit)
    region = tuple(region) if region is not None else (slice(None),) * 3
    points = np.argwhere(logit[region] >= _logit(cfg.threshold))
    if len(points) == 0:
        return np.zeros((0, 3), np.int64)
    points += np.array([s.indices(n)[0] for s, n in zip(region, logit.shape)], np.int64)

    lo, hi = _bounds(logit.shape, valid)
    peak_offsets = ellipsoid_offsets(cfg.peak_radius, z_ratio, min_z=1.0)
    before = _lexicographically_before(peak_offsets)
    keep = np.zeros(len(points), dtype=bool)
    for start in range(0, len(points), _GATHER_CHUNK):
        chunk = points[start : start + _GATHER_CHUNK]
        own = logit[chunk[:, 0], chunk[:, 1], chunk[:, 2]][:, None]
        values, inside = _gather(logit, chunk, peak_offsets, lo, hi)
        beaten = (values > own) | ((values == own) & before[None, :])
        keep[start : start + len(chunk)] = ~np.any(beaten & inside, axis=1)
    peaks = points[keep]
    if foreground is None or len(peaks) == 0:
        return peaks
    # The foreground test does not affect the local-maximum test, so it runs on the (few)
    # local maxima only: every voxel of the foreground ball that lies in the data must pass.
    test = foreground if callable(foreground) else _mask_reader(np.asarray(foreground))
    ball = ellipsoid_offsets(cfg.foreground_radius, z_ratio)
    coords = peaks[:, None, :] + ball[None, :, :]
    inside = np.all((coords >= lo) & (coords < hi), axis=2)
    passed = np.ones(inside.shape, dtype=bool)
    passed[inside] = test(coords[inside])
    return peaks[np.all(passed, axis=1)]


def _mask_reader(mask: np.ndarray) -> ForegroundTest:
    return lambda points: mask[points[:, 0], points[:, 1], points[:, 2]]


def subvoxel_shift(
    logit: np.ndarray,
    peaks: np.ndarray,
    *,
    valid: Sequence[slice] | None = None,
) -> np.ndarray:
    """Sub-voxel shifts (K, 3) float64 of integer peaks, by quadratic interpolation.

    Along each axis the vertex of the parabola through the logit at the peak and its two
    neighbours; an axis whose neighbours are outside ``valid`` (Z = 1, a volume border) or
    that is flat keeps the voxel coordinate. Shifts are at most half a voxel.
    """
    shifts = np.zeros(peaks.shape, np.float64)
    if len(peaks) == 0:
        return shifts
    lo, hi = _bounds(logit.shape, valid)
    centre = logit[peaks[:, 0], peaks[:, 1], peaks[:, 2]].astype(np.float64)
    for axis in range(3):
        below, above = peaks.copy(), peaks.copy()
        below[:, axis] -= 1
        above[:, axis] += 1
        inside = (below[:, axis] >= lo[axis]) & (above[:, axis] < hi[axis])
        np.clip(below[:, axis], lo[axis], hi[axis] - 1, out=below[:, axis])
        np.clip(above[:, axis], lo[axis], hi[axis] - 1, out=above[:, axis])
        f_below = logit[below[:, 0], below[:, 1], below[:, 2]].astype(np.float64)
        f_above = logit[above[:, 0], above[:, 1], above[:, 2]].astype(np.float64)
        curvature = f_below - 2.0 * centre + f_above
        ok = inside & np.isfinite(curvature) & (curvature < 0)
        shift = 0.5 * (f_below - f_above) / np.where(ok, curvature, -1.0)
        shifts[:, axis] = np.where(ok, np.clip(shift, -0.5, 0.5), 0.0)
    return shifts


def _read_at(head: np.ndarray | torch.Tensor, points: np.ndarray) -> np.ndarray:
    """Values (K, C) of a (C, Z, Y, X) head at integer points, read on the head's device."""
    if not isinstance(head, np.ndarray):
        import torch

        idx = torch.as_tensor(points, device=head.device)
        return head[:, idx[:, 0], idx[:, 1], idx[:, 2]].T.float().cpu().numpy()
    head = np.asarray(head)
    return head[:, points[:, 0], points[:, 1], points[:, 2]].T.astype(np.float32)


def _grid_step(head: Any, shape: Sequence[int]) -> np.ndarray:
    """The step (z, y, x) of the grid a head lies on within a volume of ``shape``: 1 at full
    resolution; the U-Net may leave its embedding on a coarser grid (``coarse_embedding``)."""
    grid = tuple(int(n) for n in head.shape[1:])
    step = [n // g if g else 0 for n, g in zip(shape, grid)]
    if any(s < 1 or s * g != n for s, g, n in zip(step, grid, shape)):
        raise InputError(
            f"embedding head: expected (E, Z, Y, X) at the centre map's size {tuple(shape)} or "
            f"an integer step coarser, found {tuple(head.shape)}"
        )
    return np.asarray(step, np.int64)


def find_detections(
    heads: Any,
    *,
    z_ratio: float,
    config: DetectionConfig | None = None,
    t: int = 0,
    region: Sequence[slice] | None = None,
    valid: Sequence[slice] | None = None,
    origin: Sequence[int] = (0, 0, 0),
) -> Detections:
    """Peaks of one tile (or one whole volume) with their features, before NMS.

    Args:
        heads: the head maps without batch dimension, numpy or torch, as attributes or keys
            ``centre`` (L, Z, Y, X) logits (required), ``seg`` (classes, ...) logits,
            ``division`` (2, ...) logits, ``radius`` (1, ...) and ``embedding`` (E, ...), which
            may lie on a grid an integer step coarser (read at ``voxel // step``); the optional
            ones may be missing or None.
        region, valid: see :func:`find_peaks` (tile-local slices).
        origin: volume coordinate of the maps' first voxel; added to the positions.
    """
    cfg = config or DetectionConfig()

    def head(name: str) -> Any:
        if isinstance(heads, Mapping):
            return heads.get(name)
        return getattr(heads, name, None)

    logit = _centre_logit_within(head("centre"), cfg.centre_mode, valid)
    seg = head("seg")
    foreground: ForegroundTest | None = None
    if seg is not None:
        if seg.ndim != 4 or seg.shape[0] < 2:
            raise InputError(
                f"seg head: expected (classes >= 2, Z, Y, X) logits, found {tuple(seg.shape)}"
            )

        def foreground(points: np.ndarray) -> np.ndarray:
            logits = _read_at(seg, points).T  # (classes, M), read where the head lives
            return _foreground_rule(logits, cfg.foreground_threshold, cfg.include_other_class)

    peaks = find_peaks(logit, foreground, z_ratio=z_ratio, config=cfg, region=region, valid=valid)
    # Integer volume coordinates first, then the shift: the same float result in any tiling.
    positions = (peaks + np.asarray(origin, np.int64)).astype(np.float64)
    if cfg.refine:
        positions += subvoxel_shift(logit, peaks, valid=valid)
    k = len(peaks)

    embedding = head("embedding")
    emb = (
        _read_at(embedding, peaks // _grid_step(embedding, logit.shape))
        if embedding is not None
        else np.zeros((k, 0), np.float32)
    )
    radius_map = head("radius")
    radius = (
        np.maximum(_read_at(radius_map, peaks)[:, 0], 0.0)
        if radius_map is not None
        else np.zeros(k, np.float32)
    )
    division_map = head("division")
    division = (
        _sigmoid(_read_at(division_map, peaks))
        if division_map is not None
        else np.zeros((k, 2), np.float32)
    )
    score = _sigmoid(logit[peaks[:, 0], peaks[:, 1], peaks[:, 2]])
    return Detections(
        t=t, positions=positions, embeddings=emb, radius=radius, division=division, score=score
    )


# --------------------------------------------------------------------------- frame level


def non_max_suppression(
    positions: np.ndarray,
    score: np.ndarray,
    radius: np.ndarray,
    *,
    z_ratio: float,
    config: DetectionConfig | None = None,
) -> np.ndarray:
    """Indices of the detections kept by greedy NMS in scaled space, in input order.

    Visits detections by decreasing score (ties: raster order of position, so the result does
    not depend on tile order); each kept one removes the unvisited ones within
    ``max(min_nms_radius, nms_radius_factor * its radius)``.
    """
    cfg = config or DetectionConfig()
    n = len(positions)
    if n <= 1:
        return np.arange(n)
    scaled = np.asarray(positions, np.float64) * np.array([z_ratio, 1.0, 1.0])
    reach = np.maximum(cfg.min_nms_radius, cfg.nms_radius_factor * np.asarray(radius, np.float64))
    if not np.any(reach > 0):
        return np.arange(n)
    order = np.lexsort((scaled[:, 2], scaled[:, 1], scaled[:, 0], -np.asarray(score)))
    neighbours = cKDTree(scaled).query_ball_point(scaled, r=reach)
    suppressed = np.zeros(n, dtype=bool)
    kept = []
    for i in order:
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed[neighbours[i]] = True
    return np.sort(np.asarray(kept, dtype=np.int64))


def finalize_detections(
    parts: Sequence[Detections],
    *,
    shape: Sequence[int],
    z_ratio: float,
    config: DetectionConfig | None = None,
) -> Detections:
    """Join per-tile detections of one frame, filter them and remove duplicates (NMS).

    The result is sorted by position (z, y, x).
    """
    cfg = config or DetectionConfig()
    dets = Detections.concat(parts)
    if len(dets) == 0:
        return dets
    margin = np.asarray(cfg.border_margin, np.float64)
    upper = np.asarray(shape, np.float64) - 1.0 - margin
    keep = np.all((dets.positions >= margin) & (dets.positions <= upper), axis=1)
    keep &= dets.radius >= cfg.min_radius
    dets = dets.subset(keep)
    dets = dets.subset(
        non_max_suppression(dets.positions, dets.score, dets.radius, z_ratio=z_ratio, config=cfg)
    )
    order = np.lexsort((dets.positions[:, 2], dets.positions[:, 1], dets.positions[:, 0]))
    return dets.subset(order)


def detect(
    heads: Any,
    *,
    z_ratio: float,
    config: DetectionConfig | None = None,
    t: int = 0,
) -> Detections:
    """Detections from whole-volume head maps (see :func:`find_detections` for ``heads``)."""
    cfg = config or DetectionConfig()
    centre = heads["centre"] if isinstance(heads, Mapping) else heads.centre
    part = find_detections(heads, z_ratio=z_ratio, config=cfg, t=t)
    return finalize_detections([part], shape=tuple(centre.shape[1:]), z_ratio=z_ratio, config=cfg)
