"""A dataset's train/test tensors plus everything needed to feed them, and the split control of the data policies.

:class:`DataSplits` holds the tensors, the normalisation and the train augmentation, and builds the loaders over them
(:meth:`DataSplits.loader`). :func:`select_split` keeps the teacher part or the held-out part of the train split
(Stanton et al., NeurIPS 2021, §5: a student distilled on data its teacher never saw).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kdlab._checks import check_int
from kdlab.data.loader import BatchLoader
from kdlab.data.normalization import channel_values
from kdlab.data.views import ViewAugmentation

__all__ = ["DataSplits", "PARTS", "holdout_slices", "select_split"]

_X_DTYPES = (torch.uint8, torch.float32)
#: The parts of a train split under split control that :func:`select_split` can keep.
PARTS = ("teacher", "holdout", "both")


@dataclass(eq=False)
class DataSplits:
    """Train and test tensors of one dataset.

    Attributes:
        name: dataset name, e.g. ``"cifar100"``.
        x_train, x_test: uint8 images ``[N, C, H, W]`` (raw pixels) or float32 signals/images ``[N, C, ...]``.
        y_train, y_test: int64 class ids in ``[0, num_classes)``.
        num_classes: number of classes.
        mean, std: per-channel normalisation applied *after* augmentation (``None``: none).
        train_augment: the discrete train-time augmentation, or ``None``.
        class_names: optional class names, ``num_classes`` of them.
        holdout_x: the held-out train inputs under split control (:func:`select_split`), kept for a data policy's
            ``holdout`` source; ``None`` otherwise.
        skipped: ``(path, reason)`` of source files left out as unreadable (``data.skip_bad``), for the run log.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    train_augment: ViewAugmentation | None = None
    class_names: tuple[str, ...] | None = None
    holdout_x: torch.Tensor | None = None
    skipped: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string; got {self.name!r}")
        nc = self.num_classes = check_int(self.num_classes, "num_classes", 1)
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
                raise ValueError(f"x_{split} and y_{split} must be torch tensors")
            if x.dtype not in _X_DTYPES:
                raise ValueError(f"x_{split} must be uint8 (pixels) or float32; got {x.dtype} (convert it first)")
            if x.ndim < 3:
                raise ValueError(f"x_{split} must be [N, C, H, W] or [N, C, L]; got shape {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.ndim != 1:
                raise ValueError(f"y_{split} must be a 1-D int64 tensor; got {y.dtype} of shape {tuple(y.shape)}")
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"x_{split} has {x.shape[0]} samples but y_{split} has {y.shape[0]} labels")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= nc):
                raise ValueError(
                    f"y_{split} must lie in [0, num_classes={nc}); found labels {int(y.min())}..{int(y.max())}"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"train and test samples differ in shape: {tuple(self.x_train.shape[1:])} vs "
                f"{tuple(self.x_test.shape[1:])}"
            )
        if self.x_train.dtype != self.x_test.dtype:
            raise ValueError(f"x_train is {self.x_train.dtype} but x_test is {self.x_test.dtype}; use one dtype")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither")
        channels = int(self.x_train.shape[1])
        self.mean = channel_values(self.mean, "mean", channels)
        self.std = channel_values(self.std, "std", channels)
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std must be > 0 per channel; got {self.std}")
        if self.train_augment is not None and not isinstance(self.train_augment, ViewAugmentation):
            raise ValueError(
                f"train_augment must be a ViewAugmentation or None; got {type(self.train_augment).__name__}"
            )
        if self.class_names is not None:
            self.class_names = tuple(str(c) for c in self.class_names)
            if len(self.class_names) != nc:
                raise ValueError(f"class_names has {len(self.class_names)} names for num_classes={nc}")
        held = self.holdout_x
        if held is not None and (not isinstance(held, torch.Tensor) or held.dtype != self.x_train.dtype
                                 or held.shape[1:] != self.x_train.shape[1:]):
            got = f"{held.dtype} {tuple(held.shape)}" if isinstance(held, torch.Tensor) else type(held).__name__
            raise ValueError(f"holdout_x must be a tensor of train samples ({self.x_train.dtype} [N, "
                             f"{', '.join(map(str, self.input_shape))}]) or None; got {got}")

    @classmethod
    def from_numpy(cls, name: str, arrays: Mapping[str, np.ndarray], num_classes: int, **fields: Any) -> DataSplits:
        """Splits over the numpy ``arrays["x_train"|"y_train"|"x_test"|"y_test"]`` (shared memory, no copy);
        ``fields`` are the other attributes (``mean``, ``std``, ``train_augment``, ...)."""
        tensors = (torch.from_numpy(arrays[k]) for k in ("x_train", "y_train", "x_test", "y_test"))
        return cls(name, *tensors, num_classes, **fields)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(3, 32, 32)``."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> DataSplits:
        """The first ``n_train`` train and ``n_test`` test samples (``None`` keeps a split whole); for quick runs."""

        def take(n: int | None, total: int, name: str) -> slice:
            if n is None:
                return slice(None)
            return slice(0, check_int(n, name, 1, total, note=" (the split's size) or None"))

        tr = take(n_train, self.num_train, "n_train")
        te = take(n_test, self.num_test, "n_test")
        return dataclasses.replace(
            self,
            x_train=self.x_train[tr],
            y_train=self.y_train[tr],
            x_test=self.x_test[te],
            y_test=self.y_test[te],
        )

    def loader(
        self,
        part: str,
        batch_size: int,
        *,
        augment: bool = False,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> BatchLoader:
        """A :class:`BatchLoader` over the ``"train"`` or ``"test"`` split with this dataset's normalisation.

        ``augment``: use :attr:`train_augment` (``False``: the clean samples). The one place where a split becomes a
        loader; :meth:`train_loader` and :meth:`test_loader` are its two usual settings.
        """
        if part not in ("train", "test"):
            raise ValueError(f"part must be 'train' or 'test'; got {part!r}")
        x, y = (self.x_train, self.y_train) if part == "train" else (self.x_test, self.y_test)
        return BatchLoader(
            x,
            y,
            batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            augment=self.train_augment if augment else None,
            mean=self.mean,
            std=self.std,
            seed=seed,
            device=device,
        )

    def train_loader(
        self,
        batch_size: int,
        *,
        augment: bool = True,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> BatchLoader:
        """A loader over the train split with this dataset's augmentation (``augment=False``: clean train split)."""
        return self.loader("train", batch_size, augment=augment, shuffle=shuffle, drop_last=drop_last, seed=seed,
                           device=device)

    def test_loader(self, batch_size: int, *, device: torch.device | str = "cpu") -> BatchLoader:
        """A loader over the test split: dataset order, no augmentation, same normalisation."""
        return self.loader("test", batch_size, device=device)


def holdout_slices(n: int, fraction: float) -> tuple[slice, slice]:
    """(teacher part, held-out part) of a train split of ``n`` samples: the held-out part is the last
    ``ceil(fraction·n)`` samples (MNIST-1D and CIFAR train orders carry no class order, so a tail split is fair)."""
    k = math.ceil(fraction * n)
    if fraction > 0 and not 0 < k < n:
        raise ValueError(f"distill_data.holdout_fraction={fraction} leaves an empty part of the {n} training "
                         "samples; choose a fraction strictly between 0 and 1 with at least one sample each side")
    return slice(0, n - k), slice(n - k, n)


def select_split(cfg: Any, splits: DataSplits, part: str) -> DataSplits:
    """The training data of a run under split control: the ``part`` of the train split it trains on.

    ``cfg`` is a ``DistillDataConfig`` (its ``holdout_fraction``); ``part`` is one of :data:`PARTS`: a teacher run
    keeps ``"teacher"``, a student the ``cfg.split`` it distils on. The held-out inputs stay reachable as
    :attr:`DataSplits.holdout_x` (for a data policy's ``holdout`` source). No-op when ``cfg.holdout_fraction == 0``.
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}; got {part!r}")
    if cfg.holdout_fraction == 0:
        return splits
    teacher, holdout = holdout_slices(splits.num_train, cfg.holdout_fraction)
    keep = {"teacher": teacher, "holdout": holdout, "both": slice(0, splits.num_train)}[part]
    return dataclasses.replace(splits, x_train=splits.x_train[keep], y_train=splits.y_train[keep],
                               holdout_x=splits.x_train[holdout])
