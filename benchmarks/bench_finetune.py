"""Learning from corrections: does fine-tuning on the first frames fix the rest?

A synthetic sequence is made with generator settings the default model was not trained on (a
domain shift: faster motion than the training range, denser packing, or an unusual appearance;
``--shift``). The model tracks it; a simulated person then corrects, **through the editing API**
(``track/edits.py``, from the ground truth), every link into the first 20 % of the frames:
deletes false detections, adds missed cells, re-links wrong links, approves right ones. The
corrections fine-tune the link and merge scorers (``train/finetune.py``), and the sequence is
re-linked with the corrected links pinned. Reported on the remaining 80 % of the frames:

- link errors (false + missed links) and division errors (false + missed divisions), before and
  after; targets: both fall by at least half;
- the fine-tuning time; target: < 30 s on 2 CPU cores;
- the share of all wrong links of the first tracking that lie in its 10 % most uncertain links
  (``track/review.py``'s ranking); target: >= 0.5;
- for reference, the link errors between detected cells only (both ends of the link match a
  ground-truth cell: the errors scorer fine-tuning can reach), and the same re-linking with the
  *base* model (pins only, no fine-tuning).

Detections are the tracking pipeline's raw ones (U-Net, then division refinement; on the CPU)
unless ``--oracle`` is given; then they are the ground-truth centres with noisy stand-in
embeddings (each lineage keeps a random vector, daughters a perturbed copy), which isolates
linking. Without the bundled default
model (``model/weights/default.pt``) and without ``--weights``, the benchmark runs as a dry run
with an untrained ``ModelBundle.random`` and ``--oracle``.

Run: ``python benchmarks/bench_finetune.py`` (``--quick`` for a smaller sequence,
``--weights BUNDLE``, ``--shift fast|dense|appearance|fast+dense``, ``--oracle``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_cellect.data.synthetic import generate
from napari_cellect.data.synthetic.config import SyntheticConfig
from napari_cellect.errors import ModelError
from napari_cellect.evaluate import evaluate
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.progress import run_to_end
from napari_cellect.track import edits
from napari_cellect.track.correction_labels import CorrectionConfig
from napari_cellect.track.corrections import build_corrections, corrections_from_history
from napari_cellect.track.detections import Detections
from napari_cellect.track.edits import History
from napari_cellect.track.graph import NO_PARENT, TrackGraph
from napari_cellect.track.matching import match_nodes
from napari_cellect.track.relink import relink
from napari_cellect.track.review import LINK, ReviewConfig, ReviewQueue
from napari_cellect.train.finetune_config import FinetuneConfig
from napari_cellect.train.finetune_guard import iter_guarded_finetune

#: Share of the frames whose links are corrected.
CORRECTED_FRACTION = 0.2
#: Share of the most uncertain links checked for errors.
UNCERTAIN_FRACTION = 0.1
#: Targets.
MIN_ERROR_REDUCTION = 0.5
MAX_FINETUNE_SECONDS = 30.0
MIN_ERRORS_IN_UNCERTAIN = 0.5
CPU_THREADS = 2

#: Generator settings outside the training ranges of ``data.synthetic.ConfigRanges``
#: (speed <= 4 px/frame, packing <= 0.25, texture <= 0.55, PSF xy <= 2, noise <= 4).
SHIFTS: dict[str, dict] = {
    "fast": {"speed": 5.5, "persistence": 0.9, "rotation_speed": 1.0},
    "dense": {
        "n_cells": 90,
        "max_packing": 0.45,
        "contact_distance": 0.85,
        "radius_range": (4.5, 6.5),
    },
    "appearance": {
        "texture": 0.75,
        "psf_sigma_xy": 2.4,
        "psf_sigma_z": 5.0,
        "noise": 4.5,
        "brightness_range": (200.0, 900.0),
    },
    "fast+dense": {
        "speed": 5.0,
        "persistence": 0.9,
        "n_cells": 80,
        "max_packing": 0.4,
        "contact_distance": 0.9,
        "radius_range": (4.5, 6.5),
    },
}

#: Stand-in embeddings of --oracle: spread between lineages, between sisters, per frame.
ORACLE_LINEAGE_SCALE = 1.0
ORACLE_DAUGHTER_NOISE = 0.5
ORACLE_FRAME_NOISE = 0.35
ORACLE_POSITION_NOISE = 0.5
ORACLE_DIVISION_PROB = 0.6


# ============================================================================ data and detections


def synthetic_config(
    shift: str, frames: int, shape: tuple[int, int, int], seed: int
) -> SyntheticConfig:
    base = SyntheticConfig(
        frames=frames, shape=shape, z_ratio=3.0, seed=seed, division_rate=0.06, min_cycle=6
    )
    return dataclasses.replace(base, **SHIFTS[shift])


def predicted_detections(
    images: np.ndarray, bundle: ModelBundle, z_ratio: float
) -> list[Detections]:
    """The raw detections a tracking run keeps (after division refinement), as the widget's
    session holds them for fine-tuning and re-linking."""
    from napari_cellect.pipeline import track_images

    return track_images(images, bundle, z_ratio=z_ratio, device="cpu").raw_detections


def oracle_detections(gt: TrackGraph, embedding_dim: int, seed: int) -> list[Detections]:
    """Ground-truth centres with lineage-keyed stand-in embeddings and division cues."""
    rng = np.random.default_rng(seed)
    order = np.argsort(gt["t"], kind="stable")
    vectors: dict[int, np.ndarray] = {}
    parent = gt["parent_id"]
    n_children = gt.n_children()
    row_of = {int(i): r for r, i in enumerate(gt.ids)}
    emb = np.zeros((len(gt), embedding_dim), np.float32)
    for r in order:
        p = int(parent[r])
        if p == NO_PARENT:
            base = rng.normal(0, ORACLE_LINEAGE_SCALE, embedding_dim)
        elif n_children[row_of[p]] == 2:
            base = vectors[p] + rng.normal(0, ORACLE_DAUGHTER_NOISE, embedding_dim)
        else:
            base = vectors[p]
        vectors[int(gt.ids[r])] = base
        emb[r] = base + rng.normal(0, ORACLE_FRAME_NOISE, embedding_dim)
    division = np.zeros((len(gt), 2), np.float32)
    division[n_children == 2, 0] = ORACLE_DIVISION_PROB
    newborn = parent != NO_PARENT
    newborn[newborn] = n_children[[row_of[int(p)] for p in parent[newborn]]] == 2
    division[newborn, 1] = ORACLE_DIVISION_PROB
    division += rng.uniform(0, 0.2, division.shape).astype(np.float32)
    pos = gt.positions() + rng.normal(0, ORACLE_POSITION_NOISE, (len(gt), 3)) * [0.3, 1, 1]
    out = []
    for t in range(gt.n_frames):
        rows = gt.frame(t)
        out.append(
            Detections(
                t, pos[rows], emb[rows], gt["radius"][rows], division[rows], np.ones(len(rows))
            )
        )
    return out


# ============================================================================ the simulated person


def correct_from_ground_truth(
    graph: TrackGraph, gt: TrackGraph, z_ratio: float, last: int
) -> History:
    """Fix every link into frames 1..``last`` (and the nodes of frames 0..``last``) with the
    editing API, as a person would, using the ground truth."""
    history = History(graph)
    in_window = lambda g, rows: rows[g["t"][rows] <= last]  # noqa: E731
    m = match_nodes(graph, gt, z_ratio=z_ratio)
    # 1. false detections
    false = graph.ids[in_window(graph, np.flatnonzero(m.pred_to_gt < 0))]
    for node in false.tolist():
        history.do(edits.delete_node, node)
    # 2. missed cells, placed where the ground truth has them
    pred_of_gt: dict[int, int] = {}
    m = match_nodes(graph, gt, z_ratio=z_ratio)
    for g_row, p_row in enumerate(m.gt_to_pred.tolist()):
        if p_row >= 0:
            pred_of_gt[int(gt.ids[g_row])] = int(graph.ids[p_row])
    for g_row in in_window(gt, np.flatnonzero(m.gt_to_pred < 0)).tolist():
        z, y, x = gt.positions(np.array([g_row]))[0]
        command = history.do(
            edits.add_node, int(gt["t"][g_row]), (z, y, x), radius=float(gt["radius"][g_row])
        )
        pred_of_gt[int(gt.ids[g_row])] = int(command.steps[0].columns["id"][0])
    # 3. links into frames 1..last: break the wrong ones first, then link or approve
    wanted: dict[int, int] = {}
    for g_row in np.flatnonzero((gt["t"] >= 1) & (gt["t"] <= last)).tolist():
        child = pred_of_gt[int(gt.ids[g_row])]
        g_parent = int(gt["parent_id"][g_row])
        wanted[child] = pred_of_gt.get(g_parent, NO_PARENT) if g_parent != NO_PARENT else NO_PARENT
    for child, parent in wanted.items():
        current = graph.parent_of(child)
        if current != NO_PARENT and current != parent:
            history.do(edits.break_link, child)
    # a parent may still hold a child outside the window (e.g. healed over a deleted node)
    for parent in set(wanted.values()) - {NO_PARENT}:
        for kid in graph.children_of(parent).tolist():
            if wanted.get(kid) != parent:
                history.do(edits.break_link, kid)
    for child, parent in wanted.items():
        if parent != NO_PARENT and graph.parent_of(child) != parent:
            history.do(edits.link, parent, child)
        else:
            history.do(edits.approve, [child])
    return history


# ============================================================================ scores


def window(graph: TrackGraph, first: int) -> TrackGraph:
    """The nodes of frames ``first``.. with the links among them."""
    keep = graph["t"] >= first
    columns = {c: graph[c][keep] for c in ("id", "t", "z", "y", "x", "radius", "division_score")}
    parent = graph["parent_id"][keep]
    columns["parent_id"] = np.where(np.isin(parent, columns["id"]), parent, NO_PARENT)
    return TrackGraph.from_arrays(**columns)


def errors(pred: TrackGraph, gt: TrackGraph, z_ratio: float, first: int) -> tuple[int, int]:
    scores = evaluate(window(pred, first), window(gt, first), z_ratio=z_ratio)
    return scores.edge_fp + scores.edge_fn, scores.div_fp + scores.div_fn


def linker_errors(pred: TrackGraph, gt: TrackGraph, z_ratio: float, first: int) -> int:
    """The link errors between detected cells only: false links whose two ends both match a
    ground-truth cell, and missed links whose two ground-truth ends were both detected. The
    rest of the link errors come from missed or misplaced detections, which scorer
    fine-tuning cannot repair."""
    pred, gt = window(pred, first), window(gt, first)
    m = match_nodes(pred, gt, z_ratio=z_ratio)

    def matched_edges(graph: TrackGraph, to_other: np.ndarray) -> set[tuple[int, int]]:
        rows = np.flatnonzero(graph["parent_id"] != NO_PARENT)
        ends = np.stack([to_other[graph.index_of(graph["parent_id"][rows])], to_other[rows]], 1)
        return {tuple(e) for e in ends[(ends >= 0).all(axis=1)].tolist()}

    pred_edges = matched_edges(pred, m.pred_to_gt)  # as GT rows
    gt_edges = matched_edges(gt, np.where(m.gt_to_pred >= 0, np.arange(len(gt)), -1))
    return len(pred_edges - gt_edges) + len(gt_edges - pred_edges)


def wrong_links(pred: TrackGraph, gt: TrackGraph, z_ratio: float) -> np.ndarray:
    """Per node of ``pred``: True where its incoming link is not a ground-truth link."""
    m = match_nodes(pred, gt, z_ratio=z_ratio)
    linked = pred["parent_id"] != NO_PARENT
    wrong = np.zeros(len(pred), bool)
    rows = np.flatnonzero(linked)
    parent_rows = pred.index_of(pred["parent_id"][rows])
    g_child, g_parent = m.pred_to_gt[rows], m.pred_to_gt[parent_rows]
    ok = (g_child >= 0) & (g_parent >= 0)
    ok[ok] = gt["parent_id"][g_child[ok]] == gt.ids[g_parent[ok]]
    wrong[rows] = ~ok
    return wrong


def errors_in_uncertain(
    pred: TrackGraph, gt: TrackGraph, z_ratio: float, threshold: float
) -> tuple[float, int]:
    """Share of the wrong links that are among the most uncertain ``UNCERTAIN_FRACTION``."""
    wrong = wrong_links(pred, gt, z_ratio)
    queue = ReviewQueue(pred, ReviewConfig(division_threshold=threshold, divisions=False))
    ranked = queue.items(LINK)
    top = ranked[: max(1, math.ceil(UNCERTAIN_FRACTION * len(ranked)))]
    n_wrong = int(wrong.sum())
    caught = int(wrong[pred.index_of([i.node for i in top])].sum()) if top else 0
    return (caught / n_wrong if n_wrong else 1.0), n_wrong, len(top)


def best_possible_share(n_wrong: int, n_top: int) -> float:
    """The share a perfect ranking would reach: the top list cannot hold more wrong links than
    its length, so where more than 10 % of the links are wrong the target is out of reach."""
    return 1.0 if n_wrong == 0 else min(1.0, n_top / n_wrong)


# ============================================================================ main


def load_bundle(weights: Path | None) -> tuple[ModelBundle, bool]:
    """The bundle and whether it is a dry run (untrained random weights)."""
    if weights is not None:
        return ModelBundle.load(weights), False
    try:
        return ModelBundle.load_default(), False
    except ModelError as error:
        print(f"note: {error}; dry run with ModelBundle.random and --oracle", file=sys.stderr)
        return ModelBundle.random(), True


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--weights", type=Path, default=None, help="model bundle (default: the bundled model)"
    )
    parser.add_argument("--shift", choices=sorted(SHIFTS), default="fast+dense")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument(
        "--shape", type=int, nargs=3, default=(24, 112, 112), metavar=("Z", "Y", "X")
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--oracle", action="store_true", help="ground-truth centres as detections")
    parser.add_argument("--quick", action="store_true", help="10 frames of 16 x 80 x 80")
    parser.add_argument("--no-guard", action="store_true", help="adopt every tuned part unchecked")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.shape = 10, (16, 80, 80)
    torch.set_num_threads(CPU_THREADS)
    bundle, dry = load_bundle(args.weights)
    oracle = args.oracle or dry
    config = synthetic_config(args.shift, args.frames, tuple(args.shape), args.seed)
    z_ratio = config.z_ratio
    sequence = generate(config)
    gt = sequence.graph

    start = time.perf_counter()
    if oracle:
        detections = oracle_detections(gt, bundle.unet_config.embedding_dim, args.seed)
    else:
        detections = predicted_detections(sequence.images, bundle, z_ratio)
    predict_s = time.perf_counter() - start
    first, _ = relink(detections, bundle, TrackGraph(), None, z_ratio)  # plain tracking
    last = max(1, round(CORRECTED_FRACTION * (args.frames - 1)))
    held_out = last  # frames last.. hold the links that were not corrected
    link_before, div_before = errors(first, gt, z_ratio, held_out)
    linker_before = linker_errors(first, gt, z_ratio, held_out)
    threshold = bundle.thresholds.link.division_threshold
    caught, n_wrong, n_top = errors_in_uncertain(first, gt, z_ratio, threshold)

    corrected = first.copy()
    history = correct_from_ground_truth(corrected, gt, z_ratio, last)
    corrections = build_corrections(
        corrected,
        corrections_from_history(history),
        z_ratio=z_ratio,
        config=CorrectionConfig(link_k=bundle.thresholds.link.k, merge_k=bundle.thresholds.merge.k),
        source=f"bench_finetune {args.shift}",
    )
    start = time.perf_counter()
    result = run_to_end(
        iter_guarded_finetune(
            bundle,
            corrections,
            detections,
            z_ratio=z_ratio,
            config=FinetuneConfig(guard=not args.no_guard),
        )
    )
    tuned = result.bundle
    finetune_s = time.perf_counter() - start
    after, _ = relink(detections, tuned, corrected, None, z_ratio, corrections=corrections)
    link_after, div_after = errors(after, gt, z_ratio, held_out)
    linker_after = linker_errors(after, gt, z_ratio, held_out)
    caught_after, n_wrong_after, _ = errors_in_uncertain(after, gt, z_ratio, threshold)
    pinned_only, _ = relink(detections, bundle, corrected, None, z_ratio, corrections=corrections)
    link_pinned, div_pinned = errors(pinned_only, gt, z_ratio, held_out)

    def verdict(ok: bool) -> str:
        return "pass" if ok else "FAIL"

    def reduction(before: int, after: int) -> str:
        return "n/a" if before == 0 else f"{after / before - 1:+.0%}"

    link_ok = link_after <= (1 - MIN_ERROR_REDUCTION) * link_before
    div_ok = div_after <= (1 - MIN_ERROR_REDUCTION) * div_before
    event = corrections.counts()
    event = {f"n_{k}": v for k, v in event.items()}
    print(
        f"## Fine-tuning from corrections ({'dry run, ' if dry else ''}{bundle.metadata.name}, "
        f"shift `{args.shift}`, {'oracle' if oracle else 'U-Net'} detections)\n"
    )
    print(
        f"{args.frames} frames of {tuple(args.shape)}, z_ratio {z_ratio:g}, {len(gt)} GT nodes, "
        f"{gt.n_edges} GT links, {len(gt.divisions())} GT divisions; links into frames "
        f"1..{last} corrected ({len(history.done)} edits: {event['n_positive_links']} approved "
        f"links, {event['n_broken_links']} broken, {event['n_hand_added']} added cells, "
        f"{event['n_duplicates']} deleted duplicates); scored on frames "
        f"{held_out}..{args.frames - 1}; detections in {predict_s:.1f} s.\n"
    )
    print("| measure | before | after | change | target | result |")
    print("|---|---:|---:|---:|---|---|")
    print(
        f"| link errors (false + missed) | {link_before} | {link_after} | "
        f"{reduction(link_before, link_after)} | at least halved | {verdict(link_ok)} |"
    )
    print(
        f"| of which between detected cells (the linker's own) | {linker_before} | "
        f"{linker_after} | {reduction(linker_before, linker_after)} | for reference | |"
    )
    print(
        f"| division errors (false + missed) | {div_before} | {div_after} | "
        f"{reduction(div_before, div_after)} | at least halved | {verdict(div_ok)} |"
    )
    print(
        f"| link / division errors, base model re-linked with the pins | {link_before} / "
        f"{div_before} | {link_pinned} / {div_pinned} | | reference | |"
    )
    print(
        f"| fine-tune time ({CPU_THREADS} CPU threads available) | | {finetune_s:.1f} s | | "
        f"< {MAX_FINETUNE_SECONDS:g} s | {verdict(finetune_s < MAX_FINETUNE_SECONDS)} |"
    )
    print(
        f"| share of wrong links among the {UNCERTAIN_FRACTION:.0%} most uncertain links | "
        f"{caught:.2f} (of {n_wrong}) | {caught_after:.2f} (of {n_wrong_after}) | | "
        f">= {MIN_ERRORS_IN_UNCERTAIN} before | {verdict(caught >= MIN_ERRORS_IN_UNCERTAIN)} |"
    )
    print(
        f"\nthe first tracking has {n_wrong} wrong links; its {n_top} "
        f"({UNCERTAIN_FRACTION:.0%}) most uncertain links could hold at most "
        f"{best_possible_share(n_wrong, n_top):.2f} of them (a perfect ranking)."
    )
    if dry:
        print(
            "\ndry run: an untrained model gets most links wrong, so they cannot all be among "
            "its 10 % most uncertain; the targets are meant for the trained default model."
        )
    print("\nguard (fine-tune, checked on held-back corrections):")
    print("\n".join(f"    {line}" for line in result.report.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
