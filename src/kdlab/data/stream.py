"""The streamed batch loader: samples produced in worker processes, every epoch a pure function of (seed, epoch).

A :class:`BatchSource` turns dataset indices into samples (decoded image crops, a user's ``Dataset`` items); each
sample is a pure function of ``(seed, epoch, index)``. :class:`StreamLoader` fixes which indices form which batch —
the permutation is the in-memory :class:`~kdlab.data.BatchLoader`'s, drawn from ``(seed, epoch)`` — and has
``data.workers`` processes (a ``torch.utils.data.DataLoader``, pinned memory on CUDA) build the batches, in order. So
the batches do not depend on the number of workers, and a run resumed at an epoch boundary sees exactly the batches
it would have seen. The workers are forked once per loader and kept for the run (persistent): forking anew each epoch
forked while the last epoch's queue threads were exiting, and CPython 3.11 can leave such a child stuck for ever (a
two-process run hung at its first evaluation, tests/data/test_data_images_e2e.py); the tasks carry the epoch, so kept
workers draw what fresh ones would. Normalisation happens where it is cheapest: on a CPU run the workers normalise
each sample right after decoding it, while it is in cache (a source that can, :meth:`BatchSource.normalized`), so the
training process does no per-pixel work; for a CUDA run batches leave the workers as uint8 pixels (4× less to copy
and to transfer), are pinned and copied without blocking, and are normalised on the device (as timm's prefetcher
does). A worker builds its batch in shared memory (:func:`batch_tensor`), so handing it to the training process
copies nothing. They are :class:`~kdlab.data.Batch` es with ``view=None``: the crops are continuous, not discrete
views, so the exact teacher-logit cache does not apply.

**The last partial batch** (docs/data.md, "Streamed data"). Training: every step has exactly the global batch
``B = optim.batch_size`` samples; the epoch has ``ceil(N / B)`` steps, and the last one is completed with the first
samples of the same epoch's permutation (wrapping around), so nothing is dropped, each of W ranks gets ``B / W``
samples of every step, and the steps are those of one process for every W. Evaluation: no padding (each sample is
counted once); rank r evaluates the contiguous block ``[N·r//W, N·(r+1)//W)``, and the per-example sums are added
over the ranks.
"""

from __future__ import annotations

import copy
import math
import os
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from kdlab._checks import check_int
from kdlab.data.batch import Batch
from kdlab.data.decode import BadImageError
from kdlab.data.loader import _STREAM_PERMUTATION, derive_seed
from kdlab.data.normalization import Normalization

__all__ = ["BatchSource", "StreamLoader", "batch_tensor", "default_workers"]


class BatchSource(ABC):
    """Samples by index: :meth:`tasks` (in the main process) says what to make, :meth:`load` (in a worker) makes
    it. ``load`` returns ``(x, y, index, errors)``: a ``[b, C, ...]`` tensor, int64 labels and indices, and the
    ``(path, reason)`` of inputs that could not be read (the main process raises for them, as one clear error)."""

    num_samples: int

    @abstractmethod
    def tasks(self, epoch: int, index: np.ndarray) -> Any:
        """A picklable description of the samples ``index`` in ``epoch`` (e.g. crop boxes)."""

    @abstractmethod
    def load(self, tasks: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[str, str]]]:
        """The batch described by ``tasks``."""

    def normalized(self, normalization: Normalization) -> BatchSource | None:
        """A copy of this source whose :meth:`load` returns batches already normalised by ``normalization``, or
        ``None`` if it cannot (then the loader normalises each batch)."""
        return None


def batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor for a batch; in a DataLoader worker it lives in shared memory, so sending it to the
    training process moves a handle, not the pixels (torch's ``default_collate`` allocates its batches the same way;
    a batch in private memory is copied into shared memory when it is sent)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    empty = torch.empty(0, dtype=dtype)
    return empty.new(empty._typed_storage()._new_shared(math.prod(shape))).view(shape)


class _Tasks(Dataset):
    """A DataLoader 'dataset' whose keys are whole batches' task lists (each worker builds whole batches)."""

    def __init__(self, source: BatchSource):
        self.source = source

    def __getitem__(self, tasks):
        return self.source.load(tasks)


class _Plan(Sampler):
    """This rank's task lists of the loader's current epoch, in order.

    It holds its loader by a weak reference: a strong one closed a cycle (loader → DataLoader → plan → loader) that
    kept a dropped loader and its worker processes alive until the cyclic collector ran, which could be inside a
    later loader's forked worker, where shutting the parent's workers down broke their queues."""

    def __init__(self, loader: StreamLoader):
        self._loader = weakref.ref(loader)

    @property
    def loader(self) -> StreamLoader:
        return self._loader()

    def __iter__(self):
        # (not a generator of its own: a suspended one, an epoch left part-way, would hold the loader again)
        loader = self.loader
        src, epoch, indices = loader.source, loader.epoch, list(loader.batches())
        return (src.tasks(epoch, index) for index in indices)

    def __len__(self) -> int:
        return len(self.loader)


