"""Speed and peak memory of frame pairs through the tracker, beside the machine's own peak.

Per model (each in its own subprocess, so that its peak memory is its own) and volume size:
the U-Net with detection (tiled, as ``cellect track`` runs it), its convolution FLOPs (counted
by torch's FlopCounterMode on the tiles actually run), the achieved FLOP/s against the
machine's measured peak (a 2048 x 2048 float32 matrix product in torch, same threads, same
process, measured just before), the cost per voxel, and for the largest size also the merge of
one frame's detections and the linking of the pair. ``--torch-conv`` also times torch's own
choice of convolution backend (without :mod:`napari_cellect.model.conv`), in the same run.

``--end-to-end N``: ``cellect track``'s pipeline (detect, merge, link, division refinement,
link) on N frames of 41 x 512 x 512 with about 250 nuclei per frame, seconds per frame pair.

Run: ``python benchmarks/bench_speed.py`` (``--quick``: the small sizes only; ``--sizes``;
``--weights BUNDLE``; ``--threads N``; ``--device cuda``: the U-Net on a GPU, with its peak
GPU memory).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import subprocess
import sys
import time

import numpy as np

#: name -> (Z, Y, X): one 2D frame, a small stack, an embryo frame, a light-sheet frame
SIZES = {
    "2d": (1, 314, 345),
    "small": (16, 128, 128),
    "embryo": (41, 512, 512),
    "lightsheet": (100, 1024, 1024),
}


def _frames(
    shape: tuple[int, int, int], cells: int | None = None, frames: int = 2, seed: int = 7
) -> tuple[np.ndarray, float]:
    """A synthetic series of ``shape``; the light-sheet size is the embryo frames mirrored out
    to it (rendering 100 M voxels would take longer than the benchmark)."""
    from napari_cellect.data.synthetic import PRESETS, generate

    if shape[0] * shape[1] * shape[2] > 41 * 512 * 512:
        images, z_ratio = _frames((41, 512, 512), cells, frames, seed)
        pad = [(0, 0)] + [(0, max(0, s - n)) for s, n in zip(shape, images.shape[1:])]
        return np.pad(images, pad, mode="symmetric")[(slice(None), *map(slice, shape))], z_ratio
    base = PRESETS["large"] if shape[1] >= 512 else PRESETS["default"]
    changes = {"frames": frames, "shape": shape, "seed": seed}
    if shape[0] == 1:
        changes["z_ratio"] = 1.0
    if cells is not None:
        changes["n_cells"] = cells
    config = dataclasses.replace(base, **changes)
    return generate(config).images, config.z_ratio


def matmul_peak(seconds: float = 2.0) -> float:
    """FLOP/s of a 2048 x 2048 float32 matrix product in torch (best of repeated runs)."""
    import torch

    a = torch.randn(2048, 2048)
    a @ a
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    return 2 * 2048**3 / best


def _bundle(model: str, weights: str | None):
    from napari_cellect.model.bundle import ModelBundle
    from napari_cellect.settings.tiling import TilingConfig

    if model == "default":
        bundle = ModelBundle.load(weights) if weights else ModelBundle.load_default()
        return bundle, TilingConfig()
    bundle = ModelBundle.random(preset="cellect-original", seed=0)
    return bundle, TilingConfig(tile=(32, 256, 256))  # what the original was trained on


def _unet_flops(unet, pair: np.ndarray, tiling, min_depth: int) -> tuple[float, int, tuple]:
    """Convolution FLOPs of the U-Net over the tiles that cover ``pair``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import napari_cellect.model.conv as conv
    from napari_cellect.infer.tiling import model_size_multiple, plan_tiles

    grid = plan_tiles(pair.shape[1:], tiling, model_size_multiple(unet), (min_depth, 1, 1))
    x = torch.zeros((1, 2, *grid.tile_shape))
    conv._ONEDNN = False  # the counter knows torch's convolution op, not the oneDNN one
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            unet(x)
    finally:
        conv._ONEDNN = True
    return counter.get_total_flops() * len(grid), len(grid), grid.tile_shape


