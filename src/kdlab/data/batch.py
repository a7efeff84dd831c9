"""The unit a :class:`~kdlab.data.BatchLoader` yields."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(eq=False)
class Batch:
    """One mini-batch.

    Attributes:
        x: float32 inputs, augmented and then normalised (``[B, C, H, W]`` or ``[B, C, L]``).
        y: int64 labels ``[B]``.
        index: int64 dataset indices ``[B]`` (plus the loader's ``index_offset``): the key of an
            exact teacher-logit cache together with ``view``.
        view: int64 view ids ``[B]`` of the discrete augmentation that produced ``x``, or ``None``
            when the loader has no augmentation.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    view: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on ``device``."""
        view = None if self.view is None else self.view.to(device, non_blocking=non_blocking)
        return Batch(
            x=self.x.to(device, non_blocking=non_blocking),
            y=self.y.to(device, non_blocking=non_blocking),
            index=self.index.to(device, non_blocking=non_blocking),
            view=view,
        )
