"""The one place that chooses the compute device and mixed precision.

Nothing else in napari-cellect calls ``.cuda()``: code asks :func:`resolve_device` for a
``torch.device`` and moves tensors there with ``.to(device)``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

from napari_cellect.errors import DeviceError

logger = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The torch device for ``name``: 'auto' (CUDA, then MPS, then CPU), 'cpu', 'cuda[:i]', 'mps'.

    Raises:
        DeviceError: the device named is not available on this machine, or the name is unknown.
    """
    if isinstance(name, torch.device):
        name = str(name)
    text = (name or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda")
        elif _mps_available():
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
        logger.info("device 'auto' resolved to %s", device)
        return device
    try:
        device = torch.device(text)
    except RuntimeError as err:
        raise DeviceError(
            f"expected a device among {', '.join(DEVICE_CHOICES)} (or 'cuda:N'), found {name!r}"
        ) from err
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only torch build" if torch.version.cuda is None else "no visible GPU"
            raise DeviceError(
                f"expected a CUDA GPU for device {name!r}, found {build}; "
                "use device 'cpu' or 'auto'"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(
                f"expected a CUDA device index below {count} for device {name!r}, "
                f"found index {device.index}"
            )
        return device
    if device.type == "mps":
        if not _mps_available():
            raise DeviceError(
                f"expected Apple MPS for device {name!r}, found it unavailable on this machine; "
                "use device 'cpu' or 'auto'"
            )
        return device
    raise DeviceError(
        f"expected a device among {', '.join(DEVICE_CHOICES)} (or 'cuda:N'), found {name!r}"
    )


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced-precision dtype used on ``device``, or None where AMP is off (CPU)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return None


@contextlib.contextmanager
def autocast_context(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """Automatic mixed precision on a GPU (bf16 where supported, else fp16); nothing on CPU.

    CPU inference stays fp32: bf16 autocast on CPU is slower than fp32 on most CPUs.
    """
    dtype = amp_dtype(device) if enabled else None
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
