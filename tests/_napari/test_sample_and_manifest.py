"""Sample data (made on the fly) and the npe2 manifest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from napari_cellect._napari._layer_data import SESSION_KEY
from napari_cellect._napari._sample import make_sample_data

ROOT = Path(__file__).resolve().parents[2]


def test_sample_is_an_embryo_with_ground_truth_tracks_and_matching_labels():
    layers = make_sample_data()
    assert [kind for _, _, kind in layers] == ["image", "labels", "tracks", "points"]
    (image, ikw, _), (labels, _, _), (_tracks, _, _), (points, pkw, _) = layers
    assert image.ndim == 4 and image.shape == labels.shape and image.max() > 0
    session = pkw["metadata"][SESSION_KEY]
    graph = session.graph
    assert len(graph) == len(points) > 20 and len(graph.divisions()) >= 1
    assert ikw["scale"] == session.geometry.layer_scale
    # ground truth does not look like a result: masks hidden, centres drawn as crosses
    assert layers[1][1]["visible"] is False and pkw["symbol"] == "cross"
    # label values are the graph's track ids, frame by frame
    for t in (0, image.shape[0] - 1):
        in_frame = set(graph.track_ids()[graph.frame(t)].tolist())
        values = set(np.unique(labels[t]).tolist()) - {0}
        assert values <= in_frame and len(values) >= len(in_frame) - 2


def test_manifest_validates_and_both_copies_are_identical():
    root_copy = (ROOT / "napari.yaml").read_bytes()
    package_copy = (ROOT / "src" / "napari_cellect" / "napari.yaml").read_bytes()
    assert root_copy == package_copy
    npe2 = Path(sys.executable).with_name("npe2")
    result = subprocess.run(
        [str(npe2), "validate", "napari-cellect", "--imports"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_manifest_lists_the_reader_writers_sample_and_widgets():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(ROOT / "napari.yaml")
    assert manifest.name == "napari-cellect" and manifest.display_name == "CELLECT tracking"
    contributions = manifest.contributions
    assert {w.display_name for w in contributions.widgets} == {
        "Track cells",
        "Edit tracks",
        "Lineage view",
        "Export tracks",
        "Fine-tune",
    }
    assert {tuple(w.layer_types) for w in contributions.writers} == {("points",), ("tracks",)}
    assert contributions.readers[0].accepts_directories
    assert [s.key for s in contributions.sample_data] == ["synthetic_embryo"]
