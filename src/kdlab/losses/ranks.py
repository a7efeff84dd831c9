"""Hard (average) ranks and the differentiable soft rank used by the Spearman terms of R2KD and CMKD."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from kdlab.losses._validate import check_int, check_matrix, check_positive, compute_dtype

# Elements of one [rows, C, C] pairwise block. On CPU 2^20 float32 = 4 MiB stays in cache across the 3–4
# elementwise passes per block (measured several times faster than 64 MiB blocks on a 2-core CPU; C = 1000 runs one
# row at a time). On an accelerator, per-block launch overhead dominates instead, so blocks are larger (256 MiB; a
# default chosen for launch count, not measured here).
SOFT_RANK_CHUNK_ELEMENTS = 1 << 20
SOFT_RANK_CHUNK_ELEMENTS_ACCELERATOR = 1 << 26


def _hard_rank(u: Tensor) -> Tensor:
    # 1-based average ranks per row: a tie group occupying sorted positions first..last (0-based) gets the mean
    # rank (first + last)/2 + 1. One sort plus O(C) scans (cummax/cummin), no pairwise matrix.
    with torch.no_grad():
        u = u.detach()
        n, c = u.shape
        s, order = u.sort(dim=1)
        pos = torch.arange(c, device=u.device).expand(n, c)
        starts = torch.ones(n, c, dtype=torch.bool, device=u.device)
        starts[:, 1:] = s[:, 1:] != s[:, :-1]
        ends = torch.ones(n, c, dtype=torch.bool, device=u.device)
        ends[:, :-1] = starts[:, 1:]
        first = torch.where(starts, pos, 0).cummax(dim=1).values
        last = torch.where(ends, pos, c).flip(1).cummin(dim=1).values.flip(1)
        ranks_sorted = (first + last + 2).to(u.dtype) / 2
        return torch.empty_like(ranks_sorted).scatter_(1, order, ranks_sorted)


def hard_rank(u: Tensor) -> Tensor:
    """Per-row 1-based ranks in increasing order, ties averaged (the ranks of Spearman's ρ). Carries no gradient."""
    u = check_matrix(u, "u", min_cols=1)
    return _hard_rank(u.to(compute_dtype(u)))


def _pairwise(u: Tensor) -> Tensor:
    # x[i, k, m] = u[i, k] − u[i, m]  (u already divided by κ: one pass over the C² block fewer)
    return u.unsqueeze(2) - u.unsqueeze(1)


class _SoftRank(torch.autograd.Function):
    """r̃_k(u) = 1 + Σ_{m≠k} σ((u_k − u_m)/κ), chunked over rows; backward recomputes each chunk instead of storing
    the O(N·C²) sigmoid matrix, so memory stays at one chunk."""

    @staticmethod
    def forward(ctx, u: Tensor, kappa: float, rows: int) -> Tensor:  # type: ignore[override]
        out = torch.empty_like(u)
        scaled = u / kappa
        for start in range(0, u.shape[0], rows):
            x = _pairwise(scaled[start : start + rows])
            # the m = k term is σ(0) = 1/2, so 1 + Σ_{m≠k} = 1/2 + Σ_m
            out[start : start + rows] = x.sigmoid_().sum(dim=2).add_(0.5)
        ctx.save_for_backward(u)
        ctx.kappa, ctx.rows = kappa, rows
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (u,) = ctx.saved_tensors
        kappa, rows = ctx.kappa, ctx.rows
        grad = torch.empty_like(u)
        scaled = u / kappa
        for start in range(0, u.shape[0], rows):
            s = _pairwise(scaled[start : start + rows]).sigmoid_()
            d = s.sub_(s * s)  # σ' = σ(1 − σ), symmetric in (k, m)
            g = grad_out[start : start + rows]
            # ∂L/∂u_j = (1/κ) Σ_m σ'_jm (g_j − g_m)
            grad[start : start + rows] = (g * d.sum(dim=2) - torch.bmm(d, g.unsqueeze(2)).squeeze(2)) / kappa
        return grad, None, None


def _soft_rank(u: Tensor, kappa: float, max_chunk_elements: int | None = None) -> Tensor:
    if max_chunk_elements is None:
        cpu = u.device.type == "cpu"
        max_chunk_elements = SOFT_RANK_CHUNK_ELEMENTS if cpu else SOFT_RANK_CHUNK_ELEMENTS_ACCELERATOR
    rows = max(1, max_chunk_elements // (u.shape[1] * u.shape[1]))
    return _SoftRank.apply(u, kappa, rows)


def soft_rank(u: Tensor, kappa: float = 0.01, *, max_chunk_elements: int | None = None) -> Tensor:
    """Differentiable per-row rank r̃_k(u) = 1 + Σ_{m≠k} σ((u_k − u_m)/κ); → average ranks as κ → 0.

    O(C²) per row, evaluated ``max_chunk_elements // C²`` rows at a time (at least one), forward and backward,
    so memory stays one block (default 2^20 elements on CPU, 2^26 on an accelerator) even for C = 1000.
    κ is in the units of ``u`` (CMKD uses κ = 0.01 on probabilities).
    """
    u = check_matrix(u, "u", min_cols=1)
    kappa = check_positive(kappa, "kappa")
    if max_chunk_elements is not None:
        max_chunk_elements = check_int(max_chunk_elements, "max_chunk_elements", 1)
    return _soft_rank(u.to(compute_dtype(u)), kappa, max_chunk_elements)
