"""Crop geometry of the streamed image pipelines, as pure functions.

* :func:`random_resized_crops`: torchvision's ``RandomResizedCrop(scale=(0.08, 1), ratio=(3/4, 4/3))`` box and a
  horizontal flip for each image, drawn as a pure function of ``(seed, epoch, index)`` and the image's size —
  independent of the worker, the batch and the rank that decodes it, vectorised over any number of images (a crop
  schedule for a whole epoch of ImageNet is one call).
* :func:`center_crop_box`: the evaluation transform ``Resize(⌊S·256/224⌋) + CenterCrop(S)`` expressed as one box of
  the original image, so one resampling of that box gives exactly the two-step result.

The random numbers are a counter-based stream: uniform ``u[j]`` of image ``index`` is SplitMix64's output number
``index·K + j`` for the key ``derive_seed(seed, epoch, stream)`` (Steele, Lea & Flood, "Fast splittable
pseudorandom number generators", OOPSLA 2014). Unlike one ``SeedSequence`` per image it needs no Python loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kdlab._checks import check_int, check_real
from kdlab.data.loader import derive_seed

__all__ = ["CropBoxes", "random_resized_crops", "center_crop_box", "eval_resize_size", "uniforms",
           "DEFAULT_SCALE", "DEFAULT_RATIO"]

#: torchvision's RandomResizedCrop defaults (area fraction, aspect ratio w/h).
DEFAULT_SCALE = (0.08, 1.0)
DEFAULT_RATIO = (3.0 / 4.0, 4.0 / 3.0)
_ATTEMPTS = 10  # as torchvision: 10 tries at a box that fits, then a centred fallback
_PER_IMAGE = 2 * _ATTEMPTS + 3  # (area, log-ratio) per try, then top, left, flip
# (seed, epoch, stream) keys: fixed numbers so a new stream never shifts another (the loader uses 0 and 1)
_STREAM_CROPS = 2

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def uniforms(key: int, index: np.ndarray, count: int) -> np.ndarray:
    """``[n, count]`` float64 uniforms on [0, 1): row i is SplitMix64(key)'s outputs ``index[i]·count + j``."""
    index = np.asarray(index, dtype=np.uint64).reshape(-1)
    counter = index[:, None] * np.uint64(count) + np.arange(count, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):  # modular uint64 arithmetic is the algorithm
        z = np.uint64(key) + _GOLDEN * (counter + np.uint64(1))
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass(frozen=True)
class CropBoxes:
    """Boxes in original-image pixels, one per image: rows ``top:top+height``, columns ``left:left+width``;
    ``flip`` mirrors the crop horizontally. int64 / bool arrays of equal length."""

    top: np.ndarray
    left: np.ndarray
    height: np.ndarray
    width: np.ndarray
    flip: np.ndarray

    def __len__(self) -> int:
        return int(self.top.shape[0])

    def __getitem__(self, i: int) -> tuple[int, int, int, int, bool]:
        """``(top, left, height, width, flip)`` of image ``i`` as Python numbers."""
        return (int(self.top[i]), int(self.left[i]), int(self.height[i]), int(self.width[i]), bool(self.flip[i]))


def _pair(value: Sequence[float], name: str) -> tuple[float, float]:
    if not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name} must be a (low, high) pair; got {value!r}")
    lo, hi = (check_real(v, name, above=0) for v in value)
    if lo > hi:
        raise ValueError(f"{name} must be (low, high) with low <= high; got {value!r}")
    return lo, hi


