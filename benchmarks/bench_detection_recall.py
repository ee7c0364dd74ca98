"""Can a lower detection threshold find the nuclei the default model misses on shifted data?

The sequence of ``bench_finetune.py --shift SHIFT`` is detected by the U-Net (no merging, no
linking) at the bundle's detection settings and at lower thresholds; each set of detections is
matched to the ground truth as ``evaluate`` does (within half the median radius) and, to show
how many misses are only misplaced, within twice that. If recall stays low at a threshold near
0, the missing nuclei have no peak at all: scorer fine-tuning, which only sees detections,
cannot bring them back.

Run: ``python benchmarks/bench_detection_recall.py [--shift fast+dense]``; prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

import bench_finetune

from napari_cellect.data.synthetic import generate
from napari_cellect.infer.predict import predict_sequence
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.track.detections import Detections
from napari_cellect.track.graph import NO_PARENT, TrackGraph
from napari_cellect.track.matching import match_nodes

#: (detection threshold, foreground threshold, NMS radius factor); None: the bundle's own
SETTINGS = [None, (0.05, None, None), (0.05, 0.02, 0.3), (0.01, 0.01, 0.2)]


def as_graph(frames: list[Detections]) -> TrackGraph:
    positions = np.concatenate([d.positions for d in frames])
    n = len(positions)
    return TrackGraph.from_arrays(
        id=np.arange(n),
        t=np.concatenate([np.full(len(d), d.t) for d in frames]),
        z=positions[:, 0],
        y=positions[:, 1],
        x=positions[:, 2],
        parent_id=np.full(n, NO_PARENT),
        radius=np.concatenate([d.radius for d in frames]),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shift", choices=sorted(bench_finetune.SHIFTS), default="fast+dense")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    torch.set_num_threads(bench_finetune.CPU_THREADS)
    bundle = ModelBundle.load_default()
    config = bench_finetune.synthetic_config(args.shift, args.frames, (24, 112, 112), args.seed)
    sequence = generate(config)
    base = bundle.thresholds.detection
    print(
        f"## Detection recall on shift `{args.shift}` ({bundle.metadata.name}, seed {args.seed})\n"
    )
    print("| threshold | foreground | NMS | detections | recall | precision | recall, 2x gate |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for setting in SETTINGS:
        detection = base
        if setting is not None:
            threshold, foreground, nms = setting
            detection = dataclasses.replace(
                base,
                threshold=threshold,
                foreground_threshold=base.foreground_threshold
                if foreground is None
                else foreground,
                nms_radius_factor=base.nms_radius_factor if nms is None else nms,
            )
        frames = list(
            predict_sequence(
                sequence.images, bundle, z_ratio=config.z_ratio, device="cpu", detection=detection
            )
        )
        found = as_graph(frames)
        m = match_nodes(found, sequence.graph, z_ratio=config.z_ratio)
        loose = match_nodes(found, sequence.graph, z_ratio=config.z_ratio, max_dist=2 * m.max_dist)
        print(
            f"| {detection.threshold:g} | {detection.foreground_threshold:g} | "
            f"{detection.nms_radius_factor:g} | {len(found)} | "
            f"{(m.gt_to_pred >= 0).mean():.3f} | {(m.pred_to_gt >= 0).mean():.3f} | "
            f"{(loose.gt_to_pred >= 0).mean():.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
