"""Ensemble teachers: several frozen models combined into one set of logits.

Stanton et al., "Does Knowledge Distillation Really Work?" (NeurIPS 2021, §4) distil from ensembles whose prediction is
the average of the members' probabilities; ``docs/reference/fidelity.md`` makes that the default and names two
alternatives (average of tempered distributions, average of logits). With several seeds, each seed distils from its own
disjoint set of members (:func:`disjoint_members`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab._checks import check_int, check_positive

__all__ = ["Ensemble", "disjoint_members"]


class Ensemble(nn.Module):
    """Frozen ensemble whose ``forward`` returns combined logits ``[N, C]`` from M members with logits ``z_m``.

    Rules:

    - ``"prob"`` (default): ``log( (1/M) Σ_m softmax(z_m) ) = logsumexp_m log_softmax(z_m) − log M``, the log of the
      averaged probabilities. ``softmax(out)`` is the ensemble's predictive distribution; a consumer applies its own
      temperature *after* combining, i.e. ``softmax(out / T)``.
    - ``"tempered_prob"`` (needs ``temperature=T``): ``log( (1/M) Σ_m softmax(z_m / T) )``, the log of the averaged
      *tempered* member distributions. The output is already on the tempered scale: ``softmax(out)`` (temperature
      1) is that average. A loss that divides the teacher's logits by T must be given ``T · out`` instead (then
      ``softmax(T·out / T)`` is the same average); dividing ``out`` by T again would temper twice.
    - ``"logit"``: ``(1/M) Σ_m z_m``, the mean of the raw logits.

    With M identical members every rule reproduces the member's distribution (``"tempered_prob"`` at temperature T).
    Members are switched to eval mode and ``requires_grad_(False)`` here, and :meth:`train` never puts them back
    into training mode, so BatchNorm statistics and dropout stay frozen. Combination runs in float32 or wider.
    """

    RULES = ("prob", "tempered_prob", "logit")

    def __init__(self, members: Sequence[nn.Module], rule: str = "prob", temperature: float | None = None):
        super().__init__()
        if isinstance(members, nn.Module) and not isinstance(members, nn.ModuleList):
            raise TypeError("members must be a list of nn.Module; wrap a single model as [model]")
        members = list(members)
        if not members:
            raise ValueError("members must hold at least one nn.Module, got an empty list")
        for i, m in enumerate(members):
            if not isinstance(m, nn.Module):
                raise TypeError(f"members[{i}] must be an nn.Module, got {type(m).__name__}")
        if rule not in self.RULES:
            raise ValueError(f"rule must be one of {self.RULES}, got {rule!r}")
        if rule == "tempered_prob":
            if temperature is None:
                raise ValueError("rule='tempered_prob' needs temperature=T > 0 (the temperature of each member)")
            temperature = check_positive(temperature, "temperature")
        elif temperature is not None:
            raise ValueError(
                f"temperature is only used by rule='tempered_prob'; with rule={rule!r} apply the temperature to the "
                "returned logits (softmax(logits / T))"
            )
        self.rule = rule
        self.temperature = temperature
        self.members = nn.ModuleList(members)
        self.num_classes: int | None = None  # known after the first forward
        for m in self.members:
            m.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> "Ensemble":
        """Set the ensemble's own flag; members always stay in eval mode (a teacher is never trained)."""
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be boolean, got {mode!r}")
        self.training = mode
        for m in self.members:
            m.eval()
        return self

    def forward(self, x) -> Tensor:
        outs = []
        for i, m in enumerate(self.members):
            z = m(x)
            if not isinstance(z, Tensor) or z.dim() != 2 or not z.is_floating_point():
                what = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
                raise ValueError(f"ensemble member {i} must return float logits [N, C], got {what}")
            outs.append(z)
        shapes = [tuple(z.shape) for z in outs]
        if len(set(shapes)) != 1:
            classes = ", ".join(f"member {i}: {s[1]} classes (batch {s[0]})" for i, s in enumerate(shapes))
            raise ValueError(f"ensemble members must return logits of the same shape [N, C]; got {classes}")
        if self.num_classes is None:
            self.num_classes = shapes[0][1]
        dtype = torch.promote_types(torch.float32, outs[0].dtype)
        for z in outs[1:]:
            dtype = torch.promote_types(dtype, z.dtype)
        z = torch.stack([o.to(dtype) for o in outs])  # [M, N, C]
        if self.rule == "logit":
            return z.mean(dim=0)
        if self.rule == "tempered_prob":
            z = z / self.temperature
        # log of the mean probability, computed stably in log space.
        return torch.logsumexp(F.log_softmax(z, dim=-1), dim=0) - math.log(len(outs))

    def extra_repr(self) -> str:
        temp = f", temperature={self.temperature:g}" if self.temperature is not None else ""
        return f"rule={self.rule!r}{temp}, num_members={len(self.members)}"


def disjoint_members(pool: Sequence, size: int, seed_index: int) -> list:
    """Members ``pool[seed_index·size : (seed_index+1)·size]``: seeds 0, 1, … get disjoint, equally sized slices.

    Raises ``ValueError`` if the pool holds fewer than ``(seed_index + 1) · size`` teachers.
    """
    try:
        pool = list(pool)
    except TypeError:
        raise ValueError(f"pool must be a list of teachers, got {type(pool).__name__}") from None
    size, seed_index = check_int(size, "size", 1), check_int(seed_index, "seed_index", 0)
    start, stop = seed_index * size, (seed_index + 1) * size
    if stop > len(pool):
        raise ValueError(
            f"a pool of {len(pool)} teachers is too small for seed_index={seed_index} with size={size}: seeds "
            f"0..{seed_index} need {stop} disjoint teachers; train more teachers or lower size"
        )
    return pool[start:stop]
