"""Read tracks (ground truth or results) from files into a :class:`TrackGraph`.

Formats, detected by :func:`read_tracks`:

- our CSV (``docs/architecture.md``), or a hand-made CSV with only ``id,t,z,y,x,parent_id``
  (``approved`` optional, ``z`` optional for 2D data);
- linajea / mskcc-confocal ``tracks.txt``: a header ``t z y x cell_id parent_id track_id radius
  name div_state``, tab-separated; z is in world units (slice x z spacing) and is divided by
  ``z_ratio`` (default :data:`LINAJEA_Z_RATIO`) to give slices;
- Cell Tracking Challenge folders: ground truth ``TRA`` (``man_track.txt`` + ``man_track###.tif``
  markers) or results ``RES`` (``res_track.txt`` + ``mask###.tif``). A node is a label in a
  frame, placed at the label's centroid. Within a CTC track consecutive frames are linked; the
  first node of a track links to the last node of its parent track (the P column);
- GEFF (a zarr folder with ``geff`` metadata), as written by :func:`export.write_geff`.

Every reader checks its input and raises :class:`InputError` naming the file (and line) on bad
input. Positions are always voxels (z in slices).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import tifffile

from napari_cellect.errors import GraphError, InputError
from napari_cellect.settings.formats import LINAJEA_Z_RATIO
from napari_cellect.track.graph import TrackGraph

if TYPE_CHECKING:
    from geff_spec import GeffMetadata

logger = logging.getLogger(__name__)

#: values read as "no parent"
NO_PARENT = -1
#: optional numeric columns of our CSV (derived track columns are recomputed, not read)
CSV_OPTIONAL = ("radius", "score", "division_score", "link_score")
CSV_IGNORED = ("track_id", "parent_track_id")
TRUE_WORDS = frozenset({"1", "true", "yes", "y", "t"})
FALSE_WORDS = frozenset({"0", "false", "no", "n", "f", ""})
#: strings pandas would read as a missing value
EMPTY = frozenset({"", "nan", "NaN", "NA", "N/A", "null", "None"})
CTC_TABLES = {"man_track.txt": "man_track", "res_track.txt": "mask"}
#: largest id or frame read from a table: ids are parsed as float64, exact up to 2**53
MAX_INT = 2**53


def read_tracks(path: str | os.PathLike[str], z_ratio: float | None = None) -> TrackGraph:
    """Read tracks from any supported format (see the module docstring).

    Args:
        path: a CSV file, a ``tracks.txt``, a CTC ``TRA``/``RES`` folder (or its
            ``man_track.txt``/``res_track.txt``, or a ``*_GT`` folder holding ``TRA``), or a
            GEFF folder.
        z_ratio: z spacing over xy spacing. Used where z is stored in world units
            (``tracks.txt``: default :data:`LINAJEA_Z_RATIO`) and for the volume-based radius
            of CTC labels (default 1). Ignored for CSV and GEFF, which store slices.
    """
    kind, target = detect_format(path)
    if kind == "csv":
        return read_csv(target)
    if kind == "linajea":
        return read_linajea(target, LINAJEA_Z_RATIO if z_ratio is None else z_ratio)
    if kind == "ctc":
        return read_ctc(target, 1.0 if z_ratio is None else z_ratio)
    return read_geff(target)


def detect_format(path: str | os.PathLike[str]) -> tuple[str, Path]:
    """``(kind, path to read)`` with kind one of ``csv``, ``linajea``, ``ctc``, ``geff``."""
    path = Path(path)
    if not path.exists():
        raise InputError(
            "no such file or folder (expected a tracks CSV, tracks.txt, a CTC "
            "TRA/RES folder or a GEFF)",
            path,
        )
    if path.is_dir():
        if _is_geff(path):
            return "geff", path
        for folder in (path, path / "TRA"):
            if any((folder / name).is_file() for name in CTC_TABLES):
                return "ctc", folder
        raise InputError(
            "expected a CTC folder (man_track.txt or res_track.txt) or a GEFF "
            "folder, found neither",
            path,
        )
    if path.name in CTC_TABLES:
        return "ctc", path.parent
    header = _first_line(path)
    columns = {c.strip().strip('"').lower() for c in re.split(r"[\t,;\s]+", header.lstrip("#"))}
    if {"cell_id", "parent_id"} <= columns:
        return "linajea", path
    if {"id", "parent_id"} <= columns or path.suffix.lower() == ".csv":
        return "csv", path
    raise InputError(
        f"cannot tell the tracks format: expected a CSV header with id,t,z,y,x,parent_id or a "
        f"tracks.txt header with cell_id,parent_id, found {header[:80]!r}",
        path,
        1,
    )


# --------------------------------------------------------------------------- tables


def _first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            for line in handle:
                if line.strip():
                    return line.rstrip("\r\n")
    except OSError as error:
        raise InputError(f"cannot read the file ({error})", path) from error
    raise InputError("the file is empty", path)


def _read_table(path: Path, sep: str | None, header_prefix: str = "") -> pd.DataFrame:
    """Read a text table as strings, keeping the file line of every row (``df.attrs``)."""
    header = _first_line(path)
    if sep is None:
        sep = "\t" if "\t" in header else "," if "," in header else r"\s+"
    try:
        with warnings.catch_warnings():
            # index_col=False: a row longer than the header is an error, never an index
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(
                path,
                sep=sep,
                dtype=str,
                keep_default_na=False,
                skip_blank_lines=False,
                encoding="utf-8-sig",
                index_col=False,
                engine="python" if len(sep) > 1 else "c",
            )
    except UnicodeDecodeError as error:
        raise _not_utf8(path) from error
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError) as error:
        raise _too_many_fields(path, sep) or InputError(
            f"cannot parse the table ({str(error).strip()})", path
        ) from error
    names = [_column_name(c, header_prefix) for c in _header_fields(header, sep)]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(
            f"column(s) {', '.join(repeated)} appear more than once in the header; "
            "expected each column once",
            path,
            1,
        )
    df.columns = [_column_name(c, header_prefix) for c in df.columns]
    df = df.apply(lambda col: col.str.strip())
    lines = np.arange(len(df)) + 2  # line 1 is the header; blank lines are kept, then dropped
    blank = (df == "").all(axis=1).to_numpy()
    df = df.loc[~blank].reset_index(drop=True)
    df.attrs["lines"] = lines[~blank]
    return df


def _column_name(raw: object, header_prefix: str) -> str:
    return str(raw).strip().lstrip(header_prefix).strip().strip('"').lower()


def _header_fields(header: str, sep: str) -> list[str]:
    if len(sep) == 1:
        return next(csv.reader([header.lstrip("\ufeff")], delimiter=sep))
    return re.split(sep, header.strip())


def _not_utf8(path: Path) -> InputError:
    """Where the first byte that is not UTF-8 is (line and byte), for a file saved in another
    encoding (Excel's Latin-1, say) or not text at all."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        return InputError(
            f"expected UTF-8 text, found the byte 0x{raw[error.start]:02x} "
            f"(byte {error.start}); save the file as UTF-8 CSV",
            path,
            line,
        )
    return InputError("expected UTF-8 text; save the file as UTF-8 CSV", path)


