"""Input checks shared by every function in :mod:`kdlab.losses`.

Cheap checks (types, shapes, dtypes, devices, Python hyperparameters) always run. The checks that need a
device→host synchronisation (non-finite values, label range) can be switched off for a training hot path with
:func:`set_validation` or the :func:`validation` context manager; they are on by default.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

__all__ = [
    "set_validation",
    "validation",
    "validation_enabled",
]

REDUCTIONS = ("mean", "sum", "none")

# The one piece of module state in kdlab.losses: a switch, not loss state. A dict so helpers never rebind a global.
_SWITCH = {"enabled": True}


def set_validation(enabled: bool) -> None:
    """Turn the synchronising checks (finite values, label range) on or off for every loss in this process."""
    if not isinstance(enabled, bool):
        raise ValueError(f"enabled must be True or False; got {enabled!r}")
    _SWITCH["enabled"] = enabled


def validation_enabled() -> bool:
    """Whether the synchronising checks (finite values, label range) currently run."""
    return _SWITCH["enabled"]


@contextlib.contextmanager
def validation(enabled: bool) -> Iterator[None]:
    """Context manager form of :func:`set_validation`; restores the previous setting on exit."""
    previous = _SWITCH["enabled"]
    set_validation(enabled)
    try:
        yield
    finally:
        _SWITCH["enabled"] = previous


# ---------------------------------------------------------------------------------------------------------------------
# hyperparameters (Python numbers: checking them never syncs)


def _real(value: object, name: str) -> float:
    # bool is a numbers.Real subclass; True as a temperature is always a bug.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number (a Python float); got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    return value


def check_positive(value: object, name: str) -> float:
    """``value`` as a float, or ValueError unless it is a finite real number > 0."""
    value = _real(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be > 0; got {value}")
    return value


def check_nonnegative(value: object, name: str) -> float:
    """``value`` as a float, or ValueError unless it is a finite real number >= 0 (loss weights)."""
    value = _real(value, name)
    if value < 0:
        raise ValueError(f"{name} must be >= 0 (it weights a loss term); got {value}")
    return value


def check_int(value: object, name: str, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high], or ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer; got {type(value).__name__} {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f" and <= {high}"
        raise ValueError(f"{name} must be >= {low}{upper}; got {value}")
    return value


def check_reduction(reduction: object, per_sample: bool = True) -> str:
    """The validated reduction. Batch-level losses (``per_sample=False``) only have a ``"mean"``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
    if not per_sample and reduction != "mean":
        raise ValueError(
            f"reduction={reduction!r} is not defined for this loss: it contains a term computed across the batch "
            "(per class), which has no per-sample value; use reduction='mean'"
        )
    return reduction


def reduce(per_sample: Tensor, reduction: str) -> Tensor:
    """Batch-mean (sum over classes already done, divide by N), sum, or the per-sample vector."""
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


