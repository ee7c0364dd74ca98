"""Crash safety: a process killed (SIGKILL) in the middle of journal writes or of an export, at
random moments, and cancelled runs (Ctrl+C) of tracking, training and fine-tuning.

After each kill the reopened journal holds every edit the writer had reported done (each is
fsynced before ``History.do`` returns) and the exported file is one complete version; a
cancelled run leaves the earlier results and models byte for byte as they were.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_cellect.data.annotations import read_csv, read_geff
from napari_cellect.data.atomic import TEMP_PREFIX
from napari_cellect.data.export import write_csv, write_geff
from napari_cellect.track.graph import TrackGraph
from napari_cellect.track.journal import restore

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")

#: kills per test; each starts a fresh Python process (about 0.5 s). More for a stress run:
#: CELLECT_KILLS=50 pytest tests/test_crash_safety.py -k killed
KILLS = int(os.environ.get("CELLECT_KILLS", "6"))

JOURNAL_WRITER = """
import sys
from napari_cellect.track import edits
from napari_cellect.track.edits import History
from napari_cellect.track.graph import TrackGraph
from napari_cellect.track.journal import Journal

history = History(TrackGraph())
journal = Journal(sys.argv[1])
journal.start(history)
print("ready", flush=True)
for i in range(1_000_000):
    history.do(edits.add_node, i % 5, (0.0, float(i), 1.0))
    if i % 4 == 3:  # undo and redo are journalled too
        history.undo()
        history.redo()
    print(i + 1, flush=True)
"""

EXPORT_WRITER = """
import sys
import numpy as np
from napari_cellect.data.export import write_csv, write_geff
from napari_cellect.track.graph import TrackGraph

write = {"csv": write_csv, "geff": write_geff}[sys.argv[3]]
n = int(sys.argv[2])
print("ready", flush=True)
for version in range(1, 1_000_000):
    graph = TrackGraph.from_arrays(id=np.arange(n), t=np.arange(n) % 7, z=np.zeros(n),
                                   y=np.full(n, float(version)), x=np.arange(n, dtype=float),
                                   parent_id=np.full(n, -1))
    write(graph, sys.argv[1])
    print(version, flush=True)
"""


def run_and_kill(script: str, args: list[str], rng: random.Random, most: float) -> int:
    """Start ``script``, wait for its "ready", SIGKILL it after a random time up to ``most``
    seconds; the last number it printed (what it had finished), 0 for none."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        first = child.stdout.readline()
        assert first.strip() == "ready", first + child.stderr.read()
        time.sleep(rng.uniform(0.0, most))
    finally:
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, err
    numbers = [int(line) for line in out.split()]
    return numbers[-1] if numbers else 0


def test_killed_journal_writes_keep_every_edit_reported_done(tmp_path):
    rng = random.Random(15)
    for kill in range(KILLS):
        folder = tmp_path / f"session{kill}.cellect-journal"
        done = run_and_kill(JOURNAL_WRITER, [str(folder)], rng, most=0.6)
        history = restore(folder)
        graph = history.graph
        # every reported edit is there; at most the one in flight besides
        assert done <= len(graph) <= done + 1, (kill, done, len(graph))
        order = np.argsort(graph.ids)
        assert (np.diff(graph.ids[order]) == 1).all()  # one node per edit, in order
        np.testing.assert_array_equal(graph["y"][order], np.arange(len(graph), dtype=float))
        np.testing.assert_array_equal(graph["t"][order], np.arange(len(graph)) % 5)
        # the undo history came back too (as long as History keeps it); killed between an undo
        # and its redo, the last edit waits on the redo stack
        undone = len(history.undone)
        assert undone <= 1
        assert len(history.done) + undone == min(len(graph) + undone, history.max_length)


