"""Learning-rate schedules as pure functions of the 1-based epoch (so a resume needs no scheduler state)."""

from __future__ import annotations

import math


def learning_rate(epoch: int, base_lr: float, epochs: int, schedule: str = "step",
                  milestones: list[int] | tuple[int, ...] = (), gamma: float = 0.1) -> float:
    """lr for 1-based ``epoch``.

    ``step``: base·γ^(number of milestones already passed), i.e. ×γ *after* each milestone epoch
    (CIFAR recipe: ×0.1 after 150, 180, 210 → epoch 151 is the first at 0.1×).
    ``cosine``: half-cosine from base to 0 over ``epochs``. ``constant``: base.
    """
    if epoch < 1:
        raise ValueError(f"epoch is 1-based, got {epoch}")
    if schedule == "step":
        return base_lr * gamma ** sum(epoch > m for m in milestones)
    if schedule == "cosine":
        return 0.5 * base_lr * (1 + math.cos(math.pi * (epoch - 1) / epochs))
    if schedule == "constant":
        return base_lr
    raise ValueError(f"unknown schedule {schedule!r}; use step, cosine or constant")
