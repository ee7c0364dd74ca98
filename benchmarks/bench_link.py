"""Speed of merging and frame-pair linking with the GeometricScorer (no model, no torch).

Synthetic embryo-like frames: nuclei of radius 5 px on a jittered 12 px lattice, z_ratio 5,
2 % of cells dividing. Two scenarios: ``typical`` (2 px motion per axis per frame, each cell keeps
its embedding) and ``ambiguous`` (5 px motion, no embedding information: every cell has about
five plausible candidates, the worst case for the solver). Prints one table row per scenario and
size: the KD-tree candidate query, the scoring, the assignment solve, the whole
``link_frame_pair`` call (which does all three plus checks), the links and divisions found (of
the true ones), and ``merge_duplicates`` on the same frame with 5 % duplicated detections.
The target is a whole frame pair of 10,000 cells linked in under one second.

Run: ``python benchmarks/bench_link.py`` (``--quick`` for the 1,000-cell row only,
``--sizes 1000 10000 50000`` to choose, ``--repeat N`` for the best of N runs).
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable

import numpy as np

from napari_cellect.settings.linking import LinkingConfig
from napari_cellect.settings.merge import MergeConfig
from napari_cellect.track.assignment import AssignmentProblem, solve_assignment
from napari_cellect.track.detections import Detections
from napari_cellect.track.link import link_frame_pair
from napari_cellect.track.merge import merge_duplicates
from napari_cellect.track.scoring_protocol import GeometricScorer, nearest_candidates

Z_RATIO = 5.0
RADIUS = 5.0
SPACING = 12.0
JITTER = 2.0
MOTION = 2.0
DIVIDING = 0.02
DUPLICATED = 0.05
EMBEDDING_DIM = 16


def make_pair(
    n: int, motion: float = MOTION, embeddings: bool = True, seed: int = 0
) -> tuple[Detections, Detections]:
    """Two consecutive frames of about ``n`` cells each, with divisions.

    With ``embeddings`` each cell keeps its (noisy) embedding across frames; without, all
    embeddings are equal and only geometry can decide, the hardest case for the solver.
    """
    rng = np.random.default_rng(seed)
    # a jittered lattice keeps nuclei apart, as in tissue
    m = int(np.ceil(n ** (1 / 3)))
    lattice = np.stack(np.meshgrid(*[np.arange(m)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    lattice = lattice[rng.permutation(len(lattice))[:n]] * SPACING
    scaled = lattice + rng.uniform(-JITTER, JITTER, (n, 3))
    pos = scaled / [Z_RATIO, 1, 1]
    emb = rng.normal(size=(n, EMBEDDING_DIM)).astype(np.float32)
    div = np.zeros((n, 2), np.float32)
    dividing = rng.random(n) < DIVIDING
    div[dividing, 0] = 0.9
    moved = pos + rng.normal(0, motion, (n, 3)) / [Z_RATIO, 1, 1]
    d_pos = np.concatenate([moved[dividing] - [0, 0, 4], moved[dividing] + [0, 0, 4]])
    pos_b = np.concatenate([moved[~dividing], d_pos])
    emb_b = np.concatenate([emb[~dividing], emb[dividing], emb[dividing]])
    emb_b = emb_b + rng.normal(0, 0.1, emb_b.shape).astype(np.float32)
    div_b = np.zeros((len(pos_b), 2), np.float32)
    div_b[(~dividing).sum() :, 1] = 0.9
    if not embeddings:
        emb, emb_b = np.ones_like(emb), np.ones_like(emb_b)
    a = Detections(0, pos, emb, np.full(n, RADIUS), div, np.ones(n))
    b = Detections(1, pos_b, emb_b, np.full(len(pos_b), RADIUS), div_b, np.ones(len(pos_b)))
    return a, b


def with_duplicates(det: Detections, seed: int = 1) -> Detections:
    """``det`` plus a second, slightly shifted detection for some cells."""
    rng = np.random.default_rng(seed)
    dup = np.flatnonzero(rng.random(len(det)) < DUPLICATED)
    extra = det.subset(dup)
    extra.positions = extra.positions + rng.normal(0, 1.0, extra.positions.shape) / [Z_RATIO, 1, 1]
    return Detections.concat([det, extra])


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


#: name -> (motion sigma per axis in px, informative embeddings)
SCENARIOS = {"typical": (MOTION, True), "ambiguous": (2.5 * MOTION, False)}


def bench(n: int, repeat: int, scenario: str = "typical") -> dict[str, float]:
    motion, embeddings = SCENARIOS[scenario]
    det_a, det_b = make_pair(n, motion, embeddings)
    config = LinkingConfig()
    scorer = GeometricScorer.for_link()
    t_knn, (cand, _) = best_of(
        lambda: nearest_candidates(det_a.positions, det_b.positions, config.k, Z_RATIO), repeat
    )
    t_score, scores = best_of(lambda: scorer.score(det_a, det_b, cand, Z_RATIO), repeat)
    keep = (cand >= 0) & (scores.p_match >= config.link_threshold)
    src, col = np.nonzero(keep)
    p_div = np.maximum(scores.p_divide, config.min_probability)
    division_cost = np.where(scores.p_divide >= config.division_threshold, -np.log(p_div), np.inf)
    problem = AssignmentProblem(
        n_sources=len(det_a),
        n_targets=len(det_b),
        edge_src=src,
        edge_dst=cand[src, col],
        edge_cost=-np.log(scores.p_match[src, col].astype(np.float64)),
        division_cost=division_cost,
        appear_cost=config.appear_cost,
        disappear_cost=config.disappear_cost,
    )
    t_solve, _ = best_of(lambda: solve_assignment(problem), repeat)
    t_link, links = best_of(lambda: link_frame_pair(det_a, det_b, scorer, config, Z_RATIO), repeat)
    dup = with_duplicates(det_a)
    merge_scorer = GeometricScorer.for_merge()
    t_merge, (merged, _) = best_of(
        lambda: merge_duplicates(dup, merge_scorer, MergeConfig(), Z_RATIO), repeat
    )
    n_div = int(links.is_division.sum()) // 2
    return {
        "scenario": scenario,
        "cells": n,
        "targets": len(det_b),
        "knn_s": t_knn,
        "score_s": t_score,
        "solve_s": t_solve,
        "link_s": t_link,
        "links": len(links.src_idx),
        "divisions": n_div,
        "true_div": int((det_a.division[:, 0] > 0).sum()),
        "merge_s": t_merge,
        "merged": len(dup) - len(merged),
        "dups": len(dup) - n,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the 1,000-cell row")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    args = parser.parse_args(argv)
    sizes = [1_000] if args.quick else args.sizes
    header = (
        f"{'scenario':<10} {'cells':>7} {'targets':>7} {'knn s':>7} {'score s':>7} {'solve s':>7} "
        f"{'link s':>7} {'links':>6} {'div':>9} {'merge s':>7} {'merged':>9}"
    )
    print(header)
    print("-" * len(header))
    for scenario, n in itertools.product(args.scenarios, sizes):
        r = bench(n, args.repeat, scenario)
        print(
            f"{r['scenario']:<10} {r['cells']:>7} {r['targets']:>7} "
            f"{r['knn_s']:>7.3f} {r['score_s']:>7.3f} "
            f"{r['solve_s']:>7.3f} {r['link_s']:>7.3f} {r['links']:>6} "
            f"{r['divisions']:>4}/{r['true_div']:<4} {r['merge_s']:>7.3f} "
            f"{r['merged']:>4}/{r['dups']:<4}"
        )


if __name__ == "__main__":
    main()
