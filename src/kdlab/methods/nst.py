"""Neuron selectivity transfer (Huang & Wang, 2017): per stage, the distribution of the student's channel maps
matches the teacher's by maximum mean discrepancy with a degree-2 polynomial kernel (docs/methods/nst.md)."""

from __future__ import annotations

from pydantic import Field

from kdlab.losses import nst_loss
from kdlab.methods.feature import FeatureLossMethod, StagesParams
from kdlab.methods.registry import register


class NSTParams(StagesParams):
    """mdistiller's CIFAR-100 defaults (``cfg.NST``): CE 1, NST 50, every stage after the stem."""

    feat_weight: float = Field(50.0, ge=0)


@register("nst")
class NST(FeatureLossMethod):
    """L = w_ce·CE(z, y) + w_nst·Σ_stages MMD²(student channels, teacher channels), k(x, y) = (xᵀy)²."""

    summary = "NST (Huang & Wang 2017): the student's channel maps match the teacher's in distribution (poly MMD)"
    Params = NSTParams

    def feature_loss(self, student: dict, teacher: dict):
        return nst_loss(*self.paired_stages(student, teacher))
