"""The feature methods' weights fitted to the run's maps (FeatureLossMethod._adaptations, docs/methods/README.md
"Defaults fitted to the maps"): w·S_CIFAR/S_run, S the pull of the term on the maps it reads; the CIFAR-100 recipes
resolve unchanged, a given weight is kept, unknown shapes adapt nothing."""

import math

import pytest

from kdlab import builder, methods, models
from kdlab.config import RECIPES_DIR
from kdlab.methods import RunFacts
from kdlab.methods.feature import CIFAR_STAGES, FeatureLossMethod

MNIST1D = {"student": models.stage_shapes("mnist1d_cnn_small", 10, (1, 40)),
           "teacher": models.stage_shapes("mnist1d_cnn", 10, (1, 40))}
# the MNIST-1D recipes' stage choices (configs/mnist1d/<name>.yaml)
MNIST1D_STAGES = {"at": {"student_stages": [0, 1], "teacher_stages": [2, 3]},
                  "nst": {"student_stages": [0, 1], "teacher_stages": [2, 3]},
                  "fitnet": {"student_stage": 0, "teacher_stage": 2}, "sp": {}}


def _at(stages):  # Σ 1/(P·√(C·P)) over (C, P) of the student's maps, P the matched positions
    return sum(1 / (p * math.sqrt(c * p)) for c, p in stages)


def _sqrt(stages):  # Σ 1/√(C·P)
    return sum(1 / math.sqrt(c * p) for c, p in stages)


CIFAR = [(64, 1024), (128, 256), (256, 64)]  # resnet8x4's stages after the stem on 32×32 images
# the adapted weights written as facts from the formulas: (default, S_CIFAR, S_MNIST-1D); MNIST-1D student maps
# (16, 20) and (16, 10), the FitNet hint the teacher's (64, 20), SP the student's last (16, 10)
EXPECTED = {
    "at": (1000.0, _at(CIFAR), _at([(16, 20), (16, 10)])),
    "nst": (50.0, _sqrt(CIFAR), _sqrt([(16, 20), (16, 10)])),
    "fitnet": (100.0, _sqrt([(128, 256)]), _sqrt([(64, 20)])),
    "sp": (3000.0, _sqrt([(256, 64)]), _sqrt([(16, 10)])),
}


def _adapt(name, stages, given=(), **args):
    cls = methods.get(name)
    return cls.adapt(cls.Params(**args), RunFacts(10, 20, (1, 40), stages), list(given) + list(args))


def test_the_cifar_reference_is_the_zoos_resnet32x4_resnet8x4_on_32px():
    assert CIFAR_STAGES == {"student": models.stage_shapes("resnet8x4", 100, (3, 32, 32)),
                            "teacher": models.stage_shapes("resnet32x4", 100, (3, 32, 32))}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_default_weight_is_scaled_by_the_pull_on_the_maps(name):
    default, ref, run = EXPECTED[name]
    hp, changes = _adapt(name, MNIST1D, **MNIST1D_STAGES[name])
    assert hp.feat_weight == pytest.approx(default * ref / run, rel=5e-3)  # 3 significant digits
    assert [(c.key, c.default) for c in changes] == [("feat_weight", default)] and "CIFAR-100" in changes[0].why
    assert hp.feat_weight < default  # smaller maps, fewer channels: the same weight would pull harder


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_given_weight_paths_and_unknown_shapes_adapt_nothing(name):
    assert _adapt(name, MNIST1D, feat_weight=1000.0, **MNIST1D_STAGES[name])[1] == []
    assert _adapt(name, None, **MNIST1D_STAGES[name])[1] == []  # a factory network: shapes unknown
    assert _adapt(name, MNIST1D, student_paths=["a"], teacher_paths=["b"])[1] == []  # hooked modules
    assert _adapt(name, CIFAR_STAGES)[1] == []  # the reference pair: the published weight
    cls = methods.get(name)
    assert cls.adapt(cls.Params(), RunFacts(10, 20, (1, 40), MNIST1D), None)[1] == []  # given unknown


def test_a_stage_the_network_lacks_adapts_nothing_and_is_left_to_the_runs_own_error():
    assert _adapt("at", MNIST1D, student_stages=[0, 5], teacher_stages=[2, 3])[1] == []


