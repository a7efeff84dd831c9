"""MLKD's strong view as batch-tensor operations: :func:`randaugment_like` (the FixMatch-style ``RandAugment(2, 10)``
of the released code, with its Cutout) and :func:`random_cutout` (that Cutout alone, for any input with a spatial
axis, e.g. MNIST-1D signals).

Random draws are made for ``rows=(offset, total)`` rows and the batch uses rows ``offset .. offset + N``: every
process of a distributed run draws the whole global batch's augmentations from the same RNG state and applies its
own share, so N processes augment each sample as one process does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kdlab._checks import check_int, check_real
from kdlab.data._ops import check_batch, check_generator, rand, randint
from kdlab.data.autoaugment import ENHANCE, _affine, _autocontrast, _enhance, _equalize, _rotation, _round_pixels
from kdlab.data.normalization import Normalization

__all__ = ["RANDAUGMENT_OPS", "CUTOUT_FILL", "randaugment_like", "random_cutout"]

#: The released code's augmentation pool (MLKD ``dataset/cifar100.py``, FixMatch's variant): (op, low, high); each
#: drawn op gets a value uniform in [low, high).
RANDAUGMENT_OPS: tuple[tuple[str, float, float], ...] = (
    ("AutoContrast", 0, 1), ("Brightness", 0.05, 0.95), ("Color", 0.05, 0.95), ("Contrast", 0.05, 0.95),
    ("Equalize", 0, 1), ("Identity", 0, 1), ("Posterize", 4, 8), ("Rotate", -30, 30), ("Sharpness", 0.05, 0.95),
    ("ShearX", -0.3, 0.3), ("ShearY", -0.3, 0.3), ("Solarize", 0, 256), ("TranslateX", -0.3, 0.3),
    ("TranslateY", -0.3, 0.3),
)  # fmt: skip
#: Cutout's fill colour (RGB pixel levels) in the released code
CUTOUT_FILL = (125.0, 123.0, 114.0)


def _fraction(cutout: float) -> float:
    value = check_real(cutout, "cutout", minimum=0, note=" (the largest Cutout side, a fraction of the image side)")
    if value > 1:
        raise ValueError(f"cutout must be at most 1 (a fraction of the image side); got {value}")
    return value


def _rows(n: int, rows: tuple[int, int] | None) -> tuple[int, int]:
    if rows is None:
        return 0, n
    offset, total = rows
    check_int(offset, "rows offset", 0)
    check_int(total, "rows total", 1)
    if offset + n > total:
        raise ValueError(f"rows=(offset={offset}, total={total}) cannot hold this batch's {n} samples")
    return offset, total


def _apply(op: str, p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One op of the pool on pixel-valued floats ``p`` [n, C, H, W] with per-sample values ``v`` [n] (PIL's
    semantics; geometric ops: nearest-neighbour, zero fill, PIL's corner origin for the shears)."""
    n, _, h, w = p.shape
    if op == "Identity":
        return p
    if op == "AutoContrast":
        return _autocontrast(p)
    if op == "Equalize":
        return _equalize(p)
    if op in ENHANCE:  # the released values are the enhancement factors themselves, U(0.05, 0.95)
        return _enhance(op, p, v)
    if op == "Posterize":  # ImageOps.posterize(img, max(1, int(v))): keep that many top bits
        quantum = (2.0 ** (8.0 - torch.floor(v).clamp(min=1.0))).view(-1, 1, 1, 1)
        return torch.floor(p / quantum) * quantum
    if op == "Solarize":  # invert every pixel at or above the threshold v
        return torch.where(p >= v.view(-1, 1, 1, 1), 255.0 - p, p)
    matrix = torch.eye(2, dtype=p.dtype, device=p.device).expand(n, 2, 2).clone()
    shift = torch.zeros(n, 2, dtype=p.dtype, device=p.device)
    if op == "Rotate":  # v degrees about the centre
        matrix = _rotation(v)
    elif op == "ShearX":  # PIL (1, v, 0, 0, 1, 0): input x = x_out + v·y_out, y from the top edge
        matrix[:, 0, 1] = v
        shift[:, 0] = v * h / 2.0
    elif op == "ShearY":  # PIL (1, 0, 0, v, 1, 0)
        matrix[:, 1, 0] = v
        shift[:, 1] = v * w / 2.0
    elif op == "TranslateX":  # v·width pixels
        shift[:, 0] = v * w
    elif op == "TranslateY":
        shift[:, 1] = v * h
    return _affine(p, matrix, shift)


def _cutout_mask(shape: Sequence[int], side: torch.Tensor, centre: list[torch.Tensor]) -> torch.Tensor:
    """bool [N, 1, *spatial]: the released ``CutoutAbs`` box per sample, side ``side`` [N] (pixels, float), corner
    ``int(max(0, c − side/2))`` and far edge ``min(size, corner + side)`` inclusive along every spatial axis."""
    n, spatial = shape[0], list(shape[2:])
    inside = torch.ones((n, 1, *[1] * len(spatial)), dtype=torch.bool, device=side.device)
    for d, (size, c) in enumerate(zip(spatial, centre)):
        lo = torch.floor((c - side / 2.0).clamp(min=0.0))
        hi = torch.clamp(lo + side, max=float(size))
        pos = torch.arange(size, device=side.device, dtype=side.dtype)
        along = (pos >= lo[:, None]) & (pos <= hi[:, None]) & (side[:, None] > 0)
        view = [n, 1] + [1] * len(spatial)
        view[2 + d] = size
        inside = inside & along.view(view)
    return inside


