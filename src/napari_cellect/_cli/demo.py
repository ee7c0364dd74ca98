"""``cellect demo OUT``: the main job on a built-in example.

Makes a synthetic embryo with ground truth, tracks it with the bundled model, scores the result
against the ground truth, writes everything to OUT and opens it in napari (unless --headless).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
from pathlib import Path

from napari_cellect.cli import command_help
from napari_cellect.errors import CellectError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help=command_help("demo"),
        description=(
            "Generate a synthetic 3D+t embryo with ground truth in OUT, track it with the bundled "
            "model (or --weights), score it, and open images and tracks in napari."
        ),
    )
    parser.add_argument("out", metavar="OUT", type=Path, help="output folder")
    parser.add_argument("--headless", action="store_true", help="do not open napari")
    parser.add_argument("--weights", type=Path, metavar="BUNDLE", help="model bundle")
    parser.add_argument("--frames", type=int, default=12, metavar="T", help="time points (12)")
    parser.add_argument("--seed", type=int, default=2026, metavar="S", help="random seed")
    parser.add_argument("--device", default="auto", metavar="D", help="auto, cpu, cuda or mps")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.headless and importlib.util.find_spec("napari") is None:
        raise CellectError(
            "napari is not installed, so the result cannot be shown: install it with "
            "pip install 'napari-cellect[all]', or pass --headless"
        )
    from napari_cellect.data.annotations import read_tracks
    from napari_cellect.data.export import write_csv
    from napari_cellect.data.images import open_sequence
    from napari_cellect.data.synthetic import PRESETS, write_synthetic
    from napari_cellect.evaluate import evaluate
    from napari_cellect.model.bundle import ModelBundle
    from napari_cellect.pipeline import track_images

    bundle = ModelBundle.load(args.weights) if args.weights else ModelBundle.load_default()
    config = dataclasses.replace(PRESETS["default"], frames=args.frames, seed=args.seed)
    write_synthetic(args.out, config, overwrite=True)
    images = open_sequence(args.out / "images")
    result = track_images(images, bundle, z_ratio=config.z_ratio, device=args.device)
    tracks = args.out / "tracked.csv"
    write_csv(result.graph, tracks)

    scores = evaluate(result.graph, read_tracks(args.out / "tracks.csv"), z_ratio=config.z_ratio)
    summary = {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.to_dict().items()}
    (args.out / "scores.json").write_text(json.dumps(summary, indent=2))
    print(f"tracked {len(result.graph)} cells in {args.frames} frames -> {tracks}")
    print("scores against the ground truth: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    if not args.headless:
        import napari

        viewer = napari.Viewer(title="napari-cellect demo")
        viewer.open(args.out / "images", plugin="napari-cellect")
        viewer.open(tracks, plugin="napari-cellect")
        napari.run()
    return 0
