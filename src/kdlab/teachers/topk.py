"""FKD's top-k teacher outputs with the remaining mass, and their reconstruction
(Shen & Xing, ECCV 2022).

A teacher's distribution ``p = softmax(v)`` over C classes is kept as its k largest log-probabilities
``log p_j`` (j ∈ K, float16), their class indices, and the log of the mass left over, ``log R = log Σ_{j∉K} p_j``
(float32, so a tiny R is not lost to ``1 − Σ_K p_j``). The reconstruction spreads R evenly over the other C − k
classes:

    p̂_j = p_j (j ∈ K),    p̂_j = R / (C − k) (j ∉ K),

returned as logits ``log p̂`` (softmax-invariant, so any method takes them as teacher logits). It keeps the
top-k probabilities (to float16 rounding), the ranking of the top k, the argmax, and the total mass of the tail; it
loses how the tail is shared. The cost is ``KL(p ‖ p̂) = R · KL(p_tail/R ‖ uniform) ≤ R · log(C − k)`` at T = 1; at a
temperature T ≠ 1, ``softmax(log p̂ / T)`` is not ``softmax(v / T)`` restricted the same way, so the error grows
with T (measured in docs/performance.md, "Replayed crops with stored teacher outputs").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdlab._checks import check_int

__all__ = ["TAIL_FLOOR", "topk_compress", "topk_expand"]

#: log-mass used for an empty tail (R = 0): finite, so 0·log 0 stays 0 in the losses instead of NaN.
TAIL_FLOOR = -1.0e4


def topk_compress(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log_p [N, k] float16, index [N, k] int16|int32, log_rest [N] float32)`` of logits ``[N, C]``, top-k in
    decreasing order. Computed in float32 (or float64 for float64 input)."""
    c = logits.shape[1]
    k = check_int(k, "k", 1, c - 1, note=" (at least one class must be left for the remaining mass)")
    log_p = F.log_softmax(logits.float() if logits.dtype != torch.float64 else logits, dim=1)
    top, index = log_p.topk(k, dim=1)
    tail = log_p.scatter(1, index, float("-inf"))
    log_rest = torch.logsumexp(tail, dim=1).clamp_min(TAIL_FLOOR)
    index_dtype = torch.int16 if c <= torch.iinfo(torch.int16).max else torch.int32
    return top.to(torch.float16), index.to(index_dtype), log_rest.float()


def topk_expand(log_p: torch.Tensor, index: torch.Tensor, log_rest: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits ``[N, num_classes]`` float32 of the reconstruction ``p̂`` (module docstring)."""
    k = log_p.shape[1]
    tail = log_rest.float().clamp_min(TAIL_FLOOR) - math.log(num_classes - k)
    out = tail.unsqueeze(1).expand(-1, num_classes).clone()
    return out.scatter_(1, index.long(), log_p.float())
