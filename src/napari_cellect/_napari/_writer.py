"""npe2 writers: a centres Points layer or a Tracks layer to our tracks CSV.

Layers bound to a tracking session write the session's graph (all node attributes). Other
layers are converted: a Points layer uses its ``id``/``parent_id`` features when it has them; a
Tracks layer links consecutive vertices of each track and the first vertex of a daughter track
to the last vertex of its mother (napari's ``graph``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_cellect._napari._layer_data import SESSION_KEY
from napari_cellect.errors import InputError
from napari_cellect.track.graph import NO_PARENT, TrackGraph


def _session(attributes: dict[str, Any]) -> Any:
    return (attributes.get("metadata") or {}).get(SESSION_KEY)


def _csv_path(path: str) -> Path:
    p = Path(path)
    return p if p.suffix.lower() == ".csv" else p.with_name(p.name + ".csv")


def _spatial(coords: np.ndarray) -> dict[str, np.ndarray]:
    """``t, z, y, x`` columns from (N, 3) or (N, 4) layer coordinates (z = 0 for 2D)."""
    if coords.shape[1] not in (3, 4):
        raise InputError(
            f"expected points with (t, y, x) or (t, z, y, x) coordinates, found "
            f"{coords.shape[1]} dimensions"
        )
    if coords.shape[1] == 3:
        coords = np.insert(coords, 1, 0.0, axis=1)
    return {
        "t": np.round(coords[:, 0]).astype(np.int64),
        "z": coords[:, 1],
        "y": coords[:, 2],
        "x": coords[:, 3],
    }


def graph_from_points(data: np.ndarray, features: Any) -> TrackGraph:
    """A graph from plain Points data: ids and parents from the features when present."""
    data = np.asarray(data, dtype=np.float64)
    columns: dict[str, Any] = _spatial(data)
    table = {} if features is None else {k: np.asarray(v) for k, v in dict(features).items()}
    columns["id"] = table.get("id", np.arange(1, len(data) + 1)).astype(np.int64)
    if "parent_id" in table:
        columns["parent_id"] = table["parent_id"].astype(np.int64)
    for name in ("radius", "score", "division_score", "link_score", "approved"):
        if name in table:
            columns[name] = table[name]
    return TrackGraph.from_arrays(**columns)


def graph_from_tracks(data: np.ndarray, graph: dict[int, list[int]] | None) -> TrackGraph:
    """A graph from napari Tracks data ``[track_id, t, (z), y, x]`` and its ``graph`` dict."""
    data = np.asarray(data, dtype=np.float64)
    order = np.lexsort((data[:, 1], data[:, 0]))
    data = data[order]
    track = data[:, 0].astype(np.int64)
    columns: dict[str, Any] = _spatial(data[:, 1:])
    ids = np.arange(1, len(data) + 1, dtype=np.int64)
    parent = np.full(len(data), NO_PARENT, dtype=np.int64)
    same = track[1:] == track[:-1]
    parent[1:][same] = ids[:-1][same]
    first = np.flatnonzero(np.r_[True, ~same])
    last = np.r_[first[1:] - 1, len(data) - 1]
    first_of = dict(zip(track[first].tolist(), first.tolist(), strict=True))
    last_of = dict(zip(track[first].tolist(), last.tolist(), strict=True))
    for daughter, mothers in (graph or {}).items():
        mothers = mothers if isinstance(mothers, list | tuple) else [mothers]
        if daughter in first_of and mothers and mothers[0] in last_of:
            parent[first_of[daughter]] = ids[last_of[mothers[0]]]
    columns.update(id=ids, parent_id=parent)
    return TrackGraph.from_arrays(**columns)


def write_points(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write a Points layer as our tracks CSV."""
    return _write(path, attributes, lambda: graph_from_points(data, attributes.get("features")))


def write_tracks(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write a Tracks layer as our tracks CSV."""
    return _write(path, attributes, lambda: graph_from_tracks(data, attributes.get("graph")))


def _write(
    path: str, attributes: dict[str, Any], make_graph: Callable[[], TrackGraph]
) -> list[str]:
    """Save through the layer's editing session when it has one (it then knows it was saved),
    else build the graph from the layer data alone."""
    from napari_cellect.data.export import write_csv

    target = _csv_path(path)
    session = _session(attributes)
    if session is not None:
        session.save(target)
    else:
        write_csv(make_graph(), target)
    return [str(target)]
