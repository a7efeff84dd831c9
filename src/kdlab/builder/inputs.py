"""What a run reads: the process (device, threads, seed, process group), the data and its loaders, and the networks
(the teacher's weights, the student's initialisation or warm start, their class counts checked on a real batch)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from kdlab import distributed as dist
from kdlab import models
from kdlab._checks import SettingError
from kdlab._io import CheckpointError
from kdlab._modes import eval_mode
from kdlab.config import ModelFactory, RunConfig, StudentConfig, TeacherConfig
from kdlab.models.pretrained import load_pretrained
from kdlab.models.weights import ArchMismatchError
from kdlab.data import DataSplits, ImageSplits, Loader, load_configured
from kdlab.data.image_index import report_skipped
from kdlab.data.splits import select_split
from kdlab.engine.device import resolve_device
from kdlab.engine.precision import DevicePath, resolve
from kdlab.engine.run_dir import check_writable
from kdlab.engine.seeding import seed_everything
from kdlab.models.factory import Arch, arch_name, create_arch
from kdlab.teachers import Ensemble, published

_log = logging.getLogger("kdlab")

__all__ = ["arch_of", "check_classes", "config_loaders", "create_model", "create_student", "input_facts", "load_data",
           "load_teacher_module", "load_warm_start", "make_loaders", "pretrained_start", "process_group", "setup"]


# ---------------------------------------------------------------------------------------------------------------
# the process
# ---------------------------------------------------------------------------------------------------------------
def setup(cfg: RunConfig) -> tuple[torch.device, DevicePath]:
    """The output directory checked writable, threads, the device (joining torchrun's process group), the device
    path (precision, channels_last, compile) and the seeds."""
    check_writable(Path(cfg.out_dir))
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = dist.init_from_env(str(resolve_device(cfg.run.device)), cfg.run.dist_timeout)
    device_path = resolve(device, cfg.run.precision, cfg.run.channels_last, cfg.run.compile)
    seed_everything(cfg.seed, cfg.run.deterministic)
    return device, device_path


@contextmanager
def process_group(leave_group: bool):
    """Under torchrun: the process group joined inside is left on the way out (``leave_group``).

    A gloo group still alive at interpreter exit can abort the process (std::terminate in its threads) after the
    run has finished. The CLI passes ``leave_group=False`` and ends its processes with ``os._exit`` instead, which
    runs no teardown at all.
    """
    joined = not dist.is_initialized()
    ok = False
    try:
        yield
        ok = True
    finally:
        if joined and dist.is_initialized():
            if ok:
                dist.barrier()
            if leave_group:
                dist.destroy()


# ---------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------
def load_data(cfg: RunConfig, part: str | None = None) -> DataSplits | ImageSplits:
    """The data set of ``cfg`` (subsets applied). Under split control (``distill_data.holdout_fraction``) only
    ``part`` of the train split is kept: ``"teacher"``, or by default the student's ``distill_data.split``."""
    splits = load_configured(cfg.data, cfg.run.progress)
    if splits.skipped:
        report_skipped(splits.skipped, Path(cfg.out_dir), dist.is_main())
    if cfg.distill_data.holdout_fraction:
        splits = select_split(cfg.distill_data, splits, part or cfg.distill_data.split)
    return splits


def make_loaders(splits: DataSplits | ImageSplits, global_batch_size: int, eval_batch_size: int, seed: int, device,
                 augment: bool = True) -> tuple[Loader, Loader]:
    """Train/test loaders. Under torchrun each of the W ranks takes ``global_batch_size / W`` samples of every
    global batch, so W processes see exactly the batches of one process."""
    world = dist.world_size()
    if global_batch_size % world:
        raise ValueError(f"optim.batch_size={global_batch_size} is the global batch and must be divisible by the "
                         f"number of processes ({world}); use a multiple of {world}")
    train = splits.loader("train", global_batch_size // world, augment=augment, shuffle=True, seed=seed,
                          device=device)
    test = splits.loader("test", max(1, eval_batch_size // world), seed=seed, device=device)
    if world > 1:
        _check_last_batch(train, "train", "optim.batch_size", world)
        _check_last_batch(test, "test", "eval.batch_size", world)
        train = train.sharded(dist.rank(), world)
        test = test.sharded(dist.rank(), world)
    return train, test


def config_loaders(cfg: RunConfig, splits: DataSplits | ImageSplits, device) -> tuple[Loader, Loader]:
    return make_loaders(splits, cfg.optim.batch_size, cfg.eval.batch_size, cfg.seed, device,
                        augment=cfg.data.augment == "default")


def _check_last_batch(loader: Loader, split: str, key: str, world: int) -> None:
    """Every rank needs a sample of every global batch (DDP steps together); an uneven split is fine (the loop
    weighs each rank's loss by its share), an empty shard is refused before any work."""
    g = loader.batch_size * world
    m = loader.num_samples % g
    if 0 < m < world:
        raise ValueError(f"the {split} set has {loader.num_samples} samples, so its last global batch of {g} holds "
                         f"only {m}: too few for {world} processes. Set {key} so that it leaves 0 or at least {world} "
                         f"samples over, or data.{split}_subset")


# ---------------------------------------------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------------------------------------------
def load_teacher_module(tc: TeacherConfig, num_classes: int) -> nn.Module:
    """One checkpoint → its model; several → an Ensemble teacher (probability averaging by default)."""
    paths = tc.checkpoints or ([tc.checkpoint] if tc.checkpoint else [])
    paths = [published.resolve(p) for p in paths]  # `repdistiller:resnet32x4`, `torchvision:resnet34`: fetched once
    if not paths:
        raise ValueError("teacher.checkpoint is not set: train a teacher first (`kdlab teacher CONFIG`) and point "
                         "teacher.checkpoint at its model.safetensors")
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"teacher checkpoint {p} not found: train it with `kdlab teacher CONFIG` "
                                    "or fix teacher.checkpoint")
    try:
        members = [models.load_model(p, arch_of(tc.arch), num_classes) for p in paths]
    except ArchMismatchError as exc:
        raise arch_mismatch(exc, "teacher.checkpoints" if tc.checkpoints else "teacher.checkpoint",
                            "teacher.arch") from None
    if len(members) == 1:
        return members[0]
    return Ensemble(members, rule=tc.ensemble_rule, temperature=tc.ensemble_temperature)


def check_classes(model: nn.Module, x: torch.Tensor, num_classes: int, who: str) -> None:
    """The model maps a probe batch to ``[N, num_classes]`` logits, or a ValueError names ``who``."""
    with eval_mode(model), torch.inference_mode():
        out = model(x[:2])
    if out.ndim != 2 or out.shape[1] != num_classes:
        raise ValueError(f"the {who} outputs shape {tuple(out.shape)} but the data has {num_classes} classes")


def arch_of(arch: str | ModelFactory | None) -> Arch | None:
    """A config's ``arch`` as the model layer takes it: a zoo name, or ``{"factory": ..., "args": {...}}``."""
    return arch.model_dump(mode="json") if isinstance(arch, ModelFactory) else arch


def create_model(arch: str | ModelFactory | None, num_classes: int, seed: int, device, probe: torch.Tensor,
                 who: str) -> nn.Module:
    """``arch`` from the zoo or its factory, initialised from ``seed`` alone, on ``device``, its class count
    checked."""
    if not arch:
        raise ValueError(f"{who}.arch is not set")
    torch.manual_seed(seed)  # the initialisation depends on the seed only
    model = create_arch(arch_of(arch), num_classes, key=f"{who}.arch").to(device)
    try:
        check_classes(model, probe, num_classes, who)
    except ValueError as exc:
        if isinstance(arch, ModelFactory):  # the class count is the factory's argument, not kdlab's
            raise ValueError(f"{exc}: {arch.factory} is called with {who}.arch.args only, so give it the class "
                             f"count there (timm and torchvision: num_classes: {num_classes})") from None
        raise
    return model


def arch_mismatch(exc: ArchMismatchError, key: str, arch_key: str) -> SettingError:
    """The one line for a weights file of another architecture: the key to set and the value the file records."""
    return SettingError(f"{{key}}={exc.path} holds a {exc.file_arch!r} model but {{arch}} is {exc.arch!r}: set "
                        f"{{arch}}={exc.file_arch} (the file records its architecture)", key=key, arch=arch_key)


def pretrained_start(model: nn.Module, ref: str | None, arch: str | ModelFactory, who: str) -> None:
    """Fine-tuning: ``model`` given the weights ``ref`` (``{who}.pretrained``), its classifier replaced (left as
    initialised from the seed) when the file has another class count; one log line says what was loaded."""
    if ref is None:
        return
    if isinstance(arch, ModelFactory):
        raise SettingError(f"{{key}} reads weights for a zoo architecture, but {who}.arch names a factory: let the "
                           "factory load its own (e.g. pretrained: true in {args}) or give a zoo arch",
                           key=f"{who}.pretrained", args=f"{who}.arch.args")
    try:
        r = load_pretrained(model, arch, ref)
    except ArchMismatchError as exc:
        raise arch_mismatch(exc, f"{who}.pretrained", f"{who}.arch") from None
    except CheckpointError as exc:
        raise SettingError(f"{{key}}: {exc}", key=f"{who}.pretrained") from None
    head = (f"classifier {r['head']!r} replaced ({r['file_classes']} classes in the file → {r['num_classes']}, "
            f"initialised as {arch} initialises it, seed-drawn)" if r["head_replaced"] else
            f"classifier {r['head']!r} kept ({r['num_classes']} classes)")
    if dist.is_main():
        _log.warning(f"kdlab: {who}.pretrained={ref}: {r['loaded']} tensors loaded; {head}")


def load_warm_start(sc: StudentConfig, num_classes: int) -> nn.Module | None:
    """The network of ``student.checkpoint`` (a warm start), or None; a file that does not hold the student's
    architecture and class count is a one-line error naming the key."""
    if sc.checkpoint is None:
        return None
    if not Path(sc.checkpoint).is_file():
        raise SettingError(f"{{key}}={sc.checkpoint}: no such weights file (a warm start reads the student's initial "
                           "weights from it)", key="student.checkpoint")
    try:
        return models.load_model(sc.checkpoint, arch_of(sc.arch), num_classes)
    except ArchMismatchError as exc:
        raise arch_mismatch(exc, "student.checkpoint", "student.arch") from None
    except CheckpointError as exc:
        raise SettingError(f"{{key}}: {exc} (a warm start needs weights of the student's architecture, "
                           f"{{arch}}={arch_name(arch_of(sc.arch))}, with {num_classes} classes)",
                           key="student.checkpoint", arch="student.arch") from None


def create_student(sc: StudentConfig, num_classes: int, seed: int, device, probe: torch.Tensor,
                   warm: nn.Module | None, teacher: nn.Module | None, train: Loader) -> nn.Module:
    """The student: initialised from the seed, then given the weights of a warm start (:func:`load_warm_start`:
    exactly the file's) or interpolated towards the teacher (``student.init_from_teacher``)."""
    student = create_model(sc.arch, num_classes, seed, device, probe, "student")
    pretrained_start(student, sc.pretrained, sc.arch, "student")
    if warm is not None:
        student.load_state_dict(warm.state_dict())
    if sc.init_from_teacher is not None:
        if teacher is None:
            raise ValueError("student.init_from_teacher needs a teacher checkpoint")
        models.init_from_teacher(student, teacher, sc.init_from_teacher, train)
    return student


def input_facts(splits: DataSplits | ImageSplits) -> tuple[int, Sequence[int]]:
    """(class count, one sample's shape) of a data set: what a plan adapts the method's defaults to."""
    return splits.num_classes, splits.input_shape
