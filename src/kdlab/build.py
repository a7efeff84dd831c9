"""The composition root: a run config (or a user's own objects) → data, models, teacher, method → the engine's loop.

Three entry points assemble through the same code, so the CLI and the Python API cannot drift apart:

* :func:`train_teacher` (``kdlab teacher CONFIG``): ``cfg.teacher.arch`` trained with CE on the teacher's data;
* :func:`distil` (``kdlab train CONFIG``): a student distilled from ``cfg.teacher`` by ``cfg.method``;
* :func:`distil_objects` (``kdlab.fit``): the same for a user's modules and tensors or Datasets.

Each builds a :class:`RunParts` and hands it to :func:`_train`, the one place that checks the run directory (a rerun
whose *identity* differs from the checkpoint's is refused before anything is written, naming the keys that differ),
wraps the teacher (frozen, or the exact logit cache when the method allows it), builds the method, writes
``config.yaml``, computes the teacher's test logits once, runs :func:`kdlab.engine.loop.train_loop` and reports.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch import nn

from kdlab import distributed as dist
from kdlab import methods, models
from kdlab._io import atomic_write_text
from kdlab.config import RunConfig
from kdlab.config import load_config as _load_config
from kdlab.config.schema import ModelConfig, TeacherCacheConfig
from kdlab.data import BatchLoader, DataSplits, ImageSplits, ViewAugmentation, as_tensors, default_root, load_dataset
from kdlab.data.dataset_stream import dataset_loader
from kdlab.data.replay import replay_loader
from kdlab.data.image_index import STREAMED, report_skipped
from kdlab.data.user import is_pair
from kdlab.data.policies import build_policy
from kdlab.data.splits import select_split
from kdlab.engine.checkpoint import check_same_run, identity_hash, read_training_info
from kdlab.engine.device import resolve_device
from kdlab.engine.environment import environment
from kdlab.engine.loop import LoopResult, LoopSettings, collect_logits, logits_report, train_loop
from kdlab.engine.metrics_log import flatten
from kdlab.engine.precision import DevicePath, resolve
from kdlab.engine.run_dir import RunDirLock, check_writable
from kdlab.engine.seeding import seed_everything
from kdlab._modes import eval_mode
from kdlab.methods import Method, RunFacts
from kdlab.models.weights import weights_metadata
from kdlab.plots import training_curves
from kdlab.teachers import CachedTeacher, Ensemble, FrozenTeacher, module_digest, tensor_digest
from kdlab.teachers import published
from kdlab.teachers.eval_logits import stored_logits
from kdlab.teachers.store import TeacherStore, store_expectation
from kdlab.teachers.store_build import build_store
from kdlab.teachers.stored import StoreChoice, StoredTeacher, choose_store

__all__ = ["RunParts", "distil", "distil_objects", "load_config", "load_data", "load_teacher_module",
           "make_loaders", "cached_teacher", "teacher_cache_from_config", "teacher_store_from_config", "train_teacher"]


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read and validate a run config, ``method.args`` included (against the method's own ``Params``)."""
    return _load_config(path, overrides, method_schema=lambda name: methods.get(name).Params)


