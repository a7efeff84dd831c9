"""The device path: bf16 autocast, channels_last and ``torch.compile`` — each only where it pays off.

* ``precision="bf16"``: ``torch.autocast("cuda", torch.bfloat16)`` around the step (student, teacher and losses;
  autocast keeps softmax/log-softmax/reductions in float32). On CPU the run stays float32 (with a warning): CPU bf16
  matmuls are slower than fp32 on most hosts and would change the numbers the tests pin.
* ``channels_last``: NHWC memory format for 4-D (image) models and inputs on CUDA, where cuDNN's tensor-core
  convolutions want it; 3-D (MNIST-1D) inputs and CPU are left alone.
* ``compile``: ``nn.Module.compile()`` of the student in place (its state-dict keys stay unchanged, so checkpoints
  are interchangeable with uncompiled runs).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["DevicePath", "resolve", "autocast", "to_channels_last"]


@dataclass(frozen=True)
class DevicePath:
    """The effective settings for one device (what :func:`resolve` kept of the requested ones)."""

    device_type: str = "cpu"
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def autocast(self):
        return autocast(self.device_type, self.bf16)

    def input(self, x: torch.Tensor) -> torch.Tensor:
        return to_channels_last(x) if self.channels_last else x

    def model(self, module: nn.Module) -> nn.Module:
        # nn.Module.to itself: a Method's own .to also moves its FrozenTeacher, whose .to takes a device only
        return nn.Module.to(module, memory_format=torch.channels_last) if self.channels_last else module


def resolve(device: torch.device | str, precision: str = "fp32", channels_last: bool = False,
            compile: bool = False) -> DevicePath:
    """Validate the requested options and keep those that apply to ``device``."""
    device = torch.device(device)
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"run.precision must be 'fp32' or 'bf16'; got {precision!r}")
    bf16 = precision == "bf16"
    if bf16 and device.type != "cuda":
        warnings.warn(f"run.precision=bf16 applies to CUDA only; running in float32 on {device.type}", stacklevel=2)
        bf16 = False
    return DevicePath(device.type, bf16, bool(channels_last) and device.type == "cuda", bool(compile))


def autocast(device_type: str, bf16: bool):
    """``torch.autocast(device_type, bfloat16)`` when ``bf16``, else a no-op context."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """NHWC layout for a 4-D batch; other ranks are returned unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x