def test_at_pull_scales_as_its_gradient():
    """Identities of the AT formula: 4× the positions at the same channels pull 8× less; 4× the channels 2× less."""
    at = methods.get("at")
    hp = at.Params(student_stages=[0], teacher_stages=[0])
    one = at.stiffness(hp, {"student": [(16, 10)], "teacher": [(64, 10)]})
    assert at.stiffness(hp, {"student": [(16, 40)], "teacher": [(64, 40)]}) == pytest.approx(one / 8)
    assert at.stiffness(hp, {"student": [(64, 10)], "teacher": [(64, 10)]}) == pytest.approx(one / 2)
    # maps of different sizes are pooled to the smaller: the matched positions count
    assert at.stiffness(hp, {"student": [(16, 40)], "teacher": [(64, 10)]}) == pytest.approx(one)


def test_imagenet_default_at_weight_lands_next_to_the_published_one():
    """The rule's check on a published setting it was not fitted to: resnet34 → resnet18 on 224 px ImageNet, whose
    AT weight is 1000 (mdistiller configs/imagenet/r34_r18/at.yaml): the adapted default is within 10 % of it."""
    stages = {"student": models.stage_shapes("resnet18", 1000, (3, 224, 224)),
              "teacher": models.stage_shapes("resnet34", 1000, (3, 224, 224))}
    hp, _ = _adapt("at", stages)
    assert 900 < hp.feat_weight < 1100


def _feature_recipes(data):
    for path in sorted((RECIPES_DIR / data).rglob("*.yaml")):
        cfg = builder.load_config(str(path), [])
        if issubclass(methods.get(cfg.method.name), FeatureLossMethod) or cfg.method.name in ("ofd", "crd",
                                                                                             "reviewkd"):
            yield path, cfg


def test_every_shipped_cifar100_feature_recipe_resolves_unchanged():
    paths = []
    for path, cfg in _feature_recipes("cifar100"):
        p = builder.plan(cfg, 100, (3, 32, 32))
        cls = methods.get(cfg.method.name)
        assert p.adaptations == (), path
        assert p.params == cls.Params.model_validate(cfg.method.args or {}), path
        paths.append(path)
    # every distillation pair × every feature method (dot is an optimiser: kd_dot); a self-distillation pair
    # (teacher = student architecture, Stanton et al.'s resnet56-resnet56) ships only its fidelity recipes
    pairs = [d for d in (RECIPES_DIR / "cifar100").iterdir() if "-" in d.name and len(set(d.name.split("-"))) == 2]
    assert len(paths) == len(pairs) * 11


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_cifar_recipe_pair_left_at_defaults_is_not_adapted(name):
    cfg = builder.load_config(f"cifar100/resnet32x4-resnet8x4/{name}", ["method.args={}"])
    assert builder.plan(cfg, 100, (3, 32, 32)).adaptations == ()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_mnist1d_recipe_leaves_the_weight_to_the_adaptation_and_the_plan_records_it(name):
    p = builder.plan(builder.load_config(f"mnist1d/{name}", []), 10, (1, 40))
    default, ref, run = EXPECTED[name]
    assert [c["key"] for c in p.adapted_defaults()] == ["feat_weight"]
    assert p.identity["method.args.feat_weight"] == p.params.feat_weight == pytest.approx(default * ref / run, rel=5e-3)


def test_fit_fits_the_weight_to_its_zoo_networks_as_a_config_naming_them_does():
    """kdlab.fit gets networks, not names: their stages are read from the networks (a forward of the probe), so the
    weight is the one the mnist1d/at recipe's plan computes from the zoo names."""
    import torch

    import kdlab

    torch.manual_seed(0)
    x, y = torch.randn(32, 1, 40), torch.randint(0, 10, (32,))
    student, teacher = models.create("mnist1d_cnn_small", 10), models.create("mnist1d_cnn", 10)
    result = kdlab.fit(student, teacher, (x, y), method="at", method_args=MNIST1D_STAGES["at"], epochs=1)
    by_name = builder.plan(builder.load_config("mnist1d/at", []), 10, (1, 40)).adapted_defaults()
    assert [a["key"] for a in result.adapted] == ["feat_weight"]
    assert result.adapted[0]["value"] == by_name[0]["value"] != result.adapted[0]["default"]
