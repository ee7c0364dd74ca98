"""The tracking worker generator (no Qt, no thread): progress passes through, masks follow."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from napari_cellect._napari._tracking_job import model_reference_radius
from napari_cellect.errors import Cancelled, ModelError
from napari_cellect.session.jobs import TrackingOutput, tracking_job


def run(gen):
    records = []
    while True:
        try:
            records.append(next(gen))
        except StopIteration as stop:
            return records, stop.value


def fake_pipeline(graph, stop_after=None, calls=None):
    def iter_tracking(images, bundle=None, *, should_stop, **kwargs):
        if calls is not None:
            calls.append(kwargs)
        for t in range(images.shape[0]):
            if should_stop() or (stop_after is not None and t == stop_after):
                raise Cancelled("stopped")
            yield SimpleNamespace(stage="detect", done=t + 1, total=images.shape[0])
        return SimpleNamespace(graph=graph, foreground=None, cell_radius=None)

    return iter_tracking


def test_progress_passes_through_and_masks_are_painted_per_frame(graph):
    images = np.zeros((5, 4, 32, 32), np.uint8)
    job = tracking_job(
        fake_pipeline(graph),
        images,
        None,
        z_ratio=1.0,
        device="cpu",
        tile=None,
        should_stop=lambda: False,
    )
    records, output = run(job)
    assert [r.stage for r in records] == ["detect"] * 5 + ["tracks"] + ["labels"] * 5
    assert records[5].graph is graph  # the tracks, before the masks are made
    assert isinstance(output, TrackingOutput) and output.result.graph is graph
    labels = output.labels
    assert labels.shape == images.shape
    for row in range(len(graph)):  # no foreground kept: each node is a ball of its radius
        t, z, y, x = (int(round(graph[c][row])) for c in "tzyx")
        assert labels[t, z, y, x] == graph.track_ids()[row]


def test_a_cancelled_run_returns_none(graph):
    images = np.zeros((5, 1, 8, 8), np.uint8)
    job = tracking_job(
        fake_pipeline(graph, stop_after=2),
        images,
        None,
        z_ratio=1.0,
        device="cpu",
        tile=None,
        should_stop=lambda: False,
    )
    records, output = run(job)
    assert len(records) == 2 and output is None


def test_masks_too_large_for_memory_are_skipped(graph):
    images = np.zeros((5, 4, 32, 32), np.uint8)
    job = tracking_job(
        fake_pipeline(graph),
        images,
        None,
        z_ratio=1.0,
        device="cpu",
        tile=None,
        should_stop=lambda: False,
        max_label_bytes=1000,
    )
    records, output = run(job)
    assert output.labels is None and [r.stage for r in records] == ["detect"] * 5 + ["tracks"]


def test_the_nucleus_radius_goes_to_the_pipeline(graph):
    images = np.zeros((5, 4, 32, 32), np.uint8)
    calls: list = []
    for radius in (None, 7.5):
        job = tracking_job(
            fake_pipeline(graph, calls=calls),
            images,
            None,
            z_ratio=1.0,
            device="cpu",
            tile=None,
            should_stop=lambda: False,
            cell_radius=radius,
        )
        run(job)
    assert [c["cell_radius"] for c in calls] == [None, 7.5]


def test_the_reference_radius_is_read_from_the_model_file(tmp_path):
    from napari_cellect.model.bundle import ModelBundle

    bundle = ModelBundle.random("small", seed=0)
    plain = bundle.save(tmp_path / "plain.pt")
    sized = dataclasses.replace(
        bundle, normalization=dataclasses.replace(bundle.normalization, reference_radius=4.25)
    ).save(tmp_path / "sized.pt")
    assert model_reference_radius(str(plain)) is None
    assert model_reference_radius(str(sized)) == pytest.approx(4.25)
    assert model_reference_radius(None) == ModelBundle.load_default().normalization.reference_radius
    (tmp_path / "broken.pt").write_bytes(b"not a model")
    with pytest.raises(ModelError):
        model_reference_radius(str(tmp_path / "broken.pt"))
    with pytest.raises(OSError):
        model_reference_radius(str(tmp_path / "missing.pt"))
