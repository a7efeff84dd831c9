"""NKD, MLKD, CTKD and SDD: parity with the released code's computations (written out below as the facts they are,
in float64), their identities, gradients and edge cases. The generic properties (zeros, shift invariance,
reductions, dtypes, extreme logits) are in test_losses_properties.py."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kdlab.losses as L


# ---------------------------------------------------------------------------------------------------------------------
# NKD (Yang et al. ICCV 2023): the released NKDLoss


def released_nkd(z, v, y, temp, gamma):
    """NKDLoss.forward of yzd-v/cls_KD: target column removed by boolean indexing, cross-entropies."""
    n, c = z.shape
    label = y.view(n, 1)
    s_t = F.log_softmax(z, 1).gather(1, label)
    t_t = F.softmax(v, 1).gather(1, label)
    loss_t = -(t_t * s_t).mean()
    mask = torch.ones_like(z).scatter_(1, label, 0).bool()
    s_non = F.log_softmax(z[mask].reshape(n, -1) / temp, 1)
    t_non = F.softmax(v[mask].reshape(n, -1) / temp, 1)
    return loss_t - gamma * temp**2 * (t_non * s_non).sum(1).mean()


@pytest.mark.parametrize("scale", (0.1, 1.0, 10.0))
@pytest.mark.parametrize("temp, gamma", [(1.0, 1.5), (3.0, 3.5), (4.0, 0.0)])
def test_nkd_equals_the_released_computation(make_logits, make_target, scale, temp, gamma):
    z, v = make_logits(8, 10, scale)
    y = make_target(8, 10)
    torch.testing.assert_close(L.nkd_loss(z, v, y, temp, gamma), released_nkd(z, v, y, temp, gamma), rtol=1e-10,
                               atol=1e-12)


def test_nkd_is_target_term_plus_normalised_kl_plus_a_constant(make_logits, make_target):
    """Value = −p^t_y·log p^s_y + γT²·[KL(p̂^t ‖ p̂^s) + H(p̂^t)]: the gradient is that of the KL form."""
    z, v = make_logits(6, 7, 2.0, seed=3)
    y = make_target(6, 7)
    t, gamma = 3.0, 3.5
    keep = ~F.one_hot(y, 7).bool()
    pt = F.softmax(v[keep].view(6, 6) / t, 1)
    entropy = -(pt * pt.log()).sum(1)
    z_kl = z.clone().requires_grad_(True)
    kl_form = (-(F.softmax(v, 1).gather(1, y[:, None]) * F.log_softmax(z_kl, 1).gather(1, y[:, None])).squeeze(1)
               + gamma * t * t * L.kd_loss(z_kl[keep].view(6, 6), v[keep].view(6, 6), t, reduction="none") / t**2)
    zz = z.clone().requires_grad_(True)
    per = L.nkd_loss(zz, v, y, t, gamma, reduction="none")
    torch.testing.assert_close(per, kl_form.detach() + gamma * t * t * entropy)
    per.sum().backward()
    kl_form.sum().backward()
    torch.testing.assert_close(zz.grad, z_kl.grad)


def test_nkd_two_classes_has_no_non_target_term(make_logits, make_target):
    z, v = make_logits(5, 2, 3.0)
    y = make_target(5, 2)
    target_only = -(F.softmax(v, 1) * F.log_softmax(z, 1)).gather(1, y[:, None]).mean()
    torch.testing.assert_close(L.nkd_loss(z, v, y, 2.0, 9.0), target_only)


def test_nkd_ignores_the_target_logit_in_its_non_target_term(make_logits, make_target):
    z, v = make_logits(6, 7)
    y = make_target(6, 7)
    bump = F.one_hot(y, 7).double() * 50.0  # moves only the target logits, far
    nt = L.nkd_loss(z + bump, v + bump, y, 3.0, 1.0) - L.nkd_loss(z + bump, v + bump, y, 3.0, 0.0)
    torch.testing.assert_close(nt, L.nkd_loss(z, v, y, 3.0, 1.0) - L.nkd_loss(z, v, y, 3.0, 0.0))


# ---------------------------------------------------------------------------------------------------------------------
# MLKD (Jin et al. CVPR 2023): KD_ours.forward_train of the released code


def released_mlkd(zw, vw, zs, vs, T):
    """(loss_kd, loss_cc, loss_bc) of KD_ours without the KD weight: scalar losses times 0/1 masks, then mean;
    the strong-view sum's T = 2 and 6 on the weak view; numpy percentile for the medians."""

    def kd(s, t, temp):
        return F.kl_div(F.log_softmax(s / temp, 1), F.softmax(t / temp, 1), reduction="none").sum(1).mean() * temp**2

    def cc(s, t, temp):
        ps, pt = F.softmax(s / temp, 1), F.softmax(t / temp, 1)
        return ((pt.t() @ pt - ps.t() @ ps) ** 2).sum() / s.shape[1]

    def bc(s, t, temp):
        ps, pt = F.softmax(s / temp, 1), F.softmax(t / temp, 1)
        return ((pt @ pt.t() - ps @ ps.t()) ** 2).sum() / s.shape[0]

    pred = F.softmax(vw, 1)
    conf = pred.max(1).values
    mask = conf <= float(np.percentile(conf.numpy(), 50))
    class_conf = pred.sum(0)
    class_mask = class_conf <= float(np.percentile(class_conf.numpy(), 50))
    temps = [T, 3.0, 5.0, 2.0, 6.0]
    kd_weak = sum((kd(zw, vw, t) * mask).mean() for t in temps)
    kd_strong = kd(zs, vs, T) + kd(zs, vs, 3.0) + kd(zs, vs, 5.0) + kd(zw, vw, 2.0) + kd(zw, vw, 6.0)
    loss_cc = sum((cc(zw, vw, t) * class_mask).mean() for t in temps)
    loss_bc = sum((bc(zw, vw, t) * mask).mean() for t in temps)
    return kd_weak + kd_strong, loss_cc, loss_bc


