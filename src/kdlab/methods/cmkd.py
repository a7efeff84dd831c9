"""CMKD (Niu et al. 2024; docs/reference/methods.md §7): Pearson + Spearman correlation matching with sample-adaptive
weights.

Public detail of the paper is thin: this is the project's default formulation (every choice a parameter), not the
authors' verified code.
"""

from __future__ import annotations

from pydantic import Field

from kdlab.losses import cmkd_loss
from kdlab.methods.base import LogitMethod, Params, StepOutput
from kdlab.methods.registry import register


class CMKDParams(Params):
    """CIFAR-100 defaults: τ=4, κ=0.01, CE 1; the factor 2·τ² is inside ``cmkd_loss`` (so cmkd_weight is 1)."""

    temperature: float = Field(4.0, gt=0)
    kappa: float = Field(0.01, gt=0)  # sharpness of the student's differentiable rank (on probabilities)
    ce_weight: float = Field(1.0, ge=0)
    cmkd_weight: float = Field(1.0, ge=0)  # multiplies cmkd_loss, which already includes 2·τ²
    logit_standardization: bool = False


@register("cmkd")
class CMKD(LogitMethod):
    """L = w_ce·CE(z, y) + w·2·τ²·(mean_i[(1−w_i)·d_P,i + w_i·d_S,i] + L_intra),  w_i = H(Y^t_i)/log C.

    d_P: Pearson distance of the rows of Y = softmax_τ; d_S: Spearman distance with a differentiable student rank;
    L_intra: per-class Pearson distance across the batch.
    """

    summary = "CMKD (Niu et al. 2024): Pearson and Spearman matching, weighted per sample by the teacher's entropy"

    Params = CMKDParams

    def forward(self, batch, epoch: int) -> StepOutput:
        hp = self.hp
        z = self.student(batch.x)
        v = self.teacher.logits_for_batch(batch)
        # standardisation is applied inside cmkd_loss (one of its arguments), not via self.standardize
        losses = {
            "ce": hp.ce_weight * self.masked_ce(z, batch),
            "cmkd": hp.cmkd_weight * cmkd_loss(
                z, v, temperature=hp.temperature, kappa=hp.kappa, logit_standardization=hp.logit_standardization
            ),
        }
        return StepOutput(z, losses, v)
