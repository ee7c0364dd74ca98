"""Open an image time series lazily as a (T, Z, Y, X) dask array.

Accepted forms (see :func:`open_sequence`):

- a folder of per-time-point TIFFs (one ZYX or YX volume per file), e.g. a Cell Tracking
  Challenge sequence folder ``01/t000.tif ...`` or ``images/embryo_t012.tif``; the frame number
  is the last integer in each file name;
- one TIFF holding (T, Z, Y, X) or (T, Y, X), with ImageJ/OME axes or an explicit ``axes``;
- a zarr array (``*.zarr``), plain or OME-NGFF (level 0 of the first multiscale image).

Headers are read at once (shapes, dtypes, voxel size); pixels are read only when a frame is
computed: one dask task per frame, memory-mapped where tifffile allows. 2D+t data is returned
with Z = 1.
"""

from __future__ import annotations

import logging
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, cast

import dask
import dask.array as da
import numpy as np
import tifffile
import zarr

from napari_cellect.errors import InputError

logger = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
#: axis letters napari-cellect understands; C (channel) must have size 1
KNOWN_AXES = "TZYXC"
#: tifffile's letters for an axis whose meaning the file does not say
UNKNOWN_AXES = "QI"
#: tifffile letters that mean "channel-like": colour samples and ImageJ/OME channels
CHANNEL_AXES = "CS"
#: unit name -> micrometres, for OME physical sizes given in other units
UNIT_TO_UM = {
    "pm": 1e-6,
    "Å": 1e-4,
    "nm": 1e-3,
    "µm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
}


@dataclass(frozen=True)
class AxesOption:
    """How the interface in use lets a person say which axis is which.

    Error messages about axes name it, so a command-line user reads ``--axes TYX`` and a Python
    user ``axes='TYX'``.
    """

    spell: Callable[[str], str]
    """An axes string as the interface takes it: ``"TYX"`` -> ``"axes='TYX'"``."""
    lead: str = "Pass"
    """The verb (or sentence) before the first choice."""
    tail: str = ""
    """Said after the choices."""

    def say(self, *choices: tuple[str, str]) -> str:
        """``Pass axes='TYX' (a 2D time series) or axes='ZYX' (a single volume)``."""
        options = " or ".join(
            f"{self.spell(axes)}{f' ({what})' if what else ''}" for axes, what in choices
        )
        return f"{self.lead} {options}{self.tail}"


PYTHON_AXES = AxesOption(spell=lambda axes: f"axes={axes!r}")
CLI_AXES = AxesOption(spell=lambda axes: f"--axes {axes}")


@dataclass
class ImageSequence:
    """A lazily read image time series and what is known about it.

    Attributes:
        data: dask array (T, Z, Y, X); Z = 1 for 2D+t data. One chunk per frame.
        scale: voxel size (z, y, x) in the file's unit (micrometres for OME), (1, 1, 1) if unknown.
        frames: the real frame number of each index along T (file numbering may have gaps or
            start at 1); index ``i`` of ``data`` is frame ``frames[i]``.
        sources: the files the pixels come from (one per frame for a folder, else one).
        name: a short name for layers and output files.
        origin: the ``(path, axes)`` it was opened from, so another process (a dask worker)
            can open the same series with ``open_sequence(*origin)``; None for a series built
            in memory.
    """

    data: da.Array
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    frames: list[int] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)
    name: str = ""
    origin: tuple[Path, str | None] | None = None

    @property
    def z_ratio(self) -> float:
        """Anisotropy: z spacing over y spacing."""
        return float(self.scale[0] / self.scale[1])

    def __len__(self) -> int:
        return int(self.data.shape[0])


