"""``cellect train IMAGES --annotations ANN -o bundle.pt``: train a model from point annotations.

IMAGES is anything :func:`~napari_cellect.data.images.open_sequence` opens (a folder of TIFFs,
a TIFF, a zarr); ANN anything :func:`~napari_cellect.data.annotations.read_tracks` reads (our
CSV, linajea ``tracks.txt``, CTC, GEFF). Several training series are given as several IMAGES
with as many ``--annotations``, in the same order; likewise for validation. A checkpoint is
written after every epoch (``--checkpoint``, default ``OUT.ckpt``) and ``--resume`` continues it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tqdm import tqdm

from napari_cellect.cli import command_help
from napari_cellect.data.annotations import read_tracks
from napari_cellect.data.images import CLI_AXES, open_sequence
from napari_cellect.errors import InputError
from napari_cellect.infer.device import DEVICE_CHOICES
from napari_cellect.model.unet import preset_names
from napari_cellect.train.config import TrainConfig
from napari_cellect.train.data import SamplingConfig, TrainSource, check_source
from napari_cellect.train.fit import TrainProgress, fit

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    defaults = TrainConfig()
    parser = subparsers.add_parser(
        "train",
        help=command_help("train"),
        description=(
            "Train a napari-cellect model from images and point annotations (cells as points "
            "with parent links; a missing radius uses the default radius). Frames without "
            "annotations are skipped; annotated frames are taken as fully annotated."
        ),
    )
    parser.add_argument(
        "images",
        metavar="IMAGES",
        nargs="+",
        type=Path,
        help="image series (folder of TIFFs, TIFF, zarr); several allowed",
    )
    parser.add_argument(
        "--annotations",
        "-a",
        metavar="ANN",
        nargs="+",
        type=Path,
        required=True,
        help="annotations of each IMAGES series, in the same order",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        type=Path,
        required=True,
        help="model bundle to write (.pt)",
    )
    parser.add_argument(
        "--val-images",
        metavar="IMAGES",
        nargs="+",
        type=Path,
        default=[],
        help="validation image series (model selection, threshold calibration)",
    )
    parser.add_argument(
        "--val-annotations",
        metavar="ANN",
        nargs="+",
        type=Path,
        default=[],
        help="annotations of each --val-images series",
    )
    parser.add_argument(
        "--val-frames",
        type=int,
        default=defaults.validation_frames,
        metavar="N",
        help="frame pairs per validation series scored every epoch with the "
        f"full inference path (default {defaults.validation_frames})",
    )
    parser.add_argument(
        "--calibration-frames",
        type=int,
        default=defaults.calibration_frames,
        metavar="N",
        help="frame pairs per validation series used to calibrate "
        "the detection and division thresholds at the end, 0 to keep the "
        f"defaults (default {defaults.calibration_frames})",
    )
    parser.add_argument(
        "--z-ratio",
        type=float,
        metavar="R",
        help="z spacing / xy spacing (default: from the image metadata)",
    )
    parser.add_argument(
        "--axes", metavar="AXES", help="axes of TIFFs without metadata, e.g. TZYX (every series)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=defaults.epochs,
        metavar="N",
        help=f"number of epochs (default {defaults.epochs})",
    )
    parser.add_argument(
        "--steps-per-epoch",
        type=int,
        default=defaults.steps_per_epoch,
        metavar="N",
        help=f"steps per epoch (default {defaults.steps_per_epoch})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        metavar="N",
        help=f"crops per step (default {defaults.batch_size})",
    )
    parser.add_argument(
        "--lr", type=float, default=defaults.lr, help=f"peak learning rate (default {defaults.lr})"
    )
    parser.add_argument(
        "--crop",
        type=int,
        nargs=3,
        metavar=("Z", "Y", "X"),
        default=list(defaults.sampling.crop),
        help="training crop size (default %(default)s); Y and X multiples of 16",
    )
    parser.add_argument(
        "--preset",
        choices=[p for p in preset_names() if p != "cellect-original"],
        default=defaults.preset,
        help="U-Net preset (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    parser.add_argument(
        "--device",
        default=defaults.device,
        help=f"compute device: {', '.join(DEVICE_CHOICES)} or cuda:N (default %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=defaults.workers,
        metavar="N",
        help="processes that draw training crops while the network trains "
        "(default %(default)s: none; a few help on a GPU)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        metavar="CKPT",
        help="checkpoint written after every epoch (default OUT.ckpt)",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        metavar="CKPT",
        help="continue a run from its checkpoint (its settings are kept; --epochs may extend it)",
    )
    parser.add_argument(
        "--init",
        metavar="BUNDLE",
        help="start from the weights of a trained bundle of the same preset "
        "('default': the bundled model) instead of random weights",
    )
    parser.add_argument("--name", default=None, help="model name stored in the bundle")
    parser.set_defaults(run=run)


def _sources(
    images: list[Path],
    annotations: list[Path],
    z_ratio: float | None,
    what: str,
    axes: str | None = None,
) -> list[TrainSource]:
    if len(images) != len(annotations):
        raise InputError(
            f"expected one annotation file per {what} image series, found {len(images)} image "
            f"series and {len(annotations)} annotation file(s)"
        )
    sources = []
    for image_path, ann_path in zip(images, annotations):
        sequence = open_sequence(image_path, axes=axes, axes_option=CLI_AXES)
        ratio = float(z_ratio) if z_ratio is not None else sequence.z_ratio
        if not ratio > 0:
            raise InputError(f"expected a positive z ratio, found {ratio}", image_path)
        if not Path(ann_path).exists():
            raise InputError("annotation file or folder not found", ann_path)
        graph = read_tracks(ann_path, z_ratio=ratio)
        source = TrainSource(sequence.data, graph, ratio, name=f"{ann_path} (images {image_path})")
        check_source(source)
        sources.append(source)
    return sources


def _check_output(path: Path) -> None:
    if not path.parent.is_dir():
        raise InputError(f"the output folder {path.parent} does not exist", path)
    if path.is_dir():
        raise InputError("expected a bundle file name, found a folder", path)


def run(args: argparse.Namespace) -> int:
    _check_output(args.output)
    if args.z_ratio is not None and not args.z_ratio > 0:
        raise InputError(f"--z-ratio must be positive, found {args.z_ratio}")
    if bool(args.val_images) != bool(args.val_annotations):
        raise InputError("give --val-images and --val-annotations together")
    train = _sources(args.images, args.annotations, args.z_ratio, "training", args.axes)
    val = _sources(args.val_images, args.val_annotations, args.z_ratio, "validation", args.axes)
    try:
        sampling = SamplingConfig(crop=tuple(args.crop))
        config = TrainConfig(
            epochs=args.epochs,
            steps_per_epoch=args.steps_per_epoch,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            device=args.device,
            preset=args.preset,
            sampling=sampling,
            name=args.name or args.output.stem,
            validation_frames=args.val_frames,
            calibration_frames=args.calibration_frames,
            workers=args.workers,
        )
    except (TypeError, ValueError) as error:
        raise InputError(str(error)) from error
    init = None
    if args.init is not None:
        from napari_cellect.model.bundle import DEFAULT_BUNDLE_PATH

        init = DEFAULT_BUNDLE_PATH if args.init == "default" else Path(args.init)
        if not init.is_file():
            raise InputError("model bundle to start from (--init) not found", init)
    checkpoint = args.checkpoint or args.output.with_name(args.output.name + ".ckpt")
    if args.resume is not None and not args.resume.is_file():
        raise InputError("checkpoint to resume not found", args.resume)
    bar = tqdm(
        total=config.epochs * config.steps_per_epoch, desc="train", unit="step", disable=None
    )

    def progress(p: TrainProgress) -> None:
        bar.total = p.total_steps
        bar.n = p.step
        if p.phase == "train" and p.losses:
            bar.set_postfix(
                epoch=f"{p.epoch + 1}/{p.epochs}", loss=f"{p.losses['total']:.3f}", refresh=False
            )
        elif p.phase == "validate" and p.metrics:
            bar.set_postfix(
                epoch=f"{p.epoch + 1}/{p.epochs}",
                f1=f"{p.metrics['f1']:.3f}",
                link=f"{p.metrics['link_accuracy']:.3f}",
                refresh=False,
            )
        bar.refresh()

    try:
        bundle = fit(
            train,
            val,
            config,
            progress=progress,
            resume=args.resume,
            checkpoint=checkpoint,
            init=init,
        )
    finally:
        bar.close()
    bundle.save(args.output)
    event = bundle.metadata.history[-1] if bundle.metadata.history else {}
    print(
        f"wrote {args.output}: detection F1 {event.get('f1', float('nan')):.3f}, "
        f"link accuracy {event.get('link_accuracy', float('nan')):.3f}, "
        f"threshold {bundle.thresholds.detection.threshold:.2f} (checkpoint {checkpoint})"
    )
    return 0