# ---------------------------------------------------------------------------------------------------------------
# data, teacher and checks from a config
# ---------------------------------------------------------------------------------------------------------------
def load_data(cfg: RunConfig, part: str | None = None) -> DataSplits | ImageSplits:
    """The data set of ``cfg`` (subsets applied). Under split control (``distill_data.holdout_fraction``) only
    ``part`` of the train split is kept: ``"teacher"``, or by default the student's ``distill_data.split``."""
    kwargs: dict[str, Any] = {}
    if cfg.data.name == "mnist1d" and cfg.data.num_samples:
        kwargs["num_samples"] = cfg.data.num_samples
    if cfg.data.name == "cifar100":
        kwargs.update({k: v for k, v in (("url", cfg.data.url), ("md5", cfg.data.md5)) if v is not None})
        kwargs["progress"] = cfg.run.progress
    if cfg.data.name in STREAMED:  # the subsets are taken before the files are checked (a quick run stays quick)
        kwargs.update(image_size=cfg.data.image_size, train_subset=cfg.data.train_subset,
                      test_subset=cfg.data.test_subset)
    if cfg.data.name in (*STREAMED, "tiny_imagenet"):
        kwargs.update(workers=cfg.data.workers, skip_bad=cfg.data.skip_bad, progress=cfg.run.progress)
    splits = load_dataset(cfg.data.name, root=cfg.data.root, download=cfg.data.download, **kwargs)
    if (cfg.data.train_subset or cfg.data.test_subset) and cfg.data.name not in STREAMED:
        splits = splits.subset(cfg.data.train_subset, cfg.data.test_subset)
    if splits.skipped:
        report_skipped(splits.skipped, Path(cfg.out_dir), dist.is_main())
    if cfg.distill_data.holdout_fraction:
        splits = select_split(cfg.distill_data, splits, part or cfg.distill_data.split)
    return splits


def make_loaders(splits: DataSplits, global_batch_size: int, eval_batch_size: int, seed: int, device,
                 augment: bool = True) -> tuple[BatchLoader, BatchLoader]:
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


def _check_last_batch(loader: BatchLoader, split: str, key: str, world: int) -> None:
    """Every rank needs a sample of every global batch (DDP steps together); an uneven split is fine (the loop
    weighs each rank's loss by its share), an empty shard is refused before any work."""
    g = loader.batch_size * world
    m = loader.num_samples % g
    if 0 < m < world:
        raise ValueError(f"the {split} set has {loader.num_samples} samples, so its last global batch of {g} holds "
                         f"only {m}: too few for {world} processes. Set {key} so that it leaves 0 or at least {world} "
                         f"samples over, or data.{split}_subset")


def _loaders(cfg: RunConfig, splits: DataSplits, device) -> tuple[BatchLoader, BatchLoader]:
    return make_loaders(splits, cfg.optim.batch_size, cfg.eval.batch_size, cfg.seed, device,
                        augment=cfg.data.augment == "default")


def load_teacher_module(mc: ModelConfig, num_classes: int) -> nn.Module:
    """One checkpoint → its model; several → an Ensemble teacher (probability averaging by default)."""
    paths = mc.checkpoints or ([mc.checkpoint] if mc.checkpoint else [])
    paths = [published.resolve(p) for p in paths]  # `repdistiller:resnet32x4`, `torchvision:resnet34`: fetched once
    if not paths:
        raise ValueError("teacher.checkpoint is not set: train a teacher first (`kdlab teacher CONFIG`) and point "
                         "teacher.checkpoint at its model.safetensors")
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"teacher checkpoint {p} not found: train it with `kdlab teacher CONFIG` "
                                    "or fix teacher.checkpoint")
    members = [models.load_model(p, mc.arch, num_classes) for p in paths]
    if len(members) == 1:
        return members[0]
    return Ensemble(members, rule=mc.ensemble_rule, temperature=mc.ensemble_temperature)


def check_classes(model: nn.Module, x: torch.Tensor, num_classes: int, who: str) -> None:
    """The model maps a probe batch to ``[N, num_classes]`` logits, or a ValueError names ``who``."""
    with eval_mode(model), torch.inference_mode():
        out = model(x[:2])
    if out.ndim != 2 or out.shape[1] != num_classes:
        raise ValueError(f"the {who} outputs shape {tuple(out.shape)} but the data has {num_classes} classes")


def _method_class(cfg: RunConfig) -> tuple[type[Method], Any]:
    cls = methods.get(cfg.method.name)
    return cls, cls.Params.model_validate(cfg.method.args or {})


