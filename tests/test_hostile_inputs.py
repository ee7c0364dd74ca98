"""Hostile input to the readers, the command line and the napari reader.

Each bad input gets an error that names the file and says what was expected and what was found
(the CLI: one line on stderr, exit 2, no output file, no temporary file left behind); odd but
usable input (one frame, NaN, infinite, negative or float voxels, spaces and non-ASCII names)
gets a documented result. ``docs/reliability.md`` lists every case.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_cellect.cli import main
from napari_cellect.data.annotations import read_tracks
from napari_cellect.data.atomic import TEMP_PREFIX
from napari_cellect.data.images import open_sequence
from napari_cellect.errors import InputError
from napari_cellect.model.bundle import ModelBundle

SHAPE = (2, 6, 32, 32)  # T, Z, Y, X
HEADER = "id,t,z,y,x,parent_id\n"


def movie(dtype=np.uint16, shape=SHAPE) -> np.ndarray:
    values = np.random.default_rng(0).random(shape) * 1000
    return values.astype(dtype)


def imagej(path: Path, data: np.ndarray, axes: str = "TZYX") -> Path:
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": axes})
    return path


def truncated(path: Path) -> Path:
    """An ImageJ hyperstack cut to half its length (its frame index is at the end)."""
    imagej(path, movie())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def huge_header(path: Path) -> Path:
    """A header claiming 4 frames of 8000 x 8000 pixels (512 MB) in a 20 kB file."""
    tifffile.imwrite(
        path,
        shape=(4, 8000, 8000),
        dtype=np.uint16,
        photometric="minisblack",
        metadata={"axes": "TYX"},
    )
    with open(path, "rb") as handle:
        head = handle.read(20_000)
    path.unlink()
    path.write_bytes(head)
    return path


def mixed_shapes(path: Path) -> Path:
    path.mkdir()
    tifffile.imwrite(path / "t0.tif", movie()[0])
    tifffile.imwrite(path / "t1.tif", movie(shape=(1, 6, 32, 30))[0])
    return path


#: name -> (make the input at a path, what the error says)
BAD_IMAGES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (lambda p: p, "no such file or folder"),
    "empty file": (lambda p: (p.write_bytes(b""), p)[1], "not a readable TIFF"),
    "not a TIFF": (lambda p: (p.write_text("id,t\n1,2\n"), p)[1], "not a readable TIFF"),
    "truncated": (truncated, "damaged or truncated"),
    "header claims huge sizes": (
        huge_header,
        r"pixel data up to byte 512,000,\d+, but the file "
        r"has 20,000 bytes",
    ),
    "3D without axes": (
        lambda p: (tifffile.imwrite(p, movie()[0]), p)[1],
        "Pass --axes TYX .a 2D time series. or --axes ZYX",
    ),
    "1D (a line of pixels)": (
        lambda p: (tifffile.imwrite(p, np.arange(32, dtype=np.uint16)), p)[1],
        r"expected \(T,Z,Y,X\) or \(T,Y,X\) data, found 1 dimension.s. \(32,\) with axes 'X'",
    ),
    "5D without axes": (
        lambda p: (tifffile.imwrite(p, movie()[None].repeat(2, 0), metadata={"axes": "QQQYX"}), p)[
            1
        ],
        r"found 5 dimensions .* Pass --axes TZYX",
    ),
    "two channels": (
        lambda p: imagej(p, movie()[:, :, None].repeat(2, 2), "TZCYX"),
        "has 2 channels",
    ),
    "folder of mixed shapes": (mixed_shapes, r"shape \(6, 32, 32\) of t0.tif, found \(6, 32, 30\)"),
    "folder without TIFFs": (lambda p: (p.mkdir(), p)[1], "found none"),
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return ModelBundle.random(preset="small", seed=0).save(
        tmp_path_factory.mktemp("model") / "model.pt"
    )


def cellect(capsys, *argv: str) -> tuple[int, str]:
    """Run the CLI in-process: an exception other than the CLI's own would fail the test."""
    code = main(list(argv))
    return code, capsys.readouterr().err


