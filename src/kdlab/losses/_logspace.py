"""Log-space building blocks: per-row KL and the exact split of a KL over a class partition.

Everything works on log-probabilities (``log_softmax``/``logsumexp``), never on the log of a softmax, so logits of
magnitude 100 stay finite in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor


def kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Per-row KL(p ‖ q) = Σ_c p_c (log p_c − log q_c) from finite log-probabilities, shape [N].

    The loss kernel: lean, for the training hot path. Reports use ``kdlab.eval.metrics.kl_per_example``, which also
    accepts −inf logits (a zero-mass guard that costs ~40% more) and clamps rounding below 0.
    """
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def masked_logsumexp(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row ``log Σ_{c ∈ mask} exp(x_c)`` and whether the row's set is non-empty.

    For a row with an empty set the value returned is the logsumexp of the whole row: a finite placeholder that
    callers discard with ``torch.where(nonempty, ...)``. Keeping it finite (instead of −inf) keeps the discarded
    branch free of NaN, so its zero gradient stays zero.
    """
    nonempty = mask.any(dim=1)
    keep = mask | ~nonempty.unsqueeze(1)
    return torch.logsumexp(x.masked_fill(~keep, float("-inf")), dim=1), nonempty


def _restricted_kl(log_p: Tensor, log_q: Tensor, mask: Tensor, log_p_m: Tensor, log_q_m: Tensor) -> Tensor:
    # Renormalised restriction p̂_c = p_c / p_M for c ∈ M: log p̂ = log p − log p_M. Outside M that difference can
    # be large and positive (exp overflows), so it is replaced by 0 *before* the exp: the term there is
    # e^0·(0 − 0) = 0 and neither the value nor the gradient ever sees inf·0.
    zero = torch.zeros_like(log_p)
    log_ph = torch.where(mask, log_p - log_p_m.unsqueeze(1), zero)
    log_qh = torch.where(mask, log_q - log_q_m.unsqueeze(1), zero)
    return (log_ph.exp() * (log_ph - log_qh)).sum(dim=1)


def split_kl(log_p: Tensor, log_q: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Exact split KL(p‖q) = KL(b^p‖b^q) + p_S·KL(p̂_S‖q̂_S) + p_W·KL(p̂_W‖q̂_W) for S = mask, W = ~mask.

    Returns the per-row (binary, strong, weak) KL terms, each [N]. b = [p_S, p_W] is the binary mass vector and p̂_S,
    p̂_W the renormalised restrictions (DKD, Zhao et al. 2022; CAKD, Zhang et al. 2024). Set masses come from a
    logsumexp over the set, which equals the reference ``log(Σ p)`` exactly and needs no clamp. An empty set
    contributes 0 to every term.
    """
    weak = ~mask
    lp_s, has_s = masked_logsumexp(log_p, mask)
    lp_w, has_w = masked_logsumexp(log_p, weak)
    lq_s, _ = masked_logsumexp(log_q, mask)
    lq_w, _ = masked_logsumexp(log_q, weak)
    # With one set empty both binary vectors are [1, 0] and BCD is exactly 0 (not a rounding residue of log 1).
    binary = lp_s.exp() * (lp_s - lq_s) + lp_w.exp() * (lp_w - lq_w)
    binary = torch.where(has_s & has_w, binary, torch.zeros_like(binary))
    strong = _restricted_kl(log_p, log_q, mask, lp_s, lq_s)
    weak_kl = _restricted_kl(log_p, log_q, weak, lp_w, lq_w)
    return binary, strong, weak_kl
