"""Method.adapt: the defaults that only suit CIFAR-100 (100 classes, 240 epochs, 32×32 images) are fitted to the run;
values the user gave are kept, or refused when they cannot work. And `kdlab methods`' one-line summaries."""

import pytest
import torch
from torch import nn

from kdlab import methods
from kdlab._checks import SettingError
from kdlab.data.batch import Batch
from kdlab.methods import RunFacts
from kdlab.teachers.frozen import FrozenTeacher


def _adapt(name, facts, given=(), **args):
    cls = methods.get(name)
    return cls.adapt(cls.Params(**args), facts, list(given) + list(args))


def test_ttm_beta_is_scaled_by_the_class_count_below_100_classes():
    hp, changes = _adapt("ttm", RunFacts(2, 240, (30,)))
    assert hp.beta == 2.0 and [c.key for c in changes] == ["beta"] and "C/100" in changes[0].why
    assert _adapt("ttm", RunFacts(100, 240, (3, 32, 32)))[1] == []  # CIFAR-100: the published default
    assert _adapt("ttm", RunFacts(2, 240, (30,)), beta=100.0)[0].beta == 100.0  # given: kept
    assert _adapt("wttm", RunFacts(2, 240, (30,)))[1] == []  # U_γ already scales WTTM's term


def test_unknown_given_keys_adapt_nothing():
    cls = methods.get("ttm")
    assert cls.adapt(cls.Params(), RunFacts(2, 240, (30,)), None)[1] == []  # a config of unknown origin


@pytest.mark.parametrize("classes, k", [(2, 1), (5, 4), (6, 5), (100, 5)])
def test_cakd_default_k_leaves_a_weak_set(classes, k):
    hp, _ = _adapt("cakd", RunFacts(classes, 240, (3, 32, 32)))
    assert hp.k == k


def test_cakd_given_k_beyond_the_classes_is_an_error_naming_the_key():
    with pytest.raises(SettingError, match=r"cakd: method\.args\.k=7 exceeds the number of classes \(5\)"):
        _adapt("cakd", RunFacts(5, 240, (3, 32, 32)), k=7)
    assert _adapt("cakd", RunFacts(5, 240, (3, 32, 32)), k=5)[0].k == 5  # S = every class: defined, kept


@pytest.mark.parametrize("name", ["dkd", "cakd"])
@pytest.mark.parametrize("epochs, warmup", [(10, 1), (60, 5), (120, 10), (240, 20), (400, 20)])
def test_default_warmup_is_dkds_share_of_the_run(name, epochs, warmup):
    hp, _ = _adapt(name, RunFacts(10, epochs, (1, 40)))
    assert hp.warmup == warmup
    assert _adapt(name, RunFacts(10, epochs, (1, 40)), warmup=20)[0].warmup == 20


def test_cakd_input_shape_is_refused_with_its_reason():
    """The feature shapes are read from a batch of the data (Method.setup), so the old probe argument is gone: a
    config that still gives it is told why, not silently accepted."""
    with pytest.raises(ValueError, match=r"'input_shape' is no longer an argument \(the feature shapes are read "
                                         r"from a batch of the data\); remove it"):
        methods.get("cakd").Params(feature=True, input_shape=[1, 40])
    # nothing shape-related to adapt (β is fitted to the 10 classes)
    assert [c.key for c in _adapt("cakd", RunFacts(10, 240, (1, 40)), feature=True)[1]] == ["beta"]


def test_every_method_has_a_plain_one_line_summary():
    for name in methods.names():
        text = methods.get(name).summary
        assert text and "\n" not in text and "`" not in text and len(text) < 110, name


