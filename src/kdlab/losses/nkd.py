"""Normalized knowledge distillation (Yang, Zeng, Li, Zhang, Yuan & Li, ICCV 2023, "From Knowledge Distillation to
Self-Knowledge Distillation: A Unified Approach with Normalized Loss and Customized Soft Labels")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._logspace import masked_logsumexp
from kdlab.losses._validate import (
    check_logits,
    check_nonnegative,
    check_positive,
    check_reduction,
    check_target,
    logit_names,
    reduce,
)


def _log_softmax_without(u: Tensor, drop: Tensor) -> Tensor:
    """log softmax over the columns outside ``drop`` (bool [N, C], one True per row), 0 in the dropped column: the
    released code's softmax of the logits with the target column removed, exactly (no masking constant)."""
    keep = ~drop
    lse, _ = masked_logsumexp(u, keep)
    # 0 (not −inf) in the dropped column: its probability is then zeroed by the caller, never exp'd to inf
    return torch.where(keep, u - lse.unsqueeze(1), torch.zeros_like(u))


@logit_names
def nkd_loss(
    z: Tensor,
    v: Tensor,
    target: Tensor,
    temperature: float = 1.0,
    gamma: float = 1.5,
    reduction: str = "mean",
) -> Tensor:
    """L_NKD = −p^t_y·log p^s_y − γ·T²·Σ_{c≠y} p̂^t_c·log p̂^s_c  (Yang et al. ICCV 2023, the released ``NKDLoss``).

    p = softmax(u) at T = 1 (the target term); p̂ = softmax of the non-target logits u_{c≠y}/T, renormalised over
    the C − 1 non-target classes (the "normalised" non-target distribution). Both terms are cross-entropies as in
    the released code, so the value includes the constant γ·T²·H(p̂^t); the gradient is that of
    −p^t_y·log p^s_y + γ·T²·KL(p̂^t ‖ p̂^s). ``target``: integer labels [N]. No CE term.
    """
    t = check_positive(temperature, "temperature")
    gamma = check_nonnegative(gamma, "gamma")
    reduction = check_reduction(reduction)
    z, v = check_logits(z, v)
    target = check_target(target, z.shape[0], z.shape[1], z.device)
    gt = F.one_hot(target, z.shape[1]).bool()
    y = target.unsqueeze(1)
    target_term = -(F.softmax(v, dim=1).gather(1, y) * F.log_softmax(z, dim=1).gather(1, y)).squeeze(1)
    log_ps = _log_softmax_without(z / t, gt)
    log_pt = _log_softmax_without(v / t, gt)
    pt = torch.where(gt, torch.zeros_like(log_pt), log_pt.exp())
    non_target = -(pt * log_ps).sum(dim=1)
    return reduce(target_term + (gamma * t * t) * non_target, reduction)
