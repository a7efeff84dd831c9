"""Multi-level logit distillation (Jin, Wang & Lin, CVPR 2023, "Multi-Level Logit Distillation").

Instance-, class- and batch-level alignment of the two networks' predictions at several temperatures, on a weak and
a strong view of the batch, as the released code (``KD_ours``) computes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._logspace import kl_rows
from kdlab.losses._validate import check_int, check_logits, check_pair, check_positive, check_reduction

#: the released code's temperatures: the KD temperature T (4 on CIFAR-100, 1 on ImageNet), then 3, 5, 2, 6
MLKD_TEMPERATURES = (4.0, 3.0, 5.0, 2.0, 6.0)


def _median_fraction(x: Tensor) -> Tensor:
    """Fraction of the entries of the 1-D ``x`` at or below their median (linear interpolation, numpy's default
    ``percentile(x, 50)``): 1/2 for an even count of distinct values. No gradient."""
    return (x <= torch.quantile(x, 0.5)).to(x.dtype).mean()


def _gram_gap(ps: Tensor, pt: Tensor, dim: int) -> Tensor:
    """‖G_t − G_s‖²_F / n, G = PᵀP (C×C, ``dim=0``: class level, n = C) or PPᵀ (N×N, ``dim=1``: batch level, n = N)."""
    if dim == 0:
        gs, gt, n = ps.t() @ ps, pt.t() @ pt, ps.shape[1]
    else:
        gs, gt, n = ps @ ps.t(), pt @ pt.t(), ps.shape[0]
    return ((gt - gs) ** 2).sum() / n


def _check_temperatures(temperatures: Sequence[float], strong_terms: int) -> tuple[list[float], int]:
    if isinstance(temperatures, (str, bytes)) or not isinstance(temperatures, Sequence) or not temperatures:
        raise ValueError(f"temperatures must be a non-empty sequence of positive floats; got {temperatures!r}")
    ts = [check_positive(t, "temperatures") for t in temperatures]
    return ts, check_int(strong_terms, "strong_terms", 0, len(ts))


def mlkd_parts(
    z_weak: Tensor,
    v_weak: Tensor,
    z_strong: Tensor,
    v_strong: Tensor,
    temperatures: Sequence[float] = MLKD_TEMPERATURES,
    strong_terms: int = 3,
) -> tuple[Tensor, Tensor, Tensor]:
    """(instance, class, batch) terms of MLKD, each a scalar, without the KD weight (Jin et al. 2023; ``KD_ours``).

    With P_T = softmax(u/T) of either network, KD_T = T²·batch-mean KL(P_T^t ‖ P_T^s), the teacher's confidence
    c_i = max_k softmax(v^weak_i)_k and class mass m_k = Σ_i softmax(v^weak_i)_k (T = 1):

    * instance = f_c·Σ_T KD_T(weak) + Σ_{j < strong_terms} KD_{T_j}(strong) + Σ_{j ≥ strong_terms} KD_{T_j}(weak);
    * class    = f_m·Σ_T ‖P_Tᵗᵀ P_Tᵗ − P_Tˢᵀ P_Tˢ‖²_F / C   (C×C class correlations, weak view);
    * batch    = f_c·Σ_T ‖P_Tᵗ P_Tᵗᵀ − P_Tˢ P_Tˢᵀ‖²_F / N   (N×N sample correlations, weak view),

    with f_c = the fraction of samples whose c_i is at or below the batch median, f_m = the same over classes for m_k.
    The released code multiplies a scalar loss by these confidence masks and averages, so a mask scales its term by
    its fraction (≈ 1/2) rather than selecting samples; the strong-view sum runs its last two temperatures (2 and 6)
    on the weak view (``strong_terms=3`` of the five); the strong view has no class or batch term. Batch-level terms:
    no per-sample value.
    """
    ts, k = _check_temperatures(temperatures, strong_terms)
    z_weak, v_weak = check_logits(z_weak, v_weak)
    z_strong, v_strong = check_logits(z_strong, v_strong)
    check_pair(z_weak, z_strong, "student_logits (z_weak)", "student_logits (z_strong)")
    with torch.no_grad():
        pt1 = F.softmax(v_weak, dim=1)
        f_conf = _median_fraction(pt1.amax(dim=1))
        f_class = _median_fraction(pt1.sum(dim=0))
    weak_kd, class_gap, batch_gap = [], [], []
    strong_kd = []
    for j, t in enumerate(ts):
        log_qs, log_qt = F.log_softmax(z_weak / t, dim=1), F.log_softmax(v_weak / t, dim=1)
        kd = (t * t) * kl_rows(log_qt, log_qs).mean()
        ps, pt = log_qs.exp(), log_qt.exp()
        weak_kd.append(kd)
        class_gap.append(_gram_gap(ps, pt, 0))
        batch_gap.append(_gram_gap(ps, pt, 1))
        if j < k:
            strong = kl_rows(F.log_softmax(v_strong / t, dim=1), F.log_softmax(z_strong / t, dim=1)).mean()
            strong_kd.append((t * t) * strong)
        else:  # the released code's loss_kd_strong: these temperatures use the weak view's logits
            strong_kd.append(kd)
    instance = f_conf * torch.stack(weak_kd).sum() + torch.stack(strong_kd).sum()
    return instance, f_class * torch.stack(class_gap).sum(), f_conf * torch.stack(batch_gap).sum()


def mlkd_loss(
    z_weak: Tensor,
    v_weak: Tensor,
    z_strong: Tensor,
    v_strong: Tensor,
    temperatures: Sequence[float] = MLKD_TEMPERATURES,
    strong_terms: int = 3,
    reduction: str = "mean",
) -> Tensor:
    """instance + class + batch of :func:`mlkd_parts` (the distillation part of MLKD, without CE or KD weight).
    Only ``reduction="mean"``: the class and batch terms are computed across the batch."""
    check_reduction(reduction, per_sample=False)
    return sum(mlkd_parts(z_weak, v_weak, z_strong, v_strong, temperatures, strong_terms))
