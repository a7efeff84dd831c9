"""Relational KD (Park et al., CVPR 2019): distances and angles between the pooled features of a batch, in the
student as in the teacher (docs/methods/rkd.md)."""

from __future__ import annotations

from pydantic import Field

from kdlab.losses import rkd_loss
from kdlab.methods.feature import FeatureLossMethod, FeatureParams
from kdlab.methods.registry import register


class RKDParams(FeatureParams):
    """mdistiller's CIFAR-100 defaults (``cfg.RKD``): CE 1, RKD 1, distance 25, angle 50, unsquared distances,
    ε = 1e-12, on the pooled features."""

    distance_weight: float = Field(25.0, ge=0)
    angle_weight: float = Field(50.0, ge=0)
    squared: bool = False
    eps: float = Field(1e-12, gt=0)


@register("rkd")
class RKD(FeatureLossMethod):
    """L = w_ce·CE(z, y) + w_rkd·(w_d·L_distance + w_a·L_angle) on the pooled features of the global batch."""

    summary = "RKD (Park et al. 2019): distances and angles among the batch's pooled features match the teacher's"
    Params = RKDParams

    def feature_loss(self, student: dict, teacher: dict):
        hp = self.hp
        return rkd_loss(self.global_batch(student["pooled"]), self.global_batch(teacher["pooled"]),
                        hp.distance_weight, hp.angle_weight, hp.squared, hp.eps)
