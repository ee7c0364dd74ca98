"""The core never imports Qt or napari; data/ and track/ never import torch."""

import pkgutil
import subprocess
import sys

import napari_cellect

GUI = ("napari", "qtpy", "PyQt6", "PyQt5", "PySide6", "magicgui", "superqt", "vispy")


def _core_modules(prefixes: tuple[str, ...] = ()) -> list[str]:
    names = [
        m.name
        for m in pkgutil.walk_packages(napari_cellect.__path__, "napari_cellect.")
        if "._napari" not in m.name
    ]
    return [n for n in names if not prefixes or n.startswith(prefixes)]


def _imported_after(modules: list[str], watched: tuple[str, ...]) -> list[str]:
    code = (
        "import sys, importlib\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in {watched!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return eval(out.stdout.strip())  # a printed list of module names


def test_core_imports_no_gui_toolkit():
    modules = _core_modules()
    assert len(modules) > 30
    assert _imported_after(modules, GUI) == []


def test_data_and_track_import_no_torch():
    modules = _core_modules(("napari_cellect.data", "napari_cellect.track"))
    assert any(m.startswith("napari_cellect.track.") for m in modules)
    assert _imported_after(modules, ("torch",)) == []


def test_the_session_is_core():
    """The interactive loop (session, corrections, jobs) runs without napari or Qt."""
    modules = _core_modules(("napari_cellect.session",))
    assert {"napari_cellect.session.tracking_session", "napari_cellect.session.jobs"} <= set(
        modules
    )
    assert _imported_after(modules, GUI) == []


def test_matching_and_relinking_import_no_torch():
    modules = ["napari_cellect.track.matching", "napari_cellect.track.relink"]
    assert _imported_after(modules, ("torch",)) == []


def test_a_headless_install_requires_no_gui_toolkit():
    """``pip install napari-cellect`` (no extras) brings no napari and no Qt; the plugin's
    packages come with the ``napari`` extra, which ``all`` includes."""
    from importlib.metadata import requires

    requirements = requires("napari-cellect") or []
    base = [r for r in requirements if "extra ==" not in r]
    plugin = [r for r in requirements if 'extra == "napari"' in r]
    assert base and not [r for r in base if r.split(">")[0].split("[")[0].strip() in GUI]
    assert {r.split(">")[0].strip() for r in plugin} >= {"napari", "magicgui", "qtpy", "superqt"}
    assert any("napari-cellect[napari]" in r and 'extra == "all"' in r for r in requirements)