def _adapt_method(cfg: RunConfig, num_classes: int, input_shape: Sequence[int],
                  name: Callable[[str], str] = str) -> list[dict[str, Any]]:
    """Fit the method's CIFAR-100 defaults to this run (``Method.adapt``: class count, epochs, sample shape) in
    ``cfg.method.args``, before the run's identity is taken; each change is logged (keys worded by ``name``) and
    returned for ``final.json``. Arguments the user gave are never changed."""
    cls, hp = _method_class(cfg)
    adapted, changes = cls.adapt(hp, RunFacts(num_classes, cfg.optim.epochs, tuple(input_shape)), cfg.method.given)
    if changes:
        given = cfg.method.given
        cfg.method.args = adapted.model_dump()
        cfg.method.given = given
    for c in changes:
        if dist.is_main():
            _log.warning(f"kdlab: {name('method.args.' + c.key)} = {c.value!r} instead of the default {c.default!r}: "
                         f"{c.why} (give it explicitly to keep another value)")
    return [asdict(c) for c in changes]


_log = logging.getLogger("kdlab")


# ---------------------------------------------------------------------------------------------------------------
# the teacher-logit cache
# ---------------------------------------------------------------------------------------------------------------
def _cache_path(cache: TeacherCacheConfig, out_dir: Path | None) -> Path | None:
    if cache.storage != "mmap":
        if cache.path:
            raise ValueError("teacher.cache.path is set but teacher.cache.storage is 'memory'; set storage: mmap to "
                             "use a file, or drop the path")
        return None
    if cache.path:
        return Path(cache.path)
    if out_dir is None:
        raise ValueError("teacher.cache.storage=mmap needs teacher.cache.path or an out_dir")
    return out_dir / "teacher_cache.bin"


def cached_teacher(teacher: FrozenTeacher, cache: TeacherCacheConfig, method: type[Method], hp, train: BatchLoader,
                   out_dir: Path | None, policy: bool = False, precision: str = "fp32", epochs: int = 1,
                   progress: bool = True) -> FrozenTeacher | CachedTeacher:
    """``teacher`` wrapped in the exact (index, view) logit cache per ``cache``, or ``teacher`` itself.

    ``enabled="auto"`` caches only where it is exact and useful: the method reads the teacher solely through
    ``logits_for_batch`` of the clean view (``method.cacheable(hp)``), no distillation-data ``policy`` rewrites the
    batches, and ``train`` has a discrete view augmentation. ``enabled=true`` makes any of these an error.
    """
    if cache.enabled is False:
        return teacher
    reasons = []
    if not method.cacheable(hp):
        reasons.append(f"method {method.name!r} reads the teacher beyond clean-view logits (features, a pruned "
                       "ensemble, or extra views)")
    if policy:
        reasons.append("a distill_data policy rewrites the training batches")
    if train.augment is None:
        reasons.append("the training loader has no discrete view augmentation (data.augment is not 'default', or "
                       "the data is streamed with continuous crops)")
    if reasons:
        if cache.enabled is True:
            raise ValueError("teacher.cache.enabled=true but the cache cannot be exact here: " + "; ".join(reasons)
                             + ". Set teacher.cache.enabled to auto or false.")
        return teacher
    path = _cache_path(cache, out_dir)
    tag = {"precision": precision} if precision != "fp32" else None

    def open_cache() -> CachedTeacher:
        cached = CachedTeacher(teacher, train, path=path, dtype=cache.dtype, tag=tag, progress=progress)
        if not cached.complete and _precompute(cached, cache.fill, epochs, shared=cache.path is not None):
            cached.precompute()
        return cached

    if path is not None and dist.world_size() > 1:
        # rank 0 creates (and precomputes) the file; the others open it once it exists with its key
        cached = open_cache() if dist.is_main() else None
        dist.barrier()
        return cached or open_cache()
    return open_cache()


def expected_view_fraction(num_views: int, epochs: int) -> float:
    """Expected share of an image's views a run draws: each epoch draws one of V views uniformly, so a given view
    is missed by all E epochs with probability (1 − 1/V)^E (CIFAR, 162 views, 240 epochs: 77%)."""
    return 1.0 - (1.0 - 1.0 / num_views) ** epochs


