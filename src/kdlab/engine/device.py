"""The one check of a requested device (``run.device`` in a config, ``device`` in ``kdlab.fit``).

A wrong device should cost one line, not a CUDA traceback from deep inside the first forward pass.
"""

from __future__ import annotations

import torch

from kdlab._checks import SettingError

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device) -> torch.device:
    """``name`` as a device this process can use, or a :class:`~kdlab._checks.SettingError` (key ``run.device``) of
    one line saying why not: not a device name, CUDA asked of a CPU-only PyTorch build, no GPU visible, too few GPUs,
    or MPS unavailable."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise SettingError(f"{{device}}={str(name)!r} is not a device; use cpu, cuda, cuda:N or mps",
                           device="run.device") from None
    asked = f"{{device}}={str(name)!r}"
    if device.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise SettingError(f"{asked} but this PyTorch ({torch.__version__}) is a CPU-only build; use cpu, or "
                               "install a CUDA build of PyTorch (README: install)", device="run.device")
        count = torch.cuda.device_count()
        if count == 0:
            raise SettingError(f"{asked} but no CUDA GPU is visible to this process (check the driver and "
                               "CUDA_VISIBLE_DEVICES); use cpu", device="run.device")
        if device.index is not None and device.index >= count:
            raise SettingError(f"{asked} but only {count} CUDA GPU(s) are visible (cuda:0 to cuda:{count - 1})",
                               device="run.device")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise SettingError(f"{asked} but MPS is not available on this machine; use cpu", device="run.device")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise SettingError(f"{asked}: kdlab runs on cpu, cuda or mps", device="run.device")
    return device
