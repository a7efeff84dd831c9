"""Input checks and shape matching shared by the feature losses (FitNets, AT, NST, PKT, RKD, SP, KDSVD, VID).

A feature is a floating tensor with one row per sample: a pooled vector [N, D], a 1-D map [N, C, L] or a 2-D map
[N, C, H, W]. Multi-stage losses take a tensor or a sequence of them in stage order, student's and teacher's paired by
position. The teacher's features are detached here and everything is computed in float32 (float64 for float64
inputs), as for the logit losses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._validate import check_finite, compute_dtype

_POOL = {3: F.adaptive_avg_pool1d, 4: F.adaptive_avg_pool2d}


def check_feature(x: object, name: str, dims: tuple[int, ...]) -> Tensor:
    """A finite floating tensor with one of the ranks ``dims`` and at least one row."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype; got {x.dtype}")
    if x.dim() not in dims:
        want = " or ".join({2: "[N, D]", 3: "[N, C, L]", 4: "[N, C, H, W]"}[d] for d in dims)
        raise ValueError(f"{name} must be {want}; got shape {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one sample; got shape {tuple(x.shape)}")
    check_finite(x, name)
    return x


def check_features(f_s: object, f_t: object, dims: tuple[int, ...], what: str = "features",
                   same_shape: bool = False) -> tuple[Tensor, Tensor]:
    """Student and *detached* teacher features with the same batch size and rank on one device, in the compute
    dtype. ``same_shape``: every dimension must agree (a regressed student map against the teacher's)."""
    if isinstance(f_s, Tensor) and isinstance(f_t, Tensor) and f_t.requires_grad and not f_s.requires_grad:
        raise ValueError(f"the teacher's {what} require grad but the student's do not: the pair looks swapped (the "
                         f"student's come first); if it is meant, pass the teacher's {what} detached")
    f_s = check_feature(f_s, f"student {what}", dims)
    f_t = check_feature(f_t, f"teacher {what}", dims)
    if same_shape and f_s.shape != f_t.shape:
        raise ValueError(f"student and teacher {what} must have the same shape; got {tuple(f_s.shape)} and "
                         f"{tuple(f_t.shape)}")
    if f_s.dim() != f_t.dim() or f_s.shape[0] != f_t.shape[0]:
        raise ValueError(f"student and teacher {what} must have the same batch size and rank; got "
                         f"{tuple(f_s.shape)} and {tuple(f_t.shape)}")
    if f_s.device != f_t.device:
        raise ValueError(f"the teacher's {what} are on {f_t.device} but the student's on {f_s.device}")
    dtype = compute_dtype(f_s, f_t)
    return f_s.to(dtype), f_t.detach().to(dtype)


def stage_pairs(g_s: Tensor | Sequence[Tensor], g_t: Tensor | Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """(student, teacher) per stage from two tensors or two equally long sequences in stage order."""
    g_s = [g_s] if isinstance(g_s, Tensor) else list(g_s)
    g_t = [g_t] if isinstance(g_t, Tensor) else list(g_t)
    if not g_s or len(g_s) != len(g_t):
        raise ValueError(f"give the student's and the teacher's features as two tensors or two equally long "
                         f"sequences in stage order; got {len(g_s)} and {len(g_t)} stages")
    return list(zip(g_s, g_t))


def pool_to_match(f_s: Tensor, f_t: Tensor) -> tuple[Tensor, Tensor]:
    """The two maps at a common spatial size: whichever is larger along a spatial axis is adaptively average-pooled
    to the smaller one's size (per axis). On square maps this is mdistiller's rule (AT, NST, VID): the map with the
    larger H is pooled to (H_small, H_small)."""
    size = tuple(min(a, b) for a, b in zip(f_s.shape[2:], f_t.shape[2:]))
    pool = _POOL[f_s.dim()]
    if tuple(f_s.shape[2:]) != size:
        f_s = pool(f_s, size)
    if tuple(f_t.shape[2:]) != size:
        f_t = pool(f_t, size)
    return f_s, f_t
