"""``cellect evaluate PRED GT``: score a tracking result against ground truth.

PRED and GT may be our CSV, a linajea ``tracks.txt``, a CTC ``TRA``/``RES`` folder or a GEFF
(anything :func:`napari_cellect.data.annotations.read_tracks` reads). The definitions of every
score are in :mod:`napari_cellect.evaluate`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from napari_cellect._cli._types import non_negative_int, positive_float
from napari_cellect.cli import command_help
from napari_cellect.errors import InputError
from napari_cellect.settings.formats import LINAJEA_Z_RATIO

if TYPE_CHECKING:
    from napari_cellect.evaluate import Scores


#: z_ratio used for the distances when --z-ratio is not given and no input is a tracks.txt
DEFAULT_Z_RATIO = 1.0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help=command_help("evaluate"),
        description=(
            "Match predicted and GT points frame by frame (Hungarian, within --max-dist in "
            "(z * z_ratio, y, x) pixels) and report detection, link and division precision / "
            "recall / F1 and the Cell Tracking Challenge TRA."
        ),
    )
    parser.add_argument(
        "pred",
        metavar="PRED",
        type=Path,
        help="predicted tracks: CSV, tracks.txt, CTC RES folder or GEFF",
    )
    parser.add_argument(
        "gt", metavar="GT", type=Path, help="ground truth: CSV, tracks.txt, CTC TRA folder or GEFF"
    )
    parser.add_argument(
        "--z-ratio",
        type=positive_float,
        default=None,
        metavar="R",
        help=f"z spacing / xy spacing, for reading tracks.txt z and for distances (default: "
        f"{LINAJEA_Z_RATIO:g} when an input is a tracks.txt, else {DEFAULT_Z_RATIO:g})",
    )
    parser.add_argument(
        "--max-dist",
        type=positive_float,
        default=None,
        metavar="D",
        help="largest match distance in xy pixels, inclusive (default: half the median GT "
        "radius, or 6 when the GT has no radii)",
    )
    parser.add_argument(
        "--division-tolerance",
        type=non_negative_int,
        default=1,
        metavar="N",
        help="frames a division may be early or late and still count (default: 1)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object with the headline scores instead of a table",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from napari_cellect.data.annotations import read_tracks
    from napari_cellect.evaluate import evaluate

    z_ratio = args.z_ratio if args.z_ratio is not None else _default_z_ratio(args.pred, args.gt)
    pred = read_tracks(args.pred, z_ratio=args.z_ratio)
    gt = read_tracks(args.gt, z_ratio=args.z_ratio)
    if len(gt) == 0:
        raise InputError(
            "the ground truth holds no nodes; there is nothing to evaluate against", args.gt
        )
    scores = evaluate(
        pred,
        gt,
        z_ratio=z_ratio,
        max_dist=args.max_dist,
        division_tolerance=args.division_tolerance,
    )
    if args.json:
        print(json.dumps(scores.to_dict()))
    else:
        print(format_table(scores, z_ratio=z_ratio, division_tolerance=args.division_tolerance))
    return 0


def format_table(scores: Scores, *, z_ratio: float, division_tolerance: int) -> str:
    """The human-readable report."""
    rows = (
        (
            "detection",
            scores.det_precision,
            scores.det_recall,
            scores.det_f1,
            scores.node_tp,
            scores.node_fp,
            scores.node_fn,
        ),
        (
            "links",
            scores.link_precision,
            scores.link_recall,
            scores.link_f1,
            scores.edge_tp,
            scores.edge_fp,
            scores.edge_fn,
        ),
        (
            "divisions",
            scores.div_precision,
            scores.div_recall,
            scores.div_f1,
            scores.div_tp,
            scores.div_fp,
            scores.div_fn,
        ),
    )
    lines = [
        f"{scores.n_pred} predicted vs {scores.n_gt} GT nodes (max_dist {scores.max_dist:g} px, "
        f"z_ratio {z_ratio:g}, division tolerance ±{division_tolerance} frame"
        f"{'' if division_tolerance == 1 else 's'})",
        "",
        f"{'':<10} {'precision':>9} {'recall':>7} {'F1':>7} {'TP':>8} {'FP':>8} {'FN':>8}",
    ]
    for name, precision, recall, f1, tp, fp, fn in rows:
        lines.append(
            f"{name:<10} {precision:>9.4f} {recall:>7.4f} {f1:>7.4f} {tp:>8} {fp:>8} {fn:>8}"
        )
    lines += [
        "",
        f"TRA {scores.tra:.4f}   DET {scores.det:.4f}   LNK {scores.lnk:.4f}   "
        f"(AOGM {scores.aogm:g} of {scores.aogm0:g})",
    ]
    return "\n".join(lines)


def _default_z_ratio(*paths: Path) -> float:
    """tracks.txt stores z in world units of LINAJEA_Z_RATIO pixels; other formats store slices
    without a spacing, so distances are isotropic in voxels unless --z-ratio says otherwise."""
    from napari_cellect.data.annotations import detect_format

    kinds = {detect_format(path)[0] for path in paths}
    return LINAJEA_Z_RATIO if "linajea" in kinds else DEFAULT_Z_RATIO