def _precompute(cached: CachedTeacher, fill: str, epochs: int, shared: bool) -> bool:
    """Fill up front or on the fly (``teacher.cache.fill``); ``auto`` precomputes when the run would draw at least
    half of the views anyway (filling them in large chunks early costs less than in bits of every batch later) or
    when the file is shared with other runs. Prints the estimate it decided on (one line, rank 0)."""
    if fill != "auto":
        decision, why = fill == "precompute", f"teacher.cache.fill={fill}"
    else:
        frac = expected_view_fraction(cached.num_views, epochs)
        decision = frac >= 0.5 or shared
        why = (f"this run would draw {100 * frac:.0f}% of the views" + (" and the file is shared" if shared else ""))
    if dist.is_main():
        views = cached.num_samples * cached.num_views
        per_view = cached.seconds_per_view()
        print(f"teacher cache: {cached.num_samples} samples x {cached.num_views} views x {cached.num_classes} classes "
              f"({cached.dtype_name}, {cached.size_bytes / 2**20:.1f} MiB); filling every view takes ~"
              f"{_duration(views * per_view)} ({1e3 * per_view:.2f} ms each): "
              f"{'precompute' if decision else 'fill on the fly'} ({why})", flush=True)
    return decision


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def teacher_cache_from_config(cfg: RunConfig, progress: bool = True) -> CachedTeacher:
    """Create (or reopen) and fill the cache file a run with ``cfg`` would use, without training anything.

    For sharing one precomputed table across many runs (seeds, methods) started in parallel: call this once, then
    every run with the same ``teacher.cache`` settings opens the complete file. Needs ``teacher.cache.storage=mmap``.
    """
    if cfg.teacher.cache.storage != "mmap" or not cfg.teacher.cache.path:
        raise ValueError("a shared teacher cache needs teacher.cache.storage=mmap and teacher.cache.path")
    splits = load_data(cfg)
    train, _ = _loaders(cfg, splits, cfg.run.device)
    teacher = FrozenTeacher(load_teacher_module(cfg.teacher, splits.num_classes).to(cfg.run.device))
    return CachedTeacher(teacher, train, dtype=cfg.teacher.cache.dtype, path=cfg.teacher.cache.path,
                         precompute=True, progress=progress)


def teacher_store_from_config(cfg: RunConfig, *, precision: str, k: int | None = None, out: str | None = None,
                              epochs: int | None = None, schedule_seed: int | None = None, chunk_size: int = 256,
                              leave_group: bool = True) -> TeacherStore:
    """``kdlab teacher cache``: the teacher's outputs on a stored crop schedule of ``cfg``'s streamed training set
    (:func:`kdlab.teachers.store_build.build_store`), at ``out`` (default ``teacher.cache.store``), for ``epochs``
    (default ``optim.epochs``) epochs of crops drawn from ``schedule_seed`` (default ``cfg.seed``: a run with that
    seed replays exactly the crops it would draw live). Resumes an interrupted build; shards under torchrun."""
    out = out or cfg.teacher.cache.store
    if not out:
        raise ValueError("where should the store go? give --out DIR or set teacher.cache.store in the config")
    with _process_group(leave_group):
        device, dp = _setup(cfg)
        splits = load_data(cfg)
        if not isinstance(splits, ImageSplits) or cfg.data.augment != "default":
            raise ValueError(f"kdlab teacher cache stores teacher outputs on random crops of a streamed data set "
                             f"(data.name imagenet or imagefolder, data.augment default); data.name={cfg.data.name} "
                             "uses the exact view cache (teacher.cache) instead")
        module = dp.model(load_teacher_module(cfg.teacher, splits.num_classes).to(device))
        check_classes(module, torch.zeros(2, *splits.input_shape, device=device), splits.num_classes, "teacher")
        return build_store(FrozenTeacher(module), splits, out, precision=precision, k=k,
                           seed=cfg.seed if schedule_seed is None else schedule_seed,
                           epochs=epochs or cfg.optim.epochs, chunk_size=chunk_size, device=device,
                           autocast=dp.autocast, teacher_precision=dp.precision, progress=cfg.run.progress)


