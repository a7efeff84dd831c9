"""Logit standardisation (Sun, Ren, Li, Wang & Cao, CVPR 2024, "Logit Standardization in Knowledge Distillation")."""

from __future__ import annotations

from torch import Tensor

from kdlab.losses._validate import check_finite, check_positive, compute_dtype


def _standardize(u: Tensor, eps: float) -> Tensor:
    return (u - u.mean(dim=-1, keepdim=True)) / (u.std(dim=-1, keepdim=True, correction=1) + eps)


def logit_standardize(u: Tensor, eps: float = 1e-7) -> Tensor:
    """Z(u) = (u − mean_c u) / (std_c u + eps) over the last (class) dim, unbiased std  (Sun et al. 2024).

    A modifier applied to both networks' logits before a softmax-based loss. Returns float32 (float64 for float64
    input); does not detach, so it can be applied to the student.
    """
    eps = check_positive(eps, "eps")
    if not isinstance(u, Tensor):
        raise ValueError(f"u must be a torch.Tensor of logits [..., C]; got {type(u).__name__}")
    if not u.is_floating_point():
        raise ValueError(f"u must have a floating dtype; got {u.dtype}")
    if u.dim() < 1 or u.shape[-1] < 2:
        raise ValueError(f"u must have a last (class) dimension of size >= 2; got shape {tuple(u.shape)}")
    check_finite(u, "u")
    return _standardize(u.to(compute_dtype(u)), eps)