def assert_one_line_error(err: str, command: str, pattern: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith(f"cellect {command}: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]


def assert_no_output(folder: Path, out: Path) -> None:
    assert not out.exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)]


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_images_get_one_clear_line_from_cellect_track(case, tmp_path, capsys, weights):
    make, message = BAD_IMAGES[case]
    path = make(tmp_path / ("input" if "folder" in case else "input.tif"))
    out = tmp_path / "tracks.csv"
    code, err = cellect(
        capsys, "track", str(path), "-o", str(out), "--weights", str(weights), "--device", "cpu"
    )
    assert code == 2
    assert_one_line_error(err, "track", message)
    assert str(path.name) in err
    assert_no_output(tmp_path, out)


#: what the napari reader says where it differs from the CLI (napari has no --axes option)
NAPARI_IMAGE_MESSAGES = {
    "3D without axes": "Save the file with its axes in the metadata",
    "5D without axes": r"found 5 dimensions .* Save the file with its axes in the metadata",
}
#: not claimed by napari-cellect's reader: napari's own readers say they cannot open it
NOT_NAPARI_CELLECT_FILES = {"missing", "folder without TIFFs", "empty", "binary junk"}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_images_are_refused_by_the_napari_reader(case, tmp_path):
    from napari_cellect._napari._reader import get_reader

    make, message = BAD_IMAGES[case]
    path = make(tmp_path / ("input" if "folder" in case else "input.tif"))
    reader = get_reader(str(path))
    if case in NOT_NAPARI_CELLECT_FILES:
        assert reader is None
        return
    assert reader is not None
    with pytest.raises(InputError, match=NAPARI_IMAGE_MESSAGES.get(case, message)) as info:
        reader(str(path))
    assert path.name in str(info.value)
    assert "--axes" not in str(info.value) and "axes=" not in str(info.value)


@pytest.mark.parametrize(
    ("command", "case"),
    [
        ("train", "3D without axes"),
        ("train", "truncated"),
        ("finetune", "3D without axes"),
        ("finetune", "header claims huge sizes"),
    ],
)
def test_bad_images_get_one_clear_line_from_cellect_train_and_finetune(
    command, case, tmp_path, capsys, weights
):
    make, message = BAD_IMAGES[case]
    image = make(tmp_path / "input.tif")
    tracks = write(tmp_path / "tracks.csv", HEADER + "1,0,0,5,5,-1\n2,1,0,5,5,1\n")
    out = tmp_path / "out.pt"
    code, err = cellect(capsys, *cli_args(command, image, tracks, weights, out))
    assert code == 2
    assert_one_line_error(err, command, message)
    assert_no_output(tmp_path, out)


def cli_args(command: str, image: Path, tracks: Path, weights: Path, out: Path) -> list[str]:
    """``cellect train`` or ``cellect finetune`` on ``image`` with ``tracks`` (no GPU)."""
    if command == "train":
        return [
            command,
            str(image),
            "--annotations",
            str(tracks),
            "-o",
            str(out),
            "--device",
            "cpu",
        ]
    return [
        command,
        "--tracks",
        str(tracks),
        "--images",
        str(image),
        "--weights",
        str(weights),
        "-o",
        str(out),
        "--device",
        "cpu",
    ]


def test_python_callers_are_told_the_python_spelling(tmp_path):
    path = tmp_path / "volume.tif"
    tifffile.imwrite(path, movie()[0])
    with pytest.raises(InputError, match=r"Pass axes='TYX' .a 2D time series. or axes='ZYX'"):
        open_sequence(path)


#: name -> (write the image, frames expected in the result)
ODD_IMAGES: dict[str, tuple[Callable[[Path], Path], int]] = {
    "one frame": (lambda p: imagej(p, movie()[:1]), 1),
    "a single 2D image": (lambda p: (tifffile.imwrite(p, movie()[0, 0]), p)[1], 1),
    "NaN everywhere": (lambda p: imagej(p, np.full(SHAPE, np.nan, np.float32)), 2),
    "infinite voxels": (
        lambda p: imagej(p, np.where(movie() > 900, np.inf, movie()).astype(np.float32)),
        2,
    ),
    "negative floats": (lambda p: imagej(p, movie(np.float32) - 500), 2),
    "negative int16": (lambda p: imagej(p, movie(np.int16) - 500), 2),
}


