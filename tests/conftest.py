"""Settings shared by every test."""

from __future__ import annotations

import sys

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Run torch on one thread. Tiny tensors gain nothing from threads, and on a busy 2-core
    machine every OpenMP barrier waits for a descheduled thread: a 16x32x3 forward pass takes 3 s
    with 2 threads, 30 ms with 1.

    torch is not imported here, so torch-free tests (``data/``, ``track/``) never pay for it; it
    is configured as soon as a test module (or an earlier test) has imported it.
    """
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)
