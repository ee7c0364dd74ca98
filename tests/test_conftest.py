"""The shared test settings of tests/conftest.py take effect."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

GUI_AND_CORE_TESTS = """
def test_core():
    assert 1 + 1 == 2


def test_gui(qtbot):
    from qtpy.QtWidgets import QLabel

    qtbot.addWidget(QLabel("hello"))
"""


def test_torch_runs_on_one_thread():
    assert torch.get_num_threads() == 1


def run_without_a_display(folder: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """pytest on ``folder`` as on a fresh machine: no screen, no Xvfb (pytest-xvfb off)."""
    shutil.copy(Path(__file__).with_name("conftest.py"), folder / "conftest.py")
    (folder / "test_mixed.py").write_text(GUI_AND_CORE_TESTS)
    unset = ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "CELLECT_REQUIRE_GUI")  # CI sets it
    clean = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:xvfb",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rs",
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=folder,
        env={**clean, **env},
    )


def test_without_a_display_gui_tests_are_skipped_with_one_line_not_aborted(tmp_path):
    """Qt aborts the whole process when it finds no display; the suite must finish instead,
    saying why the GUI tests were skipped and how to run them."""
    run = run_without_a_display(tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "Fatal Python error" not in out
    assert "SKIPPING 1 GUI tests: Qt cannot open a display" in out
    assert "bash scripts/install-gui-deps.sh" in out
    assert "1 passed, 1 skipped" in out


def test_ci_turns_the_skip_into_a_failure(tmp_path):
    run = run_without_a_display(tmp_path, CELLECT_REQUIRE_GUI="1")
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "1 passed" not in out
    assert "CELLECT_REQUIRE_GUI is set, so GUI tests may not be skipped" in out
