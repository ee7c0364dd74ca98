"""The ``cellect`` command line.

Each sub-command lives in its own module under ``napari_cellect._cli`` and exposes
``add_parser(subparsers)`` and ``run(args) -> int``. This module wires them together, configures
logging (the only place that does) and turns a :class:`CellectError` into one line on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from napari_cellect.errors import CellectError

#: sub-command name -> (module under napari_cellect._cli, one-line summary for ``cellect --help``)
COMMANDS = {
    "synth": ("synth", "write a synthetic 3D+t nuclei time series with ground truth"),
    "evaluate": (
        "evaluate",
        "score tracks against ground truth (detection, links, divisions, CTC TRA)",
    ),
    "track": ("track", "track cells in a time series with a model bundle"),
    "train": ("train", "train a model bundle (U-Net + scorers) from point annotations"),
    "finetune": ("finetune", "fine-tune the link and merge scorers on corrected tracks"),
    "import-weights": (
        "import_weights",
        "convert original CELLECT weights (U-Net, EX, EN) into a model bundle",
    ),
    "demo": ("demo", "track a built-in synthetic embryo and show the result"),
}


def command_help(name: str) -> str:
    """The one-line summary of a sub-command (its modules pass it to ``add_parser``)."""
    return COMMANDS[name][1]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``cellect`` parser. When ``command`` names a sub-command, only its module is imported
    (to add its options; some import torch); otherwise (top-level help, a typo) every
    sub-command is listed from :data:`COMMANDS` without importing any."""
    parser = argparse.ArgumentParser(
        prog="cellect",
        description="CELLECT cell tracking for 3D+t microscopy: detect, link, evaluate, train.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if command not in COMMANDS:
        for name, (_, summary) in COMMANDS.items():
            sub.add_parser(name, help=summary)
        return parser
    module = importlib.import_module(f"napari_cellect._cli.{COMMANDS[command][0]}")
    module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_word(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s: %(message)s",
    )
    try:
        return int(args.run(args) or 0)
    except CellectError as error:
        print(f"cellect {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cellect {args.command}: interrupted", file=sys.stderr)
        return 130


def _command_word(argv: Sequence[str]) -> str | None:
    """The sub-command named on the command line: the first word that is no option (the
    top-level options take no value); None when the top-level help comes first."""
    for word in argv:
        if word in ("-h", "--help"):
            return None
        if not word.startswith("-"):
            return word
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
