"""Augmentations that act on a whole batch tensor at once.

Two kinds:

* **Discrete view augmentations** (:class:`ViewAugmentation`): every augmented input is one of ``num_views``
  deterministic transforms of the stored sample, named by an integer view id. The id is drawn with a
  ``torch.Generator`` (:meth:`ViewAugmentation.sample`) and applied by :meth:`ViewAugmentation.apply`, which is a pure
  function of ``(x, views)``. Because the student's input is fully described by ``(dataset index, view id)``, the
  teacher's logits for that pair can be cached exactly (design.md, "Exact teacher-logit cache").
  :class:`CropFlip` (CIFAR's RandomCrop(32, padding=4) + horizontal flip, 162 views), :class:`Shift1D` and
  :class:`Identity`.
* **Continuous batch augmentations** (:func:`mixup`, :func:`cutmix`, :func:`cutout`, :func:`autoaugment_like`,
  :func:`gaussian_noise_like`): random functions ``fn(x, generator, ...)`` used for R2KD's second view and the
  fidelity data policies. Their outputs are not cacheable, by design.

Nothing here loops over samples in Python; per-sample randomness is drawn as tensors and applied by gathers/masks.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ViewAugmentation",
    "CropFlip",
    "Shift1D",
    "Identity",
    "mixup",
    "cutmix",
    "cutout",
    "autoaugment_like",
    "gaussian_noise_like",
    "AUTOAUGMENT_CIFAR_POLICY",
]


# --------------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------------
def _check_generator(generator: Any) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator must be a torch.Generator (or None for torch's global RNG); got {type(generator).__name__}"
        )


def _rng_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    # Random numbers are drawn on the generator's device (a CPU generator cannot fill a CUDA tensor) and then moved.
    return generator.device if generator is not None else fallback


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=_rng_device(generator, device)).to(device)


def _randint(
    high: int, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    dev = _rng_device(generator, device)
    return torch.randint(0, high, shape, generator=generator, device=dev).to(device)


def _randperm(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randperm(n, generator=generator, device=_rng_device(generator, device)).to(device)


def _beta(alpha: float, generator: torch.Generator | None, device: torch.device) -> float:
    """One draw of Beta(alpha, alpha), reproducible from ``generator``.

    torch's Beta/Gamma samplers take no generator, so a 62-bit seed is drawn from ``generator`` and fed to a numpy
    Generator: the value is still a pure function of the torch generator's state.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a finite number > 0 (the Beta(alpha, alpha) parameter); got {alpha!r}")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=_rng_device(generator, device)).item())
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _check_batch(x: Any, name: str, min_ndim: int, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor {what}; got {type(x).__name__}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must be a batch {what}; got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}); pass at least one sample")


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or a (height, width) pair of ints; got {value!r}")
    if min(pair) < 1:
        raise ValueError(f"{name} must be positive; got {value!r}")
    return pair


def _nonneg_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int; got {value!r}")
    return value


