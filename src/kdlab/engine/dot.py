"""DOT, the distillation-oriented trainer (Zhao, Song & Qiu, "DOT: A Distillation-Oriented Trainer", ICCV 2023;
docs/reference/methods.md §17): SGD whose momentum is split between the task loss and the distillation loss.

The gradient of the CE term (g_task) and that of every other term together (g_kd) are computed separately; each has
its own momentum buffer, with momentum μ − Δ for the task and μ + Δ for distillation, and the step is their sum:

    v_task ← (μ − Δ)·v_task + g_task + λ·θ,   v_kd ← (μ + Δ)·v_kd + g_kd,   θ ← θ − η·v_task − η·v_kd

A parameter that only one of the two terms reaches (the classifier under a feature loss, a connector) keeps plain
momentum μ on that buffer and takes the weight decay λ there, as in mdistiller's ``engine/dot.py``. The first step of
a buffer is its gradient (PyTorch's SGD convention). Both buffers are optimizer state, so a checkpoint holds them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from kdlab import distributed as dist

__all__ = ["DOT", "dot_backward"]


class DOT(torch.optim.Optimizer):
    """The distillation-oriented trainer (module docstring). Per step: :func:`dot_backward` (or any code that sets
    ``p.grad`` to the task gradient and calls :meth:`set_distillation_grads`), then :meth:`step`."""

    def __init__(self, params, lr: float, momentum: float = 0.9, delta: float = 0.075, weight_decay: float = 0.0):
        if lr < 0:
            raise ValueError(f"DOT: lr must be >= 0; got {lr}")
        if weight_decay < 0:
            raise ValueError(f"DOT: weight_decay must be >= 0; got {weight_decay}")
        if not 0 <= momentum - delta <= momentum + delta < 1:
            raise ValueError(f"DOT: the momenta μ − Δ = {momentum - delta:g} and μ + Δ = {momentum + delta:g} must lie "
                             f"in [0, 1) (optim.momentum={momentum:g}, optim.dot_delta={delta:g})")
        super().__init__(params, {"lr": lr, "momentum": momentum, "delta": delta, "weight_decay": weight_decay})
        self._kd_grads: list[Tensor | None] | None = None

    def set_distillation_grads(self, grads: Sequence[Tensor | None]) -> None:
        """The distillation terms' gradient of every parameter, in ``param_groups`` order (None: not reached)."""
        params = [p for group in self.param_groups for p in group["params"]]
        if len(grads) != len(params):
            raise ValueError(f"DOT: {len(grads)} distillation gradients for {len(params)} parameters")
        self._kd_grads = list(grads)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        kd = iter(self._kd_grads) if self._kd_grads is not None else None
        for group in self.param_groups:
            lr, mu, delta, wd = group["lr"], group["momentum"], group["delta"], group["weight_decay"]
            for p in group["params"]:
                g_task, g_kd = p.grad, next(kd) if kd is not None else None
                state = self.state[p]
                if g_task is not None:
                    buf = _momentum(state, "momentum_buffer", g_task.add(p, alpha=wd) if wd else g_task,
                                    mu - delta if g_kd is not None else mu)
                    p.add_(buf, alpha=-lr)
                if g_kd is not None:
                    buf = _momentum(state, "momentum_kd_buffer",
                                    g_kd if g_task is not None or not wd else g_kd.add(p, alpha=wd),
                                    mu + delta if g_task is not None else mu)
                    p.add_(buf, alpha=-lr)
        self._kd_grads = None
        return loss


def _momentum(state: dict, key: str, grad: Tensor, momentum: float) -> Tensor:
    buf = state.get(key)
    if buf is None:
        buf = state[key] = torch.clone(grad).detach()
    else:
        buf.mul_(momentum).add_(grad)
    return buf


def dot_backward(losses: dict[str, Tensor], params: list[Tensor], optimizer: DOT) -> None:
    """The task gradient (of ``losses["ce"]``) into ``p.grad`` and the distillation gradient (of the sum of the
    other terms) into the optimizer, each averaged over the processes under torchrun (the caller runs the forward
    without DDP's own gradient sync). Parameters a term does not reach get None for it."""
    if "ce" not in losses:
        raise ValueError(f"optim.optimizer=dot separates the CE term's gradient from the distillation terms', but the "
                         f"method's terms are {sorted(losses)} (no 'ce'); use optim.optimizer=sgd")
    rest = [t for k, t in losses.items() if k != "ce"]
    kd = sum(rest) if rest else None
    kd = kd if isinstance(kd, Tensor) and kd.requires_grad else None
    g_task = torch.autograd.grad(losses["ce"], params, retain_graph=kd is not None, allow_unused=True)
    g_kd = torch.autograd.grad(kd, params, allow_unused=True) if kd is not None else (None,) * len(params)
    dist.all_reduce_mean_([g for g in (*g_task, *g_kd) if g is not None])
    for p, g in zip(params, g_task):
        p.grad = g
    optimizer.set_distillation_grads(g_kd)
