"""The automatic nucleus radius (``infer/radius_estimate.py``) against the truth.

A grid of generated cases, each estimated from 3 frames: sequences of our synthetic generator
(validation seeds 301-313 only) at xy radii 2.5-30 px, 2D and 3D, z ratios 1-10, sparse and
dense, nominal and 3x noise; and blobs drawn independently of it (elongated 1.5:1, irregular
outline, background gradient, Gaussian noise; ``tests/test_radius_estimate.py`` draws the same
kind) at several contrasts. Truth: the median radius of the nuclei in those frames (synthetic:
the ground-truth ``radius``; drawn: each blob's disk-equivalent radius).

Run: ``python benchmarks/bench_radius_estimate.py > benchmarks/results/bench_radius_estimate.md``
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np
from scipy import ndimage

from napari_cellect.data.synthetic import PRESETS, generate
from napari_cellect.infer.radius_estimate import estimate_radius

#: (label, radius, shape, z_ratio, changes)
SYNTHETIC = [
    ("2D sparse", 2.5, (1, 192, 192), 1.0, dict(n_cells=60)),
    ("2D", 4.0, (1, 192, 192), 1.0, dict(n_cells=60)),
    ("2D", 8.0, (1, 256, 256), 1.0, dict(n_cells=40)),
    ("2D", 13.0, (1, 384, 384), 1.0, dict(n_cells=30)),
    ("2D", 20.0, (1, 512, 512), 1.0, dict(n_cells=25)),
    ("2D", 30.0, (1, 640, 640), 1.0, dict(n_cells=15)),
    ("2D dense", 6.0, (1, 256, 256), 1.0, dict(n_cells=150, max_packing=0.5)),
    ("2D noisy x3", 6.0, (1, 256, 256), 1.0, dict(n_cells=40, noise=3.0)),
    ("2D dim", 6.0, (1, 256, 256), 1.0, dict(n_cells=40, brightness_range=(60.0, 150.0))),
    ("3D", 3.0, (48, 128, 128), 1.0, dict(n_cells=120)),
    ("3D", 6.0, (30, 128, 128), 3.0, dict()),
    ("3D dense", 6.0, (30, 128, 128), 3.0, dict(n_cells=80, max_packing=0.45)),
    ("3D", 12.0, (16, 256, 256), 5.0, dict(n_cells=25)),
    ("3D thin", 8.0, (5, 256, 256), 10.0, dict(n_cells=40)),
    ("3D", 20.0, (64, 256, 256), 2.0, dict(n_cells=12)),
]
#: (label, radius, depth, z_ratio, contrast, noise, spacing)
DRAWN = [
    ("2D", 2.0, 1, 1.0, 400.0, 10.0, 3.0),
    ("2D", 5.0, 1, 1.0, 400.0, 10.0, 3.0),
    ("2D dim", 5.0, 1, 1.0, 60.0, 12.0, 3.0),
    ("2D touching", 8.0, 1, 1.0, 400.0, 10.0, 2.05),
    ("2D", 15.0, 1, 1.0, 400.0, 10.0, 3.0),
    ("2D", 30.0, 1, 1.0, 400.0, 10.0, 3.0),
    ("3D", 4.0, 32, 1.0, 400.0, 10.0, 3.0),
    ("3D", 10.0, 16, 4.0, 400.0, 10.0, 3.0),
    ("3D thin", 8.0, 6, 10.0, 400.0, 10.0, 3.0),
    ("3D touching", 6.0, 24, 2.0, 400.0, 10.0, 2.1),
]


def drawn_blobs(radius, depth, z_ratio, contrast, noise, spacing, seed, side):
    """Frames of elongated, irregular blobs (see ``tests/test_radius_estimate.py``)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(
        np.arange(depth) * z_ratio, np.arange(side), np.arange(side), indexing="ij"
    )
    frames, radii = [], []
    for _ in range(3):
        image = np.zeros((depth, side, side), np.float32)
        step = spacing * radius
        for cy in np.arange(step / 2, side, step):
            for cx in np.arange(step / 2, side, step):
                r = radius * rng.uniform(0.85, 1.15)
                radii.append(r)
                y, x = cy + rng.uniform(-0.1, 0.1) * step, cx + rng.uniform(-0.1, 0.1) * step
                z = rng.uniform(0.3, 0.7) * (depth - 1) * z_ratio
                angle, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
                a, b = r * np.sqrt(1.5), r / np.sqrt(1.5)
                u = (yy - y) * np.cos(angle) + (xx - x) * np.sin(angle)
                v = -(yy - y) * np.sin(angle) + (xx - x) * np.cos(angle)
                wobble = 1 + 0.15 * np.cos(3 * np.arctan2(v, u) + phase)
                inside = (u / a) ** 2 + (v / b) ** 2 + ((zz - z) / r) ** 2 <= wobble**2
                image[inside] = rng.uniform(0.7, 1.0)
        image = ndimage.gaussian_filter(image, (2.0 / z_ratio if depth > 1 else 0, 1.0, 1.0))
        gradient = np.linspace(50, 150, side, dtype=np.float32)[None, None, :]
        frames.append(100 + gradient + contrast * image + rng.normal(0, noise, image.shape))
    return np.stack(frames).astype(np.float32), float(np.median(radii))


def row(source, label, shape, z_ratio, truth, images):
    started = time.perf_counter()
    estimate = estimate_radius(images, z_ratio)
    seconds = time.perf_counter() - started
    found = estimate.radius
    error = f"{found / truth - 1:+.1%}" if found is not None else "none"
    ok = found is not None and abs(found / truth - 1) <= 0.2
    print(
        f"| {source} | {label} | {'x'.join(map(str, shape))} | {z_ratio:g} | {truth:.2f} | "
        f"{found if found is None else round(found, 2)} | {error} | {estimate.n_nuclei} | "
        f"{seconds / len(estimate.frames):.2f} | {'yes' if ok else 'NO'} |"
    )
    return ok


def main() -> int:
    print("## Automatic nucleus radius vs truth (3 frames per case)\n")
    print(
        "| source | case | frame (ZxYxX) | z ratio | true median r (px) | estimate | error "
        "| nuclei | s / frame | within 20 % |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    passed = []
    for i, (label, radius, shape, z_ratio, changes) in enumerate(SYNTHETIC):
        config = dataclasses.replace(
            PRESETS["default"],
            frames=3,
            seed=301 + i % 13,
            shape=shape,
            z_ratio=z_ratio,
            radius_range=(0.85 * radius, 1.15 * radius),
            **changes,
        )
        sequence = generate(config)
        truth = float(np.median(sequence.graph["radius"]))
        passed.append(row("synthetic", label, shape, z_ratio, truth, np.stack(sequence.images)))
    for i, (label, radius, depth, z_ratio, contrast, noise, spacing) in enumerate(DRAWN):
        side = int(min(512, 14 * radius + 64)) if depth == 1 else 128
        images, truth = drawn_blobs(radius, depth, z_ratio, contrast, noise, spacing, 301 + i, side)
        passed.append(row("drawn", label, (depth, side, side), z_ratio, truth, images))
    print(f"\n{sum(passed)} of {len(passed)} cases within 20 %.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
