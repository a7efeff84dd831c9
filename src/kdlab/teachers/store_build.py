"""Building a teacher-output store (``kdlab teacher cache``): resumable, sharded over processes, estimated up front.

The work is split into fixed chunks — ``chunk_size`` consecutive images of one epoch — and each chunk is one teacher
forward on its crops, decoded in the loader's worker processes. The chunks do not depend on the number of processes,
so a store built by W processes (``torchrun``: rank r takes every W-th chunk still to do) holds the same bits as one
built by a single process, and a rerun after an interruption computes exactly the chunks ``done.mask`` lacks. Before
any work, rank 0 prints the store's size (bytes per view × views) and the time it will take, from a probe: the
teacher's time per view and the decoding time per view on this machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from kdlab import distributed as dist
from kdlab._bar import tqdm
from kdlab._checks import check_int
from kdlab.data.crop_schedule import schedule_bytes
from kdlab.data.decode import BadImageError
from kdlab.data.image_stream import ImageSource, ImageSplits
from kdlab.data.normalization import Normalization
from kdlab.data.replay import ReplaySource
from kdlab.teachers.cache import module_digest
from kdlab.teachers.frozen import FrozenTeacher
from kdlab.teachers.store import PRECISIONS, TeacherStore, bytes_per_view, store_expectation

__all__ = ["build_store", "duration"]

_PROBE = 16  # crops decoded and run through the teacher to estimate the build time


class _Load(Dataset):
    """A DataLoader 'dataset' whose keys are whole chunks' task lists (a worker decodes a whole chunk)."""

    def __init__(self, source: ReplaySource):
        self.source = source

    def __getitem__(self, tasks):
        return self.source.load(tasks)


class _Chunks(Sampler):
    """The task lists of this rank's chunks, drawn lazily (ImageNet × 100 epochs is 500k chunks)."""

    def __init__(self, source: ReplaySource, store: TeacherStore, chunks: list[tuple[int, int]]):
        self.source, self.store, self.chunks = source, store, chunks

    def __iter__(self):
        for epoch, chunk in self.chunks:
            yield self.source.tasks(epoch, self.store.chunk_rows(chunk))

    def __len__(self) -> int:
        return len(self.chunks)


def duration(seconds: float) -> str:
    return (f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200
            else f"{seconds / 3600:.1f} h")