# ------------------------------------------------------------------------------------------------------------------
# CAKD's feature level on a user's model without forward_features
# ------------------------------------------------------------------------------------------------------------------
class _Conv(nn.Module):
    """A user's 1-D CNN: no forward_features, stages named `body`, then `head`."""

    def __init__(self, width):
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(1, width, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(width, 4)

    def forward(self, x):
        return self.head(self.body(x).mean(-1))


def _cakd(args):
    torch.manual_seed(0)
    return methods.create("cakd", _Conv(8), FrozenTeacher(_Conv(16)), 4, {"feature": True, "k": 2, **args},
                          probe=torch.randn(2, 1, 12))


def test_cakd_features_without_forward_features_say_how_to_name_a_stage():
    with pytest.raises(SettingError, match=r"the student \(_Conv\) has no forward_features, so name the module whose "
                                           r"output is its feature map in method\.args\.student_stage: .*top-level "
                                           r"modules: body, head"):
        _cakd({})


def test_cakd_features_by_module_path():
    method = _cakd({"student_stage": "body", "teacher_stage": "body"})
    x = torch.randn(6, 1, 12)
    out = method(Batch(x=x, y=torch.randint(0, 4, (6,)), index=torch.arange(6)), 30)
    assert set(out.losses) == {"ce", "cakd", "cakd_feat"} and torch.isfinite(out.losses["cakd_feat"])
    assert tuple(method.connector[0].weight.shape) == (16, 8, 1)  # student 8 → teacher 16 channels


def test_a_feature_method_without_its_setup_says_what_to_call():
    method = methods.create("cakd", _Conv(8), FrozenTeacher(_Conv(16)), 4,
                            {"feature": True, "k": 2, "student_stage": "body", "teacher_stage": "body"})
    batch = Batch(x=torch.randn(6, 1, 12), y=torch.randint(0, 4, (6,)), index=torch.arange(6))
    with pytest.raises(RuntimeError, match=r"call method\.setup\(x\) with a few real inputs"):
        method(batch, 30)
    method.setup(batch.x)
    assert torch.isfinite(method(batch, 30).losses["cakd_feat"])


# ------------------------------------------------------------------------------------------------------------------
# Defaults on small data (benchmarks/small_data.py, docs/methods/README.md "Defaults on small data")
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("m", [1, 2, 9, 99])
def test_kl_curvature_in_the_logits_is_one_over_the_class_count(m):
    """The premise of scaled_by_classes: the Hessian of KL(p ‖ softmax(z)) in z is diag(q) − qqᵀ, whose largest
    eigenvalue is 1/m at a uniform q over m classes (0 for m = 1: a one-class softmax is constant)."""
    p = torch.softmax(torch.randn(m, dtype=torch.float64, generator=torch.Generator().manual_seed(m)), 0)

    def kl(z):
        return (p * (p.log() - torch.log_softmax(z, 0))).sum()

    top = torch.linalg.eigvalsh(torch.autograd.functional.hessian(kl, torch.zeros(m, dtype=torch.float64)))[-1]
    assert top.item() == pytest.approx(1 / m if m > 1 else 0.0, abs=1e-12)


@pytest.mark.parametrize("name, args", [("dkd", {}), ("sdd", {}), ("ctkd", {"base": "dkd"})])
@pytest.mark.parametrize("classes", [2, 3, 10, 50])
def test_nckd_beta_is_scaled_by_the_non_target_class_count(name, args, classes):
    hp, changes = _adapt(name, RunFacts(classes, 240, (3, 32, 32)), **args)
    assert hp.beta == pytest.approx(8.0 * (classes - 1) / 99)
    assert [c.why for c in changes if c.key == "beta"] == [
        f"NCKD's weight for CIFAR-100's 99 non-target classes, scaled by (C − 1)/99 to {classes - 1}"]
    assert _adapt(name, RunFacts(classes, 240, (3, 32, 32)), beta=8.0, **args)[0].beta == 8.0  # given: kept
    for many in (100, 1000):  # CIFAR-100 and more classes: the recipe's β
        assert _adapt(name, RunFacts(many, 240, (3, 32, 32)), **args)[0].beta == 8.0


@pytest.mark.parametrize("classes", [2, 10, 100])
def test_nkd_gamma_is_scaled_by_the_non_target_class_count(classes):
    hp, changes = _adapt("nkd", RunFacts(classes, 240, (3, 32, 32)))
    assert hp.gamma == pytest.approx(3.5 * min(classes - 1, 99) / 99)
    assert [c.key for c in changes] == (["gamma"] if classes < 100 else [])
    assert _adapt("nkd", RunFacts(classes, 240, (3, 32, 32)), gamma=1.5)[0].gamma == 1.5  # ImageNet's, given


def test_ctkd_with_its_kd_base_has_no_beta_to_adapt():
    assert [c.key for c in _adapt("ctkd", RunFacts(10, 240, (1, 8, 8)))[1]] == []


@pytest.mark.parametrize("classes, args, beta", [
    (10, {}, 8.0 * 5 / 95), (3, {}, 8.0 * 1 / 95), (2, {}, 8.0 * 1 / 95),  # top-k: |W| = C − k, k ≤ C − 1
    (10, {"k": 3}, 8.0 * 7 / 97),  # a given k is the recipe's too
    (10, {"strong_set": "target"}, 8.0 * 9 / 99),  # S = {y}: W = the C − 1 non-target classes, DKD's NCKD
    (10, {"strong_set": "mass"}, 8.0),  # |W| depends on the teacher: not adapted
    (100, {}, 8.0)])
def test_cakd_wcd_beta_is_scaled_by_the_weak_set_size(classes, args, beta):
    assert _adapt("cakd", RunFacts(classes, 240, (3, 32, 32)), **args)[0].beta == pytest.approx(beta)


@pytest.mark.parametrize("name, key, shape, value", [
    ("r2kd", "augment", (13,), "none"), ("r2kd", "augment", (1, 8, 8), "cutmix"), ("r2kd", "augment", (1, 40), "cutmix"),
    ("mlkd", "strong_augment", (13,), "none"), ("mlkd", "strong_augment", (1, 8, 8), "cutout"),
    ("mlkd", "strong_augment", (1, 40), "cutout"), ("mlkd", "strong_augment", (3, 32, 32), "randaugment")])
def test_second_views_fit_the_input_shape(name, key, shape, value):
    assert getattr(_adapt(name, RunFacts(10, 240, shape))[0], key) == value
    given = "cutout" if name == "r2kd" else "none"
    assert getattr(_adapt(name, RunFacts(10, 240, shape), **{key: given})[0], key) == given


@pytest.mark.parametrize("classes, args, expected", [
    (100, {}, {"kd_weight": 0.9, "class_weight": None, "batch_weight": None}),  # CIFAR-100: as released
    (1000, {}, {"kd_weight": 0.9, "class_weight": None, "batch_weight": None}),  # ImageNet: as released
    (10, {}, {"kd_weight": 0.09, "class_weight": 0.09 * 0.1 ** 3, "batch_weight": 0.09 * 0.1 ** 2}),
    (3, {}, {"kd_weight": 0.027, "class_weight": 0.027 * 0.03 ** 3, "batch_weight": 0.027 * 0.03 ** 2}),
    (10, {"kd_weight": 0.5}, {"kd_weight": 0.5, "class_weight": 0.5e-3, "batch_weight": 0.5e-2}),  # given: kept
    (10, {"class_weight": 0.9, "batch_weight": 0.0}, {"kd_weight": 0.09, "class_weight": 0.9, "batch_weight": 0.0})])
def test_mlkd_weights_keep_the_recipes_balance_of_its_three_terms(classes, args, expected):
    hp, changes = _adapt("mlkd", RunFacts(classes, 240, (3, 32, 32)), **args)
    for key, value in expected.items():
        assert getattr(hp, key) == (None if value is None else pytest.approx(value)), key
    assert {c.key for c in changes} == {k for k in expected if k not in args and classes < 100}


@pytest.mark.parametrize("classes, args, weight", [(100, {}, 2.0), (1000, {}, 2.0), (10, {}, 0.2), (3, {}, 0.06),
                                                   (10, {"value_weight": 2.0}, 2.0)])
def test_r2kd_value_weight_is_scaled_by_the_class_count_below_100_classes(classes, args, weight):
    hp, changes = _adapt("r2kd", RunFacts(classes, 240, (3, 32, 32)), **args)
    assert hp.value_weight == pytest.approx(weight)
    assert [c.key for c in changes] == (["value_weight"] if weight != 2.0 else [])


def test_the_cosine_distance_is_as_stiff_as_the_kl_on_softened_rows():
    """Why R2KD's value weight follows the KL's C/100: near a softened teacher row, the Hessian in the logits of
    T²·(1 − cos(softmax(z/T), p_t)) and of T²·KL(p_t ‖ softmax(z/T)) both scale as 1/C."""
    from torch.autograd.functional import hessian

    from kdlab.losses import kd_loss

    def top(loss, c):
        g = torch.Generator().manual_seed(c)
        v = 0.3 * torch.randn(1, c, dtype=torch.float64, generator=g)
        cos = lambda z: 16 * (1 - torch.nn.functional.cosine_similarity(  # noqa: E731
            torch.softmax(z / 4, 1), torch.softmax(v / 4, 1)).sum())
        kl = lambda z: kd_loss(z, v, temperature=4.0)  # noqa: E731
        return torch.linalg.eigvalsh(hessian(cos if loss == "cos" else kl, v.clone()).reshape(c, c)).max().item()

    for loss in ("cos", "kl"):
        ratio = top(loss, 10) / top(loss, 100)
        assert 7 < ratio < 13, (loss, ratio)  # ≈ 100/10


def test_logit_standardisation_on_two_classes_is_refused_because_its_gradient_is_zero():
    from kdlab.losses import kd_loss, logit_standardize

    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 2, dtype=torch.float64, generator=g, requires_grad=True)
    v = torch.randn(16, 2, dtype=torch.float64, generator=g)
    kd_loss(logit_standardize(z), logit_standardize(v), temperature=2.0).backward()
    plain = torch.autograd.grad(kd_loss(z, v, temperature=2.0), z)[0]
    # the reason: the term cannot move the student (what is left is the 1e-7 eps in the std's denominator)
    assert z.grad.abs().max().item() < 1e-5 < 1e-2 < plain.abs().max().item()
    with pytest.raises(SettingError, match=r"^kd_ls: logit standardisation maps the 2 logits of a 2-class sample to "
                                           r"±1/√2, so its distillation term has no gradient; set "
                                           r"method\.args\.logit_standardization to false"):
        _adapt("kd_ls", RunFacts(2, 240, (30,)))
    with pytest.raises(SettingError, match=r"^dkd: logit standardisation"):
        _adapt("dkd", RunFacts(2, 240, (30,)), logit_standardization=True)
    assert _adapt("kd_ls", RunFacts(3, 240, (30,)))[0].logit_standardization  # 3 classes: a shape is left


def test_every_shipped_cifar100_recipe_resolves_unchanged():
    """The adaptations fit other data; on CIFAR-100 (100 classes, 3×32×32) no recipe's arguments change."""
    from kdlab import builder
    from kdlab.config.load import recipe_names

    names = [r for r in recipe_names() if r.startswith("cifar100/")]
    assert len(names) > 300
    for name in names:
        cfg = builder.load_config(name)
        plan = builder.plan(cfg, 100, (3, 32, 32))
        assert plan.adapted_defaults() == [], name
        cls = methods.get(cfg.method.name)
        assert plan.params == cls.Params.model_validate(cfg.method.args or {}), name
        for part, section in zip(plan.added, cfg.method.add):
            assert part.params == methods.get(section.name).Params.model_validate(section.args or {}), name
