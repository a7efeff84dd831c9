"""The feature-method recipes (docs/reference/methods.md §13): mdistiller's weights, and stages that are mdistiller's
maps on every shipped pair — checked by setting each recipe's method up on its real pair (random weights, a
CIFAR-100 or ImageNet-shaped probe) and reading the maps it pairs."""

import pytest
import torch

from kdlab import methods, models
from kdlab.builder import load_config
from kdlab.config import RECIPES_DIR
from kdlab.teachers.frozen import FrozenTeacher

FEATURE_METHODS = ["fitnet", "at", "nst", "pkt", "rkd", "sp", "kdsvd", "vid"]
# mdistiller cfg.<METHOD> (mdistiller/engine/cfg.py): (CE weight, feature weight, other arguments)
MDISTILLER = {
    "fitnet": (1.0, 100.0, {"student_stage": 2, "teacher_stage": 2}),
    "at": (1.0, 1000.0, {"p": 2.0}),
    "nst": (1.0, 50.0, {}),
    "pkt": (1.0, 30000.0, {}),
    "rkd": (1.0, 1.0, {"distance_weight": 25.0, "angle_weight": 50.0, "squared": False, "eps": 1e-12}),
    "sp": (1.0, 3000.0, {}),
    "kdsvd": (1.0, 1.0, {"k": 1, "layout": "mdistiller"}),
    "vid": (1.0, 1.0, {"init_pred_var": 5.0, "eps": 1e-5, "learn_variance": True}),
}
CIFAR_PAIRS = sorted(p.name for p in (RECIPES_DIR / "cifar100").iterdir() if (p / "fitnet.yaml").is_file())
# channels of mdistiller's feats[1:] for the students whose kdlab stages differ (mdistiller/models/cifar/*.py)
MDISTILLER_FEATS = {"MobileNetV2": [12, 16, 48, 160], "ShuffleV2": [116, 232, 464]}


def test_every_cifar_pair_has_every_feature_recipe():
    assert len(CIFAR_PAIRS) == 13


@pytest.mark.parametrize("pair", CIFAR_PAIRS)
def test_feature_recipes_carry_mdistillers_hyperparameters_and_set_up_on_their_pair(pair):
    t_arch, s_arch = pair.split("-")
    torch.manual_seed(0)
    student, teacher = models.create(s_arch, 100), FrozenTeacher(models.create(t_arch, 100))
    probe = torch.randn(2, 3, 32, 32)
    for name in FEATURE_METHODS:
        cfg = load_config(RECIPES_DIR / "cifar100" / pair / f"{name}.yaml")
        args = cfg.method.args
        ce, feat, other = MDISTILLER[name]
        assert (args["ce_weight"], args["feat_weight"]) == (ce, feat), (pair, name)
        assert {k: args[k] for k in other} == other, (pair, name)
        method = methods.create(name, student, teacher, 100, args, probe=probe)  # stages pair, extras built
        _, s = method.student_features(probe)
        if name in ("at", "nst", "kdsvd", "vid"):
            chosen = method.stages(s, "student", method.hp.student_stages, "student_stages")
            if s_arch in MDISTILLER_FEATS:
                assert [f.shape[1] for f in chosen] == MDISTILLER_FEATS[s_arch], (pair, name)
            if s_arch.startswith("wrn_"):  # mdistiller's last WRN map is before the final BN-ReLU: not ≥ 0
                assert args["student_paths"] == ["block1", "block2", "block3"] and chosen[-1].min() < 0
        if name == "sp" and s_arch in MDISTILLER_FEATS:
            assert method.stage(s, "student", method.hp.student_stage).shape[1] == MDISTILLER_FEATS[s_arch][-1]


@pytest.mark.slow
@pytest.mark.parametrize("pair", ["resnet34-resnet18", "resnet50-mobilenet_v1"])
def test_imagenet_at_recipes_pair_mdistillers_maps(pair):
    cfg = load_config(RECIPES_DIR / "imagenet" / pair / "at.yaml")
    assert (cfg.method.args["ce_weight"], cfg.method.args["feat_weight"], cfg.method.args["p"]) == (1.0, 1000.0, 2.0)
    t_arch, s_arch = pair.split("-")
    torch.manual_seed(0)
    student, teacher = models.create(s_arch, 1000), FrozenTeacher(models.create(t_arch, 1000))
    probe = torch.randn(2, 3, 224, 224)
    method = methods.create("at", student, teacher, 1000, cfg.method.args, probe=probe)
    _, s = method.student_features(probe)
    _, t = method.teacher_features(probe)
    s_maps, t_maps = method.paired_stages(s, t)
    sizes = [(a.shape[-1], b.shape[-1]) for a, b in zip(s_maps, t_maps)]
    # R34 → R18: feats[1:] of both at 56, 28, 14, 7; R50 → MV1: mdistiller's zip of ResNet-50's 56, 28, 14 with
    # MobileNetV1's 28, 14, 7 (its feats hold no stem)
    assert sizes == ([(56, 56), (28, 28), (14, 14), (7, 7)] if s_arch == "resnet18" else [(28, 56), (14, 28), (7, 14)])
