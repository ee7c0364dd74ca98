"""The generalisation benchmark's own simulator and renderer (``benchmarks/generalization``).

The benchmark itself is not run by CI; these checks keep its data honest: nuclei are drawn where
the ground truth says, the ground truth reads back through our CSV reader, and the validation and
test parts never share data.
"""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from generalization import cases as cases_module  # noqa: E402 (benchmarks/ on the path first)
from generalization.cases import Case, cases, check_split  # noqa: E402
from generalization.lineage import Lineage  # noqa: E402
from generalization.render import RenderStyle, render  # noqa: E402
from generalization.simulate import MotionConfig, simulate  # noqa: E402

from napari_cellect.data.annotations import label_centroids, read_tracks  # noqa: E402
from napari_cellect.evaluate import evaluate  # noqa: E402


def _sparse(shape, z_ratio=1.0, seed=3) -> Lineage:
    return simulate(
        MotionConfig(
            shape=shape,
            frames=6,
            radius=6.0,
            z_ratio=z_ratio,
            n_cells=5,
            max_cells=10,
            cycle_frames=4.0,
            seed=seed,
        )
    )


@pytest.mark.parametrize(("shape", "z_ratio"), [((1, 80, 80), 1.0), ((10, 64, 64), 3.0)])
def test_rendered_nuclei_sit_at_the_lineage_positions(shape, z_ratio):
    lineage = _sparse(shape, z_ratio)
    assert lineage.n_divisions() >= 1  # so that the division looks are drawn too
    style = RenderStyle.random(5)
    images, labels = render(lineage, shape, z_ratio=z_ratio, style=style, seed=5, masks=True)
    assert images.shape == (lineage.n_frames, *shape) and images.dtype == np.uint16
    errors = []
    for t in range(lineage.n_frames):
        values, centroids, _ = label_centroids(labels[t])
        rows = {int(i): k for k, i in enumerate(lineage.id)}
        for value, c in zip(values, centroids, strict=True):
            k = rows[int(value) - 1]
            assert lineage.t[k] == t
            errors.append(np.linalg.norm((c - lineage.positions[k]) * [z_ratio, 1, 1]))
    # every nucleus of the ground truth is drawn (none fully outside the frame)
    assert len(errors) == len(lineage)
    # a neighbour drawn over a touching nucleus moves its mask's centroid a little
    assert np.median(errors) < 0.6 and np.percentile(errors, 90) < 2.0
    signal = images.astype(float) - style.offset  # above the camera offset
    assert signal[labels > 0].mean() > 3 * signal[labels == 0].mean()


def test_ground_truth_round_trips_through_our_csv_reader(tmp_path):
    lineage = _sparse((1, 80, 80))
    lineage.write_csv(tmp_path / "gt.csv")
    graph = read_tracks(tmp_path / "gt.csv")
    assert np.array_equal(graph["id"], lineage.id)
    assert np.array_equal(graph["parent_id"], lineage.parent)
    assert np.allclose(graph.positions(), lineage.positions, atol=1e-3)
    assert len(graph.divisions()) == lineage.n_divisions() >= 1
    scores = evaluate(graph, lineage.to_graph())
    assert scores.det_f1 == scores.link_f1 == scores.div_f1 == scores.tra == 1.0


def test_renderer_is_seeded_and_every_look_differs():
    lineage = _sparse((1, 64, 64))
    a, _ = render(lineage, (1, 64, 64), style=RenderStyle.random(1), seed=1)
    b, _ = render(lineage, (1, 64, 64), style=RenderStyle.random(1), seed=1)
    c, _ = render(lineage, (1, 64, 64), style=RenderStyle.random(2), seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_real_lineage_is_scaled_to_the_case_radius_and_cropped(monkeypatch):
    # a stand-in for a real lineage (isotropic pixels), nuclei of radius 10 at ~3 radii spacing
    source = simulate(
        MotionConfig(shape=(1, 300, 300), frames=8, radius=10.0, n_cells=60, max_cells=120, seed=9)
    )
    monkeypatch.setattr(cases_module, "load_lineage", lambda name: source)
    case = Case("hela-2d-r4", "test", "hela", 1401, radius=4.0, size=96, frames=6, start=0)
    truth = cases_module._real_lineage(case, (1, 96, 96))
    assert 0 < len(truth) < len(source) and truth.n_frames == 6
    assert np.all((truth.y >= 0) & (truth.y < 96) & (truth.x >= 0) & (truth.x < 96))
    assert 3.0 < np.median(truth.radius) < 5.0
    three_d = replace(case, name="hela-3d-r4-z3", depth=7, z_ratio=3.0)
    truth = cases_module._real_lineage(three_d, (7, 96, 96))
    assert np.all((truth.z >= 0) & (truth.z < 7)) and np.ptp(truth.z) > 0


def test_validation_and_test_parts_share_no_data():
    validation, test = cases("validation"), cases("test")
    assert [c.name for c in validation] == [c.name for c in test]
    assert not {c.seed for c in validation} & {c.seed for c in test}
    crossing = replace(test[-1], part="test", start=0)  # a real source's frames 0.. are validation
    with pytest.raises(AssertionError, match="where the parts meet"):
        check_split([crossing])


def test_renderer_is_independent_of_the_training_generator():
    """The point of this benchmark: it shares no code with ``data/synthetic`` (and training
    never uses it)."""

    def imports(path: Path) -> str:
        return "\n".join(re.findall(r"^\s*(?:from|import)\s.*$", path.read_text(), re.MULTILINE))

    for path in (ROOT / "benchmarks" / "generalization").glob("*.py"):
        assert "synthetic" not in imports(path), path
    for path in (ROOT / "src").rglob("*.py"):
        assert "generalization" not in imports(path), path
