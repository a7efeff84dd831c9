"""Learning-rate schedules as pure functions of the 1-based epoch (so a resume needs no scheduler state)."""

from __future__ import annotations

import math

SCHEDULES = ("step", "cosine", "constant")


def learning_rate(epoch: int, base_lr: float, epochs: int, schedule: str = "step",
                  milestones: list[int] | tuple[int, ...] = (), gamma: float = 0.1, warmup: int = 0) -> float:
    """lr for 1-based ``epoch``.

    ``step``: base·γ^(number of milestones already passed), i.e. ×γ *after* each milestone epoch
    (CIFAR recipe: ×0.1 after 150, 180, 210 → epoch 151 is the first at 0.1×).
    ``cosine``: half-cosine from base to 0 over the epochs after the warm-up. ``constant``: base.
    ``warmup`` > 0: a linear warm-up first, epoch e ≤ warmup runs at (schedule's lr)·e/warmup (Goyal et al. 2017,
    per epoch), so epoch ``warmup`` is the first at the full rate.
    """
    if epoch < 1:
        raise ValueError(f"epoch is 1-based, got {epoch}")
    if schedule == "step":
        lr = base_lr * gamma ** sum(epoch > m for m in milestones)
    elif schedule == "cosine":
        after = max(epoch - warmup, 1)  # 1-based epoch of the cosine part
        lr = 0.5 * base_lr * (1 + math.cos(math.pi * (after - 1) / max(epochs - warmup, 1)))
    elif schedule == "constant":
        lr = base_lr
    else:
        raise ValueError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    return lr * min(epoch / warmup, 1.0) if warmup > 0 else lr


def depends_on_length(schedule: str) -> bool:
    """Whether the lr of an epoch depends on the run's length (``epochs``): then a longer run would have trained its
    first epochs differently, and a finished run cannot be extended exactly."""
    return schedule == "cosine"
