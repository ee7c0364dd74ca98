"""One way to report progress from long work.

Every long operation of the core (tracking, training, fine-tuning, re-linking, rendering) is a
generator: it yields steps that satisfy :class:`Step` and *returns* its result, which arrives as
``StopIteration.value``. The command line runs it with :func:`run_to_end` and a callback that
prints; the widgets run the same generator in a worker thread and cancel by no longer asking for
the next step (the generator is closed, so its ``finally`` blocks run).

Work that reports from inside a loop it does not own (linking, prediction) takes an
:data:`OnStep` callback instead and calls it with a :class:`Progress`; a callback that raises
(say :class:`~napari_cellect.errors.Cancelled`) stops the work.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

__all__ = ["OnStep", "Progress", "Step", "run_to_end"]


@runtime_checkable
class Step(Protocol):
    """What every progress step carries: the stage it belongs to and ``done`` of ``total``
    units of that stage (``total`` 0 when the amount of work is not known in advance)."""

    @property
    def stage(self) -> str: ...

    @property
    def done(self) -> int: ...

    @property
    def total(self) -> int: ...


@dataclass(frozen=True)
class Progress:
    """A plain :class:`Step`, for work that has nothing more to report."""

    stage: str
    done: int
    total: int


StepT = TypeVar("StepT", bound=Step)
Result = TypeVar("Result")

#: The one progress callback type: called with each step (``OnStep[TrainProgress]`` and so on).
OnStep = Callable[[StepT], None]


def run_to_end(
    work: Generator[StepT, None, Result], on_step: OnStep[StepT] | None = None
) -> Result:
    """Drive ``work`` to its end, handing each step to ``on_step``; return what it returns."""
    while True:
        try:
            step = next(work)
        except StopIteration as stop:
            return stop.value
        if on_step is not None:
            on_step(step)