def open_sequence(
    path: str | Path, axes: str | None = None, *, axes_option: AxesOption = PYTHON_AXES
) -> ImageSequence:
    """Open an image time series without reading its pixels.

    Args:
        path: a folder of per-time-point TIFFs, one multi-frame TIFF, or a ``.zarr`` array.
        axes: the order of the stored axes, using the letters T, Z, Y, X (and C for a channel
            axis of size 1), e.g. ``"TZYX"`` or ``"TYX"``. It overrides the file's own metadata.
            For a folder it describes one file (``"ZYX"``, ``"YX"``; a leading T is ignored).
            Needed for a 3D TIFF without axes metadata, which could be T,Y,X or Z,Y,X.
        axes_option: how the caller's interface takes ``axes`` (:data:`CLI_AXES` for the
            command line), so that error messages name the option the person can use.

    Raises:
        InputError: the path is missing or not an image series, the files of a folder differ
            in shape or dtype, the axes cannot be decided, or the data has several channels.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(
            "no such file or folder (expected a folder of TIFFs, a TIFF or a .zarr)", path
        )
    if _is_zarr(path):
        sequence = _open_zarr(path, axes, axes_option)
    elif path.is_dir():
        sequence = _open_tiff_folder(path, axes, axes_option)
    elif path.suffix.lower() in TIFF_SUFFIXES:
        sequence = _open_tiff_file(path, axes, axes_option)
    else:
        raise InputError(
            f"expected a folder of TIFFs, a .tif/.tiff file or a .zarr array, found a "
            f"'{path.suffix or 'no suffix'}' file",
            path,
        )
    sequence.origin = (path.resolve(), axes)
    return sequence


def check_tiff(path: str | Path) -> None:
    """Refuse a TIFF that is not readable or is damaged or truncated, reading its header only.

    Raises:
        InputError: as :func:`open_sequence` says it for such a file.
    """
    _read_header(Path(path))


# --------------------------------------------------------------------------------- axes


def _parse_axes(axes: str, ndim: int, source: Path) -> str:
    """Check a user-given axes string against the data's number of dimensions."""
    letters = axes.upper()
    bad = sorted(set(letters) - set(KNOWN_AXES))
    if bad or len(set(letters)) != len(letters):
        raise InputError(
            f"axes must use each of the letters {', '.join(KNOWN_AXES)} at most once, "
            f"found {axes!r}",
            source,
        )
    if len(letters) != ndim:
        raise InputError(
            f"axes {axes!r} name {len(letters)} dimensions but the image has {ndim}", source
        )
    return letters


def _resolve_axes(
    found: str,
    shape: Sequence[int],
    given: str | None,
    sequence: bool,
    source: Path,
    option: AxesOption,
    default_3d: str | None = None,
) -> str:
    """Decide the axis letters (from T Z Y X C) of stored data.

    ``found`` is the file's own description (tifffile letters; Q/I mean unknown). ``sequence``
    says whether the data holds the whole time series (one file) or one time point (folder).
    ``default_3d`` is how 3D data without metadata is read when the form makes it unambiguous.
    """
    ndim = len(shape)
    if given is not None:
        letters = given.upper()
        if not sequence and len(letters) == ndim + 1 and "T" in letters:
            letters = letters.replace("T", "")
        return _parse_axes(letters, ndim, source)
    letters = "".join("C" if a in CHANNEL_AXES else a for a in found.upper())
    if letters and not set(letters) & set(UNKNOWN_AXES) and len(letters) == ndim:
        unsupported = [(a, n) for a, n in zip(letters, shape) if a not in KNOWN_AXES]
        if unsupported:
            raise InputError(
                f"unsupported axes {found!r} with shape {tuple(shape)}; expected only "
                f"{', '.join(KNOWN_AXES)}. {option.say(('TZYX', ''))} (the order of your file) "
                "to say which axis is which",
                source,
            )
        return letters
    # no usable metadata: decide by the number of dimensions
    if ndim == 3 and default_3d is not None:
        return default_3d
    if not sequence and ndim in (2, 3):
        return "ZYX"[-ndim:]
    if sequence and ndim == 4:
        return "TZYX"
    if sequence and ndim == 3:
        raise InputError(
            f"cannot tell whether the 3 dimensions {tuple(shape)} are T,Y,X or Z,Y,X: the file "
            "has no axes metadata. "
            + option.say(("TYX", "a 2D time series"), ("ZYX", "a single volume")),
            source,
        )
    expected = "(T,Z,Y,X) or (T,Y,X)" if sequence else "(Z,Y,X) or (Y,X)"
    raise InputError(
        f"expected {expected} data, found {ndim} dimensions {tuple(shape)} without axes "
        f"metadata. {option.say(('TZYX' if sequence else 'ZYX', ''))} (the order of your file) "
        "to say which axis is which",
        source,
    )


