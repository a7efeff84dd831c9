"""``kdlab.fit``: distil any student from any teacher on user tensors or Datasets, in one call.

It assembles through :mod:`kdlab.builder`, the code behind ``kdlab train``, so the Python API and the CLI train the
same way and share one notion of "the same run" for resuming in ``out_dir``. Errors name ``fit``'s own arguments
(``method_args['k']``, ``epochs``), not the config keys the CLI would show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from kdlab import builder, methods
from kdlab._checks import SettingError
from kdlab._modes import left_as_found
from kdlab.config import validate
from kdlab.engine.device import resolve_device
from kdlab.engine.guard import TrainingDiverged
from kdlab.eval.fidelity import evaluate_accuracy, fidelity_report

__all__ = ["Result", "TrainingDiverged", "fit"]


@dataclass
class Result:
    student: nn.Module  # the trained student (eval network of the method), on `device`, in eval mode
    history: list[dict[str, Any]]  # one record per epoch: lr, train loss terms/accuracy, test report
    report: dict[str, Any]  # final report on `eval` (else `train`): student_acc/nll/ece, + teacher and fidelity keys
    best: dict[str, Any]  # best test accuracy and its epoch
    adapted: list[dict[str, Any]] = field(default_factory=list)  # method defaults fitted to the data (see fit)


# config keys as fit's arguments, for error messages
_NAMES = {"teacher.checkpoint": "teacher (a module or a list of modules)", "teacher.checkpoints": "teacher",
          "run.device": "device", "eval.every": "eval_every", "method.name": "method", "method.args": "method_args",
          "data.augment": "augment", "run.progress": "progress", "run.curves": "curves"}


def argument_name(key: str) -> str:
    """A config key in ``fit``'s words: ``method.args.k`` → ``method_args['k']``, ``optim.epochs`` → ``epochs``."""
    if key.startswith("method.args."):
        return f"method_args[{key[len('method.args.'):]!r}]"
    if key.startswith("method.add."):  # method.add.0.args.k -> add[0]['args']['k']
        index, *rest = key[len("method.add."):].split(".")
        return f"add[{index}]" + "".join(f"[{part!r}]" for part in rest)
    if key in _NAMES:
        return _NAMES[key]
    return key[len("optim."):] if key.startswith("optim.") else key