@pytest.mark.parametrize("n, c", [(8, 10), (7, 10), (6, 5), (1, 4)])
@pytest.mark.parametrize("T", [4.0, 1.0])
def test_mlkd_equals_the_released_computation(make_logits, n, c, T):
    zw, vw = make_logits(n, c, 2.0, seed=5)
    zs, vs = make_logits(n, c, 2.0, seed=6)
    got = L.mlkd_parts(zw, vw, zs, vs, temperatures=[T, 3.0, 5.0, 2.0, 6.0], strong_terms=3)
    for g, e in zip(got, released_mlkd(zw, vw, zs, vs, T)):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(L.mlkd_loss(zw, vw, zs, vs, [T, 3.0, 5.0, 2.0, 6.0]), sum(got))


def test_mlkd_masks_scale_by_their_fraction(make_logits):
    """With distinct confidences the median mask holds half of an even batch: the masked sums are halved."""
    zw, vw = make_logits(8, 6, 3.0, seed=7)
    inst, cls, batch = L.mlkd_parts(zw, vw, zw, vw, temperatures=[4.0], strong_terms=1)
    kd = L.kd_loss(zw, vw, 4.0)
    torch.testing.assert_close(inst, 0.5 * kd + kd)  # half of the weak KD, plus the (here identical) strong KD
    ps, pt = F.softmax(zw / 4, 1), F.softmax(vw / 4, 1)
    torch.testing.assert_close(cls, 0.5 * ((pt.t() @ pt - ps.t() @ ps) ** 2).sum() / 6)
    torch.testing.assert_close(batch, 0.5 * ((pt @ pt.t() - ps @ ps.t()) ** 2).sum() / 8)


