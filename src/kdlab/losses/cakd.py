"""Correlation-aware decoupled KL (CAKD, Zhang et al. 2024): DKD generalised from {target} to a strong set S."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._logspace import split_kl
from kdlab.losses._validate import (
    check_logits,
    check_mask,
    check_nonnegative,
    check_positive,
    check_reduction,
    logit_names,
    reduce,
)


@logit_names
def kl_decomposition(
    z: Tensor, v: Tensor, strong_mask: Tensor, temperature: float = 4.0
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample (BCD, SCD, WCD), each [N], without T² (Zhang et al. 2024).

    With p = softmax(u/T), S = ``strong_mask`` (bool [N, C], chosen from the teacher), W = its complement,
    b = [p_S, p_W] and p̂_S, p̂_W the renormalised restrictions:
    BCD = KL(b^t‖b^s), SCD = KL(p̂^t_S‖p̂^s_S), WCD = KL(p̂^t_W‖p̂^s_W), and exactly
    KL(p^t‖p^s) = BCD + p^t_S·SCD + p^t_W·WCD. A row whose S or W is empty gets 0 for that set's terms.
    """
    t = check_positive(temperature, "temperature")
    z, v = check_logits(z, v)
    strong_mask = check_mask(strong_mask, z.shape[0], z.shape[1], z.device)
    return split_kl(F.log_softmax(v / t, dim=1), F.log_softmax(z / t, dim=1), strong_mask)


@logit_names
def cakd_loss(
    z: Tensor,
    v: Tensor,
    strong_mask: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    gamma: float = 1.0,
    temperature: float = 4.0,
    reduction: str = "mean",
) -> Tensor:
    """L_CAKD = T² · batch-mean(γ·BCD + α·SCD + β·WCD)  (Zhang et al. 2024).

    The teacher-dependent coefficients of the exact decomposition (1, p^t_S, p^t_W) become hyperparameters. With
    S = {y} (:func:`strong_set_target`) SCD ≡ 0 and this equals DKD with α_DKD = γ, β_DKD = β.
    """
    t = check_positive(temperature, "temperature")
    alpha = check_nonnegative(alpha, "alpha")
    beta = check_nonnegative(beta, "beta")
    gamma = check_nonnegative(gamma, "gamma")
    reduction = check_reduction(reduction)
    z, v = check_logits(z, v)
    strong_mask = check_mask(strong_mask, z.shape[0], z.shape[1], z.device)
    bcd, scd, wcd = split_kl(F.log_softmax(v / t, dim=1), F.log_softmax(z / t, dim=1), strong_mask)
    return reduce((t * t) * (gamma * bcd + alpha * scd + beta * wcd), reduction)
