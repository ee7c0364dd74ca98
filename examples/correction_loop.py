"""The whole correction loop from Python, without napari or Qt.

On the built-in synthetic example: track with the bundled model, correct the first frames from
the ground truth (as a person would in the editor: fix links, delete false detections, approve),
fine-tune on those corrections, re-link keeping the approved work, export, and score before and
after against the ground truth::

    python examples/correction_loop.py --out /tmp/cellect-loop

Every step goes through :class:`napari_cellect.session.TrackingSession`, the object the napari
widgets use too; long steps are generators of progress run with
:func:`napari_cellect.progress.run_to_end`.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from napari_cellect.data.synthetic import PRESETS, generate
from napari_cellect.errors import GraphError
from napari_cellect.evaluate import evaluate
from napari_cellect.progress import Step, run_to_end
from napari_cellect.session import TrackingSession
from napari_cellect.session.jobs import default_tracking_function, tracking_job
from napari_cellect.track import edits
from napari_cellect.track.graph import NO_PARENT, TrackGraph
from napari_cellect.track.matching import match_nodes
from napari_cellect.train.finetune_config import FinetuneConfig


def correct_from_truth(
    session: TrackingSession, truth: TrackGraph, frames: int, z_ratio: float
) -> int:
    """Correct frames ``0 .. frames-1`` as a person would, from the ground truth: delete false
    detections, give each matched cell its true parent, approve it. Returns the edits made."""
    graph = session.graph
    matching = match_nodes(graph, truth, z_ratio=z_ratio)
    pred_of_truth = {
        int(truth.ids[g]): int(graph.ids[p]) for g, p in enumerate(matching.gt_to_pred) if p >= 0
    }
    n_edits = 0
    early = graph["t"] < frames
    false = graph.ids[early & (matching.pred_to_gt < 0)]
    for node in false.tolist():
        session.history.do(edits.delete_node, node)
        n_edits += 1
    for row in np.flatnonzero(truth["t"] < frames):
        child = pred_of_truth.get(int(truth.ids[row]))
        if child is None:
            continue
        parent_truth = int(truth["parent_id"][row])
        parent = pred_of_truth.get(parent_truth) if parent_truth != NO_PARENT else None
        try:
            if parent is not None and graph.parent_of(child) != parent:
                session.history.do(edits.link, parent, child)
                n_edits += 1
            session.history.do(edits.approve, [child])
            n_edits += 1
        except GraphError:
            continue  # a division the prediction cannot take here: left for the re-link
    return n_edits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: temp)")
    parser.add_argument("--frames", type=int, default=8, help="frames of the example")
    parser.add_argument("--size", type=int, nargs=3, default=(16, 96, 96), metavar=("Z", "Y", "X"))
    parser.add_argument("--cells", type=int, default=20, help="cells at the start")
    parser.add_argument("--corrected", type=int, default=4, help="frames corrected by hand")
    parser.add_argument("--epochs", type=int, default=10, help="most fine-tuning epochs")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="cellect-loop-"))
    out.mkdir(parents=True, exist_ok=True)

    def report(step: Step) -> None:
        print(f"  {step.stage}: {step.done}/{step.total}", end="\r", flush=True)

    # 1. open the images: the built-in synthetic example, with its ground truth
    config = dataclasses.replace(
        PRESETS["default"],
        frames=args.frames,
        shape=tuple(args.size),
        n_cells=args.cells,
        seed=args.seed,
    )
    example = generate(config)
    truth, z_ratio = example.graph, config.z_ratio

    # 2. track (the bundled model) and open the result as a session
    job = tracking_job(
        default_tracking_function(),
        example.images,
        None,
        z_ratio=z_ratio,
        device="cpu",
        tile=None,
        should_stop=lambda: False,
    )
    output = run_to_end(job, report)
    session = TrackingSession.from_tracking(
        output, z_ratio=z_ratio, name="example", journal_folder=out / "example.cellect-journal"
    )
    before = evaluate(session.graph, truth, z_ratio=z_ratio)
    print(
        f"tracked: {len(session.graph)} cells; link F1 {before.link_f1:.3f}, TRA {before.tra:.3f}"
    )

    # 3. correct the first frames (undoable edits, autosaved in the journal)
    n = correct_from_truth(session, truth, args.corrected, z_ratio)
    print(
        f"corrected frames 0-{args.corrected - 1}: {n} edits; corrections "
        f"{session.corrections().counts()}"
    )

    # 4. fine-tune on the corrections, 5. re-link keeping the approved work
    result = run_to_end(
        session.iter_finetune(FinetuneConfig(epochs=args.epochs, seed=args.seed)), report
    )
    print("\n".join(result.report.lines()))
    kept = session.keep_finetune(result)  # the guard's choice; a person may discard it instead
    tuned = session.model if kept else result.bundle
    print(f"fine-tuned: {tuned.metadata.name}" if kept else "the guard adopted nothing")
    relinked = run_to_end(session.iter_relink(), report)
    print(
        f"re-linked: {len(relinked.changed)} link(s) made, {len(relinked.removed)} removed "
        "(one undoable edit)"
    )

    # 6. export, 7. score against the ground truth
    csv, _ = session.export("csv", out / "tracks.csv")
    ctc, note = session.export("ctc", out / "example_RES")
    tuned.save(out / "tuned.pt")
    after = evaluate(session.graph, truth, z_ratio=z_ratio)
    print(f"wrote {csv}, {ctc} and {out / 'tuned.pt'}" + (f" ({note})" if note else ""))
    print(
        f"scores: link F1 {before.link_f1:.3f} -> {after.link_f1:.3f}, "
        f"TRA {before.tra:.3f} -> {after.tra:.3f}"
    )
    session.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