def fit(student: nn.Module, teacher: nn.Module | Sequence[nn.Module] | None, train, eval=None, method: str = "kd",
        method_args: dict[str, Any] | None = None, epochs: int = 10, batch_size: int = 64, lr: float = 0.05,
        seed: int = 0, device: str = "cpu", out_dir: str | Path | None = None, *, optimizer: str = "sgd",
        momentum: float = 0.9, nesterov: bool = False, weight_decay: float = 5e-4, schedule: str = "step",
        milestones: Sequence[int] = (), gamma: float = 0.1, warmup_epochs: int = 0, augment=None,
        eval_every: int = 1, progress: bool = False, workers: int = 0, grad_clip: float | None = None,
        on_divergence: str = "stop", add: Sequence[dict[str, Any]] = (), curves: bool = False) -> Result:
    """Train ``student`` by ``method`` from ``teacher`` (a module, or a list of modules = probability-averaging
    ensemble; None for ``method="ce"``). Returns the student in eval mode; the teacher's train/eval mode and its
    parameters' ``requires_grad`` are restored as they were passed.

    ``train``/``eval``: ``(inputs, labels)`` tensor or numpy pairs, or any ``torch.utils.data.Dataset`` of (input,
    label); inputs are used as given (normalise them yourself). Pairs are held in memory; a ``train`` Dataset is read
    every epoch (a random transform in its ``__getitem__`` draws anew each epoch, seeded by (seed, epoch, index)), in
    ``workers`` processes (0: in this one); an ``eval`` Dataset is read once. ``augment``: an optional ``kdlab.data``
    view augmentation of pairs. With ``out_dir``, checkpoints, logs, ``config.yaml`` and ``final.json`` are written
    there (``curves.png`` too with ``curves=True``; ``kdlab plot OUT_DIR`` draws it later) and a rerun resumes; a
    rerun with any argument, the data, the student's architecture or the teacher's weights changed is refused,
    except more ``epochs`` with a step or constant schedule
    (the run is extended).

    Defaults: ``method="kd"`` (T=4, 0.1·CE + 0.9·KD). Every method's default ``method_args`` are its CIFAR-100 recipe
    (``kdlab methods``; docs/reference/methods.md); the ones that only suit CIFAR-100 are fitted to the data when not
    given, each change logged and listed in ``Result.adapted``: TTM's β = 100 is scaled by C/100 for C < 100
    classes, DKD's (SDD's) NCKD β by (C − 1)/99 and CAKD's WCD β by |W|/95, CAKD's top-k strong set is clamped to
    C − 1, DKD's, SDD's and CAKD's 20-of-240-epoch warm-up is scaled to ``epochs``, R2KD's value weight by C/100,
    MLKD's weights by C/100 (its class and batch terms further by (C/100)³ and (C/100)²), R2KD's and MLKD's image
    augmentations give way on other inputs, feature methods' weights fit zoo networks' maps (docs/api.md). SGD
    with momentum 0.9 and weight decay 5e-4 are the CIFAR-100 recipe's; ``optimizer="adamw"`` (betas 0.9, 0.999),
    ``schedule`` "step" (×``gamma`` after each of ``milestones``), "cosine" or "constant", and ``warmup_epochs`` of
    linear lr warm-up are the alternatives.

    ``add``: methods whose distillation terms are added to ``method``'s, as the papers combine them, e.g.
    ``add=[{"name": "crd", "weight": 0.8, "args": {...}}]`` (``kdlab.methods.compose``; CE is counted once).

    A run that collapses (kdlab.engine.guard) raises :class:`kdlab.TrainingDiverged` (``on_divergence="warn"``:
    a warning, and training goes on); ``grad_clip`` clips the global gradient norm (off by default).
    """
    cfg = validate({
        "seed": seed,
        "method": {"name": method, "args": dict(method_args or {}), "add": [dict(a) for a in add]},
        "optim": {"epochs": epochs, "batch_size": batch_size, "optimizer": optimizer, "lr": lr, "momentum": momentum,
                  "nesterov": nesterov, "weight_decay": weight_decay, "schedule": schedule,
                  "milestones": list(milestones), "gamma": gamma, "warmup_epochs": warmup_epochs,
                  "grad_clip": grad_clip},
        "eval": {"every": eval_every},
        "run": {"device": str(device), "progress": progress, "tensorboard": False, "curves": curves,
                "on_divergence": on_divergence},
        "teacher": {"cache": {"enabled": False}},
    }, "kdlab.fit", method_schema=lambda name: methods.get(name).Params, name=argument_name)
    users = [teacher] if isinstance(teacher, nn.Module) else [m for m in (teacher or []) if isinstance(m, nn.Module)]
    try:
        with left_as_found(*users):  # the frozen teacher is the user's module: give it back as it came
            outcome, final, data = builder.distil_objects(student, teacher, train, eval, cfg,
                                                        Path(out_dir) if out_dir is not None else None, augment,
                                                        workers, name=argument_name)
            final_net = outcome.method.eval_model()
            if eval is not None:  # the loop's last evaluation, on the teacher's test logits computed once per run
                report = outcome.result.last
            else:  # no test set: report on the training data, as given
                report = _report_on_train(outcome, final_net, data, resolve_device(device), max(batch_size, 256))
    except SettingError as exc:
        raise exc.renamed(argument_name) from None
    return Result(student=final_net.eval(), history=outcome.result.history, report=report, best=outcome.result.best,
                  adapted=final["adapted_defaults"])


def _report_on_train(outcome, final_net: nn.Module, data, device, batch_size: int) -> dict[str, Any]:
    """The report on the training data (``fit`` without ``eval``): fidelity with a teacher, else the same student_*
    keys, so code reading a report need not know which it got."""
    teacher = outcome.method.teacher
    if teacher is not None:
        return fidelity_report(teacher.module, final_net, data, batch_size=batch_size, device=device)
    acc = evaluate_accuracy(final_net, data, batch_size=batch_size, device=device)
    return {"n": acc["n"], **{f"student_{k}": v for k, v in acc.items() if k != "n"}}
