"""Correlation-based logit losses: DIST (Huang et al. 2022), R2KD's value and rank distances (Kim et al.),
and CMKD (Niu et al. 2024). The cosine/Pearson helpers are shared by all of them."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._validate import (
    check_logits,
    check_nonnegative,
    check_pair,
    check_positive,
    check_reduction,
    logit_names,
    reduce,
)
from kdlab.losses.ranks import _hard_rank, _soft_rank
from kdlab.losses.standardize import _standardize

_EPS = 1e-8


# ---------------------------------------------------------------------------------------------------------------------
# row-wise similarity helpers (no detaching: they are building blocks)


def _cosine_rows(a: Tensor, b: Tensor, eps: float, absolute: bool = False) -> Tensor:
    # cos = ⟨a, b⟩ / (‖a‖‖b‖ + eps): eps in the denominator, as in the DIST and R2KD reference code
    dot = (a * b).sum(dim=1)
    if absolute:
        dot = dot.abs()
    return dot / (a.norm(dim=1) * b.norm(dim=1) + eps)


def _pearson_rows(a: Tensor, b: Tensor, eps: float = _EPS) -> Tensor:
    return _cosine_rows(a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True), eps)


def cosine_similarity_rows(a: Tensor, b: Tensor, eps: float = _EPS) -> Tensor:
    """Per-row ⟨a_i, b_i⟩ / (‖a_i‖‖b_i‖ + eps), shape [N]."""
    eps = check_positive(eps, "eps")
    a, b = check_pair(a, b, "a", "b", min_cols=1)
    return _cosine_rows(a, b, eps)


def pearson_rows(a: Tensor, b: Tensor, eps: float = _EPS) -> Tensor:
    """Per-row Pearson ρ(a_i, b_i) = cos(a_i − mean a_i, b_i − mean b_i), shape [N] (DIST, Huang et al. 2022)."""
    eps = check_positive(eps, "eps")
    a, b = check_pair(a, b, "a", "b", min_cols=1)
    return _pearson_rows(a, b, eps)


def pearson_distance_rows(a: Tensor, b: Tensor, eps: float = _EPS) -> Tensor:
    """Per-row 1 − ρ(a_i, b_i), shape [N]. Pass transposed [C, N] matrices for the per-class (intra) version."""
    return 1 - pearson_rows(a, b, eps)


def abs_cosine_distance_rows(a: Tensor, b: Tensor, eps: float = _EPS) -> Tensor:
    """Per-row uncentred distance 1 − |⟨a_i, b_i⟩| / (‖a_i‖‖b_i‖ + eps), shape [N] (R2KD value distance)."""
    eps = check_positive(eps, "eps")
    a, b = check_pair(a, b, "a", "b", min_cols=1)
    return 1 - _cosine_rows(a, b, eps, absolute=True)


# ---------------------------------------------------------------------------------------------------------------------
# losses


@logit_names
def dist_loss(
    z: Tensor,
    v: Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 4.0,
    reduction: str = "mean",
) -> Tensor:
    """L_DIST = τ²·(β·L_inter + γ·L_intra)  (Huang, You, Wang, Qian & Xu, NeurIPS 2022).

    Y = softmax(u/τ). L_inter = 1 − mean_i ρ(Y^s_i, Y^t_i) over rows; L_intra = 1 − mean_c ρ(Y^s_{:,c}, Y^t_{:,c})
    over classes (across the batch, so it depends on N and has no per-sample value: only reduction="mean").
    """
    tau = check_positive(temperature, "temperature")
    beta = check_nonnegative(beta, "beta")
    gamma = check_nonnegative(gamma, "gamma")
    check_reduction(reduction, per_sample=False)
    z, v = check_logits(z, v)
    ys, yt = F.softmax(z / tau, dim=1), F.softmax(v / tau, dim=1)
    inter = (1 - _pearson_rows(ys, yt)).mean()
    intra = (1 - _pearson_rows(ys.t(), yt.t())).mean()
    return (tau * tau) * (beta * inter + gamma * intra)


@logit_names
def r2kd_value_loss(z: Tensor, v: Tensor, temperature: float = 4.0, reduction: str = "mean") -> Tensor:
    """L = T²·(mean_i d(P^s_i, P^t_i) + mean_c d(P^s_{:,c}, P^t_{:,c})), d(a,b) = 1 − |⟨a,b⟩|/(‖a‖‖b‖ + 1e-8).

    R2KD's value distance (Kim et al., uncentred "Eisen" cosine) on P = softmax(u/T). Pass the mixed teacher
    logits ṽ = λv + (1−λ)v_P as ``v``. The per-class term spans the batch: only reduction="mean".
    """
    t = check_positive(temperature, "temperature")
    check_reduction(reduction, per_sample=False)
    z, v = check_logits(z, v)
    ps, pt = F.softmax(z / t, dim=1), F.softmax(v / t, dim=1)
    inter = (1 - _cosine_rows(ps, pt, _EPS, absolute=True)).mean()
    intra = (1 - _cosine_rows(ps.t(), pt.t(), _EPS, absolute=True)).mean()
    return (t * t) * (inter + intra)


@logit_names
def spearman_loss(
    z: Tensor,
    v: Tensor,
    temperature: float = 4.0,
    soft: bool = False,
    kappa: float = 0.01,
    reduction: str = "mean",
) -> Tensor:
    """L = 1 − mean_i ρ_S(P^s_i, P^t_i): Spearman ρ = Pearson ρ of the rows' ranks (R2KD rank distance; CMKD).

    Hard ranks (default, as R2KD's reference) are tie-averaged and carry no gradient. Ranks of softmax(u/T) equal
    ranks of u, so hard ranks are taken on the logits (exact: no ties created by probability underflow) and
    ``temperature`` only matters for ``soft=True``, where the student's rank is the differentiable
    r̃_k(P^s) = 1 + Σ_{m≠k} σ((P^s_k − P^s_m)/κ) on probabilities and the teacher's stays hard. No T² factor.
    """
    tau = check_positive(temperature, "temperature")
    kappa = check_positive(kappa, "kappa")
    if not isinstance(soft, bool):
        raise ValueError(f"soft must be True or False; got {soft!r}")
    reduction = check_reduction(reduction)
    z, v = check_logits(z, v)
    rank_t = _hard_rank(v)
    rank_s = _soft_rank(F.softmax(z / tau, dim=1), kappa) if soft else _hard_rank(z)
    return reduce(1 - _pearson_rows(rank_s, rank_t), reduction)


@logit_names
def cmkd_loss(
    z: Tensor,
    v: Tensor,
    temperature: float = 4.0,
    kappa: float = 0.01,
    logit_standardization: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """L = 2·τ²·(L_corr + L_intra), everything of CMKD (Niu et al. 2024) except CE — default formulation
    (docs/reference/methods.md §7).

    Y = softmax(u/τ) (after :func:`logit_standardize` if ``logit_standardization``). Per sample:
    d_P,i = 1 − ρ(Y^s_i, Y^t_i), d_S,i = 1 − ρ(r̃(Y^s_i), rank(Y^t_i)) with the soft rank at κ,
    w_i = H(Y^t_i)/log C (teacher entropy, no gradient). L_corr = mean_i[(1 − w_i)·d_P,i + w_i·d_S,i];
    L_intra = 1 − mean_c ρ(Y^s_{:,c}, Y^t_{:,c}). Spans the batch: only reduction="mean".
    """
    tau = check_positive(temperature, "temperature")
    kappa = check_positive(kappa, "kappa")
    if not isinstance(logit_standardization, bool):
        raise ValueError(f"logit_standardization must be True or False; got {logit_standardization!r}")
    check_reduction(reduction, per_sample=False)
    z, v = check_logits(z, v)
    if logit_standardization:
        z, v = _standardize(z, 1e-7), _standardize(v, 1e-7)
    ys = F.softmax(z / tau, dim=1)
    log_yt = F.log_softmax(v / tau, dim=1)
    yt = log_yt.exp()
    # teacher entropy weight in [0, 1]: confident teachers lean on Pearson, uncertain ones on the rank term
    weight = -(yt * log_yt).sum(dim=1) / math.log(z.shape[1])
    d_pearson = 1 - _pearson_rows(ys, yt)
    # rank(Y^t) = rank(v): the softmax (and standardisation) are strictly increasing per row
    d_spearman = 1 - _pearson_rows(_soft_rank(ys, kappa), _hard_rank(v))
    corr = ((1 - weight) * d_pearson + weight * d_spearman).mean()
    intra = (1 - _pearson_rows(ys.t(), yt.t())).mean()
    return (2 * tau * tau) * (corr + intra)
