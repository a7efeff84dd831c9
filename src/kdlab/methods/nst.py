"""Neuron selectivity transfer (Huang & Wang, 2017): per stage, the distribution of the student's channel maps
matches the teacher's by maximum mean discrepancy with a degree-2 polynomial kernel (docs/methods/nst.md)."""

from __future__ import annotations

import math

from pydantic import Field

from kdlab.losses import nst_loss
from kdlab.methods.feature import FeatureLossMethod, StagesParams, picked, size
from kdlab.methods.registry import register


class NSTParams(StagesParams):
    """mdistiller's CIFAR-100 defaults (``cfg.NST``): CE 1, NST 50, every stage after the stem."""

    feat_weight: float = Field(50.0, ge=0)


@register("nst")
class NST(FeatureLossMethod):
    """L = w_ce·CE(z, y) + w_nst·Σ_stages MMD²(student channels, teacher channels), k(x, y) = (xᵀy)²."""

    summary = "NST (Huang & Wang 2017): the student's channel maps match the teacher's in distribution (poly MMD)"
    Params = NSTParams

    @classmethod
    def stiffness(cls, hp, stages):
        """Σ_k 1/√(C_k·P_k): the MMD² averages the kernel over C_k² student channel pairs, so each unit channel map
        s_i gets a gradient ∝ 1/C_k, and s_i = f_i/‖f_i‖ divides it by ‖f_i‖ = √P_k (unit RMS): √C_k channels of
        1/(C_k·√P_k) each. On MNIST-1D's maps (16 channels, lengths 20 and 10) that is 7.8× CIFAR-100's, so the
        default weight 50 becomes 6.39."""
        pulls = 0.0
        for s, t in zip(picked(stages["student"], hp.student_stages), picked(stages["teacher"], hp.teacher_stages)):
            c, p = size(s)
            pulls += 1 / math.sqrt(c * min(p, size(t)[1]))
        return pulls

    def feature_loss(self, student: dict, teacher: dict):
        return nst_loss(*self.paired_stages(student, teacher))