@pytest.mark.parametrize("case", list(ODD_IMAGES))
def test_odd_but_usable_images_are_tracked(case, tmp_path, capsys, caplog, weights):
    make, frames = ODD_IMAGES[case]
    folder = tmp_path / "dossier à espaces"
    folder.mkdir()
    path = make(folder / "embryon été.tif")
    assert len(open_sequence(path)) == frames
    out = folder / "pistes sortie.csv"
    code, err = cellect(
        capsys, "track", str(path), "-o", str(out), "--weights", str(weights), "--device", "cpu"
    )
    assert code == 0, err
    graph = read_tracks(out)
    assert set(np.unique(graph["t"])) <= set(range(frames))
    assert np.isfinite(graph.positions()).all()
    if case == "NaN everywhere":
        assert len(graph) == 0 and "no contrast" in caplog.text


# ------------------------------------------------------------------------------- CSV

#: name -> (file content, what the error says (with the line))
BAD_CSVS: dict[str, tuple[str | bytes, str]] = {
    "empty": ("", "the file is empty"),
    "missing column": ("id,t,z,y,parent_id\n1,0,0,0,-1\n", "line 1: missing column.s. x"),
    "duplicated column": (
        "id,t,z,y,x,parent_id,x\n1,0,0,0,0,-1,5\n",
        "line 1: column.s. x appear more than once",
    ),
    "non-numeric value": (
        HEADER + "1,0,0,abc,0,-1\n",
        "line 2: column 'y': expected a number, found 'abc'",
    ),
    "infinite position": (HEADER + "1,0,0,inf,0,-1\n", "line 2: column 'y': expected a finite"),
    "empty position": (HEADER + "1,0,0,0\n", "line 2: column 'x': expected a number, found ''"),
    "row longer than the header": (
        HEADER + "1,0,0,0,0,-1,7,8\n",
        "line 2: expected at most 6 fields per row .* found 8",
    ),
    "negative frame": (HEADER + "1,-1,0,0,0,-1\n", "line 2: column 't': expected a frame index"),
    "fractional id": (HEADER + "1.5,0,0,0,0,-1\n", "line 2: column 'id': expected a whole number"),
    "id beyond 2**53": (
        HEADER + "99999999999999999999,0,0,0,0,-1\n",
        r"line 2: column 'id': expected a whole number of at most 2\*\*53",
    ),
    "negative id": (HEADER + "-5,0,0,0,0,-1\n", "node ids must be >= 0"),
    "duplicated id": (HEADER + "1,0,0,0,0,-1\n1,1,0,0,0,-1\n", "line 3: id 1 is used twice"),
    "missing parent": (HEADER + "1,1,0,0,0,7\n", "line 2: parent 7 of id 1 does not exist"),
    "parent forward in time": (
        HEADER + "1,0,0,0,0,2\n2,1,0,0,0,-1\n",
        r"line 2: parent 2 \(frame 1\) of id 1 \(frame 0\) is not in an "
        "earlier frame",
    ),
    "parent in the same frame": (
        HEADER + "1,0,0,0,0,-1\n2,0,0,0,0,1\n",
        "line 3: parent 1 .frame 0. of id 2 .frame 0. is not in an earlier",
    ),
    "own parent": (HEADER + "1,0,0,0,0,1\n", "line 2: parent 1 .frame 0. of id 1"),
    "cycle": (HEADER + "1,0,0,0,0,2\n2,1,0,0,0,1\n", "line 2: parent 2 .frame 1. of id 1"),
    "three children": (
        HEADER + "1,0,0,0,0,-1\n2,1,0,0,0,1\n3,1,0,0,0,1\n4,1,0,0,0,1\n",
        "line 2: id 1 has 3 children .at most 2.* lines 3, 4, 5",
    ),
    "unclosed quote": (HEADER + '"1,0,0,0,0,-1\n', "cannot parse the table"),
    "Latin-1 bytes": (
        HEADER.encode() + b"1,0,0,0,0,-1\n2,1,0,\xe9,0,1\n",
        "line 3: expected UTF-8 text, found the byte 0xe9",
    ),
    "binary junk": (bytes(range(256)) * 4, "expected UTF-8 text"),
}


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", list(BAD_CSVS))
def test_bad_csvs_name_the_file_and_line(case, tmp_path):
    content, message = BAD_CSVS[case]
    path = write(tmp_path / "tracks.csv", content)
    with pytest.raises(InputError, match=message) as info:
        read_tracks(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "case",
    ["duplicated column", "row longer than the header", "three children", "Latin-1 bytes", "cycle"],
)
def test_bad_csvs_get_one_clear_line_from_cellect_evaluate(case, tmp_path, capsys):
    content, message = BAD_CSVS[case]
    bad = write(tmp_path / "bad tracks é.csv", content)
    good = write(tmp_path / "gt.csv", HEADER + "1,0,0,0,0,-1\n")
    code, err = cellect(capsys, "evaluate", str(bad), str(good))
    assert code == 2
    assert_one_line_error(err, "evaluate", message)


