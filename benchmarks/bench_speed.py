"""Speed and peak memory of one frame pair through the whole tracker.

For a 41 x 512 x 512 frame pair (the size of the mskcc-confocal embryo data) it times, per
model: the U-Net with detection (tiled, as ``cellect track`` runs it), the merge of one frame's
detections, and the linking of the pair; their sum is the steady-state cost per frame pair.
Each model runs in its own subprocess so that its peak memory (max RSS) is its own.

Run: ``python benchmarks/bench_speed.py`` (``--quick``: 16 x 128 x 128, for a smoke test;
``--weights BUNDLE``: time that bundle instead of the bundled default; ``--threads N``;
``--device cuda``: the U-Net on a GPU, with its peak GPU memory).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import numpy as np


def _frames(shape: tuple[int, int, int]) -> tuple[np.ndarray, float]:
    import dataclasses

    from napari_cellect.data.synthetic import PRESETS, generate

    base = PRESETS["large"] if shape[1] >= 512 else PRESETS["default"]
    config = dataclasses.replace(base, frames=2, shape=shape, seed=7)
    return generate(config).images, config.z_ratio


def _measure(model: str, shape: tuple[int, int, int], repeats: int, weights: str | None,
             device_name: str = "cpu") -> dict:
    import torch

    from napari_cellect.infer.device import resolve_device
    from napari_cellect.infer.normalize import normalize_pair
    from napari_cellect.infer.predict import predict_frame
    from napari_cellect.infer.tiling import TilingConfig
    from napari_cellect.model.bundle import ModelBundle
    from napari_cellect.track.link import link_frame_pair
    from napari_cellect.track.merge import merge_duplicates

    if model == "default":
        bundle = ModelBundle.load(weights) if weights else ModelBundle.load_default()
        tiling = TilingConfig()
    else:
        bundle = ModelBundle.random(preset="cellect-original", seed=0)
        tiling = TilingConfig(tile=(32, 256, 256))  # what the original network was trained on
    images, z_ratio = _frames(shape)
    pair = normalize_pair(images[:2].astype(np.float32), bundle.normalization)
    device = resolve_device(device_name)
    unet = bundle.unet.eval().to(device)
    if device.type == "cpu":
        unet = unet.to(memory_format=torch.channels_last_3d)
    merge_scorer, link_scorer = bundle.candidate_scorer("merge"), bundle.candidate_scorer("link")
    rows = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dets = predict_frame(unet, pair, t=0, z_ratio=z_ratio, detection=bundle.thresholds.detection,
                             tiling=tiling, device=device).detections  # fmt: skip
        t1 = time.perf_counter()
        merged, _ = merge_duplicates(dets, merge_scorer, bundle.thresholds.merge, z_ratio)
        t2 = time.perf_counter()
        # the next frame's detections: the same cells moved by one pixel (a stand-in of the
        # same size, so that linking is timed on a realistic number of candidates)
        moved = type(merged)(1, merged.positions + 1.0, merged.embeddings, merged.radius,
                             merged.division, merged.score)  # fmt: skip
        link_frame_pair(merged, moved, link_scorer, bundle.thresholds.link, z_ratio)
        t3 = time.perf_counter()
        rows.append((t1 - t0, t2 - t1, t3 - t2))
    best = min(rows, key=sum)
    return {
        "model": model,
        "parameters": bundle.n_parameters(),
        "tile": list(tiling.tile),
        "cells": len(merged),
        "unet_detect_s": round(best[0], 3),
        "merge_s": round(best[1], 3),
        "link_s": round(best[2], 3),
        "total_s": round(sum(best), 3),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if device.type == "cuda" else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 x 128 x 128 instead of 41 x 512 x 512")
    parser.add_argument("--weights", help="bundle to time as 'default'")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--device", default="cpu", help="device of the U-Net (default cpu)")
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs (default 3)")
    parser.add_argument("--models", nargs="+", default=["default", "cellect-original"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shape = (16, 128, 128) if args.quick else (41, 512, 512)
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(_measure(args.child, shape, args.repeats, args.weights, args.device)))
        return 0
    results = []
    for model in args.models:
        cmd = [sys.executable, __file__, "--child", model, "--threads", str(args.threads),
               "--repeats", str(args.repeats), "--device", args.device]
        cmd += ["--quick"] if args.quick else []
        if args.weights:
            cmd += ["--weights", args.weights]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    print(f"frame pair {shape}, {args.threads} torch threads, {platform.processor() or platform.machine()}, "
          f"U-Net on {args.device}, best of {args.repeats}")
    print("| model | parameters | tile | cells | U-Net + detect (s) | merge (s) | link (s) | total (s) | peak RSS (GB) | peak GPU (GB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['parameters']:,} | {tuple(r['tile'])} | {r['cells']} | "
              f"{r['unet_detect_s']} | {r['merge_s']} | {r['link_s']} | {r['total_s']} | {r['peak_rss_gb']} | "
              f"{r['peak_gpu_gb'] if r['peak_gpu_gb'] is not None else '-'} |")
    if len(results) == 2:
        print(f"\nratio {results[1]['model']} / {results[0]['model']}: "
              f"{results[1]['total_s'] / results[0]['total_s']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
