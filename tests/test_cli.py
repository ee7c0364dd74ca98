"""Tests of the ``cellect`` command wiring (``napari_cellect.cli``); each sub-command has its own
tests next to the code it drives."""

from __future__ import annotations

import importlib.util
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
    out = " ".join(capsys.readouterr().out.split())
    for name, (_, summary) in COMMANDS.items():
        assert name in out and summary in out


def test_top_level_help_imports_no_command():
    code = (
        "import sys\n"
        "from napari_cellect.cli import build_parser\n"
        "build_parser(None).format_help()\n"
        "loaded = [m for m in sys.modules if m.startswith('napari_cellect._cli.')]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_each_command_module_uses_its_summary():
    for name in COMMANDS:
        parser = build_parser(name)
        action = next(a for a in parser._actions if a.dest == "command")
        assert [c.help for c in action._choices_actions] == [COMMANDS[name][1]]


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


def test_demo_without_napari_says_so_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "napari", None)  # import napari -> ImportError
    find_spec = importlib.util.find_spec  # only napari goes missing
    monkeypatch.setattr(
        "importlib.util.find_spec",
        lambda name, *a: None if name == "napari" else find_spec(name, *a),
    )
    assert main(["demo", str(tmp_path / "demo")]) != 0
    err = capsys.readouterr().err
    assert "napari is not installed" in err and "--headless" in err
    assert not (tmp_path / "demo").exists()  # nothing generated or tracked first
