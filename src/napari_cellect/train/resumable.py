"""A long training run in chunks that stops cleanly and resumes exactly.

A chunk is one epoch of :class:`~napari_cellect.train.fit.Trainer`: the trainer writes its full
state (weights, optimiser, scheduler, history, best weights, training config) atomically after
each one, and every random draw of an epoch comes from ``(seed, epoch)`` (crops from
``(seed, epoch, step, sample)``), so a run resumed from that checkpoint takes exactly the steps
the uninterrupted run would have taken. :class:`ChunkStop` ends a run at the first chunk
boundary after a step budget, a deadline or a polite request (the first Ctrl+C, see
:func:`stop_on_interrupt`); a second Ctrl+C stops at once, and the steps since the last
checkpoint are dropped. With a learning rate that is constant after its warm-up
(``TrainConfig.lr_final_factor = 1``) the schedule does not depend on how long the run will be,
so a run can be continued chunk by chunk for as long as wanted.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

from napari_cellect.errors import Cancelled

if TYPE_CHECKING:
    from napari_cellect.train.fit import Trainer

logger = logging.getLogger(__name__)


class ChunkStop:
    """``should_stop`` for a Trainer: True at the first chunk boundary once ``max_steps`` more
    steps are done, ``minutes`` have passed, the step count reached ``until`` (e.g. the end of a
    round of training data) or :meth:`request` was called; at once after :meth:`request`
    ``(now=True)``. ``step`` reads the trainer's optimiser step count (rebind it to go on with
    another trainer)."""

    def __init__(
        self,
        step: Callable[[], int],
        steps_per_chunk: int,
        max_steps: int | None = None,
        minutes: float | None = None,
    ):
        self.step = step
        self.steps_per_chunk = int(steps_per_chunk)
        self.start = step()
        self.max_steps = max_steps
        self.deadline = math.inf if minutes is None else time.monotonic() + 60 * minutes
        self.until: int | None = None
        self.requested = False
        self.now = False

    def request(self, now: bool = False) -> None:
        """Stop at the next chunk boundary (``now``: before the next step)."""
        self.requested = True
        self.now = self.now or now

    @property
    def reason(self) -> str:
        if self.now:
            return "stopped at once"
        if self.requested:
            return "stop requested"
        if self.max_steps is not None and self.step() - self.start >= self.max_steps:
            return f"{self.max_steps} steps done"
        if time.monotonic() >= self.deadline:
            return "time is up"
        return "until reached" if self.until is not None and self.step() >= self.until else ""

    def __call__(self) -> bool:
        if self.now:
            return True
        at_boundary = self.step() % self.steps_per_chunk == 0 and self.step() > self.start
        return at_boundary and bool(self.reason)


@contextmanager
def stop_on_interrupt(stop: ChunkStop) -> Iterator[None]:
    """While inside: the first Ctrl+C (SIGINT) asks ``stop`` to end at the chunk boundary, a
    second one to end now. The previous handler is restored afterwards."""

    def handler(signum: int, frame: FrameType | None) -> None:
        now = stop.requested
        stop.request(now=now)
        logger.warning(
            "interrupted: stopping %s",
            "now; the steps since the last checkpoint are dropped"
            if now
            else "after this chunk, once its checkpoint is written (Ctrl+C again: now)",
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_chunks(trainer: Trainer, stop: ChunkStop) -> str:
    """Train until ``stop`` (or the trainer's last epoch); returns why it stopped. The
    trainer's checkpoint then holds the last whole chunk."""
    trainer.should_stop = stop
    try:
        trainer.run()
    except Cancelled:
        return stop.reason or "cancelled"
    return "all epochs done"
