"""Curriculum temperature (Li, Li, Yang, Zhao, Song, Luo, Li & Yang, AAAI 2023, "Curriculum Temperature for Knowledge
Distillation"): a learnable temperature trained to *maximise* the distillation loss through gradient reversal, the
reversal strength λ rising on a cosine curriculum.

Pure functions: the gradient-reversal layer, the curriculum λ(epoch), the temperature map τ = t_start + t_end·σ(θ),
and the KD / DKD losses at a tensor temperature (differentiable in τ).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._logspace import kl_rows
from kdlab.losses._validate import (
    _real,
    check_logits,
    check_nonnegative,
    check_reduction,
    check_target,
    logit_names,
    reduce,
    validation_enabled,
)
from kdlab.losses.dkd import _dkd_parts

CTKD_BASES = ("kd", "dkd")


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by −λ (Ganin & Lempitsky, ICML 2015)."""

    @staticmethod
    def forward(ctx, x: Tensor, lam: float) -> Tensor:
        ctx.lam = lam
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        return -ctx.lam * grad, None


def reverse_gradient(x: Tensor, lam: float) -> Tensor:
    """``x`` unchanged; its gradient multiplied by −λ on the way back (the gradient-reversal layer)."""
    lam = _real(lam, "lam")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating torch.Tensor; got {type(x).__name__}")
    return _ReverseGradient.apply(x, lam)


def curriculum_lambda(epoch: int, loops: int, lam_max: float = 1.0, lam_min: float = 0.0) -> float:
    """λ(e) = λ_min + (λ_max − λ_min)·(1 − cos(π·min(e, L)/L))/2, e clamped to [0, L] (CTKD's cosine curriculum).

    The released code's ``CosineDecay(max_value=0, min_value=-1, num_loops=L)`` returns −λ(e) for λ_max = 1,
    λ_min = 0, and its reversal layer multiplies the gradient by that value; ``epoch`` is 1-based there and here.
    """
    if isinstance(loops, bool) or not isinstance(loops, int) or loops < 1:
        raise ValueError(f"loops must be an integer >= 1 (epochs over which λ rises); got {loops!r}")
    lam_max, lam_min = _real(lam_max, "lam_max"), _real(lam_min, "lam_min")
    e = min(max(int(epoch), 0), loops)
    return lam_min + (lam_max - lam_min) * (1.0 - math.cos(math.pi * e / loops)) / 2.0


def curriculum_temperature(theta: Tensor, lam: float, t_start: float = 1.0, t_end: float = 20.0) -> Tensor:
    """τ = t_start + t_end·σ(GRL_λ(θ)): the temperature module's output θ (one global value or one per sample) mapped
    into (t_start, t_start + t_end), its gradient reversed and scaled by λ (the released ``train_distill``)."""
    t_start = check_nonnegative(t_start, "t_start")
    t_end = check_nonnegative(t_end, "t_end")
    if t_start + t_end <= 0:
        raise ValueError("t_start + t_end must be > 0 (the temperature lies in (t_start, t_start + t_end))")
    return t_start + t_end * torch.sigmoid(reverse_gradient(theta, lam))


def _temperature_column(temperature: object, n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A tensor temperature as [1, 1] or [N, 1] in the compute dtype; must be positive (checked with validation on)."""
    if not isinstance(temperature, Tensor) or not temperature.is_floating_point():
        got = type(temperature).__name__ if not isinstance(temperature, Tensor) else str(temperature.dtype)
        raise ValueError(f"temperature must be a floating torch.Tensor of shape [], [1] or [N] (CTKD's learnable "
                         f"temperature); got {got}. For a fixed float temperature use kd_loss / dkd_loss")
    if temperature.numel() not in (1, n) or temperature.dim() > 1:
        raise ValueError(f"temperature must have shape [], [1] or [N] = [{n}]; got {tuple(temperature.shape)}")
    if temperature.device != device:
        raise ValueError(f"temperature is on {temperature.device} but the logits are on {device}")
    if validation_enabled() and not bool((temperature > 0).all() & torch.isfinite(temperature).all()):
        raise ValueError("temperature must be finite and > 0 everywhere")
    return temperature.to(dtype).reshape(-1, 1)


@logit_names
def ctkd_loss(
    z: Tensor,
    v: Tensor,
    temperature: Tensor,
    target: Tensor | None = None,
    base: str = "kd",
    alpha: float = 1.0,
    beta: float = 8.0,
    teacher_eps: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """The distillation term of CTKD at the learnable temperature τ (a tensor, [] / [1] global or [N] per sample;
    the gradient reaches τ, which the reversal layer then turns into ascent).

    ``base="kd"``: τ²·batch-mean KL(p̃ ‖ softmax(z/τ)), p̃ = softmax(v/τ) + ε (Σ_c p̃_c (log p̃_c − log q_c); ε =
    ``teacher_eps``: 0 for the global temperature, 1e-7 in the released instance-wise loss). ``base="dkd"``:
    τ²·(α·TCKD + β·NCKD) with ``target`` (ε must be 0). The temperature scales the loss per sample when it is [N].
    """
    if base not in CTKD_BASES:
        raise ValueError(f"base must be one of {CTKD_BASES}; got {base!r}")
    eps = check_nonnegative(teacher_eps, "teacher_eps")
    reduction = check_reduction(reduction)
    z, v = check_logits(z, v)
    t = _temperature_column(temperature, z.shape[0], z.dtype, z.device)
    if base == "kd":
        log_p = F.log_softmax(v / t, dim=1)
        log_q = F.log_softmax(z / t, dim=1)
        if eps == 0.0:
            per_sample = kl_rows(log_p, log_q)
        else:
            p = log_p.exp() + eps
            per_sample = (p * (torch.log(p) - log_q)).sum(dim=1)
    else:
        if eps != 0.0:
            raise ValueError("teacher_eps applies to base='kd' only (the released DKD loss has none)")
        if target is None:
            raise ValueError("base='dkd' needs target (integer labels [N])")
        target = check_target(target, z.shape[0], z.shape[1], z.device)
        alpha = check_nonnegative(alpha, "alpha")
        beta = check_nonnegative(beta, "beta")
        tckd, nckd = _dkd_parts(z, v, target, t)
        per_sample = alpha * tckd + beta * nckd
    return reduce(t.squeeze(1) ** 2 * per_sample, reduction)
