"""ReviewKD's hierarchical context loss (Chen, Liu, Zhao & Jia, "Distilling Knowledge via Knowledge Review",
CVPR 2021, §3.3)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._validate import check_feature_pair, stage_list

#: the pooled grid sizes of the hierarchical context loss (the released code's [4, 2, 1])
HCL_LEVELS = (4, 2, 1)


def hcl_loss(student: Tensor | list[Tensor], teacher: Tensor | list[Tensor],
             levels: tuple[int, ...] = HCL_LEVELS) -> Tensor:
    """HCL = Σ_stages [MSE(s, t) + Σ_j 2^−j · MSE(pool_lj(s), pool_lj(t))] / (1 + Σ_j 2^−j).

    Per stage, the maps ``s`` (the student's, after the review fusion) and ``t`` (the teacher's, detached here) of
    one shape [N, C, H, W] (or [N, C, L]) are compared by the mean squared error at full resolution and after
    adaptive average pooling to l×l (l for 1-D maps) for each l of ``levels`` smaller than H, the j-th such level
    weighted 2^−j; the weights are normalised to sum to 1. ``student``/``teacher``: a tensor or a list in stage
    order; the stages' losses are summed. Unweighted (the method multiplies by its ReviewKD weight).
    """
    students, teachers = stage_list(student, "student"), stage_list(teacher, "teacher")
    if len(students) != len(teachers):
        raise ValueError(f"hcl_loss: one teacher map per student map; got {len(students)} and {len(teachers)}")
    if not levels or any(isinstance(lv, bool) or not isinstance(lv, int) or lv < 1 for lv in levels):
        raise ValueError(f"hcl_loss: levels must be positive integers (pooled grid sizes); got {levels!r}")
    total: Tensor | float = 0.0
    for i, (s, t) in enumerate(zip(students, teachers)):
        s, t = check_feature_pair(s, t, f"student (stage {i})", f"teacher (stage {i})")
        if s.dim() not in (3, 4):
            raise ValueError(f"hcl_loss: stage {i}: maps must be [N, C, L] or [N, C, H, W]; got {tuple(s.shape)}")
        pool = F.adaptive_avg_pool1d if s.dim() == 3 else F.adaptive_avg_pool2d
        loss, weight, norm = F.mse_loss(s, t), 1.0, 1.0
        for lv in levels:
            if lv >= s.shape[2]:
                continue
            size = lv if s.dim() == 3 else (lv, lv)
            weight /= 2.0
            loss = loss + weight * F.mse_loss(pool(s, size), pool(t, size))
            norm += weight
        total = total + loss / norm
    return total
