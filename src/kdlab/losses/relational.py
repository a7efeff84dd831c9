"""Losses on relations between the samples of a batch, so student and teacher may differ in width: PKT (Passalis &
Tefas, ECCV 2018), RKD (Park et al., CVPR 2019) and SP (Tung & Mori, ICCV 2019). Each value depends on the whole
batch, so there is no per-sample form, and under data parallelism the methods compute them on the global batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._features import check_features, stage_pairs
from kdlab.losses._validate import check_nonnegative, check_positive

_ANY = (2, 3, 4)


def _rows(f: Tensor) -> Tensor:
    return f.flatten(1)


def _cosine_conditional(f: Tensor, eps: float) -> Tensor:
    # rows scaled by 1/(‖f_i‖ + eps) (NaN from inf/inf → 0, as the reference), cosine kernel (cos + 1)/2 in [0, 1],
    # each row normalised to sum to 1: P[i, j] = K(i, j) / Σ_k K(i, k), the diagonal (K = 1) included
    f = f / (f.norm(dim=1, keepdim=True) + eps)
    f = torch.where(torch.isnan(f), torch.zeros_like(f), f)
    k = (f @ f.T + 1.0) / 2.0
    return k / k.sum(dim=1, keepdim=True)


def pkt_loss(f_s: Tensor, f_t: Tensor, eps: float = 1e-7) -> Tensor:
    """L_PKT = mean over (i, j) of P^t_ij · log((P^t_ij + ε) / (P^s_ij + ε)), P = the row-normalised cosine kernel
    (cos(f_i, f_j) + 1)/2 of each network's features (flattened per sample; the pooled features in the method).

    As the authors' code (which mdistiller copies): the self-similarity is kept in each row's normalisation and the
    KL is averaged over all N² entries. 0 for N = 1."""
    eps = check_positive(eps, "eps")
    f_s, f_t = check_features(f_s, f_t, _ANY)
    p_s, p_t = _cosine_conditional(_rows(f_s), eps), _cosine_conditional(_rows(f_t), eps)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


def _pairwise_distance(e: Tensor, squared: bool, eps: float) -> Tensor:
    # ‖e_i‖² + ‖e_j‖² − 2 e_i·e_j, clamped at eps (then √ unless squared), the diagonal set to 0
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.T).clamp(min=eps)
    if not squared:
        d = d.sqrt()
    eye = torch.eye(len(e), dtype=torch.bool, device=e.device)
    return d.masked_fill(eye, 0.0)


def _mean_normalised(d: Tensor) -> Tensor:
    # d / (mean of its positive entries): the off-diagonal ones, which the clamp keeps > 0 (no boolean indexing)
    positive = (d > 0).to(d.dtype)
    return d / ((d * positive).sum() / positive.sum())


def _angles(e: Tensor) -> Tensor:
    # A[i, j, k] = ⟨unit(e_j − e_i), unit(e_k − e_i)⟩ over every triple (degenerate ones, with a zero vector, are 0)
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return diff @ diff.transpose(1, 2)


def rkd_loss(f_s: Tensor, f_t: Tensor, distance_weight: float = 25.0, angle_weight: float = 50.0,
             squared: bool = False, eps: float = 1e-12) -> Tensor:
    """L_RKD = w_d·L_D + w_a·L_A on features flattened per sample (the pooled features in the method):

    - L_D = mean over (i, j) of Huber(ψ^s_ij − ψ^t_ij), ψ_ij = d_ij / mean_{i≠j} d_ij, d_ij = ‖f_i − f_j‖₂
      (``squared``: ‖·‖², as an option of the reference), computed as √max(‖f_i‖² + ‖f_j‖² − 2 f_i·f_j, ε);
    - L_A = mean over (i, j, k) of Huber(cos∠^s_jik − cos∠^t_jik), the cosine of the angle at f_i between f_j and f_k;

    Huber = smooth L1 with δ = 1. Both potentials are invariant to rotating, translating and scaling a network's
    feature space. Needs N ≥ 2 (the distances are normalised by their mean)."""
    w_d, w_a = check_nonnegative(distance_weight, "distance_weight"), check_nonnegative(angle_weight, "angle_weight")
    eps = check_positive(eps, "eps")
    if not isinstance(squared, bool):
        raise ValueError(f"squared must be True or False; got {squared!r}")
    f_s, f_t = check_features(f_s, f_t, _ANY)
    if f_s.shape[0] < 2:
        raise ValueError(f"rkd_loss relates pairs of samples, so it needs a batch of at least 2; got {f_s.shape[0]}")
    s, t = _rows(f_s), _rows(f_t)
    loss_d = F.smooth_l1_loss(_mean_normalised(_pairwise_distance(s, squared, eps)),
                              _mean_normalised(_pairwise_distance(t, squared, eps)))
    loss_a = F.smooth_l1_loss(_angles(s).flatten(), _angles(t).flatten())
    return w_d * loss_d + w_a * loss_a


def _similarity(f: Tensor) -> Tensor:
    g = _rows(f)
    return F.normalize(g @ g.T, dim=1)


def sp_loss(g_s: Tensor | Sequence[Tensor], g_t: Tensor | Sequence[Tensor]) -> Tensor:
    """L_SP = Σ_stages ‖G^t − G^s‖²_F / N², G = the row-L2-normalised batch Gram matrix f fᵀ of one stage's features
    (flattened per sample). Invariant to rotating or scaling a network's feature space."""
    total = 0
    for f_s, f_t in stage_pairs(g_s, g_t):
        f_s, f_t = check_features(f_s, f_t, _ANY)
        n = f_s.shape[0]
        total = total + (_similarity(f_t) - _similarity(f_s)).pow(2).sum() / (n * n)
    return total