@pytest.mark.parametrize("command", ["train", "finetune"])
@pytest.mark.parametrize("case", ["missing column", "parent forward in time", "Latin-1 bytes"])
def test_bad_csvs_get_one_clear_line_from_cellect_train_and_finetune(
    command, case, tmp_path, capsys, weights
):
    content, message = BAD_CSVS[case]
    tracks = write(tmp_path / "pistes à corriger.csv", content)
    image = imagej(tmp_path / "movie.tif", movie())
    out = tmp_path / "out.pt"
    code, err = cellect(capsys, *cli_args(command, image, tracks, weights, out))
    assert code == 2
    assert_one_line_error(err, command, message)
    assert tracks.name in err
    assert_no_output(tmp_path, out)


@pytest.mark.parametrize("case", list(BAD_CSVS))
def test_bad_csvs_are_refused_by_the_napari_reader_and_left_as_they_were(case, tmp_path):
    """The same message as in Python and the CLI; the file is not changed and gets no
    autosave journal."""
    from napari_cellect._napari._reader import get_reader
    from napari_cellect.track.journal import journal_folder_for

    content, message = BAD_CSVS[case]
    path = write(tmp_path / "embryon été_tracks.csv", content)
    before = path.read_bytes()
    reader = get_reader(str(path))
    if case in NOT_NAPARI_CELLECT_FILES:
        assert reader is None
        return
    assert reader is not None
    with pytest.raises(InputError, match=message):
        reader(str(path))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert not journal_folder_for(path).exists()


def test_extra_columns_numeric_kept_text_dropped(tmp_path):
    path = write(
        tmp_path / "tracks.csv",
        HEADER.strip() + ",note,quality\n1,0,0,0,0,-1,first,0.5\n2,1,0,1,1,1,second,0.7\n",
    )
    graph = read_tracks(path)
    assert list(graph.parent_of(2) for _ in [0]) == [1]
    assert np.allclose(graph["quality"], [0.5, 0.7])
    assert "note" not in graph.columns


def test_a_header_alone_is_an_empty_graph(tmp_path):
    assert len(read_tracks(write(tmp_path / "tracks.csv", HEADER))) == 0


# ------------------------------------------------------------------------------- models


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/cellect-was-pwned"),))


def test_a_malicious_pickle_as_model_is_refused_and_never_run(tmp_path, capsys):
    model = tmp_path / "model.pt"
    torch.save({"format": "napari-cellect-bundle", "payload": _Payload()}, model)
    marker = Path("/tmp/cellect-was-pwned")
    marker.unlink(missing_ok=True)
    code, err = cellect(
        capsys,
        "track",
        str(tmp_path),
        "-o",
        str(tmp_path / "t.csv"),
        "--weights",
        str(model),
        "--device",
        "cpu",
    )
    assert code == 2
    assert_one_line_error(err, "track", "objects other than tensors and plain values")
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(model, weights_only=True)


def test_a_model_from_a_newer_napari_cellect_is_refused_naming_both_versions(
    tmp_path, capsys, weights
):
    data = torch.load(weights, weights_only=True)
    data.update(version=7, written_by="napari-cellect 3.2.0")
    newer = tmp_path / "newer.pt"
    torch.save(data, newer)
    code, err = cellect(
        capsys,
        "track",
        str(tmp_path),
        "-o",
        str(tmp_path / "t.csv"),
        "--weights",
        str(newer),
        "--device",
        "cpu",
    )
    assert code == 2
    import napari_cellect

    assert_one_line_error(
        err,
        "track",
        rf"bundle version 7; napari-cellect {napari_cellect.__version__} reads "
        r"bundle version\(s\) \[1\]; it was written by napari-cellect 3\.2\.0",
    )