def _time_unet(bundle, pair, z_ratio, tiling, device, repeats):
    from napari_cellect.infer.predict import predict_frame

    best, dets = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        dets = predict_frame(
            bundle.unet,
            pair,
            t=0,
            z_ratio=z_ratio,
            detection=bundle.thresholds.detection,
            tiling=tiling,
            device=device,
            min_depth=bundle.normalization.min_depth,
        ).detections
        if device.type == "cuda":
            import torch

            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, dets


def _measure(
    model: str,
    sizes: list[str],
    repeats: int,
    weights: str | None,
    device_name: str,
    torch_conv: bool,
) -> list[dict]:
    import torch

    import napari_cellect.model.conv as conv
    from napari_cellect.infer.device import resolve_device
    from napari_cellect.infer.normalize import normalize_pair
    from napari_cellect.track.link import link_frame_pair
    from napari_cellect.track.merge import merge_duplicates

    bundle, tiling = _bundle(model, weights)
    device = resolve_device(device_name)
    bundle.unet.eval().to(device)
    if device.type == "cpu":  # as predict_sequence prepares it
        bundle.unet.to(memory_format=torch.channels_last_3d)
    rows = []
    for name in sizes:
        shape = SIZES[name]
        images, z_ratio = _frames(shape)
        pair = normalize_pair(images[:2].astype(np.float32), bundle.normalization)
        flops, n_tiles, tile = _unet_flops(
            bundle.unet, pair, tiling, bundle.normalization.min_depth
        )
        peak = matmul_peak() if device.type == "cpu" else float("nan")
        seconds, dets = _time_unet(bundle, pair, z_ratio, tiling, device, repeats)
        row = {
            "model": model,
            "size": name,
            "shape": list(shape),
            "tiles": n_tiles,
            "tile": list(tile),
            "cells": len(dets),
            "unet_detect_s": round(seconds, 3),
            "us_per_voxel": round(seconds / np.prod(shape) * 1e6, 3),
            "gflop": round(flops / 1e9, 1),
            "gflops": round(flops / seconds / 1e9, 1),
            "peak_gflops": round(peak / 1e9, 1),
            "share_of_peak": round(flops / seconds / peak, 3) if device.type == "cpu" else None,
        }
        if torch_conv and device.type == "cpu":
            conv._ONEDNN = False
            row["torch_conv_s"] = round(
                _time_unet(bundle, pair, z_ratio, tiling, device, repeats)[0], 3
            )
            conv._ONEDNN = True
        if name == "embryo":
            merge_scorer, link_scorer = (
                bundle.candidate_scorer("merge"),
                bundle.candidate_scorer("link"),
            )
            t0 = time.perf_counter()
            merged, _ = merge_duplicates(dets, merge_scorer, bundle.thresholds.merge, z_ratio)
            t1 = time.perf_counter()
            # the next frame's detections: the same cells moved by one pixel (a stand-in of the
            # same size, so that linking is timed on a realistic number of candidates)
            moved = type(merged)(
                1,
                merged.positions + 1.0,
                merged.embeddings,
                merged.radius,
                merged.division,
                merged.score,
            )
            link_frame_pair(merged, moved, link_scorer, bundle.thresholds.link, z_ratio)
            row.update(merge_s=round(t1 - t0, 3), link_s=round(time.perf_counter() - t1, 3))
        row["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        if device.type == "cuda":
            row["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def _end_to_end(frames: int, weights: str | None, device_name: str) -> dict:
    """The whole pipeline on ``frames`` frames of 41 x 512 x 512 with about 250 nuclei each."""
    from napari_cellect.pipeline import iter_tracking

    bundle, _ = _bundle("default", weights)
    images, z_ratio = _frames((41, 512, 512), cells=250, frames=frames, seed=11)
    marks, start = {}, time.perf_counter()
    gen = iter_tracking(images, bundle, z_ratio=z_ratio, device=device_name)
    while True:
        try:
            step = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        marks[step.stage] = time.perf_counter() - start
    total = time.perf_counter() - start
    graph = result.graph
    return {
        "frames": frames,
        "cells_per_frame": round(len(graph) / frames),
        "divisions": len(graph.divisions()),
        "detect_s": round(marks["detect"], 1),
        "refine_and_link_s": round(total - marks["detect"], 1),
        "total_s": round(total, 1),
        "s_per_pair": round(total / frames, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def _print_table(rows: list[dict], threads: int, device: str, repeats: int) -> None:
    print(
        f"{threads} torch threads, {platform.processor() or platform.machine()}, U-Net on "
        f"{device}, best of {repeats}"
    )
    has_torch = any("torch_conv_s" in r for r in rows)
    print(
        "| model | size (Z, Y, X) | tiles x tile | cells | U-Net + detect (s) | us / voxel | "
        "conv GFLOP | GFLOP/s | matmul peak GFLOP/s | share of peak |"
        + (" torch's own conv backend (s) |" if has_torch else "")
    )
    print("|---" * (10 + has_torch) + "|")
    for r in rows:
        share = f"{r['share_of_peak']:.0%}" if r["share_of_peak"] is not None else "-"
        print(
            f"| {r['model']} | {tuple(r['shape'])} | {r['tiles']} x {tuple(r['tile'])} | "
            f"{r['cells']} | {r['unet_detect_s']} | {r['us_per_voxel']} | {r['gflop']} | "
            f"{r['gflops']} | {r['peak_gflops']} | {share} |"
            + (f" {r.get('torch_conv_s', '-')} |" if has_torch else "")
        )
    links = [r for r in rows if "link_s" in r]
    if links:
        print("\n| model | merge (s) | link (s) | peak RSS (GB) | peak GPU (GB) |")
        print("|---|---|---|---|---|")
        for r in links:
            print(
                f"| {r['model']} | {r['merge_s']} | {r['link_s']} | {r['peak_rss_gb']} | "
                f"{r.get('peak_gpu_gb', '-')} |"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 2d and small sizes only")
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), help="sizes to time")
    parser.add_argument("--weights", help="bundle to time as 'default'")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--device", default="cpu", help="device of the U-Net (default cpu)")
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs (default 3)")
    parser.add_argument("--models", nargs="+", default=["default", "cellect-original"])
    parser.add_argument(
        "--original-sizes",
        nargs="+",
        choices=sorted(SIZES),
        default=["2d", "small", "embryo"],
        help="sizes for cellect-original (its light-sheet frame takes ~15 min)",
    )
    parser.add_argument(
        "--torch-conv", action="store_true", help="also time torch's own convolution backend choice"
    )
    parser.add_argument(
        "--end-to-end",
        type=int,
        metavar="FRAMES",
        help="time the whole pipeline on FRAMES frames of 41x512x512, 250 nuclei",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = args.sizes or (["2d", "small"] if args.quick else list(SIZES))

    import torch

    torch.set_num_threads(args.threads)
    if args.end_to_end:
        result = _end_to_end(args.end_to_end, args.weights, args.device)
        print(
            "| frames | cells / frame | divisions | detect (s) | refine + link (s) | total (s) "
            "| s / frame pair | peak RSS (GB) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        print(
            "| "
            + " | ".join(
                str(result[k])
                for k in (
                    "frames",
                    "cells_per_frame",
                    "divisions",
                    "detect_s",
                    "refine_and_link_s",
                    "total_s",
                    "s_per_pair",
                    "peak_rss_gb",
                )
            )
            + " |"
        )
        return 0
    if args.child:
        child_sizes = (
            sizes if args.child == "default" else [s for s in sizes if s in args.original_sizes]
        )
        rows = _measure(
            args.child, child_sizes, args.repeats, args.weights, args.device, args.torch_conv
        )
        print(json.dumps(rows))
        return 0
    rows = []
    for model in args.models:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            model,
            "--threads",
            str(args.threads),
            "--repeats",
            str(args.repeats),
            "--device",
            args.device,
            "--sizes",
            *sizes,
            "--original-sizes",
            *args.original_sizes,
        ]
        cmd += ["--torch-conv"] if args.torch_conv else []
        cmd += ["--weights", args.weights] if args.weights else []
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        rows += json.loads(out.strip().splitlines()[-1])
    _print_table(rows, args.threads, args.device, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