def random_resized_crops(seed: int, epoch: int, index, width, height, *,
                         scale: Sequence[float] = DEFAULT_SCALE, ratio: Sequence[float] = DEFAULT_RATIO) -> CropBoxes:
    """RandomResizedCrop boxes and flips for images ``index`` of sizes ``width × height`` in ``epoch``.

    torchvision's ``RandomResizedCrop.get_params`` per image: up to 10 tries of an area ``A·U(scale)`` and an aspect
    ratio ``exp(U(log ratio))``, ``w = round(√(area·r))``, ``h = round(√(area/r))`` (round half to even, as Python's
    ``round``); the first try with ``0 < w ≤ W`` and ``0 < h ≤ H`` is placed uniformly (``top ∈ [0, H−h]``,
    ``left ∈ [0, W−w]``); if none fits, the whole image clamped to the ratio range, centred. Then a horizontal flip
    with probability 1/2 (``RandomHorizontalFlip``). Same distribution as torchvision's (its own random stream is
    not reproducible across workers); here the result is a pure function of ``(seed, epoch, index, W, H)``.
    """
    seed = check_int(seed, "seed", 0)
    epoch = check_int(epoch, "epoch", 0)
    s_lo, s_hi = _pair(scale, "scale")
    r_lo, r_hi = _pair(ratio, "ratio")
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    w_img = np.broadcast_to(np.asarray(width, dtype=np.int64), index.shape)
    h_img = np.broadcast_to(np.asarray(height, dtype=np.int64), index.shape)
    if index.size and (index.min() < 0 or min(w_img.min(), h_img.min()) < 1):
        raise ValueError("indices must be >= 0 and image sizes >= 1")
    u = uniforms(derive_seed(seed, epoch, _STREAM_CROPS), index, _PER_IMAGE)
    area = (w_img * h_img).astype(np.float64)[:, None]
    target = area * (s_lo + (s_hi - s_lo) * u[:, 0:2 * _ATTEMPTS:2])
    log_lo, log_hi = math.log(r_lo), math.log(r_hi)
    aspect = np.exp(log_lo + (log_hi - log_lo) * u[:, 1:2 * _ATTEMPTS:2])
    cw = np.rint(np.sqrt(target * aspect)).astype(np.int64)
    ch = np.rint(np.sqrt(target / aspect)).astype(np.int64)
    fits = (cw > 0) & (cw <= w_img[:, None]) & (ch > 0) & (ch <= h_img[:, None])
    first = fits.argmax(axis=1)
    found = fits.any(axis=1)
    rows = np.arange(index.size)
    w, h = cw[rows, first], ch[rows, first]
    top = np.floor(u[:, -3] * (h_img - h + 1)).astype(np.int64)
    left = np.floor(u[:, -2] * (w_img - w + 1)).astype(np.int64)
    # the fallback: the whole image, its aspect ratio clamped into the ratio range, centred
    in_ratio = w_img / h_img
    fw = np.where(in_ratio < r_lo, w_img, np.where(in_ratio > r_hi, np.rint(h_img * r_hi).astype(np.int64), w_img))
    fh = np.where(in_ratio < r_lo, np.rint(w_img / r_lo).astype(np.int64), h_img)
    w, h = np.where(found, w, fw), np.where(found, h, fh)
    top = np.where(found, top, (h_img - h) // 2)
    left = np.where(found, left, (w_img - w) // 2)
    return CropBoxes(top, left, h, w, u[:, -1] < 0.5)


def eval_resize_size(size: int) -> int:
    """The shorter side before the evaluation centre crop: ``⌊size·256/224⌋`` (256 for 224, torchvision's recipe)."""
    return size * 256 // 224


def center_crop_box(width: int, height: int, size: int, resize: int | None = None
                    ) -> tuple[float, float, float, float]:
    """``Resize(R)`` with ``R = resize`` or ``⌊size·256/224⌋`` (shorter side; the longer one ``int(R·long/short)``, as
    torchvision) followed by ``CenterCrop(size)`` (offsets ``int(round((side − size)/2))``), as the box ``(left, top,
    right, bottom)`` of the original image that resampling to ``size × size`` maps exactly onto the two-step result."""
    r = eval_resize_size(size) if resize is None else resize
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(r * long / short)
    new_w, new_h = (r, new_long) if width <= height else (new_long, r)
    if min(new_w, new_h) < size:
        raise ValueError(f"cannot centre-crop {size} px from a {new_w}×{new_h} resize")
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    sx, sy = width / new_w, height / new_h
    return (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
