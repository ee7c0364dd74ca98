"""Shared fixtures of the model tests: the original checkpoint layout and fake checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

LAYOUT_PATH = Path(__file__).parent / "data" / "cellect-checkpoint-layout.json"


@pytest.fixture(scope="session")
def layout() -> dict[str, dict[str, list[int]]]:
    """Key -> shape of the original checkpoints ("unet", "EN+", "EX+"), as published."""
    return json.loads(LAYOUT_PATH.read_text())


def random_state(shapes: dict[str, list[int]], seed: int) -> dict[str, torch.Tensor]:
    """A state dict of random values with the given shapes; BatchNorm statistics are valid
    (positive variances, integer batch counters)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.1
    return state


@pytest.fixture(scope="session")
def make_random_state():
    """:func:`random_state` as a fixture (test modules here are not a package)."""
    return random_state


@pytest.fixture
def original_files(tmp_path: Path, layout) -> dict[str, Path]:
    """Fake original checkpoints (random values, the published layout) written with torch.save."""
    files = {}
    for name, section, seed in (("unet", "unet", 1), ("link", "EX+", 2), ("merge", "EN+", 3)):
        path = tmp_path / f"{section.rstrip('+')}.pth"
        torch.save(random_state(layout[section], seed), path)
        files[name] = path
    return files
