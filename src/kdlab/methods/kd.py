"""KD (Hinton et al. 2015, "Distilling the knowledge in a neural network")."""

from __future__ import annotations

from pydantic import Field

from kdlab.losses import kd_loss
from kdlab.methods.base import Method, Params, StepOutput
from kdlab.methods.registry import register


class KDParams(Params):
    temperature: float = Field(4.0, gt=0)
    ce_weight: float = Field(0.1, ge=0)
    kd_weight: float = Field(0.9, ge=0)
    logit_standardization: bool = False


@register("kd")
class KD(Method):
    """L = w_ce·CE(z, y) + w_kd·T²·KL(softmax_T(v) ‖ softmax_T(z))."""

    Params = KDParams

    def forward(self, batch, epoch: int) -> StepOutput:
        p = self.params
        z = self.student(batch.x)
        v = self.teacher.logits_for_batch(batch)
        zs, vs = self.standardize(z, v)
        losses = {
            "ce": p.ce_weight * self.ce(z, batch.y),
            "kd": p.kd_weight * kd_loss(zs, vs, temperature=p.temperature),
        }
        return StepOutput(z, losses, v)
