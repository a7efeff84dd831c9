"""R2KD's pruned-ensemble teacher (Kim et al. 2023/2024; docs/reference/methods.md §6).

The teacher signal is ṽ = λ·v + (1−λ)·v_P, where v_P are the logits of a copy of the teacher whose Conv and Linear
weights have their smallest-magnitude fraction set to zero (per layer, once, before training, no fine-tuning).
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from torch import nn

from kdlab._checks import is_real
from kdlab.teachers.frozen import FrozenTeacher

__all__ = ["prune_copy", "PrunedEnsembleTeacher"]

# Conv1d/2d/3d and their transposed forms share _ConvNd; Linear covers every fully connected layer.
_PRUNABLE = (nn.modules.conv._ConvNd, nn.Linear)


def prune_copy(module: nn.Module, amount: float = 0.1) -> nn.Module:
    """A deep copy of ``module`` with the ``round(amount·numel)`` smallest-|w| weights of every Conv/Linear zeroed.

    Unstructured magnitude pruning applied separately to each layer's ``weight`` (global pruning would strip whole
    small layers); biases, BatchNorm and every other parameter or buffer are copied unchanged, and ``module`` itself
    is not modified. Ties in |w| are broken by ``torch.topk``, so exactly ``round(amount·numel)`` entries are zeroed
    (Python's ``round``, as in PyTorch's own pruning utilities). The copy has ``requires_grad=False`` everywhere.
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"prune_copy: module must be an nn.Module, got {type(module).__name__}")
    if not is_real(amount) or not math.isfinite(amount):
        raise ValueError(f"prune_copy: amount must be a fraction in [0, 1), got {amount!r}")
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"prune_copy: amount must be a fraction in [0, 1) (0.1 zeroes 10% per layer), got {amount}")
    pruned = copy.deepcopy(module).requires_grad_(False)
    with torch.no_grad():
        for layer in pruned.modules():
            if not isinstance(layer, _PRUNABLE):
                continue
            weight = layer.weight
            k = round(amount * weight.numel())
            if k == 0:
                continue
            smallest = torch.topk(weight.detach().abs().flatten(), k, largest=False, sorted=False).indices
            weight.view(-1).index_fill_(0, smallest, 0.0)
    return pruned


class PrunedEnsembleTeacher:
    """Frozen teacher whose logits are ṽ = λ·v + (1−λ)·v_P (R2KD, docs/reference/methods.md §6).

    Same interface as :class:`FrozenTeacher` (``logits``, ``logits_for_batch``, ``features``, ``to``,
    ``describe``), so any logit method can take it as its teacher. ``v`` comes from the wrapped teacher (through
    ``logits_for_batch``, so a logit cache keeps working for the clean view); ``v_P`` is always computed, because
    the pruned copy is not cached.

    ``pruned_bn_mode``: ``"eval"`` (default) runs the pruned copy with its BatchNorm running statistics;
    ``"train"`` reproduces the reference code, where the pruned copy stays in train mode (batch statistics, running
    statistics updated, still no gradient).
    """

    def __init__(
        self,
        teacher: FrozenTeacher,
        lam: float = 0.7,
        amount: float = 0.1,
        pruned_bn_mode: Literal["eval", "train"] = "eval",
    ):
        if not isinstance(teacher, FrozenTeacher):
            raise ValueError(
                f"PrunedEnsembleTeacher: teacher must be a FrozenTeacher (wrap your module with "
                f"kdlab.teachers.frozen.FrozenTeacher), got {type(teacher).__name__}"
            )
        if not is_real(lam) or not 0.0 <= lam <= 1.0:
            raise ValueError(f"PrunedEnsembleTeacher: lam must be a weight in [0, 1] (R2KD uses 0.7), got {lam!r}")
        if pruned_bn_mode not in ("eval", "train"):
            raise ValueError(f"PrunedEnsembleTeacher: pruned_bn_mode must be 'eval' or 'train', got {pruned_bn_mode!r}")
        self.base = teacher
        self.lam = float(lam)
        self.amount = amount
        self.pruned_bn_mode = pruned_bn_mode
        self.pruned = prune_copy(teacher.module, amount).train(pruned_bn_mode == "train")

    @property
    def module(self) -> nn.Module:
        """The unpruned teacher network (what evaluation and fidelity reports compare against)."""
        return self.base.module

    def to(self, device) -> "PrunedEnsembleTeacher":
        self.base.to(device)
        self.pruned.to(device)
        return self

    def pruned_logits(self, x: torch.Tensor) -> torch.Tensor:
        """v_P: logits of the pruned copy for exactly this input."""
        # Re-assert the mode: a caller's .train()/.eval() on a parent module never reaches this copy, but be explicit.
        self.pruned.train(self.pruned_bn_mode == "train")
        with torch.inference_mode():
            out = self.pruned(x)
        return out.clone()  # a normal tensor, usable in autograd graphs

    def combine(self, v: torch.Tensor, v_pruned: torch.Tensor) -> torch.Tensor:
        """ṽ = λ·v + (1−λ)·v_P."""
        return self.lam * v + (1.0 - self.lam) * v_pruned

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(v, v_P)`` for exactly this input."""
        return self.base.logits(x), self.pruned_logits(x)

    def parts_for_batch(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(v, v_P)`` for a training batch (v may come from the wrapped teacher's cache)."""
        return self.base.logits_for_batch(batch), self.pruned_logits(batch.x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(*self.parts(x))

    def logits_for_batch(self, batch) -> torch.Tensor:
        return self.combine(*self.parts_for_batch(batch))

    def features(self, x: torch.Tensor, stage_paths: list[str] | None = None, preact: bool = False):
        """``(ṽ, features of the unpruned teacher)``: an ensemble has no single feature map, so the base one is used."""
        v, feats = self.base.features(x, stage_paths, preact=preact)
        return self.combine(v, self.pruned_logits(x)), feats

    def describe(self) -> dict:
        zeros = sum(int((m.weight == 0).sum()) for m in self.pruned.modules() if isinstance(m, _PRUNABLE))
        total = sum(m.weight.numel() for m in self.pruned.modules() if isinstance(m, _PRUNABLE))
        return {
            **self.base.describe(),
            "ensemble": "pruned",
            "lam": self.lam,
            "amount": self.amount,
            "pruned_bn_mode": self.pruned_bn_mode,
            "pruned_zero_fraction": zeros / total if total else 0.0,
        }
