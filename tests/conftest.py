"""Settings shared by every test."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

#: fixtures that open Qt widgets: a test using one needs a display
GUI_FIXTURES = frozenset({"qtbot", "qapp", "make_napari_viewer", "make_napari_viewer_proxy"})
#: set (to anything) to fail, rather than skip, GUI tests when no display works (CI does)
REQUIRE_GUI_ENV = "CELLECT_REQUIRE_GUI"
_QT_PROBE = "from qtpy.QtWidgets import QApplication; QApplication([])"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Run torch on one thread. Tiny tensors gain nothing from threads, and on a busy 2-core
    machine every OpenMP barrier waits for a descheduled thread: a 16x32x3 forward pass takes 3 s
    with 2 threads, 30 ms with 1.

    torch is not imported here, so torch-free tests (``data/``, ``track/``) never pay for it; it
    is configured as soon as a test module (or an earlier test) has imported it.
    """
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def is_gui_test(item: pytest.Item) -> bool:
    return item.get_closest_marker("gui") is not None or bool(
        GUI_FIXTURES & set(getattr(item, "fixturenames", ()))
    )


def qt_display_problem() -> str | None:
    """Why Qt cannot open a window here, or None when it can.

    Qt aborts the whole process ("Fatal Python error: Aborted") when it finds no display, so it
    is tried in a child process, after pytest-xvfb has started its virtual display (if any).
    """
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _QT_PROBE],
            capture_output=True,
            text=True,
            timeout=120,
            env=os.environ.copy(),
        )
    except subprocess.TimeoutExpired:
        return "Qt did not start within 120 s"
    if probe.returncode == 0:
        return None
    lines = [line for line in probe.stderr.splitlines() if line.strip()]
    detail = next(
        (line for line in lines if "qt.qpa" in line or "display" in line.lower()),
        lines[-1] if lines else f"exit code {probe.returncode}",
    )
    return f"Qt cannot open a display ({detail.strip()[:160]})"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the GUI tests, with one line saying why and how to run them, where Qt cannot open a
    display (no Xvfb and no screen): without this, Qt would abort the whole run."""
    gui = [item for item in items if is_gui_test(item)]
    if not gui:
        return
    problem = qt_display_problem()
    if problem is None:
        return
    if os.environ.get(REQUIRE_GUI_ENV):
        raise pytest.UsageError(
            f"{problem}; {REQUIRE_GUI_ENV} is set, so GUI tests may not be skipped"
        )
    reason = (
        f"{problem}. To run the GUI tests, install Xvfb and Qt's X libraries "
        "(as root: bash scripts/install-gui-deps.sh) or run where a screen is attached"
    )
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"SKIPPING {len(gui)} GUI tests: {reason}", yellow=True, bold=True)
    skip = pytest.mark.skip(reason=reason)
    for item in gui:
        item.add_marker(skip)
