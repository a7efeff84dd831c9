"""TTM and WTTM (Zheng & Yang, ICLR 2024, "Knowledge Distillation Based on Transformed Teacher Matching";
docs/reference/methods.md §5).

The student is used without temperature; only the teacher is power-transformed, p̂ = p^γ / Σ_j p_j^γ (γ = 1/T).
"""

from __future__ import annotations

from pydantic import Field

from kdlab.losses import ttm_loss, wttm_loss
from kdlab.methods.base import CIFAR_CLASSES, LogitMethod, Params, StepOutput, scaled_by_classes
from kdlab.methods.registry import register


class TTMParams(Params):
    """Class defaults are the paper's CIFAR-100 resnet32x4→resnet8x4 values (γ=0.1, β=100); other pairs: shipped
    recipes. With fewer than 100 classes a default β is scaled by C/100 (:meth:`TTM._adaptations`)."""

    gamma: float = Field(0.1, gt=0)  # γ = 1/T, the power applied to the teacher's probabilities
    beta: float = Field(100.0, ge=0)  # weight of the matching term (no T² factor in TTM)
    ce_weight: float = Field(1.0, ge=0)
    logit_standardization: bool = False


class WTTMParams(TTMParams):
    """Class defaults are the paper's CIFAR-100 resnet32x4→resnet8x4 values (γ=0.1, β=3); other pairs: shipped
    recipes. Not adapted to the class count: the weight U_γ(p) ≈ C^(1−γ) already scales with it."""

    beta: float = Field(3.0, ge=0)


@register("ttm")
class TTM(LogitMethod):
    """L = w_ce·CE(z, y) + β·batch-mean KL(p̂_γ ‖ softmax(z)), p̂_γ = softmax(γ·v)."""

    term_weights = ("beta",)

    summary = "TTM (Zheng & Yang ICLR 2024): match a power-transformed teacher with an untempered student"

    Params = TTMParams

    @classmethod
    def _adaptations(cls, hp, facts, given):
        """β·C/100 for C < 100 classes when β is left at its CIFAR-100 default. At γ = 0.1 the transformed teacher p̂
        is nearly uniform, and the curvature of KL(p̂ ‖ softmax(z)) in the logits (diag(q) − qqᵀ) is about 1/C: the
        same β is C/100 times stiffer on C classes than on CIFAR-100's 100. β = 100 diverges on 2-class breast
        cancer and collapses 3-class wine to 2–32%, β·C/100 matches CE (docs/methods/ttm.md)."""
        c = facts.num_classes
        return scaled_by_classes(hp, facts, given, "beta", c, CIFAR_CLASSES,
                                 f"the CIFAR-100 default for 100 classes, scaled by C/100 to {c} classes")

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

    summary = "WTTM (Zheng & Yang ICLR 2024): TTM weighted per sample by the smoothness of the teacher's prediction"

    Params = WTTMParams

    @classmethod
    def _adaptations(cls, hp, facts, given):
        return []  # U_γ(p) already scales the term with the class count; the default β = 3 worked on 2 and 3 classes

    def _term(self, z, v):
        return wttm_loss(z, v, gamma=self.hp.gamma)
