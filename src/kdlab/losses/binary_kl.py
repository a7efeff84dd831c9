"""Binary (per-class sigmoid) KL losses of DHKD (Yang et al. 2024, "Dual-Head Knowledge Distillation")."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._validate import check_logits, check_positive, check_reduction, logit_names, reduce

_EPS = 1e-8
# log of the reference clamp bounds [1e-8, 1 − 1e-8]; log is monotone, so clamping log σ equals log of clamped σ.
# (In float32 the reference's 1 − 1e-8 rounds to 1.0; the log-space bound keeps the intended clamp.)
_LOG_LO = math.log(_EPS)
_LOG_HI = math.log1p(-_EPS)


def _clamped_log_sigmoid(x: Tensor) -> tuple[Tensor, Tensor]:
    # (log clamp(σ(x)), log clamp(1 − σ(x))) with 1 − σ(x) = σ(−x): exact, no cancellation.
    return (
        F.logsigmoid(x).clamp(_LOG_LO, _LOG_HI),
        F.logsigmoid(-x).clamp(_LOG_LO, _LOG_HI),
    )


@logit_names
def binary_kl_loss(z: Tensor, v: Tensor, temperature: float = 2.0, reduction: str = "mean") -> Tensor:
    """L = τ² · Σ_c KL_B(t_c ‖ s_c) / N, s = clamp(σ(z/τ), 1e-8, 1−1e-8), t likewise for v  (Yang et al. 2024).

    KL_B(a‖b) = a log(a/b) + (1−a) log((1−a)/(1−b)): one binary KL per class, classes treated independently.
    """
    tau = check_positive(temperature, "temperature")
    reduction = check_reduction(reduction)
    z, v = check_logits(z, v)
    log_s, log_1ms = _clamped_log_sigmoid(z / tau)
    log_t, log_1mt = _clamped_log_sigmoid(v / tau)
    kl = log_t.exp() * (log_t - log_s) + log_1mt.exp() * (log_1mt - log_1ms)
    return reduce((tau * tau) * kl.sum(dim=1), reduction)


@logit_names
def binary_kl_norm_loss(z: Tensor, v: Tensor, temperature: float = 2.0, reduction: str = "mean") -> Tensor:
    """L = τ² · Σ_c KL_B(0.5 ‖ d_c) / N, d = clamp(σ((z − v)/τ), 1e-8, 1−1e-8)  (Yang et al. 2024, BinaryKL-Norm).

    Unclamped this is τ² · Σ_c log cosh((z_c − v_c)/(2τ)) / N: zero iff z = v, and not shift-invariant.
    """
    tau = check_positive(temperature, "temperature")
    reduction = check_reduction(reduction)
    z, v = check_logits(z, v)
    log_d, log_1md = _clamped_log_sigmoid((z - v) / tau)
    # KL_B(0.5‖d) = 0.5·log(0.5/d) + 0.5·log(0.5/(1−d)) = −log 2 − (log d + log(1−d))/2
    kl = -math.log(2.0) - 0.5 * (log_d + log_1md)
    return reduce((tau * tau) * kl.sum(dim=1), reduction)
