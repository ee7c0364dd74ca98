from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_cellect.errors import Cancelled, DeviceError, InputError, ModelError
from napari_cellect.infer.predict import (
    cache_fingerprint,
    model_digest,
    predict_sequence,
    resolve_model,
)
from napari_cellect.settings.detection import DetectionConfig
from napari_cellect.settings.normalization import NormalizationConfig
from napari_cellect.settings.tiling import TilingConfig
from napari_cellect.track.detections import DetectionCache

SHAPE = (6, 32, 32)
TILE = (6, 32, 32)  # one tile per frame: one model call per frame pair
NORM = NormalizationConfig(mode="none")


def moving_blobs(blobs, n_frames: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Two blobs drifting in x; frame t is also marked by its brightness (to identify it)."""
    frames, truth = [], []
    for t in range(n_frames):
        centres = np.array([[3.0, 10.0, 8.0 + 2 * t], [3.0, 22.0, 20.0 - t]])
        frames.append(blobs(SHAPE, centres, sigma_xy=2.5) * (1.0 + 0.01 * t))
        truth.append(centres)
    return np.stack(frames).astype(np.float32), truth


class CountingArray:
    """Array-like that records which frames were read."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape = data.shape
        self.ndim = data.ndim
        self.reads: list[int] = []

    def __getitem__(self, t: int) -> np.ndarray:
        self.reads.append(int(t))
        return self.data[t]


def frame_of(x: torch.Tensor, channel: int, images: np.ndarray) -> int:
    """Which frame of ``images`` a model input channel holds."""
    got = x[0, channel].numpy()
    matches = [t for t in range(len(images)) if np.array_equal(got, images[t])]
    assert len(matches) == 1
    return matches[0]


def run(images, model, **kw):
    kw.setdefault("tile", TILE)
    kw.setdefault("normalization", NORM)
    return list(predict_sequence(images, model, z_ratio=1.0, device="cpu", **kw))


def test_every_pair_runs_once_and_last_frame_pairs_with_itself(fake_unet, blobs):
    images, truth = moving_blobs(blobs, 4)
    model = fake_unet()
    source = CountingArray(images)
    done = []
    dets = run(
        source, model, progress=lambda step: done.append((step.stage, step.done, step.total))
    )
    assert [d.t for d in dets] == [0, 1, 2, 3]
    assert model.calls == 4
    pairs = [(frame_of(x, 0, images), frame_of(x, 1, images)) for x in model.inputs]
    assert pairs == [(0, 1), (1, 2), (2, 3), (3, 3)]
    assert sorted(source.reads) == [0, 1, 2, 3]  # each frame read once, lazily
    assert done == [("detect", 1, 4), ("detect", 2, 4), ("detect", 3, 4), ("detect", 4, 4)]
    for d, centres in zip(dets, truth):
        assert len(d) == 2
        d_min = np.linalg.norm(d.positions[:, None] - centres[None], axis=2).min(axis=0)
        assert d_min.max() < 0.3
        assert d.embeddings.shape == (2, 4)


def test_single_frame_warns_and_yields_it(fake_unet, blobs, caplog):
    images, _ = moving_blobs(blobs, 1)
    model = fake_unet()
    with caplog.at_level(logging.WARNING, logger="napari_cellect.infer.predict"):
        dets = run(images, model)
    assert "only one frame" in caplog.text
    assert len(dets) == 1 and len(dets[0]) == 2 and model.calls == 1


def test_cache_hit_avoids_model_calls(fake_unet, blobs, tmp_path):
    images, _ = moving_blobs(blobs, 3)
    model = fake_unet()
    fp = cache_fingerprint(model, ["a.tif", "b.tif"], z_ratio=1.0, tile=TILE, normalization=NORM)
    cache = DetectionCache(tmp_path, fp)
    first = run(images, model, cache=cache)
    assert model.calls == 3 and cache.frames() == [0, 1, 2]
    source = CountingArray(images)
    again = run(source, model, cache=cache)
    assert model.calls == 3 and source.reads == []
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.embeddings, b.embeddings)
    # another threshold is another fingerprint: the stale cache is not used
    fp2 = cache_fingerprint(
        model,
        ["a.tif", "b.tif"],
        z_ratio=1.0,
        tile=TILE,
        normalization=NORM,
        detection=DetectionConfig(threshold=0.6),
    )
    assert fp2 != fp
    run(images, model, cache=DetectionCache(tmp_path, fp2))
    assert model.calls == 6


