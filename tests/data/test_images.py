from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from napari_cellect.data import images
from napari_cellect.data.images import frame_number, open_sequence
from napari_cellect.errors import InputError

T, Z, Y, X = 6, 5, 16, 12


@pytest.fixture
def movie() -> np.ndarray:
    """(T, Z, Y, X) uint16 whose every voxel value encodes its position."""
    return np.arange(T * Z * Y * X, dtype=np.uint16).reshape(T, Z, Y, X)


def _write_folder(folder, volumes, name="t{:03d}.tif", numbers=None):
    folder.mkdir(exist_ok=True)
    numbers = range(len(volumes)) if numbers is None else numbers
    for number, volume in zip(numbers, volumes):
        tifffile.imwrite(folder / name.format(number), volume)
    return folder


# ------------------------------------------------------------------ folders of TIFFs


def test_ctc_style_folder(tmp_path, movie):
    folder = _write_folder(tmp_path / "01", movie)
    seq = open_sequence(folder)
    assert isinstance(seq.data, da.Array)
    assert seq.data.shape == (T, Z, Y, X) and seq.data.dtype == np.uint16
    assert seq.data.chunks[0] == (1,) * T
    np.testing.assert_array_equal(seq.data.compute(), movie)
    assert seq.frames == list(range(T))
    assert [p.name for p in seq.sources] == [f"t{i:03d}.tif" for i in range(T)]
    assert seq.name == "01" and seq.scale == (1.0, 1.0, 1.0) and seq.z_ratio == 1.0
    assert len(seq) == T


def test_numeric_sort_not_lexicographic(tmp_path):
    volumes = [np.full((2, 6, 6), i, np.uint8) for i in range(12)]
    folder = _write_folder(tmp_path / "imgs", volumes, name="embryo_s1_t{}.tif")
    (tmp_path / "imgs" / "notes.txt").write_text("ignored")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # contiguous numbering: no gap warning
        seq = open_sequence(folder)
    assert seq.frames == list(range(12))
    np.testing.assert_array_equal(seq.data[:, 0, 0, 0].compute(), np.arange(12))


def test_gap_in_numbering_warns_with_missing_frames(tmp_path):
    volumes = [np.full((2, 6, 6), i, np.uint8) for i in range(6)]
    folder = _write_folder(tmp_path / "gaps", volumes, name="f{}.tiff", numbers=[1, 2, 5, 6, 7, 11])
    with pytest.warns(UserWarning, match=r"frames 3-4, 8-10 are missing"):
        seq = open_sequence(folder)
    assert seq.frames == [1, 2, 5, 6, 7, 11]
    np.testing.assert_array_equal(seq.data[:, 0, 0, 0].compute(), np.arange(6))


def test_frame_number_is_last_integer():
    from pathlib import Path

    assert frame_number(Path("mskcc_confocal_s2_t012.tif")) == 12
    assert frame_number(Path("a7.ome.tif")) == 7
    assert frame_number(Path("volume.tif")) is None


def test_2d_folder_gets_z_of_one(tmp_path, movie):
    folder = _write_folder(tmp_path / "2d", movie[:, 0])
    seq = open_sequence(folder)
    assert seq.data.shape == (T, 1, Y, X)
    np.testing.assert_array_equal(seq.data[:, 0].compute(), movie[:, 0])


def test_folder_errors(tmp_path, movie):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    with pytest.raises(InputError, match=r"empty: expected \.tif/\.tiff files"):
        open_sequence(empty)

    shapes = _write_folder(tmp_path / "shapes", [movie[0], movie[1, :, :8]])
    with pytest.raises(
        InputError,
        match=r"t001\.tif: .*shape \(5, 16, 12\) of t000\.tif, "
        r"found \(5, 8, 12\)",
    ):
        open_sequence(shapes)

    dtypes = _write_folder(tmp_path / "dtypes", [movie[0], movie[1].astype(np.float32)])
    with pytest.raises(InputError, match=r"t001\.tif: .*dtype uint16 .*found float32"):
        open_sequence(dtypes)

    duplicate = _write_folder(tmp_path / "dup", [movie[0]], name="a_t{}.tif")
    tifffile.imwrite(duplicate / "b_t0.tif", movie[0])
    with pytest.raises(InputError, match="two files have frame number 0"):
        open_sequence(duplicate)

    unnumbered = _write_folder(tmp_path / "unnumbered", [movie[0]], name="volume.tif")
    with pytest.raises(InputError, match=r"volume\.tif: expected a frame number"):
        open_sequence(unnumbered)


