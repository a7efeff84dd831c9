"""Decoding one image file into the uint8 RGB pixels a streamed batch holds (Pillow, in the loader's workers).

Every function opens the file by content, not by name (a PNG saved as ``.JPEG`` decodes as PNG) and converts any
mode (greyscale, CMYK, palette, RGBA) to RGB as torchvision's ``pil_loader`` does (``Image.convert("RGB")``). Any
failure — not an image, truncated, corrupt — is a :class:`BadImageError` naming the file.

Speed (docs/performance.md, "Decoding streamed images"): a JPEG is decoded at a reduced scale (Pillow's
``Image.draft``: libjpeg-turbo's DCT scaling by 1/2, 1/4 or 1/8) whenever the crop still has at least ``size``
pixels per side afterwards, so the reduced decode is followed by a downscale, never an upscale; the result stays
within the tolerance that tests/data/test_data_decode.py states against the full-resolution reference. Without a
reduction the training crop is exactly torchvision's ``img.crop(box).resize(size, BILINEAR)``.
"""

from __future__ import annotations

import math
import os
import struct

import numpy as np
from PIL import Image

__all__ = ["BadImageError", "decode_crop", "decode_center", "decode_full", "probe"]

# Pillow signals a damaged file with many exception types, depending on where the decoder stops
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, Image.DecompressionBombError)


class BadImageError(ValueError):
    """An image file that cannot be decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: not a readable image ({reason}); replace or remove it, or set data.skip_bad=true "
                         "to skip unreadable files (they are counted and listed in the run log)")

    def __reduce__(self):  # raised in a worker process, re-raised in the main one
        return type(self), (self.path, self.reason)


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".strip().splitlines()[0][:200]


def _rgb(im: Image.Image) -> Image.Image:
    return im if im.mode == "RGB" else im.convert("RGB")


def _draft(im: Image.Image, want_w: int, want_h: int) -> float:
    """Ask a JPEG for the coarsest DCT scale that keeps at least ``want_w × want_h`` pixels; returns the factor."""
    width, height = im.size
    if im.format != "JPEG" or width < 2 * want_w or height < 2 * want_h:
        return 1.0  # no reduction possible: skip draft(), whose decoder reconfiguration costs time
    drafted = im.draft("RGB", (max(1, want_w), max(1, want_h)))
    # (mode, box): box = (0, 0, W/s, H/s), the original image in the reduced image's coordinates
    return width / drafted[1][2] if drafted else 1.0


def _array(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.uint8)


def decode_crop(path: str | os.PathLike, box: tuple[int, int, int, int, bool], size: int, *,
                reduce: bool = True) -> np.ndarray:
    """The RandomResizedCrop sample: ``box = (top, left, height, width, flip)`` of the original image resized to
    ``size × size`` (bilinear, antialiased as Pillow resizes), mirrored if ``flip``; uint8 ``[size, size, 3]``.

    ``reduce``: decode a JPEG at the DCT scale 1/s that keeps the crop at least ``size`` px per side (then the box
    is resampled from the reduced image); ``False`` is the exact torchvision pipeline at full resolution.
    """
    top, left, h, w, flip = box
    try:
        with Image.open(path) as im:
            width, height = im.size
            s = _draft(im, math.ceil(width * size / w), math.ceil(height * size / h)) if reduce else 1.0
            im = _rgb(im)
            if s == 1.0:
                out = im.crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)
            else:
                # libjpeg's reduced pixel i covers original pixels [i·s, (i+1)·s): the box scales by 1/s
                region = (left / s, top / s, (left + w) / s, (top + h) / s)
                out = im.resize((size, size), Image.BILINEAR, box=region)
            if flip:
                out = out.transpose(Image.FLIP_LEFT_RIGHT)
            return _array(out)
    except _DECODE_ERRORS as err:
        raise BadImageError(path, _reason(err)) from None


def decode_center(path: str | os.PathLike, box: tuple[float, float, float, float], size: int, *,
                  reduce: bool = True) -> np.ndarray:
    """The evaluation sample: the region ``box = (left, top, right, bottom)`` (:func:`kdlab.data.crops.center_crop_box`)
    resampled to ``size × size`` in one bilinear resize, which equals torchvision's ``Resize`` then ``CenterCrop``;
    uint8 ``[size, size, 3]``. ``reduce`` as in :func:`decode_crop`."""
    left, top, right, bottom = box
    try:
        with Image.open(path) as im:
            width, height = im.size
            s = 1.0
            if reduce:
                s = _draft(im, math.ceil(width * size / (right - left)), math.ceil(height * size / (bottom - top)))
            im = _rgb(im)
            region = (left / s, top / s, right / s, bottom / s)
            return _array(im.resize((size, size), Image.BILINEAR, box=region))
    except _DECODE_ERRORS as err:
        raise BadImageError(path, _reason(err)) from None


def decode_full(path: str | os.PathLike) -> np.ndarray:
    """The whole image, uint8 ``[H, W, 3]`` (RGB)."""
    try:
        with Image.open(path) as im:
            return _array(_rgb(im))
    except _DECODE_ERRORS as err:
        raise BadImageError(path, _reason(err)) from None


def probe(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of a file that decodes; :class:`BadImageError` otherwise.

    The whole compressed stream is decoded (so truncation is found), a JPEG at its coarsest DCT scale (1/8), which
    costs a fraction of a full decode.
    """
    try:
        with Image.open(path) as im:
            size = im.size
            if im.format == "JPEG":
                im.draft("RGB", (1, 1))
            im.load()
            if min(size) < 1:
                raise ValueError(f"empty image {size}")
            return int(size[0]), int(size[1])
    except _DECODE_ERRORS as err:
        raise BadImageError(path, _reason(err)) from None
