"""The fine-tuning guard: learn from corrections without ever making the result worse.

:func:`iter_guarded_finetune` (a generator; the session, the Fine-tune widget and
``cellect finetune`` run it):

1. **Split** the corrections (:func:`~napari_cellect.track.correction_split.split_corrections`):
   the last third of the corrected frames (the nearest to the frames nobody corrected, which the
   tuned model must generalise to), or a spatial half when only one or two frames are
   corrected, is held back.
2. **Plan**: the training rows, the optimiser steps and a measured step time give an estimate
   of the time it takes (yielded first, as a :class:`FinetunePlan`).
3. **Train** the scorers on the other part (:func:`~napari_cellect.train.finetune.iter_finetune`)
   and any extra part trainers (the detector, :class:`~napari_cellect.train.detector_part.
   DetectorTrainer`), each giving an :class:`UpdatePart`: a name and a function that applies it
   to a model bundle. A part that changes the U-Net (it has ``detect``) changes the detections
   and the embeddings the scorers read, so the scorers are trained twice: on the tracking run's
   detections (the family of models without that part) and on the corrected frames detected
   again with it (the family with it). Scorers are thus always judged and adopted on the
   detections of the U-Net they will run with.
4. **Judge** every combination of the parts of each family by the full pipeline (detections ->
   merge -> link, :func:`~napari_cellect.track.correction_scores.score_on_corrections`) on the
   held-back part, a re-detecting part on its own detections (each frame detected once). A
   few errors either way on a few held-back frames is noise, and adopting on noise made the
   uncorrected frames worse, so a combination may be chosen only when it is **clearly** better
   (:func:`~napari_cellect.track.paired_comparison.compare_paired`: paired, event by event on
   the same held-back cells and divisions, a one-sided sign test at ``adopt_alpha`` on the
   events that changed) than the base, and each of its parts clearly better than the same
   combination without it (the detector: than the best choice without the detector); the
   division head moreover only when the held-back division errors do not rise with it. Among
   those the fewest errors win, ties to fewer parts; with none, the base is kept. A part that
   is not adopted keeps the base's weights, and the report says why with its figures
   ("division head not adopted (the base part is kept): 3 fewer errors on 40 held-back cells and
   6 divisions (5 decisions better, 2 worse) is within noise").
5. **Recalibrate** the detection threshold (raised only: the cached detections were found at
   the current one) and the division threshold on the corrections, with the adopted parts: on
   the held-back part when a part was adopted (its training saw the rest), else on all of them;
   kept only when clearly better on the held-back part (the same test).
6. **Retrain** the adopted scorers on all corrections (more labels; on the adopted detector's
   detections), kept unless they do worse on the held-back part than the ones trained without
   it. The detector is trained again only with ``retrain_detector_on_all`` (twice its time).

The result (:class:`FinetuneResult`) holds the tuned bundle (the base's copy with only the
adopted parts and thresholds), the base bundle and a :class:`GuardReport` with the figures
before and after; nothing is applied to a session here.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from napari_cellect.errors import Cancelled, InputError, NotEnoughCorrections
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.progress import Progress, Step
from napari_cellect.track.correction_scores import CorrectionScores, score_on_corrections
from napari_cellect.track.correction_split import CorrectionSplit, split_corrections
from napari_cellect.track.corrections import CorrectionSet
from napari_cellect.track.detections import Detections
from napari_cellect.track.paired_comparison import Comparison, compare_paired
from napari_cellect.train.finetune import _torch_threads, iter_finetune
from napari_cellect.train.finetune_config import FinetuneConfig
from napari_cellect.train.finetune_losses import loss_terms, training_phases
from napari_cellect.train.finetune_rows import build_training_data

logger = logging.getLogger(__name__)

#: detection thresholds tried above the current one (cached detections cannot go below it)
DETECTION_STEPS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
#: division thresholds tried
DIVISION_THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
#: the recalibrated thresholds, by the names the report uses
DETECTION, DIVISION = "detection threshold", "division threshold"
#: optimiser steps timed for the estimate
TIMED_STEPS = 3


# ================================================================================= the interface


#: Re-detect frames with a bundle (a part that changes the U-Net needs its own detections).
Detect = Callable[[ModelBundle, Sequence[int]], list[Detections]]


@dataclass(frozen=True)
class UpdatePart:
    """One adoptable part of a fine-tuning update.

    ``apply`` changes a bundle in place (the guard gives it a copy of the base); ``detect``,
    for a part that changes the U-Net, finds the raw detections of the given frames with a
    bundle the part was applied to (the guard calls it once per frame set and caches them).
    """

    name: str
    apply: Callable[[ModelBundle], None]
    detect: Detect | None = None


class PartTrainer(Protocol):
    """Trains one part from corrections (the detector's U-Net adaptation is one).

    ``train`` starts from ``bundle`` (never modified), learns from ``corrections`` and returns
    the :class:`UpdatePart` (None: nothing to learn), yielding progress steps; it raises
    :class:`~napari_cellect.errors.Cancelled` when ``should_stop()`` says so. The guard calls it
    on the training part, and again on all corrections when the part is adopted."""

    name: str

    def train(
        self, bundle: ModelBundle, corrections: CorrectionSet, should_stop: Callable[[], bool]
    ) -> Generator[Step, None, UpdatePart | None]: ...


# ================================================================================= the results


@dataclass(frozen=True)
class FinetunePlan:
    """What will be trained and about how long it takes (the first step yielded)."""

    parts: tuple[str, ...]
    rows: dict[str, int]
    split: str
    steps: int
    step_seconds: float
    seconds: float
    """Estimated wall time of the training (``rounds`` times ``steps``, at most)."""
    rounds: int = 1
    """How many times the scorers may be trained: 2 when the guard retrains on all."""
    part_seconds: dict[str, float] = field(default_factory=dict)
    """Estimated wall time of the extra parts (the detector), included in ``seconds``."""
    stage: str = "plan"
    done: int = 0
    total: int = 0

    def describe(self) -> str:
        rows = ", ".join(f"{n} {k} rows" for k, n in self.rows.items() if n)
        extra = "".join(f", {name} about {_duration(s)}" for name, s in self.part_seconds.items())
        return (
            f"will train {', '.join(self.parts)} on {rows}; {self.split} to check the update; "
            f"about {_duration(self.seconds)} ({self.steps} steps of "
            f"{1000 * self.step_seconds:.0f} ms{', at most twice' if self.rounds > 1 else ''}"
            f"{extra})"
        )


@dataclass(frozen=True)
class PartDecision:
    """Whether a part was adopted, the held-back errors of the chosen model with and without it,
    and why (for people)."""

    name: str
    adopted: bool
    errors_with: int
    errors_without: int
    reason: str = ""
    """E.g. ``not adopted (the base part is kept): 3 fewer errors on 40 held-back cells and 6
    divisions (5 decisions better, 2 worse) is within noise``."""


@dataclass(frozen=True)
class GuardReport:
    """What the guard measured and chose (see the module docstring)."""

    split: str
    before: CorrectionScores
    """The base model on the held-back corrections."""
    after: CorrectionScores
    """The tuned model (trained without them) on the held-back corrections."""
    parts: tuple[PartDecision, ...] = ()
    thresholds: dict[str, tuple[float, float]] = field(default_factory=dict)
    """``name -> (before, after)`` of the recalibrated thresholds."""
    notes: tuple[str, ...] = ()

    @property
    def adopted(self) -> list[str]:
        return [p.name for p in self.parts if p.adopted]

    @property
    def changed(self) -> bool:
        """True when the tuned model differs from the base (a part or a threshold)."""
        return bool(self.adopted) or any(a != b for a, b in self.thresholds.values())

    def figures(self) -> list[str]:
        """Before -> after lines, e.g. ``division recall on your corrections 0.40 -> 0.85``."""
        b, a = self.before, self.after
        out = [
            f"link errors on your corrections {b.link_errors} -> {a.link_errors} "
            f"(recall {_ratio(b.link_recall)} -> {_ratio(a.link_recall)}, of {b.links})",
            f"division recall on your corrections {_ratio(b.division_recall)} -> "
            f"{_ratio(a.division_recall)} (of {b.divisions}); false divisions "
            f"{b.false_divisions} -> {a.false_divisions}",
            f"detection recall on your corrections {_ratio(b.detection_recall)} -> "
            f"{_ratio(a.detection_recall)} (of {b.cells}); deleted cells found again "
            f"{b.false_cells} -> {a.false_cells}",
        ]
        return out

    def lines(self) -> list[str]:
        """The whole report for people (the CLI prints it, the widget shows it)."""
        out = [f"checked on {self.split}:", *(f"  {line}" for line in self.figures())]
        for p in self.parts:
            verdict = "adopted" if p.adopted else "not adopted, the base part is kept"
            out.append(
                f"  {p.name} {p.reason}"
                if p.reason
                else f"  {p.name}: {verdict} (errors {p.errors_without} without, "
                f"{p.errors_with} with it)"
            )
        for name, (old, new) in self.thresholds.items():
            out.append(f"  {name}: {old:g} -> {new:g}" if old != new else f"  {name}: {old:g} kept")
        out += [f"  {note}" for note in self.notes]
        return out


@dataclass(frozen=True)
class FinetuneResult:
    """What :func:`iter_guarded_finetune` returns: ``bundle`` is the tuned model (a copy of
    ``base`` with the adopted parts and thresholds; ``base`` itself is unchanged)."""

    bundle: ModelBundle
    base: ModelBundle
    report: GuardReport
    plan: FinetunePlan | None = None

    @property
    def changed(self) -> bool:
        return self.report.changed


# ==================================================================================== the guard


def scorer_parts(tuned: ModelBundle, base: ModelBundle | None = None) -> list[UpdatePart]:
    """The tuned scorers of ``tuned`` as parts: merge scorer, link scorer (encoder and link
    heads) and, where it is a separate head, the division head; with ``base``, only the parts
    whose weights differ from it (the ones training moved)."""
    merge_state = _cloned(tuned.merge_scorer.state_dict())
    link_state = _cloned(tuned.link_scorer.state_dict())
    head = getattr(tuned.link_scorer, "division_head", None)
    division = {k: v for k, v in link_state.items() if k.startswith("division_head.")}
    link_only = {k: v for k, v in link_state.items() if not k.startswith("division_head.")}

    def merge(bundle: ModelBundle) -> None:
        bundle.merge_scorer.load_state_dict(merge_state)

    def link(bundle: ModelBundle) -> None:
        bundle.link_scorer.load_state_dict(link_only, strict=head is None)

    def divisions(bundle: ModelBundle) -> None:
        bundle.link_scorer.load_state_dict({**bundle.link_scorer.state_dict(), **division})

    parts = [
        UpdatePart("merge scorer", merge),
        UpdatePart("link scorer" if head is not None else "link scorer (with divisions)", link),
    ]
    if head is not None and division:
        parts.append(UpdatePart("division head", divisions))
    if base is None:
        return parts
    old_link = base.link_scorer.state_dict()
    moved = {
        "merge scorer": _differs(merge_state, base.merge_scorer.state_dict()),
        "division head": _differs(division, old_link),
    }
    return [p for p in parts if moved.get(p.name, _differs(link_only, old_link))]


def _differs(state: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(v, other[k]) for k, v in state.items())


def iter_guarded_finetune(
    bundle: ModelBundle,
    corrections: CorrectionSet,
    detections: Sequence[Detections],
    *,
    z_ratio: float,
    config: FinetuneConfig | None = None,
    trainers: Sequence[PartTrainer] = (),
    should_stop: Callable[[], bool] | None = None,
    source: str | None = None,
) -> Generator[Step, None, FinetuneResult]:
    """Fine-tune with the guard (module docstring); yields a :class:`FinetunePlan`, then the
    training's :class:`FinetuneProgress` and ``Progress("check", ...)`` steps; returns a
    :class:`FinetuneResult`. ``bundle`` is never modified.

    Raises:
        NotEnoughCorrections, ContradictoryCorrections: at the call.
        Cancelled: ``should_stop`` returned True.
    """
    cfg = config or FinetuneConfig()
    if not (np.isfinite(z_ratio) and z_ratio > 0):
        raise InputError(f"z_ratio: expected a finite number > 0, found {z_ratio}")
    corrections.require_trainable()
    _check_frames(corrections, detections)
    return _guarded(
        bundle,
        corrections,
        list(detections),
        z_ratio,
        cfg,
        list(trainers),
        should_stop or (lambda: False),
        source,
    )


def _guarded(
    base: ModelBundle,
    cs: CorrectionSet,
    detections: list[Detections],
    z_ratio: float,
    cfg: FinetuneConfig,
    trainers: list[PartTrainer],
    should_stop: Callable[[], bool],
    source: str | None,
) -> Generator[Step, None, FinetuneResult]:
    split = split_corrections(cs, cfg.holdout_every) if cfg.guard else None
    by_t = {int(d.t): d for d in detections}
    plan = _plan(base, cs, detections, z_ratio, cfg, trainers, split)
    yield plan
    if not cfg.guard:
        parts = []
        for trainer in trainers:
            part = yield from trainer.train(base, cs, should_stop)
            parts += [part] if part is not None else []
        detector = next((p for p in parts if p.detect is not None), None)
        # the scorers learn on the new detector's detections
        if detector is not None and detector.detect is not None:
            detections = detector.detect(_assemble(base, [detector], {}), _near(cs, by_t))
        tuned = yield from _train_scorers(base, cs, detections, z_ratio, cfg, should_stop, source)
        parts += scorer_parts(tuned, base) if tuned is not None else []
        result = _assemble(base, parts, {})
        report = GuardReport(
            "nothing (the guard is off)",
            CorrectionScores(),
            CorrectionScores(),
            tuple(PartDecision(p.name, True, 0, 0) for p in parts),
            notes=("every part adopted unchecked (guard off)",),
        )
        _record(result, cs, report, source)
        return FinetuneResult(result, base, report, plan)
    if split is None:
        report = GuardReport(
            "nothing",
            CorrectionScores(),
            CorrectionScores(),
            notes=(
                "too few corrections to hold some back and check an update: nothing "
                "adopted; approve more cells (or a second frame) and fine-tune again",
            ),
        )
        return FinetuneResult(copy.deepcopy(base), base, report, plan)

    # 3. train each part without the held-back corrections; the scorers once on the tracking
    #    run's detections and, when a part re-detects (the detector), again on its detections
    judge = _Judge(base, split, by_t, z_ratio, cfg)
    extra: list[UpdatePart] = []
    for trainer in trainers:
        part = yield from trainer.train(base, split.train, should_stop)
        if part is not None:
            extra.append(part)
    detector = next((p for p in extra if p.detect is not None), None)
    others = [p for p in extra if p.detect is None]
    notes: list[str] = []
    families: list[tuple[UpdatePart | None, list[UpdatePart]]] = [
        (
            None,
            others
            + (
                yield from _scorer_family(
                    base, split.train, detections, z_ratio, cfg, should_stop, source, notes
                )
            ),
        )
    ]
    if detector is not None:
        found = judge.detections([detector], _near(cs, by_t))
        families.append(
            (
                detector,
                others
                + (
                    yield from _scorer_family(
                        base,
                        split.train,
                        [found[t] for t in sorted(found)],
                        z_ratio,
                        cfg,
                        should_stop,
                        source,
                        notes,
                    )
                ),
            )
        )

    # 4. every combination of parts on the held-back corrections
    combos = [
        ((head,) if head is not None else ()) + c
        for head, family in families
        for n in range(len(family) + 1)
        for c in itertools.combinations(family, n)
    ]
    scores: dict[frozenset[int], CorrectionScores] = {}
    for i, combo in enumerate(combos):
        if should_stop():
            raise Cancelled("fine-tuning cancelled; the model is unchanged")
        scores[_key(combo)] = judge.score(combo, {})
        yield Progress("check", i + 1, len(combos))
    rule = _Rule(families, combos, scores, cfg.adopt_alpha)
    chosen = rule.chosen
    before = scores[_key(())]
    decisions = rule.decisions()
    adopted = list(chosen)

    # 5. thresholds on the corrections
    on_held = bool(adopted)
    thresholds = judge.calibrate(adopted, on_held=on_held) if cfg.calibrate_thresholds else {}
    changes = {k: v for k, (old, v) in thresholds.items() if v != old}
    after = judge.score(adopted, changes)
    if changes:  # judged where they were chosen, and never worse on the held-back part
        unchanged = judge.score(adopted, {})
        versus = compare_paired(
            judge.score(adopted, {}, on_held),
            judge.score(adopted, changes, on_held),
            cfg.adopt_alpha,
        )
        if not versus.clear or after.errors > unchanged.errors:
            notes.append(
                "thresholds kept: the recalibrated ones made "
                + versus.describe("held-back" if on_held else "corrected")
                + (", within noise" if versus.gain > 0 and not versus.clear else "")
                + (
                    f", but {after.errors} errors on the held-back part instead of "
                    f"{unchanged.errors}"
                    if after.errors > unchanged.errors
                    else ""
                )
            )
            thresholds = {k: (old, old) for k, (old, _) in thresholds.items()}
            changes, after = {}, unchanged

    # 6. the adopted parts again, on all corrections (the scorers on the detections of the
    #    retrained detector, when it is adopted)
    if adopted and cfg.retrain_on_all:
        names = [p.name for p in adopted]
        again: list[UpdatePart] = []
        for trainer in trainers:
            if trainer.name not in names:
                continue
            kept = next(p for p in adopted if p.name == trainer.name)
            if kept.detect is not None and not cfg.retrain_detector_on_all:
                again.append(kept)  # twice the detector's time: kept as trained
                continue
            part = yield from trainer.train(base, cs, should_stop)
            again += [part] if part is not None else []
        dets = detections
        new_detector = next((p for p in again if p.detect is not None), None)
        if new_detector is not None:
            found = judge.detections([new_detector], _near(cs, by_t))
            dets = [found[t] for t in sorted(found)]
        if set(names) & {p.name for p in scorer_parts(base)}:
            full = yield from _train_scorers(
                base, cs, dets, z_ratio, cfg, should_stop, source, NotEnoughCorrections
            )
            again += [p for p in scorer_parts(full) if p.name in names] if full else []
        if sorted(p.name for p in again) == sorted(names) and (
            judge.score(again, changes).errors <= after.errors
        ):
            adopted = again
            notes.append("adopted parts retrained on all corrections")
        else:
            notes.append(
                "adopted parts kept as trained without the held-back corrections "
                "(retrained on all of them they did worse there)"
            )
    tuned_bundle = _assemble(base, adopted, changes)
    report = GuardReport(split.description, before, after, decisions, thresholds, tuple(notes))
    if report.changed:
        _record(tuned_bundle, cs, report, source)
    for line in report.lines():
        logger.info("%s", line)
    return FinetuneResult(tuned_bundle, base, report, plan)


class _Judge:
    """Scores models with some parts and thresholds on the held-back (or all) corrections."""

    def __init__(
        self,
        base: ModelBundle,
        split: CorrectionSplit,
        by_t: dict[int, Detections],
        z_ratio: float,
        cfg: FinetuneConfig,
    ):
        self.base, self.split, self.by_t, self.z_ratio = base, split, by_t, z_ratio
        self.match = cfg.match
        self._detected: dict[int, dict[int, Detections]] = {}
        self._scorers: dict[frozenset[int], ModelBundle] = {}

    def model(self, parts: Sequence[UpdatePart], thresholds: dict[str, float]) -> ModelBundle:
        key = _key(parts)
        if key not in self._scorers:
            self._scorers[key] = _assemble(self.base, parts, {})
        bundle = self._scorers[key]
        if thresholds:
            bundle = copy.copy(bundle)
            bundle.thresholds = _with_thresholds(bundle.thresholds, thresholds)
        return bundle

    def detections(
        self, parts: Sequence[UpdatePart], frames: Sequence[int]
    ) -> dict[int, Detections]:
        detector = next((p for p in parts if p.detect is not None), None)
        if detector is None or detector.detect is None:
            return self.by_t
        wanted = {f for t in frames for f in (t - 1, t) if f in self.by_t}
        cached = self._detected.setdefault(id(detector), {})
        missing = sorted(wanted - set(cached))
        if missing:  # each frame once per detector
            found = detector.detect(self.model([detector], {}), missing)
            cached.update({int(d.t): d for d in found})
        return cached

    def score(
        self, parts: Sequence[UpdatePart], thresholds: dict[str, float], on_held: bool = True
    ) -> CorrectionScores:
        truth = self.split.held if on_held else _union(self.split)
        frames = self.split.held_frames if on_held else None
        bundle = self.model(parts, thresholds)
        dets = self.detections(parts, frames or sorted(self.by_t))
        return score_on_corrections(bundle, dets, truth, self.z_ratio, frames, self.match)

    def calibrate(
        self, parts: Sequence[UpdatePart], on_held: bool
    ) -> dict[str, tuple[float, float]]:
        """Detection, then division threshold: the fewest errors, ties to the current value."""
        current = self.base.thresholds
        out: dict[str, tuple[float, float]] = {}
        chosen: dict[str, float] = {}
        old = float(current.detection.threshold)
        options = sorted({min(old + s, 0.95) for s in DETECTION_STEPS})
        out[DETECTION] = (old, self._best(parts, chosen, DETECTION, old, options, on_held))
        chosen[DETECTION] = out[DETECTION][1]
        old = float(current.link.division_threshold)
        options = sorted(set(DIVISION_THRESHOLDS) | {old})
        out[DIVISION] = (old, self._best(parts, chosen, DIVISION, old, options, on_held))
        return out

    def _best(
        self,
        parts: Sequence[UpdatePart],
        fixed: dict[str, float],
        name: str,
        old: float,
        options: Sequence[float],
        on_held: bool,
    ) -> float:
        errors = {v: self.score(parts, {**fixed, name: v}, on_held).errors for v in options}
        return min(options, key=lambda v: (errors[v], abs(v - old)))


# ==================================================================================== helpers


def _train_scorers(
    base: ModelBundle,
    cs: CorrectionSet,
    detections: list[Detections],
    z_ratio: float,
    cfg: FinetuneConfig,
    should_stop: Callable[[], bool],
    source: str | None,
    tolerate: type[Exception] | tuple[()] = (),
) -> Generator[Step, None, ModelBundle | None]:
    """The scorers tuned on ``cs`` (None when ``cs`` cannot train them and ``tolerate`` allows)."""
    try:
        steps = iter_finetune(
            base,
            cs,
            detections,
            z_ratio=z_ratio,
            config=cfg,
            should_stop=should_stop,
            source=source,
        )
        return (yield from steps)
    except tolerate as error:
        logger.info("scorers not trained: %s", error)
        return None


def _scorer_family(
    base: ModelBundle,
    cs: CorrectionSet,
    detections: list[Detections],
    z_ratio: float,
    cfg: FinetuneConfig,
    should_stop: Callable[[], bool],
    source: str | None,
    notes: list[str],
) -> Generator[Step, None, list[UpdatePart]]:
    """The scorer parts trained on ``cs`` with ``detections`` (none, with a note, when the
    training part holds one kind of label only)."""
    tuned = yield from _train_scorers(
        base, cs, detections, z_ratio, cfg, should_stop, source, NotEnoughCorrections
    )
    if tuned is not None:
        return scorer_parts(tuned, base)
    note = (
        "the scorers could not be trained without the held-back corrections (one kind of "
        "label only); they are kept"
    )
    if note not in notes:
        notes.append(note)
    return []


def _near(cs: CorrectionSet, by_t: dict[int, Detections]) -> list[int]:
    """The frames a re-detecting part detects to retune the scorers: the corrected frames and
    the frames after them (link rows look one frame ahead); the judge adds the frames before
    the held-back ones."""
    frames = {int(t) + d for t in cs.frames().tolist() for d in (0, 1)}
    return sorted(frames & set(by_t))


def _key(parts: Sequence[UpdatePart]) -> frozenset[int]:
    """A combination of parts, whatever their order (two parts may share a name: the scorers
    trained on the base's detections and on a new detector's)."""
    return frozenset(map(id, parts))


class _Rule:
    """The adoption rule (module docstring, step 4): which combination is chosen, and why each
    part is or is not adopted."""

    def __init__(
        self,
        families: list[tuple[UpdatePart | None, list[UpdatePart]]],
        combos: list[tuple[UpdatePart, ...]],
        scores: dict[frozenset[int], CorrectionScores],
        alpha: float,
    ):
        self.families, self.combos, self.scores, self.alpha = families, combos, scores, alpha
        heads = {id(h) for h, _ in families if h is not None}
        plain = [c for c in combos if not heads & _key(c)]
        self.without_head = self._best(plain)
        self.chosen = self._best([self.without_head, *(c for c in combos if heads & _key(c))])

    def compare(self, old: frozenset[int], new: frozenset[int]) -> Comparison:
        return compare_paired(self.scores[old], self.scores[new], self.alpha)

    def _best(self, candidates: list[tuple[UpdatePart, ...]]) -> tuple[UpdatePart, ...]:
        eligible = [c for c in candidates if not c or not self._objection(c)]
        return min([(), *eligible], key=lambda c: (self.scores[_key(c)].errors, len(c)))

    def _objection(self, combo: tuple[UpdatePart, ...]) -> str:
        """Why ``combo`` may not be chosen ("" when it may)."""
        key = _key(combo)
        if not self.compare(frozenset(), key).clear:
            return "the model with it is not clearly better than the base"
        for part in combo:
            other = self._without(part, key)
            if not self.compare(other, key).clear:
                return f"{part.name} is not clearly better than without it"
            if part.name == "division head" and (
                self.scores[key].division_errors > self.scores[other].division_errors
            ):
                return "division head raises the division errors"
        return ""

    def _without(self, part: UpdatePart, key: frozenset[int]) -> frozenset[int]:
        """The model to judge ``part`` against: ``key`` without it, or for a re-detecting part
        the best choice without one."""
        if part.detect is not None:
            return _key(self.without_head)
        return key - {id(part)}

    def decisions(self) -> tuple[PartDecision, ...]:
        """Each head, then each part of the chosen combination's family, with the held-back
        errors with and without it and the reason; a re-detecting part's figures are the best
        model with it against the best without (the scorers with it were trained on its
        detections)."""
        out: list[PartDecision] = []
        chosen = _key(self.chosen)
        for head, _family in self.families:
            if head is not None:
                with_head = [c for c in self.combos if id(head) in _key(c)]
                best = self._best(with_head)
                if not best:  # none may be chosen: the one with the fewest errors
                    best = min(with_head, key=lambda c: (self.scores[_key(c)].errors, len(c)))
                out.append(self._decision(head, _key(best), _key(self.without_head), chosen))
        family = next(f for h, f in reversed(self.families) if h is None or id(h) in chosen)
        for part in family:
            with_it, without = chosen | {id(part)}, chosen - {id(part)}
            out.append(self._decision(part, with_it, without, chosen))
        return tuple(out)

    def _decision(
        self,
        part: UpdatePart,
        with_it: frozenset[int],
        without: frozenset[int],
        chosen: frozenset[int],
    ) -> PartDecision:
        versus = self.compare(without, with_it)
        adopted = id(part) in chosen
        if adopted:
            reason = f"adopted: {versus.describe()}, more than noise"
        else:
            reason = "not adopted (the base part is kept): "
            division = (self.scores[without].division_errors, self.scores[with_it].division_errors)
            if part.name == "division head" and division[1] > division[0]:
                reason += (
                    f"division errors on the held-back part would rise {division[0]} -> "
                    f"{division[1]} ({versus.describe()})"
                )
            elif versus.gain <= 0 or not versus.clear:
                reason += versus.describe() + (" is within noise" if versus.gain > 0 else "")
            else:
                objection = self._objection(tuple(p for p in self._parts() if id(p) in with_it))
                reason += f"{versus.describe()}, but {objection or 'another choice did better'}"
        return PartDecision(
            part.name,
            adopted,
            self.scores[with_it].errors,
            self.scores[without].errors,
            reason,
        )

    def _parts(self) -> list[UpdatePart]:
        return [p for h, family in self.families for p in ([h] if h is not None else []) + family]


def _assemble(
    base: ModelBundle, parts: Sequence[UpdatePart], thresholds: dict[str, float]
) -> ModelBundle:
    bundle = copy.deepcopy(base)
    for part in parts:
        part.apply(bundle)
    if thresholds:
        bundle.thresholds = _with_thresholds(bundle.thresholds, thresholds)
    return bundle.eval()


def _with_thresholds(current: Any, values: dict[str, float]) -> Any:
    detection, link = current.detection, current.link
    if DETECTION in values:
        detection = dataclasses.replace(detection, threshold=float(values[DETECTION]))
    if DIVISION in values:
        link = dataclasses.replace(link, division_threshold=float(values[DIVISION]))
    return dataclasses.replace(current, detection=detection, link=link)


def _union(split: CorrectionSplit) -> CorrectionSet:
    return split.train.combine(split.held)


def _cloned(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def _record(
    bundle: ModelBundle, cs: CorrectionSet, report: GuardReport, source: str | None
) -> None:
    """The guard's choice in the tuned bundle's metadata (after the training's own record)."""
    bundle.metadata.record_version(
        "finetune",
        "ft",
        replace=True,
        source=str(source or cs.source or ""),
        **{f"n_{k}": int(v) for k, v in cs.counts().items()},
    )
    bundle.metadata.record(
        "guard",
        split=report.split,
        adopted=", ".join(report.adopted) or "none",
        errors_before=report.before.errors,
        errors_after=report.after.errors,
        **{name.replace(" ", "_"): new for name, (_, new) in report.thresholds.items()},
    )


def _check_frames(cs: CorrectionSet, detections: Sequence[Detections]) -> None:
    """Corrections on frames that were never tracked: say which."""
    have = {int(d.t) for d in detections}
    frames = [int(t) for t in cs.frames().tolist()]
    missing = [t for t in frames if t not in have]
    if missing:
        shown = ", ".join(map(str, missing[:10]))
        raise InputError(
            f"corrections on frame(s) {shown} that were never tracked (no detections there; "
            f"the detections cover {_span(have)}): track or detect those frames first, or "
            "undo the edits there"
        )


def _span(frames: set[int]) -> str:
    if not frames:
        return "no frame"
    return f"frames {min(frames)}-{max(frames)}" if len(frames) > 1 else f"frame {min(frames)}"


def _plan(
    base: ModelBundle,
    cs: CorrectionSet,
    detections: list[Detections],
    z_ratio: float,
    cfg: FinetuneConfig,
    trainers: list[PartTrainer],
    split: CorrectionSplit | None,
) -> FinetunePlan:
    """Rows and steps of the training, with the step time measured on a copy of the scorers."""
    with _torch_threads(cfg.threads):
        light = copy.copy(base)  # a plain dataclass: the copy's scorers are its own
        light.link_scorer = copy.deepcopy(base.link_scorer)
        light.merge_scorer = copy.deepcopy(base.merge_scorer)
        data = build_training_data(light, cs, detections, z_ratio, cfg)
        rng = np.random.default_rng(cfg.seed)
        try:
            terms = loss_terms(light, data, cfg, rng, torch.device("cpu"))
        except NotEnoughCorrections:
            terms = []
        phases = training_phases(terms)
        started = time.perf_counter()
        n = 0
        for phase in phases:
            for _ in range(TIMED_STEPS):
                phase.loss(cfg, rng).backward()
                n += 1
        step_s = (time.perf_counter() - started) / max(n, 1)
    steps = cfg.epochs * cfg.steps_per_epoch * len(phases)
    names = [p.name for p in phases] + [t.name for t in trainers]
    names = [
        "link scorer" if n == "links and merges" else "division head" if n == "divisions" else n
        for n in names
    ]
    if any(t.candidates and t.name == "merge" for t in terms):
        names.append("merge scorer")
    rounds = 2 if cfg.guard and cfg.retrain_on_all else 1
    split_text = (
        split.description
        if split is not None
        else ("nothing held back" if not cfg.guard else "too few corrections to hold some back")
    )
    part_rounds = rounds if cfg.retrain_detector_on_all else 1
    extra = {
        t.name: float(t.estimate_seconds(cs, part_rounds))
        for t in trainers
        if hasattr(t, "estimate_seconds")
    }
    # the scorers train once more per round on a re-detecting part's detections
    scorer_rounds = rounds * (2 if extra and split is not None else 1)
    return FinetunePlan(
        tuple(dict.fromkeys(names)),
        {"link": len(data.link), "merge": len(data.merge)},
        split_text,
        steps,
        step_s,
        scorer_rounds * steps * step_s + sum(extra.values()),
        rounds,
        extra,
    )


def _ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "under a second"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


__all__ = [
    "FinetunePlan",
    "FinetuneResult",
    "GuardReport",
    "PartDecision",
    "PartTrainer",
    "UpdatePart",
    "iter_guarded_finetune",
    "scorer_parts",
]
