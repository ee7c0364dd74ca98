"""``cellect synth OUT``: write a synthetic nuclei time series with its ground truth.

The output folder gets ``images/t000.tif ...`` (ZYX uint16, ImageJ spacing = z ratio),
``tracks.csv``, the CTC ground truth ``01_GT/TRA/``, optionally ``labels/t000.tif`` and
``synthetic.json`` (the full config). Options override the values of ``--preset``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from napari_cellect.cli import command_help
from napari_cellect.data.synthetic import PRESETS  # loads only the parameters (lazy package)
from napari_cellect.errors import InputError

if TYPE_CHECKING:
    from napari_cellect.data.synthetic.config import SyntheticConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help=command_help("synth"),
        description=(
            "Simulate an early embryo (moving, dividing, entering and leaving nuclei) and write "
            "its images and ground truth (our CSV and CTC). Options override the preset."
        ),
    )
    parser.add_argument("out", metavar="OUT", type=Path, help="output folder (new or empty)")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="default",
        help="starting configuration (default: default)",
    )
    parser.add_argument("--frames", type=int, metavar="T", help="number of time points")
    parser.add_argument(
        "--shape",
        type=int,
        nargs="+",
        metavar="SIZE",
        help="volume size as three numbers Z Y X (Z = 1 for 2D+t)",
    )
    parser.add_argument("--cells", type=int, metavar="N", help="nuclei in view at t = 0")
    parser.add_argument(
        "--density",
        type=float,
        metavar="F",
        help="instead of --cells: fraction of the embryo volume filled by nuclei at t = 0",
    )
    parser.add_argument("--seed", type=int, metavar="S", help="random seed (default: 0)")
    parser.add_argument("--z-ratio", type=float, metavar="R", help="z spacing / xy spacing")
    parser.add_argument(
        "--noise", type=float, metavar="K", help="noise scale: 0 none, 1 nominal, 3 very noisy"
    )
    parser.add_argument("--speed", type=float, metavar="V", help="rms step in pixels per frame")
    parser.add_argument(
        "--division-rate",
        type=float,
        metavar="P",
        help="probability per cell and frame of dividing after the minimum cycle",
    )
    parser.add_argument(
        "--labels", action="store_true", help="also write track-id masks to labels/"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty OUT folder"
    )
    parser.set_defaults(run=run)


def config_from_args(args: argparse.Namespace) -> SyntheticConfig:
    """The preset with the command-line overrides; raises :class:`InputError` on bad values."""
    from napari_cellect.data.synthetic import cells_for_density

    changes: dict[str, Any] = {}
    if args.frames is not None:
        if args.frames < 1:
            raise InputError(
                f"--frames must be a positive number of time points, found {args.frames}"
            )
        changes["frames"] = args.frames
    if args.shape is not None:
        if len(args.shape) != 3:
            raise InputError(
                f"--shape needs three sizes Z Y X, found {len(args.shape)} value(s): "
                f"{' '.join(map(str, args.shape))}"
            )
        if min(args.shape) < 1:
            sizes = " ".join(map(str, args.shape))
            raise InputError(f"--shape sizes must be positive, found {sizes}")
        changes["shape"] = tuple(args.shape)
    if args.cells is not None and args.density is not None:
        raise InputError("give --cells or --density, not both")
    if args.cells is not None:
        if args.cells < 1:
            raise InputError(f"--cells must be a positive number of nuclei, found {args.cells}")
        changes["n_cells"] = args.cells
    if args.z_ratio is not None and args.z_ratio <= 0:
        raise InputError(f"--z-ratio must be positive, found {args.z_ratio}")
    for name in ("seed", "z_ratio", "noise", "speed", "division_rate"):  # same names as the config
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    config = dataclasses.replace(PRESETS[args.preset], **changes)
    if args.density is not None:
        n_cells = max(1, cells_for_density(config, args.density))
        config = dataclasses.replace(config, n_cells=n_cells)
    return config


def run(args: argparse.Namespace) -> int:
    from napari_cellect.data.synthetic import iter_write_synthetic
    from napari_cellect.progress import run_to_end

    config = config_from_args(args)
    out: Path = args.out
    steps = iter_write_synthetic(out, config, overwrite=args.overwrite, labels=args.labels)
    with tqdm(total=config.frames, desc="synth", unit="frame", disable=None) as bar:
        paths = run_to_end(steps, lambda _step: bar.update(1))
    summary = paths.summary
    z, y, x = config.shape
    print(
        f"{out}: {config.frames} frames of {z}x{y}x{x} (z ratio {config.z_ratio:g}), "
        f"{summary['nodes']} nodes in {summary.get('tracks', 0)} tracks, "
        f"{summary['divisions']} divisions (preset {args.preset}, seed {config.seed})"
    )
    return 0
