"""CRD's contrastive objective (Tian, Krishnan & Isola, "Contrastive Representation Distillation", ICLR 2020, §3.1),
as the NCE loss its released code optimises."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from kdlab.losses._validate import _real, check_int, check_matrix, check_reduction, compute_dtype, reduce


def crd_loss(pos_logits: Tensor, neg_logits: Tensor, num_data: int, log_z: float | Tensor,
             eps: float = 1e-7, reduction: str = "mean") -> Tensor:
    """NCE loss of one anchor view against K negatives drawn uniformly from ``num_data`` samples:

        P = exp(logit − log Z),   c = K/num_data,
        L = −(1/N) Σ_n [ log(P_n⁺ / (P_n⁺ + c + ε)) + Σ_k log(c / (P_nk⁻ + c + ε)) ]

    (the released code's ``ContrastLoss``: the posterior h = P/(P + c) that a pair comes from the data rather than
    from the noise distribution 1/num_data sampled K times, ε only in the denominators).
    ``pos_logits`` [N]: the anchor's score with its positive (f·g/τ of unit embeddings); ``neg_logits`` [N, K]: with
    the negatives; ``log_z``: the log of the normalising constant Z (the method fixes it on its first batch). CRD sums
    this loss over both anchors (student and teacher embeddings). ``reduction``: "mean", "sum" or "none" ([N]).
    """
    reduction = check_reduction(reduction)
    n_data = check_int(num_data, "num_data", 1)
    eps = _real(eps, "eps")
    if eps < 0:
        raise ValueError(f"eps must be >= 0; got {eps}")
    neg = check_matrix(neg_logits, "neg_logits", min_cols=1)
    if not isinstance(pos_logits, Tensor) or not pos_logits.is_floating_point() or pos_logits.shape != neg.shape[:1]:
        raise ValueError(f"pos_logits must be a floating tensor [N] = [{neg.shape[0]}] (one positive per row of "
                         f"neg_logits); got {getattr(pos_logits, 'shape', type(pos_logits).__name__)}")
    if pos_logits.device != neg.device:
        raise ValueError(f"pos_logits is on {pos_logits.device} but neg_logits is on {neg.device}; use one device")
    dtype = compute_dtype(pos_logits, neg)
    log_z = torch.as_tensor(log_z, dtype=dtype, device=neg.device)
    pos, neg = pos_logits.to(dtype) - log_z, neg.to(dtype) - log_z  # log P
    k = neg.shape[1]
    log_noise = math.log(k / n_data)  # log(K·P_n)
    log_denominator = math.log(k / n_data + eps)
    log_h_pos = pos - torch.logaddexp(pos, pos.new_tensor(log_denominator))
    log_not_h_neg = log_noise - torch.logaddexp(neg, neg.new_tensor(log_denominator))
    return reduce(-(log_h_pos + log_not_h_neg.sum(1)), reduction)
