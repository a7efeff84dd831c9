"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017): the student's spatial attention maps, stage by stage, match
the teacher's (docs/methods/at.md)."""

from __future__ import annotations

import math

from pydantic import Field

from kdlab.losses import at_loss
from kdlab.methods.feature import FeatureLossMethod, StagesParams, picked, size
from kdlab.methods.registry import register


class ATParams(StagesParams):
    """mdistiller's CIFAR-100 defaults (``cfg.AT``): CE 1, AT 1000, p = 2, every stage after the stem."""

    feat_weight: float = Field(1000.0, ge=0)
    p: float = Field(2.0, gt=0)


@register("at")
class AT(FeatureLossMethod):
    """L = w_ce·CE(z, y) + w_at·Σ_stages mean((Q(f_s) − Q(f_t))²), Q(f) = vec(mean_c |f_c|^p) / ‖·‖₂."""

    summary = "AT (Zagoruyko & Komodakis 2017): the student's spatial attention maps match the teacher's, per stage"
    Params = ATParams

    @classmethod
    def stiffness(cls, hp, stages):
        """Σ_k 1/(P_k·√(C_k·P_k)): per stage, the loss is ‖ΔQ‖²/P (a mean over the P positions both maps are pooled
        to) and Q = a/‖a‖ is scale-free in the student's map f (C_k channels), so ∂Q/∂f ~ 1/‖f‖ = 1/√(C_k·P_k) for
        unit-RMS maps: ‖∂L/∂f‖ ≈ 4β‖ΔQ‖/(P_k·√(C_k·P_k)). On MNIST-1D's maps (16 channels, lengths 20 and 10) that is
        73× CIFAR-100's, so the default β = 1000 becomes 13.8; on ImageNet resnet34 → resnet18 (224 px) 0.94×,
        i.e. 1060, next to the published 1000."""
        pulls = 0.0
        for s, t in zip(picked(stages["student"], hp.student_stages), picked(stages["teacher"], hp.teacher_stages)):
            c, p = size(s)
            p = min(p, size(t)[1])
            pulls += 1 / (p * math.sqrt(c * p))
        return pulls

    def feature_loss(self, student: dict, teacher: dict):
        return at_loss(*self.paired_stages(student, teacher), p=self.hp.p)
