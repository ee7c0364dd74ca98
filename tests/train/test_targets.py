"""Targets rendered from point annotations (src/napari_cellect/train/targets.py)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellect.errors import InputError
from napari_cellect.track.graph import TrackGraph
from napari_cellect.track.matching import MatchConfig, match_detections
from napari_cellect.train.targets import (
    NUCLEUS,
    OTHER,
    AnnotationIndex,
    TargetConfig,
    jittered_cells,
    pair_targets,
    render_cells,
)

SHAPE = (8, 48, 48)
Z_RATIO = 3.0


def division_graph() -> TrackGraph:
    """Cell 1 divides into 3 and 4 between frames 0 and 1; cell 2 continues as 5; cell 6 is
    a newly appearing cell in frame 1. Cell 2 has no radius (default)."""
    return TrackGraph.from_arrays(
        id=[1, 2, 3, 4, 5, 6],
        t=[0, 0, 1, 1, 1, 1],
        z=[4, 4, 4, 4, 4, 2],
        y=[12, 34, 8, 17, 35, 40],
        x=[12, 34, 12, 12, 33, 8],
        parent_id=[-1, -1, 1, 1, 2, -1],
        radius=[6.0, np.nan, 4.0, 4.0, 6.0, 4.0],
    )


@pytest.fixture
def targets():
    index = AnnotationIndex(division_graph(), TargetConfig(default_radius=5.0))
    return pair_targets(index, 0, (0, 0, 0), SHAPE, Z_RATIO)


def test_levels_peak_at_the_centres(targets):
    top = TargetConfig().n_levels - 1
    for z, y, x in [(4, 12, 12), (4, 34, 34)]:
        assert targets.centre[z, y, x] == top
        # levels never increase away from the centre, along y and along x
        profile = targets.centre[z, y, x : x + 8]
        assert np.all(np.diff(profile) <= 0) and profile[-1] == 0
        profile = targets.centre[z, y - 8 : y + 1, x]
        assert np.all(np.diff(profile) >= 0)
    assert targets.centre.max() == top
    # every top-level voxel lies within the innermost ring of a cell
    zz, yy, xx = np.nonzero(targets.centre == top)
    d1 = np.sqrt(((zz - 4) * Z_RATIO) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2) / 6.0
    d2 = np.sqrt(((zz - 4) * Z_RATIO) ** 2 + (yy - 34) ** 2 + (xx - 34) ** 2) / 5.0
    assert np.all(np.minimum(d1, d2) < TargetConfig().level_edges[-1])


def test_anisotropy_and_radius(targets):
    seg = targets.seg
    # radius 6, z_ratio 3: one slice is 3 px, so +-1 slice is inside, +-2 slices (6 px) is not
    assert seg[3, 12, 12] == NUCLEUS and seg[5, 12, 12] == NUCLEUS
    assert seg[2, 12, 12] == 0 and seg[6, 12, 12] == 0
    # in y the same cell reaches 5 px, not 6
    assert seg[4, 17, 12] == NUCLEUS and seg[4, 18, 12] == 0
    # radius map: the annotated radius inside, the default for NaN, 0 in background
    assert targets.radius[4, 12, 12] == pytest.approx(6.0)
    assert targets.radius[4, 34, 34] == pytest.approx(5.0)
    assert targets.radius[0, 0, 0] == 0.0
    assert np.all(targets.radius[seg == 0] == 0)


def test_ids_are_shared_by_mother_daughters_and_continuations(targets):
    ids_t, ids_next = targets.ids_t, targets.ids_next
    assert ids_t[4, 12, 12] == 2  # node 1 -> label 2
    assert ids_t[4, 34, 34] == 3  # node 2 -> label 3
    # both daughters (nodes 3, 4) carry the mother's label in frame t+1
    assert ids_next[4, 8, 12] == 2 and ids_next[4, 17, 12] == 2
    # the continuation of cell 2 (node 5) carries its label
    assert ids_next[4, 35, 33] == 3
    # the new cell 6 keeps its own label, which matches nothing in frame t
    assert ids_next[2, 40, 8] == 7 and not np.any(ids_t == 7)
    cells = targets.cells_next
    assert dict(zip(cells.node_ids.tolist(), cells.lineage.tolist())) == {3: 2, 4: 2, 5: 3, 6: 7}


def test_division_channels(targets):
    div = targets.division
    assert div[0, 4, 12, 12] == 1  # mother, frame t
    assert div[0, 4, 34, 34] == 0  # cell 2 does not divide
    assert div[1, 4, 8, 12] == 1 and div[1, 4, 17, 12] == 1  # newborn daughters in t+1
    assert div[1, 4, 35, 33] == 0 and div[1, 2, 40, 8] == 0
    assert np.all(div[0][targets.seg == 0] == 0)
    assert targets.division_valid.all()


def test_last_frame_without_next_has_unknown_division():
    index = AnnotationIndex(division_graph())
    targets = pair_targets(index, 1, (0, 0, 0), SHAPE, Z_RATIO, next_t=-1)
    assert not targets.division_valid.any()
    assert len(targets.cells_next) == 0
    assert targets.seg[4, 8, 12] == NUCLEUS


def test_crop_origin_and_padding_mask():
    index = AnnotationIndex(division_graph())
    inside = (slice(0, 8), slice(0, 20), slice(0, 48))
    targets = pair_targets(index, 0, (0, 10, 0), SHAPE, Z_RATIO, inside=inside)
    # cell 1 at y=12 sits at crop y=2
    assert targets.centre[4, 2, 12] == TargetConfig().n_levels - 1
    assert targets.valid[:, :20].all() and not targets.valid[:, 20:].any()
    mask = np.zeros(SHAPE, bool)
    mask[:, :, :24] = True
    masked = pair_targets(index, 0, (0, 0, 0), SHAPE, Z_RATIO, annotated_mask=mask)
    assert masked.valid[:, :, :24].all() and not masked.valid[:, :, 24:].any()
    with pytest.raises(InputError, match="annotated_mask"):
        pair_targets(index, 0, (0, 0, 0), SHAPE, Z_RATIO, annotated_mask=mask[:4])


def test_overlapping_cells_split_by_relative_distance():
    # a big and a small cell overlapping: each voxel goes to the cell it is relatively closer to
    render = render_cells(np.array([[4, 20, 16], [4, 20, 26]]), np.array([8.0, 4.0]), SHAPE, 1.0)
    assert render.owner[4, 20, 16] == 0 and render.owner[4, 20, 26] == 1
    # x = 23: 7/8 of the big radius vs 3/4 of the small one -> the small cell wins
    assert render.owner[4, 20, 23] == 1
    # x = 21: 5/8 vs 5/4 (outside the small cell) -> the big cell
    assert render.owner[4, 20, 21] == 0


def test_thin_cell_still_has_a_centre_voxel():
    render = render_cells(np.array([[2.5, 10, 10]]), np.array([2.0]), SHAPE, 10.0)
    assert render.level.max() == TargetConfig().n_levels - 1
    assert np.count_nonzero(render.owner >= 0) >= 1


def test_other_class_has_no_centre_or_id():
    graph = TrackGraph.from_arrays(
        id=[1, 2],
        t=[0, 0],
        z=[4, 4],
        y=[10, 30],
        x=[10, 30],
        radius=[5.0, 5.0],
        seg_class=[1.0, 2.0],
    )
    targets = pair_targets(AnnotationIndex(graph), 0, (0, 0, 0), SHAPE, Z_RATIO, next_t=-1)
    assert targets.seg[4, 30, 30] == OTHER and targets.centre[4, 30, 30] == 0
    assert targets.ids_t[4, 30, 30] == 0 and targets.radius[4, 30, 30] == 0
    assert targets.seg[4, 10, 10] == NUCLEUS


def test_rendering_in_chunks_matches_one_pass():
    rng = np.random.default_rng(0)
    pos = rng.uniform([0, 0, 0], SHAPE, size=(40, 3))
    radius = rng.uniform(2, 7, size=40)
    one = render_cells(pos, radius, SHAPE, 2.0)
    chunked = render_cells(pos, radius, SHAPE, 2.0, TargetConfig(max_chunk_voxels=500))
    np.testing.assert_array_equal(one.owner, chunked.owner)
    np.testing.assert_array_equal(one.level, chunked.level)


def test_level_edges_are_checked():
    with pytest.raises(InputError, match="decreasing"):
        TargetConfig(level_edges=(1.0, 0.5, 0.7))


def test_hungarian_matching_beats_greedy():
    # greedy nearest-first would give det 0 to cell 1 (distance 1) and leave cell 0 unmatched
    cells = np.array([[0, 0, 0], [0, 0, 3.0]])
    dets = np.array([[0, 0, 2.0], [0, 0, 4.5]])
    m = match_detections(dets, cells, np.array([4.0, 4.0]), 1.0, MatchConfig(radius_factor=0.75))
    assert m.primary.tolist() == [0, 1]


def test_matching_gate_and_duplicates():
    cells = np.array([[0, 10, 10], [0, 30, 30]])
    dets = np.array([[0, 10, 11], [0, 11, 10], [0, 20, 20], [1, 30, 30]])
    m = match_detections(dets, cells, np.array([4.0, 4.0]), 5.0)
    assert m.n_matched == 1  # det 3 is 5 px away in z (z_ratio 5): outside the 3 px gate
    assert m.primary[2] == -1 and m.owner[2] == -1  # far from every cell
    assert sorted(m.primary[:2].tolist()) == [-1, 0] and m.owner[:2].tolist() == [0, 0]


def test_jittered_cells_with_duplicates():
    index = AnnotationIndex(division_graph())
    cells = index.frame_cells(1, (0, 0, 0), SHAPE, Z_RATIO)
    rng = np.random.default_rng(1)
    pos, cell = jittered_cells(cells, SHAPE, Z_RATIO, rng, jitter=0.0, duplicate_fraction=1.0)
    assert len(pos) == 2 * len(cells)
    np.testing.assert_allclose(pos[: len(cells)], cells.positions)
    assert sorted(cell.tolist()) == sorted(list(range(len(cells))) * 2)
    dup_dist = np.linalg.norm(
        (pos[len(cells) :] - cells.positions[cell[len(cells) :]]) * [Z_RATIO, 1, 1], axis=1
    )
    assert np.all(dup_dist <= 0.6 * cells.radius[cell[len(cells) :]] + 1e-6)