def test_mlkd_strong_terms_choose_the_view(make_logits):
    zw, vw = make_logits(6, 5, seed=8)
    zs, vs = make_logits(6, 5, seed=9)
    temps = [4.0, 3.0, 5.0, 2.0, 6.0]
    frac = 0.5
    weak = [L.kd_loss(zw, vw, t) for t in temps]
    strong = [L.kd_loss(zs, vs, t) for t in temps]
    for k in range(6):
        inst = L.mlkd_parts(zw, vw, zs, vs, temps, strong_terms=k)[0]
        torch.testing.assert_close(inst, frac * sum(weak) + sum(strong[:k]) + sum(weak[k:]))


def test_mlkd_is_zero_when_the_student_is_the_teacher(make_logits):
    _, v = make_logits(6, 5, 10.0, seed=10)
    assert all(t.abs().item() < 1e-12 for t in L.mlkd_parts(v.clone(), v, v.clone(), v))


def test_mlkd_validation():
    z, v = torch.randn(4, 5), torch.randn(4, 5)
    with pytest.raises(ValueError, match="temperatures"):
        L.mlkd_loss(z, v, z, v, temperatures=[4.0, 0.0])
    with pytest.raises(ValueError, match="temperatures"):
        L.mlkd_loss(z, v, z, v, temperatures=[])
    with pytest.raises(ValueError, match="strong_terms"):
        L.mlkd_loss(z, v, z, v, temperatures=[4.0], strong_terms=2)
    with pytest.raises(ValueError, match="z_strong"):
        L.mlkd_loss(z, v, z[:3], v[:3])
    with pytest.raises(ValueError, match="reduction"):
        L.mlkd_loss(z, v, z, v, reduction="none")


# ---------------------------------------------------------------------------------------------------------------------
# CTKD (Li et al. AAAI 2023): gradient reversal, the cosine curriculum, the temperature map, KD/DKD at a tensor τ


def released_cosine_decay(i, loops, max_value=0.0, min_value=-1.0):
    """CosineDecay.get_value of the released train_student.py."""
    i = min(max(i, 0), loops)
    return (math.cos(i * math.pi / loops) + 1.0) * 0.5 * (max_value - min_value) + min_value


def test_curriculum_lambda_is_the_negated_released_cosine_decay():
    for loops in (1, 5, 10):
        for e in range(-1, 15):
            assert L.curriculum_lambda(e, loops) == pytest.approx(-released_cosine_decay(e, loops), abs=1e-15)
    assert L.curriculum_lambda(1, 10) == pytest.approx(0.0244717, abs=1e-7)  # the first epoch barely reverses
    assert L.curriculum_lambda(10, 10) == L.curriculum_lambda(240, 10) == 1.0
    assert L.curriculum_lambda(5, 10, lam_max=2.0, lam_min=0.5) == pytest.approx(1.25)
    with pytest.raises(ValueError, match="loops"):
        L.curriculum_lambda(1, 0)


def test_gradient_reversal_is_identity_forward_and_minus_lambda_backward():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 4, dtype=torch.float64)
    y = L.reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    y.backward(g)
    torch.testing.assert_close(x.grad, -0.3 * g)
    x.grad = None
    L.reverse_gradient(x, 0.0).backward(g)
    assert torch.equal(x.grad, torch.zeros_like(g))  # λ = 0: the module does not learn


def test_curriculum_temperature_maps_theta_and_ascends_the_loss(make_logits):
    theta = torch.ones(1, dtype=torch.float64, requires_grad=True)
    tau = L.curriculum_temperature(theta, 0.5, t_start=1.0, t_end=20.0)
    assert tau.item() == pytest.approx(1 + 20 / (1 + math.exp(-1)))  # 15.62, the released start
    tau.backward()
    sig = 1 / (1 + math.exp(-1))
    assert theta.grad.item() == pytest.approx(-0.5 * 20 * sig * (1 - sig))
    # through the reversal, θ's gradient is −λ times the loss's: a descent step on θ raises the loss
    z, v = make_logits(8, 6, 3.0, seed=11)
    theta = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    plain = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    L.ctkd_loss(z, v, L.curriculum_temperature(theta, 0.7)).backward()
    L.ctkd_loss(z, v, 1.0 + 20.0 * torch.sigmoid(plain)).backward()
    torch.testing.assert_close(theta.grad, -0.7 * plain.grad)


