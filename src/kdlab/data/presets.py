"""Augmentation presets of the distillation-data policies, re-drawn from the stored samples (vectorised per batch).

Stanton et al. (NeurIPS 2021, §5) compare what the student is distilled on; these are the augmentations of that
comparison. ``x`` is the stored sample before normalisation, in its raw scale (uint8 pixels are taken to [0, 1]):

* 1-D signals ``[N, C, L]`` (MNIST-1D):
  ``shift`` — zero-fill shift by s ∈ [−4, 4] (MNIST-1D's standard augmentation, the analogue of crop);
  ``reverse`` — time reversal with p = 0.5 (the analogue of a flip; it does *not* preserve MNIST-1D's classes, like
  a vertical flip for images);
  ``scale`` — amplitude × U[0.8, 1.2] per sample (the analogue of colour jitter 0.2);
  ``stretch`` — linear time-warp about the centre by a factor U[0.8, 1.2] (the analogue of a 20° rotation);
  ``combined`` — shift, reverse, scale and stretch together.
* images ``[N, C, H, W]`` (CIFAR): ``crop_flip`` (pad-4 crop + horizontal flip, the baseline), ``rotate``
  (U[−20°, 20°], bilinear, zero fill), ``vflip`` (p = 0.5), ``color_jitter`` (brightness, contrast, saturation
  factors U[0.8, 1.2]), ``combined`` (all of them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.data._ops import rng_device
from kdlab.data.views import CropFlip

__all__ = ["PRESETS_1D", "PRESETS_IMAGE", "PRESETS", "augment_preset"]

PRESETS_1D = ("shift", "reverse", "scale", "stretch", "combined")
PRESETS_IMAGE = ("crop_flip", "rotate", "vflip", "color_jitter", "combined")
#: Every value of ``distill_data.augment``: the loader's own augmentation, none, or a preset.
PRESETS = ("default", "none") + tuple(dict.fromkeys(PRESETS_1D + PRESETS_IMAGE))


def _u(n: int, lo: float, hi: float, gen, device) -> torch.Tensor:
    return (lo + (hi - lo) * torch.rand(n, generator=gen, device=rng_device(gen, device))).to(device)


def _coin(n: int, p: float, gen, device) -> torch.Tensor:
    return _u(n, 0.0, 1.0, gen, device) < p


def _shift1d(x, gen, max_shift: int = 4):
    n, c, length = x.shape
    s = torch.round(_u(n, -max_shift - 0.5, max_shift + 0.5, gen, x.device)).clamp(-max_shift, max_shift).long()
    padded = F.pad(x, (max_shift, max_shift))
    idx = (max_shift - s)[:, None] + torch.arange(length, device=x.device)  # out[i] = x[i − s]
    return torch.gather(padded, 2, idx[:, None, :].expand(n, c, length))


def _reverse1d(x, gen):
    return torch.where(_coin(x.shape[0], 0.5, gen, x.device)[:, None, None], x.flip(-1), x)


def _scale(x, gen):
    return x * _u(x.shape[0], 0.8, 1.2, gen, x.device).view(-1, *([1] * (x.ndim - 1)))


def _stretch1d(x, gen):
    # out(t) = x(c + (t − c)/f): f > 1 stretches; linear interpolation, zero outside the signal
    n, c, length = x.shape
    f = _u(n, 0.8, 1.2, gen, x.device)[:, None]
    centre = (length - 1) / 2.0
    src = centre + (torch.arange(length, device=x.device, dtype=x.dtype) - centre) / f  # [n, L]
    lo = src.floor().long()
    w = (src - lo).unsqueeze(1)
    padded = F.pad(x, (1, 2))  # index j of x is j + 1 here; out-of-range reads hit zeros
    gather = lambda i: torch.gather(padded, 2, (i.clamp(-1, length) + 1)[:, None, :].expand(n, c, length))  # noqa
    return (1 - w) * gather(lo) + w * gather(lo + 1)


def _rotate(x, gen, degrees: float = 20.0):
    n = x.shape[0]
    a = torch.deg2rad(_u(n, -degrees, degrees, gen, x.device))
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _vflip(x, gen):
    return torch.where(_coin(x.shape[0], 0.5, gen, x.device)[:, None, None, None], x.flip(-2), x)


def _color_jitter(x, gen, s: float = 0.2):
    n = x.shape[0]
    view = lambda t: t.view(n, 1, 1, 1)  # noqa: E731
    x = (x * view(_u(n, 1 - s, 1 + s, gen, x.device))).clamp(0, 1)  # brightness
    gray = x.mean(1, keepdim=True) if x.shape[1] != 3 else (
        0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    m = gray.mean(dim=(1, 2, 3), keepdim=True)
    x = (m + view(_u(n, 1 - s, 1 + s, gen, x.device)) * (x - m)).clamp(0, 1)  # contrast
    return (gray + view(_u(n, 1 - s, 1 + s, gen, x.device)) * (x - gray)).clamp(0, 1)  # saturation


def _crop_flip(x, gen):
    aug = CropFlip()
    views = aug.sample(x.shape[0], gen).to(x.device)
    return aug.apply(x, views)


_OPS_1D = {"shift": [_shift1d], "reverse": [_reverse1d], "scale": [_scale], "stretch": [_stretch1d],
           "combined": [_stretch1d, _shift1d, _reverse1d, _scale]}
_OPS_IMAGE = {"crop_flip": [_crop_flip], "rotate": [_rotate], "vflip": [_vflip], "color_jitter": [_color_jitter],
              "combined": [_crop_flip, _rotate, _vflip, _color_jitter]}


def augment_preset(x: torch.Tensor, preset: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply augmentation ``preset`` to raw samples ``x`` (1-D ``[N, C, L]`` float or images ``[N, C, H, W]``,
    uint8 pixels or float in [0, 1]); returns float in the raw scale (uint8 → [0, 1]). ``"none"`` is the identity."""
    if x.ndim not in (3, 4):
        raise ValueError(f"augment_preset needs [N, C, L] signals or [N, C, H, W] images, got {tuple(x.shape)}")
    p = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if preset == "none":
        return p
    table, kind, names = (_OPS_1D, "1-D signals", PRESETS_1D) if x.ndim == 3 else (_OPS_IMAGE, "images",
                                                                                    PRESETS_IMAGE)
    if preset not in table:
        raise ValueError(f"distill_data.augment={preset!r} is not a preset for {kind}; choose one of "
                         f"{('default', 'none') + names}")
    for op in table[preset]:
        p = op(p, generator)
    return p
