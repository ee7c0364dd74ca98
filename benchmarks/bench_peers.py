"""Our linker against laptrack (LAP) and motile (ILP) on the same detections, with known truth.

The detections come from a short multi-frame version of ``bench_link.make_pair``: nuclei of
radius 5 px on a jittered 12 px lattice, z_ratio 5, 2 px random motion per axis per frame, 2 %
of the cells dividing per frame (daughters 4 px either side of the moved mother along x), and
1 % of the cells missed for one frame (so gap closing matters). Every tool links exactly these
detections; the result is scored with :func:`napari_cellect.evaluate.evaluate` against the truth
(detection F1 is 1 by construction; link and division precision/recall/F1 are what differ).

What each tool is given:

- **ours**: ``link_sequence`` with the ``GeometricScorer`` (no model, no embeddings: the
  embeddings are empty), gap closing on, its ``distance_scale`` (the typical displacement in
  radii) set from the motion as the peers' cutoffs are. It sees positions, the radius and the
  division probabilities each detection carries (the U-Net gives every peak a
  mother-about-to-divide and a newborn-daughter probability; here 0.9 on true mothers and
  daughters, 0 elsewhere).
- **ours, no div. prob.**: the same with every division probability 0.5 (no information).
- **ours, default scale**: ``GeometricScorer.for_link()`` as shipped (``distance_scale`` 1).
- **laptrack**: ``LapTrack`` with splitting and gap closing (one missed frame), on positions in
  isotropic units, cutoffs derived from the motion (see :func:`laptrack_tracker`); it has no way
  to take a division probability.
- **motile**: an ILP on a candidate graph (each cell's ``k`` nearest cells within a distance in
  the next frame, and in the frame after for gap links), costs on distance, appear, disappear
  and split, ``MaxParents(1)``, ``MaxChildren(2)``, solved by ilpy's default solver with a time
  limit; it is given the division probabilities too, as a per-node split cost ``-log p``.

Sizes where a peer took longer than ``--budget`` seconds at the previous size are skipped and
marked so. Times are the best of ``--repeat`` runs (one run for the peers above 1,000 cells).

Run: ``python benchmarks/bench_peers.py`` (peers from ``benchmarks/requirements-peers.txt``;
``--quick`` for 100 and 1,000 cells on 3 frames, ``--sizes 100 1000 10000 100000`` to choose,
``--pipeline`` for our full pipeline against the classical LoG + laptrack baseline on synthetic
images, see ``benchmarks/bench_baseline.py``).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
from scipy.spatial import cKDTree

from napari_cellect.evaluate import evaluate
from napari_cellect.settings.linking import LinkingConfig
from napari_cellect.track.detections import Detections
from napari_cellect.track.graph import TrackGraph
from napari_cellect.track.link import link_sequence
from napari_cellect.track.scoring_protocol import GeometricScorer

sys.path.insert(0, str(Path(__file__).parent))
from bench_link import DIVIDING, JITTER, MOTION, RADIUS, SPACING, Z_RATIO, best_of

MISSED = 0.01
DAUGHTER_OFFSET = 4.0
FRAMES = 5


@dataclass
class Sequence:
    """Per-frame detections and the true graph over the same points (rows in frame order)."""

    frames: list[Detections]
    truth: TrackGraph

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([len(d) for d in self.frames])])

    def scaled(self, f: int) -> np.ndarray:
        """Frame ``f``'s positions in isotropic units (z times the z ratio)."""
        return self.frames[f].positions * [Z_RATIO, 1.0, 1.0]

    def graph(self, parent_row: np.ndarray) -> TrackGraph:
        """A TrackGraph over the detections with the given parent rows (-1: none)."""
        pos = np.concatenate([d.positions for d in self.frames])
        t = np.repeat(np.arange(len(self.frames)), [len(d) for d in self.frames])
        return TrackGraph.from_arrays(
            id=np.arange(len(pos)),
            t=t,
            z=pos[:, 0],
            y=pos[:, 1],
            x=pos[:, 2],
            parent_id=parent_row,
            radius=np.full(len(pos), RADIUS),
        )


