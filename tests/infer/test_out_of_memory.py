"""Running out of (GPU) memory during prediction: the frame is retried with smaller tiles, and
the log says so; when even the smallest tile does not fit, a DeviceError says what to do.

No GPU is needed: the U-Net's forward raises torch.OutOfMemoryError (what CUDA raises, as
``torch.cuda.OutOfMemoryError``) for tiles larger than a limit.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from napari_cellect.cli import main
from napari_cellect.errors import DeviceError
from napari_cellect.infer.predict import predict_frame
from napari_cellect.infer.tiling import model_size_multiple
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.model.unet import UNet3D
from napari_cellect.settings.tiling import TilingConfig


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return ModelBundle.random(preset="small", seed=0)


def pair() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.random((2, 8, 64, 64), dtype=np.float32)


def limit_memory(monkeypatch, max_yx: int, seen: list[tuple[int, ...]]) -> None:
    """Every U-Net 'runs out of memory' on tiles larger than ``max_yx`` in y or x."""
    forward = UNet3D.forward

    def forward_with_limit(self, x, **kwargs):
        seen.append(tuple(x.shape[-3:]))
        if max(x.shape[-2:]) > max_yx:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, x, **kwargs)

    monkeypatch.setattr(UNet3D, "forward", forward_with_limit)


def test_out_of_memory_retries_with_smaller_tiles_and_says_so(bundle, monkeypatch, caplog):
    whole = TilingConfig(tile=(8, 64, 64), overlap=(2, 8, 8))
    expected = predict_frame(
        bundle.unet,
        pair(),
        t=0,
        z_ratio=1.0,
        tiling=TilingConfig(tile=(8, 32, 32), overlap=(2, 8, 8)),
    ).detections
    seen: list[tuple[int, ...]] = []
    limit_memory(monkeypatch, 32, seen)
    with caplog.at_level(logging.WARNING, logger="napari_cellect.infer.predict"):
        got = predict_frame(bundle.unet, pair(), t=3, z_ratio=1.0, tiling=whole).detections
    assert seen[0] == (8, 64, 64) and set(seen[1:]) == {(8, 32, 32)}
    assert (
        "out of memory on cpu with tiles of 8x64x64 voxels (frame 3); retrying with tiles "
        "of 8x32x32"
    ) in caplog.text
    np.testing.assert_allclose(got.positions, expected.positions)
    np.testing.assert_allclose(got.embeddings, expected.embeddings, rtol=1e-5, atol=1e-6)


def test_no_tile_small_enough_is_a_device_error(bundle, monkeypatch):
    seen: list[tuple[int, ...]] = []
    limit_memory(monkeypatch, 0, seen)
    with pytest.raises(
        DeviceError,
        match=r"out of memory on cpu even with tiles of 8x\d+x\d+ "
        r"voxels .frame 0.*CUDA out of memory",
    ):
        predict_frame(
            bundle.unet,
            pair(),
            t=0,
            z_ratio=1.0,
            tiling=TilingConfig(tile=(8, 64, 64), overlap=(2, 8, 8)),
        )
    smallest = model_size_multiple(bundle.unet)
    assert seen[-1][1:] == tuple(smallest[1:])  # it went down to the smallest tile first


def test_cellect_track_survives_out_of_memory(bundle, monkeypatch, caplog, tmp_path, capsys):
    import tifffile

    images = tmp_path / "movie.tif"
    frames = (np.random.default_rng(2).random((2, 8, 64, 64)) * 1000).astype(np.uint16)
    tifffile.imwrite(images, frames, imagej=True, metadata={"axes": "TZYX"})
    weights = bundle.save(tmp_path / "model.pt")
    seen: list[tuple[int, ...]] = []
    limit_memory(monkeypatch, 32, seen)
    with caplog.at_level(logging.WARNING):
        code = main(
            [
                "track",
                str(images),
                "-o",
                str(tmp_path / "tracks.csv"),
                "--weights",
                str(weights),
                "--device",
                "cpu",
                "--tile",
                "8",
                "64",
                "64",
            ]
        )
    assert code == 0, capsys.readouterr().err
    for t in (0, 1):  # (division refinement may predict crops of a frame again)
        assert f"tiles of 8x64x64 voxels (frame {t}); retrying with tiles of 8x32x32" in caplog.text
    assert (tmp_path / "tracks.csv").is_file()


def test_a_batch_out_of_memory_is_predicted_one_by_one(bundle, monkeypatch, caplog):
    """Division refinement's batched crops: a batch that does not fit is predicted volume by
    volume (each with predict_frame's own retries), with the same detections."""
    from napari_cellect.infer.predict import predict_volumes

    volumes = [pair(), pair()[:, :, ::-1].copy()]
    tiling = TilingConfig(tile=(8, 64, 128), overlap=(2, 8, 8))
    expected = predict_volumes(bundle.unet, volumes, t=2, z_ratios=[1.0, 1.0], tiling=tiling)
    forward = UNet3D.forward
    batches: list[int] = []

    def one_at_a_time(self, x, **kwargs):
        batches.append(int(x.shape[0]))
        if x.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
        return forward(self, x, **kwargs)

    monkeypatch.setattr(UNet3D, "forward", one_at_a_time)
    with caplog.at_level(logging.WARNING, logger="napari_cellect.infer.predict"):
        got = predict_volumes(bundle.unet, volumes, t=2, z_ratios=[1.0, 1.0], tiling=tiling)
    assert batches == [2, 1, 1]
    assert "with a batch of 2 volumes (frame 2); predicting them one by one" in caplog.text
    for a, b in zip(got, expected):  # oneDNN's channels-last kernels round by batch size
        assert len(a) == len(b)
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-4)
