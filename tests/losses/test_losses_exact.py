"""Exact values: every loss against an independent naive float64 computation of its formula, and the identities
of docs/reference/methods.md (KL decompositions, power transform, log cosh form, TTM gradient)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import kdlab.losses as L

SCALES = (0.1, 1.0, 10.0, 100.0)


def naive_kl(p, q):
    """Σ p (log p − log q) from probabilities (float64, only for moderate logits)."""
    return (p * (torch.log(p) - torch.log(q))).sum(1)


# ---------------------------------------------------------------------------------------------------------------------
# KD


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_equals_naive_float64(make_logits, scale, temperature):
    z, v = make_logits(8, 10, scale)
    p, q = F.softmax(v / temperature, 1), F.softmax(z / temperature, 1)
    expected = temperature**2 * naive_kl(p, q).sum() / 8
    torch.testing.assert_close(L.kd_loss(z, v, temperature), expected, rtol=1e-10, atol=1e-12)
    # float32 computation agrees with the float64 truth
    got32 = L.kd_loss(z.float(), v.float(), temperature)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), expected, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# DKD


def reference_dkd(z, v, y, alpha, beta, t):
    """The DKD reference computation, written out: −1000 masking and logs of summed probabilities."""
    gt = F.one_hot(y, z.shape[1]).double()
    ps, pt = F.softmax(z / t, 1), F.softmax(v / t, 1)
    bs = torch.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
    bt = torch.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
    tckd = (torch.special.xlogy(bt, bt) - bt * torch.log(bs)).sum(1)
    log_qs = F.log_softmax(z / t - 1000.0 * gt, 1)
    qt = F.softmax(v / t - 1000.0 * gt, 1)
    nckd = (torch.special.xlogy(qt, qt) - qt * log_qs).sum(1)
    return t * t * (alpha * tckd + beta * nckd).mean(), tckd, nckd


@pytest.mark.parametrize("scale", (0.1, 1.0, 10.0))
@pytest.mark.parametrize("alpha,beta,t", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0), (0.0, 1.0, 2.0)])
def test_dkd_equals_reference_computation(make_logits, make_target, scale, alpha, beta, t):
    z, v = make_logits(8, 10, scale)
    y = make_target(8, 10)
    expected, tckd, nckd = reference_dkd(z, v, y, alpha, beta, t)
    torch.testing.assert_close(L.dkd_loss(z, v, y, alpha, beta, t), expected, rtol=1e-9, atol=1e-12)
    got_t, got_n = L.dkd_parts(z, v, y, t)
    torch.testing.assert_close(got_t, tckd, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got_n, nckd, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("scale", SCALES)
def test_dkd_decomposition_identity(make_logits, make_target, scale):
    # KL(p^t‖p^s) = TCKD + (1 − p^t_y)·NCKD exactly (so DKD with α = β = 1 is NOT KD unless p^t_y = 0)
    t = 4.0
    z, v = make_logits(8, 10, scale, seed=3)
    y = make_target(8, 10)
    tckd, nckd = L.dkd_parts(z, v, y, t)
    kl = L.kd_loss(z, v, t, reduction="none") / t**2
    pt_y = F.softmax(v / t, 1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(kl, tckd + (1 - pt_y) * nckd, rtol=1e-9, atol=1e-12)
    # hence DKD(α=β=1) − KD = T²·mean(p^t_y·NCKD): it differs from KD by the teacher's target confidence
    dkd11 = L.dkd_loss(z, v, y, alpha=1.0, beta=1.0, temperature=t)
    torch.testing.assert_close(dkd11 - L.kd_loss(z, v, t), t**2 * (pt_y * nckd).mean(), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("scale", SCALES)
def test_dkd_float32_matches_float64(make_logits, make_target, scale):
    z, v = make_logits(16, 10, scale, seed=4)
    y = make_target(16, 10)
    exact = L.dkd_loss(z, v, y)
    got = L.dkd_loss(z.float(), v.float(), y)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), exact, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# CAKD


def random_partition(n, c, seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, c, generator=g) < 0.4
    mask[0] = True  # W empty
    mask[1] = False  # S empty
    mask[2] = False
    mask[2, 3] = True  # single strong class
    return mask


@pytest.mark.parametrize("scale", SCALES)
def test_kl_decomposition_identity_random_partitions(make_logits, scale):
    t = 2.0
    z, v = make_logits(10, 9, scale, seed=5)
    mask = random_partition(10, 9, seed=6)
    bcd, scd, wcd = L.kl_decomposition(z, v, mask, t)
    assert bcd.shape == scd.shape == wcd.shape == (10,)
    pt = F.softmax(v / t, 1)
    p_s = (pt * mask).sum(1)
    kl = L.kd_loss(z, v, t, reduction="none") / t**2
    torch.testing.assert_close(kl, bcd + p_s * scd + (1 - p_s) * wcd, rtol=1e-9, atol=1e-10)
    # empty set ⇒ that term is 0, and BCD is 0 (binary vectors are both [1, 0])
    assert wcd[0] == 0 and scd[1] == 0 and scd[2] == 0
    assert bcd[0] == 0 and bcd[1] == 0


@pytest.mark.parametrize("scale", (0.1, 1.0, 10.0))
def test_kl_decomposition_terms_equal_naive(make_logits, scale):
    t = 4.0
    z, v = make_logits(10, 9, scale, seed=7)
    mask = random_partition(10, 9, seed=8)[3:]  # naive version needs non-empty S and W
    z, v = z[3:], v[3:]
    mask[:, 0] = True
    mask[:, 1] = False
    ps, pt = F.softmax(z / t, 1), F.softmax(v / t, 1)

    def parts(p, m):
        mass = (p * m).sum(1, keepdim=True)
        return mass.squeeze(1), torch.where(m, p / mass, torch.zeros_like(p))

    ms_s, hs_s = parts(ps, mask)
    mt_s, ht_s = parts(pt, mask)
    ms_w, hs_w = parts(ps, ~mask)
    mt_w, ht_w = parts(pt, ~mask)
    bcd = mt_s * torch.log(mt_s / ms_s) + mt_w * torch.log(mt_w / ms_w)

    def restricted(ht, hs, m):
        return torch.where(m, ht * torch.log(ht / hs), torch.zeros_like(ht)).sum(1)

    got = L.kl_decomposition(z, v, mask, t)
    torch.testing.assert_close(got[0], bcd, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got[1], restricted(ht_s, hs_s, mask), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got[2], restricted(ht_w, hs_w, ~mask), rtol=1e-9, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 5),
    c=st.integers(2, 8),
    scale=st.sampled_from(SCALES),
    seed=st.integers(0, 2**31 - 1),
    density=st.floats(0.0, 1.0),
)
def test_kl_decomposition_identity_property(n, c, scale, seed, density):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    v = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    mask = torch.rand(n, c, generator=g) < density
    bcd, scd, wcd = L.kl_decomposition(z, v, mask, 1.0)
    p_s = (F.softmax(v, 1) * mask).sum(1)
    kl = L.kd_loss(z, v, 1.0, reduction="none")
    torch.testing.assert_close(kl, bcd + p_s * scd + (1 - p_s) * wcd, rtol=1e-8, atol=1e-9)
    assert (bcd >= -1e-12).all() and (scd >= -1e-12).all() and (wcd >= -1e-12).all()


@pytest.mark.parametrize("scale", SCALES)
def test_cakd_with_target_set_equals_dkd(make_logits, make_target, scale):
    z, v = make_logits(8, 10, scale, seed=9)
    y = make_target(8, 10)
    mask = L.strong_set("target", v, target=y)
    got = L.cakd_loss(z, v, mask, alpha=3.0, beta=6.0, gamma=0.7, temperature=2.0)
    torch.testing.assert_close(got, L.dkd_loss(z, v, y, alpha=0.7, beta=6.0, temperature=2.0), rtol=1e-10, atol=0)
    # and SCD of a singleton set is exactly 0, so α has no effect
    torch.testing.assert_close(got, L.cakd_loss(z, v, mask, alpha=0.0, beta=6.0, gamma=0.7, temperature=2.0))


def test_cakd_is_weighted_sum_of_decomposition(make_logits):
    z, v = make_logits(8, 10, 3.0, seed=10)
    mask = L.strong_set_topk(v, 3)
    bcd, scd, wcd = L.kl_decomposition(z, v, mask, 4.0)
    expected = 16.0 * (0.5 * bcd + 2.0 * scd + 3.0 * wcd).mean()
    torch.testing.assert_close(L.cakd_loss(z, v, mask, alpha=2.0, beta=3.0, gamma=0.5), expected)
    assert scd.abs().sum() > 0, "top-3 set must make SCD non-trivial"


# ---------------------------------------------------------------------------------------------------------------------
# strong sets


def test_strong_set_topk_marks_the_k_largest(make_logits):
    _, v = make_logits(20, 12, 1.0, seed=11)
    mask = L.strong_set_topk(v, 4)
    assert mask.dtype == torch.bool and mask.shape == v.shape
    assert (mask.sum(1) == 4).all()
    # every strong logit is >= every weak logit of its row
    min_strong = torch.where(mask, v, torch.full_like(v, math.inf)).min(1).values
    max_weak = torch.where(~mask, v, torch.full_like(v, -math.inf)).max(1).values
    assert (min_strong >= max_weak).all()


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_strong_set_mass_is_minimal_set_reaching_threshold(make_logits, threshold, temperature):
    _, v = make_logits(30, 10, 2.0, seed=12)
    mask = L.strong_set_mass(v, threshold, temperature)
    p = F.softmax(v / temperature, 1)
    mass = (p * mask).sum(1)
    assert (mass >= threshold - 1e-12).all()
    # removing the least likely strong class drops below the threshold (minimality), and S is a top set
    smallest_strong = torch.where(mask, p, torch.full_like(p, math.inf)).min(1).values
    assert (mass - smallest_strong < threshold).all()
    largest_weak = torch.where(~mask, p, torch.full_like(p, -math.inf)).max(1).values
    assert (smallest_strong >= largest_weak).all()


def test_strong_set_mass_threshold_one_can_empty_w(make_logits):
    _, v = make_logits(4, 5, 0.1, seed=13)
    mask = L.strong_set_mass(v, 1.0)
    assert mask.any(1).all()  # S never empty
    z, _ = make_logits(4, 5, 0.1, seed=14)
    out = L.cakd_loss(z, v, mask)
    assert torch.isfinite(out)


def test_strong_set_target_and_dispatcher(make_logits, make_target):
    _, v = make_logits(6, 7, 1.0)
    y = make_target(6, 7)
    target_mask = L.strong_set_target(y, 7)
    assert torch.equal(target_mask, F.one_hot(y, 7).bool())
    assert torch.equal(L.strong_set("target", v, target=y), target_mask)
    assert torch.equal(L.strong_set("topk", v, k=2), L.strong_set_topk(v, 2))
    assert torch.equal(L.strong_set("mass", v, threshold=0.5), L.strong_set_mass(v, 0.5))
    assert torch.equal(L.strong_set("topk", v), L.strong_set_topk(v, 5))


# ---------------------------------------------------------------------------------------------------------------------
# TTM / WTTM


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("gamma", [0.1, 0.4, 1.0])
def test_power_transform_equals_normalised_power(make_logits, scale, gamma):
    _, v = make_logits(6, 8, scale, seed=15)
    p = F.softmax(v, 1)
    log_p_hat, log_u = L.power_transform(v, gamma)
    power = p**gamma
    torch.testing.assert_close(log_p_hat.exp(), power / power.sum(1, keepdim=True), rtol=1e-10, atol=1e-300)
    torch.testing.assert_close(log_p_hat.exp(), F.softmax(gamma * v, 1), rtol=1e-12, atol=1e-300)
    torch.testing.assert_close(log_u, torch.log(power.sum(1)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scale", SCALES)
def test_ttm_and_wttm_equal_naive(make_logits, scale):
    gamma = 0.2
    z, v = make_logits(6, 8, scale, seed=16)
    p = F.softmax(v, 1)
    p_hat = p**gamma / (p**gamma).sum(1, keepdim=True)
    kl = naive_kl(p_hat, F.softmax(z, 1))
    u = (p**gamma).sum(1)
    torch.testing.assert_close(L.ttm_loss(z, v, gamma), kl.mean(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(L.wttm_loss(z, v, gamma), (u * kl).mean(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(L.ttm_loss(z.float(), v.float(), gamma).double(), kl.mean(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("scale", (1.0, 100.0))
def test_ttm_gradient_is_q_minus_p_hat_over_n(make_logits, scale):
    gamma = 0.3
    z, v = make_logits(5, 6, scale, seed=17)
    z.requires_grad_(True)
    L.ttm_loss(z, v, gamma).backward()
    expected = (F.softmax(z.detach(), 1) - F.softmax(gamma * v, 1)) / 5
    torch.testing.assert_close(z.grad, expected, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------------------------------------------------------
# binary KL (DHKD)


def naive_binary_kl(a, b):
    return a * torch.log(a / b) + (1 - a) * torch.log((1 - a) / (1 - b))


@pytest.mark.parametrize("scale", SCALES)
def test_binary_kl_equals_naive_with_clamps(make_logits, scale):
    tau = 2.0
    z, v = make_logits(6, 8, scale, seed=18)
    s = torch.sigmoid(z / tau).clamp(1e-8, 1 - 1e-8)
    t = torch.sigmoid(v / tau).clamp(1e-8, 1 - 1e-8)
    expected = tau**2 * naive_binary_kl(t, s).sum() / 6
    torch.testing.assert_close(L.binary_kl_loss(z, v, tau), expected, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(L.binary_kl_loss(z.float(), v.float(), tau).double(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scale", SCALES)
def test_binary_kl_norm_equals_naive_with_clamps(make_logits, scale):
    tau = 2.0
    z, v = make_logits(6, 8, scale, seed=19)
    d = torch.sigmoid((z - v) / tau).clamp(1e-8, 1 - 1e-8)
    expected = tau**2 * naive_binary_kl(torch.full_like(d, 0.5), d).sum() / 6
    torch.testing.assert_close(L.binary_kl_norm_loss(z, v, tau), expected, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("scale", (0.1, 1.0, 5.0))
@pytest.mark.parametrize("tau", (1.0, 2.0, 4.0))
def test_binary_kl_norm_is_log_cosh_in_unclamped_region(make_logits, scale, tau):
    z, v = make_logits(6, 8, scale, seed=20)
    assert ((z - v).abs() / tau < 18).all()  # σ stays inside [1e-8, 1 − 1e-8]
    expected = tau**2 * torch.log(torch.cosh((z - v) / (2 * tau))).sum() / 6
    torch.testing.assert_close(L.binary_kl_norm_loss(z, v, tau), expected, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# correlation losses


def np_pearson_rows(a, b, eps=1e-8):
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + eps)


def np_softmax(u):
    e = np.exp(u - u.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("scale", SCALES)
def test_dist_equals_numpy(make_logits, scale):
    tau, beta, gamma = 4.0, 2.0, 0.5
    z, v = make_logits(9, 7, scale, seed=21)
    ys, yt = np_softmax(z.numpy() / tau), np_softmax(v.numpy() / tau)
    inter = 1 - np_pearson_rows(ys, yt).mean()
    intra = 1 - np_pearson_rows(ys.T, yt.T).mean()
    expected = tau**2 * (beta * inter + gamma * intra)
    got = L.dist_loss(z, v, beta=beta, gamma=gamma, temperature=tau)
    assert got.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # without eps the Pearson terms match numpy's corrcoef (a check of the centring/normalisation)
    if scale >= 1:
        rho = np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(ys, yt)])
        torch.testing.assert_close(
            L.pearson_rows(torch.from_numpy(ys), torch.from_numpy(yt)), torch.from_numpy(rho), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("scale", SCALES)
def test_r2kd_value_equals_numpy(make_logits, scale):
    t = 4.0
    z, v = make_logits(9, 7, scale, seed=22)
    ps, pt = np_softmax(z.numpy() / t), np_softmax(v.numpy() / t)

    def dist(a, b):
        return 1 - np.abs((a * b).sum(1)) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-8)

    expected = t**2 * (dist(ps, pt).mean() + dist(ps.T, pt.T).mean())
    assert L.r2kd_value_loss(z, v, t).item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_abs_cosine_uses_absolute_inner_product():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[-1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(L.abs_cosine_distance_rows(a, b), torch.tensor([1e-8, 1e-8], dtype=torch.float64))
    torch.testing.assert_close(
        L.cosine_similarity_rows(a, b), torch.tensor([-1 / (1 + 1e-8), 2 / (2 + 1e-8)], dtype=torch.float64)
    )
    torch.testing.assert_close(L.pearson_distance_rows(a, b), 1 - L.pearson_rows(a, b))


def np_ranks(u):
    return np.argsort(np.argsort(u, axis=1), axis=1).astype(np.float64) + 1


@pytest.mark.parametrize("scale", SCALES)
def test_spearman_hard_equals_numpy(make_logits, scale):
    z, v = make_logits(9, 12, scale, seed=23)
    rho = np_pearson_rows(np_ranks(z.numpy()), np_ranks(v.numpy()))
    got = L.spearman_loss(z, v, reduction="none")
    torch.testing.assert_close(got, torch.from_numpy(1 - rho), rtol=1e-10, atol=1e-12)
    # hard ranks of the logits are those of the probabilities
    ps = F.softmax(z / 4.0, 1)
    assert torch.equal(L.hard_rank(ps), L.hard_rank(z))


def test_hard_rank_averages_ties():
    u = torch.tensor([[1.0, 2.0, 2.0, 0.0], [5.0, 5.0, 5.0, 5.0], [3.0, 1.0, 2.0, 1.0]])
    expected = torch.tensor([[2.0, 3.5, 3.5, 1.0], [2.5, 2.5, 2.5, 2.5], [4.0, 1.5, 3.0, 1.5]])
    assert torch.equal(L.hard_rank(u), expected)


def test_hard_rank_equals_pairwise_count_with_many_ties():
    u = torch.randint(0, 4, (50, 9), generator=torch.Generator().manual_seed(27)).double()
    less = (u[:, None, :] < u[:, :, None]).sum(2)
    equal = (u[:, None, :] == u[:, :, None]).sum(2)  # includes the element itself
    assert torch.equal(L.hard_rank(u), less + (equal + 1) / 2)


def naive_soft_rank(u, kappa):
    diff = (u[:, :, None] - u[:, None, :]) / kappa
    off_diag = ~torch.eye(u.shape[1], dtype=torch.bool)
    return 1 + (torch.sigmoid(diff) * off_diag).sum(2)


@pytest.mark.parametrize("chunk", [1, 49, 1 << 24, None])
def test_soft_rank_equals_naive_and_chunking_is_exact(make_logits, chunk):
    z, _ = make_logits(11, 7, 1.0, seed=24)
    u = F.softmax(z, 1)
    ref_in = u.clone().requires_grad_(True)
    ref = naive_soft_rank(ref_in, 0.05)
    got_in = u.clone().requires_grad_(True)
    got = L.soft_rank(got_in, 0.05, max_chunk_elements=chunk)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn(11, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (ref * w).sum().backward()
    (got * w).sum().backward()
    torch.testing.assert_close(got_in.grad, ref_in.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scale", (1.0, 10.0))
@pytest.mark.parametrize("standardize", [False, True])
def test_cmkd_equals_naive_formula(make_logits, scale, standardize):
    tau, kappa = 4.0, 0.01
    z, v = make_logits(9, 8, scale, seed=25)
    zz, vv = z, v
    if standardize:
        zz = (z - z.mean(1, keepdim=True)) / (z.std(1, keepdim=True) + 1e-7)
        vv = (v - v.mean(1, keepdim=True)) / (v.std(1, keepdim=True) + 1e-7)
    ys, yt = F.softmax(zz / tau, 1), F.softmax(vv / tau, 1)
    w = -(yt * torch.log(yt)).sum(1) / math.log(8)
    d_p = 1 - torch.from_numpy(np_pearson_rows(ys.numpy(), yt.numpy()))
    d_s = 1 - torch.from_numpy(np_pearson_rows(naive_soft_rank(ys, kappa).numpy(), np_ranks(yt.numpy())))
    corr = ((1 - w) * d_p + w * d_s).mean()
    intra = 1 - np_pearson_rows(ys.numpy().T, yt.numpy().T).mean()
    expected = 2 * tau**2 * (corr + intra)
    got = L.cmkd_loss(z, v, tau, kappa=kappa, logit_standardization=standardize)
    assert got.item() == pytest.approx(expected.item(), rel=1e-9)


# ---------------------------------------------------------------------------------------------------------------------
# logit standardisation


@pytest.mark.parametrize("scale", SCALES)
def test_logit_standardize_equals_numpy(make_logits, scale):
    z, _ = make_logits(5, 9, scale, seed=26)
    a = z.numpy()
    expected = (a - a.mean(1, keepdims=True)) / (a.std(1, ddof=1, keepdims=True) + 1e-7)
    got = L.logit_standardize(z)
    torch.testing.assert_close(got, torch.from_numpy(expected), rtol=1e-10, atol=1e-12)
    got32 = L.logit_standardize(z.half())
    assert got32.dtype == torch.float32
    # unbiased std s/(s + eps) ≈ 1, zero mean
    s = torch.from_numpy(a.std(1, ddof=1))
    torch.testing.assert_close(got.std(1, correction=1), s / (s + 1e-7), rtol=1e-10, atol=0)
    torch.testing.assert_close(got.mean(1), torch.zeros(5, dtype=torch.float64), rtol=0, atol=1e-12)
