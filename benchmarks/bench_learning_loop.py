"""The learning loop of issue 12, end to end: errors in the frames nobody corrected, before and
after learning from the corrected first 20 %, with the guard.

For each shifted synthetic sequence (``--shift``, ``--seed``): track with the default model; a
simulated person corrects the first 20 % of the frames to the truth and approves them
(``bench_finetune.correct_from_ground_truth``); then

- ``scorers (guarded)``: :func:`~napari_cellect.train.finetune_guard.iter_guarded_finetune` on
  the tracking run's detections, re-linked keeping the approved work;
- ``detector+scorers (guarded)``: the same with the detector part
  (:class:`~napari_cellect.train.detector_part.DetectorTrainer`); when the guard adopts the
  detector, the frames nobody approved are predicted again and re-linked keeping approved work
  (:func:`~napari_cellect.session.jobs.redetect_relink_job`), else re-linked as above.

Errors in the remaining frames: link (false + missed links), division (false + missed) and
detection (false + missed cells). Timed: the guarded fine-tune with the detector (adaptation,
re-detection of the corrected frames, scorer fine-tuning, the guard's checks and its retraining
on all corrections); target <= 120 s for 6 corrected frames of 24 x 192 x 192 on 2 CPU cores.

Run: ``python benchmarks/bench_learning_loop.py --shift large --seed 401`` (several seeds and
shifts: ``--seed 401 402 --shift large hard-z5``; validation seeds 301-313 only for choices).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from bench_adapt_detector import SHIFTS, detection_errors
from bench_finetune import correct_from_ground_truth, errors

from napari_cellect.data.synthetic import generate
from napari_cellect.data.synthetic.config import SyntheticConfig
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.pipeline import track_images
from napari_cellect.progress import run_to_end
from napari_cellect.session.jobs import redetect_relink_job
from napari_cellect.track.correction_labels import CorrectionConfig
from napari_cellect.track.corrections import build_corrections, corrections_from_history
from napari_cellect.track.relink import relink_keeping_work
from napari_cellect.train.adapt_unet import AdaptConfig
from napari_cellect.train.detector_part import DetectorTrainer, is_adapted
from napari_cellect.train.finetune_guard import iter_guarded_finetune

CORRECTED_FRACTION = 0.2
MAX_SECONDS = 120.0
CPU_THREADS = 2


def score(graph, gt, z: float, first: int) -> dict[str, int]:
    fp, fn = detection_errors(graph, gt, z, first)
    link, div = errors(graph, gt, z, first)
    return {"link": link, "division": div, "detection": fp + fn}


def one_case(
    shift: str, seed: int, frames: int, shape: tuple[int, int, int], steps: int
) -> tuple[list[str], float, int]:
    config = dataclasses.replace(
        SyntheticConfig(frames=frames, shape=shape, seed=seed, division_rate=0.06, min_cycle=6),
        **SHIFTS[shift],
    )
    z = config.z_ratio
    sequence = generate(config)
    gt, images = sequence.graph, sequence.images
    bundle = ModelBundle.load_default()
    result = track_images(images, bundle, z_ratio=z, device="cpu")
    first, raw = result.graph, result.raw_detections
    last = max(1, round(CORRECTED_FRACTION * (frames - 1)))
    held = last + 1
    corrected = first.copy()
    history = correct_from_ground_truth(corrected, gt, z, last)
    cs = build_corrections(
        corrected,
        corrections_from_history(history),
        z_ratio=z,
        config=CorrectionConfig(link_k=bundle.thresholds.link.k, merge_k=bundle.thresholds.merge.k),
    )

    guarded = run_to_end(iter_guarded_finetune(bundle, cs, raw, z_ratio=z))
    scorers = relink_keeping_work(raw, guarded.bundle, corrected, z, corrections=cs).graph

    trainer = DetectorTrainer(images, raw, z, AdaptConfig(steps=steps, device="cpu"), device="cpu")
    start = time.perf_counter()
    with_detector = run_to_end(
        iter_guarded_finetune(bundle, cs, raw, z_ratio=z, trainers=[trainer])
    )
    seconds = time.perf_counter() - start
    if is_adapted(with_detector.bundle, bundle):
        out = run_to_end(
            redetect_relink_job(
                images,
                with_detector.bundle,
                corrected.copy(),
                raw,
                z_ratio=z,
                corrections=cs,
                device="cpu",
                should_stop=lambda: False,
            )
        )
        detector = out.relink.graph
    else:
        detector = relink_keeping_work(
            raw, with_detector.bundle, corrected, z, corrections=cs
        ).graph
    rows = {
        "before (first tracking)": first,
        "scorers (guarded)": scorers,
        "detector+scorers (guarded)": detector,
    }
    base = score(first, gt, z, held)
    lines = []
    for name, graph in rows.items():
        s = score(graph, gt, z, held)
        ld, total = s["link"] + s["division"], sum(s.values())
        ratio = (base["link"] + base["division"]) / ld if ld else float("inf")
        adopted = {"scorers (guarded)": guarded, "detector+scorers (guarded)": with_detector}
        parts = (", ".join(adopted[name].report.adopted) or "nothing") if name in adopted else ""
        held_errors = (
            [f"{p.name} {p.errors_without} -> {p.errors_with}" for p in adopted[name].report.parts]
            if name in adopted
            else []
        )
        parts += (
            f" (held-back errors without -> with: {'; '.join(held_errors)})"
            if (held_errors)
            else ""
        )
        lines.append(
            f"| {shift} {seed} | {name} | {s['link']} | {s['division']} | {ld} | "
            f"{ratio:.2f}x | {s['detection']} | {total} | {parts} |"
        )
    n_frames = len(set(int(t) for t in cs.frames()))
    return lines, seconds, n_frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shift", nargs="+", choices=sorted(SHIFTS), default=["large"])
    parser.add_argument("--seed", type=int, nargs="+", default=[401])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--shape", type=int, nargs=3, default=(24, 192, 192))
    parser.add_argument("--steps", type=int, default=AdaptConfig().steps)
    args = parser.parse_args(argv)
    torch.set_num_threads(CPU_THREADS)
    print(
        f"## Learning loop ({args.frames} frames of {tuple(args.shape)}; first "
        f"{CORRECTED_FRACTION:.0%} corrected; errors in the other frames)\n"
    )
    print(
        "| sequence | model | link err | division err | link+division | fall | "
        "detection err | all | adopted |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    timings = []
    for shift in args.shift:
        for seed in args.seed:
            lines, seconds, n = one_case(shift, seed, args.frames, tuple(args.shape), args.steps)
            print("\n".join(lines), flush=True)
            timings.append((shift, seed, seconds, n))
    print(
        f"\n| guarded fine-tune with the detector ({CPU_THREADS} torch threads) | corrected "
        "frames | seconds | target <= 120 s |\n|---|---:|---:|---|"
    )
    for shift, seed, seconds, n in timings:
        print(
            f"| {shift} {seed} | {n} | {seconds:.1f} | "
            f"{'pass' if seconds <= MAX_SECONDS else 'FAIL'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
