"""NKD, CTKD, MLKD and SDD: loss dicts recomputed from kdlab.losses, defaults, the trainable temperature, the strong
view, the region logits, what the cache and a top-k store may serve."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdlab import methods
from kdlab._checks import SettingError
from kdlab.data import randaugment_like
from kdlab.data.batch import Batch
from kdlab.losses import ctkd_loss, dkd_loss, kd_loss, mlkd_parts, nkd_loss, sdd_loss
from kdlab.methods import RunFacts, get
from kdlab.methods.sdd import region_logits
from kdlab.models import create, forward_features
from kdlab.teachers import Ensemble, FrozenTeacher


def _logits(method, batch):
    with torch.no_grad():
        return method.student(batch.x), method.teacher.logits(batch.x)


@pytest.mark.parametrize("name, cacheable", [("nkd", True), ("ctkd", True), ("mlkd", False), ("sdd", False)])
def test_cache_and_full_distribution_answers(name, cacheable):
    cls = get(name)
    hp = cls.Params()
    # the exact logit cache serves methods that read the teacher only through logits_for_batch: CTKD applies its
    # learnable temperature to the cached logits; MLKD's strong view and SDD's feature maps need a live teacher
    assert cls.cacheable(hp) is cacheable
    assert cls.needs_full_teacher_distribution(hp) is True  # non-target distributions, tails and regions


# ---------------------------------------------------------------------------------------------------------------------
# NKD


def test_nkd_defaults_and_loss_dict(make_method, make_batch):
    p = get("nkd").Params()
    assert (p.temperature, p.gamma, p.ce_weight) == (3.0, 3.5, 1.0)
    method = make_method("nkd", {"temperature": 2.0, "gamma": 1.5, "ce_weight": 0.5})
    batch = make_batch()
    out = method(batch, 1)
    z, v = _logits(method, batch)
    assert set(out.losses) == {"ce", "nkd"}
    torch.testing.assert_close(out.losses["ce"], 0.5 * F.cross_entropy(z, batch.y))
    torch.testing.assert_close(out.losses["nkd"], nkd_loss(z, v, batch.y, 2.0, 1.5))


# ---------------------------------------------------------------------------------------------------------------------
# CTKD


def test_ctkd_defaults_are_the_released_cifar_script():
    p = get("ctkd").Params()
    assert (p.base, p.temperature_mode, p.t_start, p.t_end, p.curriculum_epochs, p.ce_weight, p.kd_weight) == (
        "kd", "global", 1.0, 20.0, 10, 0.1, 0.9)


@pytest.mark.parametrize("epoch", [1, 5, 30])
def test_ctkd_loss_dict_at_the_learned_temperature(make_method, make_batch, epoch):
    method = make_method("ctkd")
    batch = make_batch()
    out = method(batch, epoch)
    z, v = _logits(method, batch)
    tau = 1.0 + 20.0 / (1.0 + math.exp(-1.0))  # θ = 1 at the start
    assert float(out.logs["temperature"]) == pytest.approx(tau, rel=1e-6)
    assert float(out.logs["lambda"]) == pytest.approx((1 - math.cos(math.pi * min(epoch, 10) / 10)) / 2)
    torch.testing.assert_close(out.losses["ce"], 0.1 * F.cross_entropy(z, batch.y))
    torch.testing.assert_close(out.losses["kd"], 0.9 * kd_loss(z, v, tau), rtol=1e-5, atol=1e-6)


def test_ctkd_temperature_ascends_the_loss_the_student_descends(make_method, make_batch):
    """θ's gradient is −λ times the loss's: a step of the shared SGD raises the distillation loss w.r.t. τ."""
    method = make_method("ctkd")
    batch = make_batch()
    out = method(batch, 5)
    method.backward(out)
    theta = method.temperature_module.theta
    z, v = _logits(method, batch)
    free = torch.ones(1, requires_grad=True)
    (0.9 * ctkd_loss(z, v, 1.0 + 20.0 * torch.sigmoid(free))).backward()
    lam = method.lam(5)
    torch.testing.assert_close(theta.grad, -lam * free.grad, rtol=1e-5, atol=1e-8)
    assert [n for n, _ in method.named_parameters() if not n.startswith("student.")] == ["temperature_module.theta"]


def test_ctkd_instance_mode_and_dkd_base(make_method, make_batch):
    batch = make_batch()
    inst = make_method("ctkd", {"temperature_mode": "instance", "hidden": 16})
    out = inst(batch, 3)
    tau = inst.temperature(*reversed(_logits(inst, batch)), 3)  # (v, z)
    assert tau.shape == (8,) and bool(((tau > 1) & (tau < 21)).all())
    inst.backward(out)
    assert all(p.grad is not None for p in inst.temperature_module.parameters())
    dkd = make_method("ctkd", {"base": "dkd", "ce_weight": 1.0, "kd_weight": 1.0, "beta": 2.0, "warmup": 10})
    out = dkd(batch, 5)
    z, v = _logits(dkd, batch)
    tau = 1.0 + 20.0 / (1.0 + math.exp(-1.0))
    assert set(out.losses) == {"ce", "dkd"}
    torch.testing.assert_close(out.losses["dkd"], 0.5 * dkd_loss(z, v, batch.y, 1.0, 2.0, tau), rtol=1e-5, atol=1e-7)


def test_ctkd_curriculum_is_scaled_to_a_shorter_run():
    cls = get("ctkd")
    hp, changes = cls.adapt(cls.Params(), RunFacts(10, 20, (1, 40)), given=set())
    assert hp.curriculum_epochs == 1 and [c.key for c in changes] == ["curriculum_epochs"]
    hp, changes = cls.adapt(cls.Params(curriculum_epochs=4), RunFacts(10, 20, (1, 40)), given={"curriculum_epochs"})
    assert hp.curriculum_epochs == 4 and not changes


# ---------------------------------------------------------------------------------------------------------------------
# MLKD


def test_mlkd_loss_dict_equals_mlkd_parts_on_both_views(make_method, make_batch):
    method = make_method("mlkd", {"strong_augment": "cutout"})
    batch = make_batch(n=8)
    torch.manual_seed(3)
    out = method(batch, 1)
    torch.manual_seed(3)  # the strong view draws from torch's global RNG: the same state gives the same view
    x_strong = method.strong_view(batch.x, (0, 8))
    assert not torch.equal(x_strong, batch.x)
    z_w, v_w = _logits(method, batch)
    with torch.no_grad():
        z_s, v_s = method.student(x_strong), method.teacher.logits(x_strong)
    inst, cls, bat = mlkd_parts(z_w, v_w, z_s, v_s, [4.0, 3.0, 5.0, 2.0, 6.0], 3)
    assert set(out.losses) == {"ce", "kd", "cc", "bc"}
    torch.testing.assert_close(out.losses["ce"], 0.1 * (F.cross_entropy(z_w, batch.y) + F.cross_entropy(z_s, batch.y)))
    for key, term in (("kd", inst), ("cc", cls), ("bc", bat)):
        torch.testing.assert_close(out.losses[key], 0.9 * term)
    assert method.report_temperature == 4.0
    assert method.describe()["strong_view"] == "cutout (first 3 temperatures)"


def test_mlkd_randaugment_view_on_images():
    torch.manual_seed(0)
    student, teacher = create("resnet8", 100), FrozenTeacher(create("resnet8", 100))
    method = methods.create("mlkd", student, teacher, 100, {})
    x = torch.randn(4, 3, 32, 32)
    batch = Batch(x=x, y=torch.arange(4), index=torch.arange(4))
    torch.manual_seed(1)
    out = method(batch, 1)
    assert all(torch.isfinite(t) for t in out.losses.values())
    torch.manual_seed(1)
    expected = randaugment_like(x, mean=method.hp.input_mean, std=method.hp.input_std, rows=(0, 4))
    torch.manual_seed(1)
    torch.testing.assert_close(method.strong_view(x, (0, 4)), expected)


def test_mlkd_without_a_strong_view_uses_the_weak_one_twice(make_method, make_batch):
    method = make_method("mlkd", {"strong_augment": "none", "strong_terms": 5})
    batch = make_batch()
    out = method(batch, 1)
    z, v = _logits(method, batch)
    inst = mlkd_parts(z, v, z, v)[0]
    torch.testing.assert_close(out.losses["kd"], 0.9 * inst)


def test_mlkd_class_and_batch_weights_apply_to_their_terms(make_method, make_batch):
    method = make_method("mlkd", {"strong_augment": "none", "class_weight": 0.25, "batch_weight": 0.0})
    batch = make_batch()
    out = method(batch, 1)
    z, v = _logits(method, batch)
    inst, cls, bat = mlkd_parts(z, v, z, v)
    assert cls.item() > 0 and bat.item() > 0
    torch.testing.assert_close(out.losses["kd"], 0.9 * inst)
    torch.testing.assert_close(out.losses["cc"], 0.25 * cls)
    assert out.losses["bc"].item() == 0.0


def test_mlkd_refuses_randaugment_on_signals(make_method, make_batch):
    method = make_method("mlkd")  # default strong view: RandAugment, images only
    with pytest.raises(SettingError, match="mlkd's strong view \\(randaugment\\) needs images"):
        method(make_batch(), 1)


# ---------------------------------------------------------------------------------------------------------------------
# SDD


def test_region_logits_of_a_map_whose_side_is_a_multiple_of_four():
    torch.manual_seed(0)
    model = create("resnet8", 100).eval()
    x = torch.randn(3, 3, 32, 32)
    z, feats = forward_features(model, x)
    regions = region_logits(feats["stages"][-1], model.classifier, [1, 2, 4])
    assert regions.shape == (3, 100, 1 + 4 + 16)
    torch.testing.assert_close(regions[:, :, 0], z, rtol=1e-5, atol=1e-5)  # region 0 = the global logits (8×8 map)
    # the 2×2 regions are the means of the 4×4 ones they cover (the released SPP pools the 4×4 grid), and the
    # classifier is affine: their logits are the means of the covered 4×4 regions' logits
    fine = regions[:, :, 5:].reshape(3, 100, 4, 4)
    coarse = fine.reshape(3, 100, 2, 2, 2, 2).mean(dim=(3, 5))
    torch.testing.assert_close(regions[:, :, 1:5], coarse.reshape(3, 100, 4), rtol=1e-5, atol=1e-5)


def test_sdd_loss_dict_with_its_regions(make_method, make_batch):
    method = make_method("sdd", {"beta": 6.0}, student="mnist1d_cnn_small")
    batch = make_batch()
    out = method(batch, 10)
    with torch.no_grad():
        z, s_feats = forward_features(method.student, batch.x)
        v, t_feats = method.teacher.features(batch.x)
        zr = region_logits(s_feats["stages"][-1], method.student.classifier, [1, 2, 4])
        vr = region_logits(t_feats["stages"][-1], method.teacher.module.classifier, [1, 2, 4])
    assert zr.shape == (8, 10, 7)  # 1-D maps: 1 + 2 + 4 regions
    torch.testing.assert_close(out.losses["ce"], F.cross_entropy(z, batch.y))
    expected = 0.5 * sdd_loss(zr, vr, batch.y, base="dkd", temperature=4.0, beta=6.0)  # warm-up 10/20
    torch.testing.assert_close(out.losses["sdd"], expected)
    torch.testing.assert_close(out.teacher_logits, v)


def test_sdd_on_models_without_spatial_extent_is_its_base_loss(make_method, make_batch):
    """An MLP's final map has length 1: every region is the global one, so SD-KD between two MLPs is KD."""
    method = make_method("sdd", {"base": "kd", "warmup": 0, "ce_weight": 0.1, "kd_weight": 0.9},
                         teacher="mnist1d_mlp")
    batch = make_batch()
    out = method(batch, 1)
    z, v = _logits(method, batch)
    torch.testing.assert_close(out.losses["sdd"], 0.9 * kd_loss(z, v, 4.0), rtol=1e-5, atol=1e-6)


