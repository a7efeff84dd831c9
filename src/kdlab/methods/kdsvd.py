"""KDSVD (Lee, Kim & Song, ECCV 2018): how the top singular vectors of consecutive stages relate, in the student as
in the teacher (docs/methods/kdsvd.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kdlab.losses import kdsvd_loss
from kdlab.methods.feature import FeatureLossMethod, StagesParams
from kdlab.methods.registry import register


class KDSVDParams(StagesParams):
    """mdistiller's CIFAR-100 defaults (``cfg.KDSVD``): CE 1, KDSVD 1, k = 1, every stage after the stem, its
    matrix layout; ``layout: paper`` decomposes [positions × channels] as the authors' code does."""

    k: int = Field(1, ge=1)
    layout: Literal["mdistiller", "paper"] = "mdistiller"


@register("kdsvd")
class KDSVD(FeatureLossMethod):
    """L = w_ce·CE(z, y) + w_svd·kdsvd_loss(student stages, teacher stages, k, layout); no trainable part."""

    summary = "KDSVD (Lee et al. 2018): RBF relations of consecutive stages' top singular vectors match the teacher's"
    Params = KDSVDParams

    def feature_loss(self, student: dict, teacher: dict):
        return kdsvd_loss(*self.paired_stages(student, teacher), k=self.hp.k, layout=self.hp.layout)