@pytest.mark.parametrize("tau", [1.5, 4.0, 15.6])
def test_ctkd_global_kd_equals_the_released_distill_kl(make_logits, tau):
    z, v = make_logits(8, 10, 2.0, seed=12)
    t = torch.tensor([tau], dtype=torch.float64, requires_grad=True)
    t_ref = t.detach().clone().requires_grad_(True)
    got = L.ctkd_loss(z, v, t)
    ref = (torch.nn.KLDivLoss(reduction="batchmean")(F.log_softmax(z / t_ref, 1), F.softmax(v / t_ref, 1))
           * t_ref**2).squeeze(0)  # the released DistillKL (its temperature has shape [1])
    torch.testing.assert_close(got, ref)
    got.backward()
    ref.backward()
    torch.testing.assert_close(t.grad, t_ref.grad)  # the temperature's gradient too
    torch.testing.assert_close(got, L.kd_loss(z, v, tau))


def test_ctkd_instance_kd_equals_the_released_per_sample_loop(make_logits):
    """README's instance-wise loss: Σ_i T_i²·Σ_c (p+1e-7)(log(p+1e-7) − log q) / N."""
    z, v = make_logits(6, 5, 2.0, seed=13)
    t = 1.0 + 5.0 * torch.rand(6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = 0
    for i in range(6):
        s = F.log_softmax(z[i:i + 1] / t[i], 1)
        p = F.softmax(v[i:i + 1] / t[i], 1) + 1e-7
        expected = expected + t[i] ** 2 * (p * (torch.log(p) - s)).sum()
    torch.testing.assert_close(L.ctkd_loss(z, v, t, teacher_eps=1e-7), expected / 6)


def test_ctkd_dkd_equals_the_released_dkdloss_at_a_tensor_temperature(make_logits, make_target):
    z, v = make_logits(8, 10, 2.0, seed=14)
    y = make_target(8, 10)
    t = torch.tensor([3.0], dtype=torch.float64)
    gt = F.one_hot(y, 10).double()
    ps, pt = F.softmax(z / t, 1), F.softmax(v / t, 1)
    bs = torch.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
    bt = torch.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
    tckd = F.kl_div(torch.log(bs), bt, reduction="sum") * t**2 / 8
    nckd = F.kl_div(F.log_softmax(z / t - 1000.0 * gt, 1), F.softmax(v / t - 1000.0 * gt, 1), reduction="sum") * t**2 / 8
    expected = (1.0 * tckd + 2.0 * nckd).squeeze()
    torch.testing.assert_close(L.ctkd_loss(z, v, t, target=y, base="dkd", alpha=1.0, beta=2.0), expected)
    torch.testing.assert_close(L.ctkd_loss(z, v, t, target=y, base="dkd", alpha=1.0, beta=2.0),
                               L.dkd_loss(z, v, y, 1.0, 2.0, 3.0))


def test_ctkd_gradcheck_in_logits_and_temperature(make_logits, make_target):
    z, v = make_logits(4, 6, 1.5, seed=15)
    y = make_target(4, 6)
    z.requires_grad_(True)
    for shape in ((1,), (4,)):
        t = (2.0 + torch.rand(shape, dtype=torch.float64)).requires_grad_(True)
        assert torch.autograd.gradcheck(lambda a, b: L.ctkd_loss(a, v, b), (z, t))
        assert torch.autograd.gradcheck(lambda a, b: L.ctkd_loss(a, v, b, teacher_eps=1e-7), (z, t))
        assert torch.autograd.gradcheck(lambda a, b: L.ctkd_loss(a, v, b, target=y, base="dkd"), (z, t))
    theta = torch.randn(4, dtype=torch.float64, requires_grad=True)
    # λ = −1 undoes the reversal: the analytical gradient is then the numerical one
    assert torch.autograd.gradcheck(lambda th: L.curriculum_temperature(th, -1.0), (theta,))


def test_ctkd_validation(make_logits):
    z, v = make_logits(4, 5)
    with pytest.raises(ValueError, match="temperature must be a floating torch.Tensor"):
        L.ctkd_loss(z, v, 4.0)
    with pytest.raises(ValueError, match=r"shape \[\], \[1\] or \[N\]"):
        L.ctkd_loss(z, v, torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="> 0"):
        L.ctkd_loss(z, v, torch.tensor([0.0]))
    with pytest.raises(ValueError, match="needs target"):
        L.ctkd_loss(z, v, torch.tensor([2.0]), base="dkd")
    with pytest.raises(ValueError, match="base"):
        L.ctkd_loss(z, v, torch.tensor([2.0]), base="nkd")
    with pytest.raises(ValueError, match="teacher_eps"):
        L.ctkd_loss(z, v, torch.tensor([2.0]), target=torch.arange(4), base="dkd", teacher_eps=1e-7)
    with pytest.raises(ValueError, match="t_start"):
        L.curriculum_temperature(torch.zeros(1), 1.0, t_start=-1.0)


# ---------------------------------------------------------------------------------------------------------------------
# SDD (Wei & Bai CVPR 2024): sdd_kd_loss and multi_dkd of the released code


def released_sdd(out_s_multi, out_t_multi, target, T, base, alpha=1.0, beta=8.0):
    """The released sdd_kd_loss / multi_dkd: [B, C, N] → rows region-major, the four masks built as released."""
    out_s = out_s_multi.permute(2, 0, 1).reshape(-1, out_s_multi.shape[1])
    out_t = out_t_multi.permute(2, 0, 1).reshape(-1, out_t_multi.shape[1])
    regions = out_t_multi.shape[2]
    target_r = target.repeat(regions)
    if base == "kd":
        loss = (F.kl_div(F.log_softmax(out_s / T, 1), F.softmax(out_t / T, 1), reduction="none") * T**2).sum(1)
    else:
        gt = F.one_hot(target_r, out_s.shape[1]).double()
        ps, pt = F.softmax(out_s / T, 1), F.softmax(out_t / T, 1)
        bs = torch.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
        bt = torch.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
        tckd = (F.kl_div(torch.log(bs), bt, reduction="none") * T**2 / target_r.shape[0]).sum(1)
        nckd = (F.kl_div(F.log_softmax(out_s / T - 1000.0 * gt, 1), F.softmax(out_t / T - 1000.0 * gt, 1),
                         reduction="none") * T**2 / target_r.shape[0]).sum(1)
        loss = alpha * tckd + beta * nckd
    pred = out_t.argmax(1)
    n = len(target)
    glob = pred[:n]
    g_true = (glob == target).repeat(regions)
    g_false = (glob != target).repeat(regions)
    mask_false, mask_true = pred != target_r, pred == target_r
    mask_false[g_false] = False
    mask_false[:n] = False
    gt_lw = mask_false
    mask_true[g_true] = False
    mask_true[:n] = False
    gw_lt = mask_true
    mask_false, mask_true = pred != target_r, pred == target_r
    mask_false[g_true] = False
    gw_lw = mask_false
    mask_true[g_false] = False
    gt_lt = mask_true
    index = torch.zeros_like(loss)
    index[gw_lw] = 1.0
    index[gt_lt] = 1.0
    index[gw_lt] = 2.0
    index[gt_lw] = 2.0
    assert int(gt_lt.sum() + gw_lw.sum() + gt_lw.sum() + gw_lt.sum()) == target_r.shape[0]
    total = (loss * index).sum()
    return total / target_r.shape[0] if base == "kd" else total


def _regions(n, c, r, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, r, generator=g, dtype=torch.float64) * scale,
            torch.randn(n, c, r, generator=g, dtype=torch.float64) * scale)


