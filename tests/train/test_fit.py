"""The training loop (src/napari_cellect/train/fit.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_cellect.errors import Cancelled, InputError, ModelError
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.settings.linking import LinkingConfig
from napari_cellect.settings.tiling import TilingConfig
from napari_cellect.train.batch_losses import _BatchReader
from napari_cellect.train.config import TrainConfig
from napari_cellect.train.data import SamplingConfig, collate
from napari_cellect.train.fit import Trainer, fit, load_checkpoint
from napari_cellect.train.losses import LossConfig


def tiny_config(**changes) -> TrainConfig:
    config = TrainConfig(
        epochs=2,
        steps_per_epoch=2,
        batch_size=1,
        embedding_dim=8,
        scorer_hidden=16,
        warmup_steps=0,
        sampling=SamplingConfig(crop=(4, 32, 32)),
        tiling=TilingConfig(tile=(4, 48, 48), overlap=(0, 0, 0)),
        validation_frames=1,
        validation_crops=1,
        threshold_grid=(0.3, 0.5),
        device="cpu",
        calibration_frames=1,
        detector_ready_f1=0.0,
    )
    return dataclasses.replace(config, **changes)


def test_a_few_steps_lower_the_loss(sequences):
    train, _ = sequences
    torch.manual_seed(0)  # dropout draws from the global stream: independent of earlier tests
    trainer = Trainer(train, train, tiny_config(lr=3e-3))
    batch = collate([trainer.sampler.sample(np.random.default_rng(i)) for i in range(2)])

    def loss(use_detections: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
        return trainer.losses.compute(batch, np.random.default_rng(0), use_detections)

    trainer.bundle.train(False)
    with torch.no_grad():
        _, before = loss()
    trainer.bundle.train(True)
    for step in range(12):
        total, _parts = loss(use_detections=step % 2 == 1)
        trainer.optimizer.zero_grad()
        total.backward()
        if step == 0:  # the scorers get gradients
            for name, module in (("merge", trainer.merge), ("link", trainer.link)):
                grads = [p.grad for p in module.parameters() if p.grad is not None]
                assert grads and any(g.abs().sum() > 0 for g in grads), name
        trainer.optimizer.step()
    trainer.bundle.train(False)
    with torch.no_grad():
        _, after = loss()
    assert after["total"] < 0.8 * before["total"]
    for key in ("segmentation", "centre", "radius"):
        assert after[key] < before[key], key
    # the per-cell losses alone reach the U-Net (through the embeddings)
    trainer.losses = dataclasses.replace(
        trainer.losses,
        config=dataclasses.replace(
            trainer.config,
            losses=LossConfig(segmentation=0, centre=0, radius=0, division=0, link_division=0),
        ),
    )
    trainer.optimizer.zero_grad()
    total, _ = loss(use_detections=True)
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.unet.parameters())


def test_batch_reader_matches_direct_indexing():
    gen = torch.Generator().manual_seed(0)
    out_shape = (3, 2, 4, 5, 6)
    from napari_cellect.model.unet import UNetOutput

    out = UNetOutput(
        seg=torch.randn(3, 3, 4, 5, 6, generator=gen),
        centre=torch.randn(3, 5, 4, 5, 6, generator=gen),
        embedding=torch.randn(3, 7, 4, 5, 6, generator=gen, requires_grad=True),
        division=torch.randn(*out_shape, generator=gen),
        radius=torch.rand(3, 1, 4, 5, 6, generator=gen),
    )
    reader = _BatchReader(out)
    v1 = np.array([[0, 1, 2], [3, 4, 5]])
    v2 = np.array([[1, 0, 0]])
    r1, r2, r3 = reader.add(2, v1), reader.add(0, v2), reader.add(1, np.zeros((0, 3), int))
    results = reader.run()
    emb, radius, division = results[r1]
    torch.testing.assert_close(emb, out.embedding[2, :, v1[:, 0], v1[:, 1], v1[:, 2]].T)
    torch.testing.assert_close(radius, out.radius[2, 0, v1[:, 0], v1[:, 1], v1[:, 2]])
    torch.testing.assert_close(
        division, torch.sigmoid(out.division[2, :, v1[:, 0], v1[:, 1], v1[:, 2]].T)
    )
    torch.testing.assert_close(results[r2][0], out.embedding[0, :, 1, 0, 0][None])
    assert results[r3][0].shape == (0, 7)
    emb.sum().backward()
    assert out.embedding.grad[2, :, 0, 1, 2].abs().sum() > 0


def test_checkpoint_and_resume_continue_exactly(sequences, tmp_path):
    train, val = sequences
    straight = tmp_path / "straight.ckpt"
    bundle_a = fit(train, val, tiny_config(), checkpoint=straight)
    state_a = load_checkpoint(straight)
    assert state_a["epoch"] == 2 and state_a["step"] == 4
    assert len(state_a["history"]) == 2

    # the same run, interrupted in its second epoch, then resumed from its checkpoint
    split = tmp_path / "split.ckpt"
    polls = iter(range(100))
    with pytest.raises(Cancelled):
        fit(train, val, tiny_config(), checkpoint=split, should_stop=lambda: next(polls) >= 2)
    first = load_checkpoint(split)
    assert first["epoch"] == 1 and first["step"] == 2
    opt_steps = {int(s["step"]) for s in first["optimizer"]["state"].values()}
    assert opt_steps == {2}
    bundle_b = fit(train, val, tiny_config(epochs=2), resume=split, checkpoint=split)
    state_b = load_checkpoint(split)
    assert state_b["step"] == 4
    assert {int(s["step"]) for s in state_b["optimizer"]["state"].values()} == {4}
    for key in ("unet", "merge", "link"):
        for name, tensor in state_a["bundle"][key].items():
            torch.testing.assert_close(
                state_b["bundle"][key][name], tensor, rtol=0, atol=0, msg=f"{key}.{name}"
            )
    assert [h["metrics"] for h in state_a["history"]] == [h["metrics"] for h in state_b["history"]]
    for key in ("unet", "merge", "link"):
        for (name, a), b in zip(bundle_a.to_dict()[key].items(), bundle_b.to_dict()[key].values()):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_training_with_workers_gives_the_same_model(sequences):
    train, val = sequences
    config = tiny_config(calibration_frames=0)
    alone = fit(train, val, config)
    parallel = fit(train, val, dataclasses.replace(config, workers=2))
    for a, b in zip(alone.modules(), parallel.modules()):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            torch.testing.assert_close(x, y, msg=name)


def test_fit_returns_a_calibrated_bundle_that_saves(sequences, tmp_path):
    train, val = sequences
    seen = []
    bundle = fit(train, val, tiny_config(epochs=1), progress=seen.append)
    phases = [p.phase for p in seen]
    assert phases.count("train") == 2 and "validate" in phases and phases[-1] == "done"
    assert [p.step for p in seen if p.phase == "train"] == [1, 2]
    assert bundle.thresholds.detection.threshold in (0.3, 0.5)
    event = bundle.metadata.history[-1]
    assert event["event"] == "train" and event["steps"] == 2
    path = bundle.save(tmp_path / "model.pt")
    loaded = ModelBundle.load(path)
    assert loaded.thresholds == bundle.thresholds
    assert loaded.unet.config.embedding_dim == 8
    # the nucleus size it knows, for resizing other images to it: the median annotated radius
    assert loaded.normalization.reference_radius == pytest.approx(np.median(train[0][1]["radius"]))
    assert 4.0 <= loaded.normalization.reference_radius <= 5.0
    # thinner volumes are padded in z to the depth of its training crops
    assert loaded.normalization.min_depth == 4


def test_should_stop_cancels(sequences):
    train, val = sequences
    with pytest.raises(Cancelled, match="epoch 1"):
        fit(train, val, tiny_config(), should_stop=lambda: True)


def test_resume_rejects_other_files(tmp_path, sequences):
    train, val = sequences
    bogus = tmp_path / "bogus.ckpt"
    torch.save({"format": "something else"}, bogus)
    with pytest.raises(ModelError, match="not a napari-cellect training checkpoint"):
        fit(train, val, tiny_config(), resume=bogus)
    with pytest.raises(ModelError, match="not found"):
        fit(train, val, tiny_config(), resume=tmp_path / "missing.ckpt")


def test_train_config_round_trip():
    config = tiny_config(seed=3, duplicate_offset=(0.1, 0.5))
    again = TrainConfig.from_dict(config.to_dict())
    assert again == config


def test_candidate_features_match_inference_scoring():
    """The features training builds give the same scores as ModelScorer at inference."""
    from napari_cellect.model.pair_scorer import PairScorerConfig, build_scorer
    from napari_cellect.model.scoring import ModelScorer
    from napari_cellect.track.detections import Detections
    from napari_cellect.track.scoring_protocol import nearest_candidates
    from napari_cellect.train.fit import candidate_features

    rng = np.random.default_rng(0)

    def dets(n: int) -> Detections:
        return Detections(
            t=0,
            positions=rng.uniform(0, 30, (n, 3)),
            embeddings=rng.normal(size=(n, 8)).astype(np.float32),
            radius=rng.uniform(3, 6, n),
            division=rng.uniform(0, 1, (n, 2)),
            score=np.ones(n),
        )

    with torch.random.fork_rng():
        torch.manual_seed(0)
        scorer = build_scorer(PairScorerConfig(kind="link", k=5, embedding_dim=8, hidden=16))
    scorer.eval()
    query, cands = dets(6), dets(3)  # fewer candidates than k: padded slots
    cand_idx, _ = nearest_candidates(query.positions, cands.positions, 5, 2.5)
    expected = ModelScorer(scorer).score(query, cands, cand_idx, 2.5)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32)

    feats, mask = candidate_features(
        query.positions,
        t(query.embeddings),
        t(query.radius),
        t(query.division),
        cands.positions,
        t(cands.embeddings),
        t(cands.radius),
        t(cands.division),
        cand_idx,
        2.5,
    )
    with torch.no_grad():
        p_match, p_none, p_div = scorer(feats, mask).probabilities()
    np.testing.assert_allclose(p_match.numpy() * (cand_idx >= 0), expected.p_match, atol=1e-6)
    np.testing.assert_allclose(p_none.numpy(), expected.p_none, atol=1e-6)
    np.testing.assert_allclose(p_div.numpy(), expected.p_divide, atol=1e-6)


def test_division_threshold_calibration(sequences, monkeypatch):
    from napari_cellect.track.detections import Detections
    from napari_cellect.track.graph import TrackGraph
    from napari_cellect.track.scoring_protocol import CandidateScores
    from napari_cellect.train import validation as validation_module
    from napari_cellect.train.targets import AnnotationIndex, TargetConfig

    p_divide = np.array([0.9, 0.35, 0.2, 0.1, 0.4, 0.05], np.float32)

    class StubScorer:
        def __init__(self, model):
            pass

        def score(self, query, cands, cand_idx, z_ratio):
            m, k = cand_idx.shape
            return CandidateScores(
                np.zeros((m, k), np.float32), np.ones(m, np.float32), p_divide[:m]
            )

    monkeypatch.setattr(validation_module, "ModelScorer", StubScorer)
    train, _ = sequences
    trainer = Trainer(train, None, tiny_config(min_calibration_divisions=1))
    # six cells; the first two divide (two children each)
    ids = np.arange(1, 7)
    graph = TrackGraph.from_arrays(
        id=np.concatenate([ids, [11, 12, 13, 14]]),
        t=[0] * 6 + [1] * 4,
        z=np.ones(10),
        y=np.concatenate([ids * 6.0, [5, 7, 11, 13]]),
        x=np.full(10, 8.0),
        parent_id=np.concatenate([np.full(6, -1), [1, 1, 2, 2]]),
    )
    cells = AnnotationIndex(graph, TargetConfig()).frame_cells(0, (0, 0, 0), (4, 48, 48), 2.0)
    det = Detections(
        t=0,
        positions=cells.positions,
        embeddings=np.zeros((6, 8), np.float32),
        radius=np.full(6, 3.0),
        division=np.zeros((6, 2)),
        score=np.ones(6),
    )
    predictions = [{"frames": [(det, cells), (det, cells)], "z_ratio": 2.0}]
    scorer_alone = LinkingConfig(detector_division_weight=0.0)
    threshold, f1 = trainer.validation.division_threshold(predictions, 0.5, scorer_alone)
    assert threshold == 0.3 and f1 == pytest.approx(0.8)
    trainer.validation.config = dataclasses.replace(trainer.config, min_calibration_divisions=3)
    too_few = trainer.validation.division_threshold(predictions, 0.5, scorer_alone)
    assert too_few is None  # too few mothers


def test_warm_start_copies_the_weights_of_a_bundle(sequences):
    train, val = sequences
    source = Trainer(train, val, tiny_config(seed=7)).bundle
    trainer = Trainer(train, val, tiny_config(seed=0), init=source)
    for mine, theirs in zip(trainer.bundle.modules(), source.modules()):
        for key, value in theirs.state_dict().items():
            assert torch.equal(mine.state_dict()[key], value), key
    assert trainer.bundle.metadata.history[-1]["event"] == "initialised"
    fresh = Trainer(train, val, tiny_config(seed=0)).bundle
    assert not all(
        torch.equal(a, b)
        for a, b in zip(fresh.unet.state_dict().values(), source.unet.state_dict().values())
    )


def test_warm_start_refuses_another_architecture(sequences):
    train, val = sequences
    source = Trainer(train, val, tiny_config(embedding_dim=4)).bundle
    with pytest.raises(InputError, match="embedding_dim"):
        Trainer(train, val, tiny_config(), init=source)
