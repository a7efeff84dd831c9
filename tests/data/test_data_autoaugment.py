"""AutoAugment-like policy: determinism, the normalised round trip, and its operations against PIL."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlab.data import autoaugment as aa
from kdlab.data import autoaugment_like
from kdlab.data.autoaugment import _apply_op, _equalize, _round_pixels


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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
    assert torch.equal(_apply_op("Invert", p, one, plus), 255 - p)
    # level 1 → threshold 0 → every pixel inverted; level 0.5 → threshold 128.
    assert torch.equal(_apply_op("Solarize", p, one, plus), 255 - p)
    assert _apply_op("Solarize", p, half, plus)[0, 0, 0].tolist() == [0, 50, 127, 127, 55, 0]
    # level 1 → 4 bits kept: multiples of 16.
    assert _apply_op("Posterize", p, one, plus)[0, 0, 0].tolist() == [0, 48, 112, 128, 192, 240]
    assert torch.equal(_apply_op("Brightness", p, torch.zeros(2), plus), p)  # factor 1 is the identity
    assert _apply_op("Brightness", p, one, -plus)[0, 0, 0].tolist() == [0, 5, 12, 12, 20, 25]  # 0.1·p, truncated
    shifted = _apply_op("TranslateX", torch.arange(32.0).view(1, 1, 1, 32).expand(2, 1, 4, 32), half, plus)
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
        ours = _round_pixels(_apply_op(op, p, lvl, sgn)).permute(0, 2, 3, 1).to(torch.uint8).numpy()
        for i in range(4):
            np.testing.assert_array_equal(ours[i], _pil_reference(op, imgs[i], level, sign), err_msg=f"{op} img {i}")


def test_equalize_stretches_a_narrow_histogram():
    p = torch.arange(60.0, 124.0).repeat(16).view(1, 1, 32, 32)  # 64 levels, 16 pixels each
    out = _equalize(p)
    assert out.min() == 0 and out.max() >= 250 and torch.equal(out.unique(), out.unique().sort().values)
    assert torch.equal(_equalize(torch.full((1, 1, 8, 8), 9.0)), torch.full((1, 1, 8, 8), 9.0))


@pytest.mark.parametrize("op", ["Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"])
def test_geometric_ops(op):
    p = torch.randint(0, 256, (3, 3, 32, 32), generator=gen(15)).float()
    zero, one = torch.zeros(3), torch.ones(3)
    assert torch.equal(_apply_op(op, p, zero, one), p)  # level 0 is the identity
    white = torch.full((1, 3, 32, 32), 255.0)
    moved = _apply_op(op, white, torch.ones(1), torch.ones(1))
    filled = (moved == 0).all(1)[0]  # zero fill enters from the border, the middle stays image
    assert filled.any() and not filled[15:17, 15:17].any()
    assert set(moved.unique().tolist()) <= {0.0, 255.0}  # nearest sampling: no new levels


# ---------------------------------------------------------------------------------------------------------------
# the ImageNet policy (Cubuk et al. 2019): its 25 sub-policies, and that autoaugment_like draws from them
# ---------------------------------------------------------------------------------------------------------------
_NO_MAGNITUDE = {"Invert", "AutoContrast", "Equalize"}


@pytest.mark.parametrize("name", ["cifar10", "imagenet"])
def test_each_policy_has_25_well_formed_sub_policies(name):
    policy = aa.AUTOAUGMENT_POLICIES[name]
    assert len(policy) == 25 and all(len(sub) == 2 for sub in policy)
    for sub in policy:
        for op, prob, level in sub:
            assert op in aa._OPS and 0.0 <= prob <= 1.0
            assert (level is None) == (op in _NO_MAGNITUDE) and (level is None or level in range(10))


def test_the_imagenet_policy_is_the_papers():
    """Spot checks of the table (torchvision's AutoAugmentPolicy.IMAGENET lists the same 25), and its character:
    colour and geometry-light, no translations, ShearX once; five sub-policies listed twice."""
    p = aa.AUTOAUGMENT_IMAGENET_POLICY
    assert p[0] == (("Posterize", 0.4, 8), ("Rotate", 0.6, 9))
    assert p[12] == (("Equalize", 0.0, None), ("Equalize", 0.8, None))
    assert p[18] == (("ShearX", 0.6, 5), ("Equalize", 1.0, None))
    assert p[24] == (("Equalize", 0.8, None), ("Equalize", 0.6, None))
    ops = [op for sub in p for op, _, _ in sub]
    assert not {"TranslateX", "TranslateY", "ShearY", "Brightness"} & set(ops) and ops.count("ShearX") == 1
    assert len(set(p)) == 20 and p[20:] == (p[4], p[1], p[13], p[14], p[2])


@pytest.mark.parametrize("name", ["cifar10", "imagenet"])
def test_operations_fire_as_often_as_the_policy_says(monkeypatch, name):
    """Over n samples each operation runs on Σ (its probability in a sub-policy)/25 · n samples in expectation
    (uniform sub-policy, independent coin per stage): counted at the dispatch, within 4.5 standard deviations."""
    n, counts = 6000, {}
    real = aa._apply_op

    def counting(op, p, level, sign):
        counts[op] = counts.get(op, 0) + p.shape[0]
        return real(op, p, level, sign)

    monkeypatch.setattr(aa, "_apply_op", counting)
    x = torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8, generator=gen(5))
    aa.autoaugment_like(x, gen(6), policy=name)
    expected = {}
    for sub in aa.AUTOAUGMENT_POLICIES[name]:
        for op, prob, _ in sub:
            expected[op] = expected.get(op, 0.0) + prob / 25
    assert set(counts) == {op for op, e in expected.items() if e > 0}
    for op, share in expected.items():
        sd = (n * share * (1 - share)) ** 0.5
        assert abs(counts.get(op, 0) - n * share) < 4.5 * sd + 1, (op, counts.get(op, 0), n * share)


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="policy 'svhn' is unknown; choose one of \\('cifar10', 'imagenet'\\)"):
        autoaugment_like(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), gen(), policy="svhn")
