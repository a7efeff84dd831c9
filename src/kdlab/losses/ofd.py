"""OFD: "A Comprehensive Overhaul of Feature Distillation" (Heo, Kim, Yun, Park, Kwak & Choi, ICCV 2019).

The student's pre-ReLU feature (after its connector) is matched to the teacher's pre-ReLU feature with a *partial*
L2 distance: where the teacher is negative (its ReLU would zero it), only student values above the teacher's margin
are penalised, and the teacher's value is replaced by the margin m (the expectation of the teacher's negative
responses, per channel). The margin comes from the BatchNorm before the teacher's ReLU (:func:`ofd_margin`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._validate import check_feature_pair, compute_dtype, stage_list


def ofd_margin(weight: Tensor, bias: Tensor) -> Tensor:
    """Per-channel margin m = E[x | x < 0] for x ~ N(β, γ²), the distribution of a BatchNorm's output with affine
    weight γ and bias β (OFD §3.2):

        m = β − |γ|·φ(β/|γ|) / Φ(−β/|γ|)   if Φ(−β/|γ|) > 0.001,   else −3|γ|,

    with φ, Φ the standard normal density and distribution function (the released code's rule for channels that are
    almost never negative). A channel with γ = 0 is the constant β: its margin is the formula's limit, β when β < 0
    and 0 otherwise. Computed in float64, returned in the dtype of ``weight`` (float32 for half inputs), shape [C].
    """
    if not isinstance(weight, Tensor) or not isinstance(bias, Tensor):
        raise ValueError("ofd_margin: weight and bias must be tensors (a BatchNorm's affine weight γ and bias β)")
    if weight.dim() != 1 or weight.shape != bias.shape:
        raise ValueError(f"ofd_margin: weight and bias must be 1-D tensors of one length [C]; got "
                         f"{tuple(weight.shape)} and {tuple(bias.shape)}")
    s, m = weight.detach().double().abs(), bias.detach().double()
    safe = torch.where(s > 0, s, torch.ones_like(s))
    tail = torch.special.ndtr(-m / safe)  # Φ(−β/|γ|): the probability of a negative response
    density = torch.exp(-((m / safe) ** 2) / 2) / math.sqrt(2 * math.pi)
    mean_negative = m - s * density / tail.clamp_min(torch.finfo(torch.float64).tiny)
    margin = torch.where(tail > 0.001, mean_negative, -3 * s)
    constant = torch.where(m < 0, m, torch.zeros_like(m))
    margin = torch.where(s > 0, margin, constant)
    return margin.to(compute_dtype(weight))


def ofd_loss(student: Tensor | list[Tensor], teacher: Tensor | list[Tensor],
             margins: Tensor | list[Tensor]) -> Tensor:
    """Σ_i 2^−(k−1−i) · (1/N) Σ_(n,c,positions) d_p(s, t) over the k stages i = 0…k−1 (deepest last, weight 1):

        d_p(s, t) = (s − m)²  where s > m ≥ t        (the teacher's ReLU zeroes it: the margin m is the target)
                    (s − t)²  where s > t and m < t ≤ 0
                    (s − t)²  where t > 0
                    0         otherwise

    ``student``: the connected student pre-activations, ``teacher``: the teacher's pre-activations (detached here),
    each a tensor [N, C, ...] or a list in stage order; ``margins``: per stage the teacher's per-channel margins [C]
    (:func:`ofd_margin`). A teacher map larger than the student's is average-pooled to the student's size
    (``adaptive_avg_pool``), as the reference does. Sum over channels and positions, mean over the batch; unweighted
    (the method multiplies it by its feature weight, 10⁻³ on CIFAR-100).
    """
    students, teachers = stage_list(student, "student"), stage_list(teacher, "teacher")
    margin_list = stage_list(margins, "margins")
    if not len(students) == len(teachers) == len(margin_list):
        raise ValueError(f"ofd_loss: one teacher map and one margin per student map; got {len(students)} student, "
                         f"{len(teachers)} teacher maps and {len(margin_list)} margins")
    k = len(students)
    total: Tensor | float = 0.0
    for i, (s, t, m) in enumerate(zip(students, teachers, margin_list)):
        where = f"stage {i}"
        s, t = check_feature_pair(s, t, f"student ({where})", f"teacher ({where})", same_shape=False)
        if s.dim() not in (3, 4) or t.dim() != s.dim() or s.shape[1] != t.shape[1]:
            raise ValueError(f"ofd_loss: {where}: student and teacher maps must both be [N, C, L] or [N, C, H, W] with "
                             f"the same C (connect the student first); got {tuple(s.shape)} and {tuple(t.shape)}")
        if not isinstance(m, Tensor) or m.shape != (s.shape[1],):
            raise ValueError(f"ofd_loss: {where}: the margin must be a tensor [C] = [{s.shape[1]}]; got "
                             f"{tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__}")
        if t.shape[2:] != s.shape[2:]:
            pool = F.adaptive_avg_pool1d if s.dim() == 3 else F.adaptive_avg_pool2d
            t = pool(t, s.shape[2:])
        m = m.detach().to(device=s.device, dtype=s.dtype).view(1, -1, *([1] * (s.dim() - 2)))
        to_margin = (s > m) & (t <= m)
        to_teacher = ((s > t) & (t > m) & (t <= 0)) | (t > 0)
        per = (s - m).square() * to_margin + (s - t).square() * to_teacher
        total = total + per.sum() / s.shape[0] / 2 ** (k - 1 - i)
    return total
