"""Where the time of a training step goes: drawing the crops, and the network's step.

A training step is (1) drawing ``batch`` crops with their targets (numpy: crop, render targets,
augment) and (2) the losses, backward pass and optimiser step of the network (U-Net, peak finder
on the crops once detections train the scorers, the two scorers). On a CPU both compete for the
same cores; on a GPU (2) shrinks and (1) decides the speed unless worker processes draw the crops
(``TrainConfig.workers``). This script times each part alone and then whole steps through
:class:`~napari_cellect.train.sample_pool.SamplePool` with 0 and N workers.

Run: ``python benchmarks/bench_train_step.py [--device cuda] [--batch-size 8] [--workers 14]``
(training series: the ``default``, ``dense``, ``hard`` and ``sparse2d`` presets; crops of the
default model's training, 16 x 96 x 96).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

import train_default

from napari_cellect.train.fit import Trainer
from napari_cellect.train.sample_pool import SamplePool

SERIES = [("default", 101), ("dense", 103), ("hard", 107), ("sparse2d", 109)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _network_step(trainer: Trainer, batches: list, use_detections: bool) -> float:
    """Mean seconds of losses + backward + optimiser step over ``batches`` (after one warm-up)."""
    rng = np.random.default_rng(0)
    trainer.bundle.train(True)
    detector_ready = trainer.loop.detector_ready
    trainer.loop.detector_ready = use_detections
    times = []
    for i, samples in enumerate(batches):
        _sync(trainer.device)
        started = time.perf_counter()
        trainer.train_step(samples, rng)
        _sync(trainer.device)
        if i:
            times.append(time.perf_counter() - started)
    trainer.loop.detector_ready = detector_ready
    return float(np.mean(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="workers of the pooled run")
    parser.add_argument("--steps", type=int, default=10, help="steps timed per measurement")
    args = parser.parse_args(argv)

    sources = train_default._sources(SERIES, [], False, "train", processes=args.workers)
    config = dataclasses.replace(
        train_default.FULL,
        device=args.device,
        batch_size=args.batch_size,
        validation_frames=0,
        validation_crops=1,
        calibration_frames=0,
    )
    trainer = Trainer(sources, sources[:1], config)
    rng = np.random.default_rng(1)
    started = time.perf_counter()
    batches = [
        [trainer.sampler.sample(rng) for _ in range(args.batch_size)] for _ in range(args.steps + 1)
    ]
    draw = (time.perf_counter() - started) / (args.steps + 1)
    rows = [("draw a batch's crops (1 process)", draw)]
    for benchmark in (False, True) if trainer.device.type == "cuda" else (False,):
        torch.backends.cudnn.benchmark = benchmark
        label = ", cudnn.benchmark" if benchmark else ""
        rows.append(
            (
                f"network step, annotated centres only{label}",
                _network_step(trainer, batches, use_detections=False),
            )
        )
        rows.append(
            (
                f"network step, with peak-finder detections{label}",
                _network_step(trainer, batches, use_detections=True),
            )
        )
    for workers in sorted({0, args.workers}):
        trainer.pool.close()
        trainer.pool = SamplePool(trainer.sampler, workers)
        trainer.loop.detector_ready = True
        steps = range(args.steps + workers // max(1, args.batch_size) + 2)
        rng_loss = np.random.default_rng(2)
        times = []
        last = time.perf_counter()
        for samples in trainer.pool.batches(0, 0, steps, args.batch_size):
            trainer.train_step(samples, rng_loss)
            _sync(trainer.device)
            now = time.perf_counter()
            times.append(now - last)
            last = now
        trainer.pool.close()
        rows.append(
            (f"whole step, {workers} workers (steady state)", float(np.mean(times[-args.steps :])))
        )
    if trainer.device.type == "cuda":
        name = torch.cuda.get_device_name(trainer.device)
    else:
        name = platform.processor() or platform.machine()
    print(
        f"device {trainer.device} ({name}), "
        f"batch {args.batch_size}, crop {config.sampling.crop}, torch threads "
        f"{torch.get_num_threads()}, mean of {args.steps} steps"
    )
    print("| part | seconds per step |")
    print("|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
