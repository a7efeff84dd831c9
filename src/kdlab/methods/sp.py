"""Similarity-preserving KD (Tung & Mori, ICCV 2019): the student's batch similarity matrix of one stage matches
the teacher's (docs/methods/sp.md)."""

from __future__ import annotations

from pydantic import Field

from kdlab.losses import sp_loss
from kdlab.methods.feature import FeatureLossMethod, FeatureParams
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

    def feature_loss(self, student: dict, teacher: dict):
        f_s = self.stage(student, "student", self.hp.student_stage)
        f_t = self.stage(teacher, "teacher", self.hp.teacher_stage)
        return sp_loss(self.global_batch(f_s), self.global_batch(f_t))
