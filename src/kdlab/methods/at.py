"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017): the student's spatial attention maps, stage by stage, match
the teacher's (docs/methods/at.md)."""

from __future__ import annotations

from pydantic import Field

from kdlab.losses import at_loss
from kdlab.methods.feature import FeatureLossMethod, StagesParams
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

    def feature_loss(self, student: dict, teacher: dict):
        return at_loss(*self.paired_stages(student, teacher), p=self.hp.p)
