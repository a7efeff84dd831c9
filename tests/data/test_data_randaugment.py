"""MLKD's strong view: the released RandAugment(2, 10) pool and its Cutout as batch operations, against PIL, and the
global-batch row slicing that keeps N processes equal to one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlab.data import randaugment_like, random_cutout
from kdlab.data.autoaugment import _round_pixels
from kdlab.data.randaugment import CUTOUT_FILL, RANDAUGMENT_OPS, _apply

MEAN, STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(seed=14):
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    imgs[1] = rng.integers(60, 120, size=(32, 32, 3))  # a narrow range: autocontrast/equalize really stretch
    imgs[2, :, :, 1] = 77  # a constant channel
    imgs[3] = (imgs[3] // 4) + 100
    return imgs


def _pil(op: str, img: np.ndarray, v: float) -> np.ndarray:
    """The released augmentation functions (MLKD dataset/cifar100.py), on one HWC uint8 image."""
    from PIL import Image, ImageEnhance, ImageOps

    im = Image.fromarray(img)
    if op == "AutoContrast":
        out = ImageOps.autocontrast(im)
    elif op == "Equalize":
        out = ImageOps.equalize(im)
    elif op == "Posterize":
        out = ImageOps.posterize(im, max(1, int(v)))
    elif op == "Solarize":
        out = ImageOps.solarize(im, v)
    elif op == "TranslateX":
        out = im.transform(im.size, Image.AFFINE, (1, 0, v * im.size[0], 0, 1, 0))
    elif op == "TranslateY":
        out = im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, v * im.size[1]))
    elif op == "ShearX":
        out = im.transform(im.size, Image.AFFINE, (1, v, 0, 0, 1, 0))
    elif op == "ShearY":
        out = im.transform(im.size, Image.AFFINE, (1, 0, 0, v, 1, 0))
    elif op == "Rotate":
        out = im.rotate(v)
    else:
        out = getattr(ImageEnhance, op)(im).enhance(v)
    return np.asarray(out)


def _ours(op, imgs, v):
    p = torch.from_numpy(imgs).permute(0, 3, 1, 2).float()
    out = _round_pixels(_apply(op, p, torch.full((len(imgs),), float(v))))
    return out.permute(0, 2, 3, 1).to(torch.uint8).numpy()


@pytest.mark.parametrize("op, values", [
    ("AutoContrast", [0.5]), ("Equalize", [0.5]), ("Brightness", [0.05, 0.5, 0.95]), ("Color", [0.05, 0.7]),
    ("Contrast", [0.05, 0.95]), ("Sharpness", [0.05, 0.6]), ("Posterize", [4.0, 5.7, 7.9]), ("Solarize", [0, 100, 255.5]),
    ("TranslateX", [-0.25, 0.125]), ("TranslateY", [0.25, -0.125]),  # whole-pixel shifts on 32 px
])
def test_ops_match_the_released_pil_functions(op, values):
    imgs = _images()
    for v in values:
        ours = _ours(op, imgs, v)
        for i in range(len(imgs)):
            np.testing.assert_array_equal(ours[i], _pil(op, imgs[i], v), err_msg=f"{op}({v}) img {i}")


@pytest.mark.parametrize("op, v", [("ShearX", 0.3), ("ShearY", -0.2), ("Rotate", 25.0), ("Rotate", -13.0)])
def test_geometric_ops_agree_with_pil_up_to_resampling(op, v):
    """Nearest sampling at pixel centres (ours) and PIL's own transform differ on a few pixels at rounding ties; the
    direction and origin are PIL's (a wrong sign or origin would disagree on most pixels)."""
    imgs = _images()
    ours = _ours(op, imgs, v)
    agree = np.mean([(ours[i] == _pil(op, imgs[i], v)).all(-1).mean() for i in range(len(imgs))])
    assert agree > 0.9, agree


def test_the_pool_is_the_released_one():
    assert [name for name, _, _ in RANDAUGMENT_OPS] == [
        "AutoContrast", "Brightness", "Color", "Contrast", "Equalize", "Identity", "Posterize", "Rotate", "Sharpness",
        "ShearX", "ShearY", "Solarize", "TranslateX", "TranslateY"]
    assert dict((n, (lo, hi)) for n, lo, hi in RANDAUGMENT_OPS)["Posterize"] == (4, 8)
    assert CUTOUT_FILL == (125.0, 123.0, 114.0)


def test_randaugment_uint8_and_normalised_paths_agree():
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=gen(11))
    out = randaugment_like(x, gen(12))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out, randaugment_like(x, gen(12))) and not torch.equal(out, randaugment_like(x, gen(13)))
    m, s = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    outn = randaugment_like((x.float() / 255 - m) / s, gen(12), mean=MEAN, std=STD)
    torch.testing.assert_close(outn, (out.float() / 255 - m) / s, rtol=0, atol=1e-5)


def test_no_ops_and_no_cutout_is_the_identity_and_cutout_paints_the_released_colour():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=gen(1))
    assert torch.equal(randaugment_like(x, gen(2), n_ops=0, cutout=0.0), x)
    out = randaugment_like(x, gen(2), n_ops=0, cutout=0.5)
    changed = (out != x).any(1)  # [N, H, W]
    assert changed.flatten(1).any(1).float().mean() > 0.8  # almost every image gets a box
    fill = torch.tensor(CUTOUT_FILL).view(3, 1)
    for i in range(16):
        pix = out[i].permute(1, 2, 0)[changed[i]].float().t()
        assert torch.equal(pix, fill.expand_as(pix))
        rows, cols = changed[i].nonzero(as_tuple=True)
        if rows.numel():  # one axis-aligned box, side at most half the image (+1 for the inclusive far edge)
            assert rows.max() - rows.min() <= 17 and cols.max() - cols.min() <= 17


def test_random_cutout_on_signals():
    x = torch.randn(64, 1, 40, generator=gen(3))
    out = random_cutout(x, gen(4), cutout=0.5, fill=0.0)
    erased = out == 0
    assert erased.any() and torch.equal(out[~erased], x[~erased])
    lengths = erased.flatten(1).sum(1)
    assert lengths.max() <= 21 and (lengths > 0).float().mean() > 0.8
    for i in range(64):  # one contiguous segment per signal
        idx = erased[i, 0].nonzero().flatten()
        if idx.numel():
            assert idx.max() - idx.min() + 1 == idx.numel()


@pytest.mark.parametrize("fn", [lambda x, g, r: randaugment_like(x, g, rows=r),
                                lambda x, g, r: random_cutout(x.float(), g, rows=r)])
def test_rows_slices_the_global_draws(fn):
    """Each process draws for the whole global batch and applies its own rows: the shards equal the whole."""
    x = torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8, generator=gen(5))
    whole = fn(x, gen(6), None)
    parts = [fn(x[a:b], gen(6), (a, 12)) for a, b in ((0, 5), (5, 12))]
    assert torch.equal(torch.cat(parts), whole)


def test_errors_name_the_argument():
    x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="images"):
        randaugment_like(torch.zeros(2, 1, 40))
    with pytest.raises(ValueError, match="cutout"):
        randaugment_like(x, cutout=1.5)
    with pytest.raises(ValueError, match="n_ops"):
        randaugment_like(x, n_ops=-1)
    with pytest.raises(ValueError, match="rows"):
        randaugment_like(x, rows=(1, 2))
    with pytest.raises(ValueError, match=r"\[N, C, L\]"):
        random_cutout(torch.zeros(2, 5))
