"""How long an edit takes to show in napari on a large tracking result.

Builds a synthetic TrackGraph (default: 480 lineages x 100 frames with divisions, 51,700
nodes), shows it in a real napari viewer through the plugin's controller (centres Points layer,
Tracks layer, lineage view), then times each editor action from the key press to the repainted
canvas, and its undo. Prints a table; the target is < 100 ms per edit.

    xvfb-run -a python benchmarks/bench_edit_refresh.py [--lineages 480] [--frames 100]

Columns: ``edit`` = graph edit plus layer refresh (what the key handler does), ``shown`` = that
plus Qt event processing and a synchronous repaint of the canvas and the lineage view. The
layer-list thumbnails are redrawn ~0.25 s after an edit, not during it; the benchmark runs that
redraw between the timed runs and reports its duration on its own line. On a machine shared
with other jobs, ``--clock cpu --statistic min`` gives the steadiest numbers.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

#: functions listed per profile (``--profile``)
PROFILE_LINES = 45


@contextmanager
def _profiled(profiles: dict[str, cProfile.Profile], name: str, enabled: bool) -> Iterator[None]:
    """Accumulate the block's calls in ``profiles[name]`` when ``enabled``."""
    if not enabled:
        yield
        return
    profile = profiles.setdefault(name, cProfile.Profile())
    profile.enable()
    try:
        yield
    finally:
        profile.disable()


