"""DKD (Zhao et al., CVPR 2022, "Decoupled Knowledge Distillation"; docs/reference/methods.md §3)."""

from __future__ import annotations

import torch
from pydantic import Field

from kdlab.losses import dkd_loss
from kdlab.methods.base import LogitMethod, Params, StepOutput, scaled_warmup, warmup_factor
from kdlab.methods.registry import register


class DKDParams(Params):
    """CIFAR-100 defaults of the released code; β is per pair (2, 6 or 8, see the shipped recipes). The warm-up
    (20 of 240 epochs) is scaled to a shorter run when left at its default
    (:func:`~kdlab.methods.base.scaled_warmup`)."""

    alpha: float = Field(1.0, ge=0)  # TCKD weight
    beta: float = Field(8.0, ge=0)  # NCKD weight
    temperature: float = Field(4.0, gt=0)
    warmup: int = Field(20, ge=0)  # epochs of linear warm-up of the distillation term (0: none)
    ce_weight: float = Field(1.0, ge=0)
    logit_standardization: bool = False


@register("dkd")
class DKD(LogitMethod):
    """L = w_ce·CE(z, y) + min(epoch/warmup, 1)·(α·TCKD + β·NCKD), both terms with T² (inside ``dkd_loss``)."""

    summary = "DKD (Zhao et al. CVPR 2022): KD split into target and non-target terms, weighted apart, with a warm-up"

    Params = DKDParams

    @classmethod
    def _adaptations(cls, hp, facts, given):
        return scaled_warmup(hp, facts, given)

    def forward(self, batch, epoch: int) -> StepOutput:
        hp = self.hp
        z = self.student(batch.x)
        v = self.teacher.logits_for_batch(batch)
        zs, vs = self.standardize(z, v)
        w = warmup_factor(epoch, hp.warmup)
        losses = {
            "ce": hp.ce_weight * self.masked_ce(z, batch),
            "dkd": w * dkd_loss(zs, vs, batch.y, alpha=hp.alpha, beta=hp.beta, temperature=hp.temperature),
        }
        return StepOutput(z, losses, v, logs={"warmup": torch.tensor(w, device=z.device)})
