"""The GPU path: tracking and training on CUDA agree with the CPU (skipped without CUDA)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_cellect.data.synthetic import PRESETS, generate
from napari_cellect.evaluate import evaluate
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.pipeline import track_images
from napari_cellect.train.config import TrainConfig
from napari_cellect.train.data import SamplingConfig
from napari_cellect.train.fit import fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def series():
    config = dataclasses.replace(
        PRESETS["default"], frames=4, shape=(24, 96, 96), n_cells=12, seed=11
    )
    return config, generate(config)


def test_default_model_tracks_alike_on_cuda_and_cpu(series):
    config, seq = series
    bundle = ModelBundle.load_default()
    scores = {}
    for device in ("cpu", "cuda"):
        result = track_images(seq.images, bundle, z_ratio=config.z_ratio, device=device)
        scores[device] = evaluate(result.graph, seq.graph, z_ratio=config.z_ratio)
        counts = [len(d) for d in result.detections]
        scores[device + "_counts"] = counts
    # bf16 autocast on the GPU moves a borderline peak at most
    assert np.abs(np.subtract(scores["cpu_counts"], scores["cuda_counts"])).max() <= 1
    assert scores["cuda"].det_f1 >= scores["cpu"].det_f1 - 0.03
    assert scores["cuda"].link_f1 >= scores["cpu"].link_f1 - 0.05


def test_training_on_cuda_with_workers_returns_a_cpu_bundle(series):
    config, seq = series
    train = [(seq.images, seq.graph, config.z_ratio)]
    cfg = TrainConfig(
        epochs=2,
        steps_per_epoch=3,
        batch_size=4,
        warmup_steps=0,
        device="cuda",
        workers=2,
        sampling=SamplingConfig(crop=(16, 64, 64)),
        validation_frames=1,
        validation_crops=1,
        calibration_frames=1,
    )
    losses = []
    bundle = fit(train, train, cfg, progress=lambda p: losses.append(p.losses.get("total")))
    steps = [value for value in losses if value is not None]
    assert len(steps) >= 6 and np.isfinite(steps).all()
    assert all(p.device.type == "cpu" for m in bundle.modules() for p in m.parameters())
    result = track_images(seq.images[:2], bundle, z_ratio=config.z_ratio, device="cuda")
    assert len(result.detections) == 2
