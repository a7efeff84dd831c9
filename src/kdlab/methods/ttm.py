"""TTM and WTTM (Zheng & Yang, ICLR 2024, "Knowledge Distillation Based on Transformed Teacher Matching"; docs/reference/methods.md §5).

The student is used without temperature; only the teacher is power-transformed, p̂ = p^γ / Σ_j p_j^γ (γ = 1/T).
"""

from __future__ import annotations

from pydantic import Field

from kdlab.losses import ttm_loss, wttm_loss
from kdlab.methods.base import LogitMethod, Params, StepOutput
from kdlab.methods.registry import register


class TTMParams(Params):
    """Class defaults are the paper's resnet32x4→resnet8x4 values (γ=0.1, β=100); other pairs: shipped recipes."""

    gamma: float = Field(0.1, gt=0)  # γ = 1/T, the power applied to the teacher's probabilities
    beta: float = Field(100.0, ge=0)  # weight of the matching term (no T² factor in TTM)
    ce_weight: float = Field(1.0, ge=0)
    logit_standardization: bool = False


class WTTMParams(TTMParams):
    """Class defaults are the paper's resnet32x4→resnet8x4 values (γ=0.1, β=3); other pairs: shipped recipes."""

    beta: float = Field(3.0, ge=0)


@register("ttm")
class TTM(LogitMethod):
    """L = w_ce·CE(z, y) + β·batch-mean KL(p̂_γ ‖ softmax(z)), p̂_γ = softmax(γ·v)."""

    Params = TTMParams

    def _term(self, z, v):
        return ttm_loss(z, v, gamma=self.hp.gamma)

    def forward(self, batch, epoch: int) -> StepOutput:
        hp = self.hp
        z = self.student(batch.x)
        v = self.teacher.logits_for_batch(batch)
        zs, vs = self.standardize(z, v)
        losses = {"ce": hp.ce_weight * self.masked_ce(z, batch), self.name: hp.beta * self._term(zs, vs)}
        return StepOutput(z, losses, v)


@register("wttm")
class WTTM(TTM):
    """L = w_ce·CE(z, y) + β·batch-mean[U_γ(softmax(v))·KL(p̂_γ ‖ softmax(z))], U_γ(p) = Σ_c p_c^γ (unnormalised)."""

    Params = WTTMParams

    def _term(self, z, v):
        return wttm_loss(z, v, gamma=self.hp.gamma)
