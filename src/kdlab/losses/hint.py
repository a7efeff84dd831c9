"""Losses that regress the teacher's feature map from the student's: FitNets' hint (Romero et al., ICLR 2015) and
VID's variational bound (Ahn et al., CVPR 2019). The regressors themselves are trainable modules owned by the methods
(kdlab.methods.fitnet, kdlab.methods.vid); these functions score their output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._features import check_features
from kdlab.losses._validate import check_positive

_MAPS = (2, 3, 4)


def fitnet_loss(hint: Tensor, f_t: Tensor) -> Tensor:
    """L_hint = mean over all elements of (r(f_s) − f_t)², the regressed student map ``hint`` = r(f_s) against the
    teacher's map ``f_t`` (same shape). The paper writes ½‖·‖² summed; mdistiller and the CRD benchmark take the
    element mean (``F.mse_loss``), which is what the shipped weight of 100 is calibrated for."""
    hint, f_t = check_features(hint, f_t, _MAPS, "hint maps", same_shape=True)
    return (hint - f_t).pow(2).mean()


def vid_loss(pred_mean: Tensor, f_t: Tensor, log_scale: Tensor, eps: float = 1e-5) -> Tensor:
    """VID's negative log-likelihood of the teacher's map under a Gaussian with the regressed mean μ = ``pred_mean``
    and a learned per-channel variance σ²_c = softplus(α_c) + ε (α = ``log_scale``, [C]):

    L = mean over (n, c, positions) of ½·((μ − t)²/σ²_c + log σ²_c)

    (the paper's −log q(t | s) up to a constant, as a mean; its minimum over σ²_c is the channel's mean squared
    error, floored at ε). Gradients flow to ``pred_mean`` and ``log_scale``; the teacher is detached."""
    eps = check_positive(eps, "eps")
    pred_mean, f_t = check_features(pred_mean, f_t, _MAPS, "maps", same_shape=True)
    if not isinstance(log_scale, Tensor) or log_scale.shape != (f_t.shape[1],):
        raise ValueError(f"log_scale must be a tensor of shape [C] = [{f_t.shape[1]}] (one per teacher channel); got "
                         f"{tuple(log_scale.shape) if isinstance(log_scale, Tensor) else type(log_scale).__name__}")
    var = (F.softplus(log_scale.to(pred_mean.dtype)) + eps).view(1, -1, *([1] * (f_t.dim() - 2)))
    return (0.5 * ((pred_mean - f_t).pow(2) / var + torch.log(var))).mean()
