"""GUI-thread time to show one more frame's centres in Track cells' preview Points layer.

The widget fills rows reserved ahead in place (``CentresPreview``); growing the layer each frame
with ``Points.add`` or by assigning ``data`` makes napari restyle every point so far in Python.
This times the three on a napari Points layer with no window (the part that grows with the
run; drawing shows only the current frame's points either way).

Run: ``python benchmarks/bench_preview_centres.py [--frames 400] [--cells 500]``; prints a
markdown table of the median time per frame over the first and the last ten frames.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np
from napari.layers import Points

from napari_cellect._napari._centres_preview import CentresPreview


def _frame(t: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    return np.column_stack([np.full(cells, float(t)), rng.uniform(0, 500, (cells, 3))])


def time_appends(method: str, frames: int, cells: int) -> list[float]:
    """Seconds each frame's append took, frame 1 onwards (frame 0 makes the layer)."""
    rng = np.random.default_rng(0)
    first = _frame(0, cells, rng)
    style = dict(size=5.0, face_color="yellow")
    if method == "preview":  # reserves 1.5 x cells per frame, as the widget does
        viewer = SimpleNamespace(add_points=lambda data, **kwargs: Points(data, **kwargs))
        preview = CentresPreview.create(viewer, first, expected=cells * frames, **style)
    else:
        layer = Points(first, **style)
    seconds = []
    for t in range(1, frames):
        coords = _frame(t, cells, rng)
        start = time.perf_counter()
        if method == "preview":
            preview.append(coords)
        elif method == "add":
            layer.add(coords)
            layer.selected_data = set()
        else:
            layer.data = np.concatenate([layer.data, coords])
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--cells", type=int, default=500)
    args = parser.parse_args()
    print(f"{args.frames} frames x {args.cells} centres\n")
    print("| update | first 10 frames (ms/frame, median) | last 10 frames (ms/frame, median) |")
    print("|---|---|---|")
    for method, label in (
        ("preview", "`CentresPreview.append` (the widget)"),
        ("add", "`Points.add`"),
        ("data", "assign `data` (before)"),
    ):
        seconds = time_appends(method, args.frames, args.cells)
        print(
            f"| {label} | {1e3 * np.median(seconds[:10]):.1f} | "
            f"{1e3 * np.median(seconds[-10:]):.1f} |"
        )


if __name__ == "__main__":
    main()
