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

#: sub-command name -> module under napari_cellect._cli
COMMANDS = {
    "synth": "synth",
    "evaluate": "evaluate",
    "track": "track",
    "train": "train",
    "finetune": "finetune",
    "import-weights": "import_weights",
    "demo": "demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellect",
        description="CELLECT cell tracking for 3D+t microscopy: detect, link, evaluate, train.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(f"napari_cellect._cli.{module_name}")
        except ModuleNotFoundError as error:
            if error.name != f"napari_cellect._cli.{module_name}":
                raise
            continue  # a command not built yet
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
