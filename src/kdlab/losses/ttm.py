"""Transformed teacher matching, TTM and WTTM (Zheng & Yang, ICLR 2024, "Knowledge Distillation Based on
Transformed Teacher Matching")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._logspace import kl_rows
from kdlab.losses._validate import (
    check_logits,
    check_matrix,
    check_positive,
    check_reduction,
    compute_dtype,
    logit_names,
    reduce,
)


def _power_transform(v: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    # p̂ = p^γ / Σ_j p_j^γ with p = softmax(v) is softmax(γv); U_γ(p) = Σ_j p_j^γ = exp(lse(γv) − γ·lse(v)).
    gv = gamma * v
    log_u = torch.logsumexp(gv, dim=1) - gamma * torch.logsumexp(v, dim=1)
    return F.log_softmax(gv, dim=1), log_u


def power_transform(teacher_logits: Tensor, gamma: float = 0.1) -> tuple[Tensor, Tensor]:
    """(log p̂_γ [N, C], log U_γ(p) [N]) of the teacher p = softmax(v): p̂_γ = p^γ / U_γ(p), U_γ(p) = Σ_c p_c^γ.

    Computed in log space: log p̂ = log_softmax(γv), log U = logsumexp(γv) − γ·logsumexp(v) (Zheng & Yang 2024).
    Detaches the teacher.
    """
    v = check_matrix(teacher_logits, "teacher_logits (v)").detach()
    gamma = check_positive(gamma, "gamma")
    return _power_transform(v.to(compute_dtype(v)), gamma)


@logit_names
def ttm_loss(z: Tensor, v: Tensor, gamma: float = 0.1, reduction: str = "mean") -> Tensor:
    """L_TTM = batch-mean KL(p̂_γ ‖ softmax(z)), p̂_γ = softmax(γ·v)  (Zheng & Yang 2024).

    The student has no temperature and there is no T² factor; γ = 1/T. The weight β and CE are the method layer's.
    """
    gamma = check_positive(gamma, "gamma")
    reduction = check_reduction(reduction)
    z, v = check_logits(z, v)
    log_p_hat, _ = _power_transform(v, gamma)
    return reduce(kl_rows(log_p_hat, F.log_softmax(z, dim=1)), reduction)


@logit_names
def wttm_loss(z: Tensor, v: Tensor, gamma: float = 0.1, reduction: str = "mean") -> Tensor:
    """L_WTTM = batch-mean U_γ(softmax(v)) · KL(p̂_γ ‖ softmax(z)), U_γ(p) = Σ_c p_c^γ  (Zheng & Yang 2024).

    U is the power sum of the untempered teacher softmax, per sample, not normalised across the batch.
    """
    gamma = check_positive(gamma, "gamma")
    reduction = check_reduction(reduction)
    z, v = check_logits(z, v)
    log_p_hat, log_u = _power_transform(v, gamma)
    return reduce(log_u.exp() * kl_rows(log_p_hat, F.log_softmax(z, dim=1)), reduction)