def make_sequence(n: int, frames: int = FRAMES, motion: float = MOTION, seed: int = 0) -> Sequence:
    """About ``n`` cells per frame over ``frames`` frames, moving, dividing, sometimes missed.

    The same construction as ``bench_link.make_pair``, iterated: a true mother carries
    division probabilities ``[0.9, 0]`` in its last frame, each daughter ``[0, 0.9]`` in its
    first. A missed cell is absent from one frame; its truth edge skips that frame.
    """
    rng = np.random.default_rng(seed)
    m = int(np.ceil(n ** (1 / 3)))
    lattice = np.stack(np.meshgrid(*[np.arange(m)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    pos = lattice[rng.permutation(len(lattice))[:n]] * SPACING
    pos = pos + rng.uniform(-JITTER, JITTER, (n, 3))
    last_row = np.full(n, -1)  # row of each cell's latest detected node
    newborn = np.zeros(n, bool)
    dets, parents, rows = [], [], 0
    for t in range(frames):
        n_cells = len(pos)
        dividing = (rng.random(n_cells) < DIVIDING) & ~newborn & (t < frames - 1)
        missed = (rng.random(n_cells) < MISSED) & ~dividing & ~newborn
        if t in (0, frames - 1):
            missed[:] = False
        seen = ~missed
        div = np.zeros((n_cells, 2), np.float32)
        div[dividing, 0] = 0.9
        div[newborn, 1] = 0.9
        k = int(seen.sum())
        dets.append(
            Detections(
                t,
                pos[seen] / [Z_RATIO, 1, 1],
                np.zeros((k, 0), np.float32),
                np.full(k, RADIUS),
                div[seen],
                np.ones(k),
            )
        )
        parents.append(last_row[seen])
        last_row[seen] = rows + np.arange(k)
        rows += k
        # the next frame: everyone moves, mothers become two daughters
        moved = pos + rng.normal(0, motion, pos.shape)
        offset = np.array([0.0, 0.0, DAUGHTER_OFFSET])
        pos = np.concatenate([moved[~dividing], moved[dividing] - offset, moved[dividing] + offset])
        last_row = np.concatenate([last_row[~dividing], last_row[dividing], last_row[dividing]])
        newborn = np.zeros(len(pos), bool)
        newborn[(~dividing).sum() :] = True
    seq = Sequence(dets, TrackGraph())
    seq.truth = seq.graph(np.concatenate(parents))
    return seq


# ---------------------------------------------------------------------------- the trackers
#: the typical displacement per frame (rms 3D step) in radii: the GeometricScorer's distance_scale
DISTANCE_SCALE = MOTION * math.sqrt(3) / RADIUS


def track_ours(
    seq: Sequence, division_info: bool = True, distance_scale: float = DISTANCE_SCALE
) -> TrackGraph:
    frames = seq.frames
    if not division_info:
        frames = [
            Detections(
                d.t, d.positions, d.embeddings, d.radius, np.full_like(d.division, 0.5), d.score
            )
            for d in frames
        ]
    scorer = GeometricScorer(distance_scale=distance_scale)
    return link_sequence(frames, scorer, LinkingConfig(gap_closing=True), Z_RATIO)


#: largest distances (isotropic px) a peer may link over: 3 sigma of a frame's 3D step for a
#: link, of two frames' steps for a gap, and a daughter's offset plus 3 sigma for a split
LINK_CUTOFF = 3 * MOTION * math.sqrt(3)
GAP_CUTOFF = LINK_CUTOFF * math.sqrt(2)
SPLIT_CUTOFF = DAUGHTER_OFFSET + LINK_CUTOFF


def laptrack_tracker():
    """LapTrack with splitting and one-frame gap closing; costs are squared distances and the
    alternative (start/end) costs laptrack's own estimate (1.05 x 90th percentile)."""
    from laptrack import LapTrack

    return LapTrack(
        cutoff=LINK_CUTOFF**2,
        splitting_cutoff=SPLIT_CUTOFF**2,
        gap_closing_cutoff=GAP_CUTOFF**2,
        gap_closing_max_frame_count=2,
        merging_cutoff=False,
    )


def track_laptrack(seq: Sequence) -> TrackGraph:
    tree = laptrack_tracker().predict([seq.scaled(f) for f in range(len(seq.frames))])
    return seq.graph(_parents_from_edges(seq, tree.edges()))


#: motile's costs, in isotropic px like its distance cost: a lone link of length d is taken
#: when d < APPEAR + DISAPPEAR; in motile 1.0 both edges of a split pay the split edge cost
#: (here their distance plus SPLIT) instead of the distance cost, and the mother pays
#: -log p_divide once, so a daughter at distance d is taken over a new track when
#: d + SPLIT - log p_divide < APPEAR (a first guess, SPLIT 2 and APPEAR 6, found no division
#: at all on the 100-cell sequence)
APPEAR = DISAPPEAR = 8.0
SPLIT = 0.0
GAP = 3.0
MOTILE_K = 5


def motile_graph(seq: Sequence) -> nx.DiGraph:
    """Candidate graph: each cell's ``MOTILE_K`` nearest cells within the cutoff in the next
    frame, and within the gap cutoff two frames on (a gap edge)."""
    offsets = seq.offsets
    graph = nx.DiGraph()
    for f, det in enumerate(seq.frames):
        p = np.maximum(det.division[:, 0].astype(float), 1e-6)
        for i, (z, y, x) in enumerate(seq.scaled(f)):
            graph.add_node(int(offsets[f] + i), t=f, z=z, y=y, x=x, split_cost=-math.log(p[i]))
    for f in range(len(seq.frames) - 1):
        for step, cutoff, gap in ((1, LINK_CUTOFF, 0.0), (2, GAP_CUTOFF, 1.0)):
            if f + step >= len(seq.frames):
                continue
            tree = cKDTree(seq.scaled(f + step))
            dist, idx = tree.query(seq.scaled(f), k=MOTILE_K, distance_upper_bound=cutoff)
            src, col = np.nonzero(np.isfinite(dist))
            for s, j in zip(src, col, strict=True):
                graph.add_edge(
                    int(offsets[f] + s),
                    int(offsets[f + step] + idx[s, j]),
                    distance=float(dist[s, j]),
                    gap=gap,
                )
    return graph


def track_motile(seq: Sequence, time_limit: float) -> TrackGraph:
    """motile as shipped: ilpy's default backend (SCIP; Gurobi is commercial and not
    installed here), its default optimality gap, one thread."""
    import motile
    from motile.constraints import MaxChildren, MaxParents
    from motile.costs import (
        EdgeDistanceCost,
        EdgeSelectedCost,
        EdgeSplitCost,
        NodeAppearCost,
        NodeDisappearCost,
        NodeSelectedCost,
        NodeSplitCost,
    )

    solver = motile.Solver(motile.TrackGraph(motile_graph(seq), frame_attribute="t"))
    solver.add_cost(NodeSelectedCost(constant=-1000.0))  # every detection is a cell
    solver.add_cost(EdgeDistanceCost(position_attribute=("z", "y", "x"), weight=1.0))
    solver.add_cost(EdgeSelectedCost(attribute="gap", weight=GAP))
    solver.add_cost(NodeAppearCost(constant=APPEAR))
    solver.add_cost(NodeDisappearCost(constant=DISAPPEAR))
    solver.add_cost(EdgeSplitCost(attribute="distance", weight=1.0, constant=SPLIT))
    solver.add_cost(NodeSplitCost(attribute="split_cost", weight=1.0))
    solver.add_constraint(MaxParents(1))
    solver.add_constraint(MaxChildren(2))
    solver.solve(timeout=time_limit)
    return seq.graph(_parents_from_edges(seq, solver.get_selected_subgraph().edges))


def _parents_from_edges(seq: Sequence, edges) -> np.ndarray:
    """Parent row of every node from (parent, child) edges; laptrack's nodes are
    ``(frame, index)`` pairs, motile's our rows."""
    offsets = seq.offsets
    parent = np.full(int(offsets[-1]), -1)
    for a, b in edges:
        if isinstance(a, tuple):
            a, b = offsets[a[0]] + a[1], offsets[b[0]] + b[1]
        parent[b] = a
    return parent


# ------------------------------------------------------------------------------- the bench
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 cells, 3 frames")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000, 100_000])
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--seed", type=int, default=0, help="seed of the detections")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument(
        "--budget",
        type=float,
        default=300.0,
        help="skip a peer's larger sizes once one run took longer (s)",
    )
    parser.add_argument(
        "--time-limit", type=float, default=300.0, help="motile's ILP time limit per solve (s)"
    )
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=list(TOOLS))
    parser.add_argument(
        "--pipeline",
        action="store_true",
        help="run bench_baseline.py instead (our pipeline vs LoG + laptrack)",
    )
    args, rest = parser.parse_known_args(argv)
    if args.pipeline:
        from bench_baseline import main as baseline

        return baseline(rest + (["--quick"] if args.quick else []))
    sizes = [100, 1_000] if args.quick else args.sizes
    if args.quick:  # under a minute: motile only at 100 cells, on 3 frames
        args.frames, args.repeat = 3, 1
        args.time_limit, args.budget = min(args.time_limit, 20.0), min(args.budget, 5.0)
    warm_up = make_sequence(20, 3, seed=args.seed + 1)
    over_budget: dict[str, float] = {}
    print(
        f"{args.frames} frames per sequence; times: best of {args.repeat} (peers: 1 run "
        f"above 1,000 cells); budget {args.budget:.0f} s per run, motile time limit "
        f"{args.time_limit:.0f} s\n"
    )
    print(
        "| cells/frame | tool | time (s) | ours faster by | link P | link R | link F1 "
        "| div P | div R | div F1 |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        seq = make_sequence(n, args.frames, seed=args.seed)
        ours_s = None
        for tool in args.tools:
            if tool in over_budget:
                print(
                    f"| {n:,} | {tool} | skipped: {over_budget[tool]:.0f} s at a smaller "
                    "size | | | | | | | |"
                )
                continue
            run = TOOLS[tool]
            repeat = args.repeat if tool.startswith("ours") or n <= 1_000 else 1
            run(warm_up, args)  # imports and first-call costs are not timed
            try:
                seconds, graph = best_of(lambda run=run, seq=seq: run(seq, args), repeat)
            except MemoryError as error:  # laptrack builds dense frame-to-frame distance matrices
                print(f"| {n:,} | {tool} | out of memory: {error} | | | | | | | |", flush=True)
                over_budget[tool] = math.inf
                continue
            s = evaluate(graph, seq.truth, z_ratio=Z_RATIO)
            ours_s = seconds if tool == "ours" else ours_s
            ratio = f"{seconds / ours_s:.1f}x" if ours_s and not tool.startswith("ours") else ""
            if tool == "motile" and seconds >= args.time_limit:  # the solve alone may be less
                ratio += " (reached the ILP time limit)"
            print(
                f"| {n:,} | {tool} | {seconds:.3f} | {ratio} | {s.link_precision:.4f} "
                f"| {s.link_recall:.4f} | {s.link_f1:.4f} | {s.div_precision:.3f} "
                f"| {s.div_recall:.3f} | {s.div_f1:.3f} |",
                flush=True,
            )
            if seconds > args.budget:
                over_budget[tool] = seconds
    return 0


TOOLS: dict[str, Callable[[Sequence, argparse.Namespace], TrackGraph]] = {
    "ours": lambda seq, args: track_ours(seq),
    "ours, no div. prob.": lambda seq, args: track_ours(seq, division_info=False),
    "ours, default scale": lambda seq, args: track_ours(seq, distance_scale=1.0),
    "laptrack": lambda seq, args: track_laptrack(seq),
    "motile": lambda seq, args: track_motile(seq, args.time_limit),
}


if __name__ == "__main__":
    sys.exit(main())
