from __future__ import annotations

import pytest
import torch

from napari_cellect.errors import DeviceError
from napari_cellect.infer.device import amp_dtype, autocast_context, resolve_device

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def test_auto_prefers_cuda_then_mps_then_cpu():
    expected = "cuda" if HAS_CUDA else "mps" if HAS_MPS else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected


def test_cpu_and_device_objects():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(DeviceError, match=r"expected a CUDA GPU.*'cpu' or 'auto'"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="CUDA"):
        resolve_device("cuda:1")


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_index_out_of_range():
    with pytest.raises(DeviceError, match="index"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.skipif(HAS_MPS, reason="this machine has MPS")
def test_mps_without_mps_is_a_clear_error():
    with pytest.raises(DeviceError, match="MPS"):
        resolve_device("mps")


def test_unknown_names_are_errors():
    for name in ("gpu", "tpu:0", "xpu"):
        with pytest.raises(DeviceError, match="expected a device among auto, cpu, cuda, mps"):
            resolve_device(name)


def test_no_autocast_on_cpu():
    cpu = torch.device("cpu")
    assert amp_dtype(cpu) is None
    a = torch.randn(4, 4)
    with autocast_context(cpu):
        assert not torch.is_autocast_enabled("cpu")
        assert (a @ a).dtype == torch.float32


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_autocast_on_cuda():
    dev = resolve_device("cuda")
    a = torch.randn(8, 8, device=dev)
    with autocast_context(dev):
        assert (a @ a).dtype == amp_dtype(dev)
    with autocast_context(dev, enabled=False):
        assert (a @ a).dtype == torch.float32
