"""``kdlab.fit``: distil any student from any teacher on user tensors or Datasets, in one call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn


@dataclass
class Result:
    student: nn.Module  # the trained student (eval network of the method), on `device`
    history: list[dict[str, Any]]  # one record per epoch: lr, train loss terms/accuracy, test report
    report: dict[str, Any]  # final fidelity report (on `eval` when given, else on `train`)
    best: dict[str, Any]  # best test accuracy and its epoch


def fit(student: nn.Module, teacher: nn.Module | Sequence[nn.Module] | None, train, eval=None, method: str = "dkd",
        method_args: dict[str, Any] | None = None, epochs: int = 10, batch_size: int = 64, lr: float = 0.05,
        seed: int = 0, device: str = "cpu", out_dir: str | Path | None = None, *, momentum: float = 0.9,
        weight_decay: float = 5e-4, milestones: Sequence[int] = (), gamma: float = 0.1, augment=None,
        eval_every: int = 1, progress: bool = False) -> Result:
    """Train ``student`` by ``method`` from ``teacher`` (a module, or a list of modules = probability-averaging
    ensemble; None for ``method="ce"``).

    ``train``/``eval``: ``(inputs, labels)`` tensor pairs or any ``torch.utils.data.Dataset`` of (input, label);
    inputs are used as given (normalise them yourself). ``augment``: an optional ``kdlab.data`` view augmentation.
    With ``out_dir``, checkpoints and logs are written there and a rerun resumes.
    """
    from kdlab import methods
    from kdlab.data import BatchLoader, as_tensors
    from kdlab.engine.loop import LoopSettings, train_loop
    from kdlab.engine.seeding import seed_everything
    from kdlab.eval.fidelity import fidelity_report
    from kdlab.teachers.frozen import FrozenTeacher

    dev = torch.device(device)
    seed_everything(seed)
    x, y = as_tensors(train)
    eval_xy = as_tensors(eval) if eval is not None else None

    teacher_module = None
    if teacher is not None:
        if isinstance(teacher, (list, tuple)):
            from kdlab.teachers import Ensemble

            teacher_module = Ensemble(list(teacher))
        else:
            teacher_module = teacher
        teacher_module = teacher_module.to(dev)
    student = student.to(dev)
    max_label = int(max(y.max(), eval_xy[1].max() if eval_xy is not None else 0))
    num_classes = _check_outputs(student, teacher_module, x[:2].to(dev), max_label)

    m = methods.build(method, student, FrozenTeacher(teacher_module) if teacher_module is not None else None,
                      num_classes, method_args)
    m = m.to(dev)
    train_loader = BatchLoader(x, y, batch_size, shuffle=True, augment=augment, seed=seed, device=dev)
    eval_loader = (BatchLoader(*eval_xy, max(batch_size, 256), shuffle=False, seed=seed, device=dev)
                   if eval_xy is not None else None)
    settings = LoopSettings(
        epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay, milestones=list(milestones),
        gamma=gamma, eval_every=eval_every, out_dir=Path(out_dir) if out_dir is not None else None,
        progress=progress, tensorboard=False, config_hash=f"fit:{method}:{epochs}:{batch_size}:{lr}:{seed}",
    )
    result = train_loop(m, train_loader, eval_loader, num_classes, settings, teacher=m.teacher)
    final_net = m.eval_model()
    data = eval_xy if eval_xy is not None else (x, y)
    if teacher_module is not None:
        report = fidelity_report(teacher_module, final_net, data, batch_size=max(batch_size, 256), device=dev)
    else:
        from kdlab.eval.fidelity import evaluate_accuracy

        report = evaluate_accuracy(final_net, data, batch_size=max(batch_size, 256), device=dev)
    return Result(student=final_net, history=result.history, report=report, best=result.best)


def _check_outputs(student: nn.Module, teacher: nn.Module | None, x: torch.Tensor, max_label: int) -> int:
    """Class count of the student; errors when the teacher or the labels do not fit it."""
    with torch.no_grad():
        was = student.training
        student.eval()
        s = student(x)
        student.train(was)
        if s.ndim != 2:
            raise ValueError(f"the student must return logits [N, C]; it returned shape {tuple(s.shape)}")
        if teacher is not None:
            was = teacher.training
            teacher.eval()
            t = teacher(x)
            teacher.train(was)
            if t.ndim != 2 or t.shape[1] != s.shape[1]:
                raise ValueError(f"teacher has {t.shape[-1]} classes but the student has {s.shape[1]}")
    if max_label >= s.shape[1]:
        raise ValueError(f"labels go up to {max_label} but the student has only {s.shape[1]} outputs")
    return s.shape[1]
