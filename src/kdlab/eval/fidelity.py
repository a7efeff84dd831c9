"""The fidelity report: does the student match its teacher, and how good is each on the labels?

Stanton et al., "Does Knowledge Distillation Really Work?" (NeurIPS 2021) separate *fidelity* (agreement, predictive KL
between teacher and student) from *generalization* (accuracy, NLL, calibration); ``docs/reference/fidelity.md`` asks for
both, summed per example over the whole source. :func:`fidelity_report` runs both models once over the data in eval mode
and returns every :class:`~kdlab.eval.accumulator.FidelityAccumulator` key. For the independent-student control of
``docs/reference/fidelity.md``, call it again with the same teacher and a student distilled from an independent teacher.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from kdlab._checks import check_int, check_positive
from kdlab._modes import eval_mode, left_as_found
from kdlab.data import as_tensors
from kdlab.eval.accumulator import AccuracyAccumulator, FidelityAccumulator
from kdlab.eval.bins import BinCollector
from kdlab.teachers.ensemble import Ensemble

__all__ = ["evaluate_accuracy", "fidelity_report"]

_DATA_FORMS = (
    "an (inputs, labels) pair of tensors or numpy arrays, a torch.utils.data.Dataset yielding (x, y), or an iterable "
    "of batches that are (x, y) tuples or objects with .x/.y attributes"
)


# --------------------------------------------------------------------------------------------------------------
# batching (the one place that turns every accepted data form into device batches)
# --------------------------------------------------------------------------------------------------------------
def _is_tensor_pair(data) -> bool:
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and isinstance(data[0], Tensor)
        and (data[1] is None or isinstance(data[1], Tensor))
    )


def _unpack(batch, index: int) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        x, y = batch
    elif hasattr(batch, "x") and hasattr(batch, "y"):
        x, y = batch.x, batch.y
    else:
        raise TypeError(
            f"batch {index} of data must be an (x, y) tuple or an object with .x and .y attributes, got "
            f"{type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    if not isinstance(x, Tensor):
        raise TypeError(f"batch {index} of data: inputs must be a torch.Tensor, got {type(x).__name__}")
    if y is not None and not isinstance(y, Tensor):
        raise TypeError(
            f"batch {index} of data: labels must be a torch.Tensor of class indices, got {type(y).__name__}"
        )
    return x, y


def _is_numpy_pair(data) -> bool:
    return (isinstance(data, (tuple, list)) and len(data) == 2 and any(isinstance(a, np.ndarray) for a in data)
            and all(isinstance(a, (np.ndarray, Tensor)) for a in data))


def _iter_batches(data, batch_size: int) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Yield ``(x, y)`` batches from any accepted data form (``y`` may be None for unlabelled data)."""
    if isinstance(data, Tensor):
        raise TypeError(f"data must be {_DATA_FORMS}; got a lone tensor — pass (inputs, labels)")
    if _is_numpy_pair(data):  # as kdlab.fit reads them: float inputs as float32, labels as int64
        data = as_tensors(data, progress=False)
    if _is_tensor_pair(data):
        x, y = data
        if x.dim() == 0:
            raise ValueError("data inputs must have a leading example dimension, got a 0-d tensor")
        if y is not None and (y.dim() != 1 or y.shape[0] != x.shape[0]):
            raise ValueError(
                f"data labels must have shape [N] = [{x.shape[0]}] to match the inputs {tuple(x.shape)}, "
                f"got {tuple(y.shape)}"
            )
        for start in range(0, x.shape[0], batch_size):
            yield x[start:start + batch_size], (None if y is None else y[start:start + batch_size])
        return
    if isinstance(data, Dataset):
        # Map-style and iterable datasets alike: default collation stacks the (x, y) samples.
        data = DataLoader(data, batch_size=batch_size, shuffle=False)
    elif not isinstance(data, Iterable) or isinstance(data, (str, bytes, dict)):
        raise TypeError(f"data must be {_DATA_FORMS}; got {type(data).__name__}")
    for index, batch in enumerate(data):
        yield _unpack(batch, index)


def _device_batches(data, batch_size: int, device: torch.device, transform: Callable | None):
    for x, y in _iter_batches(data, batch_size):
        x = x.to(device, non_blocking=True)
        if transform is not None:
            x = transform(x)
        yield x, (None if y is None else y.to(device, non_blocking=True))


# --------------------------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------------------------
def _check_batch_size(batch_size) -> int:
    return check_int(batch_size, "batch_size", 1)


def _check_device(device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from None


def _members(model, name: str) -> list[nn.Module]:
    """The user's modules behind ``model``: the module itself or the list members of an ensemble."""
    if isinstance(model, nn.Module):
        return [model]
    if isinstance(model, (list, tuple)):
        if not model:
            raise ValueError(f"{name} is an empty list; pass an nn.Module or a non-empty list of them (ensemble)")
        for i, m in enumerate(model):
            if not isinstance(m, nn.Module):
                raise TypeError(f"{name}[{i}] must be an nn.Module, got {type(m).__name__}")
        return list(model)
    raise TypeError(f"{name} must be an nn.Module or a list of nn.Module (ensemble), got {type(model).__name__}")


def _module_device(module: nn.Module) -> torch.device | None:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return None


@contextmanager
def _evaluation(modules: list[nn.Module], device: torch.device):
    """Move ``modules`` to ``device`` in eval mode under ``inference_mode``; on exit restore each module's training
    flag, each parameter's ``requires_grad`` and the device they came from (the user's models are left as found)."""
    modules = list({id(m): m for m in modules}.values())  # one module may be both teacher and student
    homes = [(m, _module_device(m)) for m in modules]
    try:
        with left_as_found(*modules):
            for m, home in homes:
                if home is not None and home != device:
                    m.to(device)
            with eval_mode(*modules), torch.inference_mode():
                yield
    finally:
        for m, home in homes:
            if home is not None and home != device:
                m.to(home)


def _logits(model: nn.Module, x: Tensor, name: str) -> Tensor:
    out = model(x)
    if not isinstance(out, Tensor) or out.dim() != 2:
        what = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"the {name} must return logits of shape [N, C], got {what}")
    return out


