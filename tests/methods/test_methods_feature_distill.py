"""The feature methods of mdistiller (FitNets, AT, NST, PKT, RKD, SP, KDSVD, VID) on FeatureLossMethod: each loss
dict is CE plus the weighted loss of the chosen stages, the trainable extras are sized from the real features and
trained, and a stage that does not exist or cannot be paired is a one-line SettingError naming its key."""

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kdlab.losses as L
from kdlab import methods, models
from kdlab._checks import SettingError
from kdlab.data.batch import Batch
from kdlab.methods.fitnet import regressor
from kdlab.teachers.frozen import FrozenTeacher

FEATURE_METHODS = ["fitnet", "at", "nst", "pkt", "rkd", "sp", "kdsvd", "vid"]
PAIRED = {"student_stages": [0, 1], "teacher_stages": [2, 3]}  # mnist1d_cnn_small (16x20, 16x10) ↔ mnist1d_cnn
ARGS = {"fitnet": {"student_stage": 0, "teacher_stage": 2}, "at": PAIRED, "nst": PAIRED, "kdsvd": PAIRED,
        "vid": PAIRED, "pkt": {}, "rkd": {}, "sp": {}}


def _pair(student="mnist1d_cnn_small", teacher="mnist1d_cnn", seed=0):
    torch.manual_seed(seed)
    return models.create(student, 10), FrozenTeacher(models.create(teacher, 10))


def _build(name, args=None, student="mnist1d_cnn_small", teacher="mnist1d_cnn", probe_shape=(1, 40)):
    s, t = _pair(student, teacher)
    probe = torch.randn(2, *probe_shape, generator=torch.Generator().manual_seed(1))
    return methods.create(name, s, t, 10, ARGS.get(name, {}) if args is None else args, probe=probe)


