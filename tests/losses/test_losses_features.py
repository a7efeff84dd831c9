"""The feature losses (FitNets, AT, NST, PKT, RKD, SP, KDSVD, VID): parity with the reference formulas of mdistiller
(megvii-research/mdistiller, mdistiller/distillers/*.py), written below as facts and compared at 1e-6 on random
features; identities; float64 gradcheck; invariances; edge cases (small batches, zero features, maps of different
sizes pooled as the reference pools them); input errors."""

import math

import pytest
import torch
import torch.nn.functional as F

import kdlab.losses as L


def _feats(*shape, seed=0, dtype=torch.float64, relu=False):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (x.relu() if relu else x).to(dtype)


def _orthogonal(d, seed=0):
    q, _ = torch.linalg.qr(_feats(d, d, seed=seed))
    return q


# ---------------------------------------------------------------------------------------------------------------------
# the reference formulas, as facts (each a direct transcription of what mdistiller computes, written for this test)


def ref_pool(f_s, f_t):
    # mdistiller compares H only and pools the larger map to a square of the smaller H
    hs, ht = f_s.shape[2], f_t.shape[2]
    if hs > ht:
        f_s = F.adaptive_avg_pool2d(f_s, (ht, ht))
    elif hs < ht:
        f_t = F.adaptive_avg_pool2d(f_t, (hs, hs))
    return f_s, f_t


def ref_at(g_s, g_t, p):
    total = 0
    for f_s, f_t in zip(g_s, g_t):
        f_s, f_t = ref_pool(f_s, f_t)
        a_s = F.normalize(f_s.pow(p).mean(1).reshape(len(f_s), -1))
        a_t = F.normalize(f_t.pow(p).mean(1).reshape(len(f_t), -1))
        total = total + (a_s - a_t).pow(2).mean()
    return total


def ref_nst(g_s, g_t):
    total = 0
    for f_s, f_t in zip(g_s, g_t):
        f_s, f_t = ref_pool(f_s, f_t)
        s = F.normalize(f_s.reshape(*f_s.shape[:2], -1), dim=2)
        t = F.normalize(f_t.reshape(*f_t.shape[:2], -1), dim=2)

        def k(a, b):  # [N, C_b, C_a] of (a_i · b_j)²
            return (a.unsqueeze(1) * b.unsqueeze(2)).sum(-1).pow(2)

        total = total + k(t, t).mean() + k(s, s).mean() - 2 * k(s, t).mean()
    return total


def ref_pkt(f_s, f_t, eps=1e-7):
    def cond(f):
        f = f / (torch.sqrt((f**2).sum(1, keepdim=True)) + eps)
        f = torch.where(f != f, torch.zeros_like(f), f)
        k = (f @ f.t() + 1) / 2
        return k / k.sum(1, keepdim=True)

    s, t = cond(f_s), cond(f_t)
    return (t * torch.log((t + eps) / (s + eps))).mean()


def ref_rkd(f_s, f_t, squared=False, eps=1e-12, wd=25, wa=50):
    def pdist(e):
        sq = e.pow(2).sum(1)
        d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps)
        d = d if squared else d.sqrt()
        d = d.clone()
        d[range(len(e)), range(len(e))] = 0
        return d

    s, t = f_s.reshape(len(f_s), -1), f_t.reshape(len(f_t), -1)
    td, sd = pdist(t), pdist(s)
    td, sd = td / td[td > 0].mean(), sd / sd[sd > 0].mean()

    def angle(e):
        n = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
        return torch.bmm(n, n.transpose(1, 2)).reshape(-1)

    return wd * F.smooth_l1_loss(sd, td) + wa * F.smooth_l1_loss(angle(s), angle(t))


def ref_sp(g_s, g_t):
    total = 0
    for f_s, f_t in zip(g_s, g_t):
        b = len(f_s)
        gs = F.normalize(f_s.reshape(b, -1) @ f_s.reshape(b, -1).t())
        gt = F.normalize(f_t.reshape(b, -1) @ f_t.reshape(b, -1).t())
        total = total + ((gt - gs) ** 2).reshape(-1, 1).sum(0)[0] / (b * b)
    return total