def _too_many_fields(path: Path, sep: str) -> InputError | None:
    """The first row with more fields than the header, or None (regex separators: not looked
    for)."""
    if len(sep) != 1:
        return None
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = csv.reader(handle, delimiter=sep)
        width = None
        for row in rows:
            if width is None:
                width = len(row) if row else None
                continue
            if len(row) > width:
                return InputError(
                    f"expected at most {width} fields per row (as in the header), found {len(row)}",
                    path,
                    rows.line_num,
                )
    return None


def _require(df: pd.DataFrame, required: tuple[str, ...], path: Path) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(
            f"missing column(s) {', '.join(missing)}; expected at least {', '.join(required)}, "
            f"found {', '.join(df.columns) or 'none'}",
            path,
            1,
        )


def _numbers(
    df: pd.DataFrame,
    column: str,
    path: Path,
    *,
    integer: bool = False,
    required: bool = True,
    default: float = np.nan,
) -> np.ndarray:
    """A column as numbers; a non-numeric (or, if required, empty) cell names its line."""
    raw = df[column]
    values = np.array(pd.to_numeric(raw.where(~raw.isin(EMPTY)), errors="coerce"), np.float64)
    empty = raw.isin(EMPTY).to_numpy()
    bad = np.isnan(values) & ~empty
    if required:
        bad |= empty
    bad |= np.isinf(values)
    if integer:
        bad |= ~np.isnan(values) & ((values != np.round(values)) | (np.abs(values) > MAX_INT))
    if np.any(bad):
        row = int(np.flatnonzero(bad)[0])
        kind = "a whole number" if integer else "a number"
        if np.isinf(values[row]):
            kind = "a finite number"
        elif integer and abs(values[row]) > MAX_INT:
            kind = "a whole number of at most 2**53"
        raise InputError(
            f"column {column!r}: expected {kind}, found {raw.iloc[row]!r}"
            + (f" ({int(bad.sum())} such values)" if bad.sum() > 1 else ""),
            path,
            int(df.attrs["lines"][row]),
        )
    values[empty] = default
    return values


