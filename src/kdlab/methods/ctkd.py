"""CTKD (Li et al., AAAI 2023, curriculum temperature for knowledge distillation; docs/reference/methods.md §21).

The distillation temperature is the output of a small trainable module, τ = t_start + t_end·σ(θ), whose gradient
passes a reversal layer: the student minimises the loss while the temperature module *maximises* it, with strength
λ(epoch) rising from 0 to 1 on a cosine curriculum. The module is a submodule of the method, so it is optimised with
the student (SGD, the same lr and weight decay, as in the released code) and checkpointed with it.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from kdlab.losses import ctkd_loss, curriculum_lambda, curriculum_temperature
from kdlab.methods.base import LogitMethod, Params, StepOutput, nckd_beta, scaled_warmup, warmup_factor
from kdlab.methods.registry import register

#: the released instance-wise loss adds this to the teacher's probabilities (README's ``KL_Loss``)
INSTANCE_TEACHER_EPS = 1e-7


class CTKDParams(Params):
    """Class defaults: the released CIFAR-100 KD+CTKD script (CE 0.1, KD 0.9, τ ∈ (1, 21), curriculum over 10
    epochs). Left at its default, the curriculum length is scaled to a shorter run
    (:func:`~kdlab.methods.base.scaled_warmup`)."""

    base: Literal["kd", "dkd"] = "kd"  # the loss the temperature is learned for
    temperature_mode: Literal["global", "instance"] = "global"
    t_start: float = Field(1.0, ge=0)  # τ = t_start + t_end·σ(θ)
    t_end: float = Field(20.0, gt=0)
    curriculum_epochs: int = Field(10, ge=1)  # λ rises from 0 to lam_max over these epochs (decay_loops)
    lam_max: float = Field(1.0, ge=0)
    hidden: int = Field(256, ge=1)  # instance mode: width of the temperature MLP (kdlab default)
    ce_weight: float = Field(0.1, ge=0)
    kd_weight: float = Field(0.9, ge=0)  # weight of the distillation term (KD, or DKD with base: dkd)
    alpha: float = Field(1.0, ge=0)  # base dkd: TCKD weight
    beta: float = Field(8.0, ge=0)  # base dkd: NCKD weight
    warmup: int = Field(0, ge=0)  # base dkd: linear warm-up epochs (the released CTKD+DKD has none)
    logit_standardization: bool = False


class GlobalTemperature(nn.Module):
    """One learnable θ (initialised to 1, as released) for every sample."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.ones(1))

    def forward(self, v: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.theta


class InstanceTemperature(nn.Module):
    """θ_i per sample from both networks' logits: Linear(2C, hidden) → ReLU → Linear(hidden, 1). The released
    instance-wise module ships only in an archive outside the repository; this architecture is kdlab's default.
    The logits are detached here: the module learns from the loss, it does not train the student."""

    def __init__(self, num_classes: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * num_classes, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, v: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([v, z.detach()], dim=1)).squeeze(1)


@register("ctkd")
class CTKD(LogitMethod):
    """L = w_ce·CE(z, y) + w_kd·ℓ_τ(z, v), τ = t_start + t_end·σ(GRL_λ(θ)), λ = curriculum λ(epoch);
    ℓ = τ²·KL (base kd) or τ²·(α·TCKD + β·NCKD) (base dkd, with an optional warm-up), ``kdlab.losses.ctkd_loss``."""

    term_weights = ("kd_weight", "alpha", "beta")

    summary = "CTKD (Li et al. AAAI 2023): a learnable temperature trained adversarially on a cosine curriculum"

    Params = CTKDParams

    @classmethod
    def _adaptations(cls, hp, facts, given):
        """The curriculum and the warm-up scaled to a shorter run; with base dkd, β·(C − 1)/99 for fewer classes, as
        DKD's (:meth:`~kdlab.methods.dkd.DKD._adaptations`)."""
        return (scaled_warmup(hp, facts, given, key="curriculum_epochs") + scaled_warmup(hp, facts, given)
                + (nckd_beta(hp, facts, given) if hp.base == "dkd" else []))

    def __init__(self, student, teacher, num_classes, params):
        super().__init__(student, teacher, num_classes, params)
        if params.temperature_mode == "global":
            self.temperature_module: nn.Module = GlobalTemperature()
        else:
            self.temperature_module = InstanceTemperature(num_classes, params.hidden)
        param = next(student.parameters(), None)
        if param is not None:  # on the student's device, in its dtype
            self.temperature_module.to(device=param.device, dtype=param.dtype)

    def lam(self, epoch: int) -> float:
        """The reversal strength at ``epoch`` (1-based)."""
        return curriculum_lambda(epoch, self.hp.curriculum_epochs, lam_max=self.hp.lam_max)

    def temperature(self, v: torch.Tensor, z: torch.Tensor, epoch: int) -> torch.Tensor:
        hp = self.hp
        return curriculum_temperature(self.temperature_module(v, z), self.lam(epoch), hp.t_start, hp.t_end)

    def forward(self, batch, epoch: int) -> StepOutput:
        hp = self.hp
        z = self.student(batch.x)
        v = self.teacher.logits_for_batch(batch)
        zs, vs = self.standardize(z, v)
        tau = self.temperature(vs, zs, epoch)
        eps = INSTANCE_TEACHER_EPS if hp.temperature_mode == "instance" and hp.base == "kd" else 0.0
        term = ctkd_loss(zs, vs, tau, target=batch.y if hp.base == "dkd" else None, base=hp.base,
                         alpha=hp.alpha, beta=hp.beta, teacher_eps=eps)
        w = warmup_factor(epoch, hp.warmup) if hp.base == "dkd" else 1.0
        losses = {"ce": hp.ce_weight * self.masked_ce(z, batch), hp.base: w * hp.kd_weight * term}
        logs = {"temperature": tau.detach().mean(), "lambda": torch.tensor(self.lam(epoch), device=z.device)}
        return StepOutput(z, losses, v, logs)
