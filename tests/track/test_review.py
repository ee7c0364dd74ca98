"""The review queue (track/review.py): uncertainty ranking, skipping approved items."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellect.track import edits
from napari_cellect.track.edits import History
from napari_cellect.track.graph import TrackGraph
from napari_cellect.track.link import MARGIN_COLUMN
from napari_cellect.track.review import DIVISION, LINK, ReviewConfig, ReviewQueue, link_margins


@pytest.fixture
def graph() -> TrackGraph:
    """Four two-node tracks with known link margins and division scores (frame 2 is last)."""
    return TrackGraph.from_arrays(
        id=[1, 2, 3, 4, 5, 6, 7, 8, 9],
        t=[0, 0, 0, 0, 1, 1, 1, 1, 2],
        z=[0.0] * 9,
        y=[10.0, 30, 50, 70, 10, 30, 50, 70, 10],
        x=[10.0] * 9,
        parent_id=[-1, -1, -1, -1, 1, 2, 3, 4, 5],
        division_score=[0.2, 0.45, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0],
        link_score=[np.nan] * 4 + [0.9, 0.6, 0.95, 0.8, 0.99],
        **{MARGIN_COLUMN: [np.nan] * 4 + [0.7, 0.05, 0.9, -0.2, 0.95]},
    )


def test_links_ranked_by_margin_and_divisions_by_closeness_to_threshold(graph):
    queue = ReviewQueue(graph, ReviewConfig(division_threshold=0.5))
    links = queue.items(LINK)
    assert [(i.parent, i.node) for i in links] == [(4, 8), (2, 6), (1, 5), (3, 7), (5, 9)]
    assert links[0].margin == pytest.approx(-0.2)
    divisions = queue.items(DIVISION)
    assert [i.node for i in divisions][:3] == [2, 1, 4]  # 0.45, 0.2, 0.9 from 0.5
    assert divisions[0].margin == pytest.approx(0.1)
    # the last frame has no next frame to divide into
    assert 9 not in [i.node for i in divisions]
    first = queue.next()
    assert (first.kind, first.node) == (LINK, 8)


def test_next_after_walks_the_ranking(graph):
    queue = ReviewQueue(graph, ReviewConfig(divisions=False))
    seen = []
    item = queue.next()
    while item is not None:
        seen.append(item.node)
        item = queue.next(after=item)
    assert seen == [8, 6, 5, 7, 9]


def test_approved_items_are_skipped_and_the_queue_follows_edits(graph):
    queue = ReviewQueue(graph)
    n_before = len(queue)
    history = History(graph)
    history.do(edits.approve, [8])  # the most uncertain link, and 4's only child
    assert queue.next().node != 8
    assert len(queue) == n_before - 2  # the link 4 -> 8 and the division item of 4
    assert 8 not in [i.node for i in queue.items(LINK)]
    history.undo()
    assert queue.next().node == 8
    queue.close()


def test_count_unreviewed(graph):
    queue = ReviewQueue(graph, ReviewConfig(divisions=False))
    assert queue.count_unreviewed(0.5) == 2  # margins -0.2 and 0.05
    assert queue.count_unreviewed(0.0) == 1
    graph.set_values("approved", [6], True)
    assert queue.count_unreviewed(0.5) == 1


def test_link_margins_recomputed_without_the_column():
    # frame 0: cell 1 with two equidistant next-frame candidates (ambiguous), cell 2 alone
    graph = TrackGraph.from_arrays(
        id=[1, 2, 3, 4, 5],
        t=[0, 0, 1, 1, 1],
        z=[0.0] * 5,
        y=[10.0, 60, 7, 13, 60],
        x=[10.0] * 5,
        parent_id=[-1, -1, 1, -1, 2],
        radius=[4.0] * 5,
    )
    margins = link_margins(graph)
    assert np.isnan(margins[:2]).all() and np.isnan(margins[3])
    assert margins[2] < 0.1 < margins[4]
    queue = ReviewQueue(graph, ReviewConfig(divisions=False))
    assert [i.node for i in queue.items()] == [3, 5]
    assert queue.items()[0].margin == pytest.approx(margins[2])


def test_link_without_margin_falls_back_to_its_score(graph):
    graph.set_values(MARGIN_COLUMN, [5, 6, 7, 8, 9], np.nan)
    queue = ReviewQueue(graph, ReviewConfig(divisions=False))
    assert [i.node for i in queue.items()] == [6, 8, 5, 7, 9]  # link scores 0.6 < 0.8 < 0.9 ...
    assert queue.items()[0].margin == pytest.approx(2 * 0.6 - 1)
