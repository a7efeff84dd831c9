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
        return F.cross_entropy(logits, target)

    def standardize(self, *logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Logit standardisation (Sun et al. 2024) when the method's params switch it on."""
        if getattr(self.params, "logit_standardization", False):
            from kdlab.losses import logit_standardize

            return tuple(logit_standardize(u) for u in logits)
        return logits
