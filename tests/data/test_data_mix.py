"""Batch mixers (MixUp, CutMix, Cutout, noise): formulas, determinism per generator, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlab.data import cutmix, cutout, gaussian_noise_like, mixup


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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
    with pytest.raises(ValueError, match="size must be an int >= 1"):
        cutout(torch.ones(2, 1, 40), gen(), size=0)


def test_gaussian_noise_like():
    x = torch.zeros(64, 3, 16, 16, dtype=torch.float64)
    noise = gaussian_noise_like(x, gen(10), std=2.0)
    assert noise.shape == x.shape and noise.dtype == torch.float64
    assert abs(noise.std().item() - 2.0) < 0.05 and abs(noise.mean().item()) < 0.05
    assert torch.equal(noise, gaussian_noise_like(x, gen(10), std=2.0))
    assert gaussian_noise_like(torch.zeros(2, 3, dtype=torch.uint8), gen()).dtype == torch.float32
