"""The one way a dock widget runs long work: a core generator in a napari thread worker.

A job is a generator function of the core side (``napari_cellect.session.jobs``): it
yields progress steps (:class:`napari_cellect.progress.Step`: stage, done, total) and returns
its result, or None when it was cancelled (a plain function that returns its result works too:
it has no steps to show, and stops only through ``should_stop``). A generator already made
(e.g. ``session.relink_job(should_stop=runner.should_stop)``) is a job too.
:class:`JobRunner` runs one job at a time for its widget: it passes ``should_stop`` to the job,
hands each step and the result to the widget on the main thread, shows an error or a
cancellation in the widget's status line, and leaves the Cancel button, the progress bar and
its label as they were before the job, however it ended. Cancel sets the ``should_stop`` flag
the core polls *and* asks the worker to quit at its next step, so a job stops within one step.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton, QWidget


class Outcome(Enum):
    """How a job ended."""

    DONE = "done"
    """It returned a result and the widget applied it."""
    CANCELLED = "cancelled"
    FAILED = "failed"
    """It raised, returned nothing without being cancelled, or its result was refused."""


def failed_text(what: str, error: BaseException) -> str:
    """The status line after a job raised ``error``."""
    return f"{what} failed: {error}"


class JobRunner:
    """Runs the jobs of one widget, one at a time (see the module docstring).

    ``report(level, text)`` shows a line in the widget (level ``"info"`` or ``"error"``);
    ``on_finished(outcome)`` is called last, once the worker is gone, so the widget can
    enable its buttons again from its own state; ``on_cancel()`` right after Cancel was
    pressed. ``error_text`` words an error of a job.
    """

    def __init__(
        self,
        owner: QWidget,
        *,
        cancel_button: QPushButton,
        progress: QProgressBar,
        progress_label: QLabel,
        report: Callable[[str, str], None],
        on_finished: Callable[[Outcome], None],
        on_cancel: Callable[[], None] | None = None,
        error_text: Callable[[str, BaseException], str] = failed_text,
        cancelling_text: str = "cancelling...",
    ):
        self._cancel_button = cancel_button
        self._progress = progress
        self._progress_label = progress_label
        self._report = report
        self._on_finished = on_finished
        self._on_cancel = on_cancel
        self._error_text = error_text
        self._cancelling_text = cancelling_text
        #: the napari worker of the job running now (None when idle)
        self.worker: Any = None
        self._stop = threading.Event()
        self._outcome: Outcome | None = None
        self._job: _Job | None = None
        cancel_button.setEnabled(False)
        cancel_button.clicked.connect(self.cancel)
        #: True once the widget was closed: its job stops at the next step, and what the
        #: worker still reports is dropped (the widget's labels are gone)
        self._closed = False
        owner.destroyed.connect(self._on_owner_destroyed)

    @property
    def running(self) -> bool:
        return self.worker is not None

    def should_stop(self) -> bool:
        """True once Cancel was pressed (or the widget closed) during the running job."""
        return self._stop.is_set()

    def start(
        self,
        job: Callable[..., Any] | Generator[Any, None, Any],
        *args: Any,
        what: str,
        busy_text: str,
        on_step: Callable[[Any], None] | None = None,
        on_result: Callable[[Any], bool | None] | None = None,
        cancelled_text: str | None = None,
        then: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> bool:
        """Run ``job(*args, should_stop=..., **kwargs)`` in a worker thread, or run ``job`` to
        its end when it is a generator already made (it was given :meth:`should_stop` and takes
        no arguments here); False (and nothing started) while another job runs.

        ``what`` names the job in messages ("tracking" -> "tracking failed: ..."). ``on_step``
        gets every step it yields, ``on_result`` its result unless it was cancelled; a result
        ``on_result`` refuses (returns False) ends the job as :attr:`Outcome.FAILED`. ``then``
        runs once the job is over, only when it ended :attr:`Outcome.DONE` (it may start the
        next job).
        """
        from napari.qt.threading import create_worker

        if isinstance(job, Generator):
            if args or kwargs:
                raise TypeError("a generator already made takes no arguments; make it with them")
            function, args, kwargs = _run_made, (job,), {}
        else:
            function, kwargs = job, {"should_stop": self._stop.is_set, **kwargs}
        if self.running:
            return False
        self._stop.clear()
        self._outcome = None
        self._job = _Job(what, on_result, cancelled_text or f"{what} cancelled", then)
        worker = create_worker(
            function,
            *args,
            **kwargs,
            _start_thread=False,
            _ignore_errors=True,  # errors: _on_errored reports them
        )
        if on_step is not None:
            worker.yielded.connect(lambda step: None if self._closed else on_step(step))
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        if hasattr(worker, "aborted"):  # a generator's worker (a plain function has no steps)
            worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_worker_finished)
        self.worker = worker
        self._cancel_button.setEnabled(True)
        self._progress.setRange(0, 0)  # busy until the first step
        self._progress_label.setText(busy_text)
        worker.start()
        return True

    def cancel(self) -> None:
        """Stop the running job at its next step; its result is never applied."""
        if self.worker is None:
            return
        self._stop.set()
        if hasattr(self.worker, "quit"):  # a generator quits at its next step
            self.worker.quit()
        self._cancel_button.setEnabled(False)
        self._progress_label.setText(self._cancelling_text)
        if self._on_cancel is not None:
            self._on_cancel()

    def show_step(self, done: int, total: int, text: str) -> None:
        """Show ``done`` of ``total`` on the progress bar and ``text`` under it."""
        total = max(int(total), 1)
        self._progress.setRange(0, total)
        self._progress.setValue(min(int(done), total))
        self._progress_label.setText(text)

    # ------------------------------------------------------------------ worker signals
    def _on_owner_destroyed(self, *_args: Any) -> None:
        self._closed = True
        self._stop.set()

    def _on_returned(self, result: Any) -> None:
        job = self._job
        if self._closed:
            return
        assert job is not None
        if result is None:  # the core was cancelled (it returns None then)
            if not self._stop.is_set():
                self._fail(f"{job.what} returned no result")
            return
        applied = job.on_result(result) if job.on_result is not None else None
        self._outcome = Outcome.FAILED if applied is False else Outcome.DONE

    def _on_errored(self, error: BaseException) -> None:
        assert self._job is not None
        if self._closed:
            return
        self._fail(self._error_text(self._job.what, error))

    def _fail(self, text: str) -> None:
        self._outcome = Outcome.FAILED
        self._report("error", text)

    def _on_aborted(self) -> None:
        self._outcome = Outcome.CANCELLED

    def _on_worker_finished(self) -> None:
        """Also after a cancel: the worker then reports neither a result nor an error."""
        job = self._job
        self.worker = None
        self._job = None
        if self._closed:
            return
        outcome = self._outcome or Outcome.CANCELLED
        if outcome is Outcome.CANCELLED and job is not None:
            self._report("info", job.cancelled_text)
        self._cancel_button.setEnabled(False)
        self._progress.setRange(0, 1)
        self._progress.setValue(1 if outcome is Outcome.DONE else 0)
        self._progress_label.setText("")  # the status line says how the job ended
        self._on_finished(outcome)
        cancelled = self._stop.is_set()  # after the result was applied: nothing is to follow
        if outcome is Outcome.DONE and job is not None and job.then is not None and not cancelled:
            job.then()


@dataclass(frozen=True)
class _Job:
    """What the runner keeps of the running job."""

    what: str
    on_result: Callable[[Any], bool | None] | None
    cancelled_text: str
    then: Callable[[], None] | None


def _run_made(job: Generator[Any, None, Any]) -> Generator[Any, None, Any]:
    """A generator function for a generator already made (napari's worker wants a function)."""
    return (yield from job)
