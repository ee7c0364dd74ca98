"""Tune a bundle's post-processing thresholds on validation data, and save them in the bundle.

The network is trained by ``train_default.py``; the thresholds that turn its maps into tracks
(detection and foreground thresholds, NMS radius, merge gate and threshold, division threshold)
are then chosen by a grid search on the *validation* series of that script plus a 2D+t one
(held-out seeds, never the test or benchmark seeds), tracking each whole series and maximising
the mean of detection, link and division F1 over the series. (The training script calibrates the
detection threshold on crops; whole sequences, with linking, are the better judge.)

The U-Net runs once per series, NMS radius and foreground threshold, at the lowest detection
threshold of the grid: the peaks above a higher threshold are exactly the higher-scoring of
those (the local-maximum test does not depend on the threshold, and NMS never lets a weaker
detection remove a stronger one), so every detection threshold is a filter on the same
detections.

A second stage tunes division refinement (``thresholds.division_refinement``,
``infer/refine.py``), which needs the U-Net again on crops, so it runs the whole tracking
pipeline per setting: first the magnification and reach (at the division threshold of the first stage), then the division
threshold, which also picks the cells that refinement looks at again.

Run: ``python benchmarks/tune_thresholds.py BUNDLE [-o OUT] [--refinement-only]`` (default:
overwrite BUNDLE).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import train_default

from napari_cellect.data.synthetic import PRESETS, generate, sample_config
from napari_cellect.evaluate import evaluate
from napari_cellect.infer.predict import predict_sequence
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.pipeline import track_images
from napari_cellect.track.link import link_sequence
from napari_cellect.track.merge import merge_duplicates

#: validation series beyond the training script's: a 2D+t one (the training validation has none,
#: and the segmentation head's foreground can be calibrated differently on 2D frames), and fast
#: and dense ones (division refinement's settings scored within 0.01 of each other on the others)
EXTRA_VALIDATION = train_default.EXTENDED_VAL_PRESETS
DETECTION_THRESHOLDS = (0.1, 0.2, 0.3, 0.45, 0.6)
FOREGROUND_THRESHOLDS = (0.1, 0.3, 0.5)
NMS = (0.3, 0.45, 0.6)
MERGE_RADII = (0.5, 0.8)
MERGE_THRESHOLDS = (0.5, 0.7)
DIVISION_THRESHOLDS = (0.3, 0.5)
REFINE_SCALES = (1.5, 1.7, 2.0)
REFINE_REACHES = (1.5, 2.5)
REFINED_DIVISION_THRESHOLDS = (0.1, 0.15, 0.2, 0.3)


def _validation():
    presets = train_default.VAL_PRESETS + EXTRA_VALIDATION
    configs = [dataclasses.replace(PRESETS[p], seed=s) for p, s in presets]
    configs += [
        sample_config(s, dataclasses.replace(PRESETS["default"], seed=s))
        for s in train_default.VAL_RANDOMISED
    ]
    return [(c, generate(c)) for c in configs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("-o", "--out", type=Path)
    parser.add_argument(
        "--refinement-only",
        action="store_true",
        help="stage 2 only: tune division refinement and the division "
        "threshold, keep the bundle's other thresholds",
    )
    args = parser.parse_args(argv)
    bundle = ModelBundle.load(args.bundle)
    base = bundle.thresholds
    series = _validation()
    if args.refinement_only:
        started = time.perf_counter()
        _tune_refinement(bundle, series)
        bundle.save(args.out or args.bundle)
        print(
            f"refinement {bundle.thresholds.division_refinement}, division threshold "
            f"{bundle.thresholds.link.division_threshold} in "
            f"{time.perf_counter() - started:.0f} s -> {args.out or args.bundle}"
        )
        return 0
    merge_scorer, link_scorer = bundle.candidate_scorer("merge"), bundle.candidate_scorer("link")
    results = []
    started = time.perf_counter()
    for nms, foreground in itertools.product(NMS, FOREGROUND_THRESHOLDS):
        detection = dataclasses.replace(
            base.detection,
            nms_radius_factor=nms,
            foreground_threshold=foreground,
            threshold=min(DETECTION_THRESHOLDS),
        )
        raw = [
            list(
                predict_sequence(
                    s.images, bundle, z_ratio=c.z_ratio, device="cpu", detection=detection
                )
            )
            for c, s in series
        ]
        for det_threshold, radius, threshold, division in itertools.product(
            DETECTION_THRESHOLDS, MERGE_RADII, MERGE_THRESHOLDS, DIVISION_THRESHOLDS
        ):
            merge = dataclasses.replace(base.merge, max_distance_radii=radius, threshold=threshold)
            link = dataclasses.replace(base.link, division_threshold=division)
            f1 = []
            for (config, seq), frames in zip(series, raw, strict=True):
                kept = [d.subset(d.score >= det_threshold) for d in frames]
                merged = [merge_duplicates(d, merge_scorer, merge, config.z_ratio)[0] for d in kept]
                graph = link_sequence(merged, link_scorer, link, config.z_ratio)
                s = evaluate(graph, seq.graph, z_ratio=config.z_ratio)
                f1.append((s.det_f1, s.link_f1, s.div_f1))
            mean = np.mean(f1, axis=0)
            results.append(
                (
                    float(mean.mean()),
                    det_threshold,
                    foreground,
                    nms,
                    radius,
                    threshold,
                    division,
                    mean,
                )
            )
            print(
                f"detection {det_threshold} foreground {foreground} nms {nms} merge r {radius} "
                f"p {threshold} div "
                f"{division}: det {mean[0]:.3f} link {mean[1]:.3f} div {mean[2]:.3f}",
                flush=True,
            )
    best = max(results, key=lambda r: r[0])
    _, det_threshold, foreground, nms, radius, threshold, division, mean = best
    bundle.thresholds = dataclasses.replace(
        base,
        detection=dataclasses.replace(
            base.detection,
            nms_radius_factor=nms,
            foreground_threshold=foreground,
            threshold=det_threshold,
        ),
        merge=dataclasses.replace(base.merge, max_distance_radii=radius, threshold=threshold),
        link=dataclasses.replace(base.link, division_threshold=division),
    )
    bundle.metadata.record(
        "tune_thresholds",
        detection_threshold=det_threshold,
        foreground_threshold=foreground,
        nms_radius_factor=nms,
        merge_max_distance_radii=radius,
        merge_threshold=threshold,
        division_threshold=division,
        validation_det_f1=round(float(mean[0]), 4),
        validation_link_f1=round(float(mean[1]), 4),
        validation_div_f1=round(float(mean[2]), 4),
    )
    _tune_refinement(bundle, series)
    out = args.out or args.bundle
    bundle.save(out)
    print(
        f"best on validation: detection {det_threshold}, foreground {foreground}, nms {nms}, "
        f"merge radius {radius}, "
        f"merge p {threshold}, division "
        f"{division} (det {mean[0]:.3f}, link {mean[1]:.3f}, div {mean[2]:.3f}); refinement "
        f"{bundle.thresholds.division_refinement}, division threshold "
        f"{bundle.thresholds.link.division_threshold}; in "
        f"{time.perf_counter() - started:.0f} s -> {out}"
    )
    return 0


def _pipeline_scores(bundle: ModelBundle, series: list) -> np.ndarray:
    """Mean (det, link, div) F1 of the whole tracking pipeline over the series."""
    f1 = []
    for config, seq in series:
        graph = track_images(seq.images, bundle, z_ratio=config.z_ratio, device="cpu").graph
        s = evaluate(graph, seq.graph, z_ratio=config.z_ratio)
        f1.append((s.det_f1, s.link_f1, s.div_f1))
    return np.mean(f1, axis=0)


def _tune_refinement(bundle: ModelBundle, series: list) -> None:
    """Stage 2: refinement scale and reach, then the division threshold, by tracking the
    validation series with the whole pipeline; sets ``bundle.thresholds`` in place."""
    chosen = bundle.thresholds

    def trial(**changes: Any) -> tuple[float, Any]:
        thresholds = dataclasses.replace(chosen, **changes)
        bundle.thresholds = thresholds
        mean = _pipeline_scores(bundle, series)
        print(
            f"refine {thresholds.division_refinement} division "
            f"{thresholds.link.division_threshold}: det {mean[0]:.3f} link {mean[1]:.3f} "
            f"div {mean[2]:.3f}",
            flush=True,
        )
        return float(mean.mean()), thresholds

    refinement = chosen.division_refinement
    options = [trial(division_refinement=dataclasses.replace(refinement, enabled=False))]
    options += [
        trial(
            division_refinement=dataclasses.replace(
                refinement, enabled=True, scale=scale, reach=reach
            )
        )
        for scale, reach in itertools.product(REFINE_SCALES, REFINE_REACHES)
    ]
    chosen = max(options, key=lambda o: o[0])[1]
    options = [
        trial(link=dataclasses.replace(chosen.link, division_threshold=division))
        for division in REFINED_DIVISION_THRESHOLDS
    ]
    chosen = max(options, key=lambda o: o[0])[1]
    bundle.thresholds = chosen
    bundle.metadata.record(
        "tune_refinement",
        refine_enabled=chosen.division_refinement.enabled,
        refine_scale=chosen.division_refinement.scale,
        refine_reach=chosen.division_refinement.reach,
        division_threshold=chosen.link.division_threshold,
    )


if __name__ == "__main__":
    sys.exit(main())
