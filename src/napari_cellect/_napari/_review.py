"""Review navigation: jump to the most uncertain links and divisions nobody approved yet.

:class:`ReviewNavigation` is a part of :class:`~._controller.CellectController` (its
``review``). Each session gets one
:class:`~napari_cellect.track.review.ReviewQueue` (it follows the graph, so every edit re-ranks
it); ``N`` jumps to the next item, ``Shift+N`` back along the items visited. Jumping sets the
time step, centres the camera and selects what a person approves to review the item:

- a link ``parent -> child``: the child (``Y`` approves its incoming link);
- a division of a node with children: the children (``Y`` approves both links, ``D`` toggles
  the division); without children: the node itself (``D`` marks it dividing or not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_cellect.errors import InputError
from napari_cellect.settings.linking import LinkingConfig
from napari_cellect.track.link import MARGIN_COLUMN
from napari_cellect.track.review import (
    DIVISION,
    ReviewConfig,
    ReviewItem,
    ReviewQueue,
    link_margins,
)

if TYPE_CHECKING:
    from napari_cellect._napari._controller import BoundSession, CellectController


@dataclass(frozen=True)
class ReviewSettings:
    """What the widgets count as uncertain."""

    uncertain_margin: float = 0.5
    """Unreviewed items whose margin (certainty in [-1, 1], see
    :mod:`napari_cellect.track.review`) is below this are counted as uncertain: a link whose
    chosen candidate beats the runner-up by less than half the probability range, a division
    score within a quarter of the range around the threshold. ``N`` still visits every item."""

    def __post_init__(self) -> None:
        if not -1.0 <= self.uncertain_margin <= 1.0:
            raise InputError(
                f"ReviewSettings.uncertain_margin: expected [-1, 1], found {self.uncertain_margin}"
            )


@dataclass(eq=False)
class ReviewState:
    """One session's queue and where the person is in it."""

    queue: ReviewQueue
    #: what the queue was built from (margin source, division threshold); a change rebuilds it
    key: tuple[Any, ...]
    current: ReviewItem | None = None
    #: items visited before ``current``, oldest first (Shift+N walks back along them)
    trail: list[ReviewItem] | None = None

    def close(self) -> None:
        self.queue.close()


class ReviewNavigation:
    """Review-queue actions of the controller that owns it (see the module docstring)."""

    def __init__(self, controller: CellectController, settings: ReviewSettings | None = None):
        self.controller = controller
        self.settings = settings or ReviewSettings()

    # ------------------------------------------------------------------ the queue
    def state(self, bound: BoundSession | None = None) -> ReviewState | None:
        """The review queue of ``bound`` (default: the active session), built or rebuilt when
        what it depends on changed."""
        bound = bound if bound is not None else self.controller.bound
        if bound is None:
            return None
        session = bound.session
        graph = session.graph
        has_margins = MARGIN_COLUMN in graph.columns and bool(
            np.any(np.isfinite(graph[MARGIN_COLUMN]))
        )
        threshold = _division_threshold(session.model)
        key = (has_margins, threshold)
        state = bound.review
        if state is None or state.key != key:
            if state is not None:
                state.close()
            config = ReviewConfig(division_threshold=threshold)
            # a margin column of NaNs only (left by undoing a re-link) counts as none
            margins = (
                None if has_margins or MARGIN_COLUMN not in graph.columns else (link_margins(graph))
            )
            state = ReviewState(
                ReviewQueue(graph, config, margins),
                key,
                current=state.current if state else None,
                trail=state.trail if state else None,
            )
            bound.review = state
        return state

    def count(self) -> int | None:
        """Unreviewed uncertain items of the active session (None without a session)."""
        state = self.state()
        if state is None:
            return None
        return state.queue.count_unreviewed(self.settings.uncertain_margin)

    # ------------------------------------------------------------------ keys
    def next_uncertain(self) -> None:
        """Jump to the next most uncertain unreviewed link or division (after the last one,
        back to the most uncertain)."""
        if self.controller.require() is None:
            return
        state = self.state()
        assert state is not None
        item = state.queue.next(after=state.current) or state.queue.next()
        if item is None:
            state.current = None
            self.controller.report(
                "info", "nothing left to review: every link and division is approved"
            )
            return
        if state.current is not None and item != state.current:
            state.trail = [*(state.trail or []), state.current]
        state.current = item
        self._show_review_item(item)

    def previous_uncertain(self) -> None:
        """Go back to the item visited before the current one."""
        if self.controller.require() is None:
            return
        state = self.state()
        assert state is not None
        graph = self.controller.bound.session.graph
        trail = [item for item in (state.trail or []) if graph.has(item.node)]
        if not trail:
            state.trail = []
            self.controller.report("info", "no earlier review item (press N for the next)")
            return
        state.current = trail.pop()
        state.trail = trail
        self._show_review_item(state.current)

    def _show_review_item(self, item: ReviewItem) -> None:
        graph = self.controller.bound.session.graph
        if item.kind == DIVISION:
            children = [int(c) for c in graph.children_of(item.node)]
            targets = children or [item.node]
            what = (
                f"division of {item.node} into {', '.join(map(str, children))}"
                if len(children) == 2
                else f"possible division of {item.node}"
            )
        else:
            targets = [item.node]
            what = f"link {item.parent} -> {item.node}"
        self.controller.select(targets)
        self.controller.go_to(targets[0])
        left = self.count()
        t = graph.node(targets[0])["t"]
        self.controller.report(
            "info", f"review: {what} at t={t} (certainty {item.margin:+.2f}); {left} uncertain left"
        )


def _division_threshold(model: Any) -> float:
    """The linker's division threshold of the session's model (or the default)."""
    thresholds = getattr(model, "thresholds", None)
    link = getattr(thresholds, "link", None)
    value = getattr(link, "division_threshold", None)
    return float(value) if value is not None else float(LinkingConfig().division_threshold)