def _frame_numbers(df: pd.DataFrame, path: Path) -> np.ndarray:
    """The ``t`` column: frame indices, whole numbers >= 0."""
    t = _numbers(df, "t", path, integer=True).astype(np.int64)
    negative = np.flatnonzero(t < 0)
    if len(negative):
        row = int(negative[0])
        raise InputError(
            f"column 't': expected a frame index >= 0, found {t[row]}",
            path,
            int(df.attrs["lines"][row]),
        )
    return t


def _booleans(df: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    words = df[column].str.lower()
    bad = ~words.isin(TRUE_WORDS | FALSE_WORDS)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"column {column!r}: expected 0/1 or true/false, found {df[column].iloc[row]!r}",
            path,
            int(df.attrs["lines"][row]),
        )
    return words.isin(TRUE_WORDS).to_numpy()


def _check_links(
    ids: np.ndarray,
    t: np.ndarray,
    parent: np.ndarray,
    lines: np.ndarray,
    path: Path,
    id_name: str = "id",
) -> None:
    """Unique ids, existing and earlier parents, at most two children: else name the line."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    repeated = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if len(repeated):
        first, second = order[repeated[0]], order[repeated[0] + 1]
        raise InputError(
            f"{id_name} {ids[second]} is used twice (also on line "
            f"{lines[first]}); ids must be unique",
            path,
            int(lines[second]),
        )
    linked = np.flatnonzero(parent != NO_PARENT)
    pos = np.minimum(np.searchsorted(sorted_ids, parent[linked]), max(len(ids) - 1, 0))
    found = sorted_ids[pos] == parent[linked] if len(ids) else np.zeros(0, bool)
    if not np.all(found):
        row = linked[np.flatnonzero(~found)[0]]
        raise InputError(
            f"parent {parent[row]} of {id_name} {ids[row]} does not exist "
            f"(expected the {id_name} of a cell in an earlier frame, or -1)",
            path,
            int(lines[row]),
        )
    parent_rows = order[pos]
    later = np.flatnonzero(t[parent_rows] >= t[linked])
    if len(later):
        row = linked[later[0]]
        raise InputError(
            f"parent {parent[row]} (frame {t[parent_rows[later[0]]]}) of "
            f"{id_name} {ids[row]} (frame {t[row]}) is not in an earlier frame",
            path,
            int(lines[row]),
        )
    counts = np.bincount(parent_rows, minlength=len(ids))
    crowded = np.flatnonzero(counts > 2)
    if len(crowded):
        children = linked[parent_rows == crowded[0]]
        raise InputError(
            f"{id_name} {ids[crowded[0]]} has {counts[crowded[0]]} children (at "
            "most 2: a cell divides in two); they are on lines "
            + ", ".join(str(lines[c]) for c in children),
            path,
            int(lines[crowded[0]]),
        )


def _graph(columns: dict[str, Any], path: Path) -> TrackGraph:
    try:
        return TrackGraph.from_arrays(**columns)
    except GraphError as error:  # _check_links catches the usual cases with a line number
        raise InputError(str(error), path) from error


# --------------------------------------------------------------------------- CSV


def read_csv(path: str | Path) -> TrackGraph:
    """Read our CSV (or a minimal hand-made one: ``id,t,z,y,x,parent_id[,approved]``).

    ``z`` may be left out for 2D data (z = 0); an empty ``parent_id`` means none.
    ``track_id``/``parent_track_id`` are recomputed from the links. Other numeric columns are
    kept as extra graph columns; text columns are dropped.
    """
    path = Path(path)
    df = _read_table(path, sep=",")
    _require(df, ("id", "t", "y", "x", "parent_id"), path)
    columns: dict[str, Any] = {
        "id": _numbers(df, "id", path, integer=True).astype(np.int64),
        "t": _frame_numbers(df, path),
        "z": _numbers(df, "z", path) if "z" in df else np.zeros(len(df)),
        "y": _numbers(df, "y", path),
        "x": _numbers(df, "x", path),
        "parent_id": _numbers(
            df, "parent_id", path, integer=True, required=False, default=NO_PARENT
        ).astype(np.int64),
    }
    for name in CSV_OPTIONAL:
        if name in df:
            columns[name] = _numbers(df, name, path, required=False)
    if "approved" in df:
        columns["approved"] = _booleans(df, "approved", path)
    known = set(columns) | {"approved", *CSV_IGNORED}
    for name in (c for c in df.columns if c not in known):
        values = pd.to_numeric(df[name].where(~df[name].isin(EMPTY)), errors="coerce")
        if values.notna().sum() == (~df[name].isin(EMPTY)).sum():
            columns[name] = values.to_numpy(np.float64)
        else:
            logger.info("%s: ignoring the non-numeric column %r", path, name)
    _check_links(columns["id"], columns["t"], columns["parent_id"], df.attrs["lines"], path)
    graph = _graph(columns, path)
    logger.debug("read %d nodes from %s", len(graph), path)
    return graph


# --------------------------------------------------------------------------- linajea


def read_linajea(path: str | Path, z_ratio: float = LINAJEA_Z_RATIO) -> TrackGraph:
    """Read a linajea / mskcc-confocal ``tracks.txt``.

    Columns ``t z y x cell_id parent_id`` are required; ``radius`` and ``div_state`` are used
    when present (``div_state`` 1 marks a mother about to divide: division score 1). ``z`` is
    divided by ``z_ratio`` to get slices. ``track_id`` (a lineage id) and ``name`` are dropped.
    """
    path = Path(path)
    if z_ratio <= 0:
        raise InputError(f"z_ratio must be positive, found {z_ratio}", path)
    df = _read_table(path, sep=None, header_prefix="#")
    _require(df, ("t", "z", "y", "x", "cell_id", "parent_id"), path)
    ids = _numbers(df, "cell_id", path, integer=True).astype(np.int64)
    t = _frame_numbers(df, path)
    parent = _numbers(df, "parent_id", path, integer=True).astype(np.int64)
    _check_links(ids, t, parent, df.attrs["lines"], path, id_name="cell_id")
    columns: dict[str, Any] = {
        "id": ids,
        "t": t,
        "parent_id": parent,
        "z": _numbers(df, "z", path) / z_ratio,
        "y": _numbers(df, "y", path),
        "x": _numbers(df, "x", path),
    }
    if "radius" in df:
        columns["radius"] = _numbers(df, "radius", path, required=False)
    if "div_state" in df:
        state = _numbers(df, "div_state", path, integer=True, required=False, default=0)
        columns["division_score"] = (state == 1).astype(np.float32)
    else:
        columns["division_score"] = _mother_flags(ids, parent)
    graph = _graph(columns, path)
    logger.debug("read %d nodes from %s (z / %g)", len(graph), path, z_ratio)
    return graph


def _mother_flags(ids: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """1.0 for nodes with two children (they divide), else 0."""
    children, counts = np.unique(parent[parent != NO_PARENT], return_counts=True)
    return np.isin(ids, children[counts == 2]).astype(np.float32)


# --------------------------------------------------------------------------- CTC


def read_ctc(path: str | Path, z_ratio: float = 1.0) -> TrackGraph:
    """Read a CTC ``TRA`` (ground truth) or ``RES`` (results) folder.

    Nodes are the labels of each frame's image at their centroid, with the radius of a sphere
    of the same volume (z scaled by ``z_ratio``, in xy pixels); node ids are 0..N-1 in
    (frame, label) order. Division scores are 1 for a track's last node when two tracks name
    it as parent.
    """
    path = Path(path)
    if path.is_file():
        path = path.parent
    if (path / "TRA").is_dir() and not any((path / n).exists() for n in CTC_TABLES):
        path = path / "TRA"
    table_name = next((n for n in CTC_TABLES if (path / n).is_file()), None)
    if table_name is None:
        raise InputError("expected man_track.txt (ground truth) or res_track.txt (results)", path)
    table_path = path / table_name
    table = _read_lbep(table_path)
    images = _ctc_images(path, CTC_TABLES[table_name])
    t_all, label_all, pos_all, count_all = [], [], [], []
    is_2d = True
    for t, file in images:
        labels = tifffile.imread(file)
        if labels.ndim == 2:
            labels = labels[np.newaxis]
        if labels.ndim != 3 or labels.dtype.kind not in "iu":
            raise InputError(
                f"expected a 2D or 3D integer label image, found {labels.ndim}D {labels.dtype}",
                file,
            )
        values, centroids, counts = label_centroids(labels)
        unknown = np.setdiff1d(values, table[:, 0])
        if len(unknown):
            raise InputError(
                f"label(s) {', '.join(map(str, unknown[:10]))} are not in {table_name}", file
            )
        t_all.append(np.full(len(values), t))
        label_all.append(values)
        pos_all.append(centroids)
        count_all.append(counts)
        is_2d &= labels.shape[0] == 1
    times = np.concatenate(t_all).astype(np.int64) if t_all else np.zeros(0, np.int64)
    label = np.concatenate(label_all).astype(np.int64) if label_all else np.zeros(0, np.int64)
    positions = np.concatenate(pos_all) if pos_all else np.zeros((0, 3))
    counts = np.concatenate(count_all) if count_all else np.zeros(0)
    parent = _ctc_parents(times, label, table, table_path)
    ids = np.arange(len(times), dtype=np.int64)
    radius = np.sqrt(counts / np.pi) if is_2d else np.cbrt(3.0 * counts * z_ratio / (4.0 * np.pi))
    graph = _graph(
        {
            "id": ids,
            "t": times,
            "z": positions[:, 0],
            "y": positions[:, 1],
            "x": positions[:, 2],
            "parent_id": parent,
            "radius": radius,
            "division_score": _mother_flags(ids, parent),
        },
        table_path,
    )
    logger.debug("read %d nodes, %d tracks from %s", len(graph), len(table), path)
    return graph


def _read_lbep(path: Path) -> np.ndarray:
    """The ``L B E P`` table as an (N, 4) int64 array, checked line by line."""
    rows, lines = [], []
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 4 or not all(re.fullmatch(r"-?\d+", f) for f in fields):
                raise InputError(
                    f"expected four whole numbers 'L B E P', found {line.strip()!r}", path, number
                )
            rows.append([int(f) for f in fields])
            lines.append(number)
    table = np.array(rows, dtype=np.int64).reshape(-1, 4)
    for (label, begin, end, parent), number in zip(table, lines):
        if label <= 0 or begin < 0 or end < begin or parent < 0 or parent == label:
            raise InputError(
                f"expected L > 0, 0 <= B <= E and P >= 0 (P != L), found "
                f"{label} {begin} {end} {parent}",
                path,
                number,
            )
    labels, first = np.unique(table[:, 0], return_index=True)
    if len(labels) != len(table):
        dup = np.setdiff1d(np.arange(len(table)), first)[0]
        raise InputError(f"track {table[dup, 0]} is listed twice", path, lines[dup])
    orphans = np.flatnonzero((table[:, 3] != 0) & ~np.isin(table[:, 3], table[:, 0]))
    if len(orphans):
        row = orphans[0]
        raise InputError(
            f"parent track {table[row, 3]} of track {table[row, 0]} is not listed", path, lines[row]
        )
    return table


def _ctc_images(folder: Path, prefix: str) -> list[tuple[int, Path]]:
    pattern = re.compile(rf"{prefix}(\d+)\.tiff?$", re.IGNORECASE)
    found = sorted(
        (int(m.group(1)), folder / name)
        for name in (p.name for p in folder.iterdir())
        if (m := pattern.match(name))
    )
    if not found:
        raise InputError(
            f"expected {prefix}###.tif label images next to the track table, found none", folder
        )
    return found


def label_centroids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(label values, centroids (N, 3) z y x, voxel counts)`` of a (Z, Y, X) label image."""
    flat = labels.ravel()
    foreground = np.flatnonzero(flat)
    values, inverse = np.unique(flat[foreground], return_inverse=True)
    counts = np.bincount(inverse, minlength=len(values)).astype(np.float64)
    coords = np.unravel_index(foreground, labels.shape)
    centroids = (
        np.stack(
            [np.bincount(inverse, weights=c, minlength=len(values)) / counts for c in coords],
            axis=1,
        )
        if len(values)
        else np.zeros((0, 3))
    )
    return values.astype(np.int64), centroids, counts