# --------------------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------------------
def fidelity_report(
    teacher: nn.Module | list[nn.Module],
    student: nn.Module,
    data,
    batch_size: int = 256,
    device="cpu",
    temperature: float | None = None,
    transform: Callable[[Tensor], Tensor] | None = None,
    topk: int = 5,
    n_bins: int = 10,
    bins: int = 0,
) -> dict:
    """Fidelity and accuracy of ``student`` against ``teacher`` on ``data`` (Stanton et al., NeurIPS 2021, §3).

    ``teacher`` is a module or a list of modules (combined by :class:`~kdlab.teachers.Ensemble` ``rule="prob"``).
    ``data`` is an ``(inputs, labels)`` pair of tensors or numpy arrays (read as ``kdlab.fit`` reads them: float
    inputs as float32), a ``Dataset`` yielding ``(x, y)``, or an iterable of
    ``(x, y)`` / ``.x``/``.y`` batches (its own batching is kept; ``batch_size`` applies to the first two).
    ``transform`` is applied to every input batch on ``device`` (e.g. normalisation) and both models see the same
    transformed batch. Both models run in eval mode under ``torch.inference_mode()``; their training flags,
    ``requires_grad`` and devices are restored afterwards.

    Returns a dict with ``n``, ``n_labeled``, ``agreement``, ``top{topk}_agreement``, ``kl`` (KL(teacher ‖ student)
    at T=1), ``kl_T{temperature}`` if a temperature is given (no T²), ``logit_l2``, ``student_acc``, ``teacher_acc``,
    ``student_nll``, ``teacher_nll``, ``student_ece``, ``teacher_ece``. Agreement and accuracies are in percent, ECE
    is a fraction. With ``bins`` > 0 also ``bins``: the fidelity per teacher-confidence and teacher-entropy bin in
    ``bins`` equal-count bins (:func:`kdlab.eval.bins.fidelity_bins`), from the same pass. Raises ``ValueError`` if
    teacher and student predict different numbers of classes.
    """
    teachers = _members(teacher, "teacher")
    if not isinstance(student, nn.Module):
        raise TypeError(
            f"student must be an nn.Module, got {type(student).__name__}; only the teacher may be a list (ensemble)"
        )
    batch_size = _check_batch_size(batch_size)
    device = _check_device(device)
    temperature = None if temperature is None else check_positive(temperature, "temperature")
    topk, n_bins = check_int(topk, "topk", 1), check_int(n_bins, "n_bins", 1)
    binned = BinCollector(bins) if check_int(bins, "bins", 0) else None

    acc = None
    with _evaluation(teachers + [student], device):
        # Built inside the context (after the snapshot): Ensemble freezes its members, which is undone on exit.
        teacher_model = teacher if isinstance(teacher, nn.Module) else Ensemble(teachers, rule="prob")
        for x, y in _device_batches(data, batch_size, device, transform):
            t = _logits(teacher_model, x, "teacher")
            s = _logits(student, x, "student")
            if t.shape[1] != s.shape[1]:
                raise ValueError(
                    f"teacher and student must predict the same classes: the teacher returns {t.shape[1]} logits "
                    f"per example but the student returns {s.shape[1]}"
                )
            if acc is None:
                acc = FidelityAccumulator(t.shape[1], temperature=temperature, topk=topk, n_bins=n_bins)
            acc.update(teacher_logits=t, student_logits=s, labels=y)
            if binned is not None:
                binned.update(teacher_logits=t, student_logits=s, labels=y)
    if acc is None:
        raise ValueError("data yielded no batches; pass a non-empty data source")
    report = acc.compute()
    if binned is not None:
        report["bins"] = binned.compute()
    return report


def evaluate_accuracy(
    model: nn.Module | list[nn.Module],
    data,
    batch_size: int = 256,
    device="cpu",
    transform: Callable[[Tensor], Tensor] | None = None,
    n_bins: int = 10,
) -> dict:
    """Accuracy (percent), mean NLL and ECE (fraction) of one model over labelled ``data``.

    Same data forms, batching, ``transform`` and eval-mode handling as :func:`fidelity_report`; a list of models is
    evaluated as a ``rule="prob"`` ensemble. Returns ``{"n", "acc", "nll", "ece"}``.
    """
    members = _members(model, "model")
    batch_size = _check_batch_size(batch_size)
    device = _check_device(device)
    n_bins = check_int(n_bins, "n_bins", 1)

    acc = None
    with _evaluation(members, device):
        net = model if isinstance(model, nn.Module) else Ensemble(members, rule="prob")
        for index, (x, y) in enumerate(_device_batches(data, batch_size, device, transform)):
            if y is None:
                raise ValueError(f"batch {index} of data has no labels; evaluate_accuracy needs (inputs, labels)")
            z = _logits(net, x, "model")
            if acc is None:
                acc = AccuracyAccumulator(z.shape[1], n_bins=n_bins)
            acc.update(z, y)
    if acc is None:
        raise ValueError("data yielded no batches; pass a non-empty data source")
    return acc.compute()