def _check_axes(
    letters: str, shape: Sequence[int], sequence: bool, source: Path, option: AxesOption
) -> None:
    """Refuse multi-channel data, more than one time axis in a per-frame file, and no YX."""
    if "Y" not in letters or "X" not in letters:
        expected = "(T,Z,Y,X) or (T,Y,X)" if sequence else "(Z,Y,X) or (Y,X)"
        raise InputError(
            f"expected {expected} data, found {len(shape)} dimension(s) {tuple(shape)} with "
            f"axes {letters!r}: an image needs a Y and an X axis",
            source,
        )
    sizes = dict(zip(letters, shape))
    if sizes.get("C", 1) > 1:
        free = next((a for a in "TZ" if a not in letters), None)
        hint = (
            f" If this axis is not a channel: {option.say((letters.replace('C', free), ''))}"
            if free
            else ""
        )
        raise InputError(
            f"the image has {sizes['C']} channels (axes {letters}, shape {tuple(shape)}); "
            "napari-cellect tracks one channel: save the nuclear channel on its own "
            f"(e.g. Fiji: Image > Color > Split Channels) and open that.{hint}",
            source,
        )
    if not sequence and sizes.get("T", 1) > 1:
        raise InputError(
            f"expected one time point per file in a folder, found {sizes['T']} time points "
            f"(axes {letters}, shape {tuple(shape)}). Open the file on its own instead",
            source,
        )


def _frame_shape(letters: str, shape: Sequence[int]) -> tuple[int, int, int]:
    sizes = dict(zip(letters, shape))
    return (sizes.get("Z", 1), sizes["Y"], sizes["X"])


def _to_zyx(block: np.ndarray, letters: str) -> np.ndarray:
    """Reorder a block with axes ``letters`` (T and C, if any, of size 1) to (Z, Y, X)."""
    for single in "TC":
        if single in letters:
            block = np.take(block, 0, axis=letters.index(single))
            letters = letters.replace(single, "")
    if "Z" not in letters:
        block = block[np.newaxis]
        letters = "Z" + letters
    return np.transpose(block, [letters.index(a) for a in "ZYX"])


# --------------------------------------------------------------------------------- TIFF


def _read_tiff_frame(path: str, letters: str, t: int | None) -> np.ndarray:
    """Read one time point (all of the file when ``t`` is None) of series 0 as (Z, Y, X).

    Memory-maps uncompressed files, so only the pages of frame ``t`` are touched; otherwise
    reads through tifffile's zarr view, which also decodes only the pages asked for.
    """
    index: tuple[Any, ...] = tuple(
        t if (a == "T" and t is not None) else slice(None) for a in letters
    )
    rest = letters.replace("T", "") if t is not None else letters
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        try:
            mapped = tifffile.memmap(path, mode="r")
        except ValueError:  # compressed or not contiguous: not memory-mappable
            mapped = None
        if mapped is not None and mapped.shape == tuple(series.shape):
            block = np.array(mapped[index])
            del mapped
        else:
            block = np.asarray(zarr.open_array(series.aszarr(), mode="r")[index])
    return np.ascontiguousarray(_to_zyx(block, rest))


@dataclass(frozen=True)
class _TiffHeader:
    axes: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: tuple[float, float, float] | None  # None: the file does not say


#: what tifffile logs (and then reads on with what it could) when a file's structure is damaged;
#: other errors it logs (odd metadata, a strange tag) leave the pixels readable
_TIFF_DAMAGE = re.compile(
    r"corrupted|invalid (page |value )?offset|invalid offset to page|"
    r"invalid next page|missing data|incorrect Strip|does not match|"
    r"failed to reshape|circular reference"
)


