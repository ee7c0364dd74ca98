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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``cellect`` parser with every sub-command, or only ``command`` when it names one: a
    sub-command's module is imported to add its options, and some import torch."""
    parser = argparse.ArgumentParser(
        prog="cellect",
        description="CELLECT cell tracking for 3D+t microscopy: detect, link, evaluate, train.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    names = [COMMANDS[command]] if command in COMMANDS else COMMANDS.values()
    for module_name in names:
        try:
            module = importlib.import_module(f"napari_cellect._cli.{module_name}")
        except ModuleNotFoundError as error:
            if error.name != f"napari_cellect._cli.{module_name}":
                raise
            continue  # a command not built yet
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
