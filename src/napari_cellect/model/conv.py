"""A 3D convolution that always takes oneDNN on the CPU.

PyTorch picks a convolution backend per call by a size heuristic. For float32 3D convolutions
on the CPU with few channels and a thin volume (8 channels at 16 slices: a 2D frame padded to
the training depth, a thin stack, a division-refinement crop) it picks ``slow_conv3d``, an
im2col path several times slower than oneDNN on the same call (``benchmarks/bench_speed.py
--torch-conv`` measures the U-Net with and without this module: a 2D frame 3.98 s -> 0.99 s). :class:`Conv3d` asks for oneDNN directly in
those cases; results agree to float32 rounding and autograd works the same.

bfloat16 convolutions (oneDNN on AMX) were tried and left out: for this network's narrow layers
the casts cost what the faster arithmetic saves (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

#: Whether this torch build can run oneDNN convolutions; read once.
_ONEDNN = hasattr(torch, "mkldnn_convolution") and torch.backends.mkldnn.is_available()


def onednn_applies(x: Tensor, conv: nn.Conv3d) -> bool:
    """Whether :class:`Conv3d` sends this call to oneDNN: float32 on the CPU, zero padding
    given as numbers, oneDNN available and not turned off by ``torch.backends.mkldnn``."""
    return bool(
        _ONEDNN
        and torch.backends.mkldnn.enabled
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


class Conv3d(nn.Conv3d):
    """:class:`torch.nn.Conv3d` that runs on oneDNN on the CPU whatever the input size."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if onednn_applies(input, self):
            padding = cast(tuple[int, ...], self.padding)  # a string padding never gets here
            return torch.mkldnn_convolution(
                input, weight, bias, padding, self.stride, self.dilation, self.groups
            )
        return super()._conv_forward(input, weight, bias)
