"""Rules that choose CAKD's strong-correlation set S from the teacher (Zhang et al. 2024).

The paper's exact rule is not public; these are the configurable candidates of docs/reference/methods.md §4. Each
returns a bool mask [N, C] (True = class in S) computed without gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._validate import (
    check_int,
    check_matrix,
    check_positive,
    check_target,
)

STRONG_SET_RULES = ("target", "topk", "mass")


def strong_set_target(target: Tensor, num_classes: int) -> Tensor:
    """S = {y}: the one-hot mask of the labels. CAKD with this set is DKD."""
    num_classes = check_int(num_classes, "num_classes", 2)
    if not isinstance(target, Tensor):
        raise ValueError(f"target must be a torch.Tensor of class indices, shape [N]; got {type(target).__name__}")
    if target.dim() != 1 or target.shape[0] < 1:
        raise ValueError(f"target must have shape [N] with N >= 1; got {tuple(target.shape)}")
    target = check_target(target, target.shape[0], num_classes, target.device)
    return F.one_hot(target, num_classes).bool()


def strong_set_topk(teacher_logits: Tensor, k: int = 5) -> Tensor:
    """S = the teacher's k highest-scoring classes per row (ties broken by ``torch.topk``)."""
    v = check_matrix(teacher_logits, "teacher_logits").detach()
    k = check_int(k, "k", 1, v.shape[1])
    with torch.no_grad():
        idx = v.topk(k, dim=1).indices
        return torch.zeros(v.shape, dtype=torch.bool, device=v.device).scatter_(1, idx, True)


def strong_set_mass(teacher_logits: Tensor, threshold: float = 0.9, temperature: float = 1.0) -> Tensor:
    """S = the smallest set of teacher classes whose probability softmax(v/T) sums to ≥ ``threshold``.

    Classes are taken in decreasing probability while the mass before them is below the threshold, so S always
    holds the top class; W can be empty (e.g. ``threshold=1``).
    """
    v = check_matrix(teacher_logits, "teacher_logits").detach()
    t = check_positive(temperature, "temperature")
    threshold = check_positive(threshold, "threshold")
    if threshold > 1:
        raise ValueError(f"threshold must be in (0, 1] (a probability mass); got {threshold}")
    with torch.no_grad():
        dtype = torch.float64 if v.dtype == torch.float64 else torch.float32
        p = torch.softmax(v.to(dtype) / t, dim=1)
        p_sorted, order = p.sort(dim=1, descending=True)
        # exclusive prefix sum (the mass of the classes ranked strictly above each class), shifted rather than
        # computed as cumsum − p so that it carries no extra rounding
        before = torch.cat([torch.zeros_like(p_sorted[:, :1]), torch.cumsum(p_sorted[:, :-1], dim=1)], dim=1)
        keep_sorted = before < threshold
        return torch.zeros(v.shape, dtype=torch.bool, device=v.device).scatter_(1, order, keep_sorted)


_RULE_KWARGS = {"target": (), "topk": ("k",), "mass": ("threshold", "temperature")}


def strong_set(rule: str, teacher_logits: Tensor, target: Tensor | None = None, **kwargs: object) -> Tensor:
    """Dispatch to a strong-set rule by name.

    "target" (needs ``target``), "topk" (option ``k``), "mass" (options ``threshold``, ``temperature``).
    """
    if rule not in STRONG_SET_RULES:
        raise ValueError(f"rule must be one of {STRONG_SET_RULES}; got {rule!r}")
    unknown = sorted(set(kwargs) - set(_RULE_KWARGS[rule]))
    if unknown:
        raise ValueError(f"rule {rule!r} accepts the options {_RULE_KWARGS[rule]}; got unexpected {unknown}")
    if rule == "target":
        v = check_matrix(teacher_logits, "teacher_logits")
        if target is None:
            raise ValueError("target must be given (class indices [N]) when rule='target'")
        target = check_target(target, v.shape[0], v.shape[1], v.device)
        return F.one_hot(target, v.shape[1]).bool()
    if rule == "topk":
        return strong_set_topk(teacher_logits, **kwargs)
    return strong_set_mass(teacher_logits, **kwargs)
