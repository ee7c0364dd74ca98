"""Write a :class:`TrackGraph` as our CSV, as Cell Tracking Challenge folders, or as GEFF.

All writes are atomic (:mod:`napari_cellect.data.atomic`): the input is checked and every file is
produced in a temporary place first, so bad input or an interrupted export writes nothing.

CTC tracks must be continuous chains (a track exists in every frame from B to E). A graph edge
that skips frames (a gap) therefore starts a new CTC track whose parent P is the track before
the gap, which is how the CTC encodes gaps. Such tracks get labels above the graph's largest
track id; all other CTC labels equal the graph's track ids.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tifffile
from numpy.typing import DTypeLike

from napari_cellect.data.arrays import LabelSource
from napari_cellect.data.atomic import atomic_path, atomic_write
from napari_cellect.errors import InputError
from napari_cellect.track.graph import CSV_COLUMNS, TrackGraph

if TYPE_CHECKING:
    from geff._typing import PropDictNpArray  # geff exports it from no public module

logger = logging.getLogger(__name__)

#: marker radius (xy pixels) for nodes whose radius is unknown, when writing point tracks to CTC
DEFAULT_MARKER_RADIUS = 3.0
#: the largest label a 16-bit mask can hold; above it masks are written as uint32
UINT16_MAX = 65535
#: CTC file names use at least this many digits for the frame number
CTC_MIN_DIGITS = 3

# --------------------------------------------------------------------------- CSV


def write_csv(graph: TrackGraph, path: str | Path, extra: Sequence[str] = ()) -> None:
    """Write our CSV: one row per node, columns in the order of ``docs/architecture.md``.

    ``approved`` is written as 0/1; unknown values (NaN radius or link score) as empty cells.
    ``extra`` names graph columns appended after the standard ones (e.g. ``changed`` after a
    re-link); readers keep numeric extra columns.
    """
    missing = [name for name in extra if name not in graph.columns]
    if missing:
        raise InputError(f"cannot write column(s) {', '.join(missing)}: the graph has none")
    df = graph.to_dataframe().loc[:, [*CSV_COLUMNS, *extra]]
    df["approved"] = df["approved"].astype(np.int8)
    for name in extra:
        if df[name].dtype == bool:
            df[name] = df[name].astype(np.int8)
    df = df.sort_values(["t", "id"], kind="stable")
    with atomic_write(path, "w", newline="") as handle:
        df.to_csv(handle, index=False, lineterminator="\n")
    logger.info("wrote %d nodes to %s", len(df), path)


# --------------------------------------------------------------------------- CTC tracks


def ctc_tracks(graph: TrackGraph) -> tuple[np.ndarray, np.ndarray]:
    """CTC track label of every node and the ``L B E P`` table (sorted by L).

    A CTC track is a branch of the graph, cut again wherever an edge skips frames.
    """
    n = len(graph)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.int64)
    t = graph["t"]
    parent_ids = graph["parent_id"]
    linked = parent_ids != -1
    parent_rows = np.full(n, -1, dtype=np.int64)
    parent_rows[linked] = graph.index_of(parent_ids[linked])
    n_children = graph.n_children()
    starts = ~linked
    starts[linked] = (n_children[parent_rows[linked]] != 1) | (
        t[linked] - t[parent_rows[linked]] > 1
    )
    first = np.where(starts, np.arange(n), parent_rows)
    while True:  # pointer jumping: every row ends up at the first row of its chain
        jumped = first[first]
        if np.array_equal(jumped, first):
            break
        first = jumped
    track_ids = graph.track_ids()
    label_of_start = track_ids.copy()
    # starts after a gap are not graph branch starts: give them fresh labels
    gap_starts = np.flatnonzero(starts & linked & (n_children[np.maximum(parent_rows, 0)] == 1))
    gap_starts = gap_starts[np.lexsort((graph.ids[gap_starts], t[gap_starts]))]
    label_of_start[gap_starts] = track_ids.max() + 1 + np.arange(len(gap_starts))
    labels = label_of_start[first]
    start_rows = np.flatnonzero(starts)
    end = np.full(n, -1, dtype=np.int64)
    np.maximum.at(end, first, t)
    parents = np.where(linked[start_rows], labels[np.maximum(parent_rows[start_rows], 0)], 0)
    table = np.stack([labels[start_rows], t[start_rows], end[start_rows], parents], axis=1)
    return labels, table[np.argsort(table[:, 0])]


@dataclass(frozen=True)
class CtcExport:
    """What :func:`write_ctc` wrote, including what the masks could not show as they were."""

    folder: Path
    """The folder holding the track table."""
    marked: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Ids of nodes that had no pixels in the label masks and were drawn as markers there."""
    left_out: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Ids of nodes outside the image: they have no pixels in any mask."""


def _digits(n_frames: int) -> int:
    return max(CTC_MIN_DIGITS, len(str(max(n_frames - 1, 0))))


# --------------------------------------------------------------------------- masks


def draw_markers(
    shape: tuple[int, int, int],
    centres: np.ndarray,
    radii: np.ndarray,
    values: np.ndarray,
    z_ratio: float = 1.0,
    dtype: DTypeLike = np.uint16,
) -> np.ndarray:
    """A (Z, Y, X) label image with a ball of ``radii`` (xy pixels) at each centre (z y x).

    Balls are round in scaled space (z spacing ``z_ratio``). Where balls overlap, each voxel
    goes to the centre it is relatively closest to; every ball covers at least its centre voxel.
    """
    out = np.zeros(shape, dtype=dtype)
    best = np.full(shape, np.inf, dtype=np.float32)
    extent = np.asarray(shape)
    for centre, radius, value in zip(centres, radii, values):
        half = np.array([radius / z_ratio, radius, radius])
        lo = np.maximum(np.floor(centre - half).astype(int), 0)
        hi = np.minimum(np.ceil(centre + half).astype(int) + 1, extent)
        if np.any(hi <= lo):
            continue
        grids = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        dist = (
            ((grids[0] - centre[0]) * z_ratio) ** 2
            + (grids[1] - centre[1]) ** 2
            + (grids[2] - centre[2]) ** 2
        ) / max(radius, 1e-6) ** 2
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        centre_voxel = tuple(np.clip(np.rint(centre).astype(int), lo, hi - 1) - lo)
        inside = dist <= 1.0
        inside[centre_voxel] = True
        take = inside & (dist < best[box])
        out[box][take] = value
        best[box][take] = dist[take]
    return out


def _relabel(
    frame: np.ndarray, from_values: np.ndarray, to_values: np.ndarray, dtype: DTypeLike, t: int
) -> tuple[np.ndarray, np.ndarray]:
    """Map the track ids of a label frame to CTC labels; ids without a node here become 0.
    Also returns which ``from_values`` have no pixels in the frame."""
    frame = np.asarray(frame)
    if frame.dtype.kind not in "iu":
        raise InputError(f"expected integer label images, found dtype {frame.dtype} in frame {t}")
    present = np.unique(frame)
    present = present[present > 0]
    unknown = np.setdiff1d(present, from_values)
    if len(unknown):
        logger.warning(
            "frame %d: %d label(s) have no node in this frame and are dropped (e.g. %s)",
            t,
            len(unknown),
            ", ".join(map(str, unknown[:5])),
        )
    keep = np.isin(from_values, present)
    lookup_from, lookup_to = from_values[keep], to_values[keep]
    order = np.argsort(lookup_from)
    lookup_from, lookup_to = lookup_from[order], lookup_to[order]
    out = np.zeros(frame.shape, dtype=dtype)
    if len(lookup_from) == 0:
        return out, ~keep
    pos = np.minimum(np.searchsorted(lookup_from, frame), len(lookup_from) - 1)
    hit = (lookup_from[pos] == frame) & (frame > 0)
    out[hit] = lookup_to[pos[hit]]
    return out, ~keep


def _n_frames(graph: TrackGraph, labels: LabelSource | None, shape: tuple[int, ...] | None) -> int:
    if shape is not None:
        return int(shape[0])
    if labels is not None and not callable(labels):
        return int(labels.shape[0])
    return int(graph["t"].max()) + 1 if len(graph) else 0


def _frame_shape(shape: tuple[int, ...] | None) -> tuple[int, int, int] | None:
    if shape is None:
        return None
    if len(shape) == 3:  # (T, Y, X)
        return (1, int(shape[1]), int(shape[2]))
    if len(shape) != 4:
        raise InputError(f"expected shape (T, Z, Y, X) or (T, Y, X), found {tuple(shape)}")
    return (int(shape[1]), int(shape[2]), int(shape[3]))


# --------------------------------------------------------------------------- CTC


def write_ctc(
    graph: TrackGraph,
    folder: str | Path,
    labels: LabelSource | None = None,
    gt: bool = False,
    radius: float | None = None,
    *,
    shape: tuple[int, ...] | None = None,
    z_ratio: float = 1.0,
) -> CtcExport:
    """Write a Cell Tracking Challenge folder in which every node has pixels in its mask.

    Results (``gt=False``): ``folder/res_track.txt`` and ``folder/mask###.tif``. Ground truth
    (``gt=True``): ``folder/TRA/man_track.txt`` and ``folder/TRA/man_track###.tif``.

    Args:
        graph: the tracks.
        folder: the RES folder, or the ``*_GT`` folder when ``gt`` is True (created if missing).
        labels: masks whose values are graph track ids, as a callable ``t -> (Z, Y, X)`` array or
            an array-like (T, Z, Y, X); they are relabelled to the CTC track labels frame by
            frame. A node with no pixels in its frame's mask (a cell the segmentation missed)
            is drawn there as a marker of its radius on background voxels (at least its centre
            voxel), so the export reads back with every node. Without them, ``shape`` gives
            the image size and every node is drawn as a ball of its radius, so CTC tools can
            score point tracks.
        gt: write ground truth instead of results.
        radius: marker radius in xy pixels for all nodes; None uses each node's radius
            (:data:`DEFAULT_MARKER_RADIUS` where it is unknown).
        shape: (T, Z, Y, X) or (T, Y, X) of the image; needed to draw markers.
        z_ratio: z spacing over xy spacing, so that markers are round in space.

    Returns:
        the folder holding the track table, and the nodes drawn as markers or left out.

    Masks are uint16 when the largest label fits, else uint32; 2D data (Z = 1) is written as
    2D images. When neither labels nor shape are given only the track table is written.
    Mask files of an earlier export into the same folder that this one does not overwrite are
    removed, so the folder describes one result.
    """
    folder = Path(folder)
    dest = folder / "TRA" if gt else folder
    table_name, prefix = ("man_track.txt", "man_track") if gt else ("res_track.txt", "mask")
    if z_ratio <= 0:
        raise InputError(f"z_ratio must be positive, found {z_ratio}")
    if radius is not None and radius <= 0:
        raise InputError(f"marker radius must be positive, found {radius}")
    if len(graph) and graph["t"].min() < 0:
        raise InputError(f"CTC frames start at 0, found a node in frame {graph['t'].min()}")
    node_labels, table = ctc_tracks(graph)
    n_frames = _n_frames(graph, labels, shape)
    if len(graph) and graph["t"].max() >= n_frames:
        raise InputError(
            f"the tracks reach frame {graph['t'].max()} but the images have {n_frames} frames"
        )
    frame_shape = _frame_shape(shape)
    write_masks = labels is not None or frame_shape is not None
    if not write_masks:
        logger.warning("write_ctc: no labels and no image shape; writing %s only", table_name)
    dtype = np.uint16 if (table[:, 0].max() if len(table) else 0) <= UINT16_MAX else np.uint32
    digits = _digits(n_frames)

    missing_dirs = [p for p in (dest, *dest.parents) if not p.exists()]
    dest.mkdir(parents=True, exist_ok=True)
    t_sorted = np.argsort(graph["t"], kind="stable")
    bounds = np.searchsorted(graph["t"][t_sorted], np.arange(n_frames + 1))
    staging = Path(tempfile.mkdtemp(prefix=".cellect-tmp-", dir=dest))
    try:
        with open(staging / table_name, "w", encoding="utf-8", newline="\n") as handle:
            for row in table:
                handle.write(" ".join(str(int(v)) for v in row) + "\n")
        names = [table_name]
        marked: list[np.ndarray] = []
        left_out: list[np.ndarray] = []
        if write_masks:
            for t in range(n_frames):
                rows = t_sorted[bounds[t] : bounds[t + 1]]
                mask, marked_rows, outside_rows = _ctc_frame(
                    graph, node_labels, t, rows, labels, frame_shape, radius, z_ratio, dtype
                )
                marked.append(graph.ids[marked_rows])
                left_out.append(graph.ids[outside_rows])
                name = f"{prefix}{t:0{digits}d}.tif"
                tifffile.imwrite(
                    staging / name,
                    mask[0] if mask.shape[0] == 1 else mask,
                    compression="zlib",
                    photometric="minisblack",
                )
                names.append(name)
        _move_into(staging, dest, names, prefix)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if missing_dirs:  # remove the folders this call created
            shutil.rmtree(missing_dirs[-1], ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    logger.info("wrote %d CTC tracks (%d frames) to %s", len(table), n_frames, dest)
    result = CtcExport(dest, _concat_ids(marked), _concat_ids(left_out))
    if len(result.marked):
        logger.info(
            "%d node(s) had no pixels in the masks and were drawn as markers (e.g. %s)",
            len(result.marked),
            result.marked[:5].tolist(),
        )
    if len(result.left_out):
        logger.warning(
            "%d node(s) lie outside the image and have no pixels (e.g. %s)",
            len(result.left_out),
            result.left_out[:5].tolist(),
        )
    return result


def _concat_ids(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _ctc_frame(
    graph: TrackGraph,
    node_labels: np.ndarray,
    t: int,
    rows: np.ndarray,
    labels: LabelSource | None,
    frame_shape: tuple[int, int, int] | None,
    radius: float | None,
    z_ratio: float,
    dtype: DTypeLike,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (Z, Y, X) mask of frame ``t`` (whose nodes are ``rows``) with CTC labels, the rows
    drawn as markers because the labels had no pixels for them, and the rows outside the
    image."""
    empty = np.zeros(0, np.int64)
    if labels is not None:
        frame = np.asarray(labels(t) if callable(labels) else labels[t])
        if frame.ndim == 2:
            frame = frame[np.newaxis]
        if frame.ndim != 3 or (frame_shape is not None and frame.shape != frame_shape):
            raise InputError(
                f"expected a label frame of shape {frame_shape or '(Z, Y, X)'}, "
                f"found {frame.shape} in frame {t}"
            )
        mask, missing = _relabel(frame, graph.track_ids()[rows], node_labels[rows], dtype, t)
        if not np.any(missing):
            return mask, empty, empty
        missing_rows = rows[missing]
        outside = _outside(graph.positions()[missing_rows], mask.shape, t)
        inside_rows = missing_rows[~outside]
        _fill_markers(
            mask,
            graph.positions()[inside_rows],
            _marker_radii(graph, inside_rows, radius),
            node_labels[inside_rows],
            z_ratio,
        )
        return mask, inside_rows, missing_rows[outside]
    assert frame_shape is not None
    centres = graph.positions()[rows]
    outside = _outside(centres, frame_shape, t)
    keep = ~outside
    mask = draw_markers(
        frame_shape,
        centres[keep],
        _marker_radii(graph, rows[keep], radius),
        node_labels[rows][keep],
        z_ratio=z_ratio,
        dtype=dtype,
    )
    return mask, empty, rows[outside]


