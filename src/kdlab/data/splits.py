"""A dataset's train/test tensors plus everything needed to feed them (normalisation, train augmentation)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kdlab.data.augment import ViewAugmentation
from kdlab.data.loader import BatchLoader

__all__ = ["DataSplits"]

_X_DTYPES = (torch.uint8, torch.float32)


def _stats(values: Sequence[float] | None, name: str, channels: int) -> tuple[float, ...] | None:
    if values is None:
        return None
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of floats (one per channel) or None; got {values!r}") from None
    if len(out) != channels:
        raise ValueError(f"{name} has {len(out)} entries but the inputs have {channels} channels; give one per channel")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite; got {values!r}")
    return out


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

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string; got {self.name!r}")
        nc = self.num_classes
        if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
            raise ValueError(f"num_classes must be a positive int; got {nc!r}")
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
        self.mean = _stats(self.mean, "mean", channels)
        self.std = _stats(self.std, "std", channels)
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
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= total:
                raise ValueError(f"{name} must be an int in [1, {total}] (the split's size) or None; got {n!r}")
            return slice(0, n)

        tr = take(n_train, self.num_train, "n_train")
        te = take(n_test, self.num_test, "n_test")
        return dataclasses.replace(
            self,
            x_train=self.x_train[tr],
            y_train=self.y_train[tr],
            x_test=self.x_test[te],
            y_test=self.y_test[te],
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
        return BatchLoader(
            self.x_train,
            self.y_train,
            batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            augment=self.train_augment if augment else None,
            mean=self.mean,
            std=self.std,
            seed=seed,
            device=device,
        )

    def test_loader(self, batch_size: int, *, device: torch.device | str = "cpu") -> BatchLoader:
        """A loader over the test split: dataset order, no augmentation, same normalisation."""
        return BatchLoader(
            self.x_test,
            self.y_test,
            batch_size,
            shuffle=False,
            augment=None,
            mean=self.mean,
            std=self.std,
            device=device,
        )
