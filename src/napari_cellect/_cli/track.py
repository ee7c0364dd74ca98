"""``cellect track INPUT -o tracks.csv``: detect, merge and link a 3D+t or 2D+t series."""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path
from typing import Any

from napari_cellect._cli._types import cell_radius, positive_int
from napari_cellect.cli import command_help
from napari_cellect.errors import InputError

#: suffix of the default detection cache folder, beside the output CSV
CACHE_SUFFIX = ".cellect-cache"

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "track",
        help=command_help("track"),
        description=(
            "Run the U-Net on every frame pair, merge duplicate detections, link them globally "
            "with divisions, and write our CSV (and CTC, GEFF, instance masks on request). "
            "Every threshold comes from the model bundle; `cellect track --show-config` prints them."
        ),
        epilog=_thresholds_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "input",
        metavar="INPUT",
        type=Path,
        nargs="?",
        help="folder of per-time TIFFs, a (T,Z,Y,X)/(T,Y,X) TIFF, a CTC folder or zarr",
    )
    parser.add_argument("-o", "--output", type=Path, metavar="CSV", help="tracks CSV to write")
    parser.add_argument(
        "--weights", type=Path, metavar="BUNDLE", help="model bundle (default: the bundled model)"
    )
    parser.add_argument(
        "--z-ratio",
        type=float,
        metavar="R",
        help="z spacing / xy spacing (default: from the image metadata, else 1)",
    )
    parser.add_argument("--axes", metavar="AXES", help="axes of a TIFF without metadata, e.g. TZYX")
    parser.add_argument(
        "--cell-radius",
        type=cell_radius,
        metavar="R",
        default="auto",
        help="typical nucleus radius of the images in xy pixels; the frames are "
        "resized so nuclei match the size the model was trained on (see "
        "--show-config: normalization.reference_radius). Default 'auto': "
        "estimated from a few frames and logged (no resizing when close to "
        "the model's, or when no size is found); 'none': never resize",
    )
    parser.add_argument(
        "--device",
        default="auto",
        metavar="D",
        help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1 or mps",
    )
    parser.add_argument(
        "--tile",
        type=positive_int,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="largest sliding-window tile; its voxel count bounds memory, and "
        "tiles are fitted to each frame (default: the model's)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="detection cache: a re-run after an interruption, a re-link or a "
        "fine-tune skips the frame pairs already there (default: "
        f"CSV{CACHE_SUFFIX} beside the output CSV; with --keep-approved CSV, the "
        "one beside that CSV when it exists)",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="keep no detection cache (the run cannot be resumed)",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDR",
        help="run the U-Net on a dask.distributed cluster: tcp://HOST:PORT of a "
        "running scheduler (the images must be on storage the workers see "
        "at the same path), or local:N for N local worker processes; "
        "needs pip install 'napari-cellect[distributed]'",
    )
    parser.add_argument(
        "--keep-approved",
        type=Path,
        metavar="CSV",
        help="a corrected tracks CSV: its approved links are kept, the rest re-solved",
    )
    parser.add_argument(
        "--ctc", type=Path, metavar="DIR", help="also write CTC res_track.txt (+ masks)"
    )
    parser.add_argument("--geff", type=Path, metavar="PATH", help="also write GEFF")
    parser.add_argument(
        "--labels",
        type=Path,
        metavar="PATH",
        help="also write instance masks (label = track id), .tif or .zarr",
    )
    parser.add_argument(
        "--show-config",
        action="store_true",
        help="print the model's thresholds and normalization (with the nucleus "
        "radius it was trained on, reference_radius) and exit",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from napari_cellect.data.export import write_csv, write_ctc, write_geff, write_label_series
    from napari_cellect.data.images import CLI_AXES, open_sequence
    from napari_cellect.infer.device import resolve_device
    from napari_cellect.infer.radius_estimate import CLI_RADIUS
    from napari_cellect.infer.rescale import xy_scale
    from napari_cellect.model.bundle import ModelBundle
    from napari_cellect.pipeline import make_labeler, track_images
    from napari_cellect.session.tracking_session import correction_config
    from napari_cellect.settings.conversion import config_to_dict

    resolve_device(args.device)  # fail before the long run starts
    bundle = ModelBundle.load(args.weights) if args.weights else ModelBundle.load_default()
    if args.show_config:
        import json

        print(
            json.dumps(
                {
                    "thresholds": config_to_dict(bundle.thresholds),
                    "normalization": config_to_dict(bundle.normalization),
                },
                indent=2,
            )
        )
        return 0
    if args.input is None or args.output is None:
        raise InputError("expected INPUT and -o/--output CSV (or --show-config)")
    _check_outputs(args)
    if args.cell_radius != "auto":  # can this model rescale?
        xy_scale(args.cell_radius, bundle.normalization.reference_radius)
    images = open_sequence(args.input, axes=args.axes, axes_option=CLI_AXES)
    z_ratio = args.z_ratio if args.z_ratio is not None else images.z_ratio
    if not z_ratio > 0:
        raise InputError(f"--z-ratio must be > 0, found {z_ratio}")
    keep = corrections = None
    if args.keep_approved is not None:  # re-linked by the session's rule, with its corrections
        from napari_cellect.session import TrackingSession

        session = TrackingSession.read_tracks(args.keep_approved, z_ratio=z_ratio)
        keep, corrections = session.graph, session.corrections(correction_config(bundle))
    n_frames = images.data.shape[0]
    with (
        _cluster(args.scheduler) as client,
        tqdm(total=n_frames, unit="frame", desc="tracking") as bar,
    ):
        result = track_images(
            images,
            bundle,
            z_ratio=z_ratio,
            device=args.device,
            tile=args.tile,
            cache_dir=cache_folder(args),
            keep_approved=keep,
            corrections=corrections,
            cell_radius=args.cell_radius,
            radius_option=CLI_RADIUS,
            scheduler=client,
            keep_foreground=args.labels is not None or args.ctc is not None,
            progress=lambda step: bar.update(1) if step.stage == "detect" else None,
        )
    graph = result.graph
    write_csv(graph, args.output, extra=("changed",) if result.changed is not None else ())
    shape = result.shape
    assert shape is not None  # a tracking run always records the frame shape
    labeler = make_labeler(graph, shape, z_ratio=z_ratio, foreground=result.foreground)
    if args.labels is not None:
        write_label_series(map(labeler, range(n_frames)), args.labels, n_frames, shape)
    if args.ctc is not None:
        write_ctc(graph, args.ctc, labels=labeler, shape=(n_frames, *shape), z_ratio=z_ratio)
    if args.geff is not None:
        write_geff(graph, args.geff, z_ratio=z_ratio)
    print(
        f"{len(graph)} cells, {graph.n_edges} links, {len(graph.divisions())} divisions "
        f"in {n_frames} frames -> {args.output}"
    )
    if result.changed is not None:
        print(
            f"{len(result.changed)} link(s) differ from {args.keep_approved} "
            "(column `changed` marks them for review)"
        )
    return 0


def _cluster(scheduler: str | None) -> contextlib.AbstractContextManager[Any]:
    """A dask Client for --scheduler, connected before the run starts (so a wrong address
    fails at once); no scheduler: nothing."""
    if scheduler is None:
        return contextlib.nullcontext()
    from napari_cellect.infer.distributed import connect

    return connect(scheduler)


def cache_folder(args: argparse.Namespace) -> Path | None:
    """The detection cache of this run: --cache; else, when re-linking, the cache the corrected
    tracks were made with (beside the --keep-approved CSV), so the U-Net does not run again;
    else CSV.cellect-cache beside the output."""
    if args.no_cache:
        if args.cache is not None:
            raise InputError("expected --cache DIR or --no-cache, found both")
        return None
    if args.cache is not None:
        return args.cache
    if args.keep_approved is not None:
        corrected = args.keep_approved.with_name(args.keep_approved.name + CACHE_SUFFIX)
        if corrected.is_dir():
            return corrected
    return args.output.with_name(args.output.name + CACHE_SUFFIX)


def _thresholds_help() -> str:
    """The thresholds a bundle carries, with the defaults of a new bundle (config.py)."""
    from napari_cellect.settings.conversion import config_to_dict
    from napari_cellect.settings.tracking import TrackingConfig

    lines = [
        "thresholds stored in every model bundle (defaults of a new bundle shown; "
        "--show-config prints the values of yours):"
    ]
    for section, values in config_to_dict(TrackingConfig()).items():
        lines.append(f"  {section}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return "\n".join(lines)


def _check_outputs(args: argparse.Namespace) -> None:
    """Fail before the long run, not after it, when an output folder does not exist."""
    for path in (args.output, args.geff, args.labels):
        if path is not None and not path.parent.exists():
            raise InputError(f"the output folder {path.parent} does not exist", path)
    if args.weights is not None and args.output.resolve() == args.weights.resolve():
        raise InputError("the output CSV would overwrite the model bundle", args.output)
