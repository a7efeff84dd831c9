"""Decoding one image file into the uint8 RGB pixels a streamed batch holds (in the loader's workers).

Every function opens the file by content, not by name (a PNG saved as ``.JPEG`` decodes as PNG) and converts any
mode to RGB as torchvision's ``pil_loader`` does (``Image.convert("RGB")``: greyscale, CMYK, palette, RGBA), except
where that conversion would clip: 16-bit greyscale (``I;16``, a 16-bit PNG) is scaled to 8 bits (the high byte, as
Pillow itself reads 16-bit colour PNGs), 32-bit integer pixels too when they hold 16-bit values, and float pixels,
which have no defined range, are refused. Any failure — not an image, truncated, corrupt, not a regular file — is a
:class:`BadImageError` naming the file.

Speed (docs/performance.md, "Decoding streamed images"):

* A baseline JPEG in YCbCr or greyscale is decoded by libjpeg-turbo straight into an RGB array through
  `simplejpeg <https://pypi.org/project/simplejpeg/>`_ when it is installed (``pip install simplejpeg``) and Pillow's
  own JPEG codec is libjpeg-turbo as well: the two then give the same pixels (tests/data/test_data_crops_decode.py
  checks it), and the direct path skips Pillow's line-by-line decode into its 4-byte pixel layout. Anything
  else, and any file simplejpeg rejects, is decoded by Pillow.
* A JPEG is decoded at a reduced scale (Pillow's ``Image.draft``: libjpeg-turbo's DCT scaling by 1/2, 1/4 or 1/8)
  whenever the crop still has at least ``size`` pixels per side afterwards, so the reduced decode is followed by a
  downscale, never an upscale; the result stays within the tolerance that tests/data/test_data_crops_decode.py
  states against the full-resolution reference. ``reduce=False`` turns it off.

Without a reduction the training crop is exactly torchvision's ``img.crop(box).resize(size, BILINEAR)``.
"""

from __future__ import annotations

import io
import math
import os
import stat
import struct

import numpy as np
from PIL import Image, features

try:  # optional: libjpeg-turbo without Pillow's per-line decode (same pixels; see the module docstring)
    import simplejpeg
except ImportError:  # pragma: no cover - depends on the installation
    simplejpeg = None

__all__ = ["BadImageError", "TURBO", "decode_crop", "decode_center", "decode_full", "probe"]

# Pillow signals a damaged file with many exception types, depending on where the decoder stops
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, Image.DecompressionBombError)

