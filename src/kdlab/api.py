"""``kdlab.fit``: distil any student from any teacher on user tensors or Datasets, in one call.

It assembles through :mod:`kdlab.build`, the code behind ``kdlab train``, so the Python API and the CLI train the
same way and share one notion of "the same run" for resuming in ``out_dir``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from kdlab import build, methods
from kdlab.config import validate
from kdlab.engine.guard import TrainingDiverged

__all__ = ["Result", "TrainingDiverged", "fit"]
from kdlab.eval.fidelity import evaluate_accuracy, fidelity_report


@dataclass
class Result:
    student: nn.Module  # the trained student (eval network of the method), on `device`
    history: list[dict[str, Any]]  # one record per epoch: lr, train loss terms/accuracy, test report
    report: dict[str, Any]  # final report on `eval` (else `train`): student_acc/nll/ece, + teacher and fidelity keys
    best: dict[str, Any]  # best test accuracy and its epoch


def fit(student: nn.Module, teacher: nn.Module | Sequence[nn.Module] | None, train, eval=None, method: str = "dkd",
        method_args: dict[str, Any] | None = None, epochs: int = 10, batch_size: int = 64, lr: float = 0.05,
        seed: int = 0, device: str = "cpu", out_dir: str | Path | None = None, *, momentum: float = 0.9,
        weight_decay: float = 5e-4, milestones: Sequence[int] = (), gamma: float = 0.1, augment=None,
        eval_every: int = 1, progress: bool = False, grad_clip: float | None = None,
        on_divergence: str = "stop") -> Result:
    """Train ``student`` by ``method`` from ``teacher`` (a module, or a list of modules = probability-averaging
    ensemble; None for ``method="ce"``).

    ``train``/``eval``: ``(inputs, labels)`` tensor pairs or any ``torch.utils.data.Dataset`` of (input, label);
    inputs are used as given (normalise them yourself). ``augment``: an optional ``kdlab.data`` view augmentation.
    With ``out_dir``, checkpoints, logs, ``config.yaml`` and ``final.json`` are written there and a rerun resumes;
    a rerun with any argument, the data, the student's architecture or the teacher's weights changed is refused.

    A run that collapses (kdlab.engine.guard) raises :class:`kdlab.TrainingDiverged` (``on_divergence="warn"``:
    a warning, and training goes on); ``grad_clip`` clips the global gradient norm (off by default).
    """
    cfg = validate({
        "seed": seed,
        "method": {"name": method, "args": dict(method_args or {})},
        "optim": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "momentum": momentum,
                  "weight_decay": weight_decay, "milestones": list(milestones), "gamma": gamma, "grad_clip": grad_clip},
        "eval": {"every": eval_every},
        "run": {"device": str(device), "progress": progress, "tensorboard": False, "on_divergence": on_divergence},
        "teacher": {"cache": {"enabled": False}},
    }, "kdlab.fit", method_schema=lambda name: methods.get(name).Params)
    outcome, _, data = build.distil_objects(student, teacher, train, eval, cfg,
                                            Path(out_dir) if out_dir is not None else None, augment)
    final_net = outcome.method.eval_model()
    dev, bs = torch.device(device), max(batch_size, 256)
    teacher_module = outcome.method.teacher.module if outcome.method.teacher is not None else None
    if teacher_module is not None:
        report = fidelity_report(teacher_module, final_net, data, batch_size=bs, device=dev)
    else:  # the same student_* keys as with a teacher, so code reading a report need not know which it got
        acc = evaluate_accuracy(final_net, data, batch_size=bs, device=dev)
        report = {"n": acc["n"], **{f"student_{k}": v for k, v in acc.items() if k != "n"}}
    return Result(student=final_net, history=outcome.result.history, report=report, best=outcome.result.best)