def ref_kdsvd(g_s, g_t, k, paper=False):
    def svd(f, n):
        if paper:  # [N, HW, C] (square maps)
            x = f.reshape(len(f), f.shape[1], f.shape[2] * f.shape[2]).transpose(-2, -1)
        else:  # mdistiller: [N, C·H, W]
            x = f.reshape(len(f), f.shape[1] * f.shape[2], f.shape[3])
        _, s, vh = torch.linalg.svd(x, full_matrices=False)
        v = vh.transpose(-2, -1)
        s, v = torch.nan_to_num(s, 0, 0, 0), torch.nan_to_num(v, 0, 0, 0)
        return F.normalize(s[:, :n], dim=1), F.normalize(v[:, :, :n], dim=1)

    out, prev = 0, None
    for f_s, f_t in zip(g_s, g_t):
        s_t, v_t = svd(f_t, k)
        _, v_s = svd(f_s, k + 3)
        cos = v_s.transpose(-2, -1) @ v_t
        best, _ = cos.abs().max(1, keepdim=True)
        v_s = v_s @ torch.where(best == cos.abs(), cos.sign(), torch.zeros_like(cos))
        v_t, v_s = v_t * s_t.unsqueeze(1), v_s * s_t.unsqueeze(1)
        if prev is not None:
            rs = torch.exp(-(v_s.unsqueeze(2) - prev[0].unsqueeze(1)).pow(2) / 8)
            rt = torch.exp(-(v_t.unsqueeze(2) - prev[1].unsqueeze(1)).pow(2) / 8)
            err = (rs - rt).pow(2)
            out = out + torch.where(torch.isfinite(err), err, torch.zeros_like(err)).sum() / len(f_s)
        prev = (v_s, v_t)
    return out


def ref_vid(mu, f_t, log_scale, eps=1e-5):
    var = (torch.log(1.0 + torch.exp(log_scale)) + eps).view(1, -1, 1, 1)
    return torch.mean(0.5 * ((mu - f_t) ** 2 / var + torch.log(var)))


# ---------------------------------------------------------------------------------------------------------------------
# parity


def _stages(seed, channels, sizes, n=6, relu=True):
    return [_feats(n, c, h, h, seed=seed + i, relu=relu) for i, (c, h) in enumerate(zip(channels, sizes))]


PARITY_SHAPES = {  # (student channels, sizes), (teacher channels, sizes): a resnet8x4-like and a pooled pair
    "same-size": (((8, 16, 32), (8, 4, 2)), ((8, 16, 32), (8, 4, 2))),
    "pooled": (((4, 6, 10), (8, 4, 4)), ((8, 16, 32), (16, 8, 2))),
}


