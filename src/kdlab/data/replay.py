"""Replaying a stored crop schedule in the streamed loader, with the rows stored for the same crops.

:class:`ReplaySource` is an :class:`~kdlab.data.image_stream.ImageSource` whose training crops come from a
:class:`~kdlab.data.crop_schedule.CropSchedule` instead of being drawn from the run's seed: image ``i`` in epoch
``e`` is cropped by the schedule's box ``(e, i)``. What the run's seed still decides is the *order* (the loader's
permutation of each epoch) and everything outside the data (the student's initialisation). So every run replaying
one schedule — any seed, any method, 1 or N processes — trains on the same views of each image in each epoch, only
in its own order; with the schedule's own seed the run is exactly the live run with that seed.

Each replayed batch is a :class:`ReplayBatch`: its ``view`` is the epoch (a replayed crop is a discrete view, named
by (index, epoch) as a CIFAR view is by (index, view id)), and ``stored`` holds what an ``outputs`` reader returned
for those (epoch, index) pairs — read in the loader's worker processes, so a training step needs no host round trip
to look them up (:class:`kdlab.teachers.stored.StoredTeacher` consumes them). Rows that fail the reader's integrity
check (a :class:`~kdlab._io.StaleCacheError` in a worker) are raised in the main process as that one-line error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from kdlab._io import StaleCacheError
from kdlab.data.batch import Batch
from kdlab.data.crop_schedule import CropSchedule
from kdlab.data.folders import ImageList
from kdlab.data.image_stream import ImageSource
from kdlab.data.stream import StreamLoader

__all__ = ["ReplayBatch", "ReplayLoader", "ReplaySource", "RowReader", "replay_loader"]


class RowReader(Protocol):
    def read(self, epoch: int, index: np.ndarray) -> dict[str, torch.Tensor]:
        """Rows stored for images ``index`` in ``epoch`` (1-based), as CPU tensors with a leading batch axis."""


@dataclass(eq=False)
class ReplayBatch(Batch):
    """A :class:`~kdlab.data.Batch` of replayed crops: ``view`` = the epoch, ``stored`` = the stored rows (or None)."""

    stored: dict[str, torch.Tensor] | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ReplayBatch:
        moved = super().to(device, non_blocking)
        stored = None if self.stored is None else {k: v.to(device, non_blocking=non_blocking)
                                                   for k, v in self.stored.items()}
        return ReplayBatch(**vars(moved), stored=stored)


class ReplaySource(ImageSource):
    """Training crops of ``schedule`` (not of a seed), and the ``outputs`` rows of the same (epoch, index) pairs."""

    def __init__(self, images: ImageList, size: int, schedule: CropSchedule, outputs: RowReader | None = None,
                 reduce: bool = True):
        if schedule.num_samples != len(images):
            raise ValueError(f"the crop schedule covers {schedule.num_samples} images but the training set has "
                             f"{len(images)}; use the store built for this data")
        super().__init__(images, size, train=True, seed=schedule.seed, reduce=reduce)
        self.schedule, self.outputs = schedule, outputs

    def tasks(self, epoch: int, index: np.ndarray) -> tuple[int, list[tuple[int, tuple]]]:
        boxes = self.schedule.boxes(epoch, index)
        return epoch, [(int(i), boxes[k]) for k, i in enumerate(index)]

    def load(self, tasks):
        epoch, items = tasks
        x, y, index, errors = super().load(items)
        try:
            stored = self.outputs.read(epoch, index.numpy()) if self.outputs is not None and not errors else None
        except StaleCacheError as e:  # raised by the main process (a worker's exception would arrive as a traceback)
            return x, y, index, errors, {"epoch": epoch, "stored": None, "stale": str(e)}
        return x, y, index, errors, {"epoch": epoch, "stored": stored}


class ReplayLoader(StreamLoader):
    """A training :class:`StreamLoader` over a :class:`ReplaySource`; yields :class:`ReplayBatch` es."""

    def _batch(self, x, y, index, errors, extra: dict[str, Any]) -> ReplayBatch:
        if extra.get("stale"):
            raise StaleCacheError(extra["stale"])
        batch = super()._batch(x, y, index, errors)
        non_blocking = self.device.type == "cuda"
        stored = extra["stored"]
        if stored is not None:
            stored = {k: v.to(self.device, non_blocking=non_blocking) for k, v in stored.items()}
        view = torch.full_like(batch.index, extra["epoch"])
        return ReplayBatch(x=batch.x, y=batch.y, index=batch.index, view=view, stored=stored)


def replay_loader(loader: StreamLoader, schedule: CropSchedule, outputs: RowReader | None = None) -> ReplayLoader:
    """``loader`` (a streamed *training* loader, possibly sharded) replaying ``schedule``: same batch size, order
    seed, workers, device, normalisation and shard; crops from the schedule, ``outputs`` rows attached."""
    source = loader.source
    if not isinstance(source, ImageSource) or not source.train or not loader.shuffle:
        raise ValueError("a crop schedule replays the training loader of a streamed image data set (random crops); "
                         "this loader is not one")
    replay = ReplayLoader(ReplaySource(source.images, source.size, schedule, outputs, source.reduce),
                          loader.batch_size, shuffle=True, pad=loader.pad, seed=loader.seed, device=loader.device,
                          workers=loader.workers, normalization=loader.normalization, labels=loader._labels,
                          index_offset=loader.index_offset)
    return replay.sharded(loader.rank, loader.world_size) if loader.world_size > 1 else replay
