"""DIST (Huang et al., NeurIPS 2022, "Knowledge Distillation from A Stronger Teacher"; docs/reference/methods.md §6)."""

from __future__ import annotations

from pydantic import Field

from kdlab.losses import dist_loss
from kdlab.methods.base import LogitMethod, Params, StepOutput
from kdlab.methods.registry import register


class DISTParams(Params):
    """CIFAR-100 defaults: CE 1, β = γ = 2, τ = 4 (ImageNet: τ = 1, β = γ = 1). No warm-up."""

    beta: float = Field(2.0, ge=0)  # inter-class (per-sample) Pearson relation
    gamma: float = Field(2.0, ge=0)  # intra-class (per-class, across the batch) Pearson relation
    temperature: float = Field(4.0, gt=0)
    ce_weight: float = Field(1.0, ge=0)
    logit_standardization: bool = False


@register("dist")
class DIST(LogitMethod):
    """L = w_ce·CE(z, y) + τ²·(β·(1 − mean_i ρ(Y^s_i, Y^t_i)) + γ·(1 − mean_c ρ(Y^s_:c, Y^t_:c))), Y = softmax_τ.

    The intra-class term is computed over this process's batch only (no cross-device gather), as in the reference.
    """

    term_weights = ("beta", "gamma")

    summary = "DIST (Huang et al. NeurIPS 2022): Pearson correlation of the probabilities within samples and classes"

    Params = DISTParams

    def forward(self, batch, epoch: int) -> StepOutput:
        hp = self.hp
        z = self.student(batch.x)
        v = self.teacher.logits_for_batch(batch)
        zs, vs = self.standardize(z, v)
        losses = {
            "ce": hp.ce_weight * self.masked_ce(z, batch),
            "dist": dist_loss(zs, vs, beta=hp.beta, gamma=hp.gamma, temperature=hp.temperature),
        }
        return StepOutput(z, losses, v)