def _teacher_store(cfg: RunConfig, splits, train, teacher_module: nn.Module | None, cls: type[Method], hp,
                   dp: DevicePath) -> tuple[Any, StoreChoice | None]:
    """``teacher.cache`` for streamed data (:func:`kdlab.teachers.stored.choose_store`): the training loader (the
    store's crops replayed when it is used) and the choice (None when there is no teacher or nothing to say)."""
    streamed = isinstance(splits, ImageSplits)
    if teacher_module is None or not (streamed or cfg.teacher.cache.store):
        return train, None
    cache = cfg.teacher.cache
    expected = None
    if streamed and cache.store:
        expected = store_expectation(module_digest(teacher_module), dp.precision, splits.train, splits.num_classes,
                                     splits.image_size, splits.mean, splits.std)
    choice = choose_store(cache.store, cache.enabled, streamed=streamed, expected=expected, epochs=cfg.optim.epochs,
                          method=cls.name, cacheable=cls.cacheable(hp),
                          needs_full=cls.needs_full_teacher_distribution(hp),
                          random_crops=cfg.data.augment == "default")
    if cache.store and dist.is_main():
        print(f"teacher outputs: {choice.record['source']}"
              + (f" ({choice.record['reason']})" if choice.store is None else f" {cache.store}"), flush=True)
    if choice.store is not None:
        train = replay_loader(train, choice.store.schedule, choice.store)
    return train, choice


# ---------------------------------------------------------------------------------------------------------------
# the one assembler
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class RunParts:
    """Everything a run is assembled from, whoever gathered it (a config or ``kdlab.fit``)."""

    cfg: RunConfig  # hyperparameters: method, optim, eval, run, teacher.cache, seed
    out_dir: Path | None
    device: torch.device
    device_path: DevicePath
    train: BatchLoader
    test: BatchLoader | None
    num_classes: int
    student: nn.Module  # on the device, initialised
    arch: str | None  # recorded in the saved weights
    teacher_module: nn.Module | None  # on the device
    identity: dict[str, Any]  # everything that changes training; a resume must match it
    record: dict[str, Any]  # written to config.yaml
    batch_transform: Callable | None = None  # a distillation-data policy
    reuse_teacher_logits: bool = False  # store/reuse the teacher's test logits across runs (config runs only)
    adapted: list[dict[str, Any]] = field(default_factory=list)  # method defaults fitted to the run (Method.adapt)
    store: StoreChoice | None = None  # streamed data: the teacher-output store replayed, or why the teacher runs live


@dataclass
class Outcome:
    method: Method
    result: LoopResult
    teacher: dict[str, Any] | None  # acc/nll/ece of the teacher on the test set (from its logits, computed once)


def _identity(section: dict[str, Any], teacher_module: nn.Module | None, **extra: Any) -> dict[str, Any]:
    identity = flatten(section, sep=".")
    if teacher_module is not None:
        identity["teacher.weights_sha256"] = module_digest(teacher_module)
    identity.update(extra)
    return identity


def _config_section(cfg: RunConfig) -> dict[str, Any]:
    """Everything in ``cfg`` that changes training (out_dir, display and failure-handling options and data.workers
    excluded)."""
    return cfg.model_dump(mode="json", exclude={"out_dir": True, "run": {"progress", "tensorboard", "dist_timeout",
                                                                          "on_divergence"}, "data": {"workers"}})


def _finished(out_dir: Path | None, parts_identity: dict[str, Any], epochs: int) -> dict | None:
    """Refuse a checkpoint of another run before anything is written; the stored final.json of a finished one."""
    if out_dir is None or not (out_dir / "checkpoint.safetensors").is_file():
        return None
    info = read_training_info(out_dir / "checkpoint.safetensors")
    check_same_run(info, identity_hash(parts_identity), parts_identity, out_dir)
    final = out_dir / "final.json"
    if info.get("epoch", 0) >= epochs and final.is_file():
        return json.loads(final.read_text(encoding="utf-8"))
    return None