#: Whether JPEGs are decoded through simplejpeg (installed, and Pillow's codec is libjpeg-turbo too, so both decode
#: the same pixels); tests switch it off to compare the two paths.
TURBO = simplejpeg is not None and bool(features.check_feature("libjpeg_turbo"))
_TURBO_COLOURSPACES = ("YCbCr", "Gray")  # what libjpeg-turbo converts to RGB exactly as Pillow does


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
    """``im`` as 8-bit RGB: 16-bit greyscale scaled (``v >> 8``), not clipped as ``convert("RGB")`` would."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I;16") or im.mode == "I":
        values = np.asarray(im)
        if im.mode == "I" and values.size and (values.min() < 0 or values.max() > 0xFFFF):
            raise ValueError(f"32-bit integer pixels outside 0..65535 ({values.min()}..{values.max()}): no 8-bit "
                             "scale is defined for them")
        im = Image.fromarray((values.astype(np.uint32) >> 8).astype(np.uint8), "L")
    elif im.mode == "F":
        raise ValueError("floating-point pixels: no 8-bit scale is defined for them")
    return im.convert("RGB")


def _draft(im: Image.Image, want_w: int, want_h: int) -> float:
    """Ask a JPEG for the coarsest DCT scale that keeps at least ``want_w × want_h`` pixels; returns the factor."""
    width, height = im.size
    if im.format != "JPEG" or not _reducible(width, height, want_w, want_h):
        return 1.0  # no reduction possible: skip draft(), whose decoder reconfiguration costs time
    drafted = im.draft("RGB", (max(1, want_w), max(1, want_h)))
    # (mode, box): box = (0, 0, W/s, H/s), the original image in the reduced image's coordinates
    return width / drafted[1][2] if drafted else 1.0


def _turbo_jpeg(path) -> tuple[bytes, int, int] | None:
    """``(data, width, height)`` of a JPEG that libjpeg-turbo converts to RGB as Pillow does (YCbCr, greyscale), or
    ``None`` where Pillow decodes the file (no simplejpeg, not a JPEG, CMYK, a header simplejpeg rejects)."""
    if not TURBO:
        return None
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\xff\xd8":
        return None
    try:
        height, width, colourspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return (data, width, height) if colourspace in _TURBO_COLOURSPACES else None


def _turbo_rgb(data: bytes) -> np.ndarray | None:
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ValueError:  # corrupt or unusual: Pillow decodes it (or names the error) as it always does
        return None


def _check_size(size: tuple[int, int], expect: tuple[int, int] | None) -> None:
    if expect is not None and tuple(size) != (int(expect[0]), int(expect[1])):
        raise ValueError(f"it is {size[0]}×{size[1]} now but {int(expect[0])}×{int(expect[1])} when the files "
                         "were checked: it changed since; run again to check it anew")


def _reducible(width: int, height: int, want_w: int, want_h: int) -> bool:
    """Whether :func:`_draft` can reduce (the coarsest DCT scale 1/2 keeps ``want`` pixels)."""
    return width >= 2 * want_w and height >= 2 * want_h


def _array(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.uint8)


def decode_crop(path: str | os.PathLike, box: tuple[int, int, int, int, bool], size: int, *,
                reduce: bool = True, expect: tuple[int, int] | None = None) -> np.ndarray:
    """The RandomResizedCrop sample: ``box = (top, left, height, width, flip)`` of the original image resized to
    ``size × size`` (bilinear, antialiased as Pillow resizes), mirrored if ``flip``; uint8 ``[size, size, 3]``.

    ``reduce``: decode a JPEG at the DCT scale 1/s that keeps the crop at least ``size`` px per side (then the box
    is resampled from the reduced image); ``False`` is the exact torchvision pipeline at full resolution.
    ``expect``: the ``(width, height)`` the file check recorded; a file of another size is a :class:`BadImageError`.
    """
    top, left, h, w, flip = box
    try:
        jpeg = _turbo_jpeg(path)
        if jpeg is not None:
            data, width, height = jpeg
            _check_size((width, height), expect)
            want = (math.ceil(width * size / w), math.ceil(height * size / h))
            full = None if reduce and _reducible(width, height, *want) else _turbo_rgb(data)
            if full is not None:  # Pillow's pixels, cropped before Pillow copies them
                crop = Image.fromarray(np.ascontiguousarray(full[top:top + h, left:left + w]))
                return _array(_flip(crop.resize((size, size), Image.BILINEAR), flip))
        with Image.open(path if jpeg is None else io.BytesIO(jpeg[0])) as im:  # (the bytes read already)
            _check_size(im.size, expect)
            width, height = im.size
            s = _draft(im, math.ceil(width * size / w), math.ceil(height * size / h)) if reduce else 1.0
            if s == 1.0:
                out = _rgb(im).crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)
            else:
                # libjpeg's reduced pixel i covers original pixels [i·s, (i+1)·s): the box scales by 1/s
                region = (left / s, top / s, (left + w) / s, (top + h) / s)
                out = _rgb(im).resize((size, size), Image.BILINEAR, box=region)
            return _array(_flip(out, flip))
    except _DECODE_ERRORS as err:
        raise BadImageError(path, _reason(err)) from None


def _flip(im: Image.Image, flip: bool) -> Image.Image:
    return im.transpose(Image.FLIP_LEFT_RIGHT) if flip else im


def decode_center(path: str | os.PathLike, box: tuple[float, float, float, float], size: int, *,
                  reduce: bool = True, expect: tuple[int, int] | None = None) -> np.ndarray:
    """The evaluation sample: the region ``box = (left, top, right, bottom)`` (:func:`kdlab.data.crops.center_crop_box`)
    resampled to ``size × size`` in one bilinear resize, which equals torchvision's ``Resize`` then ``CenterCrop``;
    uint8 ``[size, size, 3]``. ``reduce`` and ``expect`` as in :func:`decode_crop`."""
    left, top, right, bottom = box
    try:
        jpeg = _turbo_jpeg(path)
        if jpeg is not None:
            data, width, height = jpeg
            _check_size((width, height), expect)
            want = (math.ceil(width * size / (right - left)), math.ceil(height * size / (bottom - top)))
            full = None if reduce and _reducible(width, height, *want) else _turbo_rgb(data)
            if full is not None:
                return _array(Image.fromarray(full).resize((size, size), Image.BILINEAR, box=box))
        with Image.open(path if jpeg is None else io.BytesIO(jpeg[0])) as im:
            _check_size(im.size, expect)
            width, height = im.size
            s = 1.0
            if reduce:
                s = _draft(im, math.ceil(width * size / (right - left)), math.ceil(height * size / (bottom - top)))
            region = (left / s, top / s, right / s, bottom / s)
            return _array(_rgb(im).resize((size, size), Image.BILINEAR, box=region))
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
    """``(width, height)`` of a regular file that decodes; :class:`BadImageError` otherwise.

    The whole compressed stream is decoded (so truncation is found), a JPEG at its coarsest DCT scale (1/8), which
    costs a fraction of a full decode; pixels no 8-bit RGB is defined for (float) are refused here too.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or a device named *.jpg would block or never end
            raise OSError("not a regular file")
        with Image.open(path) as im:
            size = im.size
            if im.format == "JPEG":
                im.draft("RGB", (1, 1))
            im.load()
            if min(size) < 1:
                raise ValueError(f"empty image {size}")
            if im.mode in ("I", "F"):
                _rgb(im)
            return int(size[0]), int(size[1])
    except _DECODE_ERRORS as err:
        raise BadImageError(path, _reason(err)) from None
