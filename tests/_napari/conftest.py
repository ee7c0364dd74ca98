"""Fixtures for the napari plugin tests.

Two kinds of viewers, never mixed in one test:

- ``model_viewer``: a ``ViewerModel`` (no Qt window, ~15x cheaper). The controller, the layer
  sync and the keybindings only need the model, so most behaviour is tested this way, pressing
  keys through napari's own ``KeymapHandler`` (active layer first, then the viewer).
- ``make_napari_viewer`` (napari's fixture) for widget and rendering tests; keep those few.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellect.session import tracking_session as _session
from napari_cellect.track.graph import TrackGraph


@pytest.fixture(autouse=True)
def journal_root(tmp_path, monkeypatch):
    """Sessions without a file autosave here, never in the user's data folder."""
    root = tmp_path / "journals"
    monkeypatch.setattr(_session, "default_journal_root", lambda: root)
    return root


@pytest.fixture(autouse=True)
def _no_restore_prompt(monkeypatch):
    """Fail loudly if a test would open a modal dialog it did not answer."""
    from napari_cellect._napari import _dialogs

    def refuse(*_args, **_kwargs):
        raise AssertionError("a test opened the restore dialog without answering it")

    monkeypatch.setattr(_dialogs, "ask_restore_journal", refuse)


def _make_graph() -> TrackGraph:
    """Two tracks: 1 -> 2 -> 3 -> {4, 5} (a division) and 6 -> 7 -> 8, 3D, in 5 frames.

    Positions are spread so every node has its own voxels in :func:`make_labels`.
    """
    return TrackGraph.from_arrays(
        id=[1, 2, 3, 4, 5, 6, 7, 8],
        t=[0, 1, 2, 3, 3, 0, 1, 2],
        z=[2.0] * 8,
        y=[8.0, 9, 10, 6, 14, 24, 25, 26],
        x=[8.0, 9, 10, 8, 12, 24, 24, 25],
        parent_id=[-1, 1, 2, 3, 3, -1, 6, 7],
        radius=[2.0] * 8,
        score=[0.9] * 8,
    )


def _make_labels(
    graph: TrackGraph, shape: tuple[int, int, int, int] = (5, 4, 32, 32)
) -> np.ndarray:
    """Small cubes around each node, valued by the node's track id."""
    labels = np.zeros(shape, dtype=np.uint16)
    track = graph.track_ids()
    for row in range(len(graph)):
        t, z, y, x = (
            int(round(v))
            for v in (graph["t"][row], graph["z"][row], graph["y"][row], graph["x"][row])
        )
        labels[t, max(z - 1, 0) : z + 2, y - 1 : y + 2, x - 1 : x + 2] = track[row]
    return labels


@pytest.fixture
def make_graph():
    """Factory of the small test graph (a fresh copy per call)."""
    return _make_graph


@pytest.fixture
def make_labels():
    """Factory of track-id masks for a graph."""
    return _make_labels


@pytest.fixture
def graph() -> TrackGraph:
    return _make_graph()


@pytest.fixture
def model_viewer():
    from napari.components import ViewerModel

    viewer = ViewerModel()
    yield viewer
    from napari_cellect._napari._controller import controller_for

    controller = controller_for(viewer, create=False)
    if controller is not None:
        controller.close()


@pytest.fixture(autouse=True)
def unsaved_edits_prompts(monkeypatch):
    """Closing a viewer with unsaved edits asks; tests answer "discard" unless they say
    otherwise. The list holds the session names of each prompt."""
    from napari_cellect._napari import _dialogs

    asked: list[list[str]] = []

    def discard(names, _journals, _parent=None):
        asked.append(list(names))
        return "discard"

    monkeypatch.setattr(_dialogs, "ask_unsaved_edits", discard)
    return asked