def _probe_seconds(teacher: FrozenTeacher, splits: ImageSplits, seed: int, norm: Normalization, device: torch.device,
                   autocast: Callable[[], AbstractContextManager]) -> tuple[float, float, int]:
    """(teacher seconds per view, decoding seconds per view on one core, crops measured)."""
    n = min(_PROBE, splits.num_train)
    source = ImageSource(splits.train, splits.image_size, train=True, seed=seed)
    t0 = time.perf_counter()
    x, _, _, errors = source.load(source.tasks(1, np.arange(n)))
    decode = (time.perf_counter() - t0) / n
    if errors:
        raise BadImageError(*errors[0])
    x = norm(x.to(device))
    with autocast():
        teacher.logits(x[:1])  # warm-up: first-call allocations and kernel selection
        t0 = time.perf_counter()
        teacher.logits(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
    return (time.perf_counter() - t0) / n, decode, n


def _announce(store_path: Path, n: int, c: int, epochs: int, precision: str, k: int | None, views_left: int,
              teacher_s: float, decode_s: float, probed: int, workers: int, world: int, resumed: float) -> None:
    views = n * epochs
    out = bytes_per_view(precision, c, k) * views
    per_view = max(teacher_s, decode_s / workers) if workers else teacher_s + decode_s
    what = f"topk (k={k})" if precision == "topk" else precision
    print(f"teacher store {store_path}: {n:,} images x {epochs} epochs = {views:,} views; {what}: "
          f"{bytes_per_view(precision, c, k):,} B/view -> {out / 2**30:.2f} GiB + row checksums "
          f"{4 * views / 2**30:.2f} GiB + crop schedule {schedule_bytes(n, epochs) / 2**30:.2f} GiB", flush=True)
    print(f"{'resuming: ' + format(resumed, '.0%') + ' written; ' if resumed else ''}{views_left:,} views to compute "
          f"on {world} process(es): ~{duration(views_left * per_view / world)} (per view: teacher "
          f"{1e3 * teacher_s:.2f} ms, decoding {1e3 * decode_s:.2f} ms on one core, {workers} decoding worker(s) per "
          f"process; measured on {probed} crops)", flush=True)


def build_store(teacher: FrozenTeacher, splits: ImageSplits, path: str | Path, *, precision: str, k: int | None = None,
                seed: int = 0, epochs: int, chunk_size: int = 256, device: torch.device | str = "cpu",
                autocast: Callable[[], AbstractContextManager] = nullcontext, teacher_precision: str = "fp32",
                progress: bool = True, num_classes: int | None = None) -> TeacherStore:
    """Create (or resume) and fill the store at ``path``: ``teacher``'s outputs on every crop of the schedule drawn
    from ``seed`` for epochs ``1..epochs`` of ``splits``' training images, in ``precision`` (``float32``,
    ``float16`` or ``topk`` with ``k``). Under torchrun every process computes its share of the chunks.
    ``num_classes``: the teacher's output width, if not the data's class count (benchmarks on a small folder)."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}; got {precision!r}")
    epochs = check_int(epochs, "epochs", 1)
    chunk_size = check_int(chunk_size, "chunk size", 1)
    path, device = Path(path), torch.device(device)
    images, workers, world = splits.train, splits.workers, dist.world_size()
    norm = Normalization(splits.mean, splits.std, 3, 4, device)
    num_classes = splits.num_classes if num_classes is None else num_classes
    expected = store_expectation(module_digest(teacher.module), teacher_precision, images, num_classes,
                                 splits.image_size, splits.mean, splits.std)
    request = {**expected, "schedule": {"seed": seed, "epochs": epochs, "num_samples": len(images)},
               "outputs": {"precision": precision, "k": k if precision == "topk" else None, "chunk_size": chunk_size}}
    start = time.perf_counter()
    if dist.is_main():
        exists = (path / "store.json").is_file()
        store = TeacherStore.open(path, writable=True) if exists else None
        if store is not None:
            store.check(request, "this build")
        done = store.done_fraction if store is not None else 0.0
        teacher_s, decode_s, probed = _probe_seconds(teacher, splits, seed, norm, device, autocast)
        left = len(images) * epochs - (store.written_views() if store is not None else 0)
        _announce(path, len(images), num_classes, epochs, precision, k, left, teacher_s, decode_s,
                  probed, workers, world, done)
        if store is None:
            store = TeacherStore.create(path, expected, images.sizes, seed=seed, epochs=epochs, precision=precision,
                                        k=k, chunk_size=chunk_size, progress=progress)
    dist.barrier()
    if not dist.is_main():
        store = TeacherStore.open(path, writable=True)
    todo = store.pending()  # the same list on every rank: read after the barrier, before anyone writes
    dist.barrier()
    mine = todo[dist.rank()::world]
    source = ReplaySource(images, splits.image_size, store.schedule)
    loader = DataLoader(_Load(source), batch_size=None, sampler=_Chunks(source, store, mine), num_workers=workers,
                        pin_memory=device.type == "cuda", prefetch_factor=2 if workers else None)
    bar = tqdm(total=store.epochs * len(images), initial=store.written_views(), desc="teacher store", unit="view",
               disable=not (progress and dist.is_main()), dynamic_ncols=True, smoothing=0.05)
    for x, _, index, errors, extra in loader:
        if errors:
            raise BadImageError(*errors[0])
        x = norm(x.to(device, non_blocking=device.type == "cuda"))
        with autocast():
            logits = teacher.logits(x)
        epoch, first = extra["epoch"], int(index[0])
        store.write(epoch, first, logits)
        store.mark_done(epoch, first // chunk_size)
        bar.update(store.written_views() - bar.n)  # every rank's chunks: the mask is shared
    dist.barrier()
    bar.update(store.written_views() - bar.n)
    bar.close()
    if dist.is_main():
        if not store.complete:  # pragma: no cover - a chunk lost between ranks would be a bug
            raise RuntimeError(f"teacher store {path} is incomplete after the build; rerun to finish it")
        print(f"wrote {path}: {store.epochs * len(images):,} views, {store.size_bytes / 2**30:.2f} GiB, in "
              f"{duration(time.perf_counter() - start)}", flush=True)
    return store
