"""Accuracy of a model bundle on synthetic sequences it was never trained or tuned on.

Each case is made with ``cellect synth`` (seeds 501+ are used nowhere else: not in training,
validation, threshold tuning or the training script's own test set), tracked with
``cellect track`` and scored with ``cellect evaluate --json``, exactly as a user would.

Run: ``python benchmarks/bench_accuracy.py [--weights BUNDLE] [--quick]``; prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from napari_cellect.cli import main as cellect

#: (name, cellect synth arguments); "hard" is denser, noisier, faster and divides more
CASES = [
    ("default", ["--preset", "default", "--seed", "501"]),
    ("default, z-ratio 5", ["--preset", "default", "--seed", "502", "--z-ratio", "5"]),
    ("noisy", ["--preset", "noisy", "--seed", "503"]),
    ("dense", ["--preset", "dense", "--seed", "504"]),
    ("fast", ["--preset", "fast", "--seed", "505"]),
    ("hard", ["--preset", "hard", "--seed", "506"]),
    ("2D+t", ["--preset", "sparse2d", "--seed", "507"]),
    # the size of a real confocal embryo stack: 41 x 512 x 512, z step 5, nuclei radius 9-14
    ("large", ["--preset", "large", "--seed", "508"]),
]
KEYS = ("det_f1", "link_f1", "div_f1", "div_precision", "div_recall", "tra", "n_gt")


def _run(args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cellect(args)
    if code != 0:
        raise SystemExit(f"cellect {' '.join(args)} failed with exit code {code}")
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="model bundle (default: the bundled model)")
    parser.add_argument("--quick", action="store_true", help="8 frames of 16 x 64 x 64 per case")
    args = parser.parse_args(argv)
    weights = ["--weights", args.weights] if args.weights else []
    rows = []
    with tempfile.TemporaryDirectory(prefix="cellect-accuracy-") as tmp:
        for name, synth in CASES:
            folder = Path(tmp) / name.replace(" ", "_").replace(",", "").replace("+", "")
            extra = ["--frames", "8", "--shape", "16", "64", "64"] if args.quick else []
            if args.quick and "sparse2d" in synth:
                extra = ["--frames", "8", "--shape", "1", "64", "64"]
            if args.quick and "large" in synth:
                extra = ["--frames", "4", "--shape", "21", "128", "128", "--cells", "12"]
            _run(["synth", str(folder), *synth, *extra])
            meta = json.loads((folder / "synthetic.json").read_text())
            z_ratio = str(meta.get("config", meta).get("z_ratio", 1.0))
            started = time.perf_counter()
            _run(
                [
                    "track",
                    str(folder / "images"),
                    "-o",
                    str(folder / "tracked.csv"),
                    "--z-ratio",
                    z_ratio,
                    *weights,
                ]
            )
            seconds = time.perf_counter() - started
            scores = json.loads(
                _run(
                    [
                        "evaluate",
                        str(folder / "tracked.csv"),
                        str(folder / "tracks.csv"),
                        "--z-ratio",
                        z_ratio,
                        "--json",
                    ]
                )
            )
            rows.append((name, scores, seconds))
    print("| case | " + " | ".join(KEYS) + " | track (s) |")
    print("|---" * (len(KEYS) + 2) + "|")
    for name, scores, seconds in rows:
        cells = [f"{scores[k]:.0f}" if k == "n_gt" else f"{scores[k]:.3f}" for k in KEYS]
        print(f"| {name} | " + " | ".join(cells) + f" | {seconds:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
