"""Serving the teacher's outputs to a run: live, from the exact logit cache, or from a teacher-output store, and
its logits on the test set (computed once per run, or read back from an earlier run with the same teacher and data).

Which one a run gets is decided here and nowhere else (:func:`choose_store` for streamed data, :func:`serve` for
the training teacher, :func:`eval_logits` for the test set); ``final.json`` records it (``teacher_outputs``,
``teacher.eval_logits``). ``kdlab teacher cache`` builds a cache or store ahead of time with
:func:`teacher_cache_from_config` and :func:`teacher_store_from_config`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kdlab import distributed as dist
from kdlab.config import RunConfig
from kdlab.config.schema import TeacherCacheConfig
from kdlab.data import BatchLoader, ImageSplits, Loader, default_root
from kdlab.data.replay import replay_loader
from kdlab.engine.loop import collect_logits
from kdlab.engine.precision import DevicePath
from kdlab.builder.inputs import check_classes, config_loaders, load_data, load_teacher_module, process_group, setup
from kdlab.builder.plan import RunPlan
from kdlab.teachers import CachedTeacher, FrozenTeacher, Teacher, module_digest, tensor_digest
from kdlab.teachers.eval_logits import stored_logits
from kdlab.teachers.store import TeacherStore, store_expectation
from kdlab.teachers.store_build import build_store
from kdlab.teachers.stored import StoreChoice, StoredTeacher
from kdlab.teachers.stored import choose_store as _choose

__all__ = ["cached_teacher", "choose_store", "eval_logits", "expected_view_fraction", "serve",
           "teacher_cache_from_config", "teacher_store_from_config"]


# ---------------------------------------------------------------------------------------------------------------
# the exact (index, view) logit cache: data in memory with discrete views
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


def cached_teacher(teacher: FrozenTeacher, cache: TeacherCacheConfig, cacheable: bool, method: str, train: Loader,
                   out_dir: Path | None, policy: bool = False, precision: str = "fp32", epochs: int = 1,
                   progress: bool = True) -> FrozenTeacher | CachedTeacher:
    """``teacher`` wrapped in the exact (index, view) logit cache per ``cache``, or ``teacher`` itself.

    ``enabled="auto"`` caches only where it is exact and useful: the method (named ``method``) reads the teacher
    solely through ``logits_for_batch`` of the clean view (``cacheable``: ``Method.cacheable(hp)``, or the run
    plan's for a combination), no distillation-data ``policy`` rewrites the batches, and ``train`` has a discrete
    view augmentation. ``enabled=true`` makes any of these an error.
    """
    if cache.enabled is False:
        return teacher
    reasons = []
    if not cacheable:
        reasons.append(f"method {method!r} reads the teacher beyond clean-view logits (features, a pruned "
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
    when the file is shared with other runs. Prints what it decided (one line, rank 0); under ``auto`` with the time
    a full fill would take, timed on a probe of at most 1% of the teacher forwards the run makes on the fly (one
    view per sample per epoch), never more than 256 inputs."""
    views = cached.num_samples * cached.num_views
    size = (f"teacher cache: {cached.num_samples} samples x {cached.num_views} views x {cached.num_classes} classes "
            f"({cached.dtype_name}, {cached.size_bytes / 2**20:.1f} MiB)")
    if fill != "auto":  # decided by the config: nothing to estimate, so no teacher forwards spent on it
        decision = fill == "precompute"
        if dist.is_main():
            print(f"{size}: {'precompute' if decision else 'fill on the fly'} (teacher.cache.fill={fill})", flush=True)
        return decision
    frac = expected_view_fraction(cached.num_views, epochs)
    decision = frac >= 0.5 or shared
    why = f"this run would draw {100 * frac:.0f}% of the views" + (" and the file is shared" if shared else "")
    if dist.is_main():
        per_view = cached.seconds_per_view(probe=max(1, min(256, cached.num_samples * epochs // 100)))
        print(f"{size}; filling every view takes ~{_duration(views * per_view)} ({1e3 * per_view:.2f} ms each): "
              f"{'precompute' if decision else 'fill on the fly'} ({why})", flush=True)
    return decision


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


# ---------------------------------------------------------------------------------------------------------------
# the teacher-output store: streamed data with replayed crops (FKD)
# ---------------------------------------------------------------------------------------------------------------
def choose_store(plan: RunPlan, splits, train: Loader, teacher_module: nn.Module | None, dp: DevicePath
                 ) -> tuple[Loader, StoreChoice | None]:
    """``teacher.cache`` for streamed data (:func:`kdlab.teachers.stored.choose_store`): the training loader (the
    store's crops replayed when it is used) and the choice (None when there is no teacher or nothing to say)."""
    cfg = plan.cfg
    streamed = isinstance(splits, ImageSplits)
    if teacher_module is None or not (streamed or cfg.teacher.cache.store):
        return train, None
    cache = cfg.teacher.cache
    expected = None
    if streamed and cache.store:
        expected = store_expectation(module_digest(teacher_module), dp.precision, splits.train, splits.num_classes,
                                     splits.image_size, splits.mean, splits.std)
    choice = _choose(cache.store, cache.enabled, streamed=streamed, expected=expected, epochs=cfg.optim.epochs,
                     method=plan.name, cacheable=plan.cacheable(), needs_full=plan.needs_full_teacher_distribution(),
                     random_crops=cfg.data.augment == "default")
    if cache.store and dist.is_main():
        print(f"teacher outputs: {choice.record['source']}"
              + (f" ({choice.record['reason']})" if choice.store is None else f" {cache.store}"), flush=True)
    if choice.store is not None:
        train = replay_loader(train, choice.store.schedule, choice.store)
    return train, choice


def serve(plan: RunPlan, teacher_module: nn.Module | None, store: StoreChoice | None, train: Loader,
          out_dir: Path | None, dp: DevicePath, policy: bool) -> Teacher | None:
    """The teacher a run's method reads: the store's outputs, the exact cache, or the frozen network (None: no
    teacher)."""
    if teacher_module is None:
        return None
    if store is not None and store.store is not None:
        return StoredTeacher(FrozenTeacher(teacher_module), store.store)
    cfg = plan.cfg
    with dp.autocast():  # a cache filled up front sees the teacher as the steps would
        return cached_teacher(FrozenTeacher(teacher_module), cfg.teacher.cache, plan.cacheable(), plan.name, train,
                              out_dir, policy=policy, precision=dp.precision, epochs=cfg.optim.epochs,
                              progress=cfg.run.progress)


# ---------------------------------------------------------------------------------------------------------------
# the test set's logits
# ---------------------------------------------------------------------------------------------------------------
def eval_logits(teacher: Teacher, test: Loader, teacher_digest: str | None) -> tuple[torch.Tensor, bool]:
    """``(logits, reused)``: the teacher's logits on the test set, computed once per run (every evaluation and
    final.json use them) and, given the teacher's weights digest (config runs) in one process on data held in memory,
    stored under ``$KDLAB_DATA/teacher_logits`` for the next run or seed with the same teacher weights, test data and
    normalisation."""
    def compute() -> torch.Tensor:
        return collect_logits(teacher.logits, test)

    if teacher_digest is None or dist.world_size() > 1 or not isinstance(test, BatchLoader):
        return compute(), False
    key = {"teacher": teacher_digest, "data": tensor_digest(test.x),
           "normalization": {"mean": test.mean, "std": test.std}, "precision": "fp32",
           "batch_size": test.batch_size}  # batched forwards round differently: exact reuse needs the same size
    logits, reused = stored_logits(key, compute, default_root() / "teacher_logits")
    return logits.to(test.device), reused


# ---------------------------------------------------------------------------------------------------------------
# `kdlab teacher cache`: a cache or store built ahead of time
# ---------------------------------------------------------------------------------------------------------------
def teacher_cache_from_config(cfg: RunConfig, progress: bool = True) -> CachedTeacher:
    """Create (or reopen) and fill the cache file a run with ``cfg`` would use, without training anything.

    For sharing one precomputed table across many runs (seeds, methods) started in parallel: call this once, then
    every run with the same ``teacher.cache`` settings opens the complete file. Needs ``teacher.cache.storage=mmap``.
    """
    if cfg.teacher.cache.storage != "mmap" or not cfg.teacher.cache.path:
        raise ValueError("a shared teacher cache needs teacher.cache.storage=mmap and teacher.cache.path")
    splits = load_data(cfg)
    train, _ = config_loaders(cfg, splits, cfg.run.device)
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
    with process_group(leave_group):
        device, dp = setup(cfg)
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
