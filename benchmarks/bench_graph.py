"""TrackGraph at a million nodes: build, derive track ids, convert, edit.

Run: ``python benchmarks/bench_graph.py [--nodes N]``; prints a markdown table (best of 3).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from napari_cellect.track.graph import TrackGraph


def _best(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--track-length", type=int, default=100)
    args = parser.parse_args(argv)
    length = args.track_length
    n_tracks = args.nodes // length
    ids = np.arange(1, n_tracks * length + 1)
    t = np.tile(np.arange(length), n_tracks)
    parent = np.where(t == 0, -1, ids - 1)
    rng = np.random.default_rng(0)
    xyz = rng.random((len(ids), 3)) * 500
    columns = dict(id=ids, t=t, z=xyz[:, 0], y=xyz[:, 1], x=xyz[:, 2], parent_id=parent)
    graph = TrackGraph.from_arrays(**columns)
    rows = [
        ("build + validate", _best(lambda: TrackGraph.from_arrays(**columns))),
        ("track ids (fresh)", _best(lambda: (graph._invalidate(), graph.track_ids()))),
        ("to napari Tracks", _best(graph.to_napari_tracks)),
        ("to pandas", _best(graph.to_dataframe)),
        ("break one link", _best(lambda: graph.set_parent(ids[length // 2], -1))),
        ("re-link it", _best(lambda: graph.set_parent(ids[length // 2], ids[length // 2 - 1]))),
        (
            "add one node",
            _best(
                lambda: graph.remove_nodes(
                    graph.add_nodes(
                        t=[length], z=[0.0], y=[0.0], x=[0.0], parent_id=[ids[length - 1]]
                    )
                )
            )
            / 2,
        ),
    ]
    print(f"TrackGraph with {len(graph):,} nodes ({n_tracks:,} tracks of {length}), best of 3")
    print("| operation | seconds |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