def _batch(n=16, shape=(1, 40), seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch(x=torch.randn(n, *shape, generator=g), y=torch.randint(0, 10, (n,), generator=g),
                 index=torch.arange(n))


def _expected(method, batch):
    """The feature term computed here from the networks' own features and the kdlab.losses functions."""
    hp = method.hp
    _, s = models.forward_features(method.student, batch.x)
    _, t = models.forward_features(method.teacher.module, batch.x)
    ss, ts = s["stages"], t["stages"]
    name = method.name
    if name == "fitnet":
        return L.fitnet_loss(method.regressor(ss[hp.student_stage]), ts[hp.teacher_stage])
    pairs_s = [ss[i] for i in hp.student_stages] if hasattr(hp, "student_stages") else None
    pairs_t = [ts[i] for i in hp.teacher_stages] if hasattr(hp, "teacher_stages") else None
    if name == "at":
        return L.at_loss(pairs_s, pairs_t, hp.p)
    if name == "nst":
        return L.nst_loss(pairs_s, pairs_t)
    if name == "kdsvd":
        return L.kdsvd_loss(pairs_s, pairs_t, hp.k, hp.layout)
    if name == "pkt":
        return L.pkt_loss(s["pooled"], t["pooled"])
    if name == "rkd":
        return L.rkd_loss(s["pooled"], t["pooled"], hp.distance_weight, hp.angle_weight, hp.squared, hp.eps)
    if name == "sp":
        return L.sp_loss(ss[hp.student_stage], ts[hp.teacher_stage])
    total = 0
    for reg, f_s, f_t in zip(method.regressors, pairs_s, pairs_t):
        f_s, f_t = L.pool_to_match(f_s, f_t)
        total = total + L.vid_loss(reg.mean(f_s), f_t, reg.log_scale, hp.eps)
    return total


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_the_loss_dict_is_ce_plus_the_weighted_feature_loss(name):
    method = _build(name)
    batch = _batch()
    method.train()
    out = method(batch, epoch=1)
    assert set(out.losses) == {"ce", name}
    hp = method.hp
    torch.testing.assert_close(out.losses["ce"], hp.ce_weight * F.cross_entropy(out.logits, batch.y))
    torch.testing.assert_close(out.losses[name], hp.feat_weight * _expected(method, batch), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.teacher_logits, method.teacher.module(batch.x))
    # mdistiller's weights are the defaults
    defaults = {"fitnet": 100.0, "at": 1000.0, "nst": 50.0, "pkt": 30000.0, "rkd": 1.0, "sp": 3000.0, "kdsvd": 1.0,
                "vid": 1.0}
    assert (type(hp)().ce_weight, type(hp)().feat_weight) == (1.0, defaults[name])
    assert not method.cacheable(hp) and not method.needs_full_teacher_distribution(hp)


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_unlabelled_samples_only_leave_ce(name):
    """Labels enter only through CE, so distillation-data policies that add unlabelled inputs may be used."""
    method = _build(name)
    batch = _batch()
    mask = torch.ones(16)
    mask[8:] = 0
    out = method(Batch(x=batch.x, y=batch.y, index=batch.index, label_mask=mask), epoch=1)
    torch.testing.assert_close(out.losses["ce"], F.cross_entropy(out.logits[:8], batch.y[:8]))


def test_fitnet_regressor_is_mdistillers_convreg_and_is_trained():
    # the three cases of ConvReg: H_s = 2·H_t (3x3 stride 2), 2·H_s = H_t (4x4 transposed, stride 2), H_s > H_t
    r = regressor((2, 8, 16, 16), (2, 32, 8, 8))
    assert isinstance(r[0], nn.Conv2d) and (r[0].kernel_size, r[0].stride, r[0].padding) == ((3, 3), (2, 2), (1, 1))
    r = regressor((2, 8, 8, 8), (2, 32, 16, 16))
    assert isinstance(r[0], nn.ConvTranspose2d) and (r[0].kernel_size, r[0].stride) == ((4, 4), (2, 2))
    r = regressor((2, 8, 7, 7), (2, 32, 5, 5))
    assert isinstance(r[0], nn.Conv2d) and r[0].kernel_size == (3, 3) and r[0].padding == (0, 0)
    for s_shape, t_shape in (((2, 8, 16, 16), (2, 32, 8, 8)), ((2, 8, 8, 8), (2, 32, 16, 16)),
                             ((2, 8, 7, 7), (2, 32, 5, 5)), ((2, 8, 20), (2, 32, 10)), ((2, 8, 10), (2, 32, 20))):
        r = regressor(s_shape, t_shape)
        assert isinstance(r[1], (nn.BatchNorm1d, nn.BatchNorm2d)) and isinstance(r[2], nn.ReLU)
        assert r(torch.randn(*s_shape)).shape == t_shape
    with pytest.raises(SettingError, match="smaller than the teacher's .* by other than a factor 2"):
        regressor((2, 8, 5, 5), (2, 32, 8, 8))

    method = _build("fitnet")
    reg = method.regressor
    assert any(p is reg[0].weight for p in method.parameters())  # optimised with the student
    assert {k for k in method.state_dict() if k.startswith("regressor.")} >= {"regressor.0.weight",
                                                                               "regressor.1.running_mean"}
    # the setup probe ran the loss in eval mode: the regressor's BN statistics are untouched
    assert int(reg[1].num_batches_tracked) == 0 and float(reg[1].running_mean.abs().sum()) == 0
    before = reg[0].weight.detach().clone()
    opt = torch.optim.SGD(method.parameters(), lr=0.1)
    out = method(_batch(), epoch=1)
    method.backward(out)
    opt.step()
    assert not torch.equal(reg[0].weight, before)


def test_vid_owns_a_regressor_and_a_learned_variance_per_stage():
    method = _build("vid")
    assert len(method.regressors) == 2
    for reg, c_s, c_t in zip(method.regressors, (16, 16), (64, 64)):
        convs = [m for m in reg.mean if isinstance(m, nn.Conv1d)]
        assert [(c.in_channels, c.out_channels, c.bias) for c in convs] == [(c_s, c_t, None), (c_t, c_t, None),
                                                                              (c_t, c_t, None)]
        torch.testing.assert_close(F.softplus(reg.log_scale) + 1e-5, torch.full((c_t,), 5.0))  # init_pred_var
        assert reg.log_scale.requires_grad
    out = method(_batch(), epoch=1)
    method.backward(out)
    assert all(reg.log_scale.grad is not None and reg.log_scale.grad.abs().sum() > 0 for reg in method.regressors)
    fixed = _build("vid", {**PAIRED, "learn_variance": False})  # mdistiller: its log-scales are not parameters
    assert not any(reg.log_scale.requires_grad for reg in fixed.regressors)
    fixed.backward(fixed(_batch(), epoch=1))
    assert all(reg.log_scale.grad is None for reg in fixed.regressors)


# ---------------------------------------------------------------------------------------------------------------------
# stage choice


def test_default_stages_are_those_after_the_stem():
    method = _build("at", {}, student="resnet8", teacher="resnet14", probe_shape=(3, 32, 32))
    _, s = models.forward_features(method.student, torch.randn(2, 3, 32, 32))
    chosen = method.stages(s, "student", None, "student_stages")
    assert [f.shape[1:] for f in chosen] == [f.shape[1:] for f in s["stages"][1:]]
    assert len(chosen) == 3


@pytest.mark.parametrize("name, args, key", [
    ("fitnet", {}, "method.args.student_stage=2, but the student (ConvNet1d) has 2 stages (0 to 1)"),
    ("fitnet", {"student_stage": 0, "teacher_stage": 9}, "method.args.teacher_stage=9, but the teacher (ConvNet1d)"),
    ("sp", {"student_stage": -3}, "method.args.student_stage=-3"),
    ("at", {"student_stages": [0, 2], "teacher_stages": [2, 3]}, "method.args.student_stages=[0, 2], but the student"),
    ("at", {}, "1 student stages (method.args.student_stages: every stage after the stem) cannot be paired with 3 "
               "teacher stages (method.args.teacher_stages: every stage after the stem)"),
    ("vid", {"teacher_stages": [2, 3]}, "1 student stages (method.args.student_stages: every stage after the stem) "
                                         "cannot be paired with 2 teacher stages (method.args.teacher_stages: as given)"),
    ("kdsvd", {"student_stages": [0, 1], "teacher_stages": [2, 3], "layout": "paper"},
     "same channel count; got 16 and 64; choose others in method.args.student_stages / method.args.teacher_stages"),
    ("kdsvd", {"student_stages": [1], "teacher_stages": [3]}, "kdsvd: the chosen stages cannot be paired: "
                                                              "kdsvd_loss relates consecutive stages"),
    ("fitnet", {"student_stage": 1, "teacher_stage": 0}, "fitnet: the student's hint map (16, 10) is smaller"),
])
def test_a_stage_choice_that_cannot_work_is_one_line_naming_the_key(name, args, key):
    with pytest.raises(SettingError, match=re.escape(key)) as info:
        _build(name, args)
    assert "\n" not in str(info.value)


class Plain(nn.Module):
    """A classifier without forward_features: its stages are read by forward hooks at module paths."""

    def __init__(self, width):
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(1, width, 3, padding=1), nn.ReLU(), nn.Conv1d(width, width, 3, stride=2,
                                                                                          padding=1), nn.ReLU())
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.body(x).mean(-1))


