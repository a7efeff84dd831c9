"""Behaviour every loss must have: gradients (gradcheck), zeros, invariances, reductions, dtypes, extreme logits,
empty strong/weak sets, a detached teacher."""


import pytest
import torch
import torch.nn.functional as F

import kdlab.losses as L

SCALES = (0.1, 1.0, 10.0, 100.0)


def _target(v):
    # a per-row label that is not the teacher's top class (a function of the row, so row slices keep their label)
    return v.argmin(1)


def _regions(u):
    # SDD's [N, C, R] region logits made from a row (so row slices keep their regions): the row, half of it, rolled
    return torch.stack([u, 0.5 * u, u.roll(1, dims=1)], dim=2)


def _row_temperature(v):
    # a per-sample CTKD temperature, a function of the row blind to per-row constants (as the logits' softmax is),
    # computed in float32 for every dtype narrower than float64 (the loss's own compute dtype)
    return 2.0 + v.detach().to(torch.float64 if v.dtype == torch.float64 else torch.float32).std(1)


# name -> callable(z, v, **kw). Masks/labels are built from the teacher, as a method would.
LOSSES = {
    "kd": lambda z, v, **kw: L.kd_loss(z, v, 4.0, **kw),
    "kd_t1": lambda z, v, **kw: L.kd_loss(z, v, 1.0, **kw),
    "dkd": lambda z, v, **kw: L.dkd_loss(z, v, _target(v), 1.0, 8.0, 4.0, **kw),
    "cakd_target": lambda z, v, **kw: L.cakd_loss(z, v, L.strong_set("target", v, _target(v)), **kw),
    "cakd_topk": lambda z, v, **kw: L.cakd_loss(z, v, L.strong_set_topk(v, 3), 2.0, 8.0, 1.0, 4.0, **kw),
    "cakd_mass": lambda z, v, **kw: L.cakd_loss(z, v, L.strong_set_mass(v, 0.8), 2.0, 8.0, 1.0, 4.0, **kw),
    "ttm": lambda z, v, **kw: L.ttm_loss(z, v, 0.2, **kw),
    "wttm": lambda z, v, **kw: L.wttm_loss(z, v, 0.2, **kw),
    "dist": lambda z, v, **kw: L.dist_loss(z, v, 2.0, 2.0, 4.0, **kw),
    "binary_kl": lambda z, v, **kw: L.binary_kl_loss(z, v, 2.0, **kw),
    "binary_kl_norm": lambda z, v, **kw: L.binary_kl_norm_loss(z, v, 2.0, **kw),
    "r2kd_value": lambda z, v, **kw: L.r2kd_value_loss(z, v, 4.0, **kw),
    "spearman": lambda z, v, **kw: L.spearman_loss(z, v, 4.0, **kw),
    "spearman_soft": lambda z, v, **kw: L.spearman_loss(z, v, 1.0, soft=True, kappa=0.05, **kw),
    "cmkd": lambda z, v, **kw: L.cmkd_loss(z, v, 4.0, kappa=0.05, **kw),
    "cmkd_ls": lambda z, v, **kw: L.cmkd_loss(z, v, 2.0, kappa=0.05, logit_standardization=True, **kw),
    "nkd": lambda z, v, **kw: L.nkd_loss(z, v, _target(v), 3.0, 3.5, **kw),
    "mlkd": lambda z, v, **kw: L.mlkd_loss(z, v, 0.5 * z, 0.5 * v, **kw),
    "ctkd_global": lambda z, v, **kw: L.ctkd_loss(z, v, torch.tensor([3.0], device=z.device), **kw),
    "ctkd_instance": lambda z, v, **kw: L.ctkd_loss(z, v, _row_temperature(v), teacher_eps=1e-7, **kw),
    "ctkd_dkd": lambda z, v, **kw: L.ctkd_loss(z, v, torch.tensor([3.0]), _target(v), "dkd", 1.0, 8.0, **kw),
    "sdd_kd": lambda z, v, **kw: L.sdd_loss(_regions(z), _regions(v), _target(v), "kd", **kw),
    "sdd_dkd": lambda z, v, **kw: L.sdd_loss(_regions(z), _regions(v), _target(v), "dkd", beta=6.0, **kw),
}
BATCH_LEVEL = {"dist", "r2kd_value", "cmkd", "cmkd_ls", "mlkd"}
NO_GRAD = {"spearman"}
DIFFERENTIABLE = sorted(set(LOSSES) - NO_GRAD)
PER_SAMPLE = sorted(set(LOSSES) - BATCH_LEVEL)
SHIFT_INVARIANT = sorted(set(LOSSES) - {"binary_kl", "binary_kl_norm"})


