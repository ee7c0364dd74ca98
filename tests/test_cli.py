"""Tests of the ``cellect`` command wiring (``napari_cellect.cli``); each sub-command has its own
tests next to the code it drives."""

from __future__ import annotations

import subprocess
import sys

import pytest

from napari_cellect.cli import COMMANDS, build_parser, main

#: sub-commands whose parser must build without heavy imports (train and finetune still import
#: torch at module level)
LIGHT = ("synth", "evaluate", "track", "demo", "import-weights")


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_a_named_command_builds_only_its_own_parser(capsys):
    parser = build_parser("synth")
    assert parser.parse_args(["synth", "out"]).command == "synth"
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "a", "b"])  # not added
    with pytest.raises(SystemExit) as done:
        main(["-v", "synth", "--help"])
    assert done.value.code == 0
    assert "--division-rate" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["bogus"])
    assert done.value.code == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def test_light_command_parsers_import_nothing_heavy():
    code = (
        "import sys\n"
        "from napari_cellect.cli import build_parser\n"
        f"for name in {LIGHT!r}:\n"
        "    build_parser(name).format_help()\n"
        "heavy = {'torch', 'napari', 'pandas', 'scipy', 'dask'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
