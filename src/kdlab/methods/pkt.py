"""Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018): the student's distribution of pairwise cosine
similarities of its pooled features matches the teacher's (docs/methods/pkt.md)."""

from __future__ import annotations

from pydantic import Field

from kdlab.losses import pkt_loss
from kdlab.methods.feature import FeatureLossMethod, FeatureParams
from kdlab.methods.registry import register


class PKTParams(FeatureParams):
    """mdistiller's CIFAR-100 defaults (``cfg.PKT``): CE 1, PKT 30000, on the pooled features."""

    feat_weight: float = Field(30000.0, ge=0)


@register("pkt")
class PKT(FeatureLossMethod):
    """L = w_ce·CE(z, y) + w_pkt·pkt_loss(pooled student, pooled teacher) over the global batch."""

    summary = "PKT (Passalis & Tefas 2018): the student's cosine-similarity distribution of pooled features matches"
    Params = PKTParams

    def feature_loss(self, student: dict, teacher: dict):
        return pkt_loss(self.global_batch(student["pooled"]), self.global_batch(teacher["pooled"]))
