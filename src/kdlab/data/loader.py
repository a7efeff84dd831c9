"""In-memory batch loader: one gather + one augmentation op + one normalisation per batch.

The whole dataset lives on ``device`` (uint8 for images: CIFAR-100's train split is 150 MiB). Each epoch's
permutation and every sample's view id are drawn up front from generators seeded by ``(seed, epoch)``, so an epoch
is a pure function of those two numbers: a run resumed at an epoch boundary replays bit-exactly, and the augmented
sample behind a dataset index does not depend on the batch size or the number of ranks.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from kdlab._checks import check_int, is_int
from kdlab.data.batch import Batch
from kdlab.data.normalization import Normalization
from kdlab.data.views import ViewAugmentation

__all__ = ["BatchLoader", "derive_seed"]

# Generator streams per (seed, epoch); fixed numbers so adding a stream never shifts the others.
_STREAM_PERMUTATION = 0
_STREAM_VIEWS = 1


def derive_seed(*keys: int) -> int:
    """A 64-bit seed hashed from non-negative integer keys (numpy ``SeedSequence``).

    Hashing (rather than e.g. ``seed + epoch``) keeps ``(seed=0, epoch=1)`` and ``(seed=1, epoch=0)`` independent.
    """
    if not all(is_int(k) and k >= 0 for k in keys):
        raise ValueError(f"seed keys must be non-negative ints; got {keys!r}")
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0])


class BatchLoader:
    """Iterate over in-memory ``(x, y)`` in mini-batches of :class:`~kdlab.data.Batch`.

    Args:
        x: inputs ``[N, C, ...]``; uint8 pixels (scaled by 1/255 before ``mean``/``std``) or float32.
        y: int64 labels ``[N]``.
        batch_size: samples per batch *per rank* (the global batch is ``batch_size · world_size``).
        shuffle: a fresh permutation per epoch; ``False`` keeps dataset order.
        drop_last: drop the last incomplete global batch.
        augment: a :class:`ViewAugmentation` applied to the raw batch before normalisation, or ``None``.
        mean, std: per-channel normalisation applied after augmentation, or ``None``.
        seed: non-negative int; with the epoch (:meth:`set_epoch`) it fixes permutation and views.
        device: where the data is moved once and every batch is built.
        index_offset: added to ``Batch.index`` (e.g. when this set is one part of a larger indexed pool).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        augment: ViewAugmentation | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
        index_offset: int = 0,
    ):
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise ValueError("x and y must be torch tensors; use kdlab.data.as_tensors to convert arrays or datasets")
        if x.ndim < 2:
            raise ValueError(f"x must be [N, C, ...] with a channel dim; got shape {tuple(x.shape)}")
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise ValueError(f"x must be uint8 pixels or floating point; got {x.dtype}")
        if y.dtype != torch.int64 or y.ndim != 1:
            raise ValueError(f"y must be a 1-D int64 tensor of class ids; got {y.dtype} {tuple(y.shape)}")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]} labels; they must match")
        if x.shape[0] == 0:
            raise ValueError("x and y are empty; a loader needs at least one sample")
        if augment is not None and not isinstance(augment, ViewAugmentation):
            raise ValueError(
                f"augment must be a kdlab.data.ViewAugmentation (e.g. CropFlip()) or None; got {type(augment).__name__}"
            )
        if not isinstance(shuffle, bool) or not isinstance(drop_last, bool):
            raise ValueError(f"shuffle and drop_last must be bools; got {shuffle!r}, {drop_last!r}")
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.seed = check_int(seed, "seed", 0)
        self.index_offset = check_int(index_offset, "index_offset", 0)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment
        self.device = torch.device(device)
        self.normalization = Normalization(mean, std, x.shape[1], x.ndim, self.device)
        self.mean, self.std = self.normalization.mean, self.normalization.std
        self.x = x.to(self.device)
        self.y = y.to(self.device)
        self.rank = 0
        self.world_size = 1
        self.epoch = 0

    # ---------------------------------------------------------------------------------------------- configuration
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation and views the next iteration uses (like DistributedSampler)."""
        self.epoch = check_int(epoch, "epoch", 0)

    def sharded(self, rank: int, world_size: int) -> BatchLoader:
        """A view of this loader for one of ``world_size`` ranks (data tensors are shared, not copied).

        Every rank draws the same global permutation; global batch k is ``perm[k·B·W : (k+1)·B·W]`` and rank r takes
        its r-th contiguous chunk, so concatenating the ranks' batches in rank order gives the global batch. A last
        incomplete global batch of m samples is split into near-equal chunks ``[m·r//W, m·(r+1)//W)`` (empty when
        m < W, so prefer ``drop_last=True`` for DDP); every rank yields the same number of batches.
        """
        world_size = check_int(world_size, "world_size", 1)
        rank = check_int(rank, "rank", 0)
        if rank >= world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}); got {rank}")
        shard = copy.copy(self)
        shard.rank, shard.world_size = rank, world_size
        return shard

    # ------------------------------------------------------------------------------------------------- iteration
    @property
    def num_samples(self) -> int:
        """Samples in the dataset (all ranks together)."""
        return int(self.x.shape[0])

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    @property
    def labels(self) -> torch.Tensor:
        """Every label in data-set order (:class:`~kdlab.data.protocol.Loader`)."""
        return self.y

    def __len__(self) -> int:
        n, g = self.num_samples, self.global_batch_size
        return n // g if self.drop_last else math.ceil(n / g)

    def global_batch_len(self, step: int) -> int:
        """Samples in global batch ``step`` over all ranks: the last one is short (it is split, not padded)."""
        return min(self.global_batch_size, self.num_samples - step * self.global_batch_size)

    def plan(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This epoch's ``(permutation, views)``: int64 CPU tensors of length N; ``views[i]`` is dataset index i's.

        Drawn on CPU generators so the result is identical on every device and platform.
        """
        n = self.num_samples
        if self.shuffle:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, _STREAM_PERMUTATION))
            perm = torch.randperm(n, generator=gen)
        else:
            perm = torch.arange(n)
        views = None
        if self.augment is not None:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, _STREAM_VIEWS))
            views = self.augment.sample(n, gen)
        return perm, views

    def __iter__(self) -> Iterator[Batch]:
        perm, views = self.plan()
        perm = perm.to(self.device)
        views = None if views is None else views.to(self.device)
        g = self.global_batch_size
        for k in range(len(self)):
            chunk = perm[k * g : (k + 1) * g]
            m = chunk.shape[0]
            idx = chunk[(m * self.rank) // self.world_size : (m * (self.rank + 1)) // self.world_size]
            view = None if views is None else views[idx]
            yield Batch(
                x=self.inputs_for(idx, view),
                y=self.y[idx],
                index=idx + self.index_offset if self.index_offset else idx,
                view=view,
            )

    def inputs_for(self, rows: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        """The exact model inputs for dataset ``rows`` under view ids ``views``: augmentation, then normalisation.

        ``rows`` index this loader's data (without ``index_offset``) and ``views`` holds one view id per row, as
        :meth:`plan` draws them (``None`` for a loader without augmentation); both int64 on :attr:`device`. The
        batches of an iteration are built here, so a teacher-logit cache that calls it sees exactly the student's
        inputs. The ids are not range-checked (that would synchronise a GPU on every batch):
        ``augment.apply`` is the checked form.
        """
        if (views is None) != (self.augment is None):
            raise ValueError(
                "views must be given exactly when the loader has an augmentation "
                f"(augment={self.augment!r}, views={'None' if views is None else 'a tensor'})"
            )
        x = self.x[rows]
        if views is not None:
            x = self.augment._apply(x, views)
        return self.normalization(x)

    def __repr__(self) -> str:
        return (
            f"BatchLoader(n={self.num_samples}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"drop_last={self.drop_last}, augment={self.augment!r}, seed={self.seed}, epoch={self.epoch}, "
            f"rank={self.rank}/{self.world_size}, device={self.device})"
        )
