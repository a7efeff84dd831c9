"""Losses on per-map statistics, where student and teacher may differ in channels: attention transfer (Zagoruyko &
Komodakis, ICLR 2017) and neuron selectivity transfer (Huang & Wang, 2017). Maps of different spatial sizes are
average-pooled to the smaller one first (:func:`~kdlab.losses._features.pool_to_match`, mdistiller's rule)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._features import check_features, pool_to_match, stage_pairs
from kdlab.losses._validate import check_positive

_MAPS = (3, 4)


def attention_map(f: Tensor, p: float = 2.0) -> Tensor:
    """Q(f) = vec(mean_c |f_c|^p) / ‖vec(mean_c |f_c|^p)‖₂, shape [N, positions]: the spatial attention map of AT.
    (The paper sums over channels; the normalisation makes sum and mean the same map.)"""
    q = f.abs().pow(p).mean(dim=1).flatten(1)
    return F.normalize(q, dim=1)


def at_loss(g_s: Tensor | Sequence[Tensor], g_t: Tensor | Sequence[Tensor], p: float = 2.0) -> Tensor:
    """L_AT = Σ_stages mean over (n, positions) of (Q(f_s) − Q(f_t))², with Q = :func:`attention_map`.

    ``g_s``, ``g_t``: one map each or sequences of maps in stage order ([N, C, H, W] or [N, C, L]; channels may
    differ). As the authors' code and mdistiller: squared differences averaged over samples and positions, summed
    over stages, no β/2 inside (the method weighs it). mdistiller raises f to the p-th power without |·|; for even p
    or non-negative (post-ReLU) maps that is the same map."""
    p = check_positive(p, "p")
    total = 0
    for f_s, f_t in stage_pairs(g_s, g_t):
        f_s, f_t = pool_to_match(*check_features(f_s, f_t, _MAPS, "maps"))
        total = total + (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()
    return total


def _selectivity(f: Tensor) -> Tensor:
    # each channel's map over positions, unit-normalised: one "neuron selectivity" sample per channel
    return F.normalize(f.flatten(2), dim=2)


def _poly2(a: Tensor, b: Tensor) -> Tensor:
    # mean over samples and channel pairs of k(a_i, b_j) = (a_iᵀ b_j)², the degree-2 polynomial kernel with c = 0
    return (a @ b.transpose(1, 2)).pow(2).mean()


def nst_loss(g_s: Tensor | Sequence[Tensor], g_t: Tensor | Sequence[Tensor]) -> Tensor:
    """L_NST = Σ_stages MMD²(S, T) with the polynomial kernel k(x, y) = (xᵀy)² (d = 2, c = 0), where the samples of
    S and T are the student's and the teacher's channels, each one map over positions normalised to unit length:

    MMD² = mean_{i,j} k(t_i, t_j) + mean_{i,j} k(s_i, s_j) − 2·mean_{i,j} k(s_i, t_j), averaged over the batch.

    Channel counts may differ; spatial sizes are pooled to match. ≥ 0 (the kernel is positive semi-definite)."""
    total = 0
    for f_s, f_t in stage_pairs(g_s, g_t):
        f_s, f_t = pool_to_match(*check_features(f_s, f_t, _MAPS, "maps"))
        s, t = _selectivity(f_s), _selectivity(f_t)
        total = total + _poly2(t, t) + _poly2(s, s) - 2 * _poly2(s, t)
    return total
