"""A batch-tensor approximation of AutoAugment (Cubuk et al., CVPR 2019), its CIFAR-10 and ImageNet policies:
:func:`autoaugment_like`.

One of R2KD's second views (the CIFAR-10 policy on CIFAR, the ImageNet policy on Tiny-ImageNet). The photometric operations reproduce PIL's results on uint8 RGB; the geometric ones
use nearest-neighbour sampling about the image centre with zero fill. Per-sample randomness is drawn as tensors;
each operation type runs once on the samples that drew it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from kdlab.data._ops import check_batch, check_generator, rand, randint
from kdlab.data.normalization import Normalization

__all__ = ["autoaugment_like", "AUTOAUGMENT_CIFAR_POLICY", "AUTOAUGMENT_IMAGENET_POLICY", "AUTOAUGMENT_POLICIES"]


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

#: The 25 ImageNet sub-policies of AutoAugment (Cubuk et al., CVPR 2019, the policy of its appendix), in the same form; the
#: values as torchvision's ``AutoAugmentPolicy.IMAGENET`` lists them. Five sub-policies appear twice in that list
#: (a drawn sub-policy is uniform over the 25 entries, so those five are twice as likely).
AUTOAUGMENT_IMAGENET_POLICY: tuple[tuple[tuple[str, float, int | None], tuple[str, float, int | None]], ...] = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)

#: the policies by the name ``policy=`` takes (``method.args.autoaugment_policy``, ``distill_data.second_view_policy``)
AUTOAUGMENT_POLICIES = {"cifar10": AUTOAUGMENT_CIFAR_POLICY, "imagenet": AUTOAUGMENT_IMAGENET_POLICY}

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


#: PIL's ImageEnhance operations: a blend of the image with a degenerate version of it
ENHANCE = ("Brightness", "Color", "Contrast", "Sharpness")


def _enhance(op: str, p: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``ImageEnhance.<op>(img).enhance(factor)`` per sample (``factor`` [n]) on pixel-valued floats."""
    if op == "Brightness":
        return _blend(p, torch.zeros_like(p), factor)
    if op == "Color":
        return _blend(p, _grayscale(p).expand_as(p), factor)
    if op == "Contrast":  # degenerate: the grey level int(mean(L) + 0.5)
        mean = torch.floor(_grayscale(p).mean(dim=(1, 2, 3), keepdim=True) + 0.5)
        return _blend(p, mean.expand_as(p), factor)
    return _blend(p, _sharpen_degenerate(p), factor)  # Sharpness


def _rotation(degrees: torch.Tensor) -> torch.Tensor:
    """[n, 2, 2] rotation matrices for per-sample angles in degrees."""
    a = torch.deg2rad(degrees)
    cos, sin = torch.cos(a), torch.sin(a)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


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
    if op in ENHANCE:
        return _enhance(op, p, 1.0 + sign * 0.9 * level)  # enhancement factor in [0.1, 1.9]
    eye = torch.eye(2, dtype=p.dtype, device=p.device).expand(n, 2, 2).clone()
    shift = torch.zeros(n, 2, dtype=p.dtype, device=p.device)
    if op == "Rotate":  # up to 30°, about the centre
        eye = _rotation(sign * 30.0 * level)
    elif op == "ShearX":  # shear up to 0.3
        eye[:, 0, 1] = sign * 0.3 * level
    elif op == "ShearY":
        eye[:, 1, 0] = sign * 0.3 * level
    elif op == "TranslateX":  # up to 150/331 of the width (the paper's range), whole pixels
        shift[:, 0] = -torch.round(sign * level * (150.0 / 331.0) * w)
    elif op == "TranslateY":
        shift[:, 1] = -torch.round(sign * level * (150.0 / 331.0) * h)
    return _affine(p, eye, shift)


def _policy_tables(policy, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ops = torch.tensor([[_OPS.index(name) for name, _, _ in sub] for sub in policy], device=device)
    prob = torch.tensor([[pr for _, pr, _ in sub] for sub in policy], device=device)
    level = torch.tensor([[(m or 0) / 9.0 for _, _, m in sub] for sub in policy], device=device)
    return ops, prob, level


def autoaugment_like(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    policy: str = "cifar10",
) -> torch.Tensor:
    """A batch-tensor approximation of AutoAugment (Cubuk et al., CVPR 2019) with ``policy`` "cifar10" or
    "imagenet" (:data:`AUTOAUGMENT_POLICIES`).

    Per sample: a random horizontal flip (p=0.5), then one of the policy's 25 sub-policies
    (:data:`AUTOAUGMENT_CIFAR_POLICY`, :data:`AUTOAUGMENT_IMAGENET_POLICY`) drawn uniformly, whose two operations
    each fire with their probability.
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
    check_generator(generator)
    check_batch(x, "x", 4, "of images [N, C, H, W] (autoaugment_like has no meaning for 1-D signals)")
    if x.ndim != 4:
        raise ValueError(f"autoaugment_like needs images [N, C, H, W]; got shape {tuple(x.shape)}")
    if policy not in AUTOAUGMENT_POLICIES:
        raise ValueError(f"autoaugment_like: policy {policy!r} is unknown; choose one of {tuple(AUTOAUGMENT_POLICIES)}")
    subs = AUTOAUGMENT_POLICIES[policy]
    n, c = x.shape[:2]
    dev = x.device
    norm = Normalization(mean, std, c, 4, dev)  # how x was normalised
    if x.dtype == torch.uint8:
        p = x.float()
    elif x.is_floating_point():
        p = _round_pixels(norm.invert(x.float()) * 255.0)
    else:
        raise ValueError(f"autoaugment_like needs uint8 pixels or a floating (normalised) batch; got {x.dtype}")

    flip = rand((n,), generator, dev) < 0.5
    p = torch.where(flip.view(-1, 1, 1, 1), p.flip(-1), p)

    ops, prob, level = _policy_tables(subs, dev)
    sub = randint(len(subs), (n,), generator, dev)
    for stage in range(2):  # the two operations of a sub-policy, in order
        op_id = ops[sub, stage]
        fire = rand((n,), generator, dev) < prob[sub, stage]
        sign = torch.where(rand((n,), generator, dev) < 0.5, -1.0, 1.0)
        lvl = level[sub, stage]
        for k, name in enumerate(_OPS):  # loop over operation types; each runs once on its selected samples
            idx = torch.nonzero(fire & (op_id == k)).flatten()
            if idx.numel():
                p[idx] = _round_pixels(_apply_op(name, p[idx], lvl[idx], sign[idx]))

    if x.dtype == torch.uint8:
        return p.to(torch.uint8)
    return norm(p / 255.0).to(x.dtype)
