"""Student initialisation from the teacher's weights (Stanton et al., NeurIPS 2021, §6 "initialisation").

θ_s = λ·θ_teacher + (1−λ)·θ_random for every parameter and floating buffer, with the random init being the student's
own (seeded) initialisation. Stanton et al. show that a student started close to the teacher (λ near 1) reaches much
higher fidelity, so the optimiser — not the student's capacity — limits agreement.
"""

from __future__ import annotations

import torch
from torch import nn

from kdlab._checks import is_real

__all__ = ["init_from_teacher", "recompute_bn_stats"]

_BN = (nn.modules.batchnorm._BatchNorm,)


def _inputs(batch) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(getattr(batch, "x", None), torch.Tensor):
        return batch.x
    raise ValueError(f"loader must yield input tensors, (x, y) tuples or batches with .x; got {type(batch).__name__}")


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, loader) -> int:
    """Reset every BatchNorm's running mean/var and re-estimate them with one pass over ``loader`` in train mode
    (``momentum=None``: the cumulative average over all batches, not an exponential one). Returns the batches seen."""
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not bns:
        return 0
    flags = [(m, m.training) for m in model.modules()]
    momenta = [(m, m.momentum) for m in bns]
    seen = 0
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for batch in loader:
            model(_inputs(batch))
            seen += 1
    finally:
        for m, mom in momenta:
            m.momentum = mom
        for m, flag in flags:
            m.training = flag
    if seen == 0:
        raise ValueError("loader yielded no batches, so the BatchNorm statistics could not be recomputed")
    return seen


@torch.no_grad()
def init_from_teacher(student: nn.Module, teacher: nn.Module, lam: float, loader=None,
                      bn: str = "recompute") -> nn.Module:
    """Set ``student``'s weights to θ = λ·θ_teacher + (1−λ)·θ_student per tensor (in place; returns ``student``).

    The two models must have the same state-dict keys and tensor shapes (``ValueError`` naming the tensor). Integer
    buffers (BatchNorm's batch counter) are the teacher's for λ = 1 and kept otherwise. Endpoints are exact: λ = 1
    copies every teacher tensor bit for bit (running statistics included), λ = 0 leaves the student untouched.
    For 0 < λ < 1, ``bn="recompute"`` (default) re-estimates BatchNorm running statistics with one train-mode pass
    over ``loader`` (interpolated statistics do not describe the interpolated network's activations);
    ``bn="keep"`` keeps the interpolated statistics λ·stats_t + (1−λ)·stats_s instead.
    """
    if not is_real(lam) or not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be a number in [0, 1] (the teacher's weight), got {lam!r}")
    if bn not in ("recompute", "keep"):
        raise ValueError(f"bn must be 'recompute' or 'keep', got {bn!r}")
    if not isinstance(student, nn.Module) or not isinstance(teacher, nn.Module):
        raise ValueError("student and teacher must be nn.Module instances of the same architecture")
    s_state, t_state = student.state_dict(), teacher.state_dict()
    if s_state.keys() != t_state.keys():
        only_s = sorted(set(s_state) - set(t_state))[:5]
        only_t = sorted(set(t_state) - set(s_state))[:5]
        raise ValueError("init_from_teacher needs the same architecture for student and teacher; tensors only in the "
                         f"student: {only_s}, only in the teacher: {only_t} (an ensemble teacher cannot be used)")
    for name, s in s_state.items():
        if s.shape != t_state[name].shape:
            raise ValueError(f"tensor {name!r} has shape {tuple(s.shape)} in the student but "
                             f"{tuple(t_state[name].shape)} in the teacher; init_from_teacher needs one architecture")
    has_bn = any(isinstance(m, _BN) and m.track_running_stats for m in student.modules())
    if 0.0 < lam < 1.0 and bn == "recompute" and has_bn and loader is None:
        raise ValueError("init_from_teacher with bn='recompute' needs a loader for the BatchNorm statistics pass; "
                         "pass loader=... or bn='keep'")
    if lam == 0.0:
        return student  # the random init, untouched
    for name, s in s_state.items():  # state_dict tensors share storage with the module: copy_ writes through
        t = t_state[name].to(s.device)
        if lam == 1.0:
            s.copy_(t)
        elif s.is_floating_point():
            s.copy_(lam * t.to(s.dtype) + (1.0 - lam) * s)
    if lam < 1.0 and bn == "recompute" and has_bn:
        recompute_bn_stats(student, loader)
    return student
