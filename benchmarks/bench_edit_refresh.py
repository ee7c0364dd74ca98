"""How long an edit takes to show in napari on a large tracking result.

Builds a synthetic TrackGraph (default: 500 lineages x 100 frames with divisions, about 50,000
nodes), shows it in a real napari viewer through the plugin's controller (centres Points layer,
Tracks layer, lineage view), then times each editor action from the key press to the repainted
canvas, and its undo. Prints a table; the target is < 100 ms per edit.

    xvfb-run -a python benchmarks/bench_edit_refresh.py [--lineages 500] [--frames 100]

Columns: ``edit`` = graph edit plus layer refresh (what the key handler does), ``shown`` = that
plus Qt event processing and a synchronous repaint of the canvas and the lineage view.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


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
        id=np.concatenate(ids), t=np.concatenate(ts), z=p[:, 0], y=p[:, 1], x=p[:, 2],
        parent_id=np.concatenate(parents), radius=np.full(len(p), 4.0),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lineages", type=int, default=480)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--division-every", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-lineage", action="store_true", help="do not dock the lineage view")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    import napari_cellect._napari._session as session_module
    from napari_cellect._napari._controller import controller_for
    from napari_cellect._napari._layer_data import Geometry
    from napari_cellect._napari._lineage_widget import LineageWidget
    from napari_cellect._napari._session import TrackingSession
    from napari_cellect.track import edits

    journal_root = Path(tempfile.mkdtemp(prefix="bench-journal-"))
    session_module.default_journal_root = lambda: journal_root  # keep the user's folder clean

    t0 = time.perf_counter()
    graph = synthetic_graph(args.lineages, args.frames, args.division_every)
    print(f"graph: {len(graph)} nodes, {len(np.unique(graph.track_ids()))} tracks, "
          f"{len(graph.divisions())} divisions ({time.perf_counter() - t0:.2f} s)")

    viewer = napari.Viewer(show=True)
    from qtpy.QtGui import QGuiApplication

    print(f"machine: {os.cpu_count()} CPU cores, Qt platform {QGuiApplication.platformName()!r} "
          "(under Xvfb the canvas is rendered in software by Mesa llvmpipe)")
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
            return getattr(controller, method)
        return setup

    def setup_link() -> Callable[[], None]:
        node = one_child_node()
        child = int(graph.children_of(node)[0])
        controller.do(edits.break_link, child)
        controller.select([node, child])
        return controller.link_selected

    def setup_swap() -> Callable[[], None]:
        rows = mid[graph["parent_id"][mid] >= 0]
        a, b = pick(rows), pick(rows)
        while graph.parent_of(a) == graph.parent_of(b):
            b = pick(rows)
        controller.select([a, b])
        return controller.swap_selected

    def setup_add() -> Callable[[], None]:
        controller.select([])
        world = np.asarray(viewer.dims.point, dtype=float)
        return lambda: controller.add_at_world(world)

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
    rows = []
    for name, setup in actions:
        edit_ms, shown_ms, undo_ms = [], [], []
        for _ in range(args.repeats):
            action = setup()
            show()
            t0 = time.perf_counter()
            action()
            t1 = time.perf_counter()
            show()
            t2 = time.perf_counter()
            controller.undo()
            show()
            t3 = time.perf_counter()
            edit_ms.append((t1 - t0) * 1e3)
            shown_ms.append((t2 - t0) * 1e3)
            undo_ms.append((t3 - t2) * 1e3)
        rows.append((name, statistics.median(edit_ms), statistics.median(shown_ms),
                     statistics.median(undo_ms)))

    extra = []
    if lineage is not None:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            lineage._rebuild()
            times.append((time.perf_counter() - t0) * 1e3)
        extra.append(("lineage layout + paths", statistics.median(times)))
        times = []
        lineage.canvas.fit()
        for k in range(args.repeats):
            lineage.canvas.centre_on(lineage.canvas.layout_.width / 2 + k, args.frames / 2)
            t0 = time.perf_counter()
            lineage.canvas.grab()  # renders the widget (paintEvent) into a pixmap
            times.append((time.perf_counter() - t0) * 1e3)
        extra.append(("lineage paint (fit view)", statistics.median(times)))

    print(f"\n{len(graph)} nodes, median of {args.repeats} runs (ms)")
    print(f"{'action':<26}{'edit':>10}{'shown':>10}{'undo shown':>12}")
    for name, e, s, u in rows:
        print(f"{name:<26}{e:>10.1f}{s:>10.1f}{u:>12.1f}")
    for name, value in extra:
        print(f"{name:<26}{value:>10.1f}")
    viewer.close()


if __name__ == "__main__":
    main()
