"""Continue training the default model on the wide distribution, in resumable steps.

The training state lives in the repository, ``benchmarks/checkpoints/default-wide.ckpt`` (weights,
optimiser, scheduler, step, history, best weights, training config) with its data set-up beside
it in ``default-wide.json``; every random draw follows from the seed and the step, so a resumed run
takes exactly the steps an uninterrupted one would have taken
(:mod:`napari_cellect.train.resumable`).

- ``--init``: a new state, warm-started from the bundled default model (its weights,
  normalisation and tuned thresholds); refuses to overwrite an existing state. With
  ``--minutes`` or ``--steps`` it then trains at once.
- no option, or ``--minutes N`` / ``--steps N``: resume and train that long (rounded up to whole
  chunks of 50 steps). The state is written atomically after every chunk (with a validation on
  the validation series only); Ctrl+C stops after the running chunk, twice stops at once.
  ``--device auto`` (default) uses a GPU when there is one; ``--workers N`` draws crops in N
  processes beside a GPU.
- ``--export-bundle OUT``: the best chunk's weights by validation, with the detection and
  division thresholds calibrated on the validation series, as a bundle (never the packaged model).
- ``--promote CANDIDATE``: tracks the validation series (``bench_validation.py``'s) with the
  bundled default model and the candidate, and replaces the bundled model only when no figure
  (detection, link, division F1 per series) is worse by more than 0.01.

Data: the training series of the current default model (its presets and randomised seeds, so that
nothing it learned is forgotten) plus ``WIDE_PER_ROUND`` series of
:func:`~napari_cellect.data.synthetic.sample_wide_config`, replaced by fresh seeds every
``ROUND_CHUNKS`` chunks; validation: the default model's validation series plus wide seeds 311
and 312 (seeds 301-313 are validation seeds; the test seeds 4xx/5xx are never seen here).

Run: ``nice -n 19 python benchmarks/train_continue.py --minutes 20`` (CPU), or on a machine with a
GPU ``python benchmarks/train_continue.py --minutes 30 --workers 8``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import train_default

from napari_cellect.data.atomic import atomic_write
from napari_cellect.data.synthetic import PRESETS, generate, sample_wide_config
from napari_cellect.infer.device import resolve_device
from napari_cellect.model.bundle import DEFAULT_BUNDLE_PATH, ModelBundle
from napari_cellect.train.config import TrainConfig
from napari_cellect.train.data import SamplingConfig, TrainSource
from napari_cellect.train.fit import Trainer, TrainProgress, load_checkpoint
from napari_cellect.train.resumable import ChunkStop, run_chunks, stop_on_interrupt

logger = logging.getLogger("train_continue")

CHECKPOINTS = Path(__file__).parent / "checkpoints"
STATE = CHECKPOINTS / "default-wide.ckpt"
RESULTS = Path(__file__).parent / "results"

#: steps per chunk (one Trainer epoch: a validation and a checkpoint after each)
CHUNK_STEPS = 50
#: wide series per round and chunks per round (then fresh seeds)
WIDE_PER_ROUND = 10
ROUND_CHUNKS = 20
WIDE_SEED0 = 10_000
#: frames of a wide series (fewer than the presets' 20: more series in the same memory)
WIDE_FRAMES = 12
#: validation series of the wide distribution (validation seeds)
VAL_WIDE = [311, 312]

CONFIG = TrainConfig(
    epochs=100_000,  # a horizon, never reached: runs end by steps, time or Ctrl+C
    steps_per_epoch=CHUNK_STEPS,
    batch_size=2,
    lr=5e-4,
    lr_final_factor=1.0,  # constant after the warm-up: the schedule ignores the horizon
    warmup_steps=50,
    preset="small",
    embedding_dim=32,
    sampling=SamplingConfig(crop=(16, 96, 96), division_fraction=0.4, cell_fraction=0.4),
    validation_frames=1,
    validation_crops=2,
    name="cellect-default",
)


def _wide(seed: int) -> Any:
    base = dataclasses.replace(PRESETS["default"], seed=seed, frames=WIDE_FRAMES)
    return sample_wide_config(seed, base)


def _data_setup() -> dict[str, Any]:
    return {
        "presets": train_default.TRAIN_PRESETS,
        "randomised": train_default.TRAIN_RANDOMISED,
        "wide_per_round": WIDE_PER_ROUND,
        "round_chunks": ROUND_CHUNKS,
        "wide_seed0": WIDE_SEED0,
        "wide_frames": WIDE_FRAMES,
        "val_presets": train_default.VAL_PRESETS,
        "val_randomised": train_default.VAL_RANDOMISED,
        "val_wide": VAL_WIDE,
    }


def _series(configs: list[Any], role: str, workers: int) -> list[TrainSource]:
    started = time.perf_counter()
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            sequences = list(pool.map(generate, configs))
    else:
        sequences = [generate(c) for c in configs]
    logger.info("%d %s series made in %.0f s", len(configs), role, time.perf_counter() - started)
    return [
        TrainSource(s.images, s.graph, c.z_ratio, name=f"synthetic seed {c.seed}")
        for c, s in zip(configs, sequences)
    ]


_MADE: dict[int, tuple[list[TrainSource], list[TrainSource]]] = {}


def _sources(
    data: dict[str, Any], chunk: int, workers: int
) -> tuple[list[TrainSource], list[TrainSource]]:
    """The training series of the round that ``chunk`` belongs to, and the validation series
    (made once per round in a process)."""
    round_ = chunk // data["round_chunks"]
    if round_ in _MADE:
        return _MADE[round_]
    first = data["wide_seed0"] + round_ * data["wide_per_round"]
    train = [train_default._config(p, s, False) for p, s in data["presets"]]
    train += [train_default._randomised(s, False) for s in data["randomised"]]
    train += [_wide(s) for s in range(first, first + data["wide_per_round"])]
    val = [train_default._config(p, s, False) for p, s in data["val_presets"]]
    val += [train_default._randomised(s, False) for s in data["val_randomised"]]
    val += [_wide(s) for s in data["val_wide"]]
    logger.info("round %d: wide seeds %d-%d", round_, first, first + data["wide_per_round"] - 1)
    _MADE.clear()  # one round in memory at a time
    _MADE[round_] = _series(train, "training", workers), _series(val, "validation", workers)
    return _MADE[round_]


def _write_json(path: Path, value: dict[str, Any]) -> None:
    with atomic_write(path, mode="w") as handle:
        handle.write(json.dumps(value, indent=2, default=str))


def _init(args: argparse.Namespace) -> int:
    if args.state.exists():
        print(f"{args.state} exists: resume it, or remove it to start again", file=sys.stderr)
        return 2
    default = ModelBundle.load(DEFAULT_BUNDLE_PATH)
    config = dataclasses.replace(
        CONFIG, thresholds=default.thresholds, normalization=default.normalization
    )
    data = _data_setup()
    train, val = _sources(data, 0, args.workers)
    args.state.parent.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(train, val, config, checkpoint=args.state, init=default)
    trainer.checkpoints.save(trainer.loop)
    _write_json(args.state.with_suffix(".json"), {"data": data, "runs": []})
    print(
        f"new training state {args.state} from the bundled default model "
        f"({args.state.stat().st_size / 1e6:.1f} MB)"
    )
    return _train(args) if args.minutes or args.steps else 0


def _train(args: argparse.Namespace) -> int:
    meta_path = args.state.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    data = meta["data"]
    device = str(resolve_device(args.device))
    stop: ChunkStop | None = None
    started = time.perf_counter()
    first_step = 0
    reason = "all epochs done"
    with_config = dataclasses.replace(CONFIG, device=device, workers=args.workers)

    def progress(p: TrainProgress) -> None:
        if p.phase == "train" and p.step % 10 == 0:
            logger.info("step %d: loss %.4f", p.step, p.losses.get("total", float("nan")))

    while True:
        done = int(load_checkpoint(args.state)["epoch"])
        train, val = _sources(data, done, args.workers)
        # the saved configuration (horizon, schedule) is kept: only device and workers change
        trainer = Trainer(
            train, val, with_config, checkpoint=args.state, resume=args.state, progress=progress
        )
        if stop is None:
            first_step = trainer.loop.step
            stop = ChunkStop(
                lambda: trainer.loop.step,  # noqa: B023 (this round's trainer)
                trainer.config.steps_per_epoch,
                max_steps=args.steps,
                minutes=args.minutes,
            )
        stop.step = lambda: trainer.loop.step  # noqa: B023 (this round's trainer)
        end_of_round = (done // data["round_chunks"] + 1) * data["round_chunks"]
        stop.until = end_of_round * trainer.config.steps_per_epoch
        with stop_on_interrupt(stop):
            reason = run_chunks(trainer, stop)
        if reason != "until reached":  # else: the next round's series, then on
            break
    seconds = time.perf_counter() - started
    state = load_checkpoint(args.state)
    run = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() - seconds)),
        "device": device,
        "minutes": round(seconds / 60, 1),
        "from_step": first_step,
        "to_step": int(state["step"]),
        "stopped": reason,
        "last_validation": state["history"][-1]["metrics"] if state["history"] else None,
    }
    meta["runs"].append(run)
    _write_json(meta_path, meta)
    print(json.dumps(run, indent=2, default=str))
    return 0


def _export(args: argparse.Namespace) -> int:
    meta = json.loads(args.state.with_suffix(".json").read_text())
    state = load_checkpoint(args.state)
    done = int(state["epoch"])
    train, val = _sources(meta["data"], max(done - 1, 0), args.workers)
    config = dataclasses.replace(CONFIG, epochs=done, device=str(resolve_device(args.device)))
    bundle = Trainer(train, val, config, resume=args.state).run()  # no epochs left: calibrates
    bundle.metadata.notes = (
        f"benchmarks/train_continue.py: {state['step']} steps on the wide "
        f"distribution from the default model"
    )
    bundle.save(args.export_bundle)
    print(f"bundle {args.export_bundle}: best chunk {bundle.metadata.history[-1]}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    import bench_validation

    device = str(resolve_device(args.device))
    rows = {}
    for name in ("default", str(args.promote)):
        bundle = ModelBundle.load_default() if name == "default" else ModelBundle.load(name)
        rows[name] = bench_validation.score_series(bundle, device=device, verbose=False)
    worse = [
        (series, key, a, b)
        for series, old in rows["default"].items()
        for key, a in old.items()
        for b in [rows[str(args.promote)][series][key]]
        if b < a - 0.01
    ]
    for series, old in rows["default"].items():
        new = rows[str(args.promote)][series]
        print(f"{series}: " + ", ".join(f"{k} {old[k]:.3f} -> {new[k]:.3f}" for k in old))
    if worse:
        print(
            "not promoted: worse by more than 0.01 on "
            + ", ".join(f"{s} {k} ({a:.3f} -> {b:.3f})" for s, k, a, b in worse)
        )
        return 1
    shutil.copyfile(args.promote, DEFAULT_BUNDLE_PATH)
    print(f"promoted {args.promote} to {DEFAULT_BUNDLE_PATH}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, default=STATE, help=f"training state ({STATE})")
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--init", action="store_true", help="start a new state from the bundled default model"
    )
    action.add_argument(
        "--export-bundle",
        type=Path,
        metavar="OUT",
        help="write the best weights so far as a calibrated bundle",
    )
    action.add_argument(
        "--promote",
        type=Path,
        metavar="CANDIDATE",
        help="replace the bundled model by CANDIDATE if validation allows",
    )
    parser.add_argument("--minutes", type=float, help="train this long (whole chunks)")
    parser.add_argument("--steps", type=int, help="train this many steps (whole chunks)")
    parser.add_argument("--device", default="auto", help="auto (a GPU if any), cpu, cuda, mps")
    parser.add_argument(
        "--workers", type=int, default=0, help="processes that make the series and draw the crops"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.init:
        return _init(args)
    if not args.state.is_file():
        parser.error(f"no training state at {args.state}: make one with --init")
    if args.export_bundle:
        return _export(args)
    if args.promote:
        return _promote(args)
    return _train(args)


if __name__ == "__main__":
    sys.exit(main())