def test_sdd_logit_standardisation_standardises_every_region(make_method, make_batch):
    batch = make_batch()
    on = make_method("sdd", {"logit_standardization": True, "warmup": 0}, student="mnist1d_cnn_small")
    off = make_method("sdd", {"warmup": 0}, student="mnist1d_cnn_small")
    assert not torch.allclose(on(batch, 1).losses["sdd"], off(batch, 1).losses["sdd"])
    with torch.no_grad():
        zr = region_logits(forward_features(on.student, batch.x)[1]["stages"][-1], on.student.classifier, [1, 2, 4])
        a, b = on.standardize_regions(zr, zr)
    assert torch.allclose(a.mean(1), torch.zeros(8, 7), atol=1e-5) and torch.allclose(a.std(1), torch.ones(8, 7))


def test_sdd_needs_one_teacher_and_valid_scales(make_method):
    with pytest.raises(ValueError, match="scales"):
        get("sdd").Params(scales=[2, 4])
    with pytest.raises(ValueError, match="scales"):
        get("sdd").Params(scales=[1, 3])
    members = [create("mnist1d_cnn", 10), create("mnist1d_cnn", 10)]
    with pytest.raises(SettingError, match="ensemble"):
        methods.create("sdd", create("mnist1d_cnn_small", 10), FrozenTeacher(Ensemble(members)), 10, {})
