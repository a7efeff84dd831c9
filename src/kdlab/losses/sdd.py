"""Scale-decoupled distillation (Wei, Bai et al., CVPR 2024, "Scale Decoupled Distillation"): a logit loss applied to
the logits of every pooled region of the final feature map, complementary regions weighted up."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._logspace import kl_rows
from kdlab.losses._validate import (
    check_finite,
    check_nonnegative,
    check_positive,
    check_reduction,
    check_target,
    logit_names,
    reduce,
)
from kdlab.losses.dkd import _dkd_parts

SDD_BASES = ("kd", "dkd")


def _check_regions(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 3:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a floating tensor [N, C, R] (logits per class and region); got {got}")
    if x.shape[0] < 1 or x.shape[1] < 2 or x.shape[2] < 1:
        raise ValueError(f"{name} needs N >= 1 rows, C >= 2 classes and R >= 1 regions; got shape {tuple(x.shape)}")
    check_finite(x, name)
    return x


def sdd_region_weights(v_regions: Tensor, target: Tensor, complementary_weight: float = 2.0) -> Tensor:
    """[N, R] weights of SDD's regions from the teacher: 1 where a region's prediction is as right or wrong as the
    global one (region 0, consistent), ``complementary_weight`` where it differs (complementary). Region 0 is 1."""
    pred = v_regions.argmax(dim=1)  # [N, R]
    right = pred == target.unsqueeze(1)
    complementary = right != right[:, :1]  # region 0 never differs from itself
    w = torch.ones(pred.shape, dtype=v_regions.dtype, device=v_regions.device)
    return torch.where(complementary, torch.full_like(w, complementary_weight), w)


@logit_names
def sdd_loss(
    z: Tensor,
    v: Tensor,
    target: Tensor,
    base: str = "kd",
    temperature: float = 4.0,
    alpha: float = 1.0,
    beta: float = 8.0,
    complementary_weight: float = 2.0,
    reduction: str = "mean",
) -> Tensor:
    """L_SDD = Σ_{i,r} w_{i,r}·ℓ(z_{i,:,r}, v_{i,:,r}) / (N·R)  (Wei & Bai et al. CVPR 2024; ``sdd_kd_loss`` and
    ``multi_dkd`` of the released code).

    ``z``, ``v``: student and teacher logits per region, [N, C, R]; region 0 is the global (1×1) one, so with R = 1
    this is the base loss itself. ℓ is the base loss per row at temperature T: ``"kd"`` T²·KL(softmax_T(v) ‖
    softmax_T(z)); ``"dkd"`` T²·(α·TCKD + β·NCKD) with the sample's label. w (:func:`sdd_region_weights`) is 1 for
    consistent regions and ``complementary_weight`` for complementary ones (the teacher's region prediction is right
    where its global one is wrong, or the reverse). ``reduction="none"``: per sample, Σ_r w·ℓ / R.
    """
    if base not in SDD_BASES:
        raise ValueError(f"base must be one of {SDD_BASES}; got {base!r}")
    t = check_positive(temperature, "temperature")
    alpha = check_nonnegative(alpha, "alpha")
    beta = check_nonnegative(beta, "beta")
    complementary_weight = check_nonnegative(complementary_weight, "complementary_weight")
    reduction = check_reduction(reduction)
    z = _check_regions(z, "student_logits (z)")
    v = _check_regions(v, "teacher_logits (v)")
    if z.shape != v.shape:
        raise ValueError(f"teacher_logits (v) must have the same shape as student_logits (z); got {tuple(v.shape)} "
                         f"vs {tuple(z.shape)}")
    if z.device != v.device:
        raise ValueError(f"teacher_logits (v) is on {v.device} but student_logits (z) is on {z.device}")
    dtype = torch.float64 if torch.float64 in (z.dtype, v.dtype) else torch.float32
    z, v = z.to(dtype), v.detach().to(dtype)
    n, c, r = z.shape
    target = check_target(target, n, c, z.device)
    weights = sdd_region_weights(v, target, complementary_weight)  # [N, R]
    # rows (sample, region) of [N·R, C]
    zs, vs = z.permute(0, 2, 1).reshape(n * r, c), v.permute(0, 2, 1).reshape(n * r, c)
    if base == "kd":
        per_row = kl_rows(F.log_softmax(vs / t, dim=1), F.log_softmax(zs / t, dim=1))
    else:
        tckd, nckd = _dkd_parts(zs, vs, target.repeat_interleave(r), t)
        per_row = alpha * tckd + beta * nckd
    per_sample = (t * t) * (weights * per_row.view(n, r)).sum(dim=1) / r
    return reduce(per_sample, reduction)
