"""examples/correction_loop.py runs the whole loop with Qt and napari unavailable."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt")

SITECUSTOMIZE = f'''
import sys

class _NoGui:
    """A meta-path finder that makes the GUI toolkits unimportable."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is blocked for this test")
        return None

sys.meta_path.insert(0, _NoGui())
'''


def test_correction_loop_runs_without_qt(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    probe = subprocess.run([sys.executable, "-c", "import qtpy"], env=env, capture_output=True)
    assert probe.returncode != 0  # the block works
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "correction_loop.py"),
            "--out",
            str(out),
            "--frames",
            "5",
            "--size",
            "12",
            "64",
            "64",
            "--cells",
            "8",
            "--corrected",
            "3",
            "--epochs",
            "3",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "re-linked:" in done.stdout and "scores: link F1" in done.stdout
    assert (out / "tracks.csv").is_file() and (out / "example_RES" / "res_track.txt").is_file()
    assert (out / "tuned.pt").is_file()
    # the guard's figures, and its choice: a tuned model kept, or nothing better found
    assert "checked on" in done.stdout and "link errors on your corrections" in done.stdout
    assert ("+ft1" in done.stdout) != ("the guard adopted nothing" in done.stdout)
