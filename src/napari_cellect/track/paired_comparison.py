"""Is one model clearly better than another on the same corrections, or within noise? (The
fine-tuning guard's adoption rule, :mod:`napari_cellect.train.finetune_guard`.) No torch.

Both models are scored on the same held-back events (:attr:`CorrectionScores.wrong`: each
reviewed cell's link and detection, each labelled mother, each deleted detection), so they are
compared **paired**: only the events where they differ say anything. Under "no real difference"
each such event is as likely to go one way as the other, so the number the new model gets
better is Binomial(changed, 1/2) (a one-sided sign test). The new model is clearly better when
that is unlikely (``p <= alpha``). The bound scales with the noise: a gain of 3 among 5 changed
events is clear (p = 0.03 when none got worse), the same gain among 40 changed events is not.
"""

from __future__ import annotations

from dataclasses import dataclass

from scipy.stats import binomtest

from napari_cellect.track.correction_scores import CorrectionScores

#: the sign test's level: a gain is clear when "no real difference" gives it at most this often
ALPHA = 0.05


@dataclass(frozen=True)
class Comparison:
    """``new`` against ``old`` on the same events."""

    gain: int
    """Errors of ``old`` minus errors of ``new`` (positive: ``new`` makes fewer)."""
    better: int
    """Events (decisions) with fewer errors under ``new``."""
    worse: int
    """Events with more errors under ``new``."""
    cells: int
    """Reviewed cells scored (each a detection and a link event)."""
    divisions: int
    """Labelled mothers scored (each a division event)."""
    p: float
    """One-sided sign-test p-value of ``better`` among the changed events (1.0: none changed)."""
    alpha: float = ALPHA

    @property
    def changed(self) -> int:
        return self.better + self.worse

    @property
    def clear(self) -> bool:
        """``new`` makes fewer errors and more events got better than noise explains."""
        return self.gain > 0 and self.better > self.worse and self.p <= self.alpha

    def describe(self, where: str = "held-back") -> str:
        """For people, e.g. ``3 fewer errors on 40 held-back cells and 2 divisions (5 decisions
        better, 2 worse)``."""
        if self.gain > 0:
            size = f"{self.gain} fewer error{'s' if self.gain != 1 else ''}"
        elif self.gain < 0:
            size = f"{-self.gain} more error{'s' if self.gain != -1 else ''}"
        else:
            size = "no fewer errors"
        return (
            f"{size} on {self.cells} {where} cells and {self.divisions} divisions "
            f"({self.better} decision{'s' if self.better != 1 else ''} better, "
            f"{self.worse} worse)"
        )


def compare_paired(
    old: CorrectionScores, new: CorrectionScores, alpha: float = ALPHA
) -> Comparison:
    """``new`` against ``old``, event by event (both scored on the same corrections)."""
    errors_old = _by_event(old)
    errors_new = _by_event(new)
    better = worse = 0
    for event in errors_old.keys() | errors_new.keys():
        diff = errors_old.get(event, 0) - errors_new.get(event, 0)
        better += diff > 0
        worse += diff < 0
    changed = better + worse
    p = binomtest(better, changed, 0.5, alternative="greater").pvalue if changed else 1.0
    return Comparison(
        old.errors - new.errors, better, worse, old.cells, old.divisions, float(p), alpha
    )


def _by_event(scores: CorrectionScores) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for kind, key, n in scores.wrong:
        out[(kind, key)] = out.get((kind, key), 0) + n
    return out