def test_should_stop_cancels_within_one_pair(fake_unet, blobs):
    images, _ = moving_blobs(blobs, 5)
    model = fake_unet()
    yielded = []
    gen = predict_sequence(
        images,
        model,
        z_ratio=1.0,
        device="cpu",
        tile=TILE,
        normalization=NORM,
        should_stop=lambda: len(yielded) >= 1,
    )
    with pytest.raises(Cancelled, match="1 of 5"):
        for d in gen:
            yielded.append(d)
    assert len(yielded) == 1 and model.calls == 1


def test_frames_subset(fake_unet, blobs):
    images, _ = moving_blobs(blobs, 5)
    model = fake_unet()
    dets = run(images, model, frames=[4, 2, 2])
    assert [d.t for d in dets] == [2, 4]
    pairs = [(frame_of(x, 0, images), frame_of(x, 1, images)) for x in model.inputs]
    assert pairs == [(2, 3), (4, 4)]
    with pytest.raises(InputError, match="frame indices"):
        predict_sequence(images, model, z_ratio=1.0, frames=[5])


def test_empty_nan_and_constant_frames_give_empty_detections(fake_unet, blobs, caplog):
    images, _ = moving_blobs(blobs, 4)
    images[0] = np.nan
    images[1] = 7.0
    images[2] = 0.0  # no cells
    model = fake_unet()
    with caplog.at_level(logging.WARNING):
        dets = run(images, model, normalization=NormalizationConfig())
    assert [len(d) for d in dets] == [0, 0, 0, 2]
    assert all(d.embeddings.shape[1] == 4 for d in dets)
    assert "no contrast" in caplog.text and "NaN" in caplog.text


def test_dask_input_and_z1(fake_unet, blobs):
    da = pytest.importorskip("dask.array")
    frames = np.stack([blobs((1, 32, 32), [(0, 10, 12), (0, 22, 20)], sigma_xy=2.0)] * 2)
    model = fake_unet()
    dets = list(
        predict_sequence(
            da.from_array(frames, chunks=(1, 1, 32, 32)),
            model,
            z_ratio=5.0,
            device="cpu",
            tile=TilingConfig(tile=(4, 32, 32), overlap=(0, 0, 0), pad_to_tile=True),
            normalization=NORM,
        )
    )
    assert [len(d) for d in dets] == [2, 2]
    assert np.all(dets[0].positions[:, 0] == 0)
    assert model.inputs[0].shape[2] == 4  # the single slice was padded to the tile


def test_bundle_settings_are_used_and_overridable(fake_unet, blobs):
    images, _ = moving_blobs(blobs, 2)
    images[:, :, :, 16:] *= 0.6  # the second blob is dimmer (peak about 0.6)
    model = fake_unet(centre_level=0.3)
    bundle = SimpleNamespace(
        unet=model,
        thresholds=SimpleNamespace(detection=DetectionConfig(threshold=0.99)),
        normalization=NormalizationConfig(mode="none"),
    )
    strict = list(predict_sequence(images, bundle, z_ratio=1.0, device="cpu", tile=TILE))
    loose = list(
        predict_sequence(
            images,
            bundle,
            z_ratio=1.0,
            device="cpu",
            tile=TILE,
            detection=DetectionConfig(threshold=0.5),
        )
    )
    assert len(strict[0]) == 1 and len(loose[0]) == 2


def test_argument_errors_are_raised_at_the_call(fake_unet):
    model = fake_unet()
    with pytest.raises(InputError, match=r"\(T, Z, Y, X\)"):
        predict_sequence(np.zeros((4, 8, 8)), model, z_ratio=1.0)
    with pytest.raises(InputError, match="z_ratio"):
        predict_sequence(np.zeros((2, 1, 8, 8)), model, z_ratio=0.0)
    with pytest.raises(ModelError, match="unet"):
        predict_sequence(np.zeros((2, 1, 8, 8)), object(), z_ratio=1.0)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA"):
            predict_sequence(np.zeros((2, 1, 8, 8)), model, z_ratio=1.0, device="cuda")


def test_model_training_flag_is_restored(fake_unet, blobs):
    images, _ = moving_blobs(blobs, 2)
    model = fake_unet().train()
    run(images, model)
    assert model.training


def test_resolve_model_and_digest(fake_unet):
    model = fake_unet()
    resolved = resolve_model(model)
    assert resolved.unet is model and resolved.detection == DetectionConfig()
    bundle = SimpleNamespace(unet=model, thresholds=SimpleNamespace(link=1), normalization=None)
    assert resolve_model(bundle).detection == DetectionConfig()  # no detection section
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    assert model_digest(a) != model_digest(b)
    b.load_state_dict(a.state_dict())
    assert model_digest(a) == model_digest(b)


