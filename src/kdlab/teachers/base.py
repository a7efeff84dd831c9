"""The teacher protocol: what methods, the engine and reports may ask of a frozen teacher.

Three implementations: :class:`~kdlab.teachers.frozen.FrozenTeacher` (one network, or an
:class:`~kdlab.teachers.ensemble.Ensemble` of several), :class:`~kdlab.teachers.cache.CachedTeacher` (exact logits
looked up by (sample, view)) and :class:`~kdlab.teachers.pruned.PrunedEnsembleTeacher` (R2KD's λ·v + (1−λ)·v_P).
None is an ``nn.Module``: a method that holds a teacher never trains, saves or DDP-wraps it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Teacher(Protocol):
    @property
    def module(self) -> nn.Module:
        """The teacher network (what evaluation and fidelity reports compare against)."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for exactly this input, without gradient."""

    def logits_for_batch(self, batch) -> torch.Tensor:
        """Logits for a training batch (a cache may look them up by ``batch.index`` and ``batch.view``)."""

    def features(self, x: torch.Tensor, stage_paths: list[str] | None = None,
                 preact: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
        """``(logits, {"stages": [...], "pooled": ...})`` for feature-level methods; ``stage_paths``: module paths
        of the stages (None: the model's own ``forward_features``); ``preact``: also ``"preact"``, each stage's
        pre-activation (zoo models only)."""

    def to(self, device) -> "Teacher":
        """Move to ``device`` (in place) and return self."""

    def describe(self) -> dict:
        """A JSON-able description for reports."""