def _marker_radii(graph: TrackGraph, rows: np.ndarray, radius: float | None) -> np.ndarray:
    """``radius`` for every row, else each node's own radius (a default where unknown)."""
    if radius is not None:
        return np.full(len(rows), float(radius))
    radii = np.asarray(graph["radius"][rows], dtype=np.float64)
    return np.where(np.isfinite(radii) & (radii > 0), radii, DEFAULT_MARKER_RADIUS)


def _outside(centres: np.ndarray, frame_shape: tuple[int, ...], t: int) -> np.ndarray:
    outside = np.any((centres < -0.5) | (centres > np.asarray(frame_shape) - 0.5), axis=1)
    if np.any(outside):
        logger.warning(
            "frame %d: %d node(s) lie outside the image %s and get no marker",
            t,
            int(outside.sum()),
            tuple(frame_shape),
        )
    return outside


def _fill_markers(
    mask: np.ndarray, centres: np.ndarray, radii: np.ndarray, values: np.ndarray, z_ratio: float
) -> None:
    """Draw markers into ``mask`` on background voxels only, so no segmented cell loses pixels;
    a node whose marker found no background still gets its centre voxel."""
    if len(centres) == 0:
        return
    markers = draw_markers(mask.shape, centres, radii, values, z_ratio=z_ratio, dtype=mask.dtype)
    free = (mask == 0) & (markers > 0)
    mask[free] = markers[free]
    shown = np.isin(values, np.unique(mask[free])) if np.any(free) else np.zeros(len(values), bool)
    for centre, value in zip(centres[~shown], values[~shown]):
        voxel = tuple(np.clip(np.rint(centre).astype(int), 0, np.asarray(mask.shape) - 1))
        mask[voxel] = value


