"""KDSVD: self-supervised knowledge distillation using singular value decomposition (Lee, Kim & Song, ECCV 2018).

Each stage's map is read per sample as a matrix X and decomposed, X = U Σ Vᵀ; the teacher keeps its top k right
singular vectors, the student its top k + 3, of which the one most aligned with each teacher vector (largest |cos|,
sign flipped to agree) stands for it. Both are scaled by the teacher's normalised singular values; what is distilled
is how consecutive stages relate: the radial-basis kernel exp(−(v_a − v_b)²/8) between every pair of vector entries
of stage i and stage i − 1, matched by squared error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._features import check_features, pool_to_match, stage_pairs
from kdlab.losses._validate import check_int

LAYOUTS = ("mdistiller", "paper")


def _finite(x: Tensor) -> Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def _matrix(f: Tensor, layout: str) -> Tensor:
    # "paper": rows = positions, columns = channels ([N, HW, C]: V spans channels, the authors' TF code and the CRD
    # benchmark); "mdistiller": [N, C·H, W] (a 1-D map [N, C, L] as is), so V spans the last spatial axis
    return f.flatten(2).transpose(1, 2) if layout == "paper" else f.reshape(f.shape[0], -1, f.shape[-1])


class _TopSingular(torch.autograd.Function):
    """The top-n singular values [B, n] and right singular vectors [B, d, n] of X [B, m, d] (torch.linalg.svd's, so
    its signs), differentiated through those n alone.

    torch's SVD backward couples every pair of singular values, so two equal ones among those the loss never reads
    (zeros of a rank-deficient map, say) make the whole gradient NaN. Here, with λ = σ², the derivative of a kept
    v_i is Σ_{j≠i} v_j v_jᵀ dA v_i / (λ_i − λ_j) over the other singular vectors plus (I − V Vᵀ) dA v_i / λ_i over
    the null space, for A = XᵀX, and dσ_i = u_iᵀ dX v_i: the same derivative wherever it is defined. Where it is not
    (a kept λ_i equal to another, or 0) that term is taken as 0, never as ±inf or NaN."""

    @staticmethod
    def forward(ctx, x: Tensor, n: int) -> tuple[Tensor, Tensor]:
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        v = vh.transpose(-2, -1)
        ctx.save_for_backward(x, u[..., :n], s, v)
        ctx.n = min(n, s.shape[-1])
        return s[..., :n], v[..., :n]

    @staticmethod
    def backward(ctx, g_s: Tensor, g_v: Tensor) -> tuple[Tensor, None]:
        x, u_n, s, v = ctx.saved_tensors
        n, lam = ctx.n, s.pow(2)
        v_n, lam_n = v[..., :n], lam[..., :n]

        def safe_inverse(d: Tensor) -> Tensor:
            inv = 1.0 / d
            return torch.where(torch.isfinite(inv), inv, torch.zeros_like(inv))

        coef = safe_inverse(lam_n.unsqueeze(-2) - lam.unsqueeze(-1))  # [B, r, n]: 1/(λ_i − λ_j), 0 for j = i
        proj = v.transpose(-2, -1) @ g_v  # [B, r, n]: v_jᵀ g_i
        w = v @ (coef * proj) + (g_v - v @ proj) * safe_inverse(lam_n).unsqueeze(-2)
        g = w @ v_n.transpose(-2, -1)
        grad = x @ (g + g.transpose(-2, -1)) + (u_n * g_s.unsqueeze(-2)) @ v_n.transpose(-2, -1)
        return grad, None


def _top_singular(f: Tensor, n: int, layout: str) -> tuple[Tensor, Tensor]:
    """(σ, V): the top-n singular values, unit-normalised as a vector [N, n], and right singular vectors [N, d, n]."""
    s, v = _TopSingular.apply(_matrix(f, layout), n)
    s, v = _finite(s), _finite(v)
    return F.normalize(s, dim=1), F.normalize(v, dim=1)


def _align(v_s: Tensor, v_t: Tensor) -> Tensor:
    # for each teacher vector, the student vector of largest |cos| with the sign of that cosine (ties: their sum)
    cosine = v_s.transpose(1, 2) @ v_t
    best = cosine.abs().amax(dim=1, keepdim=True)
    pick = torch.where(cosine.abs() == best, torch.sign(cosine), torch.zeros_like(cosine))
    return v_s @ pick


def _rbf(v: Tensor, v_prev: Tensor) -> Tensor:
    return torch.exp(-(v.unsqueeze(2) - v_prev.unsqueeze(1)).pow(2) / 8)


def kdsvd_loss(g_s: Sequence[Tensor], g_t: Sequence[Tensor], k: int = 1,
               layout: Literal["mdistiller", "paper"] = "mdistiller") -> Tensor:
    """L = (1/N) Σ_{i ≥ 1} Σ (RBF(V^s_i, V^s_{i−1}) − RBF(V^t_i, V^t_{i−1}))², V_i the stage-i vectors of the module
    docstring scaled by the teacher's normalised singular values, RBF(a, b)[n, p, q, j] = exp(−(a[n,p,j] − b[n,q,j])²/8).

    ``g_s``, ``g_t``: at least two maps each, in stage order. ``layout``: which matrix is decomposed — "mdistiller"
    (its port: [N, C·H, W], student and teacher maps of a stage must agree in width; maps of different sizes are
    pooled to match, where mdistiller would fail) or "paper" ([N, HW, C], the authors' code: channel counts must
    agree). Non-finite singular values or vectors and non-finite loss entries are set to 0, as in the reference."""
    k = check_int(k, "k", 1)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")
    pairs = stage_pairs(g_s, g_t)
    if len(pairs) < 2:
        raise ValueError("kdsvd_loss relates consecutive stages: give at least 2 stages of each network")
    total, previous = 0, None
    for f_s, f_t in pairs:
        f_s, f_t = check_features(f_s, f_t, (3, 4), "maps")
        if layout == "mdistiller":
            f_s, f_t = pool_to_match(f_s, f_t)
        elif f_s.shape[1] != f_t.shape[1]:
            raise ValueError(f"kdsvd_loss with layout='paper' aligns singular vectors over channels, so student and "
                             f"teacher maps need the same channel count; got {f_s.shape[1]} and {f_t.shape[1]}")
        s_t, v_t = _top_singular(f_t, k, layout)
        _, v_s = _top_singular(f_s, k + 3, layout)
        scale = s_t.unsqueeze(1)
        v_s, v_t = _align(v_s, v_t) * scale, v_t * scale
        if previous is not None:
            err = (_rbf(v_s, previous[0]) - _rbf(v_t, previous[1])).pow(2)
            total = total + _finite(err).sum()
        previous = (v_s, v_t)
    return total / pairs[0][0].shape[0]
