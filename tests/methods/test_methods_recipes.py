"""Every shipped CIFAR-100 recipe loads and validates; per-pair hyperparameters match docs/reference/methods.md §3, §5,
§9, §10."""

import re
from pathlib import Path

import pytest

from kdlab.build import load_config
from kdlab.config import RECIPES_DIR
from kdlab.models import names as model_names

CIFAR = RECIPES_DIR / "cifar100"
PAIRS = [
    "resnet56-resnet20", "resnet110-resnet32", "resnet32x4-resnet8x4", "wrn_40_2-wrn_16_2", "wrn_40_2-wrn_40_1",
    "vgg13-vgg8", "resnet32x4-ShuffleV2", "vgg13-MobileNetV2", "cifar_resnet50-MobileNetV2",  # docs/reference/methods.md §11
    "resnet110-resnet20", "cifar_resnet50-vgg8", "resnet32x4-ShuffleV1", "wrn_40_2-ShuffleV1",  # extra TTM/WTTM pairs (§5)
]
METHODS = ["kd", "kd_ls", "dkd", "dist", "ttm", "wttm", "r2kd", "cakd", "cmkd", "dhkd"]
# docs/reference/methods.md §3: β = 2 / 6 for these pairs, 8 otherwise
DKD_BETA = {"resnet56-resnet20": 2, "resnet110-resnet32": 2, "vgg13-vgg8": 6, "vgg13-MobileNetV2": 6,
            "wrn_40_2-wrn_16_2": 6, "wrn_40_2-wrn_40_1": 6}
# docs/reference/methods.md §5: pair -> (TTM (γ, β), WTTM (γ, β))
TTM = {
    "wrn_40_2-wrn_16_2": ((0.1, 101), (0.1, 4)), "wrn_40_2-wrn_40_1": ((0.1, 76), (0.1, 3)),
    "resnet56-resnet20": ((0.3, 7), (0.3, 1.5)), "resnet110-resnet20": ((0.2, 8), (0.2, 2)),
    "resnet110-resnet32": ((0.1, 33), (0.1, 1.5)), "resnet32x4-resnet8x4": ((0.1, 100), (0.1, 3)),
    "vgg13-vgg8": ((0.1, 45), (0.1, 2.25)), "vgg13-MobileNetV2": ((0.2, 16), (0.2, 3)),
    "cifar_resnet50-MobileNetV2": ((0.2, 20), (0.2, 5)), "cifar_resnet50-vgg8": ((0.1, 70), (0.1, 2)),
    "resnet32x4-ShuffleV1": ((0.2, 12), (0.2, 1.4)), "resnet32x4-ShuffleV2": ((0.4, 40), (0.4, 16)),
    "wrn_40_2-ShuffleV1": ((0.3, 8), (0.3, 3)),
}
MOBILE = {"MobileNetV2", "ShuffleV1", "ShuffleV2"}
TEACHERS = sorted({p.split("-")[0] for p in PAIRS})
STUDENTS = sorted({p.split("-")[1] for p in PAIRS})
REPO = Path(__file__).resolve().parents[2]
REFERENCE = "docs/reference/methods.md"
SECTIONS = {int(n) for n in re.findall(r"^## (\d+)\. ", (REPO / REFERENCE).read_text(encoding="utf-8"), re.M)}


def _all_files():
    return sorted(CIFAR.rglob("*.yaml"))


def test_the_expected_recipe_set_is_shipped():
    expected = {CIFAR / p / f"{m}.yaml" for p in PAIRS for m in METHODS}
    expected |= {CIFAR / "students" / s / "ce.yaml" for s in STUDENTS}
    expected |= {CIFAR / "teachers" / f"{t}.yaml" for t in TEACHERS}
    assert set(_all_files()) == expected


@pytest.mark.parametrize("path", _all_files(), ids=lambda p: str(p.relative_to(CIFAR)))
def test_recipe_loads_validates_and_follows_the_shared_recipe(path: Path):
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0].startswith("# "), "source comment first"
    cited = re.findall(r"([\w./-]*methods\.md) §(\d+)", text)
    assert cited and all(f == REFERENCE for f, _ in cited), f"cite the shipped {REFERENCE} §N, got {cited}"
    assert {int(n) for _, n in cited} <= SECTIONS, f"cited sections {cited} not all in {REFERENCE}"
    cfg = load_config(path)  # validates the method args against the method's Params too
    known = set(model_names())
    assert cfg.data.name == "cifar100" and cfg.student.arch in known
    o = cfg.optim
    assert (o.epochs, o.batch_size, o.momentum, o.weight_decay, o.milestones, o.gamma, o.nesterov) == (
        240, 64, 0.9, 5e-4, [150, 180, 210], 0.1, False)
    assert o.lr == (0.01 if cfg.student.arch in MOBILE else 0.05)
    if path.parent.name == "teachers" or path.parent.parent.name == "students":
        assert cfg.method.name == "ce" and cfg.teacher.checkpoint is None
    else:
        t, s = path.parent.name.split("-")
        assert (cfg.teacher.arch, cfg.student.arch) == (t, s) and t in known
        assert cfg.teacher.checkpoint == f"runs/cifar100/teachers/{t}/model.safetensors"
        assert cfg.out_dir == f"runs/cifar100/{path.parent.name}/{path.stem}"


@pytest.mark.parametrize("pair", PAIRS)
def test_per_pair_values_match_the_spec(pair):
    def args(method):
        return load_config(CIFAR / pair / f"{method}.yaml").method.args

    dkd = args("dkd")
    assert (dkd["alpha"], dkd["beta"], dkd["temperature"], dkd["warmup"]) == (1.0, DKD_BETA.get(pair, 8), 4.0, 20)
    cakd = args("cakd")
    assert (cakd["strong_set"], cakd["k"], cakd["beta"], cakd["warmup"]) == ("topk", 5, DKD_BETA.get(pair, 8), 20)
    (tg, tb), (wg, wb) = TTM[pair]
    assert (args("ttm")["gamma"], args("ttm")["beta"]) == (tg, tb)
    assert (args("wttm")["gamma"], args("wttm")["beta"]) == (wg, wb)
    kd, kd_ls = load_config(CIFAR / pair / "kd.yaml").method, load_config(CIFAR / pair / "kd_ls.yaml").method
    assert kd.name == kd_ls.name == "kd"
    assert (kd.args["temperature"], kd.args["ce_weight"], kd.args["kd_weight"]) == (4.0, 0.1, 0.9)
    assert (kd_ls.args["temperature"], kd_ls.args["ce_weight"], kd_ls.args["kd_weight"]) == (2.0, 0.1, 9.0)
    assert kd_ls.args["logit_standardization"] and not kd.args["logit_standardization"]
    dist = args("dist")
    assert (dist["beta"], dist["gamma"], dist["temperature"], dist["ce_weight"]) == (2.0, 2.0, 4.0, 1.0)
    r2kd = args("r2kd")
    assert (r2kd["lam"], r2kd["prune_amount"], r2kd["value_weight"], r2kd["rank_weight"]) == (0.7, 0.1, 2.0, 2.0)
    dhkd = args("dhkd")
    assert (dhkd["alpha"], dhkd["temperature"], dhkd["head"]) == (1.0, 2.0, "nonlinear")
