"""Augmentation presets of the data policies: shapes, seeding, and what each preset does."""

import pytest
import torch

from kdlab.data.presets import augment_preset


@pytest.mark.parametrize("preset", ["shift", "reverse", "scale", "stretch", "combined"])
def test_1d_presets_keep_shape_and_are_seeded(preset):
    x = torch.randn(32, 1, 40)
    a = augment_preset(x, preset, torch.Generator().manual_seed(5))
    b = augment_preset(x, preset, torch.Generator().manual_seed(5))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)


def test_reverse_and_scale_presets_do_what_they_say():
    x = torch.randn(64, 1, 40)
    out = augment_preset(x, "reverse", torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert bool((flipped | same).all()) and 10 < int(flipped.sum()) < 54
    ratio = augment_preset(x, "scale", torch.Generator().manual_seed(0)) / x
    assert bool(((ratio.flatten(1) - ratio.flatten(1)[:, :1]).abs() < 1e-5).all())
    assert 0.8 <= ratio.min() and ratio.max() <= 1.2


@pytest.mark.parametrize("preset", ["crop_flip", "rotate", "vflip", "color_jitter", "combined"])
def test_image_presets(preset):
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    out = augment_preset(x, preset, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
