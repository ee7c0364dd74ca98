"""Nuclei of other sizes: the default model on images magnified or shrunk in y and x.

A synthetic sequence (preset ``default``, seed 509, used nowhere else) is resized in y and x by
each factor, so its nuclei are that many times larger (z is kept, so the z ratio grows by the
factor too). Each version is tracked twice: as it is, and with ``cell_radius`` set to the median
nucleus radius of the resized ground truth (what a person measures on one nucleus), so that the
frames are resized back to the size the model was trained on (``infer/rescale.py``). Scored with
``evaluate`` against the resized ground truth.

``--upsample S ...`` adds runs with ``cell_radius = median radius / S``: the frames are then
resized to S times the model's reference size, which shows whether small objects (daughters just
after a division) are limited by the U-Net's resolution.

Run: ``python benchmarks/bench_scale.py [--factors 0.5 1 2 3] [--frames 8] [--preset P --seed S]
[--upsample 1.5 2]``; prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np
import torch

from napari_cellect.data.synthetic import generate
from napari_cellect.data.synthetic.config import PRESETS
from napari_cellect.evaluate import evaluate
from napari_cellect.infer.rescale import resize_yx
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.pipeline import track_images
from napari_cellect.track.graph import TrackGraph

SEED = 509  # used nowhere else
CPU_THREADS = 2


def resized_truth(graph: TrackGraph, factor: float) -> TrackGraph:
    """The ground truth on a grid resized by ``factor`` in y and x (pixel edges kept)."""
    columns = {c: graph[c] for c in ("id", "t", "z", "parent_id")}
    for axis in ("y", "x"):
        columns[axis] = (graph[axis] + 0.5) * factor - 0.5
    columns["radius"] = graph["radius"] * factor
    return TrackGraph.from_arrays(**columns)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factors", type=float, nargs="+", default=[0.5, 1.0, 2.0, 3.0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--upsample",
        type=float,
        nargs="*",
        default=[],
        help="also run with cell_radius = median radius / S",
    )
    parser.add_argument("--weights", default=None, help="model bundle (default: the bundled one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(CPU_THREADS)
    bundle = ModelBundle.load(args.weights) if args.weights else ModelBundle.load_default()
    config = dataclasses.replace(PRESETS[args.preset], frames=args.frames, seed=args.seed)
    sequence = generate(config)
    print(
        f"## Nuclei of other sizes ({bundle.metadata.name}, reference radius "
        f"{bundle.normalization.reference_radius} px; preset {args.preset}, seed {args.seed}, "
        f"{args.frames} frames of {config.shape}, z ratio {config.z_ratio:g})\n"
    )
    print(
        "| xy factor | median radius (px) | frame | cell_radius | det F1 | link F1 | div F1 "
        "| track (s) |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for factor in args.factors:
        z, y, x = config.shape
        shape = (z, round(y * factor), round(x * factor))
        images = np.stack([resize_yx(f.astype(np.float32), shape) for f in sequence.images])
        truth = resized_truth(sequence.graph, factor)
        radius = float(np.median(truth["radius"]))
        z_ratio = config.z_ratio * factor
        for cell_radius in (None, radius, *(radius / s for s in args.upsample)):
            started = time.perf_counter()
            result = track_images(
                images, bundle, z_ratio=z_ratio, device="cpu", cell_radius=cell_radius
            )
            seconds = time.perf_counter() - started
            s = evaluate(result.graph, truth, z_ratio=z_ratio)
            given = "as is" if cell_radius is None else f"{cell_radius:.1f}"
            print(
                f"| {factor:g} | {radius:.1f} | {shape[1]}x{shape[2]} | {given} | "
                f"{s.det_f1:.3f} | {s.link_f1:.3f} | {s.div_f1:.3f} | {seconds:.0f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
