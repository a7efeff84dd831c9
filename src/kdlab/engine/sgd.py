"""SGD with momentum, weight decay and Nesterov (Sutskever et al. 2013), as ``torch.optim.SGD`` steps it:

    g ← ∇θ + λθ;  b ← μb + g (b = g on the first step);  g ← g + μb (Nesterov) or b;  θ ← θ − lr·g

The update is torch's own functional form (``torch.optim.sgd.sgd``, the function ``torch.optim.SGD.step`` calls with
the same arguments), so results are bit-identical to ``torch.optim.SGD``; this class only holds the parameter
groups and momentum buffers. Why not ``torch.optim.SGD`` itself: every method of ``torch.optim.Optimizer``
(``add_param_group`` in its constructor, ``step``, ``zero_grad``) imports ``torch._dynamo`` on its first call, 1.1–1.5
CPU-s of a process that trains for less than that (docs/performance.md, "A process's fixed cost"). ``state_dict``
has ``torch.optim.SGD``'s format, so a checkpoint written by either loads into the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.sgd import sgd

__all__ = ["SGD"]


class SGD:
    """One parameter group; ``param_groups[0]["lr"]`` is set by the loop each epoch, as for a torch optimizer."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum requires a momentum > 0")
        group = {"params": list(params), "lr": lr, "momentum": momentum, "dampening": 0,
                 "weight_decay": weight_decay, "nesterov": nesterov, "maximize": False, "foreach": None,
                 "differentiable": False, "fused": None}
        self.param_groups: list[dict[str, Any]] = [group]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            buffers = [self.state.get(p, {}).get("momentum_buffer") for p in params]
            sgd(params, [p.grad for p in params], buffers, weight_decay=group["weight_decay"],
                momentum=group["momentum"], lr=group["lr"], dampening=group["dampening"],
                nesterov=group["nesterov"], maximize=group["maximize"],
                has_sparse_grad=any(p.grad.is_sparse for p in params), foreach=group["foreach"],
                fused=group["fused"])
            if group["momentum"] != 0:
                for p, buffer in zip(params, buffers):
                    self.state.setdefault(p, {})["momentum_buffer"] = buffer

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim.SGD.state_dict()``'s format: parameters by their index over the groups."""
        index = {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [index[id(p)] for p in g["params"]]}
                  for g in self.param_groups]
        return {"state": {index[id(p)]: dict(s) for p, s in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = state_dict["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("loaded state dict has a different number of parameters or groups than the optimizer")
        params = [p for g in self.param_groups for p in g["params"]]
        for mine, saved in zip(self.param_groups, groups):
            mine.update({k: v for k, v in saved.items() if k != "params"})
        # as torch.optim does: a floating state follows its parameter's dtype and device
        self.state = {params[int(i)]: {k: v.to(dtype=params[int(i)].dtype, device=params[int(i)].device)
                                       if isinstance(v, torch.Tensor) and params[int(i)].is_floating_point() else v
                                       for k, v in entry.items()}
                      for i, entry in state_dict["state"].items()}
