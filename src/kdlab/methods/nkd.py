"""NKD (Yang et al., ICCV 2023, normalized knowledge distillation; docs/reference/methods.md §20)."""

from __future__ import annotations

from pydantic import Field

from kdlab.losses import nkd_loss
from kdlab.methods.base import LogitMethod, Params, StepOutput, nckd_beta
from kdlab.methods.registry import register


class NKDParams(Params):
    """Class defaults: the authors' released CIFAR-100 config (T = 3, γ = 3.5, CE 1); ImageNet: T = 1, γ = 1.5
    (shipped recipes, docs/reference/methods.md §20). Left at its default, γ is fitted to fewer classes
    (:meth:`NKD._adaptations`)."""

    temperature: float = Field(3.0, gt=0)  # T of the non-target term (the target term is always at T = 1)
    gamma: float = Field(3.5, ge=0)  # weight of the normalised non-target term
    ce_weight: float = Field(1.0, ge=0)
    logit_standardization: bool = False


@register("nkd")
class NKD(LogitMethod):
    """L = w_ce·CE(z, y) − p^t_y·log p^s_y − γ·T²·Σ_{c≠y} p̂^t_c·log p̂^s_c, p̂ = softmax over the non-target
    classes at T (``kdlab.losses.nkd_loss``)."""

    term_weights = ("gamma",)

    summary = "NKD (Yang et al. ICCV 2023): the teacher's target probability plus its renormalised non-target classes"

    Params = NKDParams

    @classmethod
    def _adaptations(cls, hp, facts, given):
        """γ·(C − 1)/99 for C < 100 classes: the non-target term γ·T²·KL(p̂ᵗ ‖ p̂ˢ) is, like DKD's NCKD, a KL between
        softmaxes over the C − 1 non-target classes, whose curvature in the logits is about 1/(C − 1) (T² cancels the
        tempered softmax's 1/T²), so the same γ is 99/(C − 1) times stiffer on C classes than on CIFAR-100
        (:func:`~kdlab.methods.base.scaled_by_classes`). At C = 2 the term is 0 whatever γ."""
        return nckd_beta(hp, facts, given, key="gamma", term="NKD's non-target term")

    def forward(self, batch, epoch: int) -> StepOutput:
        hp = self.hp
        z = self.student(batch.x)
        v = self.teacher.logits_for_batch(batch)
        zs, vs = self.standardize(z, v)
        losses = {"ce": hp.ce_weight * self.masked_ce(z, batch),
                  "nkd": nkd_loss(zs, vs, batch.y, temperature=hp.temperature, gamma=hp.gamma)}
        return StepOutput(z, losses, v)
