"""Cross-entropy only: trains a teacher, or the no-distillation student baseline."""

from __future__ import annotations

from kdlab.methods.base import Method, Params, StepOutput
from kdlab.methods.registry import register


class CEParams(Params):
    pass


@register("ce")
class CE(Method):
    Params = CEParams
    teacher_cacheable = True  # reads the teacher only via logits_for_batch (clean view)
    uses_teacher = False

    def forward(self, batch, epoch: int) -> StepOutput:
        logits = self.student(batch.x)
        teacher_logits = self.teacher.logits_for_batch(batch) if self.teacher is not None else None
        return StepOutput(logits, {"ce": self.ce(logits, batch.y)}, teacher_logits)