def _train(parts: RunParts) -> Outcome:
    cfg, out_dir, dp = parts.cfg, parts.out_dir, parts.device_path
    ihash = identity_hash(parts.identity)
    cls, hp = _method_class(cfg)
    teacher = None
    if parts.store is not None and parts.store.store is not None:
        teacher = StoredTeacher(FrozenTeacher(parts.teacher_module), parts.store.store)
    elif parts.teacher_module is not None:
        with dp.autocast():  # a cache filled up front sees the teacher as the steps would
            teacher = cached_teacher(FrozenTeacher(parts.teacher_module), cfg.teacher.cache, cls, hp, parts.train,
                                     out_dir, policy=parts.batch_transform is not None, precision=dp.precision,
                                     epochs=cfg.optim.epochs, progress=cfg.run.progress)
    method = cls(parts.student, teacher, parts.num_classes, hp).to(parts.device)
    dp.model(method)
    if dp.compile:
        parts.student.compile()  # in place: the state-dict keys (and so the checkpoints) stay those of the model
    if out_dir is not None and dist.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(parts.record, sort_keys=False))
    teacher_logits, reused = (_teacher_eval_logits(teacher, parts) if teacher is not None and parts.test
                              else (None, False))
    o = cfg.optim
    settings = LoopSettings(
        epochs=o.epochs, lr=o.lr, optimizer=o.optimizer, momentum=o.momentum, weight_decay=o.weight_decay,
        nesterov=o.nesterov, schedule=o.schedule, milestones=list(o.milestones), gamma=o.gamma,
        warmup_epochs=o.warmup_epochs, eval_every=cfg.eval.every,
        out_dir=out_dir, progress=cfg.run.progress, tensorboard=cfg.run.tensorboard, config_hash=ihash,
        identity=parts.identity, weights_metadata=weights_metadata(parts.arch, parts.num_classes), device_path=dp,
        grad_clip=o.grad_clip, on_divergence=cfg.run.on_divergence, sync_bn=cfg.run.sync_bn,
    )
    result = train_loop(method, parts.train, parts.test, parts.num_classes, settings, teacher_logits,
                        parts.batch_transform)
    report = None
    if teacher_logits is not None:
        report = {**logits_report(teacher_logits, parts.test, parts.num_classes),
                  "eval_logits": "reused" if reused else "computed"}
    return Outcome(method, result, report)


def _teacher_eval_logits(teacher, parts: RunParts) -> tuple[torch.Tensor, bool]:
    """The teacher's logits on the test set, computed once per run (every evaluation and final.json use them) and,
    for config runs in one process, stored under ``$KDLAB_DATA/teacher_logits`` for the next run or seed with the same
    teacher weights, test data and normalisation."""
    def compute() -> torch.Tensor:
        return collect_logits(teacher.logits, parts.test)

    loader = parts.test
    if not parts.reuse_teacher_logits or dist.world_size() > 1 or not isinstance(loader, BatchLoader):
        return compute(), False
    key = {"teacher": parts.identity["teacher.weights_sha256"], "data": tensor_digest(loader.x),
           "normalization": {"mean": loader.mean, "std": loader.std}, "precision": "fp32",
           "batch_size": loader.batch_size}  # batched forwards round differently: exact reuse needs the same size
    logits, reused = stored_logits(key, compute, default_root() / "teacher_logits")
    return logits.to(loader.device), reused


def _final(parts: RunParts, outcome: Outcome, role: str, teacher_arch: str | None = None) -> dict[str, Any]:
    """``final.json``: the trained network under ``role`` ("teacher" or "student"), its last test report ("test" for
    a teacher, "fidelity" for a student), the teacher's numbers, config, environment. A run that was already
    finished when it was started again keeps the file it has."""
    r = outcome.result
    final: dict[str, Any] = {
        "role": role,
        "method": parts.cfg.method.name,
        role: {"arch": parts.arch, "best_acc": r.best["acc"], "best_epoch": r.best["epoch"],
               "last_acc": r.last.get("student_acc")},
        "test" if role == "teacher" else "fidelity": r.last,
        "epochs": parts.cfg.optim.epochs,
        "resumed_from_epoch": r.resumed_from,
        "adapted_defaults": parts.adapted,
        "wall_time_s": r.wall_time_s,
        "config": parts.record,
        "environment": environment(parts.device, parts.cfg.seed),
    }
    if outcome.teacher is not None:
        t = outcome.teacher
        final["teacher"] = {"arch": teacher_arch or type(parts.teacher_module).__name__, "acc": t["acc"],
                            "nll": t["nll"], "ece": t["ece"], "eval_logits": t["eval_logits"]}
    if parts.store is not None:
        final["teacher_outputs"] = parts.store.record
    finished_before = r.resumed_from is not None and r.resumed_from > parts.cfg.optim.epochs
    if parts.out_dir is not None and dist.is_main() and not finished_before:
        atomic_write_text(parts.out_dir / "final.json", json.dumps(final, indent=2))
        training_curves(r.history, parts.out_dir / "curves.png", title=_title(parts, role))
    return final


