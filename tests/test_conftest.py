"""The shared test settings of tests/conftest.py take effect."""

from __future__ import annotations

import torch


def test_torch_runs_on_one_thread():
    assert torch.get_num_threads() == 1