def _ctc_parents(t: np.ndarray, label: np.ndarray, table: np.ndarray, path: Path) -> np.ndarray:
    """Link consecutive nodes of a track, and a track's first node to its parent's last."""
    parent = np.full(len(t), NO_PARENT, dtype=np.int64)
    if not len(t):
        return parent
    order = np.lexsort((t, label))
    same = label[order][1:] == label[order][:-1]
    parent[order[1:][same]] = order[:-1][same]
    firsts = order[np.r_[True, ~same]]
    lasts = order[np.r_[~same, True]]
    first_of = dict(zip(label[firsts].tolist(), firsts.tolist()))
    last_of = dict(zip(label[lasts].tolist(), lasts.tolist()))
    for number, (track, begin, end, mother) in enumerate(table, start=1):
        if track not in first_of:
            logger.warning(
                "%s: track %d (frames %d-%d) has no label in any image", path, track, begin, end
            )
            continue
        seen = (int(t[first_of[track]]), int(t[last_of[track]]))
        if seen != (begin, end):
            logger.warning(
                "%s: track %d spans frames %d-%d in the table but %d-%d in the images",
                path,
                track,
                begin,
                end,
                *seen,
            )
        if mother == 0:
            continue
        if mother not in last_of:
            logger.warning(
                "%s: parent track %d of track %d has no label in any image", path, mother, track
            )
            continue
        mother_row, child_row = last_of[mother], first_of[track]
        if t[mother_row] >= t[child_row]:
            raise InputError(
                f"track {track} starts in frame {t[child_row]} but its parent "
                f"track {mother} ends in frame {t[mother_row]}",
                path,
                number,
            )
        parent[child_row] = mother_row
    return parent


