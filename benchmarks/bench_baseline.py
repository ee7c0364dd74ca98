"""Our full pipeline against the classical LoG + laptrack baseline on synthetic image series.

The test series are those of ``bench_accuracy.py`` (presets with seeds 501-508, used nowhere
else), shortened to ``--frames`` frames (the ``large`` case also cropped, see ``SHRINK``) so that
both trackers run in a few minutes on a small CPU. Our tracker is
:func:`napari_cellect.pipeline.track_images` with the bundled default model; the baseline is
``classical_baseline.track_classical`` given the nominal nucleus radius (the middle of the
preset's ``radius_range``: information our tracker does not get). Both are
scored against the ground truth with :func:`napari_cellect.evaluate.evaluate` (det/link/div F1
and TRA) and timed (wall clock, whole series; the model is loaded once beforehand, on CPU).

The baseline's detection threshold is chosen with ``--tune`` on the validation series (the
training script's and threshold tuner's: seeds 301-303, 305, 306 and 309), never on the test
seeds: the threshold of the best mean TRA becomes ``classical_baseline.DEFAULT_THRESHOLD``.

Run: ``python benchmarks/bench_baseline.py`` (``--quick``: two cases of 4 small frames;
``--tune`` to choose the threshold again). Needs ``benchmarks/requirements-peers.txt``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from pathlib import Path

import numpy as np

from napari_cellect.data.synthetic import PRESETS, generate
from napari_cellect.evaluate import evaluate

sys.path.insert(0, str(Path(__file__).parent))
from bench_accuracy import CASES
from classical_baseline import (
    BaselineConfig,
    detect_series,
    link_laptrack,
    track_classical,
)

#: (preset, seed) of the validation series the threshold is tuned on
VALIDATION = [
    ("default", 301),
    ("noisy", 302),
    ("hard", 303),
    ("fast", 305),
    ("dense", 306),
    ("sparse2d", 309),
]
THRESHOLDS = (0.03, 0.05, 0.07, 0.1, 0.14, 0.2, 0.28)
#: the ``large`` preset is cropped so a run stays short (as bench_accuracy --quick does)
SHRINK = {"large": {"shape": (21, 128, 128), "n_cells": 12}}
KEYS = ("det_f1", "link_f1", "div_f1", "tra")


def case_config(synth_args: list[str], frames: int, small: bool = False):
    """The SyntheticConfig of a ``bench_accuracy`` case (``--preset P --seed S [--z-ratio Z]``)."""
    opts = dict(zip(synth_args[::2], synth_args[1::2], strict=True))
    preset = opts["--preset"]
    changes: dict = {"seed": int(opts["--seed"]), "frames": frames}
    if "--z-ratio" in opts:
        changes["z_ratio"] = float(opts["--z-ratio"])
    changes.update(SHRINK.get(preset, {}))
    if small:
        z = 1 if PRESETS[preset].shape[0] == 1 else 16
        changes["shape"] = (z, 64, 64)
    return dataclasses.replace(PRESETS[preset], **changes)


def nominal_radius(config) -> float:
    """The middle of the preset's nucleus radius range (xy pixels)."""
    return float(np.mean(config.radius_range))


def run_case(config, trackers: dict) -> dict[str, tuple[dict, float]]:
    """Scores (``evaluate(...).to_dict()``) and seconds of each tracker on one series; a
    tracker is called as ``track(images, z_ratio, radius)``."""
    seq = generate(config)
    out = {}
    for name, track in trackers.items():
        start = time.perf_counter()
        graph = track(seq.images, config.z_ratio, nominal_radius(config))
        seconds = time.perf_counter() - start
        out[name] = (evaluate(graph, seq.graph, z_ratio=config.z_ratio).to_dict(), seconds)
    return out


@functools.cache
def default_bundle():
    from napari_cellect.model.bundle import ModelBundle

    return ModelBundle.load_default()


def ours(images: np.ndarray, z_ratio: float, radius: float | None = None):
    """Our pipeline with the default model; like ``cellect track``, it is not told the radius."""
    from napari_cellect.pipeline import track_images

    return track_images(images, default_bundle(), z_ratio=z_ratio).graph


def tune(frames: int) -> float:
    """Print the mean scores of each threshold on the validation series; return the best.
    Each series is filtered once; only the threshold and the linking are repeated."""
    scores: dict[float, list[dict]] = {t: [] for t in THRESHOLDS}
    for preset, seed in VALIDATION:
        config = dataclasses.replace(PRESETS[preset], seed=seed, frames=frames)
        seq = generate(config)
        base = BaselineConfig()
        radius = nominal_radius(config)
        peaks = detect_series(seq.images, config.z_ratio, radius, base.scales)
        for t in THRESHOLDS:
            positions = [pos[response >= t] for pos, response in peaks]
            graph = link_laptrack(positions, radius, config.z_ratio, base)
            scores[t].append(evaluate(graph, seq.graph, z_ratio=config.z_ratio).to_dict())
    print(f"validation series {VALIDATION}, {frames} frames each\n")
    print("| threshold | " + " | ".join(f"mean {k}" for k in KEYS) + " |")
    print("|---:" * (len(KEYS) + 1) + "|")
    best, best_tra = THRESHOLDS[0], -1.0
    for t in THRESHOLDS:
        means = {k: float(np.mean([s[k] for s in scores[t]])) for k in KEYS}
        print(f"| {t} | " + " | ".join(f"{means[k]:.3f}" for k in KEYS) + " |")
        if means["tra"] > best_tra:
            best, best_tra = t, means["tra"]
    print(f"\nbest mean TRA: threshold {best}")
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two cases, 4 frames of 16x64x64")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument(
        "--tune",
        action="store_true",
        help="choose the baseline's threshold on the validation series",
    )
    args = parser.parse_args(argv)
    if args.tune:
        tune(args.frames)
        return 0
    cases = [c for c in CASES if c[0] in ("default", "2D+t")] if args.quick else CASES
    frames = 4 if args.quick else args.frames
    trackers = {"ours": ours, "LoG + laptrack": track_classical}
    # load the model once before timing, so no case pays for it
    ours(generate(case_config(CASES[0][1], 2, small=True)).images, 1.0)
    print(f"{frames} frames per series\n")
    print("| case | tracker | " + " | ".join(KEYS) + " | n_gt | time (s) |")
    print("|---|---|" + "---:|" * (len(KEYS) + 2))
    for name, synth in cases:
        config = case_config(synth, frames, small=args.quick)
        for tracker, (scores, seconds) in run_case(config, trackers).items():
            cells = " | ".join(f"{scores[k]:.3f}" for k in KEYS)
            print(
                f"| {name} | {tracker} | {cells} | {scores['n_gt']} | {seconds:.1f} |", flush=True
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
