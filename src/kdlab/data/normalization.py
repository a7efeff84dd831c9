"""Per-channel input normalisation: uint8 pixels ÷ 255, then ``(x − mean_c) / std_c``, in float32.

The same arithmetic as torchvision's ``ToTensor()`` + ``Normalize()``. :class:`Normalization` is built once for a
channel count and batch rank (the loader, the data policies and AutoAugment's pixel round trip share it);
:func:`normalize` is the one-call form; :func:`channel_values` validates a dataset's per-channel statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["Normalization", "channel_values", "normalize"]


def channel_values(values: Any, name: str, channels: int, *, broadcast: bool = False) -> tuple[float, ...] | None:
    """``values`` as finite floats, one per channel (or a single one for all when ``broadcast``); ``None`` stays."""
    if values is None:
        return None
    try:
        out = tuple(torch.as_tensor(values, dtype=torch.float64).flatten().tolist())  # float64: Python floats exact
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a sequence of floats (one per channel) or None; got {values!r}") from None
    if len(out) != channels and not (broadcast and len(out) == 1):
        fix = "give one per channel"
        if broadcast:
            fix = f"{name} must have 1 or {channels} entries (one per channel of x)"
        raise ValueError(f"{name} has {len(out)} entries but the inputs have {channels} channels; {fix}")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite; got {values!r}")
    return out


class Normalization:
    """``(x/255 − mean_c)/std_c`` for uint8 pixels, ``(x − mean_c)/std_c`` for floats, per channel (dim 1), float32.

    Args:
        mean, std: one value per channel, or one for all; both ``None`` skips the standardisation (uint8 is still
            scaled to [0, 1]).
        channels, ndim: the channel count and rank of the batches it will see (``[N, C, ...]``).
        device: where its statistics live (the batches' device).

    ``mean``/``std`` attributes hold the statistics as given (flattened floats), ``None`` for none.
    """

    def __init__(self, mean: Any, std: Any, channels: int, ndim: int, device: torch.device | str = "cpu"):
        if (mean is None) != (std is None):
            raise ValueError("pass both mean and std, or neither")
        means = channel_values(mean, "mean", channels, broadcast=True)
        stds = channel_values(std, "std", channels, broadcast=True)
        if stds is not None and min(stds) <= 0:
            raise ValueError(f"std must be > 0 per channel; got {std!r}")
        self.mean = None if mean is None else tuple(float(v) for v in torch.as_tensor(mean).flatten())
        self.std = None if std is None else tuple(float(v) for v in torch.as_tensor(std).flatten())
        shape = (1, -1, *([1] * (ndim - 2)))  # broadcast over [N, C, *spatial]
        self._mean = None if means is None else torch.as_tensor(mean, dtype=torch.float32).reshape(shape).to(device)
        self._std = None if stds is None else torch.as_tensor(std, dtype=torch.float32).reshape(shape).to(device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised float32 batch (no argument checks: the shape was fixed at construction)."""
        out = x.float()
        if x.dtype == torch.uint8:
            out = out / 255.0
        if self._mean is not None:
            out = (out - self._mean) / self._std
        return out

    def pixels_(self, out: torch.Tensor) -> torch.Tensor:
        """``out`` — float32 holding uint8 pixel values, ``[N, C, ...]`` — normalised in place: the same float32
        operations in the same order as ``self(out.to(torch.uint8))``, so the same numbers, without temporaries."""
        out.div_(255.0)
        if self._mean is not None:
            out.sub_(self._mean).div_(self._std)
        return out

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """``x·std_c + mean_c``: a normalised float batch back in the [0, 1] scale (identity without statistics)."""
        return x if self._mean is None else x * self._std + self._mean

    def __repr__(self) -> str:
        return f"Normalization(mean={self.mean}, std={self.std})"


def normalize(x: torch.Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> torch.Tensor:
    """``(x/255 − mean_c)/std_c`` for uint8 pixels, ``(x − mean_c)/std_c`` for floats, per channel (dim 1); float32.

    ``mean = std = None`` skips the standardisation (uint8 is still scaled to [0, 1]).
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor; got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"x must be a batch [N, C, ...]; got shape {tuple(x.shape)}")
    return Normalization(mean, std, x.shape[1], x.ndim, x.device)(x)
