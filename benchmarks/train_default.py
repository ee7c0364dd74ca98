"""Train the bundled default model (``src/napari_cellect/model/weights/default.pt``).

The model learns from the synthetic generator only (:mod:`napari_cellect.data.synthetic`):

- **training**: every preset that looks like a 3D(+t) embryo (``default``, ``dense``, ``noisy``,
  ``fast``, ``hard``, plus ``sparse2d`` for 2D+t) with their own seeds, and domain-randomised
  configs (:func:`~napari_cellect.data.synthetic.sample_config`: anisotropy 1-5, radii, density,
  speed, noise, optics);
- **validation** (model selection and the detection threshold): held-out seeds of ``default``,
  ``noisy`` and ``hard`` and one randomised config;
- **test** (reported, never used for training): the whole tracker
  (:func:`napari_cellect.pipeline.track_images`: predict, merge, link) on further held-out seeds,
  scored by :func:`napari_cellect.evaluate.evaluate` (detection, link and division F1, TRA).

The full run is sized for about 30-45 minutes on 2 CPU cores (``small`` U-Net, crops of
16 x 96 x 96, batch 2). It writes the bundle, a checkpoint after every epoch (``--resume``
continues it) and a JSON report with the validation history and the test scores.

Run: ``python benchmarks/train_default.py`` (``--quick``: tiny data and two short epochs into a
temporary folder, to check the script; ``--out``, ``--epochs``, ``--steps-per-epoch``,
``--device``, ``--resume``, ``--no-test``; ``--init BUNDLE`` starts from a trained bundle, e.g. the
current default model, with ``--lr`` and ``--division-fraction`` for such a second phase).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from napari_cellect.data.synthetic import PRESETS, generate, sample_config
from napari_cellect.data.synthetic.config import SyntheticConfig
from napari_cellect.errors import Cancelled
from napari_cellect.evaluate import evaluate
from napari_cellect.model.bundle import DEFAULT_BUNDLE_PATH, ModelBundle
from napari_cellect.pipeline import track_images
from napari_cellect.settings.normalization import NormalizationConfig
from napari_cellect.train.config import TrainConfig
from napari_cellect.train.data import SamplingConfig, TrainSource
from napari_cellect.train.fit import TrainProgress, fit, load_checkpoint

logger = logging.getLogger("train_default")

RESULTS = Path(__file__).parent / "results"

#: (preset, seed) of the training series; seeds never reused below
TRAIN_PRESETS = [
    ("default", 101),
    ("default", 102),
    ("dense", 103),
    ("noisy", 104),
    ("noisy", 105),
    ("fast", 106),
    ("hard", 107),
    ("hard", 108),
    ("sparse2d", 109),
]
#: seeds of domain-randomised training series (sample_config on the default preset)
TRAIN_RANDOMISED = [201, 202, 203, 204, 205, 206]
#: ``--data extended`` adds these (phase 4, on a GPU): more 2D+t, hard, fast and dense series
EXTENDED_PRESETS = [
    ("sparse2d", 110),
    ("sparse2d", 111),
    ("sparse2d", 112),
    ("hard", 113),
    ("hard", 114),
    ("hard", 115),
    ("fast", 116),
    ("fast", 117),
    ("dense", 118),
    ("dense", 119),
    ("noisy", 120),
]
EXTENDED_RANDOMISED = [207, 208, 209, 210, 211, 212, 213, 214]
VAL_PRESETS = [("default", 301), ("noisy", 302), ("hard", 303)]
VAL_RANDOMISED = [304]
#: ``--data extended`` also selects the epoch on these (the threshold tuner's further series)
EXTENDED_VAL_PRESETS = [("sparse2d", 309), ("fast", 305), ("dense", 306)]
TEST_PRESETS = [("default", 401), ("noisy", 402), ("dense", 403), ("hard", 404)]

FULL = TrainConfig(
    epochs=24,
    steps_per_epoch=120,
    batch_size=2,
    lr=2e-3,
    warmup_steps=100,
    preset="small",
    embedding_dim=32,
    sampling=SamplingConfig(crop=(16, 96, 96)),
    validation_frames=1,
    validation_crops=4,
    name="cellect-default",
    # near-isotropic stacks are shrunk in z to this spacing (docs/benchmarks.md, "z spacing")
    normalization=NormalizationConfig(min_z_ratio=2.0),
)
QUICK = dataclasses.replace(
    FULL,
    epochs=2,
    steps_per_epoch=4,
    warmup_steps=2,
    validation_frames=1,
    validation_crops=1,
    sampling=SamplingConfig(crop=(8, 32, 32)),
    name="cellect-default-quick",
)


def _config(preset: str, seed: int, quick: bool) -> SyntheticConfig:
    config = dataclasses.replace(PRESETS[preset], seed=seed)
    if quick:
        z = 1 if config.is_2d else 8
        config = dataclasses.replace(
            config, frames=4, shape=(z, 48, 48), n_cells=min(config.n_cells, 8)
        )
    return config


def _randomised(seed: int, quick: bool) -> SyntheticConfig:
    return sample_config(seed, _config("default", seed, quick))


def _sources(
    presets: list[tuple[str, int]],
    randomised: list[int],
    quick: bool,
    role: str,
    processes: int = 1,
) -> list[TrainSource]:
    configs = [_config(p, s, quick) for p, s in presets]
    configs += [_randomised(s, quick) for s in randomised]
    if quick:
        configs = configs[:2]
    started = time.perf_counter()
    if processes > 1:
        with ProcessPoolExecutor(processes) as pool:
            sequences = list(pool.map(generate, configs))
    else:
        sequences = [generate(c) for c in configs]
    for config, seq in zip(configs, sequences):
        logger.info(
            "%s series seed %d: %s, %d cells", role, config.seed, config.shape, len(seq.graph)
        )
    logger.info("%d %s series made in %.1f s", len(configs), role, time.perf_counter() - started)
    return [
        TrainSource(seq.images, seq.graph, c.z_ratio, name=f"synthetic seed {c.seed}")
        for c, seq in zip(configs, sequences)
    ]


def _test(bundle: ModelBundle, quick: bool, device: str) -> list[dict[str, Any]]:
    rows = []
    for preset, seed in TEST_PRESETS[: 1 if quick else None]:
        config = _config(preset, seed, quick)
        seq = generate(config)
        started = time.perf_counter()
        result = track_images(seq.images, bundle, z_ratio=config.z_ratio, device=device)
        scores = evaluate(result.graph, seq.graph, z_ratio=config.z_ratio).to_dict()
        row = {
            "preset": preset,
            "seed": seed,
            "seconds": round(time.perf_counter() - started, 1),
            **{k: round(float(v), 4) for k, v in scores.items()},
        }
        rows.append(row)
        logger.info("test %s seed %d: %s", preset, seed, row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, two short epochs")
    parser.add_argument("--out", type=Path, help=f"bundle to write (default {DEFAULT_BUNDLE_PATH})")
    parser.add_argument("--epochs", type=int, help="override the number of epochs")
    parser.add_argument("--steps-per-epoch", type=int, help="override the steps per epoch")
    parser.add_argument("--device", default="cpu", help="compute device (default cpu)")
    parser.add_argument("--resume", type=Path, help="continue from this checkpoint")
    parser.add_argument("--no-test", action="store_true", help="skip the test-set tracking")
    parser.add_argument("--init", type=Path, help="start from the weights of this bundle")
    parser.add_argument("--lr", type=float, help="override the peak learning rate")
    parser.add_argument(
        "--division-fraction",
        type=float,
        help="override the fraction of crops centred on a division",
    )
    parser.add_argument("--batch-size", type=int, help="override the crops per step")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes that make the series and draw the training crops "
        "(default 0: this one; use the CPU cores beside a GPU)",
    )
    parser.add_argument(
        "--data",
        choices=("base", "extended"),
        default="base",
        help="training series: those of phases 1-3 (base) or those plus more "
        "2D+t, hard, fast, dense and randomised series (extended)",
    )
    parser.add_argument(
        "--stop-after",
        type=float,
        metavar="MINUTES",
        help="end the epoch running after this many minutes of training and "
        "finish with the best epoch so far (a run on a time-limited machine)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    config = QUICK if args.quick else FULL
    changes: dict[str, Any] = {"device": args.device}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.steps_per_epoch is not None:
        changes["steps_per_epoch"] = args.steps_per_epoch
    if args.lr is not None:
        changes["lr"] = args.lr
    if args.batch_size is not None:
        changes["batch_size"] = args.batch_size
    changes["workers"] = args.workers
    if args.division_fraction is not None:
        changes["sampling"] = dataclasses.replace(
            config.sampling, division_fraction=args.division_fraction
        )
    config = dataclasses.replace(config, **changes)

    if args.quick and args.out is None:
        folder = Path(tempfile.mkdtemp(prefix="cellect-train-quick-"))
        out = folder / "default-quick.pt"
    else:
        out = args.out or DEFAULT_BUNDLE_PATH
        folder = RESULTS if args.out is None else out.parent  # never beside the package weights
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / f"{out.stem}.ckpt"
    report_path = folder / f"{out.stem}.json"

    started = time.perf_counter()
    presets, randomised = list(TRAIN_PRESETS), list(TRAIN_RANDOMISED)
    if args.data == "extended":
        presets += EXTENDED_PRESETS
        randomised += EXTENDED_RANDOMISED
    train = _sources(presets, randomised, args.quick, "train", args.workers)
    val_presets = VAL_PRESETS + (EXTENDED_VAL_PRESETS if args.data == "extended" else [])
    val = _sources(val_presets, VAL_RANDOMISED, args.quick, "validation", args.workers)

    def progress(p: TrainProgress) -> None:
        if p.phase == "train" and p.step % 20 == 0:
            logger.info(
                "step %d/%d, epoch %d: loss %.4f",
                p.step,
                p.total_steps,
                p.epoch + 1,
                p.losses.get("total", float("nan")),
            )

    trained = time.perf_counter()
    deadline = math.inf if args.stop_after is None else trained + 60 * args.stop_after
    try:
        bundle = fit(
            train,
            val,
            config,
            progress=progress,
            resume=args.resume,
            checkpoint=checkpoint,
            init=args.init,
            should_stop=lambda: time.perf_counter() > deadline,
        )
    except Cancelled:
        done = load_checkpoint(checkpoint)["epoch"] if checkpoint.is_file() else 0
        if done == 0:
            raise
        logger.warning(
            "--stop-after %.1f min reached in epoch %d: finishing with the best of "
            "the %d epochs done",
            args.stop_after,
            done + 1,
            done,
        )
        bundle = fit(
            train,
            val,
            dataclasses.replace(config, epochs=done),
            resume=checkpoint,
            checkpoint=checkpoint,
        )
    train_seconds = time.perf_counter() - trained
    bundle.metadata.trained_on = (
        "synthetic: presets "
        + ", ".join(f"{p}/{s}" for p, s in presets)
        + "; randomised seeds "
        + ", ".join(map(str, randomised))
    )
    bundle.metadata.notes = (
        "trained by benchmarks/train_default.py"
        + (" --quick" if args.quick else "")
        + (f", starting from {args.init.name}" if args.init else "")
    )
    bundle.save(out)
    tests = [] if args.no_test else _test(bundle, args.quick, args.device)
    state = ModelBundle.load(out)
    report = {
        "bundle": str(out),
        "bytes": out.stat().st_size,
        "parameters": state.n_parameters(),
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "config": config.to_dict(),
        "history": state.metadata.history,
        "thresholds": dataclasses.asdict(state.thresholds),
        "test": tests,
    }
    report_path.write_text(json.dumps(report, indent=2, default=str))
    print(
        f"bundle {out} ({out.stat().st_size / 1e6:.2f} MB, {state.n_parameters():,} parameters), "
        f"trained in {train_seconds / 60:.1f} min; report {report_path}"
    )
    event = state.metadata.history[-1]
    print(
        f"validation: detection F1 {event['f1']:.3f}, "
        f"link accuracy {event['link_accuracy']:.3f}, threshold {event['threshold']:.2f}"
    )
    if tests:
        keys = ("det_f1", "link_f1", "div_f1", "tra")
        print("test " + " ".join(f"{k:>8}" for k in keys))
        for row in tests:
            print(f"{row['preset']:>8} " + " ".join(f"{row[k]:8.3f}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
