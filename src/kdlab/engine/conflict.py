"""Gradient conflict between loss terms, per parameter group (``run.grad_conflict_every``).

DHKD (Yang et al., KDD 2025, §3) explains why CE and BinaryKL on one head collapse: their gradients conflict in the
classifier, not in the backbone. Every ``every`` steps this measures, for each pair (a, b) of the step's loss terms
(``StepOutput.losses``, the weighted terms) and each parameter group G of :meth:`Method.parameter_groups`
(``classifier``: the student's final linear layer; ``backbone``: the rest of the student; ``extras``: the method's
own trainable parts, e.g. DHKD's second head), the cosine

    cos_G(a, b) = ⟨g_a, g_b⟩ / (‖g_a‖ ‖g_b‖),   g_a = ∇_G L_a  (all of G's parameters as one vector),

and reports per epoch its mean over the measured steps and the share of those steps where it is negative (the terms
conflict: a step along one term's gradient increases the other's loss); ``None`` for a pair that never reaches G with
both terms. A step where one term's gradient on G is zero is left out for that pair (the cosine is undefined).

The gradients come from ``torch.autograd.grad(..., retain_graph=True)`` before the step's own backward, which writes
no ``.grad``, changes no state and draws no random number: the training step is bit-identical with the option on
or off. Under torchrun every term's gradient is averaged over the processes first (one all-reduce of the measured
gradients), so the cosine is that of the global batch's gradients, as one process would measure it.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import torch
from torch import Tensor

from kdlab import distributed as dist


class GradConflict:
    """Per-epoch means of the pairwise gradient cosines of the loss terms on each parameter group."""

    def __init__(self, groups: dict[str, list[torch.nn.Parameter]], every: int):
        self.every = every
        self.groups = {name: [p for p in params if p.requires_grad] for name, params in groups.items()}
        self.groups = {name: params for name, params in self.groups.items() if params}
        self._params = [p for params in self.groups.values() for p in params]
        self._sums: dict[str, Tensor] = {}  # pair -> [3, groups]: Σ cosine, steps measured, steps with cosine < 0
        self._steps = 0

    def due(self, step: int) -> bool:
        """Whether step ``step`` (0-based within its epoch) is measured: a pure function of the step, so a resumed
        run measures the same steps."""
        return self.every > 0 and step % self.every == 0

    def measure(self, losses: dict[str, Tensor]) -> None:
        """Add the cosines of this step's terms (their graphs are kept for the step's own backward)."""
        names = sorted(k for k, v in losses.items() if isinstance(v, Tensor) and v.requires_grad)
        self._steps += 1
        if len(names) < 2:
            return
        grads = {}
        for k in names:
            g = torch.autograd.grad(losses[k], self._params, retain_graph=True, allow_unused=True)
            grads[k] = [torch.zeros_like(p) if a is None else a for p, a in zip(self._params, g)]
        dist.all_reduce_mean_([g for k in names for g in grads[k]])  # the global batch's gradients
        # per group: a [terms, group size] matrix; its Gram matrix gives every pair's dot product at once
        gram = []
        start = 0
        for params in self.groups.values():
            flat = torch.stack([torch.cat([g.reshape(-1) for g in grads[k][start:start + len(params)]]).double()
                                for k in names])
            gram.append(flat @ flat.T)
            start += len(params)
        gram = torch.stack(gram)  # [groups, terms, terms]
        norms = gram.diagonal(dim1=1, dim2=2).sqrt()  # [groups, terms]
        for i, j in combinations(range(len(names)), 2):
            denom = norms[:, i] * norms[:, j]
            valid = denom > 0
            cos = torch.where(valid, gram[:, i, j] / denom.clamp_min(torch.finfo(denom.dtype).tiny), 0.0)
            pair = f"{names[i]}_vs_{names[j]}"
            add = torch.stack([cos, valid.double(), (valid & (cos < 0)).double()])
            self._sums[pair] = self._sums[pair] + add if pair in self._sums else add

    def epoch_summary(self) -> dict[str, Any] | None:
        """``{"steps": n, "cosine": {PAIR: {group: mean cosine}}, "negative": {PAIR: {group: share of the steps with a
        negative cosine}}}`` over the epoch's measured steps (None where undefined; one host transfer), then reset;
        None when no step was measured. PAIR is ``"a_vs_b"`` (the terms' names in sorted order)."""
        if self._steps == 0:
            return None
        out: dict[str, Any] = {"steps": self._steps, "cosine": {}, "negative": {}}
        for pair in sorted(self._sums):
            total, count, negative = self._sums[pair].cpu().tolist()
            out["cosine"][pair] = {g: (t / c if c else None) for g, t, c in zip(self.groups, total, count)}
            out["negative"][pair] = {g: (k / c if c else None) for g, k, c in zip(self.groups, negative, count)}
        self._sums, self._steps = {}, 0
        return out
