from __future__ import annotations

import numpy as np
import pytest

from napari_cellect.errors import InputError
from napari_cellect.infer.predict import InferenceModel, predict_sequence
from napari_cellect.infer.refine import _merge_overlapping, division_candidates, refine_divisions
from napari_cellect.settings.detection import DetectionConfig
from napari_cellect.settings.normalization import NormalizationConfig
from napari_cellect.settings.refinement import DivisionRefinementConfig
from napari_cellect.settings.tiling import TilingConfig, tiling_for
from napari_cellect.track.graph import TrackGraph

SHAPE = (8, 48, 48)
MOTHER = (4.0, 24.0, 24.0)
#: two small touching daughters, 3 px apart: one blurred peak at the fake U-Net's resolution
DAUGHTERS = np.array([[4.0, 24.0, 22.5], [4.0, 24.0, 25.5]])


def lineage(division_score: float, children: int = 1) -> TrackGraph:
    """A mother in frame 0 with ``children`` children in frame 1, and a cell in frame 2."""
    ids, t, parent = [0, 1], [0, 1], [-1, 0]
    if children == 2:
        ids, t, parent = ids + [3], t + [1], parent + [0]
    ids, t, parent = ids + [2], t + [2], parent + [1]
    n = len(ids)
    return TrackGraph.from_arrays(
        id=ids,
        t=t,
        z=[MOTHER[0]] * n,
        y=[MOTHER[1]] * n,
        x=[MOTHER[2]] * n,
        parent_id=parent,
        radius=[3.0] * n,
        division_score=[division_score] + [0.0] * (n - 1),
    )


@pytest.fixture
def division(fake_unet, blobs):
    first = blobs(SHAPE, [MOTHER], sigma_xy=2.0)
    after = blobs(SHAPE, DAUGHTERS, sigma_xy=1.0)
    images = np.stack([first, after, after]).astype(np.float32)
    model = fake_unet()
    raw = list(predict_sequence(images, model, z_ratio=1.0, device="cpu", tile=SHAPE))
    return images, model, raw


def refine(images, model, graph, raw, **config):
    return refine_divisions(
        images,
        model,
        graph,
        raw,
        z_ratio=1.0,
        division_threshold=0.5,
        config=DivisionRefinementConfig(**config),
        tiling=tiling_for(SHAPE),
    )


def test_a_magnified_second_look_separates_daughters_the_first_pass_merged(division):
    images, model, raw = division
    assert len(raw[1]) == 1  # the first pass sees one cell
    out, n = refine(images, model, lineage(0.9), raw)
    assert n == 1
    found = out[1].positions[np.argsort(out[1].positions[:, 2])]
    np.testing.assert_allclose(found, DAUGHTERS, atol=0.5)
    assert out[1].embeddings.shape == (2, raw[1].embeddings.shape[1])
    assert out[0] is raw[0] and out[2] is raw[2]  # only the frame after the division


@pytest.mark.parametrize(
    "graph, config",
    [(lineage(0.2), {}), (lineage(0.9, children=2), {}), (lineage(0.9), {"enabled": False})],
    ids=["not predicted to divide", "already two children", "disabled"],
)
def test_nothing_to_refine_changes_nothing(division, graph, config):
    images, model, raw = division
    out, n = refine(images, model, graph, raw, **config)
    assert n == 0 and all(a is b for a, b in zip(out, raw))


def test_candidates_are_predicted_mothers_with_fewer_than_two_children_before_the_last_frame():
    graph = TrackGraph.from_arrays(
        id=[0, 1, 2, 3, 4, 5],
        t=[0, 0, 0, 1, 1, 1],
        z=[0.0] * 6,
        y=[0.0, 10, 20, 0, 10, 20],
        x=[0.0] * 6,
        parent_id=[-1, -1, -1, 0, 0, 2],
        division_score=[0.9, 0.8, 0.4, 0.9, 0, 0],
    )
    # 0 has two children, 2 is below the threshold, 3 is in the last frame: only 1
    assert division_candidates(graph, 0.5).tolist() == [1]
    assert division_candidates(TrackGraph(), 0.5).tolist() == []


def test_overlapping_crops_are_joined_and_others_kept_apart():
    boxes = [
        (slice(0, 4), slice(0, 10), slice(0, 10)),
        (slice(2, 6), slice(5, 15), slice(5, 15)),  # overlaps the first
        (slice(0, 4), slice(30, 40), slice(30, 40)),  # apart
    ]
    merged = _merge_overlapping(boxes)
    assert sorted(members for _, members in merged) == [[0, 1], [2]]
    joined = next(box for box, members in merged if members == [0, 1])
    assert joined == (slice(0, 6), slice(0, 15), slice(0, 15))


def test_2d_series_keep_their_single_slice(fake_unet, blobs):
    shape = (1, 48, 48)
    images = np.stack([blobs(shape, [[0.0, 24.0, 24.0]], sigma_xy=2.0)] * 3).astype(np.float32)
    model = fake_unet(size_multiple=(1, 4, 4))
    raw = list(predict_sequence(images, model, z_ratio=1.0, device="cpu", tile=shape))
    graph = lineage(0.9)
    graph.set_values("z", graph.ids, np.zeros(len(graph)))
    out, n = refine_divisions(
        images, model, graph, raw, z_ratio=1.0, division_threshold=0.5, tiling=tiling_for(shape)
    )
    assert n == 1 and len(out[1]) == 1 and np.all(out[1].positions[:, 0] == 0.0)


