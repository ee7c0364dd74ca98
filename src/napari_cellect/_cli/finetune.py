"""``cellect finetune``: fine-tune a model's link and merge scorers on corrected tracks.

The tracks CSV's ``approved`` column marks what a person confirmed (see
:mod:`napari_cellect.track.corrections` for how that becomes training labels); a
``corrections.json`` saved by an editing session (``--corrections``) adds the links they broke,
the detections they deleted and the divisions they marked. The detections of the corrected
frames come from the detection cache; frames not cached yet are predicted once and cached.

The guard (:mod:`napari_cellect.train.finetune_guard`) holds some corrections back and adopts
each tuned part only where it does better there; the plan (what is trained, about how long) and
the figures before and after are printed. The tuned model, with only the adopted parts, is
written to a new file (the starting bundle is never overwritten); when the guard adopts nothing,
nothing is written unless ``--always-write``. ``--adapt-detector`` adds the detector (the U-Net's
heads, :class:`~napari_cellect.train.detector_part.DetectorTrainer`) as one more guarded part.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from napari_cellect._cli._types import cell_radius, positive_float, positive_int
from napari_cellect.cli import command_help
from napari_cellect.errors import InputError
from napari_cellect.progress import Step, run_to_end
from napari_cellect.train.adapt_unet import AdaptConfig
from napari_cellect.train.finetune import FinetuneProgress
from napari_cellect.train.finetune_config import FinetuneConfig
from napari_cellect.train.finetune_guard import FinetunePlan, iter_guarded_finetune

if TYPE_CHECKING:
    from napari_cellect.data.images import ImageSequence
    from napari_cellect.model.bundle import ModelBundle
    from napari_cellect.track.detections import Detections
    from napari_cellect.train.detector_part import DetectorTrainer

logger = logging.getLogger(__name__)

#: Suffix of the default detection cache folder: `cellect track` keeps one beside its output
#: CSV, else one is created beside the images.
CACHE_SUFFIX = ".cellect-cache"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    defaults = FinetuneConfig()
    parser = subparsers.add_parser(
        "finetune",
        help=command_help("finetune"),
        description=(
            "Learn from corrections: the approved links of a corrected tracks CSV (and, with "
            "--corrections, the broken links, deleted detections and division marks of an "
            "editing session) fine-tune the model's link scorer, its division head and its merge "
            "scorer, on the cached detections (the U-Net runs only for frames not cached yet). "
            "The result is a new model file; the starting one is never overwritten."
        ),
    )
    add = parser.add_argument
    add(
        "--tracks",
        type=Path,
        required=True,
        metavar="CSV",
        help="corrected tracks; the 'approved' column marks the corrections",
    )
    add(
        "--images",
        type=Path,
        required=True,
        metavar="INPUT",
        help="the images the tracks were made from (TIFF folder, TIFF or .zarr)",
    )
    add(
        "--weights",
        type=Path,
        default=None,
        metavar="BUNDLE",
        help="the model that made the tracks (default: the bundled model)",
    )
    add(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="TUNED",
        help="where to write the fine-tuned model (.pt)",
    )
    add(
        "--cache",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"detection cache folder (default: the one `cellect track` left beside the tracks, "
        f"CSV{CACHE_SUFFIX}, if there is one, else INPUT{CACHE_SUFFIX} beside the images)",
    )
    add(
        "--corrections",
        type=Path,
        default=None,
        metavar="PATH",
        help="a corrections.json saved by an editing session (or its journal folder)",
    )
    add(
        "--z-ratio",
        type=positive_float,
        default=None,
        metavar="R",
        help="z spacing / xy spacing (default: from the image metadata)",
    )
    add(
        "--epochs",
        type=positive_int,
        default=defaults.epochs,
        metavar="N",
        help=f"most epochs per phase (default: {defaults.epochs}; early stopping usually ends "
        "sooner)",
    )
    add(
        "--lr",
        type=positive_float,
        default=defaults.lr,
        metavar="LR",
        help=f"learning rate (default: {defaults.lr:g})",
    )
    add(
        "--no-guard",
        action="store_true",
        help="adopt every tuned part without checking it on held-back corrections",
    )
    add(
        "--always-write",
        action="store_true",
        help="write the output model even when the guard adopted nothing (an unchanged copy)",
    )
    add(
        "--axes",
        default=None,
        metavar="AXES",
        help="axis order of the image files, e.g. TZYX or ZYX (default: from the metadata)",
    )
    add(
        "--tile",
        type=positive_int,
        nargs=3,
        default=None,
        metavar=("Z", "Y", "X"),
        help="sliding-window tile of the tracking run, so its detection cache is found "
        "(default: the model's)",
    )
    add(
        "--cell-radius",
        type=cell_radius,
        default="auto",
        metavar="R",
        help="the --cell-radius of the tracking run (typical nucleus radius in xy pixels), so "
        "its detection cache is found and uncached frames are resized the same way "
        "(default: auto, estimated as cellect track does; 'none': as they are)",
    )
    add(
        "--device",
        default="auto",
        metavar="DEVICE",
        help="device for predicting uncached frames (and adapting the detector): auto, cpu, "
        "cuda or mps (default: auto)",
    )
    add(
        "--adapt-detector",
        action="store_true",
        help="also adapt the U-Net's heads to the corrections (added cells, deleted "
        "detections, divisions, approved links), as one part of the guarded update: the "
        "scorers are also tuned on the corrected frames detected again with it, and the "
        "detector is adopted only where it does better on the held-back corrections "
        "(--no-guard: always); the tracks then need `cellect track` again with the new "
        "model",
    )
    add(
        "--adapt-steps",
        type=positive_int,
        default=AdaptConfig().steps,
        metavar="N",
        help=f"training steps of --adapt-detector (default: {AdaptConfig().steps})",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from napari_cellect.data.images import CLI_AXES, open_sequence
    from napari_cellect.infer.radius_estimate import CLI_RADIUS, resolve_cell_radius
    from napari_cellect.infer.rescale import xy_scale
    from napari_cellect.model.bundle import DEFAULT_BUNDLE_PATH, ModelBundle
    from napari_cellect.session import TrackingSession
    from napari_cellect.session.tracking_session import correction_config
    from napari_cellect.track.corrections import load_corrections

    start_path = Path(args.weights) if args.weights is not None else DEFAULT_BUNDLE_PATH
    if _same_file(args.output, start_path):
        raise InputError(
            "refusing to write the fine-tuned model over the model it starts from; choose "
            "another -o file",
            args.output,
        )
    if not args.output.parent.is_dir():
        raise InputError(f"the output folder {args.output.parent} does not exist", args.output)
    if args.weights is not None:
        bundle = ModelBundle.load(args.weights)
    else:
        bundle = ModelBundle.load_default()
    if args.cell_radius != "auto":  # can this model rescale?
        xy_scale(args.cell_radius, bundle.normalization.reference_radius)
    sequence = open_sequence(args.images, axes=args.axes, axes_option=CLI_AXES)
    z_ratio = args.z_ratio if args.z_ratio is not None else sequence.z_ratio
    radius = resolve_cell_radius(
        args.cell_radius,
        sequence.data,
        z_ratio,
        bundle.normalization.reference_radius,
        CLI_RADIUS,
    )
    # the session's rule: the file's approved links over the saved corrections they override
    session = TrackingSession.read_tracks(args.tracks, z_ratio=z_ratio)
    if args.corrections is not None:
        session.stored_corrections = load_corrections(args.corrections)
    corrections = session.corrections(correction_config(bundle))
    corrections.require_trainable()
    n_frames = int(sequence.data.shape[0])
    wanted = _frames_to_load(corrections.frames(), n_frames, args.tracks)
    cache_dir = args.cache if args.cache is not None else _default_cache(args.images, args.tracks)
    detections = _cached_detections(
        sequence, bundle, z_ratio, cache_dir, wanted, args.device, args.tile, radius
    )
    trainers = (
        [_detector_trainer(args, detections, sequence, z_ratio, radius)]
        if (args.adapt_detector)
        else []
    )
    config = FinetuneConfig(epochs=args.epochs, lr=args.lr, guard=not args.no_guard)
    steps = iter_guarded_finetune(
        bundle,
        corrections,
        detections,
        z_ratio=z_ratio,
        config=config,
        trainers=trainers,
        source=str(args.tracks),
    )
    with tqdm(desc="fine-tune", unit="step", leave=False) as bar:

        def report(step: Step) -> None:
            if isinstance(step, FinetunePlan):
                tqdm.write(step.describe())
                return
            bar.set_description(step.stage)
            bar.update(1)
            if isinstance(step, FinetuneProgress) and step.epoch:
                bar.set_postfix(train=f"{step.train_loss:.3g}", val=f"{step.val_loss:.3g}")

        result = run_to_end(steps, report)
    counts = corrections.counts()
    print(
        f"learned from {counts['positive_links']} approved links, "
        f"{counts['broken_links'] + counts['candidate_negatives']} negative links, "
        f"{counts['divides'] + counts['does_not_divide']} division labels and "
        f"{counts['duplicates'] + counts['distinct']} merge labels"
    )
    for line in result.report.lines():
        print(line)
    decided = [f"{p.name} {'adopted' if p.adopted else 'not adopted'}" for p in result.report.parts]
    if decided:
        print(f"parts: {', '.join(decided)}")
    if "detector" in result.report.adopted:
        print(
            "the detector was adopted: track again with the new model (cellect track "
            "--weights TUNED --keep-approved CSV) so the frames nobody approved are detected "
            "with it"
        )
    if not result.changed and not args.always_write:
        print(
            f"the guard adopted nothing: no model written; keep using "
            f"{bundle.metadata.name!r} (--always-write writes it anyway)"
        )
        return 0
    result.bundle.save(args.output)
    if not result.changed:
        adopted = "nothing (an unchanged copy)"
    else:
        adopted = ", ".join(result.report.adopted) or "new thresholds only"
    print(f"saved {result.bundle.metadata.name!r} to {args.output}: adopted {adopted}")
    return 0


# ---------------------------------------------------------------------------------- helpers


def _detector_trainer(
    args: argparse.Namespace,
    detections: list[Detections],
    sequence: ImageSequence,
    z_ratio: float,
    radius: float | None,
) -> DetectorTrainer:
    """The detector as a part of the guarded fine-tune (adapted, judged and adopted like the
    scorers; its detections of the corrected frames are not cached: the tracking run's cache
    stays that of its model)."""
    from napari_cellect.train.detector_part import DetectorTrainer

    if radius is not None:
        raise InputError(
            f"--adapt-detector works on the frames as they are, but these are resized for "
            f"nuclei of radius {radius:g} px (--cell-radius); pass --cell-radius none to adapt "
            "the detector on the frames unresized"
        )
    tile = tuple(args.tile) if args.tile is not None else None
    return DetectorTrainer(
        sequence.data,
        detections,
        z_ratio,
        AdaptConfig(steps=args.adapt_steps, device=args.device),
        device=args.device,
        tile=tile,
    )


def _frames_to_load(frames: np.ndarray, n_frames: int, tracks: Path) -> list[int]:
    """The corrected frames and the frame after each (link rows look one frame ahead)."""
    frames = np.asarray(frames, np.int64)
    beyond = frames[(frames < 0) | (frames >= n_frames)]
    if len(beyond):
        raise InputError(
            f"the tracks refer to frame(s) {beyond[:10].tolist()} but the images have "
            f"{n_frames} frames (0..{n_frames - 1})",
            tracks,
        )
    wanted = np.union1d(frames, frames + 1)
    return wanted[wanted < n_frames].tolist()


def _default_cache(images: Path, tracks: Path) -> Path:
    beside_tracks = Path(tracks).with_name(Path(tracks).name + CACHE_SUFFIX)
    if beside_tracks.is_dir():
        return beside_tracks
    images = Path(images)
    return images.with_name(images.name + CACHE_SUFFIX)


def _cached_detections(
    sequence: ImageSequence,
    bundle: ModelBundle,
    z_ratio: float,
    cache_dir: Path,
    frames: list[int],
    device: str,
    tile: list[int] | None,
    cell_radius: float | None = None,
) -> list[Detections]:
    """Detections of ``frames`` from the cache; the missing ones are predicted and cached
    (with the tracking run's ``tile`` and ``cell_radius``, which are part of the cache's
    fingerprint)."""
    from napari_cellect.pipeline import iter_detect, open_detection_cache

    cache = open_detection_cache(
        sequence, bundle, cache_dir, z_ratio=z_ratio, tile=tile, cell_radius=cell_radius
    )
    cached = set(cache.frames())
    todo = [t for t in frames if t not in cached]
    if todo:
        logger.info("predicting %d uncached frame(s) into %s", len(todo), cache_dir)
    with tqdm(total=len(frames), desc="detections", unit="frame", disable=not todo) as bar:
        steps = iter_detect(
            sequence,
            bundle,
            z_ratio=z_ratio,
            device=device,
            tile=tile,
            cache=cache,
            frames=frames,
            cell_radius=cell_radius,
        )
        return run_to_end(steps, lambda _step: bar.update(1))


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return Path(os.path.abspath(a)) == Path(os.path.abspath(b))