# ---------------------------------------------------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_gradcheck_float64(make_logits, name):
    z, v = make_logits(4, 6, 1.5, seed=30)
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: LOSSES[name](x, v), (z,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradcheck_building_blocks(make_logits):
    z, v = make_logits(4, 6, 1.5, seed=31)
    z.requires_grad_(True)
    mask = L.strong_set_topk(v, 2)
    mask[0] = False  # an empty strong set in one row
    assert torch.autograd.gradcheck(lambda x: torch.stack(L.kl_decomposition(x, v, mask, 2.0)), (z,))
    assert torch.autograd.gradcheck(lambda x: L.logit_standardize(x), (z,))
    assert torch.autograd.gradcheck(lambda x: L.soft_rank(x, 0.3, max_chunk_elements=40), (z,))
    assert torch.autograd.gradcheck(lambda x: L.pearson_distance_rows(x, v), (z,))
    assert torch.autograd.gradcheck(lambda x: L.abs_cosine_distance_rows(x, v), (z,))
    assert torch.autograd.gradcheck(lambda x: torch.stack(L.dkd_parts(x, v, _target(v), 3.0)), (z,))


def test_hard_spearman_carries_no_gradient(make_logits):
    z, v = make_logits(4, 6, 1.0)
    z.requires_grad_(True)
    out = L.spearman_loss(z, v)
    assert not out.requires_grad
    assert L.spearman_loss(z, v, soft=True).requires_grad


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_teacher_gets_no_gradient(make_logits, name):
    z, v = make_logits(5, 6, 1.0, seed=32, dtype=torch.float32)
    z.requires_grad_(True)
    v.requires_grad_(True)
    LOSSES[name](z, v).backward()
    assert v.grad is None
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------------
# zeros


ZERO_AT_EQUAL = ["kd", "kd_t1", "dkd", "cakd_target", "cakd_topk", "cakd_mass", "binary_kl", "binary_kl_norm",
                 "spearman", "mlkd", "ctkd_global", "ctkd_dkd", "sdd_kd", "sdd_dkd"]


@pytest.mark.parametrize("name", ZERO_AT_EQUAL)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_when_student_equals_teacher(make_logits, name, scale, dtype):
    _, v = make_logits(6, 7, scale, seed=33, dtype=dtype)
    out = LOSSES[name](v.clone(), v)
    assert out.dtype == dtype
    # Spearman's Pearson keeps the 1e-8 of the cosine denominator: 1 − ρ(r, r) = 1e-8 / (‖r − mean r‖² + 1e-8)
    floor = 1e-8 / 28 if name == "spearman" else 0.0  # ‖ranks − 4‖² = 28 for C = 7
    assert abs(out.item() - floor) <= (1e-6 if dtype == torch.float32 else 1e-12)
    assert LOSSES[name](v.flip(1), v).item() > 1e-6  # and positive when they differ


@pytest.mark.parametrize("scale", SCALES)
def test_ttm_zero_only_for_gamma_one(make_logits, scale):
    _, v = make_logits(6, 7, scale, seed=34)
    assert L.ttm_loss(v.clone(), v, gamma=1.0).item() == pytest.approx(0.0, abs=1e-12)
    assert L.wttm_loss(v.clone(), v, gamma=1.0).item() == pytest.approx(0.0, abs=1e-12)
    # γ < 1 flattens the teacher: matching the raw teacher is no longer optimal
    assert L.ttm_loss(v.clone(), v, gamma=0.5).item() > 1e-6
    # U_1(p) = Σ p = 1: WTTM is TTM at γ = 1
    z, _ = make_logits(6, 7, scale, seed=35)
    torch.testing.assert_close(L.wttm_loss(z, v, 1.0), L.ttm_loss(z, v, 1.0))


@pytest.mark.parametrize("scale", (1.0, 10.0, 100.0))
def test_correlation_losses_zero_up_to_eps_when_equal(make_logits, scale):
    tau = 4.0
    _, v = make_logits(6, 7, scale, seed=36)
    p = F.softmax(v / tau, 1)

    def eps_bound(m, centre=True):  # 1 − ρ(a, a) = eps / (‖a‖² + eps) ≤ eps / ‖a‖²
        centred = m - m.mean(1, keepdim=True) if centre else m
        return (1e-8 / (centred**2).sum(1)).max().item()

    dist = L.dist_loss(v.clone(), v, beta=2.0, gamma=2.0, temperature=tau).item()
    assert 0 <= dist <= tau**2 * 2 * (eps_bound(p) + eps_bound(p.t())) + 1e-12
    r2kd = L.r2kd_value_loss(v.clone(), v, tau).item()
    assert 0 <= r2kd <= tau**2 * (eps_bound(p, False) + eps_bound(p.t(), False)) + 1e-12
    assert L.dist_loss(-v, v).item() > 1.0 and L.r2kd_value_loss(-v, v).item() > 0.1


# ---------------------------------------------------------------------------------------------------------------------
# invariances


@pytest.mark.parametrize("name", SHIFT_INVARIANT)
@pytest.mark.parametrize("scale", (0.1, 1.0, 10.0))
def test_softmax_losses_ignore_per_row_constants(make_logits, name, scale):
    z, v = make_logits(6, 7, scale, seed=37)
    g = torch.Generator().manual_seed(38)
    cz = torch.randn(6, 1, generator=g, dtype=torch.float64) * 20
    cv = torch.randn(6, 1, generator=g, dtype=torch.float64) * 20
    torch.testing.assert_close(LOSSES[name](z + cz, v + cv), LOSSES[name](z, v), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", ["binary_kl", "binary_kl_norm"])
def test_binary_losses_see_per_row_constants(make_logits, name):
    z, v = make_logits(6, 7, 1.0, seed=39)
    base = LOSSES[name](z, v)
    assert abs(LOSSES[name](z + 1.0, v).item() - base.item()) > 1e-3
    assert abs(LOSSES[name](z, v + 1.0).item() - base.item()) > 1e-3


def test_binary_kl_norm_depends_only_on_difference(make_logits):
    z, v = make_logits(6, 7, 1.0, seed=40)
    shift = torch.randn(6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(41))
    torch.testing.assert_close(L.binary_kl_norm_loss(z + shift, v + shift), L.binary_kl_norm_loss(z, v))


# ---------------------------------------------------------------------------------------------------------------------
# reductions


@pytest.mark.parametrize("name", PER_SAMPLE)
def test_reduction_none_and_sum_agree_with_mean(make_logits, name):
    z, v = make_logits(6, 7, 2.0, seed=42)
    per_sample = LOSSES[name](z, v, reduction="none")
    assert per_sample.shape == (6,)
    mean = LOSSES[name](z, v)
    assert mean.dim() == 0
    torch.testing.assert_close(per_sample.mean(), mean)
    torch.testing.assert_close(LOSSES[name](z, v, reduction="sum"), per_sample.sum())
    # a per-sample value is that of its row alone: no batch statistics leak in
    torch.testing.assert_close(LOSSES[name](z[2:3], v[2:3], reduction="none")[0], per_sample[2])


@pytest.mark.parametrize("name", sorted(BATCH_LEVEL))
@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_batch_level_losses_refuse_per_sample_reductions(make_logits, name, reduction):
    z, v = make_logits(6, 7, 1.0)
    with pytest.raises(ValueError, match="reduction"):
        LOSSES[name](z, v, reduction=reduction)


# ---------------------------------------------------------------------------------------------------------------------
# soft ranks


def test_soft_spearman_tends_to_hard_as_kappa_shrinks(make_logits):
    z, v = make_logits(6, 9, 2.0, seed=43)
    p = F.softmax(z, 1)
    gaps = (p[:, :, None] - p[:, None, :]).abs() + torch.eye(9, dtype=torch.float64) * 10
    min_gap = gaps.min().item()
    hard = L.spearman_loss(z, v, reduction="none")
    errors = [
        (L.spearman_loss(z, v, temperature=1.0, soft=True, kappa=k, reduction="none") - hard).abs().max().item()
        for k in (min_gap * 10, min_gap, min_gap / 100)
    ]
    assert errors[-1] < 1e-12
    assert errors[0] > errors[1] > errors[2]
    torch.testing.assert_close(L.soft_rank(p, min_gap / 100), L.hard_rank(p), rtol=0, atol=1e-12)


def test_soft_rank_of_ties_tends_to_average_rank():
    u = torch.tensor([[0.1, 0.4, 0.4, 0.1, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(L.soft_rank(u, 1e-4), L.hard_rank(u), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# empty strong / weak sets


@pytest.mark.parametrize("scale", SCALES)
def test_empty_sets_give_finite_values_and_gradients(make_logits, scale):
    z, v = make_logits(5, 6, scale, seed=44, dtype=torch.float32)
    masks = {
        "all_strong": torch.ones(5, 6, dtype=torch.bool),
        "all_weak": torch.zeros(5, 6, dtype=torch.bool),
        "mixed_rows": torch.tensor([[1] * 6, [0] * 6, [1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [0] * 5 + [1]]).bool(),
        "mass_one": L.strong_set_mass(v, 1.0),
    }
    kl = L.kd_loss(z, v, 4.0, reduction="none") / 16
    for label, mask in masks.items():
        zz = z.clone().requires_grad_(True)
        out = L.cakd_loss(zz, v, mask, alpha=1.0, beta=1.0, gamma=1.0)
        out.backward()
        assert torch.isfinite(out), label
        assert torch.isfinite(zz.grad).all(), label
        bcd, scd, wcd = L.kl_decomposition(z, v, mask, 4.0)
        assert torch.isfinite(torch.stack([bcd, scd, wcd])).all(), label
        # with one set empty the other term is the whole KL and BCD is 0
        whole = mask.all(1) | (~mask).all(1)
        torch.testing.assert_close((scd + wcd)[whole], kl[whole], rtol=1e-4, atol=1e-5)
        assert (bcd[whole] == 0).all()
    # CAKD with every row all-weak (β=1) is exactly KD
    torch.testing.assert_close(L.cakd_loss(z, v, masks["all_weak"], beta=1.0), L.kd_loss(z, v), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# dtypes and extreme logits


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale", (1.0, 10.0))
def test_half_inputs_are_computed_in_float32(make_logits, name, dtype, scale):
    z, v = make_logits(8, 10, scale, seed=45, dtype=torch.float32)
    reference = LOSSES[name](z, v)
    zh = z.to(dtype).requires_grad_(True)
    out = LOSSES[name](zh, v.to(dtype))
    assert out.dtype == torch.float32
    assert torch.isfinite(out)
    # the only difference is the rounding of the inputs to 8 (bf16) or 11 (fp16) mantissa bits
    torch.testing.assert_close(out, reference, rtol=0.05, atol=0.05 * max(1.0, reference.abs().item()) ** 0.5)
    # bit-identical to computing on the rounded values in float32: the upcast happens before any arithmetic
    torch.testing.assert_close(out, LOSSES[name](zh.detach().float(), v.to(dtype).float()), rtol=0, atol=0)
    if name not in NO_GRAD:
        out.backward()
        assert zh.grad.dtype == dtype and torch.isfinite(zh.grad).all()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_logits_times_100_stay_finite_in_float32(make_logits, name):
    z, v = make_logits(8, 10, 100.0, seed=46, dtype=torch.float32)
    z.requires_grad_(True)
    out = LOSSES[name](z, v)
    assert torch.isfinite(out)
    if name not in NO_GRAD:
        out.backward()
        assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("name", ["kd", "kd_t1", "dkd", "cakd_topk", "ttm", "wttm", "nkd", "ctkd_global", "sdd_dkd"])
def test_float32_at_scale_100_matches_float64(make_logits, name):
    z, v = make_logits(8, 10, 100.0, seed=47)
    exact = LOSSES[name](z, v)
    got = LOSSES[name](z.float(), v.float())
    torch.testing.assert_close(got.double(), exact, rtol=1e-4, atol=1e-4)


def test_float64_inputs_stay_float64(make_logits):
    z, v = make_logits(4, 5, 1.0)
    assert L.kd_loss(z, v).dtype == torch.float64
    assert L.kd_loss(z, v.float()).dtype == torch.float64  # mixed: the wider dtype wins
    assert L.kd_loss(z.float(), v.half()).dtype == torch.float32


def test_single_sample_batch_is_finite(make_logits):
    z, v = make_logits(1, 5, 1.0, seed=48, dtype=torch.float32)
    for name, fn in LOSSES.items():
        zz = z.clone().requires_grad_(True)
        out = fn(zz, v)
        assert torch.isfinite(out), name
        if name not in NO_GRAD:
            out.backward()
            assert torch.isfinite(zz.grad).all(), name
    # DIST's per-class Pearson over a batch of one has no variation: ρ = 0, so L_intra = 1
    assert L.dist_loss(v.clone(), v, beta=0.0, gamma=1.0, temperature=1.0).item() == pytest.approx(1.0)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
@pytest.mark.parametrize("label", ["argmin", "argmax", "random"])
def test_decoupled_losses_extreme_logits_all_labels(make_logits, make_target, temperature, label):
    # the hardest case for the masked softmaxes: the target/strong set has (almost) no probability or all of it
    z, v = make_logits(8, 10, 100.0, seed=49, dtype=torch.float32)
    y = {"argmin": v.argmin(1), "argmax": v.argmax(1), "random": make_target(8, 10)}[label]
    for mask in (F.one_hot(y, 10).bool(), L.strong_set_topk(v, 3), L.strong_set_mass(v, 0.5, temperature)):
        zz = z.clone().requires_grad_(True)
        out = L.cakd_loss(zz, v, mask, temperature=temperature) + L.dkd_loss(zz, v, y, temperature=temperature)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(zz.grad).all()
        exact = L.cakd_loss(z.double(), v.double(), mask, temperature=temperature)
        torch.testing.assert_close(
            L.cakd_loss(z, v, mask, temperature=temperature).double(), exact, rtol=1e-4, atol=1e-3
        )
