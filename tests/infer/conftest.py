"""Fixtures for the inference tests: a deterministic fake U-Net and synthetic blob volumes.

The fake U-Net is translation-equivariant away from its input's edges (a small Gaussian blur
followed by per-voxel maps), so tiled and whole-volume predictions agree exactly wherever
each tile sees enough context. It needs no trained weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F


class FakeOutput(NamedTuple):
    seg: torch.Tensor
    centre: torch.Tensor
    embedding: torch.Tensor
    division: torch.Tensor
    radius: torch.Tensor


def _gauss(sigma: float, radius: int) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2) if sigma > 0 else (x == 0).float()
    return k / k.sum()


class FakeUNet(torch.nn.Module):
    """Blob detector shaped like UNet3D: blurred frame t -> five heads.

    centre: level 4 logit = gain * (blur - centre_level), levels 1-3 very low, level 0 = 0, so
    the softmax centre probability is sigmoid(gain * (blur - centre_level)).
    seg: foreground logit = gain * (blur - foreground_level) against background 0.
    embedding: channel k = (k + 1) * blur + k * blur(frame t+1).
    division: [blur - 0.5, blur(frame t+1) - 0.5]; radius: 3 + 2 * blur.
    """

    def __init__(
        self,
        embedding_dim: int = 4,
        size_multiple: tuple[int, int, int] = (1, 4, 4),
        centre_level: float = 0.5,
        foreground_level: float = 0.2,
        gain: float = 20.0,
    ) -> None:
        super().__init__()
        self.size_multiple = size_multiple
        self.embedding_dim = embedding_dim
        self.centre_level = centre_level
        self.foreground_level = foreground_level
        self.gain = gain
        self.calls = 0
        self.inputs: list[torch.Tensor] = []
        kz, ky = _gauss(0.7, 1), _gauss(1.0, 2)
        kernel = kz[:, None, None] * ky[None, :, None] * ky[None, None, :]
        self.register_buffer("kernel", kernel[None, None])

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv3d(x, self.kernel.to(x.dtype), padding=(1, 2, 2))

    def forward(self, x: torch.Tensor) -> FakeOutput:
        for axis, m in zip(range(2, 5), self.size_multiple):
            assert x.shape[axis] % m == 0, f"input {tuple(x.shape)} not a multiple of {m}"
        self.calls += 1
        self.inputs.append(x.detach().clone())
        b0 = self._blur(x[:, :1])
        b1 = self._blur(x[:, 1:2])
        g = self.gain
        zeros = torch.zeros_like(b0)
        low = torch.full_like(b0, -30.0)
        centre = torch.cat([zeros, low, low, low, g * (b0 - self.centre_level)], dim=1)
        seg = torch.cat([zeros, g * (b0 - self.foreground_level), low], dim=1)
        emb = torch.cat([(k + 1) * b0 + k * b1 for k in range(self.embedding_dim)], dim=1)
        division = torch.cat([b0 - 0.5, b1 - 0.5], dim=1)
        radius = 3.0 + 2.0 * b0
        return FakeOutput(seg, centre, emb, division, radius)


def make_blobs(
    shape: Sequence[int],
    centres: Sequence[Sequence[float]],
    *,
    sigma_xy: float = 2.0,
    z_ratio: float = 1.0,
    amplitude: float | Sequence[float] = 1.0,
) -> np.ndarray:
    """A float32 (Z, Y, X) volume of anisotropic Gaussian blobs (physically round)."""
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    out = np.zeros(tuple(shape), np.float64)
    amps = np.broadcast_to(np.asarray(amplitude, np.float64), (len(centres),))
    for (cz, cy, cx), a in zip(centres, amps):
        d2 = ((z - cz) * z_ratio) ** 2 + (y - cy) ** 2 + (x - cx) ** 2
        out += a * np.exp(-0.5 * d2 / sigma_xy**2)
    return out.astype(np.float32)


@pytest.fixture
def fake_unet() -> Callable[..., FakeUNet]:
    """Factory of fake U-Nets (keyword arguments as FakeUNet)."""
    return FakeUNet


@pytest.fixture
def blobs() -> Callable[..., np.ndarray]:
    """Factory of blob volumes (see make_blobs)."""
    return make_blobs
