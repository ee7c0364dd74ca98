"""The worker helper every dock widget runs its long work with (``_napari/_jobs.py``).

A small widget with the same parts as the dock widgets (Cancel, a progress bar and its label,
a status line) runs generator jobs in real napari thread workers; the buttons are clicked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from napari_cellect._napari._jobs import JobRunner, Outcome
from napari_cellect._napari._qt_utils import ERROR_STYLE, show_status

WAIT_MS = 20000


@dataclass(frozen=True)
class Step:
    stage: str
    done: int
    total: int


def count_to(n: int, *, should_stop, seen: list[int] | None = None, fail_at: int | None = None):
    """A core-style job: yields ``Step`` records, returns ``n`` (None when stopped)."""
    for i in range(1, n + 1):
        if should_stop():
            return None
        if i == fail_at:
            raise ValueError(f"cannot count past {i - 1}")
        if seen is not None:
            seen.append(i)
        time.sleep(0.01)
        yield Step("count", i, n)
    return n


class Panel(QWidget):
    """The parts of a dock widget the runner works with."""

    def __init__(self) -> None:
        super().__init__()
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.progress = QProgressBar()
        self.progress_label = QLabel()
        self.status = QLabel()
        layout = QVBoxLayout(self)
        for widget in (
            self.run_button,
            self.cancel_button,
            self.progress,
            self.progress_label,
            self.status,
        ):
            layout.addWidget(widget)
        self.outcomes: list[Outcome] = []
        self.steps: list[Step] = []
        self.results: list[int] = []
        self.jobs = JobRunner(
            self,
            cancel_button=self.cancel_button,
            progress=self.progress,
            progress_label=self.progress_label,
            report=lambda level, text: show_status(self.status, level, text),
            on_finished=self._finished,
        )

    def run(self, n: int, *, accept: bool = True, then=None, **kwargs) -> None:
        def on_result(value: int) -> bool:
            self.results.append(value)
            return accept

        started = self.jobs.start(
            count_to,
            n,
            what="counting",
            busy_text="starting...",
            on_step=self._step,
            on_result=on_result,
            then=then,
            **kwargs,
        )
        self.run_button.setEnabled(not started)

    def _step(self, step: Step) -> None:
        self.steps.append(step)
        self.jobs.show_step(step.done, step.total, f"{step.done} of {step.total}")

    def _finished(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self.run_button.setEnabled(True)


@pytest.fixture
def panel(qtbot):
    widget = Panel()
    qtbot.addWidget(widget)
    assert not widget.cancel_button.isEnabled()  # nothing runs yet
    return widget


def test_a_finished_job_shows_its_steps_applies_its_result_and_runs_what_follows(panel, qtbot):
    followed: list[bool] = []
    panel.run(5, then=lambda: followed.append(panel.jobs.running))
    assert panel.jobs.running and panel.cancel_button.isEnabled()
    assert not panel.run_button.isEnabled() and panel.progress_label.text() == "starting..."
    qtbot.waitUntil(lambda: not panel.jobs.running, timeout=WAIT_MS)
    assert [s.done for s in panel.steps] == [1, 2, 3, 4, 5] and panel.results == [5]
    assert panel.outcomes == [Outcome.DONE] and followed == [False]  # after the job is over
    assert panel.progress.value() == panel.progress.maximum() == 1
    assert panel.progress_label.text() == "" and not panel.cancel_button.isEnabled()
    assert panel.run_button.isEnabled()


def test_cancel_enables_the_buttons_again_and_says_so(panel, qtbot):
    seen: list[int] = []
    followed: list[bool] = []
    panel.run(100_000, seen=seen, then=lambda: followed.append(True))
    qtbot.waitUntil(lambda: len(panel.steps) >= 2, timeout=WAIT_MS)
    panel.cancel_button.click()
    assert panel.jobs.should_stop() and not panel.cancel_button.isEnabled()
    assert panel.progress_label.text() == "cancelling..."
    at_cancel = len(seen)
    qtbot.waitUntil(lambda: not panel.jobs.running, timeout=WAIT_MS)
    assert len(seen) <= at_cancel + 1  # stopped at the next step
    assert panel.outcomes == [Outcome.CANCELLED] and panel.results == [] and followed == []
    assert panel.status.text() == "counting cancelled" and panel.status.styleSheet() == ""
    assert panel.run_button.isEnabled() and not panel.cancel_button.isEnabled()
    assert panel.progress.value() == 0 and panel.progress_label.text() == ""
    # and the next job runs normally
    panel.run(2)
    qtbot.waitUntil(lambda: not panel.jobs.running, timeout=WAIT_MS)
    assert panel.outcomes[-1] is Outcome.DONE and panel.results == [2]


def test_an_error_is_shown_in_the_widget_and_nothing_follows(panel, qtbot):
    followed: list[bool] = []
    panel.run(10, fail_at=3, then=lambda: followed.append(True))
    qtbot.waitUntil(lambda: not panel.jobs.running, timeout=WAIT_MS)
    assert panel.outcomes == [Outcome.FAILED] and panel.results == [] and followed == []
    assert panel.status.text() == "counting failed: cannot count past 2"
    assert panel.status.styleSheet() == ERROR_STYLE
    assert panel.run_button.isEnabled() and not panel.cancel_button.isEnabled()
    assert panel.progress.value() == 0


def test_a_refused_result_ends_the_job_as_failed(panel, qtbot):
    panel.run(2, accept=False)
    qtbot.waitUntil(lambda: not panel.jobs.running, timeout=WAIT_MS)
    assert panel.results == [2] and panel.outcomes == [Outcome.FAILED]
    assert panel.progress.value() == 0


def test_one_job_at_a_time(panel, qtbot):
    panel.run(100_000)
    assert not panel.jobs.start(count_to, 3, what="second", busy_text="")
    panel.jobs.cancel()
    qtbot.waitUntil(lambda: not panel.jobs.running, timeout=WAIT_MS)
    assert panel.outcomes == [Outcome.CANCELLED]


def test_closing_the_widget_stops_its_job(qtbot):
    panel = Panel()
    seen: list[int] = []
    panel.run(100_000, seen=seen)
    qtbot.waitUntil(lambda: len(seen) >= 2, timeout=WAIT_MS)
    worker = panel.jobs.worker
    stopped: list[bool] = []
    worker.finished.connect(lambda: stopped.append(True))
    panel.deleteLater()
    qtbot.waitUntil(lambda: bool(stopped), timeout=WAIT_MS)
    assert len(seen) < 100_000


def test_a_generator_already_made_runs_and_stops_like_a_job_function(panel, qtbot):
    finished = count_to(3, should_stop=panel.jobs.should_stop)
    assert panel.jobs.start(finished, what="counting", busy_text="", on_step=panel._step)
    qtbot.waitUntil(lambda: not panel.jobs.running, timeout=WAIT_MS)
    assert [s.done for s in panel.steps] == [1, 2, 3] and panel.outcomes == [Outcome.DONE]
    seen: list[int] = []
    endless = count_to(100_000, should_stop=panel.jobs.should_stop, seen=seen)
    panel.jobs.start(endless, what="counting", busy_text="")
    qtbot.waitUntil(lambda: len(seen) >= 2, timeout=WAIT_MS)
    panel.cancel_button.click()
    qtbot.waitUntil(lambda: not panel.jobs.running, timeout=WAIT_MS)
    assert panel.outcomes[-1] is Outcome.CANCELLED and len(seen) < 100_000
    assert panel.status.text() == "counting cancelled"


def test_a_generator_already_made_takes_no_arguments(panel):
    with pytest.raises(TypeError, match="takes no arguments"):
        panel.jobs.start(count_to(3, should_stop=panel.jobs.should_stop), 5, what="x", busy_text="")
    assert not panel.jobs.running and not panel.cancel_button.isEnabled()
