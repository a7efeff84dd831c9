"""Turn user data — ``(inputs, labels)`` arrays or a map-style ``Dataset`` — into validated in-memory tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from kdlab._bar import tqdm
from kdlab._checks import check_int

__all__ = ["as_tensors", "dataset_item", "is_pair"]

# Datasets at least this long get a progress bar while they are stacked.
_PROGRESS_THRESHOLD = 10_000


def _is_array(obj: Any) -> bool:
    return isinstance(obj, (torch.Tensor, np.ndarray))


def _is_pil(obj: Any) -> bool:
    # Detected by module name so PIL is never imported here.
    return type(obj).__module__.startswith("PIL.") and hasattr(obj, "mode")


def _input_tensor(obj: Any, what: str) -> torch.Tensor:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise ValueError(f"{what} is a numpy object array; give numeric arrays (uint8 or float)")
        return torch.from_numpy(np.ascontiguousarray(obj))
    if _is_pil(obj):
        arr = np.asarray(obj)  # [H, W] or [H, W, C] uint8
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # to [C, H, W] like ToTensor
        return torch.from_numpy(np.ascontiguousarray(arr))
    raise ValueError(f"{what} must be a torch.Tensor, numpy array or PIL image; got {type(obj).__name__}")


def _label_int(obj: Any, what: str) -> int:
    if isinstance(obj, torch.Tensor):
        if obj.numel() != 1 or obj.is_floating_point() or obj.is_complex() or obj.dtype == torch.bool:
            raise ValueError(
                f"{what} must be one integer class id; got a {obj.dtype} tensor of shape {tuple(obj.shape)}"
            )
        return int(obj.item())
    if isinstance(obj, np.ndarray):
        if obj.size != 1 or not np.issubdtype(obj.dtype, np.integer):
            raise ValueError(f"{what} must be one integer class id; got a {obj.dtype} array of shape {obj.shape}")
        return int(obj.item())
    if isinstance(obj, (bool, np.bool_)) or not isinstance(obj, (int, np.integer)):
        raise ValueError(f"{what} must be an integer class id; got {type(obj).__name__} {obj!r}")
    return int(obj)


def _finalise(x: torch.Tensor, y: torch.Tensor, num_classes: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dtype != torch.uint8:
        if not x.is_floating_point():
            raise ValueError(
                f"inputs must be uint8 pixels or floating point; got {x.dtype} (convert with .float() or to uint8)"
            )
        x = x.float()
        if not torch.isfinite(x).all():
            raise ValueError("inputs contain NaN or inf; clean or drop those samples")
    if x.ndim < 2:
        raise ValueError(
            f"inputs must be [N, C, ...] (N samples, then a channel/feature dim); got shape {tuple(x.shape)} — "
            f"add a channel dim with x[:, None]"
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(
            f"labels must be integer class ids; got {y.dtype} (one-hot or soft labels: take argmax(dim=1) first)"
        )
    if y.ndim == 2 and y.shape[1] > 1:
        raise ValueError(f"labels must be 1-D class ids [N]; got shape {tuple(y.shape)}: one-hot labels? take "
                         "y.argmax(dim=1)")
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D [N]; got shape {tuple(y.shape)} (use y.reshape(-1) if it is [N, 1])")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"inputs have {x.shape[0]} samples but labels have {y.shape[0]}; they must match")
    if x.shape[0] == 0:
        raise ValueError("the data is empty; give at least one sample")
    y = y.long()
    if int(y.min()) < 0:
        raise ValueError(f"labels must be >= 0; found {int(y.min())}")
    if num_classes is not None and int(y.max()) >= num_classes:
        raise ValueError(f"labels must be < num_classes={num_classes}; found {int(y.max())}")
    return x.contiguous(), y.contiguous()


def dataset_item(data: Any, i: int) -> tuple[torch.Tensor, int]:
    """Item ``i`` of a map-style dataset as ``(input tensor [C, ...], int label)``, or a ValueError naming it."""
    pair = data[i]
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(
            f"dataset item {i} must be an (input, label) pair; got {type(pair).__name__}"
            + (f" of length {len(pair)}" if isinstance(pair, (tuple, list)) else "")
        )
    return _input_tensor(pair[0], f"input of item {i}"), _label_int(pair[1], f"label of item {i}")


def is_pair(data: Any) -> bool:
    """An ``(inputs, labels)`` pair of tensors/arrays (else a Dataset, or something invalid)."""
    return isinstance(data, (tuple, list)) and len(data) == 2 and _is_array(data[0]) and _is_array(data[1])


def as_tensors(
    data: Any, *, num_classes: int | None = None, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` CPU tensors from user data: x uint8 (kept) or float32 ``[N, C, ...]``, y int64 ``[N]``.

    Args:
        data: an ``(inputs, labels)`` pair of tensors/arrays, or any map-style ``torch.utils.data.Dataset``
            (``len`` + integer indexing) whose items are ``(input, label)`` pairs; inputs may be tensors, arrays or
            PIL images (made ``[C, H, W]``). A dataset is read once, item by item, into one preallocated tensor, with
            a progress bar from 10 000 items.
        num_classes: if given, labels must be below it.
        progress: allow the progress bar.
    """
    if num_classes is not None:
        num_classes = check_int(num_classes, "num_classes", 1, note=" or None")
    if is_pair(data):
        x = _input_tensor(data[0], "inputs")
        y = data[1]
        y = torch.from_numpy(np.ascontiguousarray(y)) if isinstance(y, np.ndarray) else y.detach().cpu()
        return _finalise(x, y, num_classes)

    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise ValueError(
            f"data must be an (inputs, labels) pair of tensors/arrays or a map-style Dataset with __len__ and "
            f"__getitem__; got {type(data).__name__} (for an IterableDataset, collect it into tensors first)"
        )
    n = len(data)
    if n == 0:
        raise ValueError(f"the dataset {type(data).__name__} is empty; give at least one sample")

    def item(i: int) -> tuple[torch.Tensor, int]:
        return dataset_item(data, i)

    x0, y0 = item(0)
    x = torch.empty((n, *x0.shape), dtype=x0.dtype)
    y = torch.empty(n, dtype=torch.int64)
    x[0], y[0] = x0, y0
    # A generic Dataset can only be read item by item; this runs once, when the data enters kdlab.
    for i in tqdm(range(1, n), desc="reading dataset", disable=not progress or n < _PROGRESS_THRESHOLD):
        xi, yi = item(i)
        if xi.shape != x0.shape:
            raise ValueError(f"input of item {i} has shape {tuple(xi.shape)} but item 0 has {tuple(x0.shape)}")
        if xi.dtype != x0.dtype:
            raise ValueError(f"input of item {i} is {xi.dtype} but item 0 is {x0.dtype}; use one dtype")
        x[i], y[i] = xi, yi
    return _finalise(x, y, num_classes)
