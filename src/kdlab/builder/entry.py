"""The three entry points, each gathering the :class:`~kdlab.builder.run.RunParts` of one kind of run around its
:class:`~kdlab.builder.plan.RunPlan`:

* :func:`train_teacher` (``kdlab teacher CONFIG``): ``cfg.teacher.arch`` trained with CE on the teacher's data;
* :func:`distil` (``kdlab train CONFIG``): a student distilled from ``cfg.teacher`` by ``cfg.method``;
* :func:`distil_objects` (``kdlab.fit``): the same for a user's modules and tensors or Datasets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from kdlab.builder.inputs import (arch_of, check_classes, config_loaders, create_model, create_student, load_data,
                                load_teacher_module, load_warm_start, pretrained_start, process_group, setup)
from kdlab.builder.plan import RunPlan, plan, reads_features
from kdlab.builder.run import Outcome, RunParts, Started, card_of, finished, train_and_report
from kdlab.builder.teacher import choose_store
from kdlab.config import RunConfig
from kdlab.data import BatchLoader, ViewAugmentation, as_tensors
from kdlab.data.dataset_stream import dataset_loader
from kdlab.data.policies import build_policy
from kdlab.data.user import is_pair
from kdlab.engine.device import resolve_device
from kdlab.engine.precision import DevicePath
from kdlab.engine.run_dir import check_writable
from kdlab.engine.seeding import seed_everything
from kdlab.models import stage_shapes_of
from kdlab.models._base import ZooModel
from kdlab.models.card import model_card
from kdlab._modes import eval_mode
from kdlab.teachers import Ensemble, module_digest, published, tensor_digest

__all__ = ["distil", "distil_objects", "plan_of", "train_teacher"]


def plan_of(cfg: RunConfig) -> RunPlan:
    """The plan a config run would have, its data read for the facts (no teacher loaded, so no digests): what names
    a run by its settings, e.g. the demo's and the experiments' cached teachers."""
    splits = load_data(cfg, part="teacher" if cfg.method.name == "ce" else None)
    return plan(cfg, splits.num_classes, splits.input_shape)


def _already(done: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if done is None else {**done, "already_finished": True}


def train_teacher(cfg: RunConfig, *, leave_group: bool = True) -> dict[str, Any]:
    """Train ``cfg.teacher.arch`` with CE (on the teacher's part of the data under split control); ``final.json``
    holds it under ``"teacher"``. A finished run is left as it is (its ``final.json`` is returned)."""
    if cfg.method.name != "ce":
        raise ValueError(f"`kdlab teacher` trains with CE only; the config says method {cfg.method.name!r}")
    started = Started()
    with process_group(leave_group):
        out_dir = Path(cfg.out_dir)
        device, dp = setup(cfg)
        splits = load_data(cfg, part="teacher")
        p = plan(cfg, splits.num_classes, splits.input_shape)
        done = finished(out_dir, p)
        if done is not None:
            return _already(done)
        train, test = config_loaders(cfg, splits, device)
        probe = next(iter(test)).x
        net = create_model(cfg.teacher.arch, splits.num_classes, cfg.seed, device, probe, "teacher")
        pretrained_start(net, cfg.teacher.pretrained, cfg.teacher.arch, "teacher")
        parts = RunParts(p, out_dir, device, dp, train, test, probe, net, arch_of(cfg.teacher.arch), None,
                         card=card_of(splits, arch_of(cfg.teacher.arch), "teacher", cfg.data.name, method="ce"),
                         started=started)
        return train_and_report(parts, "teacher")[1]


def _published_name(ref: str) -> bool:
    try:
        return published.lookup(str(ref)) is not None
    except ValueError:  # an unknown published name: said when the teacher is loaded
        return True


def distil(cfg: RunConfig, *, leave_group: bool = True) -> dict[str, Any]:
    """Distil ``cfg.student.arch`` from ``cfg.teacher`` by ``cfg.method``; resumes in ``cfg.out_dir``. A finished
    run is left as it is (its ``final.json`` is returned)."""
    started = Started()
    with process_group(leave_group):
        device, dp = setup(cfg)
        try:
            splits = load_data(cfg)
        except FileNotFoundError as exc:  # say now what else is missing, not after a long download
            # a published name (repdistiller:..., torchvision:...) is fetched when needed: not missing
            missing = [p for p in cfg.teacher.checkpoints or [cfg.teacher.checkpoint]
                       if p and not _published_name(p) and not Path(p).is_file()]
            if not missing:
                raise
            raise FileNotFoundError(f"{exc}; and teacher.checkpoint={missing[0]} does not exist either: train the teacher "
                            "first (`kdlab teacher CONFIG`) or point teacher.checkpoint at its weights") from None
        nc = splits.num_classes
        train, test = config_loaders(cfg, splits, device)
        probe = next(iter(test)).x
        p = plan(cfg, nc, splits.input_shape)
        teacher_module = None
        if p.needs_teacher() or cfg.teacher.checkpoint or cfg.teacher.checkpoints:
            teacher_module = load_teacher_module(cfg.teacher, nc).to(device)
            check_classes(teacher_module, probe, nc, "teacher")
            dp.model(teacher_module)
        train, store = choose_store(p, splits, train, teacher_module, dp)
        warm = load_warm_start(cfg.student, nc)
        p = p.with_digests(**{"teacher.weights_sha256": module_digest(teacher_module) if teacher_module else None,
                              "student.weights_sha256": module_digest(warm) if warm is not None else None,
                              **(store.identity if store else {})})
        out_dir = Path(cfg.out_dir)
        done = finished(out_dir, p)
        if done is not None:
            return _already(done)
        p.log_adaptations()
        student = create_student(cfg.student, nc, cfg.seed, device, probe, warm, teacher_module, train)
        policy = build_policy(cfg.distill_data, splits, device) if cfg.distill_data.policy != "none" else None
        parts = RunParts(p, out_dir, device, dp, train, test, probe, student, arch_of(cfg.student.arch), teacher_module,
                         policy, reuse_teacher_logits=True, store=store, started=started,
                         card=card_of(splits, arch_of(cfg.student.arch), "student", cfg.data.name,
                                      arch_of(cfg.teacher.arch), cfg.method.name))
        return train_and_report(parts, "student", arch_of(cfg.teacher.arch))[1]


def distil_objects(student: nn.Module, teacher: nn.Module | Sequence[nn.Module] | None, train, eval, cfg: RunConfig,
                   out_dir: Path | None, augment: ViewAugmentation | None = None, workers: int = 0,
                   name: Callable[[str], str] = str
                   ) -> tuple[Outcome, dict[str, Any], tuple[torch.Tensor, torch.Tensor]]:
    """``kdlab.fit``'s assembly: the user's modules and data (tensor or numpy pairs, or Datasets), hyperparameters in
    ``cfg``. Returns the outcome, the final report (``final.json``) and the data to report on (``eval``, else
    ``train``, as tensors). Tensor pairs are held in memory; a ``train`` Dataset is read every epoch by
    the streamed loader (``workers`` processes; :mod:`kdlab.data.dataset_stream`). ``name`` words config keys in the
    log as the caller's arguments.

    The run's identity covers every hyperparameter, the data (hashes of the tensors), the augmentation, the
    student's structure and the teacher's weights, so a rerun on ``out_dir`` with any of them changed is refused.
    """
    started = Started()
    device = resolve_device(cfg.run.device)
    if out_dir is not None:
        check_writable(out_dir)
    seed_everything(cfg.seed)
    bs, seed = cfg.optim.batch_size, cfg.seed
    x = y = None
    if is_pair(train) or not hasattr(train, "__getitem__"):  # tensors (as_tensors names what else is wrong)
        x, y = as_tensors(train)
        probe, max_train, train_digest = x[:2], int(y.max()), _digest(x, y)
        train_loader = BatchLoader(x, y, bs, shuffle=True, augment=augment, seed=seed, device=device)
    else:  # a Dataset is read every epoch, so a random transform in its __getitem__ draws anew each epoch
        train_loader, probe, labels, train_digest = dataset_loader(train, bs, seed=seed, device=device,
                                                                   workers=workers, augment=augment)
        max_train = int(labels.max())
    eval_xy = as_tensors(eval) if eval is not None else None
    for what, inputs in (("train", x), ("eval", eval_xy[0] if eval_xy is not None else None)):
        if inputs is not None and inputs.dtype == torch.uint8:
            # the loader would scale uint8 by 1/255 while a user's teacher (and the report) see what they were
            # given: two scales. kdlab.fit uses inputs as given, so they must be given at the model's scale.
            raise ValueError(f"{what} inputs are uint8: kdlab.fit uses inputs exactly as given, so give them at the "
                             "scale your teacher was trained on: x.float() / 255 for [0, 1] pixels, or x.float() "
                             "(a Dataset of PIL images: add a transform that returns float tensors)")
    teacher_module = None
    if teacher is not None:
        teacher_module = Ensemble(list(teacher)) if isinstance(teacher, (list, tuple)) else teacher
        teacher_module = teacher_module.to(device)
    student = student.to(device)
    probe = probe.to(device)
    max_label = max(max_train, int(eval_xy[1].max()) if eval_xy is not None else 0)
    num_classes = _check_outputs(student, teacher_module, probe, max_label)
    eval_loader = (BatchLoader(*eval_xy, max(bs, 256), shuffle=False, seed=seed, device=device)
                   if eval_xy is not None else None)
    stages = _stages_of(cfg, student, teacher_module, probe)
    p = plan(cfg, num_classes, probe.shape[1:], objects=True, stages=stages, digests={
        "teacher.weights_sha256": module_digest(teacher_module) if teacher_module is not None else None,
        "data.train_sha256": train_digest,
        "data.eval_sha256": _digest(*eval_xy) if eval_xy is not None else None,
        "data.augment": json.dumps(augment.describe()) if augment is not None else None,
        "student.structure": _structure(student),
    })
    finished(out_dir, p)  # refuses a directory of another run before anything is written
    p.log_adaptations(name)
    card = model_card(arch=None, num_classes=num_classes, classes=None, input_shape=probe.shape[1:], role="student",
                      preprocessing={"input": "tensor", "scale": 1.0, "mean": None, "std": None}, data="kdlab.fit")
    parts = RunParts(p, out_dir, device, DevicePath(device.type), train_loader, eval_loader, probe, student, None,
                     teacher_module, card=card, started=started)
    outcome, final = train_and_report(parts, "student")
    report_on = eval_xy if eval_xy is not None else (x, y) if x is not None else as_tensors(train)
    return outcome, final, report_on


def _digest(*tensors: torch.Tensor) -> str:
    return hashlib.sha256("".join(tensor_digest(t) for t in tensors).encode()).hexdigest()


def _structure(model: nn.Module) -> str:
    """The student's architecture as its state dict's names, shapes and dtypes (not its initial values)."""
    return json.dumps([[k, list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()])


def _logits_of(model: nn.Module, x: torch.Tensor, who: str) -> torch.Tensor:
    """``model(x)``, or a ValueError when it is not a float32 network returning one logits tensor ``[N, C]``."""
    dtypes = sorted({str(p.dtype) for p in model.parameters() if p.is_floating_point()} - {"torch.float32"})
    if dtypes:
        raise ValueError(f"the {who}'s parameters are {', '.join(dtypes)}: kdlab trains float32 networks on float32 "
                         f"inputs; convert it with {who}.float()")
    with eval_mode(model):
        try:
            out = model(x)
        except RuntimeError as exc:
            convs = any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in model.modules())
            if not (convs and x.ndim == 2):
                raise
            raise ValueError(f"the {who} is a convolutional network but the inputs are flat vectors "
                             f"{tuple(x.shape)} (its error: {str(exc).splitlines()[0][:160]}); give images "
                             "[N, C, H, W], e.g. x.reshape(-1, 1, 28, 28) for flattened 28×28 greyscale") from None
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the {who} returned a {type(out).__name__}, not a logits tensor: kdlab needs a module whose "
                         "forward returns the logits [N, C] (wrap it in a module that returns only the logits)")
    if out.ndim != 2:
        raise ValueError(f"the {who} must return logits [N, C]; it returned shape {tuple(out.shape)}")
    return out


def _stages_of(cfg: RunConfig, student: nn.Module, teacher: nn.Module | None, x: torch.Tensor
               ) -> dict[str, Any] | None:
    """``RunFacts.stages`` of ``kdlab.fit``'s networks for a feature method: their stage shapes on the probe ``x``,
    so its weights fit these maps as they do for zoo names in a config. None for other methods, and unless both are
    kdlab zoo networks (another network's stages are only known from the method's ``*_paths``)."""
    if teacher is None or not reads_features(cfg) or not all(isinstance(m, ZooModel) for m in (student, teacher)):
        return None
    return {"student": stage_shapes_of(student, x), "teacher": stage_shapes_of(teacher, x)}


def _check_outputs(student: nn.Module, teacher: nn.Module | None, x: torch.Tensor, max_label: int) -> int:
    """Class count of the student; errors when the teacher or the labels do not fit it."""
    with torch.no_grad():
        s = _logits_of(student, x, "student")
        if teacher is not None:
            t = _logits_of(teacher, x, "teacher")
            if t.shape[1] != s.shape[1]:
                raise ValueError(f"teacher has {t.shape[-1]} classes but the student has {s.shape[1]}")
    if max_label >= s.shape[1]:
        raise ValueError(f"labels go up to {max_label} but the student has only {s.shape[1]} outputs")
    return s.shape[1]