def default_workers(processes_per_node: int = 1) -> int:
    """Decoding processes per training process: the cores this process may use, shared by the node's training
    processes, one left for the training process itself (at least 1, at most 8)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores // max(1, processes_per_node) - 1))


class StreamLoader:
    """Batches of ``source`` (see the module docstring for the order and the last-batch rule).

    Args:
        source: the :class:`BatchSource`.
        batch_size: samples per batch *per rank* (the global batch is ``batch_size · world_size``).
        shuffle: a fresh permutation per epoch (else dataset order).
        pad: complete the last training batch by wrapping around (training); ``False``: no padding (evaluation).
        seed: with the epoch (:meth:`set_epoch`) it fixes the order and every sample.
        device: where batches go (pinned host memory and a non-blocking copy on CUDA).
        workers: worker processes (0: in this process).
        normalization: applied to every batch (uint8 pixels are scaled by 1/255 first): on a CPU device by the
            source in the workers when it can (:meth:`BatchSource.normalized`), else on the device.
        labels: int64 labels of all samples, when known up front (for :attr:`y`).
        index_offset: added to ``Batch.index``.
    """

    augment = None  # continuous crops: no discrete view id, so no exact logit cache

    def __init__(self, source: BatchSource, batch_size: int, *, shuffle: bool, pad: bool, seed: int = 0,
                 device: torch.device | str = "cpu", workers: int = 0, normalization: Normalization | None = None,
                 labels: np.ndarray | None = None, index_offset: int = 0):
        if not isinstance(source, BatchSource):
            raise ValueError(f"source must be a kdlab BatchSource; got {type(source).__name__}")
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.seed = check_int(seed, "seed", 0)
        self.workers = check_int(workers, "workers", 0, note=" (data.workers)")
        self.index_offset = check_int(index_offset, "index_offset", 0)
        self.shuffle, self.pad = bool(shuffle), bool(pad)
        self.drop_last = False
        self.device = torch.device(device)
        self.normalization = normalization
        # CPU: normalised in the workers, fused with the uint8 → float step (the same float32 operations, so the
        # same numbers); an accelerator: uint8 crosses the bus and the device normalises
        fused = source.normalized(normalization) if normalization is not None and self.device.type == "cpu" else None
        self.source = fused or source
        self._normalize_batches = normalization is not None and fused is None
        self.mean = normalization.mean if normalization is not None else None
        self.std = normalization.std if normalization is not None else None
        self._labels = labels
        self.rank, self.world_size, self.epoch = 0, 1, 0
        self._loader: DataLoader | None = None

    # ---------------------------------------------------------------------------------------------- configuration
    def set_epoch(self, epoch: int) -> None:
        self.epoch = check_int(epoch, "epoch", 0)

    def sharded(self, rank: int, world_size: int) -> StreamLoader:
        """This loader for one of ``world_size`` ranks (its own worker processes)."""
        world_size = check_int(world_size, "world_size", 1)
        rank = check_int(rank, "rank", 0, world_size - 1, note=" (below world_size)")
        shard = copy.copy(self)
        shard.rank, shard.world_size, shard._loader = rank, world_size, None
        return shard

    @property
    def num_samples(self) -> int:
        return int(self.source.num_samples)

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    @property
    def labels(self) -> torch.Tensor | None:
        """All labels (dataset order), if the source knows them up front (:class:`~kdlab.data.protocol.Loader`)."""
        return None if self._labels is None else torch.from_numpy(self._labels)

    def _block(self) -> tuple[int, int]:
        n, r, w = self.num_samples, self.rank, self.world_size
        return n * r // w, n * (r + 1) // w

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(self.num_samples / self.global_batch_size)
        lo, hi = self._block()
        return math.ceil((hi - lo) / self.batch_size)

    def global_batch_len(self, step: int) -> int:
        """Samples in global training batch ``step`` over all ranks: always the full global batch when padded (the
        last one wraps around), else what is left."""
        g = self.global_batch_size
        return g if self.pad else min(g, self.num_samples - step * g)

    # ------------------------------------------------------------------------------------------------- iteration
    def order(self) -> np.ndarray:
        """This epoch's permutation of all samples (int64), as :meth:`kdlab.data.BatchLoader.plan` draws it."""
        n = self.num_samples
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, _STREAM_PERMUTATION))
        return torch.randperm(n, generator=gen).numpy()

    def batches(self) -> Iterator[np.ndarray]:
        """This rank's dataset indices, batch by batch, for the current epoch."""
        perm = self.order()
        if self.pad:
            b, g, n = self.batch_size, self.global_batch_size, self.num_samples
            for k in range(len(self)):
                start = k * g + self.rank * b
                yield perm[np.arange(start, start + b) % n]
        else:
            lo, hi = self._block()
            for start in range(lo, hi, self.batch_size):
                yield perm[start:min(hi, start + self.batch_size)]

    def _data_loader(self) -> DataLoader:
        if self._loader is None:
            workers = self.workers
            self._loader = DataLoader(_Tasks(self.source), batch_size=None, sampler=_Plan(self),
                                      num_workers=workers, pin_memory=self.device.type == "cuda",
                                      prefetch_factor=4 if workers else None, persistent_workers=workers > 0)
        return self._loader

    def __iter__(self) -> Iterator[Batch]:
        for loaded in self._data_loader():
            yield self._batch(*loaded)

    def _batch(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, errors: list) -> Batch:
        """One loaded batch (:meth:`BatchSource.load`'s tuple) on the device, normalised."""
        if errors:
            path, reason = errors[0]
            raise BadImageError(path, reason)
        non_blocking = self.device.type == "cuda"
        x = x.to(self.device, non_blocking=non_blocking)
        index = index.to(self.device, non_blocking=non_blocking)
        return Batch(x=self.normalization(x) if self._normalize_batches else x,
                     y=y.to(self.device, non_blocking=non_blocking),
                     index=index + self.index_offset if self.index_offset else index)

    def __repr__(self) -> str:
        return (f"StreamLoader(n={self.num_samples}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"pad={self.pad}, workers={self.workers}, seed={self.seed}, epoch={self.epoch}, "
                f"rank={self.rank}/{self.world_size}, device={self.device}, source={type(self.source).__name__})")