# ---------------------------------------------------------------------------------------------------------------------
# tensors


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64 (so gradcheck works), else float32 (bf16/fp16 are upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def check_finite(x: Tensor, name: str) -> None:
    """ValueError if ``x`` holds NaN or ±inf (one reduction and one host sync; skipped when validation is off)."""
    if _SWITCH["enabled"] and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf values; check the model output / input data for overflow")


def check_matrix(x: object, name: str, min_cols: int = 2) -> Tensor:
    """A finite floating 2-D tensor [N, C] with N >= 1 and C >= ``min_cols``."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [N, C]; got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype; got {x.dtype}. Pass logits/probabilities, not labels")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D [N, C] (one row per sample); got shape {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one row; got shape {tuple(x.shape)}")
    if x.shape[1] < min_cols:
        raise ValueError(f"{name} must have at least {min_cols} columns (classes); got shape {tuple(x.shape)}")
    check_finite(x, name)
    return x


def check_pair(
    a: object, b: object, name_a: str, name_b: str, min_cols: int = 2
) -> tuple[Tensor, Tensor]:
    """Two matrices of identical shape on one device, cast to the common compute dtype (no detaching)."""
    a = check_matrix(a, name_a, min_cols)
    b = check_matrix(b, name_b, min_cols)
    if a.shape != b.shape:
        raise ValueError(
            f"{name_b} must have the same shape as {name_a}; got {tuple(b.shape)} vs {tuple(a.shape)}"
        )
    if a.device != b.device:
        raise ValueError(f"{name_b} is on {b.device} but {name_a} is on {a.device}; move both to one device")
    dtype = compute_dtype(a, b)
    return a.to(dtype), b.to(dtype)


def check_logits(z: object, v: object) -> tuple[Tensor, Tensor]:
    """Validated student logits and *detached* teacher logits in the compute dtype.

    Teacher logits that require grad while the student's do not are a swapped pair (the loss would train nothing:
    the teacher is detached here); ``requires_grad`` is metadata, so the check costs no host sync."""
    if isinstance(z, Tensor) and isinstance(v, Tensor) and v.requires_grad and not z.requires_grad:
        raise ValueError(
            "teacher_logits (v) require grad but student_logits (z) do not: the pair looks swapped (the student's "
            "logits come first); if it is meant, pass teacher_logits.detach()")
    z, v = check_pair(z, v, "student_logits (z)", "teacher_logits (v)")
    return z, v.detach()


def logit_names(loss: Callable) -> Callable:
    """Let a loss written as ``f(z, v, ...)`` take its logits by the documented names as well:
    ``f(student_logits=..., teacher_logits=...)`` (README, docs/losses.md) or ``f(z=..., v=...)``."""

    @functools.wraps(loss)
    def wrapper(*args, **kwargs):
        for long, short in (("student_logits", "z"), ("teacher_logits", "v")):
            if long in kwargs:
                if short in kwargs:
                    raise ValueError(f"give {long} or {short}, not both")
                kwargs[short] = kwargs.pop(long)
        return loss(*args, **kwargs)

    return wrapper


def check_target(target: object, n: int, c: int, device: torch.device) -> Tensor:
    """Integer class labels of shape [N] in [0, C)."""
    if not isinstance(target, Tensor):
        raise ValueError(f"target must be a torch.Tensor of class indices, shape [N]; got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"target must have an integer dtype (class indices, e.g. torch.long); got {target.dtype}")
    if target.shape != (n,):
        raise ValueError(f"target must have shape [N] = [{n}] (one class index per row); got {tuple(target.shape)}")
    if target.device != device:
        raise ValueError(f"target is on {target.device} but the logits are on {device}; move it to one device")
    if _SWITCH["enabled"]:
        low, high = int(target.min()), int(target.max())
        if low < 0 or high >= c:
            raise ValueError(f"target must hold class indices in [0, {c}); got values in [{low}, {high}]")
    return target.long()


def check_mask(mask: object, n: int, c: int, device: torch.device, name: str = "strong_mask") -> Tensor:
    """A bool mask of shape [N, C]."""
    if not isinstance(mask, Tensor):
        raise ValueError(f"{name} must be a bool torch.Tensor of shape [N, C]; got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise ValueError(f"{name} must have dtype torch.bool; got {mask.dtype}. Build it with kdlab.losses.strong_set")
    if mask.shape != (n, c):
        raise ValueError(f"{name} must have shape [N, C] = [{n}, {c}]; got {tuple(mask.shape)}")
    if mask.device != device:
        raise ValueError(f"{name} is on {mask.device} but the logits are on {device}; move it to one device")
    return mask


# ---------------------------------------------------------------------------------------------------------------------
# feature maps


def check_feature_pair(a: object, b: object, name_a: str, name_b: str,
                       same_shape: bool = True) -> tuple[Tensor, Tensor]:
    """Two floating feature tensors ``[N, C, ...]`` on one device with the same batch size (and, by default, the
    same shape), cast to the common compute dtype; ``b`` (the teacher's) is detached."""
    for x, name in ((a, name_a), (b, name_b)):
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor [N, C, ...]; got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must have a floating dtype; got {x.dtype}")
        if x.dim() < 2 or x.shape[0] < 1:
            raise ValueError(f"{name} must be [N, C, ...] with N >= 1; got shape {tuple(x.shape)}")
    if a.device != b.device:
        raise ValueError(f"{name_b} is on {b.device} but {name_a} is on {a.device}; move both to one device")
    if (a.shape if same_shape else a.shape[:1]) != (b.shape if same_shape else b.shape[:1]):
        what = "the same shape as" if same_shape else "the same batch size as"
        raise ValueError(f"{name_b} must have {what} {name_a}; got {tuple(b.shape)} vs {tuple(a.shape)}")
    check_finite(a, name_a)
    check_finite(b, name_b)
    dtype = compute_dtype(a, b)
    return a.to(dtype), b.detach().to(dtype)


def stage_list(x: object, name: str) -> list:
    """A non-empty list of per-stage tensors: a tensor is one stage."""
    stages = [x] if isinstance(x, Tensor) else list(x) if isinstance(x, (list, tuple)) else None
    if not stages:
        raise ValueError(f"{name} must be a tensor or a non-empty list of tensors (one per stage); got {x!r:.60}")
    return stages