def test_header_shape_check_reads_no_pixels(tmp_path, movie, monkeypatch):
    folder = _write_folder(tmp_path / "seq", movie)

    def forbidden(*args, **kwargs):
        raise AssertionError("pixel data read while opening")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", forbidden)
    monkeypatch.setattr(tifffile, "memmap", forbidden)
    monkeypatch.setattr(tifffile, "imread", forbidden)
    seq = open_sequence(folder)
    assert seq.data.shape == (T, Z, Y, X)


def test_frames_are_read_lazily_one_at_a_time(tmp_path, movie, monkeypatch):
    folder = _write_folder(tmp_path / "seq", movie)
    calls = []
    real = images._read_tiff_frame

    def counting(path, letters, t):
        calls.append(path)
        return real(path, letters, t)

    monkeypatch.setattr(images, "_read_tiff_frame", counting)
    seq = open_sequence(folder)
    assert calls == []
    # the file changes on disk after opening: the new content is what a compute sees
    tifffile.imwrite(folder / "t002.tif", np.full((Z, Y, X), 7, np.uint16))
    np.testing.assert_array_equal(seq.data[2].compute(), 7)
    assert len(calls) == 1 and calls[0].endswith("t002.tif")


# ------------------------------------------------------------------ one TIFF


def test_imagej_hyperstack_with_scale(tmp_path, movie):
    path = tmp_path / "movie.tif"
    tifffile.imwrite(
        path,
        movie,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.25),
        metadata={"axes": "TZYX", "spacing": 1.25, "unit": "um"},
    )
    seq = open_sequence(path)
    assert seq.data.shape == (T, Z, Y, X)
    assert seq.scale == pytest.approx((1.25, 0.25, 0.25))
    assert seq.z_ratio == pytest.approx(5.0)
    assert seq.frames == list(range(T)) and seq.name == "movie"
    np.testing.assert_array_equal(seq.data[3].compute(), movie[3])


def test_ome_tiff_scale_and_compressed_pages(tmp_path, movie):
    path = tmp_path / "movie.ome.tif"
    tifffile.imwrite(
        path,
        movie,
        ome=True,
        compression="zlib",
        metadata={"axes": "TZYX", "PhysicalSizeZ": 2.0, "PhysicalSizeY": 0.5, "PhysicalSizeX": 0.5},
    )
    with pytest.raises(ValueError):
        tifffile.memmap(path, mode="r")  # compressed: the zarr path is exercised
    seq = open_sequence(path)
    assert seq.name == "movie" and seq.z_ratio == pytest.approx(4.0)
    np.testing.assert_array_equal(seq.data.compute(), movie)


def test_imagej_2d_time_series(tmp_path, movie):
    path = tmp_path / "tyx.tif"
    tifffile.imwrite(path, movie[:, 0], imagej=True, metadata={"axes": "TYX"})
    seq = open_sequence(path)
    assert seq.data.shape == (T, 1, Y, X)
    assert seq.z_ratio == 1.0
    np.testing.assert_array_equal(seq.data[:, 0].compute(), movie[:, 0])


def test_3d_tiff_without_metadata_needs_axes(tmp_path, movie):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, movie[:, 0], metadata=None)
    with pytest.raises(InputError, match=r"stack\.tif: cannot tell whether .* T,Y,X or Z,Y,X"):
        open_sequence(path)
    as_time = open_sequence(path, axes="TYX")
    assert as_time.data.shape == (T, 1, Y, X)
    np.testing.assert_array_equal(as_time.data.compute()[:, 0], movie[:, 0])
    as_volume = open_sequence(path, axes="zyx")
    assert as_volume.data.shape == (1, T, Y, X)
    with pytest.raises(InputError, match="name 4 dimensions but the image has 3"):
        open_sequence(path, axes="TZYX")


def test_axes_argument_reorders(tmp_path, movie):
    path = tmp_path / "zt.tif"
    tifffile.imwrite(path, np.ascontiguousarray(movie.transpose(1, 0, 2, 3)))  # stored Z,T,Y,X
    seq = open_sequence(path, axes="ZTYX")
    np.testing.assert_array_equal(seq.data.compute(), movie)


def test_4d_tiff_without_metadata_is_tzyx(tmp_path, movie):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, movie)
    np.testing.assert_array_equal(open_sequence(path).data[1].compute(), movie[1])


def test_multichannel_is_refused(tmp_path):
    path = tmp_path / "two_channels.tif"
    tifffile.imwrite(
        path, np.zeros((2, 3, 2, 8, 8), np.uint8), imagej=True, metadata={"axes": "TZCYX"}
    )
    with pytest.raises(
        InputError,
        match=r"two_channels\.tif: the image has 2 channels.*one "
        r"channel",
    ):
        open_sequence(path)


def test_bad_paths(tmp_path):
    with pytest.raises(InputError, match=r"missing\.tif: no such file"):
        open_sequence(tmp_path / "missing.tif")
    png = tmp_path / "frame.png"
    png.write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match=r"frame\.png: expected a folder of TIFFs.*'\.png'"):
        open_sequence(png)
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match=r"broken\.tif: not a readable TIFF"):
        open_sequence(broken)