# --------------------------------------------------------------------------------------------------------------------
# discrete view augmentations
# --------------------------------------------------------------------------------------------------------------------
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
        _check_generator(generator)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int (number of view ids to draw); got {n!r}")
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
    on the raw image — the CIFAR recipe of every paper in methods.md §10 — provided the input is the *un-normalised*
    pixel tensor (uint8), so the padding is black pixels, not the dataset mean. Input images must be ``size`` large,
    as CIFAR's 32×32 are; the crop's top-left corner then ranges over ``(2·padding+1)²`` offsets.

    View id encoding (stable; teacher caches depend on it)::

        view = (dy · (2p+1) + dx) · 2 + flip,   dy, dx ∈ [0, 2p] (crop corner in the padded image), flip ∈ {0, 1}

    The clean image is ``identity_view = encode(p, p, 0)``.
    """

    def __init__(self, size: int | Sequence[int] = 32, padding: int = 4):
        self.size = _pair(size, "size")
        self.padding = _nonneg_int(padding, "padding")
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
        self.max_shift = _nonneg_int(max_shift, "max_shift")
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


# --------------------------------------------------------------------------------------------------------------------
# continuous batch augmentations
# --------------------------------------------------------------------------------------------------------------------
def mixup(
    x: torch.Tensor, generator: torch.Generator | None = None, alpha: float = 1.0
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """MixUp (Zhang et al., ICLR 2018) on inputs: ``x̃ = λ·x + (1−λ)·x[perm]``, one ``λ ~ Beta(α, α)`` per batch.

    Returns ``(x_mixed, lam, perm)``; a loss on labels would be ``lam·ℓ(y) + (1−lam)·ℓ(y[perm])``. Needs a floating
    tensor (apply it to the normalised batch; mixing commutes with the affine normalisation). Works for images and
    1-D signals alike.
    """
    _check_generator(generator)
    _check_batch(x, "x", 2, "[N, ...]")
    if not x.is_floating_point():
        raise ValueError(
            f"mixup needs a floating tensor (got {x.dtype}); apply it to the normalised batch (Batch.x) instead"
        )
    lam = _beta(alpha, generator, x.device)
    perm = _randperm(x.shape[0], generator, x.device)
    return lam * x + (1.0 - lam) * x[perm], lam, perm


def cutmix(
    x: torch.Tensor, generator: torch.Generator | None = None, alpha: float = 1.0
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """CutMix (Yun et al., ICCV 2019): paste one box from ``x[perm]`` into every sample.

    ``λ ~ Beta(α, α)``; the box side along each of the d spatial dims is ``int(S·(1−λ)^(1/d))`` (d=2: the reference
    ``sqrt(1−λ)``), centred uniformly and clipped at the border like the reference code
    (``[c − cut//2, c + cut//2)``). One box per batch. Returns ``(x_mixed, lam_adjusted, perm)`` with
    ``lam_adjusted = 1 − box_area / image_area``, the share of each sample that is still its own. Any dtype
    (pixels are copied, not blended), images ``[N, C, H, W]`` or signals ``[N, C, L]``.
    """
    _check_generator(generator)
    _check_batch(x, "x", 3, "[N, C, H, W] or [N, C, L]")
    lam = _beta(alpha, generator, x.device)
    spatial = tuple(x.shape[2:])
    ratio = (1.0 - lam) ** (1.0 / len(spatial))
    centres = [int(_randint(size, (1,), generator, x.device).item()) for size in spatial]
    perm = _randperm(x.shape[0], generator, x.device)
    box = []
    for size, c in zip(spatial, centres, strict=True):  # loop over ≤ 2 spatial dims, not samples
        cut = int(size * ratio)
        box.append(slice(min(max(c - cut // 2, 0), size), min(max(c + cut // 2, 0), size)))
    out = x.clone()
    region = (slice(None), slice(None), *box)
    out[region] = x[perm][region]
    area = math.prod(s.stop - s.start for s in box)
    return out, 1.0 - area / math.prod(spatial), perm


def cutout(x: torch.Tensor, generator: torch.Generator | None = None, size: int = 8) -> torch.Tensor:
    """Cutout (DeVries & Taylor, 2017): zero one ``size``-wide square (1-D: segment) per sample, all channels.

    The centre is uniform over the image and the box ``[c − size//2, c + size//2)`` is clipped at the border, as in
    the reference code. Zero means zero in the tensor's own domain: on the normalised batch (the reference order,
    after ``Normalize``) that is the dataset mean colour; on uint8 pixels it is black.
    """
    _check_generator(generator)
    _check_batch(x, "x", 3, "[N, C, H, W] or [N, C, L]")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int (side of the cut-out square); got {size!r}")
    n = x.shape[0]
    spatial = tuple(x.shape[2:])
    inside = torch.ones((n, 1) + (1,) * len(spatial), dtype=torch.bool, device=x.device)
    for dim, extent in enumerate(spatial):  # ≤ 2 dims
        c = _randint(extent, (n,), generator, x.device)
        pos = torch.arange(extent, device=x.device)
        in_dim = (pos >= c[:, None] - size // 2) & (pos < c[:, None] + size // 2)  # [N, extent]
        shape = [n, 1] + [1] * len(spatial)
        shape[2 + dim] = extent
        inside = inside & in_dim.view(shape)
    return x.masked_fill(inside, 0)


def gaussian_noise_like(x: torch.Tensor, generator: torch.Generator | None = None, std: float = 1.0) -> torch.Tensor:
    """Pure noise inputs shaped like ``x``: ``std · N(0, 1)`` i.i.d. per element (the "noise images" policy).

    Meant for the normalised batch, where unit-variance noise has each channel's data scale. Returns ``x``'s dtype
    if floating, else float32.
    """
    _check_generator(generator)
    _check_batch(x, "x", 1, "[N, ...]")
    if isinstance(std, bool) or not isinstance(std, (int, float)) or not math.isfinite(std) or std < 0:
        raise ValueError(f"std must be a finite number >= 0; got {std!r}")
    dtype = x.dtype if x.is_floating_point() else torch.float32
    dev = _rng_device(generator, x.device)
    noise = torch.randn(tuple(x.shape), generator=generator, device=dev, dtype=torch.float32)
    return (std * noise).to(device=x.device, dtype=dtype)


# --------------------------------------------------------------------------------------------------------------------
# AutoAugment-like policy
# --------------------------------------------------------------------------------------------------------------------
#: The 25 CIFAR-10 sub-policies searched by AutoAugment (Cubuk et al., CVPR 2019): pairs of
#: (operation, probability, magnitude level 0–9). Operations without a magnitude carry None.
AUTOAUGMENT_CIFAR_POLICY: tuple[tuple[tuple[str, float, int | None], tuple[str, float, int | None]], ...] = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)

_OPS = (
    "Invert", "AutoContrast", "Equalize", "Solarize", "Posterize", "Contrast", "Color", "Brightness",
    "Sharpness", "Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY",
)  # fmt: skip
_GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"}


def _round_pixels(p: torch.Tensor) -> torch.Tensor:
    # Every op ends in the uint8 domain, as PIL's do, so posterize/equalize see integer levels.
    return p.round().clamp_(0.0, 255.0)


def _grayscale(p: torch.Tensor) -> torch.Tensor:
    """PIL's "L" conversion, ``[n, 1, H, W]``: ``(19595·R + 38470·G + 7471·B + 2¹⁵) >> 16`` (ITU-R 601-2 luma).

    Exact in float32 (the sum stays below 2²⁴). Channel mean for C != 3.
    """
    if p.shape[1] == 3:
        weights = torch.tensor([19595.0, 38470.0, 7471.0], dtype=p.dtype, device=p.device).view(1, 3, 1, 1)
        return torch.floor(((p * weights).sum(1, keepdim=True) + 32768.0) / 65536.0)
    return torch.round(p.mean(1, keepdim=True))


def _blend(p: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # PIL ImageEnhance → Image.blend: degenerate + factor·(image − degenerate), clipped, truncated to uint8.
    return torch.floor(degenerate + factor.view(-1, 1, 1, 1) * (p - degenerate)).clamp_(0.0, 255.0)


def _sharpen_degenerate(p: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH filter (3×3 kernel, centre 5, others 1, /13, rounded) inside; original pixels on the border."""
    c = p.shape[1]
    kernel = torch.ones(3, 3, dtype=p.dtype, device=p.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / 13.0).expand(c, 1, 3, 3)
    smooth = _round_pixels(F.conv2d(p, kernel, groups=c))
    out = p.clone()
    out[..., 1:-1, 1:-1] = smooth
    return out


def _autocontrast(p: torch.Tensor) -> torch.Tensor:
    """PIL's autocontrast per channel: ``int(v·s − lo·s)`` with ``s = 255/(hi − lo)`` (constant channels kept)."""
    lo = p.amin(dim=(2, 3), keepdim=True).double()
    hi = p.amax(dim=(2, 3), keepdim=True).double()
    scale = 255.0 / (hi - lo).clamp(min=1.0)
    # float64 and PIL's operation order, so the truncation lands on the same level as PIL's lookup table.
    stretched = torch.floor(p.double() * scale - lo * scale).clamp_(0.0, 255.0).to(p.dtype)
    return torch.where(hi > lo, stretched, p)


def _equalize(p: torch.Tensor) -> torch.Tensor:
    """Per-channel histogram equalisation with PIL's lookup table, vectorised over (sample, channel).

    ``step = (count − count of the highest occupied level) // 255``; level i maps to
    ``(pixels below i + step//2) // step``; a channel with ``step == 0`` is left unchanged.
    """
    n, c, h, w = p.shape
    levels = p.reshape(n * c, h * w).long()
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=p.device)
    hist.scatter_add_(1, levels, torch.ones_like(levels))
    last = 255 - (hist.flip(1) > 0).long().argmax(1, keepdim=True)  # highest occupied level
    step = (h * w - hist.gather(1, last)) // 255  # [n*c, 1]
    below = hist.cumsum(1) - hist
    lut = torch.clamp((below + step // 2) // step.clamp(min=1), max=255)
    lut = torch.where(step > 0, lut, torch.arange(256, device=p.device).expand_as(lut))
    return lut.gather(1, levels).to(p.dtype).view(n, c, h, w)


def _affine(p: torch.Tensor, matrix: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour affine warp, zero fill. Output pixel u (pixel units, centre origin) reads input ``A·u + t``."""
    n, _, h, w = p.shape
    # Convert pixel-unit maps to grid_sample's normalised coordinates (align_corners=False: half-size = w/2, h/2).
    scale = torch.tensor([w / 2.0, h / 2.0], dtype=p.dtype, device=p.device)
    theta = torch.empty(n, 2, 3, dtype=p.dtype, device=p.device)
    theta[:, :, :2] = matrix * scale[None, None, :] / scale[None, :, None]
    theta[:, :, 2] = shift / scale
    grid = F.affine_grid(theta, list(p.shape), align_corners=False)
    return F.grid_sample(p, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _apply_op(op: str, p: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """One AutoAugment operation on pixel-valued floats ``p`` with per-sample ``level`` in [0, 1] and ``sign`` ±1."""
    n, _, h, w = p.shape
    if op == "Invert":
        return 255.0 - p
    if op == "AutoContrast":
        return _autocontrast(p)
    if op == "Equalize":
        return _equalize(p)
    if op == "Solarize":  # invert every pixel at or above the threshold; level 0 → threshold 256 (no-op)
        threshold = (256.0 * (1.0 - level)).view(-1, 1, 1, 1)
        return torch.where(p >= threshold, 255.0 - p, p)
    if op == "Posterize":  # keep the top `bits` bits, bits = 8 − round(4·level)
        quantum = (2.0 ** torch.round(4.0 * level)).view(-1, 1, 1, 1)
        return torch.floor(p / quantum) * quantum
    factor = 1.0 + sign * 0.9 * level  # enhancement factor in [0.1, 1.9]
    if op == "Brightness":
        return _blend(p, torch.zeros_like(p), factor)
    if op == "Color":
        return _blend(p, _grayscale(p).expand_as(p), factor)
    if op == "Contrast":  # degenerate: the grey level int(mean(L) + 0.5)
        mean = torch.floor(_grayscale(p).mean(dim=(1, 2, 3), keepdim=True) + 0.5)
        return _blend(p, mean.expand_as(p), factor)
    if op == "Sharpness":
        return _blend(p, _sharpen_degenerate(p), factor)
    eye = torch.eye(2, dtype=p.dtype, device=p.device).expand(n, 2, 2).clone()
    shift = torch.zeros(n, 2, dtype=p.dtype, device=p.device)
    if op == "Rotate":  # up to 30°, about the centre
        angle = torch.deg2rad(sign * 30.0 * level)
        cos, sin = torch.cos(angle), torch.sin(angle)
        eye = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    elif op == "ShearX":  # shear up to 0.3
        eye[:, 0, 1] = sign * 0.3 * level
    elif op == "ShearY":
        eye[:, 1, 0] = sign * 0.3 * level
    elif op == "TranslateX":  # up to 150/331 of the width (the paper's range), whole pixels
        shift[:, 0] = -torch.round(sign * level * (150.0 / 331.0) * w)
    elif op == "TranslateY":
        shift[:, 1] = -torch.round(sign * level * (150.0 / 331.0) * h)
    return _affine(p, eye, shift)


def _policy_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ops = torch.tensor([[_OPS.index(name) for name, _, _ in sub] for sub in AUTOAUGMENT_CIFAR_POLICY], device=device)
    prob = torch.tensor([[pr for _, pr, _ in sub] for sub in AUTOAUGMENT_CIFAR_POLICY], device=device)
    level = torch.tensor([[(m or 0) / 9.0 for _, _, m in sub] for sub in AUTOAUGMENT_CIFAR_POLICY], device=device)
    return ops, prob, level


def _channel_stats(values: Sequence[float] | None, name: str, c: int, device: torch.device) -> torch.Tensor | None:
    if values is None:
        return None
    t = torch.as_tensor(values, dtype=torch.float32, device=device).flatten()
    if t.numel() not in (1, c):
        raise ValueError(f"{name} must have 1 or {c} entries (one per channel); got {t.numel()}")
    return t.view(1, -1, 1, 1)


def autoaugment_like(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """A batch-tensor approximation of AutoAugment's CIFAR policy (Cubuk et al., CVPR 2019).

    Per sample: a random horizontal flip (p=0.5), then one of the 25 CIFAR sub-policies
    (:data:`AUTOAUGMENT_CIFAR_POLICY`) drawn uniformly, whose two operations each fire with their probability.
    Magnitude level m ∈ 0..9 maps linearly to the paper's ranges (rotate 30°, shear 0.3, translate 150/331 of the
    side, enhance factors 1 ± 0.9, solarize threshold 256→0, posterize 8→4 bits) with a random sign for signed ops.

    It *approximates* the PIL implementation: geometric ops use nearest-neighbour sampling about the image centre with
    zero fill (PIL: corner origin for shear, other resampling), and ranges/signs follow the paper rather than any
    one implementation. The photometric ops (invert, autocontrast, equalize, solarize, posterize, colour, contrast,
    brightness, sharpness) reproduce PIL's results on uint8 RGB. Images only (``[N, C, H, W]``):

    * uint8 input is treated as pixels and uint8 is returned;
    * floating input is taken as ``normalize``-d with ``mean``/``std`` (or as [0, 1] pixels when both are None),
      mapped to pixel levels, augmented, and returned normalised the same way, in its own dtype.
    """
    _check_generator(generator)
    _check_batch(x, "x", 4, "of images [N, C, H, W] (autoaugment_like has no meaning for 1-D signals)")
    if x.ndim != 4:
        raise ValueError(f"autoaugment_like needs images [N, C, H, W]; got shape {tuple(x.shape)}")
    if (mean is None) != (std is None):
        raise ValueError("pass both mean and std (the normalisation of x) or neither")
    n, c = x.shape[:2]
    dev = x.device
    mean_t = _channel_stats(mean, "mean", c, dev)
    std_t = _channel_stats(std, "std", c, dev)
    if x.dtype == torch.uint8:
        p = x.float()
    elif x.is_floating_point():
        p = x.float()
        if mean_t is not None:
            p = p * std_t + mean_t
        p = _round_pixels(p * 255.0)
    else:
        raise ValueError(f"autoaugment_like needs uint8 pixels or a floating (normalised) batch; got {x.dtype}")

    flip = _rand((n,), generator, dev) < 0.5
    p = torch.where(flip.view(-1, 1, 1, 1), p.flip(-1), p)

    ops, prob, level = _policy_tables(dev)
    sub = _randint(len(AUTOAUGMENT_CIFAR_POLICY), (n,), generator, dev)
    for stage in range(2):  # the two operations of a sub-policy, in order
        op_id = ops[sub, stage]
        fire = _rand((n,), generator, dev) < prob[sub, stage]
        sign = torch.where(_rand((n,), generator, dev) < 0.5, -1.0, 1.0)
        lvl = level[sub, stage]
        for k, name in enumerate(_OPS):  # loop over operation types; each runs once on its selected samples
            idx = torch.nonzero(fire & (op_id == k)).flatten()
            if idx.numel():
                p[idx] = _round_pixels(_apply_op(name, p[idx], lvl[idx], sign[idx]))

    if x.dtype == torch.uint8:
        return p.to(torch.uint8)
    out = p / 255.0
    if mean_t is not None:
        out = (out - mean_t) / std_t
    return out.to(x.dtype)
