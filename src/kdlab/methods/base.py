"""The method contract: what every distillation method gives the engine.

A ``Method`` owns the student, any trainable extras (auxiliary heads, connectors) and a reference to the frozen
teacher. For each training batch it returns a ``StepOutput`` whose ``losses`` are summed and minimised. The engine
never knows which method runs: it calls ``method(batch, epoch)``, then ``method.backward(out)``, then the optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from kdlab.teachers.frozen import FrozenTeacher


class Params(BaseModel):
    """Base of every method's hyperparameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class StepOutput:
    logits: torch.Tensor  # student logits on the clean view (train accuracy, online fidelity)
    losses: dict[str, torch.Tensor]  # weighted terms; their sum is minimised
    teacher_logits: torch.Tensor | None = None  # teacher logits on the same clean view
    logs: dict[str, torch.Tensor] = field(default_factory=dict)  # diagnostics, not optimised

    @property
    def total(self) -> torch.Tensor:
        return sum(self.losses.values())


def warmup_factor(epoch: int, warmup: int) -> float:
    """DKD's linear warm-up of the distillation term: min(epoch / warmup, 1), epoch 1-based."""
    return 1.0 if warmup <= 0 else min(epoch / warmup, 1.0)


class Method(nn.Module):
    """Base class. Subclasses set ``Params`` and implement ``forward``."""

    Params: ClassVar[type[Params]] = Params
    uses_teacher: ClassVar[bool] = True
    # True when the method reads the teacher only through ``logits_for_batch`` of the clean view, so the exact
    # (index, view) logit cache (kdlab.teachers.cache) can serve it; False (safe) for anything else
    teacher_cacheable: ClassVar[bool] = False
    # True when ``backward`` all-reduces its own gradients under DDP (the engine then bypasses the DDP wrapper)
    syncs_own_gradients: ClassVar[bool] = False
    name: ClassVar[str] = "?"

    def __init__(self, student: nn.Module, teacher: FrozenTeacher | None, num_classes: int, params: Params):
        super().__init__()
        if self.uses_teacher and teacher is None:
            raise ValueError(f"method {self.name!r} needs a teacher (set teacher.checkpoint in the config)")
        self.student = student
        self.num_classes = num_classes
        self.params = params
        # stored outside nn.Module registration: never trained, saved with the student, or wrapped by DDP
        self.__dict__["teacher"] = teacher

    teacher: FrozenTeacher | None

    def forward(self, batch, epoch: int) -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    # Which distillation-data extras (kdlab.fidelity.policies) a method honours: unlabelled samples need a method
    # whose only use of the labels is `self.ce`; per-sample temperatures need the method to read batch.temperature.
    labels_only_in_ce: ClassVar[bool] = False
    per_sample_temperature: ClassVar[bool] = False

    def __call__(self, batch, *args, **kwargs):
        mask = getattr(batch, "label_mask", None)
        if mask is not None and not self.labels_only_in_ce:
            raise ValueError(f"method {self.name!r} uses the labels beyond cross-entropy, so it cannot train on the "
                             "unlabelled inputs that distill_data adds (mixup, noise, extra sources); use method kd")
        if getattr(batch, "temperature", None) is not None and not self.per_sample_temperature:
            raise ValueError(f"method {self.name!r} does not support distill_data.temperatures (per-source "
                             "temperature); use method kd or remove distill_data.temperatures")
        self.__dict__["_label_mask"] = mask  # read by `ce` during this forward
        return super().__call__(batch, *args, **kwargs)

    def backward(self, out: StepOutput) -> None:
        """Default: minimise the sum of the loss terms. DHKD overrides this (gradient alignment)."""
        out.total.backward()

    def eval_model(self) -> nn.Module:
        """The network used for evaluation and saved as the result (DHKD: the backbone with its CE head)."""
        return self.student

    def to(self, *args, **kwargs):
        if self.teacher is not None:
            self.teacher.to(*args, **kwargs)
        return super().to(*args, **kwargs)

    # helpers shared by the softmax-based methods
    def ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean CE over the labelled samples of the current batch (``Batch.label_mask``); 0 when none is labelled."""
        mask = self.__dict__.get("_label_mask")
        if mask is None:
            return F.cross_entropy(logits, target)
        # Σ over labelled rows / their count, without boolean indexing (no host sync); unlabelled targets may be -1.
        per = F.cross_entropy(logits, target.clamp(min=0), reduction="none")
        return (per * mask).sum() / mask.sum().clamp(min=1)

    def standardize(self, *logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Logit standardisation (Sun et al. 2024) when the method's params switch it on."""
        if getattr(self.params, "logit_standardization", False):
            from kdlab.losses import logit_standardize

            return tuple(logit_standardize(u) for u in logits)
        return logits
