"""Detector adaptation from corrections: sparse targets, the few-step training, cancel, and
re-detection of the frames nobody approved."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cellect.data.synthetic import generate
from napari_cellect.data.synthetic.config import SyntheticConfig
from napari_cellect.errors import Cancelled, InputError
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.progress import run_to_end
from napari_cellect.session.jobs import frames_to_redetect, redetect_relink_job
from napari_cellect.track.corrections import CorrectionSet, build_corrections
from napari_cellect.track.detections import Detections
from napari_cellect.track.graph import NO_PARENT, TrackGraph
from napari_cellect.train.adapt_targets import correction_annotation, crop_targets
from napari_cellect.train.adapt_unet import (
    AdaptConfig,
    adapt_detector,
    adapt_detector_part,
    correction_loss,
    trained_parameters,
)

Z_RATIO = 2.0


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sequence():
    return generate(
        SyntheticConfig(frames=4, shape=(16, 64, 64), n_cells=8, seed=3, z_ratio=Z_RATIO)
    )


@pytest.fixture(scope="module")
def corrections(sequence) -> CorrectionSet:
    """The first three frames corrected to the truth and approved."""
    graph = sequence.graph.copy()
    graph.set_values("approved", graph.ids, graph["t"] <= 2)
    return build_corrections(graph, z_ratio=Z_RATIO)


def three_nodes() -> CorrectionSet:
    """Frame 0: an approved node A, an unreviewed neighbour C (stored as context), and a deleted
    false detection B."""
    nodes = {
        "id": [1, 2],
        "t": [0, 0],
        "z": [8.0, 8.0],
        "y": [20.0, 20.0],
        "x": [20.0, 34.0],
        "radius": [5.0, 5.0],
        "approved": [True, False],
        "hand_added": [False, False],
    }
    removed = {"id": [9], "t": [0], "z": [8.0], "y": [44.0], "x": [44.0], "radius": [4.0]}
    return CorrectionSet(nodes=nodes, removed=removed, starts=[1], z_ratio=Z_RATIO)


def test_targets_positive_at_an_approved_node_negative_at_a_deleted_one_ignored_elsewhere():
    annotation = correction_annotation(three_nodes())
    tg = crop_targets(annotation, 0, (0, 0, 0), (16, 64, 64))
    a, b, c, far = (8, 20, 20), (8, 44, 44), (8, 20, 34), (8, 60, 2)
    assert tg.seg[a] == 1 and tg.valid[a] and tg.centre[a] == 4 and tg.radius[a] == 5.0
    assert tg.seg[b] == 0 and tg.valid[b] and tg.centre[b] == 0
    assert not tg.valid[c], "an unreviewed node is not taught as background"
    assert not tg.valid[far], "voxels nobody looked at are ignored"
    assert tg.valid[8, 20, 26], "the shell around an approved node is reviewed background"
    assert tg.seg[8, 20, 26] == 0
    # A has no approved child and no division label: whether it divides is unknown
    assert not tg.division_valid[0][a] and tg.division_valid[0][b]


def test_targets_of_a_division_and_its_daughters():
    nodes = {
        "id": [1, 2, 3],
        "t": [0, 1, 1],
        "z": [8.0, 8.0, 8.0],
        "y": [30.0, 22.0, 38.0],
        "x": [30.0, 30.0, 30.0],
        "radius": [5.0, 4.0, 4.0],
        "approved": [True] * 3,
        "hand_added": [False] * 3,
    }
    cs = CorrectionSet(
        nodes=nodes,
        positive_links=[[1, 2], [1, 3]],
        starts=[1],
        division_nodes=[1],
        division_divides=[True],
        z_ratio=Z_RATIO,
    )
    annotation = correction_annotation(cs)
    tg = crop_targets(annotation, 0, (0, 0, 0), (16, 64, 64))
    assert tg.division[0][8, 30, 30] == 1 and tg.division_valid[0][8, 30, 30]
    assert tg.division[1][8, 22, 30] == 1 and tg.division[1][8, 38, 30] == 1
    assert tg.division_valid[1][8, 22, 30]
    nxt = crop_targets(annotation, 1, (0, 0, 0), (16, 64, 64), previous=0)
    # the daughters share their mother's label: the embedding's positive pairs
    assert set(nxt.cells.lineage.tolist()) == {int(tg.cells.label[0])}


def test_nothing_reviewed_is_a_clear_error():
    nodes = {
        "id": [1],
        "t": [0],
        "z": [8.0],
        "y": [20.0],
        "x": [20.0],
        "radius": [5.0],
        "approved": [False],
        "hand_added": [False],
    }
    with pytest.raises(InputError, match="no reviewed cell"):
        correction_annotation(CorrectionSet(nodes=nodes, z_ratio=Z_RATIO))


def test_a_few_steps_train_only_the_heads_and_fit_the_corrections(sequence, corrections):
    base = ModelBundle.load_default()
    before = {k: v.clone() for k, v in base.unet.state_dict().items()}
    cfg = AdaptConfig(steps=6, lr=5e-3, seed=1)
    steps = []
    tuned = adapt_detector(base, corrections, sequence.images, config=cfg, progress=steps.append)
    assert steps[-1].done == steps[-1].total == 6
    trained = set(trained_parameters(tuned.unet))
    changed = {k for k, v in tuned.unet.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and changed <= trained
    assert all(torch.equal(v, before[k]) for k, v in base.unet.state_dict().items())
    assert tuned.metadata.name.endswith("+det1")
    # trained on the frames as they are, the adapted model never shrinks them in z
    assert base.normalization.min_z_ratio == 2.0 and tuned.normalization.min_z_ratio is None
    assert correction_loss(tuned, corrections, sequence.images, config=cfg) < correction_loss(
        base, corrections, sequence.images, config=cfg
    )


def test_the_last_decoder_block_trains_when_asked():
    unet = ModelBundle.random().unet
    heads_only = set(trained_parameters(unet))
    with_block = set(trained_parameters(unet, decoder_blocks=1))
    extra = with_block - heads_only
    assert extra and all(k.startswith(("trunk.dec.2.", "trunk.up.2.")) for k in extra)


def test_cancel_leaves_the_bundle_untouched(sequence, corrections):
    base = ModelBundle.load_default()
    before = {k: v.clone() for k, v in base.unet.state_dict().items()}
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        adapt_detector(
            base,
            corrections,
            sequence.images,
            config=AdaptConfig(steps=20),
            should_stop=lambda: next(calls) >= 5,
        )
    work = adapt_detector_part(
        base, corrections, sequence.images, None, config=AdaptConfig(steps=20)
    )
    for _ in range(6):
        next(work)
    work.close()  # what a widget's Cancel does
    assert all(torch.equal(v, before[k]) for k, v in base.unet.state_dict().items())


def test_corrections_outside_the_images_are_refused(sequence, corrections):
    with pytest.raises(InputError, match="frame"):
        run_to_end(
            adapt_detector_part(ModelBundle.load_default(), corrections, sequence.images[:2], None)
        )


# ------------------------------------------------------------------------- re-detection


def chain(n_frames: int, approved_until: int) -> TrackGraph:
    """Two cells per frame moving right, linked; frames 0..approved_until approved."""
    t = np.repeat(np.arange(n_frames), 2)
    ids = np.arange(len(t))
    parent = np.where(t > 0, ids - 2, NO_PARENT)
    return TrackGraph.from_arrays(
        id=ids,
        t=t,
        z=np.full(len(t), 8.0),
        y=np.tile([20.0, 44.0], n_frames),
        x=10.0 + 3.0 * t,
        radius=np.full(len(t), 4.0),
        parent_id=parent,
        approved=t <= approved_until,
    )


def test_frames_to_redetect_are_the_unapproved_ones_and_their_neighbours():
    graph = chain(8, approved_until=3)
    assert frames_to_redetect(graph, 8) == [3, 4, 5, 6, 7]
    assert frames_to_redetect(graph, 10) == [3, 4, 5, 6, 7, 8, 9]  # frames without nodes


def test_redetection_touches_only_unapproved_frames_and_keeps_approved_links(monkeypatch):
    graph = chain(6, approved_until=2)
    # the approved part has a deliberately odd link: cell 0 -> the other cell of frame 1
    graph.set_parent([2, 3], [NO_PARENT, NO_PARENT])
    graph.set_parent([3, 2], [0, 1])
    graph.set_values("approved", [2, 3], [True, True])
    model = ModelBundle.random(embedding_dim=4)
    asked = []

    def fake_detect(images, bundle, *, frames, **kwargs):
        asked.extend(frames)
        out = []
        for t in frames:
            rows = graph.frame(t)
            out.append(
                Detections(
                    t,
                    graph.positions(rows),
                    np.zeros((len(rows), 4), np.float32),
                    graph["radius"][rows],
                    np.zeros((len(rows), 2), np.float32),
                    np.ones(len(rows), np.float32),
                )
            )
        yield from ()
        return out

    monkeypatch.setattr("napari_cellect.pipeline.iter_detect", fake_detect)
    images = np.zeros((6, 16, 64, 64), np.float32)
    out = run_to_end(
        redetect_relink_job(
            images,
            model,
            graph.copy(),
            None,
            z_ratio=Z_RATIO,
            corrections=None,
            device="cpu",
            should_stop=lambda: False,
        )
    )
    assert asked == out.frames == [2, 3, 4, 5]
    new = out.relink.graph
    for child, parent in ((3, 0), (2, 1), (5, 3)):
        if graph["approved"][graph.index_of([child])[0]]:
            assert new.parent_of(child) == parent
    assert len(out.detections) == 6 and len(out.detections[0]) == 0


def test_a_frame_whose_every_detection_was_reviewed_counts_as_a_whole():
    cs = three_nodes()
    cs.nodes["approved"][:] = True  # C reviewed too
    dets = Detections(
        0,
        np.array([[8.0, 20.0, 21.0], [8.0, 44.0, 44.0], [8.0, 20.0, 34.0]]),
        np.zeros((3, 4), np.float32),
        np.full(3, 5.0, np.float32),
        np.zeros((3, 2), np.float32),
        np.ones(3, np.float32),
    )
    whole = crop_targets(correction_annotation(cs, [dets]), 0, (0, 0, 0), (16, 64, 64))
    assert whole.valid.all() and whole.seg[8, 60, 2] == 0
    stray = Detections.concat([dets, dets.subset([0])])
    stray.positions[-1] = [8.0, 60.0, 60.0]  # a detection nobody looked at
    partial = crop_targets(correction_annotation(cs, [stray]), 0, (0, 0, 0), (16, 64, 64))
    assert not partial.valid[8, 60, 2]


def test_cli_finetune_adapts_the_detector(tmp_path, sequence, capsys):
    import tifffile

    from napari_cellect.cli import main
    from napari_cellect.data.export import write_csv

    images = tmp_path / "images"
    images.mkdir()
    for t, frame in enumerate(np.asarray(sequence.images)):
        tifffile.imwrite(images / f"t{t:03d}.tif", frame.astype(np.uint16))
    graph = sequence.graph.copy()
    graph.set_values("approved", graph.ids, graph["t"] <= 2)
    tracks = tmp_path / "corrected.csv"
    write_csv(graph, tracks)
    common = [
        "finetune",
        "--tracks",
        str(tracks),
        "--images",
        str(images),
        "--axes",
        "ZYX",
        "--z-ratio",
        str(Z_RATIO),
        "--epochs",
        "2",
        "--adapt-detector",
        "--adapt-steps",
        "2",
        "--device",
        "cpu",
    ]
    # the base model makes no error on the held-back frame: the guard adopts nothing
    assert main([*common, "-o", str(tmp_path / "tuned.pt")]) == 0
    out = capsys.readouterr().out
    assert "will train link scorer, detector" in out and "detector about" in out
    assert "detector not adopted (the base part is kept): no fewer errors on " in out
    assert "parts: detector not adopted" in out and "no model written" in out
    assert not (tmp_path / "tuned.pt").exists()
    # without the guard every part is adopted: the adapted U-Net, scorers tuned on its detections
    assert main([*common, "--no-guard", "-o", str(tmp_path / "tuned.pt")]) == 0
    out = capsys.readouterr().out
    assert "parts: detector adopted" in out and "track again with the new model" in out
    tuned = ModelBundle.load(tmp_path / "tuned.pt")
    events = [e["event"] for e in tuned.metadata.history]
    assert "adapt_detector" in events and events[-2:] == ["finetune", "guard"]
    assert tuned.metadata.history[events.index("adapt_detector")]["frames"] == "0, 1, 2"
    base = ModelBundle.load_default()
    assert not torch.equal(
        tuned.unet.state_dict()["heads.weight"], base.unet.state_dict()["heads.weight"]
    )
    assert main([*common, "-o", str(tmp_path / "no.pt"), "--cell-radius", "6"]) == 2
    assert "--adapt-detector works on the frames as they are" in capsys.readouterr().err


def test_detection_counts_of_a_bundle_on_reviewed_frames(sequence, corrections):
    from napari_cellect.train.adapt_unet import detection_counts

    base = ModelBundle.load_default()
    counts = detection_counts(base, corrections, sequence.images, [1, 2], device="cpu")
    reviewed = int(np.count_nonzero(np.isin(sequence.graph["t"], [1, 2])))
    assert counts.tp + counts.fn == reviewed
    assert 0.0 <= counts.f1 <= 1.0 and counts.tp > 0
