"""Augmentation semantics against naive per-sample references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlab.data import CropFlip, Identity, Shift1D, autoaugment_like, cutmix, cutout, gaussian_noise_like, mixup
from kdlab.data import augment as A


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def naive_crop_flip(img: torch.Tensor, dy: int, dx: int, flip: int, size=(32, 32), padding=4) -> torch.Tensor:
    """RandomCrop(size, padding, fill=0) at corner (dy, dx) of the padded image, then an optional mirror."""
    c, h, w = img.shape
    padded = torch.zeros(c, h + 2 * padding, w + 2 * padding, dtype=img.dtype)
    padded[:, padding : padding + h, padding : padding + w] = img
    crop = padded[:, dy : dy + size[0], dx : dx + size[1]]
    return crop.flip(-1) if flip else crop


# ------------------------------------------------------------------------------------------------------- CropFlip
def test_cropflip_every_view_matches_reference():
    aug = CropFlip(32, padding=4)
    assert aug.num_views == 162
    views = torch.arange(162)
    x = torch.randint(0, 256, (162, 3, 32, 32), dtype=torch.uint8, generator=gen(1))
    out = aug.apply(x, views)
    assert out.dtype == torch.uint8 and out.shape == x.shape and out.is_contiguous()
    seen = set()
    for v in range(162):  # test-side loop: one naive reference per view
        dy, dx, flip = (v // 2) // 9, (v // 2) % 9, v % 2
        seen.add((dy, dx, flip))
        assert torch.equal(out[v], naive_crop_flip(x[v], dy, dx, flip)), f"view {v}"
    assert len(seen) == 162  # all 9×9 offsets × 2 flips
    assert torch.equal(out[aug.identity_view], x[aug.identity_view])


def test_cropflip_encode_decode_roundtrip():
    aug = CropFlip()
    views = torch.arange(aug.num_views)
    dy, dx, flip = aug.decode(views)
    assert dy.max() == dx.max() == 8 and flip.max() == 1
    assert torch.equal(aug.encode(dy, dx, flip), views)
    assert aug.identity_view == aug.encode(4, 4, 0)


def test_cropflip_pads_with_black_pixels():
    aug = CropFlip()
    white = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    corner = aug.apply(white, torch.tensor([aug.encode(0, 0, 0)]))[0]
    assert (corner[:, :4, :] == 0).all() and (corner[:, :, :4] == 0).all() and (corner[:, 4:, 4:] == 255).all()
    far = aug.apply(white, torch.tensor([aug.encode(8, 8, 1)]))[0]  # mirrored: the padding ends up on the left
    assert (far[:, 28:, :] == 0).all() and (far[:, :, :4] == 0).all() and (far[:, :28, 4:] == 255).all()


def test_cropflip_float_and_non_square():
    aug = CropFlip((4, 6), padding=1)
    assert aug.num_views == 3 * 3 * 2
    x = torch.randn(aug.num_views, 2, 4, 6)
    out = aug.apply(x, torch.arange(aug.num_views))
    for v in range(aug.num_views):
        dy, dx, flip = (v // 2) // 3, (v // 2) % 3, v % 2
        assert torch.equal(out[v], naive_crop_flip(x[v], dy, dx, flip, size=(4, 6), padding=1))


def test_views_are_uniform_and_all_reachable():
    aug = CropFlip()
    views = aug.sample(162 * 400, gen(2))
    counts = torch.bincount(views, minlength=162)
    assert views.dtype == torch.int64 and counts.numel() == 162 and (counts > 0).all()
    # 400 expected per view; ±40% is > 8 standard deviations.
    assert counts.min() > 240 and counts.max() < 560
    assert torch.equal(aug.sample(50, gen(3)), aug.sample(50, gen(3)))


def test_cropflip_rejects_bad_input():
    aug = CropFlip()
    with pytest.raises(ValueError, match=r"needs images of shape \[N, C, 32, 32\]"):
        aug.apply(torch.zeros(2, 3, 28, 28, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"views must lie in \[0, 162\)"):
        aug.apply(torch.zeros(1, 3, 32, 32), torch.tensor([162]))
    with pytest.raises(ValueError, match="views has 1 ids but x has 2"):
        aug.apply(torch.zeros(2, 3, 32, 32), torch.tensor([0]))
    with pytest.raises(ValueError, match="1-D int64"):
        aug.apply(torch.zeros(1, 3, 32, 32), torch.tensor([0], dtype=torch.int32))
    with pytest.raises(ValueError, match="padding must be a non-negative int"):
        CropFlip(32, padding=-1)


# -------------------------------------------------------------------------------------------------- Shift1D/Identity
def test_shift1d_every_view_matches_reference():
    aug = Shift1D(max_shift=4)
    assert aug.num_views == 9 and aug.identity_view == 4
    x = torch.randn(9, 2, 40)
    out = aug.apply(x, torch.arange(9))
    for v in range(9):
        s = v - 4
        ref = torch.zeros(2, 40)
        for i in range(40):  # out[i] = x[i − s], zero outside
            if 0 <= i - s < 40:
                ref[:, i] = x[v, :, i - s]
        assert torch.equal(out[v], ref), f"shift {s}"
    assert (out[8, :, :4] == 0).all() and torch.equal(out[8, :, 4:], x[8, :, :36])  # +4: moved right
    assert torch.bincount(aug.sample(900, gen(4)), minlength=9).min() > 50


def test_identity_and_descriptions():
    x = torch.randn(3, 1, 5)
    out, views = Identity()(x, gen())
    assert out is x and views.tolist() == [0, 0, 0]
    assert CropFlip().describe()["num_views"] == 162 and Shift1D(2).describe()["max_shift"] == 2
    assert CropFlip() == CropFlip(32, 4) and CropFlip() != CropFlip(32, 2) and Shift1D(4) != CropFlip()
    assert len({CropFlip(), CropFlip(32, 4), Shift1D(4)}) == 2


# ----------------------------------------------------------------------------------------------------------- mixup
def test_mixup_formula_and_determinism():
    x = torch.randn(16, 3, 8, 8)
    mixed, lam, perm = mixup(x, gen(5), alpha=1.0)
    assert 0.0 < lam < 1.0 and sorted(perm.tolist()) == list(range(16))
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[perm], rtol=0, atol=0)
    mixed2, lam2, perm2 = mixup(x, gen(5), alpha=1.0)
    assert lam2 == lam and torch.equal(perm2, perm) and torch.equal(mixed2, mixed)
    assert mixup(x, gen(6))[1] != lam


def test_mixup_lambda_follows_beta():
    g = gen(7)
    uniform = np.array([mixup(torch.zeros(2, 1, 3), g, alpha=1.0)[1] for _ in range(400)])
    peaked = np.array([mixup(torch.zeros(2, 1, 3), g, alpha=0.2)[1] for _ in range(400)])
    assert abs(uniform.mean() - 0.5) < 0.05 and abs(uniform.var() - 1 / 12) < 0.015  # Beta(1,1) = U[0,1]
    # Var Beta(a, a) = 1/(4(2a+1)): 0.179 for a=0.2, most mass near 0 and 1.
    assert abs(peaked.var() - 1 / 5.6) < 0.035 and np.mean((peaked < 0.1) | (peaked > 0.9)) > 0.5


def test_mixup_errors():
    with pytest.raises(ValueError, match="floating tensor"):
        mixup(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), gen())
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        mixup(torch.zeros(2, 3), gen(), alpha=0.0)
    with pytest.raises(ValueError, match=r"generator must be a torch\.Generator"):
        mixup(torch.zeros(2, 3), 123)


# ---------------------------------------------------------------------------------------------------------- cutmix
@pytest.mark.parametrize("shape", [(12, 2, 16, 16), (12, 1, 40)])
def test_cutmix_pastes_one_box(shape):
    n = shape[0]
    x = torch.arange(n, dtype=torch.float32).view(n, *([1] * (len(shape) - 1))).expand(shape).clone()
    for seed in range(6):
        out, lam, perm = cutmix(x, gen(seed), alpha=1.0)
        from_other = out != x  # x[i] is the constant i, so pasted pixels differ wherever perm[i] != i
        moved = perm != torch.arange(n)
        assert moved.any()
        region = from_other[moved.nonzero()[0, 0]]
        assert (from_other[moved] == region).all()  # the same box in every sample
        assert torch.equal(out[moved][region.expand_as(out[moved])], x[perm][moved][region.expand_as(out[moved])])
        assert lam == pytest.approx(1.0 - region[0].float().mean().item())
        # A box: the set of covered positions is the product of its per-dim extents.
        nz = region[0].nonzero()
        if nz.numel():
            extent = [int(nz[:, d].max() - nz[:, d].min() + 1) for d in range(nz.shape[1])]
            assert nz.shape[0] == int(np.prod(extent))
    out2, lam2, perm2 = cutmix(x, gen(3))
    again = cutmix(x, gen(3))
    assert torch.equal(out2, again[0]) and lam2 == again[1] and torch.equal(perm2, again[2])


def test_cutmix_keeps_uint8():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    out, lam, _ = cutmix(x, gen(1))
    assert out.dtype == torch.uint8 and 0.0 <= lam <= 1.0
    with pytest.raises(ValueError, match=r"\[N, C, H, W\] or \[N, C, L\]"):
        cutmix(torch.zeros(4, 3), gen())


# ---------------------------------------------------------------------------------------------------------- cutout
def test_cutout_one_clipped_square_per_sample():
    x = torch.ones(200, 3, 32, 32)
    out = cutout(x, gen(8), size=8)
    zero = out == 0
    assert torch.equal(zero[:, :1].expand_as(zero), zero)  # same hole in every channel
    areas = zero[:, 0].flatten(1).sum(1)
    assert areas.max() == 64 and (areas > 0).all() and (areas < 64).any()  # full and border-clipped squares
    for i in range(200):  # each hole is a rectangle of sides ≤ 8
        nz = zero[i, 0].nonzero()
        h = int(nz[:, 0].max() - nz[:, 0].min() + 1)
        w = int(nz[:, 1].max() - nz[:, 1].min() + 1)
        assert h <= 8 and w <= 8 and nz.shape[0] == h * w
    assert torch.equal(out, cutout(x, gen(8), size=8)) and torch.equal(x, torch.ones_like(x))  # input untouched


def test_cutout_signals_and_errors():
    out = cutout(torch.ones(50, 1, 40), gen(9), size=6)
    assert (out == 0).sum(-1).max() == 6
    with pytest.raises(ValueError, match="size must be a positive int"):
        cutout(torch.ones(2, 1, 40), gen(), size=0)


# ------------------------------------------------------------------------------------------------------ noise/policy
def test_gaussian_noise_like():
    x = torch.zeros(64, 3, 16, 16, dtype=torch.float64)
    noise = gaussian_noise_like(x, gen(10), std=2.0)
    assert noise.shape == x.shape and noise.dtype == torch.float64
    assert abs(noise.std().item() - 2.0) < 0.05 and abs(noise.mean().item()) < 0.05
    assert torch.equal(noise, gaussian_noise_like(x, gen(10), std=2.0))
    assert gaussian_noise_like(torch.zeros(2, 3, dtype=torch.uint8), gen()).dtype == torch.float32


def test_autoaugment_like_uint8_and_normalised():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=gen(11))
    out = autoaugment_like(x, gen(12))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out, autoaugment_like(x, gen(12)))
    assert not torch.equal(out, autoaugment_like(x, gen(13)))
    changed = (out != x).flatten(1).any(1)
    assert 0.5 < changed.float().mean() < 1.0  # most, not all, samples are altered

    mean, std = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    xn = (x.float() / 255 - m) / s
    outn = autoaugment_like(xn, gen(12), mean=mean, std=std)
    # Same draws, same pixels: the normalised path is the uint8 path followed by normalisation.
    torch.testing.assert_close(outn, (out.float() / 255 - m) / s, rtol=0, atol=1e-5)


def test_autoaugment_like_errors():
    with pytest.raises(ValueError, match="images"):
        autoaugment_like(torch.zeros(2, 1, 40), gen())
    with pytest.raises(ValueError, match="both mean and std"):
        autoaugment_like(torch.zeros(2, 3, 8, 8), gen(), mean=(0.5, 0.5, 0.5))


def test_policy_ops_exact():
    p = torch.tensor([0.0, 50.0, 127.0, 128.0, 200.0, 255.0]).view(1, 1, 1, 6).expand(2, 3, 1, 6).clone()
    one, half = torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.5])
    plus = torch.ones(2)
    assert torch.equal(A._apply_op("Invert", p, one, plus), 255 - p)
    # level 1 → threshold 0 → every pixel inverted; level 0.5 → threshold 128.
    assert torch.equal(A._apply_op("Solarize", p, one, plus), 255 - p)
    assert A._apply_op("Solarize", p, half, plus)[0, 0, 0].tolist() == [0, 50, 127, 127, 55, 0]
    # level 1 → 4 bits kept: multiples of 16.
    assert A._apply_op("Posterize", p, one, plus)[0, 0, 0].tolist() == [0, 48, 112, 128, 192, 240]
    assert torch.equal(A._apply_op("Brightness", p, torch.zeros(2), plus), p)  # factor 1 is the identity
    assert A._apply_op("Brightness", p, one, -plus)[0, 0, 0].tolist() == [0, 5, 12, 12, 20, 25]  # 0.1·p, truncated
    shifted = A._apply_op("TranslateX", torch.arange(32.0).view(1, 1, 1, 32).expand(2, 1, 4, 32), half, plus)
    k = round(0.5 * 150 / 331 * 32)  # 7 px to the right, zero fill
    assert (shifted[..., :k] == 0).all() and torch.equal(shifted[..., k:], torch.arange(32.0 - k).expand(2, 1, 4, -1))


def _pil_reference(op: str, img: np.ndarray, level: float, sign: float) -> np.ndarray:
    """The op applied by PIL (the library AutoAugment's reference code uses) to one HWC uint8 image."""
    from PIL import Image, ImageEnhance, ImageOps

    im = Image.fromarray(img)
    factor = 1.0 + sign * 0.9 * level
    if op == "Invert":
        out = ImageOps.invert(im)
    elif op == "AutoContrast":
        out = ImageOps.autocontrast(im)
    elif op == "Equalize":
        out = ImageOps.equalize(im)
    elif op == "Solarize":
        out = ImageOps.solarize(im, 256 * (1 - level))
    elif op == "Posterize":
        out = ImageOps.posterize(im, 8 - round(4 * level))
    else:
        out = getattr(ImageEnhance, op)(im).enhance(factor)
    return np.asarray(out)


@pytest.mark.parametrize(
    "op",
    ["Invert", "AutoContrast", "Equalize", "Solarize", "Posterize", "Color", "Contrast", "Brightness", "Sharpness"],
)
def test_photometric_ops_match_pil(op):
    rng = np.random.default_rng(14)
    # Varied images: full range, a narrow range (so autocontrast/equalize really stretch), and a constant channel.
    imgs = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    imgs[1] = rng.integers(60, 120, size=(32, 32, 3))
    imgs[2, :, :, 1] = 77
    imgs[3] = (imgs[3] // 4) + 100
    for level, sign in [(1.0, 1.0), (1.0, -1.0), (4 / 9, 1.0), (7 / 9, -1.0)]:
        p = torch.from_numpy(imgs).permute(0, 3, 1, 2).float()
        lvl, sgn = torch.full((4,), level), torch.full((4,), sign)
        ours = A._round_pixels(A._apply_op(op, p, lvl, sgn)).permute(0, 2, 3, 1).to(torch.uint8).numpy()
        for i in range(4):
            np.testing.assert_array_equal(ours[i], _pil_reference(op, imgs[i], level, sign), err_msg=f"{op} img {i}")


def test_equalize_stretches_a_narrow_histogram():
    p = torch.arange(60.0, 124.0).repeat(16).view(1, 1, 32, 32)  # 64 levels, 16 pixels each
    out = A._equalize(p)
    assert out.min() == 0 and out.max() >= 250 and torch.equal(out.unique(), out.unique().sort().values)
    assert torch.equal(A._equalize(torch.full((1, 1, 8, 8), 9.0)), torch.full((1, 1, 8, 8), 9.0))


@pytest.mark.parametrize("op", ["Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"])
def test_geometric_ops(op):
    p = torch.randint(0, 256, (3, 3, 32, 32), generator=gen(15)).float()
    zero, one = torch.zeros(3), torch.ones(3)
    assert torch.equal(A._apply_op(op, p, zero, one), p)  # level 0 is the identity
    white = torch.full((1, 3, 32, 32), 255.0)
    moved = A._apply_op(op, white, torch.ones(1), torch.ones(1))
    filled = (moved == 0).all(1)[0]  # zero fill enters from the border, the middle stays image
    assert filled.any() and not filled[15:17, 15:17].any()
    assert set(moved.unique().tolist()) <= {0.0, 255.0}  # nearest sampling: no new levels
