"""Decoupled knowledge distillation (Zhao, Cui, Song, Qiu & Liang, CVPR 2022)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._logspace import split_kl
from kdlab.losses._validate import (
    check_logits,
    check_nonnegative,
    check_positive,
    check_reduction,
    check_target,
    logit_names,
    reduce,
)


@logit_names
def dkd_parts(z: Tensor, v: Tensor, target: Tensor, temperature: float = 4.0) -> tuple[Tensor, Tensor]:
    """Per-sample (TCKD, NCKD), each [N], **without** the T² factor (Zhao et al. 2022, Eq. 1–4).

    With p = softmax(u/T), b = [p_y, 1 − p_y] and p̂_k = p_k / (1 − p_y) for k ≠ y:
    TCKD_i = KL(b^t ‖ b^s), NCKD_i = KL(p̂^t ‖ p̂^s), and exactly KL(p^t‖p^s) = TCKD + (1 − p^t_y)·NCKD.
    The target is excluded from the non-target softmax exactly (the reference subtracts 1000 from the scaled
    logits, which is the same up to e^{−1000/T}); 1 − p_y is a logsumexp over the non-target classes, exact where
    the reference takes a clamped log of a summed probability.
    """
    t = check_positive(temperature, "temperature")
    z, v = check_logits(z, v)
    target = check_target(target, z.shape[0], z.shape[1], z.device)
    return _dkd_parts(z, v, target, t)


def _dkd_parts(z: Tensor, v: Tensor, target: Tensor, t: float) -> tuple[Tensor, Tensor]:
    gt_mask = F.one_hot(target, z.shape[1]).bool()
    tckd, _, nckd = split_kl(F.log_softmax(v / t, dim=1), F.log_softmax(z / t, dim=1), gt_mask)
    return tckd, nckd


@logit_names
def dkd_loss(
    z: Tensor,
    v: Tensor,
    target: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    reduction: str = "mean",
) -> Tensor:
    """L_DKD = α·TCKD + β·NCKD, TCKD = T²·batch-mean KL(b^t‖b^s), NCKD = T²·batch-mean KL(p̂^t‖p̂^s) (Zhao et al. 2022).

    ``target``: integer labels [N]. No CE and no warm-up (the method layer applies min(epoch/warmup, 1)).
    """
    t = check_positive(temperature, "temperature")
    alpha = check_nonnegative(alpha, "alpha")
    beta = check_nonnegative(beta, "beta")
    reduction = check_reduction(reduction)
    z, v = check_logits(z, v)
    target = check_target(target, z.shape[0], z.shape[1], z.device)
    tckd, nckd = _dkd_parts(z, v, target, t)
    return reduce((t * t) * (alpha * tckd + beta * nckd), reduction)