def _title(parts: RunParts, role: str) -> str:
    net = parts.arch or type(parts.student).__name__
    return f"{role} {net}, {parts.cfg.method.name}" + (f", {parts.out_dir.name}" if parts.out_dir else "")


def _train_and_report(parts: RunParts, role: str, teacher_arch: str | None = None) -> tuple[Outcome, dict[str, Any]]:
    """Train and write ``final.json`` holding the run directory's writer lock (one writer per out_dir)."""
    with RunDirLock(parts.out_dir):
        outcome = _train(parts)
        return outcome, _final(parts, outcome, role, teacher_arch)


@contextmanager
def _process_group(leave_group: bool):
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


def _setup(cfg: RunConfig) -> tuple[torch.device, DevicePath]:
    check_writable(Path(cfg.out_dir))
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = dist.init_from_env(str(resolve_device(cfg.run.device)), cfg.run.dist_timeout)
    device_path = resolve(device, cfg.run.precision, cfg.run.channels_last, cfg.run.compile)
    seed_everything(cfg.seed, cfg.run.deterministic)
    return device, device_path


def _create(arch: str | None, num_classes: int, seed: int, device, probe: torch.Tensor, who: str) -> nn.Module:
    if not arch:
        raise ValueError(f"{who}.arch is not set")
    torch.manual_seed(seed)  # the initialisation depends on the seed only
    model = models.create(arch, num_classes).to(device)
    check_classes(model, probe, num_classes, who)
    return model


def train_teacher(cfg: RunConfig, *, leave_group: bool = True) -> dict[str, Any]:
    """Train ``cfg.teacher.arch`` with CE (on the teacher's part of the data under split control); ``final.json``
    holds it under ``"teacher"``. A finished run is left as it is (its ``final.json`` is returned)."""
    if cfg.method.name != "ce":
        raise ValueError(f"`kdlab teacher` trains with CE only; the config says method {cfg.method.name!r}")
    with _process_group(leave_group):
        out_dir = Path(cfg.out_dir)
        identity = _identity(_config_section(cfg), None)
        done = _finished(out_dir, identity, cfg.optim.epochs)
        if done is not None:
            return {**done, "already_finished": True}
        device, dp = _setup(cfg)
        splits = load_data(cfg, part="teacher")
        train, test = _loaders(cfg, splits, device)
        net = _create(cfg.teacher.arch, splits.num_classes, cfg.seed, device, next(iter(test)).x, "teacher")
        parts = RunParts(cfg, out_dir, device, dp, train, test, splits.num_classes, net, cfg.teacher.arch, None,
                         identity, cfg.model_dump(mode="json"))
        return _train_and_report(parts, "teacher")[1]


