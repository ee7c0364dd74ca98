"""A 3D convolution that always takes oneDNN on the CPU.

PyTorch picks a convolution backend per call by a size heuristic. For float32 3D convolutions
on the CPU with few channels and a thin volume (8 channels at 16 slices: a 2D frame padded to
the training depth, a thin stack, a division-refinement crop) it picks ``slow_conv3d``, an
im2col path that is 10-20x slower than oneDNN on the same call (``benchmarks/bench_speed.py``
measures the U-Net with and without this module). :class:`Conv3d` asks for oneDNN directly in
those cases; results agree to float32 rounding and autograd works the same.

On CPUs with AMX (bfloat16 matrix units), inference computes the convolutions in bfloat16
(:func:`bf16_convolutions`, turned on by ``infer/predict.py`` where :func:`bf16_pays`): several
times faster, with detections that agree with float32 ones (``benchmarks/bench_speed.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

#: Whether this torch build can run oneDNN convolutions; read once.
_ONEDNN = hasattr(torch, "mkldnn_convolution") and torch.backends.mkldnn.is_available()
#: Per thread: whether CPU convolutions compute in bfloat16 (:func:`bf16_convolutions`).
_PRECISION = threading.local()


def bf16_pays() -> bool:
    """Whether this CPU has AMX tiles, bfloat16 matrix units on which oneDNN's bf16
    convolutions run several times faster than float32 ones; on other CPUs bf16 is slower."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(_ONEDNN and check is not None and check())


@contextmanager
def bf16_convolutions(enabled: bool = True) -> Iterator[None]:
    """Within it (in this thread), :class:`Conv3d` on the CPU computes in bfloat16: input and
    weights rounded to bf16, float32 out; everything else stays float32."""
    previous = getattr(_PRECISION, "bf16", False)
    _PRECISION.bf16 = enabled
    try:
        yield
    finally:
        _PRECISION.bf16 = previous


def onednn_applies(x: Tensor, conv: nn.Conv3d) -> bool:
    """Whether :class:`Conv3d` sends this call to oneDNN: float32 on the CPU, zero padding
    given as numbers, oneDNN available and not turned off by ``torch.backends.mkldnn``."""
    return (
        _ONEDNN
        and torch.backends.mkldnn.enabled
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


class Conv3d(nn.Conv3d):
    """:class:`torch.nn.Conv3d` that runs on oneDNN on the CPU whatever the input size, in
    bfloat16 within :func:`bf16_convolutions`."""

    _bf16_weight: tuple[tuple[int, int], Tensor] | None = None

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if not onednn_applies(input, self):
            return super()._conv_forward(input, weight, bias)
        if getattr(_PRECISION, "bf16", False) and not torch.is_grad_enabled():
            return torch.mkldnn_convolution(
                input.to(torch.bfloat16), self._weight_bf16(weight),
                None if bias is None else bias.to(torch.bfloat16),
                self.padding, self.stride, self.dilation, self.groups,
            ).float()  # fmt: skip
        return torch.mkldnn_convolution(
            input, weight, bias, self.padding, self.stride, self.dilation, self.groups
        )

    def _weight_bf16(self, weight: Tensor) -> Tensor:
        """The weights in bf16, converted once per version of them."""
        key = (weight.data_ptr(), weight._version)
        if self._bf16_weight is None or self._bf16_weight[0] != key:
            self._bf16_weight = (key, weight.detach().to(torch.bfloat16))
        return self._bf16_weight[1]