class _TifffileErrors(logging.Handler):
    """Collects tifffile's reports of a damaged file: it logs them at ERROR level and goes on
    with what it could read (fewer frames, one page) rather than raising."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if _TIFF_DAMAGE.search(message):
            self.messages.append(message)


def _read_header(path: Path) -> _TiffHeader:
    """Series 0's axes, shape, dtype and voxel size, without reading pixel data.

    A file that tifffile finds damaged, or whose header places pixel data beyond the end of
    the file (truncated, or a header claiming huge sizes), is refused here rather than read
    as fewer frames or failing in the middle of a run.
    """
    errors = _TifffileErrors()
    tifffile_logger = logging.getLogger("tifffile")
    tifffile_logger.addHandler(errors)
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise InputError("the TIFF holds no image", path)
            series = tif.series[0]
            _check_data_extent(series, path)
            if errors.messages:
                raise InputError(
                    "the TIFF is damaged or truncated (tifffile: "
                    f"{_strip_file_name(errors.messages[0])})",
                    path,
                )
            if len(tif.series) > 1:
                logger.info("%s holds %d image series; using the first", path, len(tif.series))
            return _TiffHeader(
                series.axes, tuple(series.shape), np.dtype(series.dtype), _tiff_scale(tif)
            )
    except InputError:
        raise
    except (tifffile.TiffFileError, OSError, ValueError) as error:
        raise InputError(f"not a readable TIFF file ({error})", path) from error
    finally:
        tifffile_logger.removeHandler(errors)


def _check_data_extent(series: tifffile.TiffPageSeries, path: Path) -> None:
    """Refuse a series whose pixel data would lie (partly) beyond the end of the file."""
    size = path.stat().st_size
    if series.dataoffset is not None:  # contiguous: one block of known size
        end = int(series.dataoffset) + int(series.nbytes)
    else:
        end = max(
            (
                int(o) + int(c)
                for page in series.pages
                if page is not None
                for o, c in zip(page.dataoffsets, page.databytecounts)
            ),
            default=0,
        )
    if end > size:
        raise InputError(
            f"the TIFF is truncated or its header is wrong: it describes {_describe(series)} "
            f"with pixel data up to byte {end:,}, but the file has {size:,} bytes",
            path,
        )


def _describe(series: tifffile.TiffPageSeries) -> str:
    return f"an image of shape {tuple(series.shape)} ({series.axes}, {np.dtype(series.dtype)})"


def _strip_file_name(message: str) -> str:
    """tifffile's messages start with the object's repr; the error already names the file."""
    return re.sub(r"^<tifffile\.\w+ [^>]*>\s*", "", message)


def _tiff_scale(tif: tifffile.TiffFile) -> tuple[float, float, float] | None:
    """Voxel size (z, y, x) from OME PhysicalSize or ImageJ spacing/resolution tags."""
    if tif.is_ome and tif.ome_metadata:
        scale = _ome_scale(tif.ome_metadata)
        if scale is not None:
            return scale
    if tif.is_imagej:
        meta = tif.imagej_metadata or {}
        tags = tif.pages.first.tags
        y = _pixel_size(tags.get("YResolution"))
        x = _pixel_size(tags.get("XResolution"))
        z = float(meta.get("spacing", 1.0) or 1.0)
        if (x, y, z) != (1.0, 1.0, 1.0):
            return (z, y, x)
    return None


def _pixel_size(tag: tifffile.TiffTag | None) -> float:
    """A TIFF resolution tag holds pixels per unit as a rational; the size is its inverse."""
    if tag is None:
        return 1.0
    rational = np.ravel(tag.value).astype(float)  # one number, or (numerator, denominator)
    num, den = float(rational[0]), float(rational[1]) if rational.size > 1 else 1.0
    return den / num if num else 1.0


def _ome_scale(xml: str) -> tuple[float, float, float] | None:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    pixels = next(
        (el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"), None
    )
    if pixels is None:
        return None
    sizes = []
    for axis in "ZYX":
        value = pixels.get(f"PhysicalSize{axis}")
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
        sizes.append(float(value) * UNIT_TO_UM.get(unit, 1.0) if value else None)
    if all(s is None for s in sizes):
        return None
    y = sizes[1] or sizes[2] or 1.0
    x = sizes[2] or y
    return (sizes[0] or 1.0, y, x)


def _final_scale(
    scale: tuple[float, float, float] | None, letters: str
) -> tuple[float, float, float]:
    """Default (1,1,1); 2D data gets z = y spacing so that z_ratio is 1."""
    z, y, x = scale if scale is not None else (1.0, 1.0, 1.0)
    if "Z" not in letters:
        z = y
    return (float(z), float(y), float(x))


def _open_tiff_file(path: Path, axes: str | None, option: AxesOption) -> ImageSequence:
    header = _read_header(path)
    letters = _resolve_axes(
        header.axes, header.shape, axes, sequence=True, source=path, option=option
    )
    _check_axes(letters, header.shape, sequence=True, source=path, option=option)
    frame_shape = _frame_shape(letters, header.shape)
    if "T" in letters:
        n_frames = header.shape[letters.index("T")]
        tasks = [
            dask.delayed(_read_tiff_frame, pure=True)(str(path), letters, t)
            for t in range(n_frames)
        ]
    else:  # one explicitly labelled volume, e.g. an ImageJ ZYX stack: a one-frame sequence
        tasks = [dask.delayed(_read_tiff_frame, pure=True)(str(path), letters, None)]
    data = da.stack([da.from_delayed(task, frame_shape, header.dtype) for task in tasks])
    logger.debug("opened %s: axes %s, %d frames of %s", path, letters, len(tasks), frame_shape)
    return ImageSequence(
        data=data,
        scale=_final_scale(header.scale, letters),
        frames=list(range(len(tasks))),
        sources=[path],
        name=_stem(path),
    )


def frame_number(path: Path) -> int | None:
    """The last integer in a file name (without its suffixes), or None."""
    numbers = re.findall(r"\d+", _stem(path))
    return int(numbers[-1]) if numbers else None


def _missing_frames_text(frames: Sequence[int]) -> str:
    """'3, 7-9' for the numbers missing between the first and the last frame."""
    present = np.asarray(frames)
    missing = np.setdiff1d(np.arange(present.min(), present.max() + 1), present)
    runs = np.split(missing, np.flatnonzero(np.diff(missing) != 1) + 1)
    return ", ".join(f"{r[0]}" if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def _list_frames(folder: Path) -> tuple[list[int], list[Path]]:
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES and not p.name.startswith(".")
    ]
    if not files:
        raise InputError("expected .tif/.tiff files (one per time point), found none", folder)
    numbered: dict[int, Path] = {}
    for file in files:
        number = frame_number(file)
        if number is None:
            raise InputError(
                "expected a frame number in every file name (e.g. t007.tif), found none", file
            )
        if number in numbered:
            raise InputError(
                f"two files have frame number {number}: {numbered[number].name} and "
                f"{file.name}; keep one time series per folder",
                folder,
            )
        numbered[number] = file
    frames = sorted(numbered)
    if frames[-1] - frames[0] + 1 != len(frames):
        warnings.warn(
            f"{folder}: frames {_missing_frames_text(frames)} are missing; the series "
            f"jumps over them ({len(frames)} files, frames {frames[0]}..{frames[-1]})",
            UserWarning,
            stacklevel=4,
        )
    return frames, [numbered[f] for f in frames]


def _open_tiff_folder(folder: Path, axes: str | None, option: AxesOption) -> ImageSequence:
    frames, files = _list_frames(folder)
    first = _read_header(files[0])
    letters = _resolve_axes(
        first.axes, first.shape, axes, sequence=False, source=files[0], option=option
    )
    _check_axes(letters, first.shape, sequence=False, source=files[0], option=option)
    for file in files[1:]:
        header = _read_header(file)
        if header.shape != first.shape:
            raise InputError(
                f"expected every file of the series to have the shape {first.shape} of "
                f"{files[0].name}, found {header.shape}",
                file,
            )
        if header.dtype != first.dtype:
            raise InputError(
                f"expected every file of the series to have the dtype {first.dtype} of "
                f"{files[0].name}, found {header.dtype}",
                file,
            )
    frame_shape = _frame_shape(letters, first.shape)
    data = da.stack(
        [
            da.from_delayed(
                dask.delayed(_read_tiff_frame, pure=True)(str(f), letters, None),
                frame_shape,
                first.dtype,
            )
            for f in files
        ]
    )
    logger.debug("opened %s: %d files of %s (axes %s)", folder, len(files), frame_shape, letters)
    return ImageSequence(
        data=data,
        scale=_final_scale(first.scale, letters),
        frames=frames,
        sources=files,
        name=folder.name,
    )


# --------------------------------------------------------------------------------- zarr


def _is_zarr(path: Path) -> bool:
    markers = ("zarr.json", ".zarray", ".zgroup")
    return path.suffix.lower() == ".zarr" or (
        path.is_dir() and any((path / m).exists() for m in markers)
    )


def _open_zarr(path: Path, axes: str | None, option: AxesOption) -> ImageSequence:
    try:
        node = zarr.open(str(path), mode="r")
    except (OSError, ValueError, KeyError, TypeError) as error:  # zarr errors are ValueErrors
        raise InputError(f"not a readable zarr store ({error})", path) from error
    found, scale = "", None
    if isinstance(node, zarr.Group):
        node, found, scale = _zarr_image_in_group(node, path)
    dimensions = node.attrs.asdict().get("_ARRAY_DIMENSIONS")  # xarray's axis names
    if not found and isinstance(dimensions, list):
        found = "".join(str(d)[:1].upper() for d in dimensions)
    shape = tuple(int(n) for n in node.shape)
    letters = _resolve_axes(
        found, shape, axes, sequence=True, source=path, option=option, default_3d="TYX"
    )
    _check_axes(letters, shape, sequence=True, source=path, option=option)
    data = da.from_zarr(node)
    stored = letters
    if "C" in letters:
        data = data[tuple(0 if a == "C" else slice(None) for a in letters)]
        letters = letters.replace("C", "")
    for missing in "ZT":
        if missing not in letters:
            data, letters = data[np.newaxis], missing + letters
    data = data.transpose([letters.index(a) for a in "TZYX"]).rechunk({0: 1})
    zyx = None
    if scale is not None and len(scale) == len(stored):
        sizes = dict(zip(stored, scale))
        zyx = (sizes.get("Z", 1.0), sizes.get("Y", 1.0), sizes.get("X", 1.0))
    return ImageSequence(
        data=data,
        scale=_final_scale(zyx, stored),
        frames=list(range(data.shape[0])),
        sources=[path],
        name=_stem(path),
    )


class _NgffTransform(TypedDict, total=False):
    type: str
    scale: list[float]


class _NgffAxis(TypedDict, total=False):
    name: str


class _NgffDataset(TypedDict, total=False):
    path: str
    coordinateTransformations: list[_NgffTransform]


class _NgffImage(TypedDict, total=False):
    datasets: list[_NgffDataset]
    axes: list[_NgffAxis | str]  # OME-NGFF 0.3 names axes by bare strings
    coordinateTransformations: list[_NgffTransform]


class _NgffOme(TypedDict, total=False):
    multiscales: list[_NgffImage]


class _NgffAttrs(TypedDict, total=False):
    """The attributes of an OME-NGFF image group (0.5 nests them under ``ome``)."""

    multiscales: list[_NgffImage]
    ome: _NgffOme


def _array_in(group: zarr.Group, key: str, path: Path) -> zarr.Array:
    node = group[key]
    if not isinstance(node, zarr.Array):
        raise InputError(f"expected an array at {key!r} in the zarr group, found a group", path)
    return node


def _zarr_image_in_group(
    group: zarr.Group, path: Path
) -> tuple[zarr.Array, str, list[float] | None]:
    """Level 0 of an OME-NGFF image (with its axes and scale), or a group's only array."""
    # the layout OME-NGFF 0.4 / 0.5 promises; a store that breaks it fails on a missing key
    attrs = cast(_NgffAttrs, group.attrs.asdict())
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if multiscales:
        image = multiscales[0]
        dataset = image["datasets"][0]
        names = [a["name"] if isinstance(a, dict) else str(a) for a in image.get("axes", [])]
        found = "".join(n[:1].upper() for n in names)
        scale = None
        for transforms in (
            dataset.get("coordinateTransformations", []),
            image.get("coordinateTransformations", []),
        ):
            for transform in transforms:
                if transform.get("type") == "scale":
                    values = [float(v) for v in transform["scale"]]
                    scale = values if scale is None else [a * b for a, b in zip(scale, values)]
        return _array_in(group, dataset["path"], path), found, scale
    arrays = sorted(group.array_keys())
    if len(arrays) == 1:
        return _array_in(group, arrays[0], path), "", None
    raise InputError(
        f"expected a zarr array or an OME-NGFF image, found a group with arrays {arrays}; "
        "pass the path of the array itself",
        path,
    )


def _stem(path: Path) -> str:
    """File name without image suffixes (``a.ome.tif`` -> ``a``)."""
    name = path.name
    for suffix in (".tiff", ".tif", ".zarr"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    if name.lower().endswith(".ome"):
        name = name[:-4]
    return name
