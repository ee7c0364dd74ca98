"""``cellect import-weights``: original CELLECT checkpoints -> one napari-cellect model bundle."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from napari_cellect.cli import command_help
from napari_cellect.errors import InputError

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "import-weights",
        help=command_help("import-weights"),
        description=(
            "Convert the three original CELLECT checkpoints into one napari-cellect model bundle. "
            "Conv kernels are permuted from the original (row, col, z) axis order to ours "
            "(z, y, x); the bundle uses the original preprocessing (log1p with a +1900 offset) "
            "and thresholds."
        ),
    )
    parser.add_argument(
        "--unet",
        required=True,
        type=Path,
        metavar="U.pth",
        help="original U-Net weights (U-ext+-*.pth)",
    )
    parser.add_argument(
        "--link",
        required=True,
        type=Path,
        metavar="EX.pth",
        help="original inter-frame scorer weights (EX+-*.pth)",
    )
    parser.add_argument(
        "--merge",
        required=True,
        type=Path,
        metavar="EN.pth",
        help="original intra-frame scorer weights (EN+-*.pth)",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="BUNDLE.pt",
        help="model bundle to write",
    )
    parser.add_argument(
        "--name", default="cellect-original", help="model name stored in the bundle"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from napari_cellect.model.original import CLI_NAMES, import_original  # torch when needed

    output: Path = args.output
    if output.exists() and not args.force:
        raise InputError("the output file exists already; pass --force to overwrite it", output)
    bundle = import_original(args.unet, args.link, args.merge, name=args.name, names=CLI_NAMES)
    bundle.save(output)
    logger.info("wrote %s (%d parameters)", output, bundle.n_parameters())
    return 0