def randaugment_like(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    n_ops: int = 2,
    cutout: float = 0.5,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    rows: tuple[int, int] | None = None,
) -> torch.Tensor:
    """MLKD's strong augmentation, a batch-tensor version of the released ``RandAugment(2, 10)`` (FixMatch's pool).

    Per image: ``n_ops`` operations drawn uniformly with replacement from :data:`RANDAUGMENT_OPS`, each with a
    value uniform in its range (the ``m = 10`` of the released code is unused there), applied in order on uint8
    pixel levels; then Cutout: a square of side U(0, ``cutout``)·W centred uniformly, filled with
    :data:`CUTOUT_FILL`. Images ``[N, C, H, W]``; a floating batch is taken as ``normalize``-d with ``mean``/``std``
    and returned normalised the same way (uint8 in, uint8 out). The photometric ops reproduce PIL's results;
    geometric ops sample nearest-neighbour with zero fill (PIL's own resampling differs at sub-pixel level).
    ``rows``: (offset, total), see the module docstring.
    """
    check_generator(generator)
    check_batch(x, "x", 4, "of images [N, C, H, W] (use random_cutout for other inputs)")
    if x.ndim != 4:
        raise ValueError(f"randaugment_like needs images [N, C, H, W]; got shape {tuple(x.shape)}")
    n_ops = check_int(n_ops, "n_ops", 0)
    cutout = _fraction(cutout)
    n, c, h, w = x.shape
    offset, total = _rows(n, rows)
    dev = x.device
    norm = Normalization(mean, std, c, 4, dev)
    if x.dtype == torch.uint8:
        p = x.float()
    elif x.is_floating_point():
        p = _round_pixels(norm.invert(x.float()) * 255.0)
    else:
        raise ValueError(f"randaugment_like needs uint8 pixels or a floating (normalised) batch; got {x.dtype}")

    # every draw for all `total` rows first (a fixed amount per sample), then this batch's slice
    sl = slice(offset, offset + n)
    ops = randint(len(RANDAUGMENT_OPS), (total, n_ops), generator, dev)[sl]
    u = rand((total, n_ops), generator, dev)[sl]
    side = (rand((total,), generator, dev) * (cutout * w))[sl]
    cy, cx = rand((total,), generator, dev)[sl] * h, rand((total,), generator, dev)[sl] * w

    low = torch.tensor([lo for _, lo, _ in RANDAUGMENT_OPS], device=dev)
    high = torch.tensor([hi for _, _, hi in RANDAUGMENT_OPS], device=dev)
    for stage in range(n_ops):
        op_id = ops[:, stage]
        value = low[op_id] + (high[op_id] - low[op_id]) * u[:, stage]
        for k, (name, _, _) in enumerate(RANDAUGMENT_OPS):  # each op type once, on the samples that drew it
            idx = torch.nonzero(op_id == k).flatten()
            if idx.numel() and name != "Identity":
                p[idx] = _round_pixels(_apply(name, p[idx], value[idx]))

    box = _cutout_mask(p.shape, side, [cy, cx])
    fill = torch.tensor(CUTOUT_FILL if c == 3 else [sum(CUTOUT_FILL) / 3.0] * c, device=dev).view(1, c, 1, 1)
    p = torch.where(box, fill.expand_as(p), p)
    if x.dtype == torch.uint8:
        return p.to(torch.uint8)
    return norm(p / 255.0).to(x.dtype)


def random_cutout(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    cutout: float = 0.5,
    fill: float = 0.0,
    rows: tuple[int, int] | None = None,
) -> torch.Tensor:
    """The released Cutout alone, for inputs with spatial axes ``[N, C, L]`` or ``[N, C, H, W]``: per sample a box
    of side U(0, ``cutout``)·(first spatial size) along every spatial axis, set to ``fill`` (in the tensor's own
    domain: 0 is the data mean of a normalised batch). ``rows``: see the module docstring."""
    check_generator(generator)
    check_batch(x, "x", 3, "[N, C, L] or [N, C, H, W]")
    if x.ndim > 4:
        raise ValueError(f"random_cutout needs [N, C, L] or [N, C, H, W]; got shape {tuple(x.shape)}")
    cutout = _fraction(cutout)
    n = x.shape[0]
    offset, total = _rows(n, rows)
    sl = slice(offset, offset + n)
    side = (rand((total,), generator, x.device) * (cutout * x.shape[2]))[sl]
    centre = [rand((total,), generator, x.device)[sl] * size for size in x.shape[2:]]
    return x.masked_fill(_cutout_mask(x.shape, side, centre), fill)
