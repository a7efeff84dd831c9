"""Cross-entropy only: trains a teacher, or the no-distillation student baseline."""

from __future__ import annotations

from kdlab.methods.base import LogitMethod, Params, StepOutput
from kdlab.methods.registry import register


class CEParams(Params):
    pass


@register("ce")
class CE(LogitMethod):
    summary = "cross-entropy on the labels only: for teachers and the no-teacher baseline"
    Params = CEParams

    @classmethod
    def needs_teacher(cls, hp: CEParams) -> bool:  # a teacher, when given, only feeds the fidelity metrics
        return False

    @classmethod
    def needs_full_teacher_distribution(cls, hp: CEParams) -> bool:  # the teacher only feeds the fidelity report
        return False

    def forward(self, batch, epoch: int) -> StepOutput:
        logits = self.student(batch.x)
        teacher_logits = self.teacher.logits_for_batch(batch) if self.teacher is not None else None
        return StepOutput(logits, {"ce": self.masked_ce(logits, batch)}, teacher_logits)
