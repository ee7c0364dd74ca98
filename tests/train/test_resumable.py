"""Training in resumable chunks (src/napari_cellect/train/resumable.py)."""

from __future__ import annotations

import os
import signal

import torch

from napari_cellect.settings.tiling import TilingConfig
from napari_cellect.train.config import TrainConfig
from napari_cellect.train.data import SamplingConfig
from napari_cellect.train.fit import Trainer, load_checkpoint
from napari_cellect.train.resumable import ChunkStop, run_chunks, stop_on_interrupt


def _config() -> TrainConfig:
    """Tiny model and crops, chunks of 2 steps; a horizon far beyond the run and a constant
    learning rate after the warm-up, so the schedule does not depend on where a run stops."""
    return TrainConfig(
        epochs=1000,
        steps_per_epoch=2,
        batch_size=1,
        embedding_dim=8,
        scorer_hidden=16,
        warmup_steps=1,
        lr_final_factor=1.0,
        sampling=SamplingConfig(crop=(4, 32, 32)),
        tiling=TilingConfig(tile=(4, 48, 48), overlap=(0, 0, 0)),
        validation_frames=1,
        validation_crops=1,
        threshold_grid=(0.3, 0.5),
        device="cpu",
        calibration_frames=0,
        detector_ready_f1=0.0,
    )


def _train(sequences, path, steps, resume):
    train, val = sequences
    trainer = Trainer(train, val, _config(), checkpoint=path, resume=path if resume else None)
    stop = ChunkStop(lambda: trainer.loop.step, trainer.config.steps_per_epoch, max_steps=steps)
    reason = run_chunks(trainer, stop)
    return trainer, reason


def _weights(path):
    state = load_checkpoint(path)
    return {f"{k}.{n}": t for k in ("unet", "merge", "link") for n, t in state["bundle"][k].items()}


def test_resumed_chunks_give_the_weights_of_one_run(sequences, tmp_path):
    straight, split = tmp_path / "straight.ckpt", tmp_path / "split.ckpt"
    trainer, reason = _train(sequences, straight, 6, resume=False)
    assert reason == "6 steps done" and trainer.loop.step == 6
    _train(sequences, split, 2, resume=False)
    assert load_checkpoint(split)["step"] == 2
    _train(sequences, split, 3, resume=True)  # rounds up to whole chunks: 4 more steps
    a, b = _weights(straight), _weights(split)
    assert load_checkpoint(split)["step"] == 6
    for name, tensor in a.items():
        torch.testing.assert_close(b[name], tensor, rtol=0, atol=0, msg=name)
    history = [h["metrics"] for h in load_checkpoint(split)["history"]]
    assert history == [h["metrics"] for h in load_checkpoint(straight)["history"]]


def test_first_interrupt_ends_at_the_chunk_boundary_second_at_once(sequences, tmp_path):
    train, val = sequences
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the suite runs in the background
    path = tmp_path / "run.ckpt"
    trainer = Trainer(train, val, _config(), checkpoint=path)
    stop = ChunkStop(lambda: trainer.loop.step, 2)
    steps = []

    def progress(p):
        if p.phase == "train":
            steps.append(p.step)
            if p.step == 1:
                os.kill(os.getpid(), signal.SIGINT)  # in the middle of the first chunk

    trainer.progress = progress
    with stop_on_interrupt(stop):
        assert run_chunks(trainer, stop) == "stop requested"
    assert steps == [1, 2] and load_checkpoint(path)["step"] == 2

    trainer = Trainer(train, val, _config(), checkpoint=path, resume=path)
    stop = ChunkStop(lambda: trainer.loop.step, 2)

    def twice(p):
        if p.phase == "train":
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    trainer.progress = twice
    with stop_on_interrupt(stop):
        assert run_chunks(trainer, stop) == "stopped at once"
    assert trainer.loop.step == 4 - 1  # stopped before the chunk ended; the checkpoint keeps step 2
    assert load_checkpoint(path)["step"] == 2
    assert signal.getsignal(signal.SIGINT) is before


def test_a_deadline_ends_at_a_chunk_boundary(sequences, tmp_path):
    train, val = sequences
    trainer = Trainer(train, val, _config(), checkpoint=tmp_path / "run.ckpt")
    stop = ChunkStop(lambda: trainer.loop.step, 2, minutes=0.0)
    assert run_chunks(trainer, stop) == "time is up"
    assert trainer.loop.step == 2
