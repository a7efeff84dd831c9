"""DHKD (Yang et al. 2024, KDD 2025, dual-head knowledge distillation; docs/reference/methods.md §8), and the
single-head failure case.

The student's own linear head is trained with CE only; an auxiliary head on the same pooled feature is trained only
with BinaryKL-Norm against the teacher's logits. Both heads' gradients reach the shared backbone, optionally with the
gradient-alignment projection of :meth:`DHKD.backward`.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from kdlab import distributed as dist
from kdlab.losses import binary_kl_loss, binary_kl_norm_loss
from kdlab.methods.base import LogitMethod, Params, StepOutput
from kdlab.methods.registry import register
from kdlab.models.features import classifier_of, forward_features


class DHKDParams(Params):
    """CIFAR-100 defaults: α=1, τ=2, nonlinear head, gradient alignment on (ImageNet: α=0.1, zero from epoch 50)."""

    head: Literal["linear", "nonlinear"] = "nonlinear"
    hidden: int = Field(200, ge=1)  # nonlinear head: Linear(d, hidden) → Dropout → BN → ReLU → Linear(hidden, C)
    dropout: float = Field(0.1, ge=0, lt=1)
    alpha: float = Field(1.0, ge=0)  # weight of BinaryKL-Norm on the auxiliary head
    alpha_zero_from_epoch: int | None = Field(None, ge=1)  # ImageNet recipe: α = 0 from this epoch on
    temperature: float = Field(2.0, gt=0)
    ce_weight: float = Field(1.0, ge=0)
    gradient_alignment: bool | None = None  # None: on with the nonlinear head, off with the linear one


def projected_sum(g1: list[torch.Tensor], g2: list[torch.Tensor]) -> list[torch.Tensor]:
    """g1 + g2', where g2' = g2 − (⟨g2,g1⟩/‖g1‖²)·g1 if ⟨g2,g1⟩ < 0, else g2 (DHKD gradient alignment).

    ``g1``, ``g2``: per-parameter gradient tensors of the CE and distillation terms (same shapes, zeros where a term
    does not reach a parameter). The inner products run over all parameters jointly; no host synchronisation.
    """
    if len(g1) != len(g2) or any(a.shape != b.shape for a, b in zip(g1, g2)):
        raise ValueError("projected_sum: g1 and g2 must list gradients of the same parameters (same shapes)")
    if not g1:
        return []
    dot = torch.stack([torch.vdot(a.flatten(), b.flatten()) for a, b in zip(g1, g2)]).sum()
    sq = torch.stack([torch.vdot(a.flatten(), a.flatten()) for a in g1]).sum()
    # coefficient of g1 removed from g2: only on conflict (dot < 0), and never a division by a zero norm
    coef = torch.where((dot < 0) & (sq > 0), dot / sq.clamp_min(torch.finfo(sq.dtype).tiny), torch.zeros_like(dot))
    # g1 + g2 − coef·g1 = (1 − coef)·g1 + g2
    return torch._foreach_add(g2, torch._foreach_mul(g1, 1.0 - coef))


def _aux_head(kind: str, in_dim: int, hidden: int, dropout: float, num_classes: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, num_classes)
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.Dropout(dropout), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


@register("dhkd")
class DHKD(LogitMethod):
    """L = w_ce·CE(head1(h), y) + α·τ²·Σ_c KL_B(0.5 ‖ σ((head2(h) − v)/τ))/N, h = the student's pooled feature.

    With gradient alignment the update direction is g1 + g2' (see :func:`projected_sum`) instead of g1 + g2.
    """

    term_weights = ("alpha",)

    summary = "DHKD (Yang et al. KDD 2025): a second head learns the teacher by BinaryKL-Norm, with gradient alignment"

    Params = DHKDParams

    def __init__(self, student, teacher, num_classes, params):
        super().__init__(student, teacher, num_classes, params)
        in_dim = classifier_of(student).in_features
        self.aux_head = _aux_head(params.head, in_dim, params.hidden, params.dropout, num_classes)
        param = next(student.parameters(), None)
        if param is not None:  # same device and dtype as the backbone that feeds it
            self.aux_head.to(device=param.device, dtype=param.dtype)

    @property
    def aligns_gradients(self) -> bool:
        g = self.hp.gradient_alignment
        return self.hp.head == "nonlinear" if g is None else g

    def prepare_distributed(self, device, sync_bn="auto"):
        """With gradient alignment the method is not wrapped in DDP: ``autograd.grad`` bypasses DDP's hooks, so
        :meth:`backward` all-reduces g1 and g2 itself, and rank 0's buffers are broadcast before every forward, as
        the wrapper would do. BatchNorm is synchronised either way (its all-reduces are part of the graph that
        ``autograd.grad`` differentiates)."""
        if not self.aligns_gradients:
            return super().prepare_distributed(device, sync_bn)
        self.sync_batchnorm(device, sync_bn)

        def forward(batch, epoch: int) -> StepOutput:
            dist.broadcast_buffers(self)
            return self(batch, epoch)

        return forward

    def alpha_at(self, epoch: int) -> float:
        hp = self.hp
        return 0.0 if hp.alpha_zero_from_epoch is not None and epoch >= hp.alpha_zero_from_epoch else hp.alpha

    def forward(self, batch, epoch: int) -> StepOutput:
        hp = self.hp
        z, feats = forward_features(self.student, batch.x)
        aux = self.aux_head(feats["pooled"])
        v = self.teacher.logits_for_batch(batch)
        losses = {
            "ce": hp.ce_weight * self.masked_ce(z, batch),
            "bkln": self.alpha_at(epoch) * binary_kl_norm_loss(aux, v, temperature=hp.temperature),
        }
        return StepOutput(z, losses, v, logs={"aux_acc": 100.0 * (aux.argmax(1) == batch.y).float().mean().detach()})

    def backward(self, out: StepOutput) -> None:
        """Gradient alignment (when on): g1 = ∇ CE term, g2 = ∇ distillation terms, hp.grad += g1 + g2'."""
        if not self.aligns_gradients:
            return super().backward(out)
        params = [q for q in self.parameters() if q.requires_grad]
        ce = out.losses["ce"]
        rest = sum(t for k, t in out.losses.items() if k != "ce")
        g1 = torch.autograd.grad(ce, params, retain_graph=True, allow_unused=True)
        if torch.is_tensor(rest) and rest.requires_grad:
            g2 = torch.autograd.grad(rest, params, allow_unused=True)
        else:  # no distillation term (or a constant one): plain CE gradient
            g2 = (None,) * len(params)
        # parameters reached by neither term keep grad None, exactly as with a plain backward (so weight decay in
        # the optimizer skips them the same way); the others treat a missing gradient as zeros
        used = [i for i, (a, b) in enumerate(zip(g1, g2)) if a is not None or b is not None]
        if not used:
            return
        a = [g1[i] if g1[i] is not None else torch.zeros_like(params[i]) for i in used]
        b = [g2[i] if g2[i] is not None else torch.zeros_like(params[i]) for i in used]
        # under DDP: g1, g2 of the global batch are the rank means (equal shards); project after averaging, so the
        # update equals one process's on the global batch
        dist.all_reduce_mean_(a + b)
        for i, g in zip(used, projected_sum(a, b)):
            q = params[i]
            q.grad = g if q.grad is None else q.grad + g


class SingleHeadBKLParams(Params):
    """The configuration DHKD's paper reports as failing; weights configurable so the claim can be tested."""

    ce_weight: float = Field(1.0, ge=0)
    bkl_weight: float = Field(1.0, ge=0)
    temperature: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _some_loss(self):
        if self.ce_weight == 0 and self.bkl_weight == 0:
            raise ValueError("ce_weight and bkl_weight are both 0: the method would have no loss")
        return self


@register("single_head_bkl")
class SingleHeadBKL(LogitMethod):
    """L = w_ce·CE(z, y) + w_bkl·τ²·Σ_c KL_B(σ(v/τ) ‖ σ(z/τ))/N on the SAME single linear head z (DHKD failure case)."""

    summary = "DHKD's failure case: CE and BinaryKL on one shared head, to check the paper's claim"

    Params = SingleHeadBKLParams

    def forward(self, batch, epoch: int) -> StepOutput:
        hp = self.hp
        z = self.student(batch.x)
        v = self.teacher.logits_for_batch(batch)
        losses = {
            "ce": hp.ce_weight * self.masked_ce(z, batch),
            "bkl": hp.bkl_weight * binary_kl_loss(z, v, temperature=hp.temperature),
        }
        return StepOutput(z, losses, v)