# ------------------------------------------------------------------ zarr


def test_zarr_tzyx_lazy(tmp_path, movie):
    path = tmp_path / "movie.zarr"
    stored = zarr.open_array(
        str(path), mode="w", shape=movie.shape, chunks=(1, Z, Y, X), dtype=movie.dtype
    )
    stored[:] = movie
    seq = open_sequence(path)
    assert seq.data.shape == (T, Z, Y, X) and seq.name == "movie"
    stored[1] = 9  # written after opening: visible, so nothing was read at open time
    np.testing.assert_array_equal(seq.data[1].compute(), 9)
    np.testing.assert_array_equal(seq.data[0].compute(), movie[0])


def test_a_zarr_frame_is_read_from_its_own_chunks(tmp_path, movie):
    """Frames keep zarr's chunks (a quarter frame each here), so reading frame t reads the
    chunks of frame t only: damaged chunks of another frame do not matter."""
    path = tmp_path / "movie.zarr"
    chunks = (1, Z, Y // 2, X // 2)
    stored = zarr.open_array(
        str(path), mode="w", shape=movie.shape, chunks=chunks, dtype=movie.dtype
    )
    stored[:] = movie
    seq = open_sequence(path)
    assert seq.data.chunksize == chunks and seq.data.numblocks == (T, 1, 2, 2)
    damaged = [f for f in (path / "c" / "2").rglob("*") if f.is_file()]
    assert len(damaged) == 4
    for chunk in damaged:
        chunk.write_bytes(b"not a chunk")
    np.testing.assert_array_equal(seq.data[1].compute(), movie[1])
    np.testing.assert_array_equal(seq.data[3].compute(), movie[3])
    with pytest.raises(RuntimeError, match="decompression"):  # the only frame read from them
        seq.data[2].compute()


def test_zarr_tyx_and_axes(tmp_path, movie):
    tyx = tmp_path / "tyx.zarr"
    zarr.open_array(str(tyx), mode="w", shape=(T, Y, X), dtype=np.uint16)[:] = movie[:, 0]
    seq = open_sequence(tyx)
    assert seq.data.shape == (T, 1, Y, X)
    np.testing.assert_array_equal(seq.data[:, 0].compute(), movie[:, 0])

    yxt = tmp_path / "yxt.zarr"
    zarr.open_array(str(yxt), mode="w", shape=(Y, X, T), dtype=np.uint16)[:] = movie[
        :, 0
    ].transpose(1, 2, 0)
    np.testing.assert_array_equal(open_sequence(yxt, axes="YXT").data[:, 0].compute(), movie[:, 0])


def test_ome_ngff_group(tmp_path, movie):
    path = tmp_path / "image.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.create_array("0", shape=(T, 1, Z, Y, X), dtype=np.uint16)[:] = movie[:, None]
    group.attrs["multiscales"] = [
        {
            "axes": [
                {"name": "t", "type": "time"},
                {"name": "c", "type": "channel"},
                {"name": "z", "type": "space"},
                {"name": "y", "type": "space"},
                {"name": "x", "type": "space"},
            ],
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [1.0, 1.0, 3.0, 0.5, 0.5]}
                    ],
                }
            ],
        }
    ]
    seq = open_sequence(path)
    assert seq.data.shape == (T, Z, Y, X)
    assert seq.scale == pytest.approx((3.0, 0.5, 0.5))
    np.testing.assert_array_equal(seq.data.compute(), movie)


def test_zarr_errors(tmp_path):
    group = zarr.open_group(str(tmp_path / "many.zarr"), mode="w")
    group.create_array("a", shape=(2, 4, 4), dtype=np.uint8)
    group.create_array("b", shape=(2, 4, 4), dtype=np.uint8)
    with pytest.raises(InputError, match=r"many\.zarr: .*group with arrays \['a', 'b'\]"):
        open_sequence(tmp_path / "many.zarr")
    flat = tmp_path / "flat.zarr"
    zarr.open_array(str(flat), mode="w", shape=(4, 4), dtype=np.uint8)
    with pytest.raises(InputError, match=r"flat\.zarr: expected \(T,Z,Y,X\) or \(T,Y,X\)"):
        open_sequence(flat)
    nested = zarr.open_group(str(tmp_path / "nested.zarr"), mode="w")
    nested.create_group("0")
    nested.attrs["multiscales"] = [{"axes": ["t", "y", "x"], "datasets": [{"path": "0"}]}]
    with pytest.raises(InputError, match=r"nested\.zarr: expected an array at '0' .*found a group"):
        open_sequence(tmp_path / "nested.zarr")
