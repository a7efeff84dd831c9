"""From a validated RunConfig to a finished run: data, models, teacher, method, loop, ``final.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from kdlab.config import RunConfig, config_hash
from kdlab.config.schema import ModelConfig
from kdlab import distributed as dist
from kdlab._io import atomic_write_text
from kdlab.engine.checkpoint import load_model
from kdlab.engine.environment import environment
from kdlab.engine.loop import LoopSettings, evaluate, train_loop
from kdlab.engine.precision import resolve
from kdlab.engine.seeding import seed_everything


def load_data(cfg: RunConfig):
    from kdlab.data import load_dataset

    kwargs: dict[str, Any] = {}
    if cfg.data.name == "mnist1d" and cfg.data.num_samples:
        kwargs["num_samples"] = cfg.data.num_samples
    if cfg.data.name == "cifar100":
        kwargs.update({k: v for k, v in (("url", cfg.data.url), ("md5", cfg.data.md5)) if v is not None})
        kwargs["progress"] = cfg.run.progress
    splits = load_dataset(cfg.data.name, root=cfg.data.root, download=cfg.data.download, **kwargs)
    if cfg.data.train_subset or cfg.data.test_subset:
        splits = splits.subset(cfg.data.train_subset, cfg.data.test_subset)
    return splits


def make_loaders(splits, batch_size: int, eval_batch_size: int, seed: int, device, augment: bool = True):
    """Train/test loaders. ``batch_size`` is the *global* batch: under torchrun each of the W ranks takes
    ``batch_size / W`` samples of every global batch, so W processes see exactly the batches of one process."""
    from kdlab.data import BatchLoader

    world = dist.world_size()
    if batch_size % world:
        raise ValueError(f"optim.batch_size={batch_size} is the global batch and must be divisible by the number "
                         f"of processes ({world}); use a multiple of {world}")
    batch_size //= world
    eval_batch_size = max(1, eval_batch_size // world)
    common = {"mean": splits.mean, "std": splits.std, "device": device}
    train = BatchLoader(splits.x_train, splits.y_train, batch_size, shuffle=True, drop_last=False,
                        augment=splits.train_augment if augment else None, seed=seed, **common)
    test = BatchLoader(splits.x_test, splits.y_test, eval_batch_size, shuffle=False, augment=None, seed=seed,
                       **common)
    if world > 1:
        train = train.sharded(dist.rank(), world)
        test = test.sharded(dist.rank(), world)
    return train, test


def load_teacher_module(mc: ModelConfig, num_classes: int) -> torch.nn.Module:
    """One checkpoint → its model; several → an Ensemble teacher (probability averaging by default)."""
    paths = mc.checkpoints or ([mc.checkpoint] if mc.checkpoint else [])
    if not paths:
        raise ValueError("teacher.checkpoint is not set: train a teacher first (`kdlab teacher CONFIG`) and point "
                         "teacher.checkpoint at its model.safetensors")
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"teacher checkpoint {p} not found: train it with `kdlab teacher CONFIG` "
                                    "or fix teacher.checkpoint")
    members = [load_model(p, mc.arch, num_classes) for p in paths]
    if len(members) == 1:
        return members[0]
    from kdlab.teachers import Ensemble

    return Ensemble(members, rule=mc.ensemble_rule, temperature=mc.ensemble_temperature)


def check_classes(model: torch.nn.Module, x: torch.Tensor, num_classes: int, who: str) -> None:
    was = model.training
    model.eval()
    with torch.inference_mode():
        out = model(x[:2])
    model.train(was)
    if out.ndim != 2 or out.shape[1] != num_classes:
        raise ValueError(f"the {who} outputs shape {tuple(out.shape)} but the data has {num_classes} classes")


def execute(cfg: RunConfig, role: str = "student", leave_group: bool = True) -> dict[str, Any]:
    """Train per ``cfg``. ``role="teacher"`` trains ``cfg.teacher.arch`` with CE only.

    Under torchrun the process group joined here is left here (``leave_group``): a gloo group still alive at
    interpreter exit can abort the process (std::terminate in its threads) after the run has finished. The CLI
    passes ``leave_group=False`` and ends its processes with ``os._exit`` instead, which runs no teardown at all.
    """
    joined = not dist.is_initialized()
    ok = False
    try:
        final = _execute(cfg, role)
        ok = True
        return final
    finally:
        if joined and dist.is_initialized():
            if ok:
                dist.barrier()
            if leave_group:
                dist.destroy()


def _execute(cfg: RunConfig, role: str) -> dict[str, Any]:
    from kdlab import methods, models
    from kdlab.teachers.frozen import FrozenTeacher

    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = dist.init_from_env(cfg.run.device)
    device_path = resolve(device, cfg.run.precision, cfg.run.channels_last, cfg.run.compile)
    seed_everything(cfg.seed, cfg.run.deterministic)
    splits = load_data(cfg)
    if cfg.distill_data.holdout_fraction:  # split control: teacher part / held-out part (kdlab.data.splits)
        from kdlab.data.splits import select_split

        splits = select_split(cfg.distill_data, splits, "teacher" if role == "teacher" else cfg.distill_data.split)
    num_classes = splits.num_classes
    train_loader, test_loader = make_loaders(splits, cfg.optim.batch_size, cfg.eval.batch_size, cfg.seed, device,
                                             augment=cfg.data.augment == "default")
    probe = next(iter(test_loader)).x

    if role == "teacher":
        if cfg.method.name != "ce":
            raise ValueError(f"`kdlab teacher` trains with CE only; the config says method {cfg.method.name!r}")
        if not cfg.teacher.arch:
            raise ValueError("teacher.arch is not set")
        arch, teacher = cfg.teacher.arch, None
    else:
        arch = cfg.student.arch
        if not arch:
            raise ValueError("student.arch is not set")
        teacher = None
        if methods.get(cfg.method.name).uses_teacher or cfg.teacher.checkpoint or cfg.teacher.checkpoints:
            teacher_module = load_teacher_module(cfg.teacher, num_classes).to(device)
            check_classes(teacher_module, probe, num_classes, "teacher")
            teacher = FrozenTeacher(device_path.model(teacher_module))

    torch.manual_seed(cfg.seed)  # the student's initialisation depends on the seed only
    student = models.create(arch, num_classes).to(device)
    check_classes(student, probe, num_classes, "student")
    if role != "teacher" and cfg.student.init_from_teacher is not None:
        from kdlab.models.init_from_teacher import init_from_teacher

        if teacher is None:
            raise ValueError("student.init_from_teacher needs a teacher checkpoint")
        init_from_teacher(student, teacher.module, cfg.student.init_from_teacher, train_loader)
    method = methods.build(cfg.method.name, student, teacher, num_classes, cfg.method.args).to(device)
    batch_transform = None
    if role != "teacher" and cfg.distill_data.policy != "none":
        from kdlab.data.policies import build_policy

        batch_transform = build_policy(cfg.distill_data, splits, device)
    if teacher is not None:
        from kdlab.teachers.cache import maybe_cache

        with device_path.autocast():  # a cache filled up front sees the teacher as the steps would
            method.__dict__["teacher"] = teacher = maybe_cache(teacher, cfg.teacher.cache, method, train_loader,
                                                                 Path(cfg.out_dir), batch_transform,
                                                                 precision=device_path.precision)
    device_path.model(method)
    if device_path.compile:
        student.compile()  # in place: the state-dict keys (and so the checkpoints) stay those of the plain model
    ddp = dist.wrap_ddp(method, device)

    out_dir = Path(cfg.out_dir)
    if dist.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.yaml", _yaml(cfg.model_dump(mode="json")))
    settings = LoopSettings(
        epochs=cfg.optim.epochs, lr=cfg.optim.lr, momentum=cfg.optim.momentum,
        weight_decay=cfg.optim.weight_decay, nesterov=cfg.optim.nesterov, schedule=cfg.optim.schedule,
        milestones=list(cfg.optim.milestones), gamma=cfg.optim.gamma, eval_every=cfg.eval.every, out_dir=out_dir,
        progress=cfg.run.progress, tensorboard=cfg.run.tensorboard, config_hash=config_hash(cfg),
        model_meta={"arch": arch, "num_classes": num_classes},
        kl_temperature=cfg.method.args.get("temperature"), device_path=device_path,
    )
    result = train_loop(method, train_loader, test_loader, num_classes, settings, teacher=teacher, ddp_module=ddp,
                        batch_transform=batch_transform)

    final: dict[str, Any] = {
        "role": role,
        "method": cfg.method.name,
        "student": {"arch": arch, "best_acc": result.best["acc"], "best_epoch": result.best["epoch"],
                    "last_acc": result.last.get("student_acc")},
        "fidelity": result.last,
        "epochs": cfg.optim.epochs,
        "resumed_from_epoch": result.resumed_from,
        "wall_time_s": result.wall_time_s,
        "config": cfg.model_dump(mode="json"),
        "environment": environment(device, cfg.seed),
    }
    if teacher is not None:
        t = evaluate(teacher.module, test_loader, num_classes)
        final["teacher"] = {"arch": cfg.teacher.arch or type(teacher.module).__name__, "acc": t["student_acc"],
                            "nll": t["student_nll"], "ece": t["student_ece"]}
    if dist.is_main():
        atomic_write_text(out_dir / "final.json", json.dumps(final, indent=2))
    return final


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
