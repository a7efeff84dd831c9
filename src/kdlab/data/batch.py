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
        label_mask: bool ``[B]``, ``True`` where ``y`` is a real label; ``None`` means every sample is labelled.
            Distillation-data policies (kdlab.data.policies) set it for mixed and synthetic inputs, whose
            hard-label loss is skipped (``Method.ce``).
        temperature: float ``[B]`` per-sample distillation temperature (per-source temperatures), or ``None``
            for the method's own.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    view: torch.Tensor | None = None
    label_mask: torch.Tensor | None = None
    temperature: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on ``device``."""
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(x=move(self.x), y=move(self.y), index=move(self.index), view=move(self.view),
                     label_mask=move(self.label_mask), temperature=move(self.temperature))
