"""Similarity-preserving KD (Tung & Mori, ICCV 2019): the student's batch similarity matrix of one stage matches
the teacher's (docs/methods/sp.md)."""

from __future__ import annotations

import math

from pydantic import Field

from kdlab.losses import sp_loss
from kdlab.methods.feature import FeatureLossMethod, FeatureParams, picked, size
from kdlab.methods.registry import register


class SPParams(FeatureParams):
    """mdistiller's CIFAR-100 defaults (``cfg.SP``): CE 1, SP 3000, the last stage of both networks."""

    feat_weight: float = Field(3000.0, ge=0)
    student_stage: int = -1
    teacher_stage: int = -1


@register("sp")
class SP(FeatureLossMethod):
    """L = w_ce·CE(z, y) + w_sp·‖G^t − G^s‖²_F / N², G the row-normalised Gram matrix of the global batch."""

    summary = "SP (Tung & Mori 2019): the student's batch similarity matrix of a stage matches the teacher's"
    Params = SPParams

    @classmethod
    def stiffness(cls, hp, stages):
        """1/√(C·P) of the student's stage: each row of G is scale-free in the sample's flattened map g (C·P
        values), so ∂G/∂g ~ 1/‖g‖ = 1/√(C·P) for unit-RMS maps, while ‖G^t − G^s‖²/N² depends on the batch alone.
        On MNIST-1D's last student stage (16 channels × 10) that is 10× CIFAR-100's (256 × 8×8), so the default
        weight 3000 becomes 296."""
        c, p = size(picked(stages["student"], hp.student_stage)[0])
        return 1 / math.sqrt(c * p)

    def feature_loss(self, student: dict, teacher: dict):
        f_s = self.stage(student, "student", self.hp.student_stage)
        f_t = self.stage(teacher, "teacher", self.hp.teacher_stage)
        return sp_loss(self.global_batch(f_s), self.global_batch(f_t))
