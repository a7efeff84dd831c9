"""Batch mixers: random functions ``fn(x, generator, ...)`` of a whole batch — MixUp, CutMix, Cutout, pure noise.

Used for R2KD's second view; the data policies draw their own input-only MixUp. Their outputs are not a known view
of a stored sample, so a teacher-logit cache never serves them. Per-sample randomness is drawn as tensors and applied
by gathers and masks, never by a Python loop over samples.
"""

from __future__ import annotations

import math

import torch

from kdlab._checks import check_int, check_real
from kdlab.data._ops import beta, check_batch, check_generator, randint, randperm, rng_device

__all__ = ["mixup", "cutmix", "cutout", "gaussian_noise_like"]


def mixup(
    x: torch.Tensor, generator: torch.Generator | None = None, alpha: float = 1.0
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """MixUp (Zhang et al., ICLR 2018) on inputs: ``x̃ = λ·x + (1−λ)·x[perm]``, one ``λ ~ Beta(α, α)`` per batch.

    Returns ``(x_mixed, lam, perm)``; a loss on labels would be ``lam·ℓ(y) + (1−lam)·ℓ(y[perm])``. Needs a floating
    tensor (apply it to the normalised batch; mixing commutes with the affine normalisation). Works for images and
    1-D signals alike.
    """
    check_generator(generator)
    check_batch(x, "x", 2, "[N, ...]")
    if not x.is_floating_point():
        raise ValueError(
            f"mixup needs a floating tensor (got {x.dtype}); apply it to the normalised batch (Batch.x) instead"
        )
    lam = beta(alpha, generator, x.device)
    perm = randperm(x.shape[0], generator, x.device)
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
    check_generator(generator)
    check_batch(x, "x", 3, "[N, C, H, W] or [N, C, L]")
    lam = beta(alpha, generator, x.device)
    spatial = tuple(x.shape[2:])
    ratio = (1.0 - lam) ** (1.0 / len(spatial))
    centres = [int(randint(size, (1,), generator, x.device).item()) for size in spatial]
    perm = randperm(x.shape[0], generator, x.device)
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
    check_generator(generator)
    check_batch(x, "x", 3, "[N, C, H, W] or [N, C, L]")
    size = check_int(size, "size", 1, note=" (side of the cut-out square)")
    n = x.shape[0]
    spatial = tuple(x.shape[2:])
    inside = torch.ones((n, 1) + (1,) * len(spatial), dtype=torch.bool, device=x.device)
    for dim, extent in enumerate(spatial):  # ≤ 2 dims
        c = randint(extent, (n,), generator, x.device)
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
    check_generator(generator)
    check_batch(x, "x", 1, "[N, ...]")
    check_real(std, "std", minimum=0)
    dtype = x.dtype if x.is_floating_point() else torch.float32
    dev = rng_device(generator, x.device)
    noise = torch.randn(tuple(x.shape), generator=generator, device=dev, dtype=torch.float32)
    return (std * noise).to(device=x.device, dtype=dtype)
