"""The guard's adoption rule: a paired sign test on the held-back events two models disagree on."""

from __future__ import annotations

from napari_cellect.track.correction_scores import CorrectionScores
from napari_cellect.track.paired_comparison import compare_paired


def scored(wrong: dict[int, int], cells: int = 40) -> CorrectionScores:
    """Link errors on the reviewed cells ``wrong`` (cell id -> errors) of ``cells``."""
    errors = sum(wrong.values())
    return CorrectionScores(
        links=cells,
        links_found=cells - errors,
        cells=cells,
        cells_found=cells,
        wrong=tuple(("link", cell, n) for cell, n in wrong.items()),
    )


def test_a_few_fewer_errors_among_many_changed_events_is_within_noise():
    old = scored({i: 1 for i in range(20)})  # cells 0-19 wrong
    new = scored({i: 1 for i in range(10, 27)})  # 10 fixed, 7 newly wrong: 3 fewer errors
    versus = compare_paired(old, new)
    assert (versus.gain, versus.better, versus.worse) == (3, 10, 7)
    assert not versus.clear and versus.p > 0.05
    assert versus.describe() == (
        "3 fewer errors on 40 held-back cells and 0 divisions (10 decisions better, 7 worse)"
    )


def test_the_same_gain_with_nothing_made_worse_is_clear_from_five_events():
    old = scored({i: 1 for i in range(20)})
    assert not compare_paired(old, scored({i: 1 for i in range(4, 20)})).clear  # 4 of 4
    versus = compare_paired(old, scored({i: 1 for i in range(5, 20)}))
    assert (versus.gain, versus.better, versus.worse) == (5, 5, 0) and versus.clear
    assert not compare_paired(scored({i: 1 for i in range(5, 20)}), old).clear  # worse


def test_paired_events_count_a_changed_error_even_when_the_totals_agree():
    old, new = scored({1: 1, 2: 1}), scored({3: 1, 4: 1})
    versus = compare_paired(old, new)
    assert (versus.gain, versus.better, versus.worse, versus.p) == (0, 2, 2, 0.6875)
    assert compare_paired(old, old).p == 1.0 and not compare_paired(old, old).clear