def synthetic_graph(lineages: int, frames: int, division_every: int, seed: int = 0):
    """Random-walk lineages; every ``division_every`` frames some branches divide."""
    from napari_cellect.track.graph import TrackGraph

    rng = np.random.default_rng(seed)
    ids, ts, pos, parents = [], [], [], []
    next_id = 1
    alive_ids = np.arange(next_id, next_id + lineages)
    next_id += lineages
    alive_pos = rng.uniform(0, 512, size=(lineages, 3)) * np.array([0.1, 1, 1])
    ids.append(alive_ids)
    ts.append(np.zeros(lineages, np.int64))
    pos.append(alive_pos)
    parents.append(np.full(lineages, -1))
    for t in range(1, frames):
        n = len(alive_ids)
        divide = np.zeros(n, bool)
        if t % division_every == 0:
            divide[rng.choice(n, size=max(n // 20, 1), replace=False)] = True
        parent = np.concatenate([alive_ids, alive_ids[divide]])
        step = rng.normal(0, 1.5, (len(parent), 3))
        new_pos = np.concatenate([alive_pos, alive_pos[divide]]) + step
        new_ids = np.arange(next_id, next_id + len(parent))
        next_id += len(parent)
        ids.append(new_ids)
        ts.append(np.full(len(parent), t))
        pos.append(new_pos)
        parents.append(parent)
        alive_ids, alive_pos = new_ids, new_pos
    p = np.concatenate(pos)
    return TrackGraph.from_arrays(
        id=np.concatenate(ids),
        t=np.concatenate(ts),
        z=p[:, 0],
        y=p[:, 1],
        x=p[:, 2],
        parent_id=np.concatenate(parents),
        radius=np.full(len(p), 4.0),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lineages", type=int, default=480)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--division-every", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--statistic",
        choices=("median", "min"),
        default="median",
        help="how the runs of an action are summarised (min is the more robust "
        "when other jobs share the CPU)",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="time the actions by the wall clock or by the CPU time of this "
        "process, all threads (close to the wall time of a quiet machine "
        "when other jobs share the CPU)",
    )
    parser.add_argument("--no-lineage", action="store_true", help="do not dock the lineage view")
    parser.add_argument(
        "--profile",
        metavar="ACTION",
        default=None,
        help="profile the actions whose name contains ACTION (edit, then undo) "
        "with cProfile and print the top functions by cumulative time",
    )
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    import napari_cellect.session.tracking_session as session_module
    from napari_cellect._napari._controller import controller_for
    from napari_cellect._napari._lineage_widget import LineageWidget
    from napari_cellect.session import Geometry, TrackingSession
    from napari_cellect.track import edits

    journal_root = Path(tempfile.mkdtemp(prefix="bench-journal-"))
    session_module.default_journal_root = lambda: journal_root  # keep the user's folder clean

    t0 = time.perf_counter()
    graph = synthetic_graph(args.lineages, args.frames, args.division_every)
    print(
        f"graph: {len(graph)} nodes, {len(np.unique(graph.track_ids()))} tracks, "
        f"{len(graph.divisions())} divisions ({time.perf_counter() - t0:.2f} s)"
    )

    viewer = napari.Viewer(show=True)
    from qtpy.QtGui import QGuiApplication

    print(
        f"machine: {os.cpu_count()} CPU cores, Qt platform {QGuiApplication.platformName()!r} "
        "(under Xvfb the canvas is rendered in software by Mesa llvmpipe)"
    )
    controller = controller_for(viewer)
    assert controller is not None
    session = TrackingSession.from_graph(graph, name="bench", geometry=Geometry(3, (5.0, 1.0, 1.0)))
    t0 = time.perf_counter()
    controller.add_session(session)
    lineage = None
    if not args.no_lineage:
        lineage = LineageWidget(viewer, controller)
        viewer.window.add_dock_widget(lineage, name="lineage")
    QApplication.processEvents()
    print(f"layers + lineage view built in {time.perf_counter() - t0:.2f} s")
    session.ensure_journal()  # the first edit would write the journal's base; not what we time
    canvas = viewer.window._qt_viewer.canvas.native

    def show() -> None:
        QApplication.processEvents()
        canvas.repaint()
        if lineage is not None:
            lineage.canvas.repaint()

    summary = statistics.median if args.statistic == "median" else min
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    rng = np.random.default_rng(1)
    mid = graph.frame(args.frames // 2)

    def pick(rows: np.ndarray) -> int:
        return int(graph.ids[rows[rng.integers(len(rows))]])

    def one_child_node() -> int:
        rows = mid[graph.n_children()[mid] == 1]
        rows = rows[graph["parent_id"][rows] >= 0]
        return pick(rows)

    # each action: a setup (not timed) returning the edit to time
    def on_one(method: str) -> Callable[[], Callable[[], None]]:
        def setup() -> Callable[[], None]:
            controller.select([one_child_node()])
            return getattr(controller.edits, method)

        return setup

    def setup_link() -> Callable[[], None]:
        node = one_child_node()
        child = int(graph.children_of(node)[0])
        controller.do(edits.break_link, child)
        controller.select([node, child])
        return controller.edits.link_selected

    def setup_swap() -> Callable[[], None]:
        rows = mid[graph["parent_id"][mid] >= 0]
        a, b = pick(rows), pick(rows)
        while graph.parent_of(a) == graph.parent_of(b):
            b = pick(rows)
        controller.select([a, b])
        return controller.edits.swap_selected

    def setup_add() -> Callable[[], None]:
        controller.select([])
        world = np.asarray(viewer.dims.point, dtype=float)
        return lambda: controller.edits.add_at_world(world)

    actions: list[tuple[str, Callable[[], Callable[[], None]]]] = [
        ("approve link (Y)", on_one("approve_selected")),
        ("approve track (Shift+Y)", on_one("approve_track_selected")),
        ("mark division (D)", on_one("toggle_division")),
        ("break link (B)", on_one("break_selected")),
        ("link (L)", setup_link),
        ("swap parents (S)", setup_swap),
        ("delete node (Delete)", on_one("delete_selected")),
        ("add node (A)", setup_add),
    ]

    def settle() -> float:
        """Run the work an edit leaves for later (the layer-list thumbnails, redrawn ~0.25 s
        after an edit) now, between timed runs, so it cannot land in the next one; returns how
        long redrawing them took (ms; NaN when none was pending)."""
        bound = controller.bound
        thumbnails = getattr(bound.sync, "thumbnails", None) if bound and bound.sync else None
        ms = float("nan")
        if thumbnails is not None and thumbnails.pending:
            t0 = clock()
            thumbnails.flush()
            ms = (clock() - t0) * 1e3
        show()
        return ms

    profiles: dict[str, cProfile.Profile] = {}
    rows = []
    thumbnail_ms: list[float] = []
    for name, setup in actions:
        edit_ms, shown_ms, undo_ms = [], [], []
        profiling = args.profile is not None and args.profile.lower() in name.lower()
        for _ in range(args.repeats):
            action = setup()
            settle()
            with _profiled(profiles, f"{name}: edit + shown", profiling):
                t0 = clock()
                action()
                t1 = clock()
                show()
                t2 = clock()
            thumbnail_ms.append(settle())
            with _profiled(profiles, f"{name}: undo + shown", profiling):
                t3 = clock()
                controller.undo()
                show()
                t4 = clock()
            thumbnail_ms.append(settle())
            edit_ms.append((t1 - t0) * 1e3)
            shown_ms.append((t2 - t0) * 1e3)
            undo_ms.append((t4 - t3) * 1e3)
        rows.append((name, summary(edit_ms), summary(shown_ms), summary(undo_ms)))

    extra = []
    redrawn = [ms for ms in thumbnail_ms if ms == ms]  # NaN: nothing was pending
    if redrawn:
        extra.append(("thumbnails, redrawn later", summary(redrawn)))
    if lineage is not None:
        times = []
        for _ in range(args.repeats):
            t0 = clock()
            lineage._rebuild()
            times.append((clock() - t0) * 1e3)
        extra.append(("lineage layout + paths", summary(times)))
        times = []
        lineage.canvas.fit()
        for k in range(args.repeats):
            lineage.canvas.centre_on(lineage.canvas.layout_.width / 2 + k, args.frames / 2)
            t0 = clock()
            lineage.canvas.grab()  # renders the widget (paintEvent) into a pixmap
            times.append((clock() - t0) * 1e3)
        extra.append(("lineage paint (fit view)", summary(times)))

    print(f"\n{len(graph)} nodes, {args.statistic} of {args.repeats} runs (ms, {args.clock} clock)")
    print(f"{'action':<26}{'edit':>10}{'shown':>10}{'undo shown':>12}")
    for name, e, s, u in rows:
        print(f"{name:<26}{e:>10.1f}{s:>10.1f}{u:>12.1f}")
    for name, value in extra:
        print(f"{name:<26}{value:>10.1f}")
    for name, profile in profiles.items():
        print(f"\n=== profile of {name} ({args.repeats} runs) ===")
        pstats.Stats(profile).sort_stats("cumulative").print_stats(PROFILE_LINES)
    viewer.close()


if __name__ == "__main__":
    main()
