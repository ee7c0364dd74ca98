"""The menu names the README tells a person to click are the ones napari shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.gui

README = Path(__file__).resolve().parents[2] / "README.md"
#: a menu path as the README writes it: `Plugins > CELLECT tracking > Track cells`
MENU_PATH = re.compile(r"`((?:File|Plugins) > [^`]+)`")
#: a tool named in bold at the start of a bullet of the README's napari section
TOOL = re.compile(r"^- \*\*([^*]+)\*\*", re.MULTILINE)


def menu_paths(menu, prefix: list[str]) -> set[str]:
    """Every menu and item under ``menu`` as 'File > Open Sample > ...'."""
    paths = set()
    for action in menu.actions():
        text = action.text().replace("&", "")
        if not text:
            continue
        path = [*prefix, text]
        paths.add(" > ".join(path))
        if action.menu() is not None:
            paths |= menu_paths(action.menu(), path)
    return paths


def test_the_readme_menu_names_are_napari_menu_entries(make_napari_viewer):
    viewer = make_napari_viewer()
    bar = viewer.window._qt_window.menuBar()
    shown = menu_paths(bar, [])
    readme = README.read_text(encoding="utf-8")
    napari_section = readme.split("## In napari", 1)[1].split("\n## ", 1)[0]
    written = set(MENU_PATH.findall(readme))
    assert "Plugins > CELLECT tracking > Track cells" in written
    assert written <= shown, sorted(written - shown)
    tools = set(TOOL.findall(napari_section)) - {"Open", "All five tools"}
    assert len(tools) == 5, tools
    assert {f"Plugins > CELLECT tracking > {tool}" for tool in tools} <= shown
