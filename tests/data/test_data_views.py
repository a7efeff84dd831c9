"""View augmentations (CropFlip, Shift1D, Identity) against naive per-sample references."""

from __future__ import annotations

import pytest
import torch

from kdlab.data import CropFlip, Identity, Shift1D


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
    with pytest.raises(ValueError, match="padding must be an int >= 0"):
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