@pytest.mark.parametrize("field, value", [("scale", 0.5), ("scale", float("nan")), ("reach", 0.0)])
def test_bad_settings_are_refused(field, value):
    with pytest.raises(InputError, match=field):
        DivisionRefinementConfig(**{field: value})


def test_the_crops_of_a_frame_go_through_the_u_net_together(fake_unet, blobs):
    """Three dividing cells of one size far apart in one frame: their crops have one shape
    and are one batch, and each pair of daughters is found."""
    shape = (8, 48, 144)
    mothers = np.array([[4.0, 24.0, 20.0], [4.0, 24.0, 72.0], [4.0, 24.0, 120.0]])
    daughters = np.concatenate([mothers + [0, 0, -1.5], mothers + [0, 0, 1.5]])
    first = blobs(shape, mothers, sigma_xy=2.0)
    after = blobs(shape, daughters, sigma_xy=1.0)
    images = np.stack([first, after, after]).astype(np.float32)
    model = fake_unet()
    raw = list(predict_sequence(images, model, z_ratio=1.0, device="cpu", tile=shape))
    assert len(raw[1]) == 3
    graph = TrackGraph.from_arrays(
        id=[0, 1, 2, 3, 4, 5],
        t=[0, 0, 0, 1, 1, 1],
        z=mothers[:, 0].tolist() * 2,
        y=mothers[:, 1].tolist() * 2,
        x=mothers[:, 2].tolist() * 2,
        parent_id=[-1, -1, -1, 0, 1, 2],
        radius=[2.8, 2.8, 2.8, 3.0, 3.0, 3.0],
        division_score=[0.9, 0.9, 0.9, 0.0, 0.0, 0.0],
    )
    calls_before = model.calls
    tiling = TilingConfig(tile=(16, 128, 128), overlap=(2, 8, 8))  # room for three crops
    out, n = refine_divisions(
        images, model, graph, raw, z_ratio=1.0, division_threshold=0.5, tiling=tiling
    )
    assert n == 3
    batches = [x.shape[0] for x in model.inputs[calls_before:]]
    assert batches == [3]
    found = out[1].positions[np.argsort(out[1].positions[:, 2])]
    expected = daughters[np.argsort(daughters[:, 2])]
    np.testing.assert_allclose(found, expected, atol=0.5)


def test_frames_resized_for_large_nuclei_are_refined_on_the_resized_grid(fake_unet, blobs):
    """The division scene drawn ``factor`` times larger in y and x and tracked with
    ``cell_radius = factor * reference``: the refinement crops reach the U-Net at the size they
    have in the scene at the model's own size (not ``factor`` times larger, where a large
    nucleus looks like several), and the daughters are found where they are."""
    factor, reference = 2.0, 3.0
    norm = NormalizationConfig(mode="none", reference_radius=reference)

    def scene(k: float):
        shape = (SHAPE[0], round(SHAPE[1] * k), round(SHAPE[2] * k))
        zoom = np.array([1.0, k, k])
        mother = (np.asarray(MOTHER) + [0, 0.5, 0.5]) * zoom - [0, 0.5, 0.5]
        daughters = (DAUGHTERS + [0, 0.5, 0.5]) * zoom - [0, 0.5, 0.5]
        first = blobs(shape, [mother], sigma_xy=2.0 * k, z_ratio=k)
        after = blobs(shape, daughters, sigma_xy=1.0 * k, z_ratio=k)
        images = np.stack([first, after, after]).astype(np.float32)
        model = InferenceModel(fake_unet(), DetectionConfig(), norm)
        radius = reference * k if k != 1.0 else None
        raw = list(
            predict_sequence(images, model, z_ratio=k, device="cpu", tile=shape, cell_radius=radius)
        )
        graph = lineage(0.9)
        graph.set_values("y", graph.ids, np.full(len(graph), mother[1]))
        graph.set_values("x", graph.ids, np.full(len(graph), mother[2]))
        graph.set_values("radius", graph.ids, np.full(len(graph), 3.0 * k))
        calls = model.unet.calls
        out, n = refine_divisions(
            images,
            model,
            graph,
            raw,
            z_ratio=k,
            division_threshold=0.5,
            tiling=tiling_for(SHAPE),
            cell_radius=radius,
        )
        assert n == 1
        crops = [tuple(x.shape[2:]) for x in model.unet.inputs[calls:]]
        return out[1], daughters, crops

    _, _, native_crops = scene(1.0)
    found, daughters, crops = scene(factor)
    assert crops == native_crops
    np.testing.assert_allclose(
        found.positions[np.argsort(found.positions[:, 2])], daughters, atol=0.5 * factor
    )


def test_frames_enlarged_for_small_nuclei_are_refined_over_their_own_pixels(division):
    """Enlarging (cell_radius below the model's) does not change the refinement crops."""
    images, model, raw = division

    def crops(cell_radius):
        wrapped = InferenceModel(
            model, DetectionConfig(), NormalizationConfig(mode="none", reference_radius=3.0)
        )
        calls = model.calls
        refine_divisions(
            images,
            wrapped,
            lineage(0.9),
            raw,
            z_ratio=1.0,
            division_threshold=0.5,
            tiling=tiling_for(SHAPE),
            cell_radius=cell_radius,
        )
        return [tuple(x.shape) for x in model.inputs[calls:]]

    assert crops(1.5) == crops(None)
