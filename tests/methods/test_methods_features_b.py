"""OFD, ReviewKD and CRD as methods: the stages they pair (the released configs' channel lists reproduced from real
features), their step against the reference computation written out, CRD's memory bank, negatives and resume, and
the bad inputs each refuses with one line."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import kdlab.losses as L
from kdlab import methods, models
from kdlab._checks import SettingError
from kdlab.data import BatchLoader
from kdlab.data.batch import Batch
from kdlab.teachers import FrozenTeacher

IMAGENET = {"resnet18", "resnet34", "resnet50", "mobilenet_v1"}


def _shape(arch):
    if arch.startswith("mnist1d"):
        return (1, 40)
    return (3, 64, 64) if arch in IMAGENET else (3, 32, 32)


def _build(name, teacher, student, args=None, n=32, num_classes=10, seed=0):
    torch.manual_seed(seed)
    t, s = models.create(teacher, num_classes), models.create(student, num_classes)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, *_shape(student), generator=g)
    y = torch.arange(n) % num_classes
    loader = BatchLoader(x, y, batch_size=8, seed=seed)
    method = methods.create(name, s, FrozenTeacher(t), num_classes, args, probe=x[:2], data=loader)
    return method, loader


def _first_batch(loader, epoch=1):
    loader.set_epoch(epoch)
    return next(iter(loader))


# ---------------------------------------------------------------------------------------------------------------------
# OFD


@pytest.mark.parametrize("teacher,student,pairs", [
    ("resnet32x4", "resnet8x4", [(1, 1), (2, 2), (3, 3)]),  # mdistiller's CIFAR pair: 3 stages after the stem
    ("resnet50", "mobilenet_v1", [(1, 1), (2, 2), (3, 3), (4, 4)]),  # the OFD authors' 4 ImageNet positions
    ("vgg13", "MobileNetV2", [(1, 1), (2, 2), (3, 3), (4, 4)]),  # MobileNetV2's head conv is not paired
    ("resnet32x4", "ShuffleV2", [(1, 1), (2, 2), (3, 3)]),  # nor ShuffleNetV2's
    ("wrn_40_2", "wrn_16_2", [(1, 1), (2, 2), (3, 3)]),
    ("mnist1d_cnn", "mnist1d_cnn_small", [(1, 3)]),
])
def test_ofd_pairs_the_stages_after_the_stem_from_the_deepest(teacher, student, pairs):
    method, _ = _build("ofd", teacher, student, n=4)
    assert method._pairs == pairs
    norms = method.teacher.module.stage_norms()
    for (s_i, t_i), conn, margin in zip(pairs, method.connectors, method.margins.values()):
        torch.testing.assert_close(margin, L.ofd_margin(norms[t_i].weight, norms[t_i].bias).float())
        assert conn[0].out_channels == norms[t_i].num_features and conn[0].kernel_size[0] == 1


def test_ofd_stages_argument_and_its_bound():
    method, _ = _build("ofd", "resnet32x4", "resnet8x4", {"stages": 2}, n=4)
    assert method._pairs == [(2, 2), (3, 3)]
    with pytest.raises(SettingError, match=r"ofd: method.args.stages=4, but .* only 3 stage pairs"):
        _build("ofd", "resnet32x4", "resnet8x4", {"stages": 4}, n=4)


@pytest.mark.parametrize("batch_statistics", [True, False])
def test_ofd_step_equals_the_loss_of_the_connected_pre_activations(batch_statistics):
    method, loader = _build("ofd", "resnet32x4", "resnet8x4", {"connector_kernel": 3,
                                                                "teacher_batch_statistics": batch_statistics})
    batch = _first_batch(loader)
    teacher_state = copy.deepcopy(method.teacher.module.state_dict())
    # the reference's teacher: in training mode (OFD's released code and mdistiller), or the frozen one
    reference_teacher = copy.deepcopy(method.teacher.module).train(batch_statistics)
    method.train()
    out = method(batch, epoch=1)
    for k, v in method.teacher.module.state_dict().items():
        assert torch.equal(v, teacher_state[k]), f"the teacher's {k} changed"
    assert not method.teacher.module.training
    with torch.no_grad():
        z, s = method.student.forward_features(batch.x, preact=True)
        _, t = reference_teacher.forward_features(batch.x, preact=True)
    # the connectors are in training mode (BN over the batch), as in the step
    students = [method.connectors[i](s["preact"][p[0]]) for i, p in enumerate(method._pairs)]
    teachers = [t["preact"][p[1]] for p in method._pairs]
    expected = 1e-3 * L.ofd_loss(students, teachers, method.margins.values())
    torch.testing.assert_close(out.losses["ofd"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.losses["ce"], F.cross_entropy(z, batch.y))
    assert method.connectors[0][0].kernel_size == (3, 3)


@pytest.mark.parametrize("teacher,student,match", [
    ("ShuffleV1", "resnet8", r"teacher \(ShuffleNetV1\) has none before stage 1; choose a teacher.arch whose"),
    ("mnist1d_mlp", "mnist1d_cnn_small", r"teacher \(MLP1d\) has none before stage 1"),
])
def test_ofd_refuses_a_teacher_without_batchnorm_before_its_relus(teacher, student, match):
    with pytest.raises(SettingError, match=match):
        _build("ofd", teacher, student, n=4)


def test_feature_methods_refuse_networks_without_pre_activations():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool1d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 10))
    x = torch.randn(2, 1, 40)
    teacher = FrozenTeacher(models.create("mnist1d_cnn", 10))
    with pytest.raises(SettingError, match=r"features could not be read.*Sequential gives no pre-activation"):
        methods.create("ofd", net, teacher, 10, probe=x)
    with pytest.raises(SettingError, match=r"features could not be read.*Sequential gives no pre-activation"):
        methods.create("reviewkd", net, teacher, 10, {"student_preact": True}, probe=x)
    with pytest.raises(SettingError, match=r"the student \(Sequential\) gives none .* zoo network as student.arch"):
        methods.create("reviewkd", net, teacher, 10, probe=x)
    with pytest.raises(SettingError, match=r"features could not be read.*Sequential gives no pre-activation"):
        methods.create("reviewkd", models.create("mnist1d_cnn_small", 10), FrozenTeacher(net), 10, probe=x)


# ---------------------------------------------------------------------------------------------------------------------
# ReviewKD


@pytest.mark.parametrize("teacher,student,in_channels,out_channels,mid", [
    # mdistiller's configs/cifar100/reviewkd.yaml and configs/imagenet/*/reviewkd.yaml, and the released CIFAR code's
    ("resnet32x4", "resnet8x4", [64, 128, 256, 256], [64, 128, 256, 256], 256),
    ("resnet34", "resnet18", [64, 128, 256, 512, 512], [64, 128, 256, 512, 512], 512),
    ("resnet50", "mobilenet_v1", [128, 256, 512, 1024, 1024], [256, 512, 1024, 2048, 2048], 512),
    ("vgg13", "MobileNetV2", [12, 16, 48, 160, 1280], [128, 256, 512, 512, 512], 512),
    ("resnet32x4", "ShuffleV2", [116, 232, 464, 1024], [64, 128, 256, 256], 512),
    ("wrn_40_2", "ShuffleV1", [240, 480, 960, 960], [32, 64, 128, 128], 512),
    ("wrn_40_2", "wrn_16_2", [32, 64, 128, 128], [32, 64, 128, 128], 128),
])
def test_reviewkd_levels_reproduce_the_released_channel_lists(teacher, student, in_channels, out_channels, mid):
    method, _ = _build("reviewkd", teacher, student, n=2)
    assert [abf.conv1[0].in_channels for abf in method.abfs] == in_channels
    assert [abf.conv2[0].out_channels for abf in method.abfs] == out_channels
    assert {abf.conv1[0].out_channels for abf in method.abfs} == {mid}
    assert [abf.att_conv is not None for abf in method.abfs] == [True] * (len(in_channels) - 1) + [False]


def reference_review(abfs, student_levels, shapes, out_shapes):
    """mdistiller's ReviewKD.forward_train and ABF.forward, written out with the method's modules (abfs in the
    reference's deepest-first order)."""
    x = student_levels[::-1]

    def abf(m, x, y=None, shape=None, out_shape=None):
        n, _, h, w = x.shape
        x = m.conv1(x)
        if m.att_conv is not None:
            y = F.interpolate(y, (shape, shape), mode="nearest")
            z = m.att_conv(torch.cat([x, y], dim=1))
            x = x * z[:, 0].view(n, 1, h, w) + y * z[:, 1].view(n, 1, h, w)
        if x.shape[-1] != out_shape:
            x = F.interpolate(x, (out_shape, out_shape), mode="nearest")
        return m.conv2(x), x

    results = []
    out, res = abf(abfs[0], x[0], out_shape=out_shapes[0])
    results.append(out)
    for features, m, shape, out_shape in zip(x[1:], abfs[1:], shapes[1:], out_shapes[1:]):
        out, res = abf(m, features, res, shape, out_shape)
        results.insert(0, out)
    return results


def test_reviewkd_step_equals_the_reference_computation():
    method, loader = _build("reviewkd", "resnet32x4", "resnet8x4", {"reviewkd_weight": 5.0})
    batch = _first_batch(loader)
    method.train()
    out = method(batch, epoch=4)  # warm-up 20 of 240 epochs, at epoch 4: weight 4/20
    with torch.no_grad():
        _, s = method.student.forward_features(batch.x)
        _, t = method.teacher.module.forward_features(batch.x, preact=True)
    students = s["stages"][1:] + [s["pooled"][:, :, None, None]]
    teachers = t["preact"][1:] + [t["pooled"][:, :, None, None]]
    shapes = [1, 8, 16, 32]  # mdistiller's REVIEWKD.SHAPES and OUT_SHAPES for this pair
    results = reference_review(list(method.abfs)[::-1], students, shapes, shapes)
    expected = 5.0 * 4 / 20 * L.hcl_loss(results, teachers)
    torch.testing.assert_close(out.losses["reviewkd"], expected, rtol=1e-5, atol=1e-6)
    assert float(out.logs["warmup"]) == pytest.approx(0.2)


def test_reviewkd_student_preact_switch():
    a, loader = _build("reviewkd", "resnet34", "resnet18", {"student_preact": True}, n=2)
    assert a.preact("student") and a.preact("teacher")
    b, _ = _build("reviewkd", "resnet34", "resnet18", n=2)
    assert not b.preact("student") and b.preact("teacher")


def test_reviewkd_warmup_is_fitted_to_a_short_run():
    from kdlab.methods import RunFacts

    cls = methods.get("reviewkd")
    hp, changes = cls.adapt(cls.Params(), RunFacts(10, 20, (1, 40)), given=set())
    assert hp.warmup == 2 and [c.key for c in changes] == ["warmup"]
    hp, changes = cls.adapt(cls.Params(warmup=5), RunFacts(10, 20, (1, 40)), given={"warmup"})
    assert hp.warmup == 5 and not changes


# ---------------------------------------------------------------------------------------------------------------------
# CRD


def _crd(args=None, n=40, seed=0, student="mnist1d_cnn_small"):
    return _build("crd", "mnist1d_cnn", student, {"num_negatives": 12, "embed_dim": 16, **(args or {})}, n=n,
                  seed=seed)


def test_crd_bank_is_state_of_the_method():
    method, _ = _crd()
    state = method.state_dict()
    assert state["bank.student"].shape == state["bank.teacher"].shape == (40, 16)
    assert state["bank.z"].tolist() == [-1.0, -1.0] and int(state["bank.step"]) == 0
    std = 1 / math.sqrt(16 / 3)
    assert float(state["bank.student"].abs().max()) <= std  # the released code's uniform initialisation
    assert method.embed_s.linear.in_features == 16 and method.embed_t.linear.in_features == 64
    assert method.dense  # 40 rows for 13 scored: one product with the whole bank


def test_crd_negatives_are_other_classes_seeded_by_step():
    method, _ = _crd({"num_negatives": 30})  # 40 samples of 10 classes: 36 of other classes, 30 distinct drawn
    index = torch.tensor([0, 5, 17, 33])
    neg = method.negatives(index, step=3)
    labels = method._sampling["labels"]
    assert neg.shape == (4, 30) and not method._sampling["replace"]
    assert (labels[neg] != labels[index].unsqueeze(1)).all()
    assert all(len(set(row.tolist())) == 30 for row in neg)
    assert torch.equal(neg, method.negatives(index, step=3))
    assert not torch.equal(neg, method.negatives(index, step=4))
    many, _ = _crd({"num_negatives": 50})  # more than the other classes hold: drawn with replacement
    neg = many.negatives(index, step=0)
    assert many._sampling["replace"] and neg.shape == (4, 50)
    assert (labels[neg] != labels[index].unsqueeze(1)).all() and neg.max() < 40
    # without replacement, each other-class sample is equally likely (chi-square over many draws)
    counts = torch.bincount(method.negatives(torch.zeros(2000, dtype=torch.long), step=7).flatten(), minlength=40)
    assert counts[labels == 0].sum() == 0
    assert counts[labels != 0].float().std() / counts[labels != 0].float().mean() < 0.05


def reference_contrast(bank_s, bank_t, f_s, f_t, rows, num_data, temperature, momentum, index):
    """mdistiller's ContrastMemory.forward (Z from the first batch) and two ContrastLosses, written out."""
    k1, d = rows.shape[1], f_s.shape[1]
    w1 = bank_s[rows.view(-1)].view(-1, k1, d)  # memory_v1 (student bank) scored with the teacher embedding
    out_v2 = torch.exp(torch.bmm(w1, f_t.view(-1, d, 1)) / temperature)
    w2 = bank_t[rows.view(-1)].view(-1, k1, d)
    out_v1 = torch.exp(torch.bmm(w2, f_s.view(-1, d, 1)) / temperature)
    z1, z2 = out_v1.mean() * num_data, out_v2.mean() * num_data
    out_v1, out_v2 = (out_v1 / z1).squeeze(2), (out_v2 / z2).squeeze(2)

    def contrast_loss(x):
        eps, m, pn = 1e-7, x.size(1) - 1, 1 / float(num_data)
        p_pos = x[:, 0]
        log_d1 = torch.log(p_pos / (p_pos + m * pn + eps))
        log_d0 = torch.log((m * pn) / (x[:, 1:] + m * pn + eps))
        return -(log_d1.sum() + log_d0.sum()) / x.shape[0]

    new_s = bank_s.clone()
    pos = bank_s[index] * momentum + f_s * (1 - momentum)
    new_s[index] = pos / pos.pow(2).sum(1, keepdim=True).pow(0.5)
    new_t = bank_t.clone()
    pos = bank_t[index] * momentum + f_t * (1 - momentum)
    new_t[index] = pos / pos.pow(2).sum(1, keepdim=True).pow(0.5)
    return contrast_loss(out_v1) + contrast_loss(out_v2), new_s, new_t


@pytest.mark.parametrize("negatives", [12, 3])  # the dense path (40 ≤ 8·13) and the gathered rows (40 > 8·4)
def test_crd_step_equals_the_reference_computation(negatives):
    method, loader = _crd({"num_negatives": negatives})
    assert method.dense == (negatives == 12)
    batch = _first_batch(loader)
    bank_s, bank_t = method.bank.student.clone(), method.bank.teacher.clone()
    method.train()
    out = method(batch, epoch=1)
    with torch.no_grad():
        _, s = method.student.forward_features(batch.x)
        _, t = method.teacher.module.forward_features(batch.x)
        f_s, f_t = method.embed_s(s["pooled"]), method.embed_t(t["pooled"])
    rows = torch.cat([batch.index.unsqueeze(1), method.negatives(batch.index, step=0)], dim=1)
    loss, new_s, new_t = reference_contrast(bank_s, bank_t, f_s, f_t, rows, 40, 0.07, 0.5, batch.index)
    torch.testing.assert_close(out.losses["crd"], 0.8 * loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(method.bank.student, new_s, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(method.bank.teacher, new_t, rtol=1e-6, atol=1e-6)
    assert int(method.bank.step) == 1 and (method.bank.z > 0).all()
    z = method.bank.z.clone()
    method(batch, epoch=1)
    assert torch.equal(method.bank.z, z) and int(method.bank.step) == 2  # Z is fixed once


def test_crd_resumed_from_its_state_continues_bit_for_bit():
    def run(method, opt, loader, epochs):
        losses = []
        method.train()
        for epoch in epochs:
            loader.set_epoch(epoch)
            for batch in loader:
                out = method(batch, epoch)
                opt.zero_grad()
                out.total.backward()
                opt.step()
                losses.append(float(out.losses["crd"].detach()))
        return losses

    def sgd(method):
        return torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1, momentum=0.9)

    a, loader = _crd()
    opt = sgd(a)
    run(a, opt, loader, [1])
    state, opt_state = {k: v.clone() for k, v in a.state_dict().items()}, copy.deepcopy(opt.state_dict())
    rest = run(a, opt, loader, [2, 3])
    b, _ = _crd()  # the same construction (the teacher is not state), then scrambled: the rest comes from the state
    with torch.no_grad():
        for v in b.state_dict().values():
            v.copy_(v.flip(0) if v.dim() else v + 7)
    b.load_state_dict(state)
    opt_b = sgd(b)
    opt_b.load_state_dict(opt_state)
    assert run(b, opt_b, loader, [2, 3]) == rest and len(rest) == 10
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_crd_refuses_data_without_stable_sample_indices():
    method, loader = _crd()
    batch = _first_batch(loader)
    mixed = Batch(x=batch.x, y=batch.y, index=batch.index, label_mask=torch.ones_like(batch.y, dtype=torch.bool))
    with pytest.raises(SettingError, match=r"crd: distill_data adds inputs that are not training samples"):
        method(mixed, 1)
    x, y = torch.randn(8, 1, 40), torch.arange(8)
    offset = BatchLoader(x, y, batch_size=4, index_offset=100)
    with pytest.raises(SettingError, match=r"index_offset=100 to its batch indices"):
        methods.create("crd", models.create("mnist1d_mlp", 10), FrozenTeacher(models.create("mnist1d_cnn", 10)), 10,
                       probe=x[:2], data=offset)

    class Unlabelled:
        labels = None

    with pytest.raises(SettingError, match=r"does not give every label up front"):
        methods.create("crd", models.create("mnist1d_mlp", 10), FrozenTeacher(models.create("mnist1d_cnn", 10)), 10,
                       probe=x[:2], data=Unlabelled())
    with pytest.raises(RuntimeError, match=r"call method.setup_data\(train_loader\) before setup"):
        methods.create("crd", models.create("mnist1d_mlp", 10), FrozenTeacher(models.create("mnist1d_cnn", 10)), 10,
                       probe=x[:2])


@pytest.mark.parametrize("name", ["ofd", "reviewkd"])
def test_ofd_and_reviewkd_train_on_unlabelled_inputs(name):
    """Their labels enter through CE alone, so a distillation-data policy's unlabelled inputs (y = −1) are fine."""
    method, loader = _build(name, "mnist1d_cnn", "mnist1d_cnn_small")
    batch = _first_batch(loader)
    mask = torch.arange(len(batch.y)) % 2 == 0
    y = torch.where(mask, batch.y, torch.full_like(batch.y, -1))
    method.train()
    out = method(Batch(x=batch.x, y=y, index=batch.index, label_mask=mask), 1)
    torch.testing.assert_close(out.losses["ce"], F.cross_entropy(out.logits[mask], y[mask]))
    assert torch.isfinite(out.losses[name])
