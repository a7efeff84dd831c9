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
from typing import Any

import numpy as np
import torch

from kdlab.data.augment import ViewAugmentation
from kdlab.data.batch import Batch

__all__ = ["BatchLoader", "normalize", "derive_seed"]

# Generator streams per (seed, epoch); fixed numbers so adding a stream never shifts the others.
_STREAM_PERMUTATION = 0
_STREAM_VIEWS = 1
_STREAM_USER = 2  # epoch_generator(k) uses _STREAM_USER + k


def derive_seed(*keys: int) -> int:
    """A 64-bit seed hashed from non-negative integer keys (numpy ``SeedSequence``).

    Hashing (rather than e.g. ``seed + epoch``) keeps ``(seed=0, epoch=1)`` and ``(seed=1, epoch=0)`` independent.
    """
    for k in keys:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"seed keys must be non-negative ints; got {keys!r}")
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0])


def _stats_tensor(values: Any, name: str, channels: int, ndim: int, device: torch.device) -> torch.Tensor | None:
    if values is None:
        return None
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() not in (1, channels):
        raise ValueError(f"{name} must have 1 or {channels} entries (one per channel of x); got {t.numel()}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite; got {values!r}")
    # Broadcast over [N, C, *spatial].
    return t.view(1, -1, *([1] * (ndim - 2))).to(device)


def _normalize(x: torch.Tensor, mean_t: torch.Tensor | None, std_t: torch.Tensor | None) -> torch.Tensor:
    out = x.float()
    if x.dtype == torch.uint8:
        # Same float32 arithmetic as torchvision's ToTensor (÷255) then Normalize (−mean, ÷std).
        out = out / 255.0
    if mean_t is not None:
        out = (out - mean_t) / std_t
    return out


def normalize(x: torch.Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> torch.Tensor:
    """``(x/255 − mean_c)/std_c`` for uint8 pixels, ``(x − mean_c)/std_c`` for floats, per channel (dim 1); float32.

    ``mean = std = None`` skips the standardisation (uint8 is still scaled to [0, 1]).
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor; got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"x must be a batch [N, C, ...]; got shape {tuple(x.shape)}")
    if (mean is None) != (std is None):
        raise ValueError("pass both mean and std, or neither")
    mean_t = _stats_tensor(mean, "mean", x.shape[1], x.ndim, x.device)
    std_t = _stats_tensor(std, "std", x.shape[1], x.ndim, x.device)
    if std_t is not None and not (std_t > 0).all():
        raise ValueError(f"std must be > 0 per channel; got {std!r}")
    return _normalize(x, mean_t, std_t)


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")
    return int(value)


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
        if (mean is None) != (std is None):
            raise ValueError("pass both mean and std, or neither")
        if not isinstance(shuffle, bool) or not isinstance(drop_last, bool):
            raise ValueError(f"shuffle and drop_last must be bools; got {shuffle!r}, {drop_last!r}")
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        self.seed = _check_int(seed, "seed", 0)
        self.index_offset = _check_int(index_offset, "index_offset", 0)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment
        self.device = torch.device(device)
        self.x = x.to(self.device)
        self.y = y.to(self.device)
        self.mean = None if mean is None else tuple(float(v) for v in torch.as_tensor(mean).flatten())
        self.std = None if std is None else tuple(float(v) for v in torch.as_tensor(std).flatten())
        self._mean_t = _stats_tensor(mean, "mean", x.shape[1], x.ndim, self.device)
        self._std_t = _stats_tensor(std, "std", x.shape[1], x.ndim, self.device)
        if self._std_t is not None and not (self._std_t > 0).all():
            raise ValueError(f"std must be > 0 per channel; got {std!r}")
        self.rank = 0
        self.world_size = 1
        self.epoch = 0

    # ---------------------------------------------------------------------------------------------- configuration
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation and views the next iteration uses (like DistributedSampler)."""
        self.epoch = _check_int(epoch, "epoch", 0)

    def sharded(self, rank: int, world_size: int) -> BatchLoader:
        """A view of this loader for one of ``world_size`` ranks (data tensors are shared, not copied).

        Every rank draws the same global permutation; global batch k is ``perm[k·B·W : (k+1)·B·W]`` and rank r takes
        its r-th contiguous chunk, so concatenating the ranks' batches in rank order gives the global batch. A last
        incomplete global batch of m samples is split into near-equal chunks ``[m·r//W, m·(r+1)//W)`` (empty when
        m < W, so prefer ``drop_last=True`` for DDP); every rank yields the same number of batches.
        """
        world_size = _check_int(world_size, "world_size", 1)
        rank = _check_int(rank, "rank", 0)
        if rank >= world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}); got {rank}")
        shard = copy.copy(self)
        shard.rank, shard.world_size = rank, world_size
        return shard

    def epoch_generator(self, stream: int = 0, device: torch.device | str = "cpu") -> torch.Generator:
        """A torch.Generator seeded by ``(seed, epoch, stream)``, independent of the loader's own draws.

        For per-epoch randomness outside the loader (e.g. mixup on a second view) that must replay on resume.
        """
        stream = _check_int(stream, "stream", 0)
        gen = torch.Generator(device=device)
        gen.manual_seed(derive_seed(self.seed, self.epoch, _STREAM_USER + stream))
        return gen

    # ------------------------------------------------------------------------------------------------- iteration
    @property
    def num_samples(self) -> int:
        """Samples in the dataset (all ranks together)."""
        return int(self.x.shape[0])

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        n, g = self.num_samples, self.global_batch_size
        return n // g if self.drop_last else math.ceil(n / g)

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
            x = self.x[idx]
            view = None
            if views is not None:
                view = views[idx]
                x = self.augment._apply(x, view)  # ids drawn by us: in range, on device
            yield Batch(
                x=_normalize(x, self._mean_t, self._std_t),
                y=self.y[idx],
                index=idx + self.index_offset if self.index_offset else idx,
                view=view,
            )

    def __repr__(self) -> str:
        return (
            f"BatchLoader(n={self.num_samples}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"drop_last={self.drop_last}, augment={self.augment!r}, seed={self.seed}, epoch={self.epoch}, "
            f"rank={self.rank}/{self.world_size}, device={self.device})"
        )