@pytest.mark.parametrize("base", ["kd", "dkd"])
@pytest.mark.parametrize("r", [1, 5, 21])
def test_sdd_equals_the_released_computation(base, r):
    z, v = _regions(8, 5, r, seed=r)
    y = torch.randint(0, 5, (8,), generator=torch.Generator().manual_seed(3))
    expected = released_sdd(z, v, y, 4.0, base, 1.0, 6.0)
    torch.testing.assert_close(L.sdd_loss(z, v, y, base=base, temperature=4.0, beta=6.0), expected, rtol=1e-9,
                               atol=1e-12)


def test_sdd_with_one_region_is_its_base_loss(make_logits, make_target):
    z, v = make_logits(6, 7, 2.0)
    y = make_target(6, 7)
    torch.testing.assert_close(L.sdd_loss(z[:, :, None], v[:, :, None], y, base="kd"), L.kd_loss(z, v, 4.0))
    torch.testing.assert_close(L.sdd_loss(z[:, :, None], v[:, :, None], y, base="dkd", beta=2.0),
                               L.dkd_loss(z, v, y, 1.0, 2.0, 4.0))


def test_sdd_region_weights():
    # teacher logits [N=3, C=2, R=3]: predictions per region, labels y = [0, 0, 1]
    pred = torch.tensor([[0, 1, 0], [1, 1, 0], [1, 0, 1]])  # sample i, region r
    v = F.one_hot(pred, 2).permute(0, 2, 1).double() * 5.0
    w = L.sdd_region_weights(v, torch.tensor([0, 0, 1]), complementary_weight=2.0)
    # region 0 is 1; a region whose correctness differs from the global region's is complementary (2)
    assert w.tolist() == [[1.0, 2.0, 1.0], [1.0, 1.0, 2.0], [1.0, 2.0, 1.0]]
    z = torch.randn(3, 2, 3, dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    per_row = L.sdd_loss(z, v, y, complementary_weight=1.0, reduction="none")
    expected = torch.stack([L.kd_loss(z[:, :, r], v[:, :, r], 4.0, reduction="none") for r in range(3)], 1).mean(1)
    torch.testing.assert_close(per_row, expected)  # weight 1: the plain mean over regions


def test_sdd_gradcheck_and_teacher_detached():
    z, v = _regions(4, 5, 5, seed=9, scale=1.0)
    y = torch.tensor([0, 1, 2, 3])
    z.requires_grad_(True)
    for base in ("kd", "dkd"):
        assert torch.autograd.gradcheck(lambda a: L.sdd_loss(a, v, y, base=base), (z,))
    vv = v.clone().requires_grad_(True)
    L.sdd_loss(z, vv, y).backward()
    assert vv.grad is None and z.grad is not None


def test_sdd_validation():
    z, v = _regions(4, 5, 3, seed=1)
    y = torch.arange(4)
    with pytest.raises(ValueError, match=r"student_logits \(z\) must be a floating tensor \[N, C, R\]"):
        L.sdd_loss(z[:, :, 0], v, y)
    with pytest.raises(ValueError, match="same shape"):
        L.sdd_loss(z, v[:, :, :2], y)
    with pytest.raises(ValueError, match="C >= 2"):
        L.sdd_loss(z[:, :1], v[:, :1], y * 0)
    with pytest.raises(ValueError, match="base"):
        L.sdd_loss(z, v, y, base="nkd")
    with pytest.raises(ValueError, match="target"):
        L.sdd_loss(z, v, y + 5)
    with pytest.raises(ValueError, match="complementary_weight"):
        L.sdd_loss(z, v, y, complementary_weight=-1.0)
    bad = z.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="student_logits"):
        L.sdd_loss(bad, v, y)