def test_networks_without_forward_features_name_their_stages_by_path():
    torch.manual_seed(0)
    student, teacher = Plain(4), FrozenTeacher(Plain(8))
    probe = torch.randn(2, 1, 40)
    with pytest.raises(SettingError, match=r"has no forward_features, so name the module whose output is its feature "
                                           r"map in method.args.student_paths: .*top-level modules: body, head"):
        methods.create("at", student, teacher, 10, {}, probe=probe)
    paths = {"student_paths": ["body.1", "body.3"], "teacher_paths": ["body.1", "body.3"]}
    method = methods.create("at", student, teacher, 10, paths, probe=probe)
    batch = _batch()
    out = method(batch, epoch=1)
    s = [student.body[:2](batch.x), student.body(batch.x)]
    t = [teacher.module.body[:2](batch.x), teacher.module.body(batch.x)]
    torch.testing.assert_close(out.losses["at"], 1000.0 * L.at_loss(s, t))
    # the pooled feature needs no path: the classifier's input, by a hook
    method = methods.create("rkd", student, teacher, 10, {}, probe=probe)
    out = method(batch, epoch=1)
    torch.testing.assert_close(out.losses["rkd"], L.rkd_loss(student.body(batch.x).mean(-1),
                                                             teacher.module.body(batch.x).mean(-1)))


def test_wrn_paths_give_mdistillers_maps_before_the_final_bn_relu():
    """The WRN recipes name the groups by path: mdistiller's feats end with block3's output, not ReLU(BN(block3))."""
    method = _build("at", {"student_paths": ["block1", "block2", "block3"],
                           "teacher_paths": ["block1", "block2", "block3"]},
                    student="wrn_16_1", teacher="wrn_16_2", probe_shape=(3, 32, 32))
    x = torch.randn(4, 3, 32, 32)
    _, s = method.student_features(x)
    net = method.student
    want = net.block3(net.block2(net.block1(net.conv1(x))))
    torch.testing.assert_close(s["stages"][2], want)
    _, own = models.forward_features(net, x)
    assert not torch.allclose(own["stages"][3], want)  # kdlab's own last stage is ReLU(BN(block3))
    assert len(method.stages(s, "student", None, "student_stages")) == 3  # with paths: every hooked module
