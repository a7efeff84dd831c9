"""Argument checks shared across kdlab: an int that is not a bool, a finite real number, a positive temperature, a
device this machine has.

A leaf: it imports nothing from kdlab. Each ``check_*`` returns the value as a plain ``int``/``float`` or raises
``error`` (``ValueError`` unless a call site's contract says otherwise) with a message naming the argument and the
value it got. The loss layer keeps its own checks (``kdlab.losses._validate``): they are that layer's contract.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import torch

__all__ = ["check_device", "check_int", "check_positive", "check_real", "is_int", "is_real"]


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), and not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A real number (int, float, numpy scalar), and not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool)


def check_int(
    value: Any, name: str, minimum: int = 0, maximum: int | None = None, *, note: str = "",
    error: type[Exception] = ValueError,
) -> int:
    """``int(value)`` for an int in ``[minimum, maximum]`` (no upper bound for ``None``); ``note`` explains it."""
    if is_int(value) and value >= minimum and (maximum is None or value <= maximum):
        return int(value)
    bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    raise error(f"{name} must be an int {bound}{note}; got {value!r}")


def check_real(
    value: Any, name: str, *, minimum: float | None = None, above: float | None = None, note: str = "",
    error: type[Exception] = ValueError,
) -> float:
    """``float(value)`` for a finite real number ``>= minimum`` or ``> above`` (when given)."""
    if (
        is_real(value)
        and math.isfinite(value)
        and (minimum is None or value >= minimum)
        and (above is None or value > above)
    ):
        return float(value)
    bound = "" if minimum is None else f" >= {minimum:g}"
    bound += "" if above is None else f" > {above:g}"
    raise error(f"{name} must be a finite number{bound}{note}; got {value!r}")


def check_positive(value: Any, name: str, *, error: type[Exception] = ValueError) -> float:
    """``float(value)`` for a positive finite number, e.g. a temperature; anything ``float()`` takes (a 0-d tensor,
    a numpy scalar) except a bool."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise error(f"{name} must be a positive number, got {value!r}") from None
    if isinstance(value, bool) or not 0 < number < math.inf:
        raise error(f"{name} must be a positive finite number, got {value!r}")
    return number


def check_device(value: Any, name: str = "device") -> torch.device:
    """``torch.device(value)`` for a device this process can use (cpu; cuda/cuda:N with a CUDA build and that GPU;
    mps where available), else a ValueError saying what is missing."""
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a device: use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if torch.version.cuda is None and torch.version.hip is None:
            raise ValueError(f"{name}={value!r} but this torch build ({torch.__version__}) has no CUDA support: use "
                             "cpu, or install a CUDA build of torch")
        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError(f"{name}={value!r} but no CUDA GPU is visible (check CUDA_VISIBLE_DEVICES and the "
                             "driver): use cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"{name}={value!r} but only {count} CUDA GPU(s) are visible (cuda:0..cuda:{count - 1})")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{name}={value!r} but MPS is not available on this machine: use cpu")
    elif device.type != "cpu":
        raise ValueError(f"{name}={value!r}: kdlab trains on cpu, cuda or mps")
    return device
