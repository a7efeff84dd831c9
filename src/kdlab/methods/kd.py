"""KD (Hinton et al. 2015, "Distilling the knowledge in a neural network")."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlab.losses import kd_loss
from kdlab.methods.base import LogitMethod, Params, StepOutput
from kdlab.methods.registry import register


class KDParams(Params):
    """The CIFAR-100 benchmark values (docs/reference/methods.md §2); they do not depend on the class count."""

    temperature: float = Field(4.0, gt=0)
    ce_weight: float = Field(0.1, ge=0)
    kd_weight: float = Field(0.9, ge=0)
    logit_standardization: bool = False


def kd_loss_per_sample_temperature(z: Tensor, v: Tensor, temperature: Tensor) -> Tensor:
    """(1/N) Σ_i T_i² · KL(softmax(v_i/T_i) ‖ softmax(z_i/T_i)): Hinton's loss with a temperature per sample."""
    t = temperature.to(z.dtype).unsqueeze(1)
    log_p = F.log_softmax(v.detach() / t, dim=1)
    per = (log_p.exp() * (log_p - F.log_softmax(z / t, dim=1))).sum(1)
    return (t.squeeze(1) ** 2 * per).mean()


@register("kd")
class KD(LogitMethod):
    """L = w_ce·CE(z, y) + w_kd·T²·KL(softmax_T(v) ‖ softmax_T(z))."""

    summary = "KD (Hinton et al. 2015): cross-entropy plus KL to the teacher's temperature-softened probabilities"

    Params = KDParams
    labels_only_in_ce = True
    per_sample_temperature = True

    @classmethod
    def needs_full_teacher_distribution(cls, hp: KDParams) -> bool:
        """False only at T = 1 without logit standardisation: KL(softmax(v) ‖ softmax(z)) is FKD's own use of top-k
        outputs (Shen & Xing, ECCV 2022), and the reconstruction keeps softmax(v)'s top k and its tail mass. At
        T ≠ 1 the evenly spread tail is re-weighted by the temperature (error measured in docs/performance.md);
        standardisation needs the raw logits' mean and spread over all classes."""
        return hp.temperature != 1.0 or hp.logit_standardization

    def forward(self, batch, epoch: int) -> StepOutput:
        hp = self.hp
        z = self.student(batch.x)
        v = self.teacher.logits_for_batch(batch)
        zs, vs = self.standardize(z, v)
        tau = getattr(batch, "temperature", None)
        if tau is None:
            kd = kd_loss(zs, vs, temperature=hp.temperature)
        else:  # per-source temperature (kdlab.data.policies): each sample at its own τ_i, T_i² scaling kept
            kd = kd_loss_per_sample_temperature(zs, vs, tau)
        losses = {"ce": hp.ce_weight * self.masked_ce(z, batch), "kd": hp.kd_weight * kd}
        return StepOutput(z, losses, v)


class KDLSParams(KDParams):
    """KD + logit standardisation with the published CIFAR-100 values (Sun et al. 2024; docs/reference/methods.md §9):
    base T = 2, w_kd = 9, w_ce = 0.1, standardisation on."""

    temperature: float = Field(2.0, gt=0)
    kd_weight: float = Field(9.0, ge=0)
    logit_standardization: bool = True


@register("kd_ls")
class KDLS(KD):
    """``kd`` with logit standardisation and its published defaults (Sun et al., CVPR 2024): the same loss as
    ``kd`` with ``logit_standardization: true``, T=2, w_kd=9, w_ce=0.1."""

    summary = "KD with logit standardisation (Sun et al. CVPR 2024) and its published T=2, KD weight 9, CE weight 0.1"

    Params = KDLSParams