@pytest.mark.parametrize(("fmt", "n_nodes"), [("csv", 50), ("csv", 20_000), ("geff", 500)])
def test_killed_exports_leave_one_complete_version(tmp_path, fmt, n_nodes):
    """A CSV is replaced by one rename; a GEFF folder by one atomic swap (Linux)."""
    rng = random.Random(n_nodes)
    path = tmp_path / f"tracks é.{fmt}"
    read, write = {"csv": (read_csv, write_csv), "geff": (read_geff, write_geff)}[fmt]
    on_disk = None  # the version the file holds: each writer starts again at version 1
    for kill in range(KILLS):
        done = run_and_kill(EXPORT_WRITER, [str(path), str(n_nodes), fmt], rng, most=1.0)
        if not path.exists():
            assert on_disk is None and done == 0  # killed before its first write finished
            continue
        graph = read(path)
        assert len(graph) == n_nodes
        versions = np.unique(graph["y"])
        expected = {done, done + 1} if done else {on_disk, 1}
        assert len(versions) == 1 and versions[0] in expected, (kill, done, versions)
        on_disk = float(versions[0])
        leftovers = [p.name for p in tmp_path.iterdir() if p.name != path.name]
        assert all(name.startswith(TEMP_PREFIX) for name in leftovers), leftovers
    # the next write clears what killed writes left behind
    write(TrackGraph.from_arrays(id=[0], t=[0], z=[0.0], y=[0.0], x=[0.0], parent_id=[-1]), path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


# ----------------------------------------------------------------------------- cancelled runs


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    import dataclasses

    from napari_cellect.data.synthetic import PRESETS, write_synthetic

    config = dataclasses.replace(
        PRESETS["default"],
        frames=3,
        shape=(4, 32, 32),
        n_cells=4,
        radius_range=(4.0, 5.0),
        z_ratio=2.0,
        seed=3,
    )
    return write_synthetic(tmp_path_factory.mktemp("synth") / "data", config)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from napari_cellect.model.bundle import ModelBundle

    return ModelBundle.random(preset="small", seed=0).save(
        tmp_path_factory.mktemp("model") / "model.pt"
    )


def interrupt_after(monkeypatch, module, name: str, calls: int) -> None:
    """Make ``module.name`` raise KeyboardInterrupt (Ctrl+C) on its ``calls``-th call."""
    original = getattr(module, name)
    seen = {"n": 0}

    def wrapped(*args, **kwargs):
        seen["n"] += 1
        if seen["n"] >= calls:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_cancelled_tracking_leaves_earlier_results_untouched(
    dataset, weights, tmp_path, monkeypatch, capsys
):
    from napari_cellect.cli import main
    from napari_cellect.infer import predict

    out, cache = tmp_path / "tracks.csv", tmp_path / "cache"
    argv = [
        "track",
        str(dataset.root / "images"),
        "-o",
        str(out),
        "--weights",
        str(weights),
        "--device",
        "cpu",
        "--cache",
        str(cache),
        "--ctc",
        str(tmp_path / "ctc"),
    ]
    assert main(argv) == 0
    before = snapshot(tmp_path)
    for stale in cache.glob("t*.npz"):  # the next run must predict again, then is cancelled
        stale.unlink()
    interrupt_after(monkeypatch, predict, "predict_frame", 2)
    assert main(argv) == 130
    assert "interrupted" in capsys.readouterr().err
    after = snapshot(tmp_path)
    for name, content in before.items():
        if not name.startswith("cache"):
            assert after[name] == content, name
    assert not [name for name in after if TEMP_PREFIX in name]


def test_cancelled_training_leaves_the_model_and_checkpoint_untouched(
    dataset, weights, tmp_path, monkeypatch
):
    from napari_cellect.cli import main
    from napari_cellect.train import fit

    out = tmp_path / "model.pt"
    argv = [
        "train",
        str(dataset.root / "images"),
        "--annotations",
        str(dataset.tracks),
        "-o",
        str(out),
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "1",
        "--crop",
        "4",
        "32",
        "32",
        "--device",
        "cpu",
        "--val-frames",
        "0",
        "--calibration-frames",
        "0",
    ]
    assert main(argv) == 0
    before = snapshot(tmp_path)
    interrupt_after(monkeypatch, fit.Trainer, "train_step", 2)
    assert main([*argv, "--seed", "7"]) == 130
    assert snapshot(tmp_path) == before


def test_cancelled_finetuning_leaves_the_models_untouched(dataset, weights, tmp_path, monkeypatch):
    import pandas as pd

    from napari_cellect.cli import main
    from napari_cellect.train import finetune as finetune_module

    tracks = tmp_path / "tracks.csv"
    df = pd.read_csv(dataset.tracks)
    df["approved"] = 1
    df.to_csv(tracks, index=False)
    previous = tmp_path / "tuned.pt"
    previous.write_bytes(weights.read_bytes())
    before = snapshot(tmp_path)
    model_before = weights.read_bytes()
    interrupt_after(monkeypatch, finetune_module, "_train_phase", 1)
    assert (
        main(
            [
                "finetune",
                "--tracks",
                str(tracks),
                "--images",
                str(dataset.root / "images"),
                "--weights",
                str(weights),
                "-o",
                str(previous),
                "--device",
                "cpu",
                "--epochs",
                "2",
                "--cache",
                str(tmp_path / "cache"),
            ]
        )
        == 130
    )
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("cache")} == before
    assert weights.read_bytes() == model_before