# --------------------------------------------------------------------------- GEFF


def _is_geff(path: Path) -> bool:
    for name in (".zattrs", "zarr.json"):
        attrs_file = path / name
        if attrs_file.is_file():
            try:
                attrs = json.loads(attrs_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return False
            attrs = attrs.get("attributes", attrs)
            return "geff" in attrs
    return False


def read_geff(path: str | Path) -> TrackGraph:
    """Read a GEFF graph (as written by :func:`napari_cellect.data.export.write_geff`).

    The time axis and the space axes (z, y, x; or y, x for 2D) come from the GEFF axes
    metadata, or from properties named ``t, z, y, x``. Positions are read as stored (our
    files store voxels with the z spacing as the z axis ``scale``). A node may have at most
    one incoming edge. Edge properties ``link_score`` and ``approved`` become node columns of
    the child.
    """
    from geff.core_io import read_to_memory

    path = Path(path)
    try:
        geff = read_to_memory(path)
    except (ValueError, KeyError, FileNotFoundError, OSError) as error:
        raise InputError(f"not a readable GEFF ({error})", path) from error
    node_ids = np.asarray(geff["node_ids"]).astype(np.int64)
    edges = np.asarray(geff["edge_ids"]).astype(np.int64).reshape(-1, 2)
    props = {name: _prop_values(prop) for name, prop in geff["node_props"].items()}
    time_name, space_names = _geff_axes(geff["metadata"], props, path)
    columns: dict[str, Any] = {"id": node_ids, "t": _whole(props[time_name], time_name, path)}
    for axis, name in zip("zyx"[3 - len(space_names) :], space_names):
        columns[axis] = props[name]
    columns.setdefault("z", np.zeros(len(node_ids)))
    used = {time_name, *space_names, "track_id", "lineage_id", "parent_id", "id"}
    for name, values in props.items():
        if name in used or values.ndim != 1 or values.dtype.kind not in "biuf":
            continue
        columns[name] = values
    parent = np.full(len(node_ids), NO_PARENT, dtype=np.int64)
    if len(edges):
        order = np.argsort(node_ids)
        pos = np.minimum(np.searchsorted(node_ids[order], edges), len(node_ids) - 1)
        unknown = node_ids[order][pos] != edges
        if len(node_ids) == 0 or np.any(unknown):
            raise InputError(
                f"edges name node(s) that do not exist: "
                f"{', '.join(map(str, np.unique(edges[unknown])[:10]))}",
                path,
            )
        child_rows = order[pos[:, 1]]
        counts = np.bincount(child_rows, minlength=len(node_ids))
        if np.any(counts > 1):
            bad = node_ids[counts > 1][:10]
            raise InputError(
                f"node(s) {', '.join(map(str, bad))} have more than one incoming "
                "edge; a tracking graph allows one parent per node",
                path,
            )
        parent[child_rows] = edges[:, 0]
        edge_props = {n: _prop_values(p) for n, p in geff["edge_props"].items()}
        if "link_score" in edge_props:
            link = np.full(len(node_ids), np.nan)
            link[child_rows] = edge_props["link_score"]
            columns["link_score"] = link
        if "approved" in edge_props:
            approved = np.asarray(columns.get("approved", np.zeros(len(node_ids))), bool).copy()
            approved[child_rows] = edge_props["approved"].astype(bool)
            columns["approved"] = approved
    columns["parent_id"] = parent
    graph = _graph(columns, path)
    logger.debug("read %d nodes, %d edges from %s", len(graph), len(edges), path)
    return graph


def _prop_values(prop: Mapping[str, Any]) -> np.ndarray:
    values = np.asarray(prop["values"])
    missing = prop.get("missing")
    if missing is not None and values.dtype.kind in "f" and np.any(missing):
        values = values.copy()
        values[np.asarray(missing, bool)] = np.nan
    return values


def _geff_axes(
    metadata: GeffMetadata, props: dict[str, np.ndarray], path: Path
) -> tuple[str, list[str]]:
    axes = metadata.axes or []
    time = [a.name for a in axes if a.type == "time"]
    space = [a.name for a in axes if a.type == "space"]
    if not time and "t" in props:
        time = ["t"]
    if not space:
        space = [n for n in ("z", "y", "x") if n in props]
    if len(time) != 1 or len(space) not in (2, 3):
        raise InputError(
            f"expected one time axis and 2 or 3 space axes, found time "
            f"{time or 'none'} and space {space or 'none'} (properties "
            f"{', '.join(props)})",
            path,
        )
    return time[0], space


def _whole(values: np.ndarray, name: str, path: Path) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind == "f" and np.any(values != np.round(values)):
        raise InputError(f"expected whole frame numbers in {name!r}, found fractions", path)
    return values.astype(np.int64)
