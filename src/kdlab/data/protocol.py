"""The loader protocol: what the engine and the builder may ask of a loader, whichever kind it is.

Two kinds implement it: :class:`~kdlab.data.loader.BatchLoader` (data in memory, one gather per batch) and
:class:`~kdlab.data.stream.StreamLoader` (samples built in worker processes; :class:`~kdlab.data.replay.ReplayLoader`
and a user's Dataset through :func:`~kdlab.data.dataset_stream.dataset_loader` are streamed loaders too). Either
yields :class:`~kdlab.data.batch.Batch` es whose order and contents are a pure function of ``(seed, epoch)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch

from kdlab.data.batch import Batch

__all__ = ["Loader"]


@runtime_checkable
class Loader(Protocol):
    batch_size: int  # samples per batch of this rank (the global batch is batch_size · world_size)
    rank: int
    world_size: int
    device: torch.device
    augment: object | None  # a discrete view augmentation (the exact teacher-logit cache keys on it), else None

    @property
    def num_samples(self) -> int:
        """Samples in the data set, all ranks together."""

    @property
    def global_batch_size(self) -> int:
        """Samples of one step over all ranks."""

    @property
    def labels(self) -> torch.Tensor | None:
        """Every label in data-set order, when known up front (None: not without reading the data)."""

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order (and augmentation) the next iteration uses."""

    def sharded(self, rank: int, world_size: int) -> "Loader":
        """This loader for one of ``world_size`` ranks: rank r's part of every global batch."""

    def global_batch_len(self, step: int) -> int:
        """Samples in global batch ``step`` over all ranks (the last one may be short)."""

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""

    def __iter__(self) -> Iterator[Batch]:
        """This rank's batches of the current epoch."""
