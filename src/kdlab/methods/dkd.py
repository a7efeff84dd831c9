"""DKD (Zhao et al., CVPR 2022, "Decoupled Knowledge Distillation"; docs/reference/methods.md §3)."""

from __future__ import annotations

import torch
from pydantic import Field

from kdlab.losses import dkd_loss
from kdlab.methods.base import LogitMethod, Params, StepOutput, nckd_beta, scaled_warmup, warmup_factor
from kdlab.methods.registry import register


class DKDParams(Params):
    """CIFAR-100 defaults of the released code; β is per pair (2, 6 or 8, see the shipped recipes). Left at their
    defaults, the warm-up (20 of 240 epochs) is scaled to a shorter run and β to fewer classes
    (:meth:`DKD._adaptations`)."""

    alpha: float = Field(1.0, ge=0)  # TCKD weight
    beta: float = Field(8.0, ge=0)  # NCKD weight
    temperature: float = Field(4.0, gt=0)
    warmup: int = Field(20, ge=0)  # epochs of linear warm-up of the distillation term (0: none)
    ce_weight: float = Field(1.0, ge=0)
    logit_standardization: bool = False


@register("dkd")
class DKD(LogitMethod):
    """L = w_ce·CE(z, y) + min(epoch/warmup, 1)·(α·TCKD + β·NCKD), both terms with T² (inside ``dkd_loss``)."""

    term_weights = ("alpha", "beta")

    summary = "DKD (Zhao et al. CVPR 2022): KD split into target and non-target terms, weighted apart, with a warm-up"

    Params = DKDParams

    @classmethod
    def _adaptations(cls, hp, facts, given):
        """The warm-up: the same share of a shorter run (:func:`~kdlab.methods.base.scaled_warmup`). β·(C − 1)/99 for
        C < 100 classes: NCKD is a KL between softmaxes over the C − 1 non-target classes (99 on CIFAR-100), whose
        curvature in the logits is about 1/(C − 1), so β = 8 is 11× stiffer on 10 classes than on 100 (it diverges
        on digits at lr 0.05) and β·(C − 1)/99 keeps the recipe's stiffness
        (:func:`~kdlab.methods.base.nckd_beta`). At C = 2 NCKD is 0 (one non-target class) whatever β."""
        return scaled_warmup(hp, facts, given) + nckd_beta(hp, facts, given)

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