@pytest.mark.parametrize("case", sorted(PARITY_SHAPES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multi_stage_losses_match_the_reference(case, dtype):
    (cs, hs), (ct, ht) = PARITY_SHAPES[case]
    g_s, g_t = _stages(0, cs, hs), _stages(10, ct, ht)
    g_s, g_t = [f.to(dtype) for f in g_s], [f.to(dtype) for f in g_t]
    torch.testing.assert_close(L.at_loss(g_s, g_t, 2.0), ref_at(g_s, g_t, 2.0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(L.at_loss(g_s, g_t, 3.0), ref_at(g_s, g_t, 3.0), rtol=1e-6, atol=1e-6)  # maps ≥ 0
    torch.testing.assert_close(L.nst_loss(g_s, g_t), ref_nst(g_s, g_t), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(L.sp_loss(g_s[-1:], g_t[-1:]), ref_sp(g_s[-1:], g_t[-1:]), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(L.sp_loss(g_s, g_t), ref_sp(g_s, g_t), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("n", [2, 3, 16])
def test_pkt_and_rkd_match_the_reference(squared, n):
    f_s, f_t = _feats(n, 12, seed=1), _feats(n, 20, seed=2)
    torch.testing.assert_close(L.pkt_loss(f_s, f_t), ref_pkt(f_s, f_t), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(L.rkd_loss(f_s, f_t, squared=squared), ref_rkd(f_s, f_t, squared), rtol=1e-6,
                               atol=1e-7)
    torch.testing.assert_close(L.rkd_loss(f_s, f_t, 2.0, 0.5, squared), ref_rkd(f_s, f_t, squared, wd=2.0, wa=0.5),
                               rtol=1e-6, atol=1e-7)
    # float32 inputs agree with the float32 reference too
    a, b = f_s.float(), f_t.float()
    torch.testing.assert_close(L.rkd_loss(a, b), ref_rkd(a, b), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(L.pkt_loss(a, b), ref_pkt(a, b), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("paper", [False, True])
def test_kdsvd_matches_the_reference(k, paper):
    # same channels and sizes per stage, so both layouts apply without pooling (as the reference requires)
    g_s, g_t = _stages(0, (8, 16, 32), (8, 4, 4), n=4), _stages(20, (8, 16, 32), (8, 4, 4), n=4)
    layout = "paper" if paper else "mdistiller"
    torch.testing.assert_close(L.kdsvd_loss(g_s, g_t, k, layout), ref_kdsvd(g_s, g_t, k, paper), rtol=1e-6,
                               atol=1e-8)


def test_fitnet_and_vid_match_the_reference():
    hint, f_t = _feats(4, 8, 5, 5, seed=3), _feats(4, 8, 5, 5, seed=4, relu=True)
    torch.testing.assert_close(L.fitnet_loss(hint, f_t), F.mse_loss(hint, f_t), rtol=1e-6, atol=1e-8)
    log_scale = _feats(8, seed=5) * 3
    torch.testing.assert_close(L.vid_loss(hint, f_t, log_scale), ref_vid(hint, f_t, log_scale), rtol=1e-6,
                               atol=1e-8)
    torch.testing.assert_close(L.vid_loss(hint, f_t, log_scale, eps=0.1), ref_vid(hint, f_t, log_scale, 0.1))


def test_pooling_is_mdistillers_on_square_maps_and_per_axis_otherwise():
    a, b = _feats(2, 3, 8, 8, seed=1), _feats(2, 5, 4, 4, seed=2)
    for got, want in zip(L.pool_to_match(a, b), ref_pool(a, b)):
        torch.testing.assert_close(got, want)
    for got, want in zip(L.pool_to_match(b, a), ref_pool(b, a)):
        torch.testing.assert_close(got, want)
    # non-square maps: each axis pooled to the smaller size; 1-D maps by adaptive_avg_pool1d
    s, t = L.pool_to_match(_feats(2, 3, 8, 6), _feats(2, 3, 4, 12))
    assert s.shape[2:] == t.shape[2:] == (4, 6)
    s, t = L.pool_to_match(_feats(2, 3, 20), _feats(2, 4, 10))
    assert s.shape == (2, 3, 10) and t.shape == (2, 4, 10)
    torch.testing.assert_close(s, F.avg_pool1d(_feats(2, 3, 20), 2))


# ---------------------------------------------------------------------------------------------------------------------
# identities

def test_every_loss_is_zero_against_itself():
    g = _stages(0, (4, 8), (8, 4), n=5)
    f = _feats(5, 7, seed=3)
    assert float(L.at_loss(g, g)) == pytest.approx(0, abs=1e-12)
    assert float(L.nst_loss(g, g)) == pytest.approx(0, abs=1e-12)
    assert float(L.sp_loss(g, g)) == pytest.approx(0, abs=1e-12)
    assert float(L.pkt_loss(f, f)) == pytest.approx(0, abs=1e-12)
    assert float(L.rkd_loss(f, f)) == pytest.approx(0, abs=1e-12)
    assert float(L.fitnet_loss(g[0], g[0])) == 0
    assert float(L.kdsvd_loss(g, g)) == pytest.approx(0, abs=1e-12)


def test_nst_is_an_mmd_nonnegative_and_blind_to_channel_order_and_scale():
    g_s, g_t = _stages(0, (6,), (4,), n=3, relu=False), _stages(5, (9,), (4,), n=3, relu=False)
    value = L.nst_loss(g_s, g_t)
    assert float(value) > 0
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    scale = torch.linspace(-3, 3, 6, dtype=torch.float64).add(0.1).view(1, 6, 1, 1)  # any nonzero per-channel scale
    torch.testing.assert_close(L.nst_loss([g_s[0][:, perm] * scale], g_t), value)


def test_at_is_its_attention_maps_and_blind_to_feature_scale_and_channels():
    f_s, f_t = _feats(3, 4, 5, 5, seed=1), _feats(3, 7, 5, 5, seed=2)
    q = L.attention_map(f_s)
    torch.testing.assert_close(q.norm(dim=1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(q, F.normalize(f_s.pow(2).sum(1).flatten(1)))  # sum or mean over channels: one map
    value = L.at_loss(f_s, f_t)
    torch.testing.assert_close(L.at_loss(f_s * 37.0, f_t * 1e-3), value)
    torch.testing.assert_close(L.at_loss(-f_s, f_t), value)  # |f|^p
    torch.testing.assert_close(L.at_loss(f_s[:, torch.tensor([3, 1, 0, 2])], f_t), value)
    # a mean over samples: the batch repeated gives the same value
    torch.testing.assert_close(L.at_loss(f_s.repeat(2, 1, 1, 1), f_t.repeat(2, 1, 1, 1)), value)


def test_rkd_is_blind_to_rotation_translation_and_scale_of_either_feature_space():
    f_s, f_t = _feats(7, 5, seed=1), _feats(7, 9, seed=2)
    value = L.rkd_loss(f_s, f_t)
    moved = 3.0 * f_s @ _orthogonal(5, seed=3) + _feats(5, seed=4)
    torch.testing.assert_close(L.rkd_loss(moved, f_t), value)
    torch.testing.assert_close(L.rkd_loss(f_s, 0.2 * f_t @ _orthogonal(9, seed=5) - 4.0), value)
    # each potential alone: pure distance and pure angle terms
    d = L.rkd_loss(f_s, f_t, 1.0, 0.0)
    a = L.rkd_loss(f_s, f_t, 0.0, 1.0)
    torch.testing.assert_close(value, 25 * d + 50 * a)


def test_pkt_and_sp_are_blind_to_rotation_and_scale_and_to_the_batch_order():
    f_s, f_t = _feats(6, 5, seed=1), _feats(6, 8, seed=2)
    rot = 4.0 * f_s @ _orthogonal(5, seed=3)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    for loss in (L.pkt_loss, L.sp_loss):
        value = loss(f_s, f_t)
        torch.testing.assert_close(loss(rot, f_t), value, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(loss(f_s[perm], f_t[perm]), value)
    # SP's Gram matrix is not translation invariant (a shift changes every inner product)
    assert not torch.allclose(L.sp_loss(f_s + 1.0, f_t), L.sp_loss(f_s, f_t))


def test_vid_is_minimised_over_the_variance_at_the_channel_mean_squared_error():
    mu, f_t = _feats(5, 3, 4, 4, seed=1), _feats(5, 3, 4, 4, seed=2)
    mse = (mu - f_t).pow(2).mean(dim=(0, 2, 3))
    eps = 1e-5
    alpha = torch.log(torch.expm1(mse - eps)).requires_grad_(True)  # softplus(α) + ε = per-channel MSE
    L.vid_loss(mu, f_t, alpha, eps).backward()
    torch.testing.assert_close(alpha.grad, torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    # and at μ = t the loss is ½·mean_c log σ²_c
    alpha = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    var = F.softplus(alpha) + eps
    torch.testing.assert_close(L.vid_loss(f_t, f_t, alpha, eps), 0.5 * torch.log(var).mean())


def test_kdsvd_with_k1_scales_by_one_and_is_blind_to_the_students_sign_and_scale():
    g_s, g_t = _stages(0, (4, 8, 8), (8, 4, 4), n=3), _stages(7, (4, 8, 8), (8, 4, 4), n=3)
    value = L.kdsvd_loss(g_s, g_t)
    # singular vectors are unit vectors up to sign, and the best-aligned one is sign-corrected
    torch.testing.assert_close(L.kdsvd_loss([-5.0 * f for f in g_s], g_t), value, rtol=1e-6, atol=1e-9)
    assert float(value) > 0


# ---------------------------------------------------------------------------------------------------------------------
# gradients (float64)

GRADCHECK = {
    "at": lambda s, t: L.at_loss([s], [t]),
    "at_p3": lambda s, t: L.at_loss([s], [t], p=3.0),
    "nst": lambda s, t: L.nst_loss([s], [t]),
    "sp": lambda s, t: L.sp_loss([s], [t]),
    "pkt": lambda s, t: L.pkt_loss(s, t),
    "rkd": lambda s, t: L.rkd_loss(s, t),
    "rkd_squared": lambda s, t: L.rkd_loss(s, t, squared=True),
    "fitnet": lambda s, t: L.fitnet_loss(s, t[:, : s.shape[1]]),
    "kdsvd": lambda s, t: L.kdsvd_loss([s, s[:, :, :2, :2] * 2], [t[:, : s.shape[1]], t[:, : s.shape[1], :2, :2]]),
    "kdsvd_paper": lambda s, t: L.kdsvd_loss([s, s[:, :, :2, :2] * 2], [t[:, : s.shape[1]], t[:, : s.shape[1], :2, :2]],
                                             layout="paper"),
}


@pytest.mark.parametrize("name", sorted(GRADCHECK))
def test_gradcheck_float64(name):
    s = _feats(4, 3, 4, 4, seed=1).requires_grad_(True)
    t = _feats(4, 5, 4, 4, seed=2, relu=True)
    assert torch.autograd.gradcheck(lambda x: GRADCHECK[name](x, t), (s,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradcheck_vid_in_mean_and_variance():
    mu = _feats(3, 4, 3, 3, seed=1).requires_grad_(True)
    alpha = _feats(4, seed=2).requires_grad_(True)
    t = _feats(3, 4, 3, 3, seed=3)
    assert torch.autograd.gradcheck(lambda m, a: L.vid_loss(m, t, a), (mu, alpha))


@pytest.mark.parametrize("name", sorted(GRADCHECK))
def test_the_teacher_gets_no_gradient(name):
    s = _feats(4, 3, 4, 4, seed=1).requires_grad_(True)
    t = _feats(4, 5, 4, 4, seed=2, relu=True).requires_grad_(True)
    GRADCHECK[name](s, t.detach()).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()
    with pytest.raises(ValueError, match="looks swapped"):
        GRADCHECK[name](s.detach(), t)


# ---------------------------------------------------------------------------------------------------------------------
# edge cases

def test_batches_of_one_and_two():
    one, two = _feats(1, 6, seed=1), _feats(2, 6, seed=2)
    assert float(L.pkt_loss(one, _feats(1, 3))) == 0  # a single sample has one certain neighbour: itself
    assert float(L.sp_loss(one, _feats(1, 3))) == 0  # a 1×1 normalised Gram matrix is 1 for both
    with pytest.raises(ValueError, match="batch of at least 2"):
        L.rkd_loss(one, one)
    value = L.rkd_loss(two, _feats(2, 4, seed=3))
    assert torch.isfinite(value)
    # two samples: one distance each, normalised to 1, so only the angles can differ (and they are 0 or ±1 too)
    torch.testing.assert_close(L.rkd_loss(two, _feats(2, 4, seed=3), 1.0, 0.0), torch.zeros((), dtype=torch.float64))
    for loss in (L.at_loss, L.nst_loss):
        assert torch.isfinite(loss(_feats(1, 3, 4, 4), _feats(1, 5, 2, 2)))


def test_zero_features_give_finite_values_and_gradients():
    z4, z2 = torch.zeros(3, 4, 4, 4, dtype=torch.float64), torch.zeros(3, 6, dtype=torch.float64)
    f4, f2 = _feats(3, 5, 4, 4, seed=1), _feats(3, 6, seed=2)
    for loss, (zero, other) in ((L.at_loss, (z4, f4)), (L.nst_loss, (z4, f4)), (L.sp_loss, (z4, f4)),
                                (L.pkt_loss, (z2, f2)), (L.rkd_loss, (z2, f2))):
        for s, t in ((zero, other), (other, zero), (zero, zero)):
            s = s.clone().requires_grad_(True)
            value = loss(s, t)
            value.backward()
            assert torch.isfinite(value) and torch.isfinite(s.grad).all(), loss.__name__
    assert float(L.at_loss(z4, z4)) == float(L.nst_loss(z4, z4)) == float(L.sp_loss(z4, z4)) == 0
    # KDSVD on zero maps: a finite value (the reference zeroes non-finite entries) and a finite gradient (the
    # derivative of the singular vectors is undefined there; that term is taken as 0, see _TopSingular)
    s = z4.clone().requires_grad_(True)
    value = L.kdsvd_loss([s, s], [f4[:, :4], f4[:, :4]])
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(s.grad).all()


def test_one_dimensional_maps_are_supported():
    s, t = [_feats(4, 3, 20, seed=1), _feats(4, 3, 10, seed=2)], [_feats(4, 5, 20, seed=3), _feats(4, 5, 10, seed=4)]
    for value in (L.at_loss(s, t), L.nst_loss(s, t), L.sp_loss(s, t), L.kdsvd_loss(s, t)):
        assert torch.isfinite(value) and float(value) > 0
    # a 1-D map [N, C, L] is the 2-D map [N, C, 1, L] for AT and NST
    torch.testing.assert_close(L.at_loss(s, t), L.at_loss([f.unsqueeze(2) for f in s], [f.unsqueeze(2) for f in t]))


# ---------------------------------------------------------------------------------------------------------------------
# input errors

def test_bad_inputs_are_named():
    f = _feats(4, 3, 4, 4)
    with pytest.raises(ValueError, match="equally long sequences in stage order; got 2 and 1"):
        L.at_loss([f, f], [f])
    with pytest.raises(ValueError, match="same batch size"):
        L.at_loss(f, f[:3])
    with pytest.raises(ValueError, match=r"student maps must be \[N, C, L\] or \[N, C, H, W\]"):
        L.nst_loss(f.flatten(1), f)
    with pytest.raises(ValueError, match="same shape"):
        L.fitnet_loss(f, f[:, :2])
    with pytest.raises(ValueError, match="log_scale must be a tensor of shape \\[C\\] = \\[3\\]"):
        L.vid_loss(f, f, torch.zeros(4))
    with pytest.raises(ValueError, match="at least 2 stages"):
        L.kdsvd_loss([f], [f])
    with pytest.raises(ValueError, match="same channel count"):
        L.kdsvd_loss([f, f], [f[:, :2], f[:, :2]], layout="paper")
    with pytest.raises(ValueError, match="layout must be one of"):
        L.kdsvd_loss([f, f], [f, f], layout="width")
    with pytest.raises(ValueError, match="p must be > 0"):
        L.at_loss(f, f, p=0.0)
    with pytest.raises(ValueError, match="teacher features contains NaN"):
        L.pkt_loss(f.flatten(1), torch.full((4, 2), math.nan))
    with pytest.raises(ValueError, match="floating dtype"):
        L.sp_loss(f, torch.ones(4, 3, dtype=torch.long))


def test_kdsvd_gradient_is_the_svds_where_defined_and_finite_where_torchs_is_not():
    from kdlab.losses.kdsvd import _TopSingular

    # wide matrices (m < d: a null space) and tall ones, every singular value distinct: the exact derivative
    for shape in ((3, 4, 9), (3, 9, 4)):
        x = _feats(*shape, seed=11).requires_grad_(True)
        for n in (1, 3):
            assert torch.autograd.gradcheck(lambda a: _TopSingular.apply(a, n), (x,))
    s = [_feats(3, 3, 8, seed=12).requires_grad_(True), _feats(3, 3, 4, seed=13)]  # 1-D maps: [3 × 8], [3 × 4]
    t = [_feats(3, 5, 8, seed=14), _feats(3, 5, 4, seed=15)]
    assert torch.autograd.gradcheck(lambda a: L.kdsvd_loss([a, s[1]], t), (s[0],))
    # a map with three zero columns: its dropped singular values are 0 three times; only the top one is read
    x = torch.cat([_feats(2, 6, 3, seed=16), torch.zeros(2, 6, 3, dtype=torch.float64)], 2).requires_grad_(True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    vh[:, 0].sum().backward()
    assert not torch.isfinite(x.grad).all()  # torch's SVD backward: NaN
    x.grad = None
    _TopSingular.apply(x, 1)[1].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