def _move_into(staging: Path, dest: Path, names: list[str], prefix: str) -> None:
    """Replace files in ``dest`` by the staged ones, and drop stale masks of the same kind."""
    stale = re.compile(rf"{re.escape(prefix)}\d+\.tiff?$", re.IGNORECASE)
    fresh = set(names)
    for old in dest.iterdir():
        if old.is_file() and stale.match(old.name) and old.name not in fresh:
            logger.info("removing %s from an earlier export", old)
            old.unlink()
    for name in names[1:] + names[:1]:  # the track table last: it marks a complete folder
        os.replace(staging / name, dest / name)


# --------------------------------------------------------------------------- GEFF


def lineage_ids(graph: TrackGraph) -> np.ndarray:
    """Per node, the track id of the root of its lineage (a weakly connected component)."""
    n = len(graph)
    parent_ids = graph["parent_id"]
    linked = parent_ids != -1
    root = np.arange(n)
    root[linked] = graph.index_of(parent_ids[linked])
    while True:
        jumped = root[root]
        if np.array_equal(jumped, root):
            break
        root = jumped
    return graph.track_ids()[root] if n else np.zeros(0, np.int64)


def write_geff(graph: TrackGraph, path: str | Path, z_ratio: float = 1.0) -> None:
    """Write the graph as a GEFF zarr folder (replacing an earlier one at ``path``).

    Nodes carry ``t z y x`` (voxels; the axes metadata gives the z spacing as the z axis
    ``scale``), ``radius``, ``score``, ``division_score``, ``approved``, ``track_id`` (declared as
    the GEFF tracklet id), ``lineage_id`` and any extra columns. Edges (parent -> child) carry
    ``link_score`` and ``approved`` of the child.
    """
    from geff.core_io import write_arrays
    from geff_spec import Axis, GeffMetadata

    if z_ratio <= 0:
        raise InputError(f"z_ratio must be positive, found {z_ratio}")
    ids = graph.ids.astype(np.uint64)
    edges = graph.edges().astype(np.uint64).reshape(-1, 2)
    child_rows = graph.index_of(graph.edges()[:, 1]) if len(edges) else np.zeros(0, np.int64)
    node_props: dict[str, PropDictNpArray] = {}
    for name in ("t", "z", "y", "x", "radius", "score", "division_score", "approved"):
        node_props[name] = {"values": np.asarray(graph[name]), "missing": None}
    node_props["track_id"] = {"values": graph.track_ids(), "missing": None}
    node_props["lineage_id"] = {"values": lineage_ids(graph), "missing": None}
    for name in graph.columns:
        if name not in node_props and name not in ("id", "parent_id", "link_score"):
            node_props[name] = {"values": np.asarray(graph[name]), "missing": None}
    edge_props: dict[str, PropDictNpArray] = {
        "link_score": {"values": np.asarray(graph["link_score"])[child_rows], "missing": None},
        "approved": {"values": np.asarray(graph["approved"])[child_rows], "missing": None},
    }
    metadata = GeffMetadata(
        directed=True,
        axes=[
            Axis(name="t", type="time", unit="frame"),
            Axis(name="z", type="space", unit="pixel", scale=float(z_ratio)),
            Axis(name="y", type="space", unit="pixel", scale=1.0),
            Axis(name="x", type="space", unit="pixel", scale=1.0),
        ],
        node_props_metadata={},
        edge_props_metadata={},
        track_node_props={"tracklet": "track_id", "lineage": "lineage_id"},
        extra={"napari_cellect": {"z_ratio": float(z_ratio)}},
    )
    with atomic_path(path) as tmp:
        write_arrays(tmp, ids, node_props, edges, edge_props, metadata)
    logger.info("wrote %d nodes, %d edges to %s", len(graph), len(edges), path)


def write_label_series(
    frames: Iterable[np.ndarray],
    path: str | Path,
    n_frames: int,
    shape: tuple[int, int, int],
    dtype: DTypeLike = np.uint32,
) -> Path:
    """Write (T, Z, Y, X) instance masks frame by frame, never holding the whole series.

    ``path`` ending in ``.zarr`` gives a zarr array chunked per frame; anything else a TIFF with
    ``TZYX`` axes metadata. The write is atomic.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"cannot write labels: the folder {path.parent} does not exist", path)
    full_shape = (int(n_frames), *map(int, shape))
    with atomic_path(path) as tmp:
        if path.suffix == ".zarr":
            import zarr

            array = zarr.open_array(
                str(tmp), mode="w", shape=full_shape, chunks=(1, *full_shape[1:]), dtype=dtype
            )
            for t, frame in enumerate(frames):
                array[t] = frame
        else:
            with tifffile.TiffWriter(tmp, bigtiff=True) as writer:
                for frame in frames:
                    writer.write(
                        np.asarray(frame, dtype=dtype)[None],
                        contiguous=True,
                        photometric="minisblack",  # 3 or 4 slices are not RGB planes
                        metadata={"axes": "TZYX", "shape": full_shape},
                    )
    return path