def test_image_sequence_input_and_default_heads_dtype(fake_unet, blobs):
    from napari_cellect.infer.predict import predict_frame

    images, _ = moving_blobs(blobs, 2)
    sequence = SimpleNamespace(data=images, scale=(1.0, 1.0, 1.0))  # like data.images.ImageSequence
    model = fake_unet()
    dets = run(sequence, model)
    assert [len(d) for d in dets] == [2, 2]
    heads = predict_frame(
        model, np.stack([images[0], images[1]]), t=0, z_ratio=1.0, return_heads=True
    ).heads
    assert heads["centre"].dtype == np.float16 and heads["centre"].shape == (5, *SHAPE)
    assert heads["seg"].shape == (3, *SHAPE) and heads["radius"].shape == (1, *SHAPE)


def test_volumes_of_one_shape_are_predicted_in_one_call_as_one_by_one(fake_unet, blobs):
    """predict_volumes: equal-shaped volumes share U-Net calls and give what predict_frame
    gives each alone; a volume of another shape gets its own call."""
    from napari_cellect.infer.predict import predict_frame, predict_volumes

    shapes = [(4, 32, 32)] * 3 + [(4, 40, 36)]
    rng = np.random.default_rng(5)
    pairs = []
    for shape in shapes:
        centres = [(2.0, *rng.uniform(8, s - 8, size=2)) for s in [min(shape[1:])] * 2]
        frame = blobs(shape, centres, sigma_xy=2.0)
        pairs.append(np.stack([frame, frame]).astype(np.float32))
    z_ratios = [2.0, 2.0, 2.0, 1.5]
    tiling = TilingConfig(tile=(4, 64, 64), overlap=(0, 8, 8))
    alone_model = fake_unet(size_multiple=(1, 4, 4))
    alone = [
        predict_frame(alone_model, p, t=3, z_ratio=z, tiling=tiling).detections
        for p, z in zip(pairs, z_ratios)
    ]
    model = fake_unet(size_multiple=(1, 4, 4))
    together = predict_volumes(model, pairs, t=3, z_ratios=z_ratios, tiling=tiling)
    assert model.calls == 2 and alone_model.calls == 4
    assert [x.shape[0] for x in model.inputs] == [3, 1]
    for a, b in zip(alone, together):
        assert len(a) > 0 and b.t == 3
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.embeddings, b.embeddings)
        np.testing.assert_array_equal(a.division, b.division)


def test_batches_stay_within_the_tile_voxels(fake_unet):
    from napari_cellect.infer.predict import predict_volumes

    pairs = [np.zeros((2, 4, 32, 32), np.float32)] * 5
    model = fake_unet(size_multiple=(1, 4, 4))
    tiling = TilingConfig(tile=(4, 64, 64), overlap=(0, 8, 8))  # room for 4 volumes per call
    out = predict_volumes(model, pairs, t=0, z_ratios=[1.0] * 5, tiling=tiling)
    assert len(out) == 5 and [x.shape[0] for x in model.inputs] == [4, 1]
    with pytest.raises(InputError, match="one z ratio per volume"):
        predict_volumes(model, pairs, t=0, z_ratios=[1.0], tiling=tiling)


def test_the_coarse_embedding_gives_the_embeddings_of_the_full_map():
    """The compact U-Net leaves its embedding on its half-resolution grid during inference;
    the detections, embeddings included, are those read from the full-resolution map."""
    from napari_cellect.infer.predict import predict_frame
    from napari_cellect.model.bundle import ModelBundle

    unet = ModelBundle.random(preset="small", seed=0).unet.eval()
    assert unet.embedding_stride == (1, 2, 2)
    x = torch.randn(1, 2, 4, 32, 48)
    with torch.inference_mode():
        full, coarse = unet(x), unet(x, coarse_embedding=True)
    assert coarse.embedding.shape[2:] == (4, 16, 24)
    z, y, x_ = np.meshgrid(np.arange(4), np.arange(32), np.arange(48), indexing="ij")
    torch.testing.assert_close(coarse.embedding[0][:, z // 1, y // 2, x_ // 2], full.embedding[0])

    class FullResolution(torch.nn.Module):  # the same network, asked for the full map
        def __init__(self, inner):
            super().__init__()
            self.inner, self.size_multiple = inner, inner.size_multiple

        def forward(self, x):
            return self.inner(x)

    rng = np.random.default_rng(0)
    pair = rng.normal(size=(2, 4, 64, 64)).astype(np.float32)
    cfg = DetectionConfig(threshold=0.0, foreground_threshold=0.0)
    ours = predict_frame(unet, pair, t=0, z_ratio=2.0, detection=cfg).detections
    reference = predict_frame(
        FullResolution(unet), pair, t=0, z_ratio=2.0, detection=cfg
    ).detections
    assert len(ours) > 0
    np.testing.assert_array_equal(ours.positions, reference.positions)
    np.testing.assert_array_equal(ours.embeddings, reference.embeddings)
