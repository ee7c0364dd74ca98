"""``cellect finetune``: fine-tune a model's link and merge scorers on corrected tracks.

The tracks CSV's ``approved`` column marks what a person confirmed (see
:mod:`napari_cellect.track.corrections` for how that becomes training labels); a
``corrections.json`` saved by an editing session (``--corrections``) adds the links they broke,
the detections they deleted and the divisions they marked. The detections of the corrected
frames come from the detection cache; frames not cached yet are predicted once and cached. The
tuned model is written to a new file: the starting bundle is never overwritten.

For ``cellect track --keep-approved`` this module re-exports :func:`load_pinned` and
:func:`relink` from :mod:`napari_cellect.train.finetune`.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from napari_cellect._cli._types import cell_radius, positive_float, positive_int
from napari_cellect.cli import command_help
from napari_cellect.errors import InputError
from napari_cellect.train.finetune import (
    FinetuneConfig,
    FinetuneProgress,
    finetune,
    load_pinned,
    relink,
)

__all__ = ["add_parser", "load_pinned", "relink", "run"]


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
    add("--tracks", type=Path, required=True, metavar="CSV",
        help="corrected tracks; the 'approved' column marks the corrections")
    add("--images", type=Path, required=True, metavar="INPUT",
        help="the images the tracks were made from (TIFF folder, TIFF or .zarr)")
    add("--weights", type=Path, default=None, metavar="BUNDLE",
        help="the model that made the tracks (default: the bundled model)")
    add("-o", "--output", type=Path, required=True, metavar="TUNED",
        help="where to write the fine-tuned model (.pt)")
    add("--cache", type=Path, default=None, metavar="DIR",
        help=f"detection cache folder (default: the one `cellect track` left beside the tracks, "
             f"CSV{CACHE_SUFFIX}, if there is one, else INPUT{CACHE_SUFFIX} beside the images)")
    add("--corrections", type=Path, default=None, metavar="PATH",
        help="a corrections.json saved by an editing session (or its journal folder)")
    add("--z-ratio", type=positive_float, default=None, metavar="R",
        help="z spacing / xy spacing (default: from the image metadata)")
    add("--epochs", type=positive_int, default=defaults.epochs, metavar="N",
        help=f"most epochs per phase (default: {defaults.epochs}; early stopping usually ends "
             "sooner)")
    add("--lr", type=positive_float, default=defaults.lr, metavar="LR",
        help=f"learning rate (default: {defaults.lr:g})")
    add("--axes", default=None, metavar="AXES",
        help="axis order of the image files, e.g. TZYX or ZYX (default: from the metadata)")
    add("--tile", type=positive_int, nargs=3, default=None, metavar=("Z", "Y", "X"),
        help="sliding-window tile of the tracking run, so its detection cache is found "
             "(default: the model's)")
    add("--cell-radius", type=cell_radius, default="auto", metavar="R",
        help="the --cell-radius of the tracking run (typical nucleus radius in xy pixels), so "
             "its detection cache is found and uncached frames are resized the same way "
             "(default: auto, estimated as cellect track does; 'none': as they are)")
    add("--device", default="auto", metavar="DEVICE",
        help="device for predicting uncached frames: auto, cpu, cuda or mps (default: auto)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from napari_cellect.data.annotations import read_tracks
    from napari_cellect.data.images import CLI_AXES, open_sequence
    from napari_cellect.infer.radius_estimate import resolve_cell_radius
    from napari_cellect.infer.rescale import xy_scale
    from napari_cellect.model.bundle import DEFAULT_BUNDLE_PATH, ModelBundle
    from napari_cellect.track.corrections import (
        CorrectionConfig,
        build_corrections,
        load_corrections,
    )

    start_path = Path(args.weights) if args.weights is not None else DEFAULT_BUNDLE_PATH
    if _same_file(args.output, start_path):
        raise InputError(
            "refusing to write the fine-tuned model over the model it starts from; choose "
            "another -o file",
            args.output,
        )
    if not args.output.parent.is_dir():
        raise InputError(f"the output folder {args.output.parent} does not exist", args.output)
    graph = read_tracks(args.tracks)
    if args.weights is not None:
        bundle = ModelBundle.load(args.weights)
    else:
        bundle = ModelBundle.load_default()
    if args.cell_radius != "auto":  # can this model rescale?
        xy_scale(args.cell_radius, bundle.normalization.reference_radius)
    sequence = open_sequence(args.images, axes=args.axes, axes_option=CLI_AXES)
    z_ratio = args.z_ratio if args.z_ratio is not None else sequence.z_ratio
    radius = resolve_cell_radius(args.cell_radius, sequence.data, z_ratio,
                                 bundle.normalization.reference_radius)  # fmt: skip
    thresholds = bundle.thresholds
    config = CorrectionConfig(link_k=thresholds.link.k, merge_k=thresholds.merge.k)
    corrections = build_corrections(graph, z_ratio=z_ratio, config=config, source=str(args.tracks))
    if args.corrections is not None:
        corrections = corrections.combine(load_corrections(args.corrections))
    corrections.require_trainable()
    n_frames = int(sequence.data.shape[0])
    wanted = _frames_to_load(corrections.frames(), n_frames, args.tracks)
    cache_dir = args.cache if args.cache is not None else _default_cache(args.images, args.tracks)
    detections = _cached_detections(sequence, bundle, z_ratio, cache_dir, wanted, args.device,
                                    args.tile, radius)  # fmt: skip
    with tqdm(total=args.epochs, desc="fine-tune", unit="epoch") as bar:

        def report(step: FinetuneProgress) -> None:
            if step.epoch:
                bar.update(1)
                bar.set_postfix(train=f"{step.train_loss:.3g}", val=f"{step.val_loss:.3g}")

        tuned = finetune(
            bundle, corrections, detections, z_ratio=z_ratio,
            config=FinetuneConfig(epochs=args.epochs, lr=args.lr), progress=report,
            source=str(args.tracks),
        )  # fmt: skip
    tuned.save(args.output)
    event = tuned.metadata.history[-1]
    print(
        f"fine-tuned on {event['n_positive_links']} approved links, "
        f"{event['n_broken_links'] + event['n_candidate_negatives']} negative links, "
        f"{event['n_divides'] + event['n_does_not_divide']} division labels and "
        f"{event['n_duplicates'] + event['n_distinct']} merge labels in {event['seconds']:g} s; "
        f"validation loss {_fmt(event['val_loss_before'])} -> {_fmt(event['val_loss_after'])}"
    )
    print(f"saved {tuned.metadata.name!r} to {args.output}")
    return 0


# ---------------------------------------------------------------------------------- helpers


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
    sequence: Any, bundle: Any, z_ratio: float, cache_dir: Path, frames: list[int], device: str,
    tile: list[int] | None, cell_radius: float | None = None,
) -> list[Any]:  # fmt: skip
    """Detections of ``frames`` from the cache; the missing ones are predicted and cached
    (with the tracking run's ``tile`` and ``cell_radius``, which are part of the cache's
    fingerprint)."""
    from napari_cellect.infer.predict import predict_sequence
    from napari_cellect.pipeline import open_detection_cache

    cache = open_detection_cache(sequence, bundle, cache_dir, z_ratio=z_ratio, tile=tile,
                                 cell_radius=cell_radius)  # fmt: skip
    cached = set(cache.frames())
    todo = [t for t in frames if t not in cached]
    if todo:
        logger.info("predicting %d uncached frame(s) into %s", len(todo), cache_dir)
    with tqdm(total=len(frames), desc="detections", unit="frame", disable=not todo) as bar:
        return list(predict_sequence(
            sequence.data, bundle, z_ratio=z_ratio, device=device, tile=tile, cache=cache,
            frames=frames, progress=lambda done, total: bar.update(1), cell_radius=cell_radius,
        ))  # fmt: skip


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return Path(os.path.abspath(a)) == Path(os.path.abspath(b))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


