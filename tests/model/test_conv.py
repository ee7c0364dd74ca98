from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_cellect.model import conv as conv_module
from napari_cellect.model.conv import Conv3d

pytestmark = pytest.mark.skipif(not conv_module._ONEDNN, reason="torch built without oneDNN")


def spy_onednn(monkeypatch) -> list[tuple]:
    calls: list[tuple] = []
    real = torch.mkldnn_convolution

    def spy(*args):
        calls.append(tuple(args[0].shape))
        return real(*args)

    monkeypatch.setattr(torch, "mkldnn_convolution", spy)
    return calls


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "kernel, stride, padding, bias",
    [(3, 1, 1, False), ((1, 2, 2), (1, 2, 2), 0, False), (1, 1, 0, True)],
)
def test_thin_volumes_go_to_onednn_with_the_same_result(
    monkeypatch, channels_last, kernel, stride, padding, bias
):
    """8 channels at 16 slices: the shape for which torch's own choice is its slow im2col path."""
    calls = spy_onednn(monkeypatch)
    torch.manual_seed(0)
    conv = Conv3d(8, 8, kernel, stride=stride, padding=padding, bias=bias)
    x = torch.randn(1, 8, 16, 40, 40)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        out = conv(x)
        reference = F.conv3d(x, conv.weight, conv.bias, conv.stride, conv.padding)
    assert calls == [(1, 8, 16, 40, 40)]
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


def test_gradients_match_torch_convolution():
    torch.manual_seed(1)
    conv = Conv3d(4, 6, 3, padding=1, bias=True)
    x = torch.randn(2, 4, 6, 12, 12, requires_grad=True)
    conv(x).square().sum().backward()
    ours = (x.grad.clone(), conv.weight.grad.clone(), conv.bias.grad.clone())
    x.grad = None
    conv.zero_grad()
    F.conv3d(x, conv.weight, conv.bias, 1, 1).square().sum().backward()
    for a, b in zip(ours, (x.grad, conv.weight.grad, conv.bias.grad)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore:TF32 acceleration")  # torch's flags() on a CPU build
def test_other_dtypes_and_disabled_onednn_take_torch_own_path(monkeypatch):
    calls = spy_onednn(monkeypatch)
    conv = Conv3d(2, 2, 3, padding=1).double()
    out = conv(torch.randn(1, 2, 4, 8, 8, dtype=torch.float64))
    assert out.dtype == torch.float64 and calls == []
    with torch.backends.mkldnn.flags(enabled=False):
        Conv3d(2, 2, 3, padding=1)(torch.randn(1, 2, 4, 8, 8))
    assert calls == []
