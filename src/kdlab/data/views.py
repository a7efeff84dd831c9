"""Discrete view augmentations: every augmented input is one of ``num_views`` fixed transforms of the stored sample.

A view is named by an integer id, drawn with a ``torch.Generator`` (:meth:`ViewAugmentation.sample`) and applied by
:meth:`ViewAugmentation.apply`, a pure function of ``(x, views)``. Because the student's input is then fully
described by ``(dataset index, view id)``, the teacher's logits for that pair can be cached exactly
(:class:`~kdlab.teachers.cache.CachedTeacher`). :class:`CropFlip` (CIFAR's RandomCrop(32, padding=4) + horizontal
flip, 162 views), :class:`Shift1D` (MNIST-1D shifts) and :class:`Identity`. See docs/data.md.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from kdlab._checks import check_int, is_int
from kdlab.data._ops import check_generator

__all__ = ["ViewAugmentation", "CropFlip", "Shift1D", "Identity"]


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, Sequence) and len(value) == 2 and all(is_int(v) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or a (height, width) pair of ints; got {value!r}")
    if min(pair) < 1:
        raise ValueError(f"{name} must be positive; got {value!r}")
    return pair


class ViewAugmentation(ABC):
    """A finite family of deterministic transforms ("views") applied per sample by view id.

    Subclasses set ``num_views`` and ``identity_view`` (the id whose transform is the identity, i.e. the clean
    input) and implement :meth:`_apply` (no validation; the loader calls it with ids it drew itself) and
    :meth:`describe`. Views are drawn uniformly, which reproduces the independent uniform draws of the torchvision
    pipelines they replace.
    """

    num_views: int
    identity_view: int

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` view ids, i.i.d. uniform on ``[0, num_views)``, as int64 on the generator's device."""
        check_generator(generator)
        n = check_int(n, "n", 0, note=" (number of view ids to draw)")
        device = generator.device if generator is not None else torch.device("cpu")
        return torch.randint(0, self.num_views, (n,), generator=generator, device=device)

    def apply(self, x: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """Transform sample ``i`` of ``x`` by view ``views[i]``; deterministic, any dtype, same device as ``x``."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"x must be a torch.Tensor; got {type(x).__name__}")
        if not isinstance(views, torch.Tensor) or views.dtype != torch.int64 or views.ndim != 1:
            got = f"{views.dtype} {tuple(views.shape)}" if isinstance(views, torch.Tensor) else type(views).__name__
            raise ValueError(f"views must be a 1-D int64 tensor of view ids; got {got}")
        if views.shape[0] != x.shape[0]:
            raise ValueError(f"views has {views.shape[0]} ids but x has {x.shape[0]} samples; pass one id per sample")
        if views.numel() and (int(views.min()) < 0 or int(views.max()) >= self.num_views):
            raise ValueError(
                f"views must lie in [0, {self.num_views}) for {type(self).__name__}; "
                f"got min {int(views.min())}, max {int(views.max())}"
            )
        return self._apply(x, views.to(x.device))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw one view per sample and apply it: returns ``(x_augmented, views)``."""
        views = self.sample(int(x.shape[0]), generator).to(x.device)
        return self.apply(x, views), views

    @abstractmethod
    def _apply(self, x: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """:meth:`apply` without argument checks (``views`` already on ``x.device`` and in range)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able description; two augmentations with equal descriptions produce identical views.

        A teacher-logit cache stores this and refuses to serve a loader whose augmentation describes differently.
        """

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ViewAugmentation) and self.describe() == other.describe()

    def __hash__(self) -> int:
        return hash(repr(sorted(self.describe().items())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k not in ("name", "num_views", "encoding"))
        return f"{type(self).__name__}({args})"


class Identity(ViewAugmentation):
    """No augmentation: a single view (id 0) that returns the input unchanged."""

    num_views = 1
    identity_view = 0

    def _apply(self, x: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        return x

    def describe(self) -> dict[str, Any]:
        return {"name": "Identity", "num_views": 1}


class CropFlip(ViewAugmentation):
    """Zero-padded random crop + random horizontal flip on ``[N, C, H, W]`` images, as 162 discrete views.

    Exactly torchvision's ``RandomCrop(size, padding=padding)`` (zero fill) followed by ``RandomHorizontalFlip()``
    on the raw image — the standard CIFAR recipe (He et al., CVPR 2016, §4.2) — provided the input is the
    *un-normalised* pixel tensor (uint8), so the padding is black pixels, not the dataset mean. Input images must be
    ``size`` large, as CIFAR's 32×32 are; the crop's top-left corner then ranges over ``(2·padding+1)²`` offsets.

    View id encoding (stable; teacher caches depend on it)::

        view = (dy · (2p+1) + dx) · 2 + flip,   dy, dx ∈ [0, 2p] (crop corner in the padded image), flip ∈ {0, 1}

    The clean image is ``identity_view = encode(p, p, 0)``.
    """

    def __init__(self, size: int | Sequence[int] = 32, padding: int = 4):
        self.size = _pair(size, "size")
        self.padding = check_int(padding, "padding", 0)
        self.offsets = 2 * self.padding + 1
        self.num_views = self.offsets * self.offsets * 2
        self.identity_view = self.encode(self.padding, self.padding, 0)

    def encode(self, dy: int | torch.Tensor, dx: int | torch.Tensor, flip: int | torch.Tensor):
        """View id of crop corner ``(dy, dx)`` in the padded image and ``flip`` (1 = mirrored)."""
        return (dy * self.offsets + dx) * 2 + flip

    def decode(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inverse of :meth:`encode`: ``(dy, dx, flip)`` tensors."""
        flip = views % 2
        offset = views // 2
        return offset // self.offsets, offset % self.offsets, flip

    def _apply(self, x: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[-2:]) != self.size:
            raise ValueError(
                f"CropFlip(size={self.size}) needs images of shape [N, C, {self.size[0]}, {self.size[1]}]; "
                f"got {tuple(x.shape)}"
            )
        n, c = x.shape[:2]
        h, w = self.size
        p = self.padding
        dy, dx, flip = self.decode(views)
        padded = F.pad(x, (p, p, p, p)).reshape(n, c, (h + 2 * p) * (w + 2 * p))  # zero pixels; H·W flattened
        rows = dy[:, None] + torch.arange(h, device=x.device)  # [N, h]
        j = torch.arange(w, device=x.device)
        # torchvision crops, then mirrors the crop: output column j reads crop column w-1-j.
        cols = dx[:, None] + torch.where(flip[:, None].bool(), w - 1 - j, j)  # [N, w]
        flat = rows[:, :, None] * (w + 2 * p) + cols[:, None, :]  # [N, h, w] positions in the padded image
        # One gather over the flattened padded image, shared by all channels; output is contiguous NCHW.
        out = torch.gather(padded, 2, flat.view(n, 1, h * w).expand(n, c, h * w))
        return out.view(n, c, h, w)

    def describe(self) -> dict[str, Any]:
        return {
            "name": "CropFlip",
            "size": list(self.size),
            "padding": self.padding,
            "fill": 0,
            "num_views": self.num_views,
            "encoding": "(dy*(2p+1)+dx)*2+flip",
        }


class Shift1D(ViewAugmentation):
    """Shift ``[N, C, L]`` signals by ``s ∈ [−max_shift, max_shift]`` positions with zero fill (2·max_shift+1 views).

    ``out[..., i] = x[..., i − s]`` (positive ``s`` moves the signal to later positions); view id ``= s + max_shift``,
    so the clean signal is ``identity_view = max_shift``.
    """

    def __init__(self, max_shift: int = 4):
        self.max_shift = check_int(max_shift, "max_shift", 0)
        self.num_views = 2 * self.max_shift + 1
        self.identity_view = self.max_shift

    def _apply(self, x: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(f"Shift1D needs signals of shape [N, C, L]; got {tuple(x.shape)}")
        n, c, length = x.shape
        m = self.max_shift
        padded = F.pad(x, (m, m))  # padded[..., k] = x[..., k − m]
        # out[i] = x[i − s] = padded[i − s + m], and s = view − m  ⇒  index = i + 2m − view.
        idx = (2 * m - views)[:, None] + torch.arange(length, device=x.device)
        return torch.gather(padded, 2, idx[:, None, :].expand(n, c, length))

    def describe(self) -> dict[str, Any]:
        return {"name": "Shift1D", "max_shift": self.max_shift, "fill": 0, "num_views": self.num_views}
