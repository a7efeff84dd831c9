"""OFD's margin and partial L2, ReviewKD's hierarchical context loss and CRD's NCE loss: parity with the reference
formulas (written out below as facts of the released code, compared at 1e-6 on random features), identities,
float64 gradcheck, invariances and edge cases."""

import math

import pytest
import torch
import torch.nn.functional as F

import kdlab.losses as L


def _maps(*shape, seed=0, scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=dtype) * scale)


# ---------------------------------------------------------------------------------------------------------------------
# OFD margin


def reference_margin(weight, bias):
    """The released OFD code's get_margin_from_BN, per channel, with Φ written through erfc (scipy's norm.cdf)."""
    out = []
    for s, m in zip(weight.tolist(), bias.tolist()):
        s = abs(s)
        cdf = 0.5 * math.erfc((m / s) / math.sqrt(2))  # Φ(−m/s)
        if cdf > 0.001:
            out.append(-s * math.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi) / cdf + m)
        else:
            out.append(-3 * s)
    return torch.tensor(out, dtype=torch.float64)


def test_margin_equals_the_reference_code():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(64, generator=g, dtype=torch.float64) * 2
    bias = torch.randn(64, generator=g, dtype=torch.float64) * 3  # some channels almost never negative: −3|γ|
    ref = reference_margin(weight, bias)
    assert (ref == -3 * weight.abs()).any() and (ref != -3 * weight.abs()).any()  # both branches are exercised
    torch.testing.assert_close(L.ofd_margin(weight, bias), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("gamma,beta", [(1.0, 0.0), (0.5, 1.0), (2.0, -1.5), (-1.3, 0.4)])
def test_margin_is_the_mean_of_the_negative_responses(gamma, beta):
    """m = E[x | x < 0] for x ~ N(β, γ²), by quadrature of the truncated normal."""
    s = abs(gamma)
    x = torch.linspace(beta - 12 * s, 0.0, 400001, dtype=torch.float64)
    density = torch.exp(-((x - beta) / s) ** 2 / 2)
    expected = torch.trapezoid(x * density, x) / torch.trapezoid(density, x)
    got = L.ofd_margin(torch.tensor([gamma], dtype=torch.float64), torch.tensor([beta], dtype=torch.float64))
    torch.testing.assert_close(got[0], expected, rtol=1e-6, atol=1e-6)
    assert got[0] < 0


def test_margin_of_a_constant_channel_is_the_formula_limit():
    weight = torch.tensor([0.0, 0.0, 0.0, 1e-9, 1e-9], dtype=torch.float64)
    bias = torch.tensor([-2.0, 0.5, 0.0, -2.0, 0.5], dtype=torch.float64)
    got = L.ofd_margin(weight, bias)
    torch.testing.assert_close(got[:3], torch.tensor([-2.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(got[3:], torch.tensor([-2.0, -3e-9], dtype=torch.float64), rtol=1e-6, atol=1e-12)
    assert L.ofd_margin(torch.ones(3), torch.zeros(3)).dtype == torch.float32
    with pytest.raises(ValueError, match="1-D tensors of one length"):
        L.ofd_margin(torch.ones(3), torch.zeros(4))


# ---------------------------------------------------------------------------------------------------------------------
# OFD loss


def reference_ofd(students, teachers, margins):
    """mdistiller's OFD.ofd_loss with feat_loss, written out (teacher pooled to the student's size, stage weights
    1/2^(k−1−i), |loss| mean over the batch, summed)."""
    k, total = len(students), 0.0
    for i, (s, t, m) in enumerate(zip(students, teachers, margins)):
        t = F.adaptive_avg_pool2d(t, s.shape[-2:])
        m = m.view(1, -1, 1, 1)
        loss = ((s - m) ** 2 * ((s > m) & (t <= m)).double()
                + (s - t) ** 2 * ((s > t) & (t > m) & (t <= 0)).double()
                + (s - t) ** 2 * (t > 0).double())
        total = total + loss.abs().mean(dim=0).sum() / 2 ** (k - i - 1)
    return total


def clovaai_ofd(students, teachers, margins):
    """The OFD authors' distillation_loss (target = max(t, m); squared error where s > target or target > 0),
    summed and divided by the batch size."""
    k, total = len(students), 0.0
    for i, (s, t, m) in enumerate(zip(students, teachers, margins)):
        t = torch.max(F.adaptive_avg_pool2d(t, s.shape[-2:]), m.view(1, -1, 1, 1))
        loss = F.mse_loss(s, t, reduction="none") * ((s > t) | (t > 0)).double()
        total = total + loss.sum() / s.shape[0] / 2 ** (k - i - 1)
    return total


def _ofd_inputs(seed=0):
    students = [_maps(4, 8, 8, 8, seed=seed), _maps(4, 16, 4, 4, seed=seed + 1)]
    teachers = [_maps(4, 8, 16, 16, seed=seed + 2), _maps(4, 16, 4, 4, seed=seed + 3)]  # stage 0 pooled 16→8
    margins = [-_maps(8, seed=seed + 4).abs() - 0.1, -_maps(16, seed=seed + 5).abs() - 0.1]
    return students, teachers, margins


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ofd_equals_the_reference_codes(seed):
    s, t, m = _ofd_inputs(seed)
    got = L.ofd_loss(s, t, m)
    torch.testing.assert_close(got, reference_ofd(s, t, m), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got, clovaai_ofd(s, t, m), rtol=1e-6, atol=1e-6)


def test_ofd_identities():
    s, t, m = _ofd_inputs()
    t_same = [F.adaptive_avg_pool2d(tt, ss.shape[-2:]) for ss, tt in zip(s, t)]
    assert float(L.ofd_loss(t_same, t_same, m)) == 0.0  # the student equal to the teacher: no loss
    # below the margin where the teacher is below it: nothing to learn
    low = [torch.minimum(tt, mm.view(1, -1, 1, 1)) - 1.0 for tt, mm in zip(t_same, m)]
    assert float(L.ofd_loss([x + 0.5 for x in low], low, m)) == 0.0
    # the deepest stage has weight 1, the one before 1/2
    one = L.ofd_loss(s[1], t[1], m[1])
    torch.testing.assert_close(L.ofd_loss(s, t, m), L.ofd_loss(s[0], t[0], m[0]) / 2 + one)
    # a positive teacher: plain squared error, summed over channels and positions, mean over the batch
    pos = t_same[1].abs() + 0.1
    torch.testing.assert_close(L.ofd_loss(s[1], pos, m[1]), ((s[1] - pos) ** 2).sum() / 4)


def test_ofd_on_1d_maps_and_float32():
    s, t, m = _maps(3, 5, 10), _maps(3, 5, 20, seed=1), -torch.ones(5, dtype=torch.float64)
    ref = reference_ofd([s.unsqueeze(-1)], [t.unsqueeze(-1)], [m])  # a length-L map is an L×1 image
    torch.testing.assert_close(L.ofd_loss(s, t, m), ref, rtol=1e-6, atol=1e-6)
    got32 = L.ofd_loss(s.float(), t.float(), m.float())
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), ref, rtol=1e-5, atol=1e-5)


def test_ofd_gradcheck_and_the_teacher_is_detached():
    s, t, m = _ofd_inputs()
    s, t = [x[:2] for x in s], [x[:2] for x in t]
    s = [x.requires_grad_() for x in s]
    t = [x.requires_grad_() for x in t]
    assert torch.autograd.gradcheck(lambda a, b: L.ofd_loss([a, b], [x.detach() for x in t], m), tuple(s))
    L.ofd_loss(s, t, m).backward()
    assert all(x.grad is None for x in t) and all(x.grad is not None for x in s)


def test_ofd_edge_cases():
    s, t, m = _ofd_inputs()
    one = L.ofd_loss([x[:1] for x in s], [x[:1] for x in t], m)  # a batch of one
    assert torch.isfinite(one)
    zero = [torch.zeros_like(x) for x in s]
    torch.testing.assert_close(L.ofd_loss(zero, zero, m), torch.zeros((), dtype=torch.float64))
    with pytest.raises(ValueError, match="one teacher map and one margin per student map"):
        L.ofd_loss(s, t[:1], m)
    with pytest.raises(ValueError, match="same C"):
        L.ofd_loss(s[0], t[1], m[0])
    with pytest.raises(ValueError, match=r"margin must be a tensor \[C\] = \[8\]"):
        L.ofd_loss(s[0], t[0], m[1])
    with pytest.raises(ValueError, match="same batch size"):
        L.ofd_loss(s[0], t[0][:2], m[0])
    with pytest.raises(ValueError, match="non-empty list"):
        L.ofd_loss([], [], [])


# ---------------------------------------------------------------------------------------------------------------------
# ReviewKD's HCL


def reference_hcl(students, teachers):
    """mdistiller's (= the ReviewKD authors') hcl_loss, written out."""
    total = 0.0
    for fs, ft in zip(students, teachers):
        h = fs.shape[2]
        loss = F.mse_loss(fs, ft, reduction="mean")
        cnt, tot = 1.0, 1.0
        for lv in [4, 2, 1]:
            if lv >= h:
                continue
            cnt /= 2.0
            loss += F.mse_loss(F.adaptive_avg_pool2d(fs, (lv, lv)), F.adaptive_avg_pool2d(ft, (lv, lv))) * cnt
            tot += cnt
        total = total + loss / tot
    return total


def _levels(seed=0):
    sizes = [(4, 8, 32, 32), (4, 16, 16, 16), (4, 32, 8, 8), (4, 32, 3, 3), (4, 32, 1, 1)]
    return [_maps(*z, seed=seed + i) for i, z in enumerate(sizes)], [_maps(*z, seed=seed + 9 + i) for i, z in
                                                                       enumerate(sizes)]


@pytest.mark.parametrize("seed", [0, 1])
def test_hcl_equals_the_reference_code(seed):
    s, t = _levels(seed)
    torch.testing.assert_close(L.hcl_loss(s, t), reference_hcl(s, t), rtol=1e-6, atol=1e-6)


def test_hcl_identities():
    s, t = _levels()
    assert float(L.hcl_loss(t, t)) == 0.0
    # a 1×1 level is the plain mean squared error; a 4×4 one weighs levels 2 and 1 by 1/2 and 1/4, normalised
    torch.testing.assert_close(L.hcl_loss(s[-1], t[-1]), F.mse_loss(s[-1], t[-1]))
    a, b = _maps(2, 3, 4, 4), _maps(2, 3, 4, 4, seed=1)
    pooled = [F.mse_loss(F.adaptive_avg_pool2d(a, k), F.adaptive_avg_pool2d(b, k)) for k in (2, 1)]
    torch.testing.assert_close(L.hcl_loss(a, b), (F.mse_loss(a, b) + pooled[0] / 2 + pooled[1] / 4) / 1.75)
    # stages add up
    torch.testing.assert_close(L.hcl_loss(s, t), sum(L.hcl_loss(x, y) for x, y in zip(s, t)))


def test_hcl_on_1d_maps():
    a, b = _maps(2, 3, 10), _maps(2, 3, 10, seed=1)
    pooled = [F.mse_loss(F.adaptive_avg_pool1d(a, k), F.adaptive_avg_pool1d(b, k)) for k in (4, 2, 1)]
    expected = (F.mse_loss(a, b) + pooled[0] / 2 + pooled[1] / 4 + pooled[2] / 8) / 1.875
    torch.testing.assert_close(L.hcl_loss(a, b), expected)


def test_hcl_gradcheck_and_edge_cases():
    s, t = _levels()
    # small maps that still exercise every pooling level (8×8: 4, 2, 1; 3×3: 2, 1; 1×1: none)
    s = [x[:2, :2, :8, :8].clone().requires_grad_() for x in (s[2], s[3], s[4])]
    t = [x[:2, :2, :8, :8] for x in (t[2], t[3], t[4])]
    assert torch.autograd.gradcheck(lambda *a: L.hcl_loss(list(a), t), tuple(s))
    one = L.hcl_loss([x[:1] for x in s], [x[:1] for x in t])  # batch of one
    assert torch.isfinite(one)
    with pytest.raises(ValueError, match="same shape"):
        L.hcl_loss(s[0], t[1])
    with pytest.raises(ValueError, match="one teacher map per student map"):
        L.hcl_loss(s, t[:2])
    with pytest.raises(ValueError, match="levels must be positive integers"):
        L.hcl_loss(s[0], t[0], levels=(0,))


# ---------------------------------------------------------------------------------------------------------------------
# CRD's NCE loss


def reference_contrast_loss(x, num_data):
    """RepDistiller's crd/criterion.py ContrastLoss (= mdistiller's) on x = exp(logits) / Z, [N, 1 + K]."""
    eps = 1e-7
    bsz, m = x.shape[0], x.size(1) - 1
    pn = 1 / float(num_data)
    p_pos = x.select(1, 0)
    log_d1 = torch.div(p_pos, p_pos.add(m * pn + eps)).log_()
    p_neg = x.narrow(1, 1, m)
    log_d0 = torch.div(p_neg.clone().fill_(m * pn), p_neg.add(m * pn + eps)).log_()
    return -(log_d1.sum(0) + log_d0.view(-1, 1).sum(0)) / bsz


def _scores(n=6, k=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = F.normalize(torch.randn(n, 16, generator=g, dtype=torch.float64), dim=1)
    bank = F.normalize(torch.randn(n, k + 1, 16, generator=g, dtype=torch.float64), dim=2)
    logits = torch.bmm(bank, f.unsqueeze(2)).squeeze(2) / 0.07
    return logits


@pytest.mark.parametrize("num_data,k", [(5000, 50), (100, 50), (40, 50)])
def test_crd_loss_equals_the_reference_code(num_data, k):
    logits = _scores(k=k)
    z = float(logits.exp().mean() * num_data)  # Z as the released code fixes it on the first batch
    ref = reference_contrast_loss(torch.exp(logits) / z, num_data)[0]
    got = L.crd_loss(logits[:, 0], logits[:, 1:], num_data, math.log(z))
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


def test_crd_loss_identities():
    logits = _scores()
    pos, neg = logits[:, 0], logits[:, 1:]
    base = L.crd_loss(pos, neg, 1000, 3.0)
    # a common shift of the scores and of log Z leaves every P, so the loss, unchanged
    torch.testing.assert_close(L.crd_loss(pos + 2.5, neg + 2.5, 1000, 5.5), base)
    per = L.crd_loss(pos, neg, 1000, 3.0, reduction="none")
    assert per.shape == (6,)
    torch.testing.assert_close(per.mean(), base)
    torch.testing.assert_close(L.crd_loss(pos, neg, 1000, 3.0, reduction="sum"), per.sum())
    # a certain positive and impossible negatives: the loss vanishes
    tiny = L.crd_loss(torch.full((2,), 80.0, dtype=torch.float64), torch.full((2, 4), -80.0, dtype=torch.float64),
                      1000, 0.0, eps=0.0)
    assert 0 <= float(tiny) < 1e-20
    # a better-scored positive lowers the loss
    assert float(L.crd_loss(pos + 1.0, neg, 1000, 3.0)) < float(base)


def test_crd_loss_gradcheck_and_edge_cases():
    logits = _scores(n=3, k=4).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: L.crd_loss(x[:, 0], x[:, 1:], 500, 1.5), (logits,))
    one = L.crd_loss(logits[:1, 0], logits[:1, 1:2], 10, 0.0)  # one sample, one negative
    assert torch.isfinite(one)
    with pytest.raises(ValueError, match=r"pos_logits must be a floating tensor \[N\] = \[3\]"):
        L.crd_loss(logits[:2, 0], logits[:, 1:], 500, 0.0)
    with pytest.raises(ValueError, match="num_data must be >= 1"):
        L.crd_loss(logits[:, 0], logits[:, 1:], 0, 0.0)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        L.crd_loss(logits[:, 0], logits[:, 1:], 10, 0.0, eps=-1.0)
    got32 = L.crd_loss(logits[:, 0].float(), logits[:, 1:].float(), 500, 1.5)
    assert got32.dtype == torch.float32
