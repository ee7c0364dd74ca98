"""The U-Net stage on a dask.distributed LocalCluster: speed against a local run, and the
client's memory against the number of frames.

``speed``: one synthetic series written to a zarr store (workers read their own frames from
it), tracked in this process (torch on 1 thread, then on all cores: the default), then on a
LocalCluster of ``--workers`` one-thread worker processes (dask's default
``OMP_NUM_THREADS=1`` per worker), the three interleaved ``--repeat`` times (best and median
are printed: other jobs on a shared machine slow some runs). The cluster's start-up is timed
apart from the tracking.
Also prints the per-frame costs that docs/scaling.md uses: U-Net per frame pair, the client's
work per frame (a re-run from a full detection cache: merge, division refinement, link), and
the bytes one frame's detections take on the way back.

``memory``: the same on ``--frames-list`` series lengths (default 50 and 200 small frames),
each run in a fresh child process, which reports its peak resident memory (ru_maxrss: the
client only, the workers are other processes) and the size of its results (detections and
graph). The client's growth from one length to the other should be about the growth of the
results. ``--workers 0``: the same for a local run (no cluster; the peak then includes the
U-Net and its tiles), what ``cellect track`` does on one machine.

Run: ``python benchmarks/bench_distributed.py speed [--frames 12 --shape 16 128 128]`` and
``python benchmarks/bench_distributed.py memory [--frames-list 50 200]``; each prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from napari_cellect.data.images import open_sequence
from napari_cellect.data.synthetic import PRESETS, generate


def write_series(folder: Path, frames: int, shape: tuple[int, int, int], seed: int) -> Path:
    """A synthetic series as a (T, Z, Y, X) zarr array chunked per frame."""
    config = dataclasses.replace(
        PRESETS["default"],
        frames=frames,
        shape=shape,
        seed=seed,
        n_cells=max(4, shape[1] * shape[2] // 1500),
    )
    images = generate(config).images
    path = folder / "series.zarr"
    array = zarr.open_array(
        str(path), mode="w", shape=images.shape, dtype=images.dtype, chunks=(1, *images.shape[1:])
    )
    array[:] = images
    return path


def track(path: Path, scheduler: object = None) -> tuple[float, object]:
    from napari_cellect.model.bundle import ModelBundle
    from napari_cellect.pipeline import track_images

    seq = open_sequence(path)
    bundle = ModelBundle.load_default()
    start = time.perf_counter()
    result = track_images(seq, bundle, z_ratio=2.0, device="cpu", scheduler=scheduler)
    return time.perf_counter() - start, result


def compare(a: object, b: object) -> tuple[bool, bool, float]:
    """Bit-identical tables; same ids, frames and parents; largest position difference."""
    left, right = a.to_dataframe(), b.to_dataframe()  # type: ignore[attr-defined]
    same = left.equals(right)
    keys = ["id", "t", "parent_id", "track_id"]
    links = len(left) == len(right) and left[keys].equals(right[keys])
    shift = (
        float(np.abs(left[list("zyx")].to_numpy() - right[list("zyx")].to_numpy()).max())
        if links and len(left)
        else float("nan")
    )
    return same, links, shift


def speed(args: argparse.Namespace) -> None:
    import distributed
    import torch

    from napari_cellect.infer.predict import predict_sequence
    from napari_cellect.model.bundle import ModelBundle
    from napari_cellect.pipeline import track_images

    cores = os.cpu_count() or 1
    bundle = ModelBundle.load_default()
    local_1 = "local, torch on 1 thread"
    local_n = f"local, torch on {cores} threads (the default)"
    on_cluster = f"LocalCluster, {args.workers} one-thread workers"
    times: dict[str, list[float]] = {local_1: [], local_n: [], on_cluster: []}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_series(Path(tmp), args.frames, tuple(args.shape), seed=args.seed)
        seq = open_sequence(path)

        def timed(name: str, **kwargs: object) -> object:
            start = time.perf_counter()
            result = track_images(seq, bundle, z_ratio=2.0, device="cpu", **kwargs)
            times[name].append(time.perf_counter() - start)
            return result

        start = time.perf_counter()
        with (
            distributed.LocalCluster(
                n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            client.wait_for_workers(args.workers)
            startup_s = time.perf_counter() - start
            for _ in range(args.repeat):  # interleaved, so a busy spell hits every kind
                torch.set_num_threads(1)
                timed(local_1)
                torch.set_num_threads(cores)
                local = timed(local_n)
                remote = timed(on_cluster, scheduler=client)
        torch.set_num_threads(1)  # the faster setting on a busy 2-core machine
        cache = Path(tmp) / "cache"
        track_images(seq, bundle, z_ratio=2.0, device="cpu", cache_dir=cache)
        start = time.perf_counter()
        track_images(seq, bundle, z_ratio=2.0, device="cpu", cache_dir=cache)
        client_s = (time.perf_counter() - start) / args.frames
        start = time.perf_counter()
        raw = list(predict_sequence(seq, bundle, z_ratio=2.0, device="cpu"))
        unet_1_s = (time.perf_counter() - start) / args.frames
        torch.set_num_threads(cores)
        start = time.perf_counter()
        list(predict_sequence(seq, bundle, z_ratio=2.0, device="cpu"))
        unet_s = (time.perf_counter() - start) / args.frames
    same, links, shift = compare(local.graph, remote.graph)  # type: ignore[attr-defined]
    per_frame_bytes = np.mean([len(pickle.dumps(d)) for d in raw])
    base = min(times[local_n])
    print(
        f"{args.frames} frames of {tuple(args.shape)}, {cores} cores, {args.workers} workers, "
        f"best and median of {args.repeat} interleaved runs; bit-identical tracks: {same}; "
        f"same nodes and links: {links}; largest position difference {shift:.1e} px (torch "
        f"on {cores} threads locally, 1 per worker)"
    )
    print("| run | best (s) | median (s) | best vs local default |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        print(
            f"| {name} | {min(values):.1f} | {np.median(values):.1f} | {min(values) / base:.2f} |"
        )
    print(f"| LocalCluster start-up (once per run) | {startup_s:.1f} | | |")
    print()
    print("| per-frame cost | value |")
    print("|---|---:|")
    print(f"| U-Net per frame pair, torch on {cores} threads | {unet_s:.2f} s |")
    print(f"| U-Net per frame pair, torch on 1 thread | {unet_1_s:.2f} s |")
    print(
        f"| client per frame (merge, division refinement, link; torch on 1 thread) | "
        f"{client_s:.3f} s |"
    )
    print(f"| detections sent back per frame | {per_frame_bytes / 1024:.1f} KiB |")


def memory_child(frames: int, shape: tuple[int, int, int], workers: int, seed: int) -> None:
    """Runs in a fresh process: track on a LocalCluster, print JSON with peak RSS."""
    import distributed

    with tempfile.TemporaryDirectory() as tmp:
        path = write_series(Path(tmp), frames, shape, seed)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if workers == 0:
            seconds, result = track(path)
        else:
            with (
                distributed.LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
                ) as cluster,
                distributed.Client(cluster) as client,
            ):
                seconds, result = track(path, scheduler=client)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results = (
        len(pickle.dumps(result.detections))
        + len(pickle.dumps(result.raw_detections))
        + len(pickle.dumps(result.graph.to_dataframe()))
    )
    print(
        json.dumps(
            {
                "frames": frames,
                "peak_kib": peak,
                "before_kib": before,
                "results_kib": results / 1024,
                "seconds": seconds,
            }
        )
    )


def memory(args: argparse.Namespace) -> None:
    rows = []
    for frames in args.frames_list:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "_memory_child",
                str(frames),
                *map(str, args.shape),
                str(args.workers),
                str(args.seed),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    where = f"LocalCluster of {args.workers} workers" if args.workers else "local run"
    print(f"client peak memory, {where}, frames of {tuple(args.shape)}")
    print("| frames | client peak RSS (MiB) | results (MiB) | seconds |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['frames']} | {r['peak_kib'] / 1024:.1f} | {r['results_kib'] / 1024:.2f} | "
            f"{r['seconds']:.1f} |"
        )
    if len(rows) > 1:
        grow = (rows[-1]["peak_kib"] - rows[0]["peak_kib"]) / 1024
        res = (rows[-1]["results_kib"] - rows[0]["results_kib"]) / 1024
        print(
            f"\ngrowth {rows[0]['frames']} -> {rows[-1]['frames']} frames: client "
            f"{grow:+.1f} MiB, results {res:+.2f} MiB"
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_memory_child":
        frames, z, y, x, workers, seed = map(int, argv[1:7])
        memory_child(frames, (z, y, x), workers, seed)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["speed", "memory"])
    parser.add_argument("--workers", type=int, default=2, help="0: a local run, no cluster")
    parser.add_argument("--seed", type=int, default=613)
    parser.add_argument("--frames", type=int, default=12, help="speed: series length")
    parser.add_argument("--repeat", type=int, default=3, help="speed: interleaved repeats")
    parser.add_argument(
        "--frames-list", type=int, nargs="+", default=[50, 200], help="memory: series lengths"
    )
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=None,
        metavar=("Z", "Y", "X"),
        help="frame shape (default: 16 128 128 for speed, 4 32 32 for memory)",
    )
    args = parser.parse_args(argv)
    if args.shape is None:
        args.shape = [16, 128, 128] if args.what == "speed" else [4, 32, 32]
    speed(args) if args.what == "speed" else memory(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
