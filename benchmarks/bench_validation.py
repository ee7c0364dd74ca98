"""Track the validation series with a model bundle and score them: the check of a candidate
model before it replaces the default, on data used for choices only (never the test seeds).

The series are the training script's validation presets (``default`` 301, ``noisy`` 302, ``hard``
303) and the threshold tuner's further ones (``sparse2d`` 309, ``fast`` 305, ``dense`` 306), each
20 frames, tracked by :func:`napari_cellect.pipeline.track_images` and scored by
:func:`napari_cellect.evaluate.evaluate`.

Run: ``python benchmarks/bench_validation.py BUNDLE [--thresholds-from OTHER] [--series
PRESET:SEED ...] [--min-depth N]`` (``--thresholds-from default``: score BUNDLE's networks with
the default model's thresholds, e.g. a freshly trained model before its thresholds are tuned;
``--series sparse2d:309 sparse2d:310``: other validation series, never the test seeds 4xx/5xx;
``--min-depth 1``: without the z padding of thin volumes, to see what it changes).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import train_default

from napari_cellect.data.synthetic import generate
from napari_cellect.evaluate import evaluate
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.pipeline import track_images

#: the validation series: the training script's and the threshold tuner's
SERIES = train_default.VAL_PRESETS + train_default.EXTENDED_VAL_PRESETS


def score_series(
    bundle: ModelBundle,
    series: list[tuple[str, int]] | None = None,
    device: str = "cpu",
    verbose: bool = True,
) -> dict[str, dict[str, float]]:
    """Track each validation series with ``bundle``; {"preset seed": {det_f1, link_f1,
    div_f1}} (a table row printed per series when ``verbose``)."""
    rows = {}
    for preset, seed in series or SERIES:
        config = train_default._config(preset, seed, quick=False)
        seq = generate(config)
        started = time.perf_counter()
        result = track_images(seq.images, bundle, z_ratio=config.z_ratio, device=device)
        s = evaluate(result.graph, seq.graph, z_ratio=config.z_ratio)
        rows[f"{preset} {seed}"] = {"det_f1": s.det_f1, "link_f1": s.link_f1, "div_f1": s.div_f1}
        if verbose:
            print(
                f"| {preset} {seed} | {s.det_f1:.3f} | {s.link_f1:.3f} | {s.div_f1:.3f} | "
                f"{time.perf_counter() - started:.0f} |",
                flush=True,
            )
    return rows


def _load(path: str) -> ModelBundle:
    return ModelBundle.load_default() if path == "default" else ModelBundle.load(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="model bundle, or 'default'")
    parser.add_argument(
        "--thresholds-from",
        metavar="BUNDLE",
        help="use this bundle's thresholds ('default': the bundled model's)",
    )
    parser.add_argument(
        "--series",
        nargs="+",
        metavar="PRESET:SEED",
        help="validation series to track (default: the validation sets)",
    )
    parser.add_argument("--min-depth", type=int, help="override normalization.min_depth")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    bundle = _load(args.bundle)
    if args.thresholds_from:
        bundle.thresholds = _load(args.thresholds_from).thresholds
    if args.min_depth is not None:
        bundle.normalization = dataclasses.replace(bundle.normalization, min_depth=args.min_depth)
    series = SERIES
    if args.series:
        series = [(name, int(seed)) for name, seed in (s.split(":") for s in args.series)]
        if any(seed >= 400 for _, seed in series):
            parser.error("seeds 400 and above are test seeds: choose validation series below")
    print(
        f"bundle {args.bundle}"
        + (f", thresholds of {args.thresholds_from}" if args.thresholds_from else "")
        + f", min_depth {bundle.normalization.min_depth}"
    )
    print("| series | det F1 | link F1 | div F1 | seconds |")
    print("|---|---|---|---|---|")
    rows = score_series(bundle, series, args.device)
    mean = np.mean([list(row.values()) for row in rows.values()], axis=0)
    print(f"| mean | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