def distil(cfg: RunConfig, *, leave_group: bool = True) -> dict[str, Any]:
    """Distil ``cfg.student.arch`` from ``cfg.teacher`` by ``cfg.method``; resumes in ``cfg.out_dir``. A finished
    run is left as it is (its ``final.json`` is returned)."""
    with _process_group(leave_group):
        device, dp = _setup(cfg)
        splits = load_data(cfg)
        nc = splits.num_classes
        train, test = _loaders(cfg, splits, device)
        probe = next(iter(test)).x
        adapted = _adapt_method(cfg, nc, probe.shape[1:])
        cls, hp = _method_class(cfg)
        teacher_module = None
        if cls.needs_teacher(hp) or cfg.teacher.checkpoint or cfg.teacher.checkpoints:
            teacher_module = load_teacher_module(cfg.teacher, nc).to(device)
            check_classes(teacher_module, probe, nc, "teacher")
            dp.model(teacher_module)
        train, store = _teacher_store(cfg, splits, train, teacher_module, cls, hp, dp)
        out_dir = Path(cfg.out_dir)
        identity = _identity(_config_section(cfg), teacher_module, **(store.identity if store else {}))
        done = _finished(out_dir, identity, cfg.optim.epochs)
        if done is not None:
            return {**done, "already_finished": True}
        student = _create(cfg.student.arch, nc, cfg.seed, device, probe, "student")
        if cfg.student.init_from_teacher is not None:
            if teacher_module is None:
                raise ValueError("student.init_from_teacher needs a teacher checkpoint")
            models.init_from_teacher(student, teacher_module, cfg.student.init_from_teacher, train)
        policy = build_policy(cfg.distill_data, splits, device) if cfg.distill_data.policy != "none" else None
        parts = RunParts(cfg, out_dir, device, dp, train, test, nc, student, cfg.student.arch, teacher_module,
                         identity, cfg.model_dump(mode="json"), policy, adapted=adapted, reuse_teacher_logits=True,
                         store=store)
        return _train_and_report(parts, "student", cfg.teacher.arch)[1]


def distil_objects(student: nn.Module, teacher: nn.Module | Sequence[nn.Module] | None, train, eval, cfg: RunConfig,
                   out_dir: Path | None, augment: ViewAugmentation | None = None, workers: int = 0,
                   name: Callable[[str], str] = str
                   ) -> tuple[Outcome, dict[str, Any], tuple[torch.Tensor, torch.Tensor]]:
    """``kdlab.fit``'s assembly: the user's modules and data (tensor or numpy pairs, or Datasets), hyperparameters in
    ``cfg``. Returns the outcome, the final report (``final.json``) and the data to report on (``eval``, else
    ``train``, as tensors). Tensor pairs are held in memory; a ``train`` Dataset is read every epoch by the streamed
    loader (``workers`` processes; :mod:`kdlab.data.dataset_stream`). ``name`` words config keys in the log as the
    caller's arguments.

    The run's identity covers every hyperparameter, the data (hashes of the tensors), the augmentation, the
    student's structure and the teacher's weights, so a rerun on ``out_dir`` with any of them changed is refused.
    """
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
    max_label = max(max_train, int(eval_xy[1].max()) if eval_xy is not None else 0)
    num_classes = _check_outputs(student, teacher_module, probe.to(device), max_label)
    adapted = _adapt_method(cfg, num_classes, probe.shape[1:], name)
    eval_loader = (BatchLoader(*eval_xy, max(bs, 256), shuffle=False, seed=seed, device=device)
                   if eval_xy is not None else None)
    section = cfg.model_dump(mode="json", include={"seed", "method", "optim", "eval"})
    identity = _identity(section, teacher_module, **{
        "data.train_sha256": train_digest,
        "data.eval_sha256": _digest(*eval_xy) if eval_xy is not None else None,
        "data.augment": json.dumps(augment.describe()) if augment is not None else None,
        "student.structure": _structure(student),
    })
    _finished(out_dir, identity, cfg.optim.epochs)  # refuses a directory of another run before anything is written
    parts = RunParts(cfg, out_dir, device, DevicePath(device.type), train_loader, eval_loader, num_classes, student,
                     None, teacher_module, identity, {"kdlab.fit": identity}, adapted=adapted)
    outcome, final = _train_and_report(parts, "student")
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
        out = model(x)
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the {who} returned a {type(out).__name__}, not a logits tensor: kdlab needs a module whose "
                         "forward returns the logits [N, C] (wrap it in a module that returns only the logits)")
    if out.ndim != 2:
        raise ValueError(f"the {who} must return logits [N, C]; it returned shape {tuple(out.shape)}")
    return out


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
