"""Every shipped CIFAR-100 recipe loads and validates; per-pair hyperparameters match docs/reference/methods.md §3, §5,
§9, §10."""

import functools
import re
from pathlib import Path

import pytest

from kdlab.builder import load_config
from kdlab.config import RECIPES_DIR
from kdlab.models import names as model_names
from kdlab.teachers import published

CIFAR = RECIPES_DIR / "cifar100"
PAIRS = [
    "resnet56-resnet20", "resnet110-resnet32", "resnet32x4-resnet8x4", "wrn_40_2-wrn_16_2", "wrn_40_2-wrn_40_1",
    "vgg13-vgg8", "resnet32x4-ShuffleV2", "vgg13-MobileNetV2",
    "cifar_resnet50-MobileNetV2",  # the pairs of docs/reference/methods.md §11; then the extra TTM/WTTM pairs (§5)
    "resnet110-resnet20", "cifar_resnet50-vgg8", "resnet32x4-ShuffleV1", "wrn_40_2-ShuffleV1",
]
TINY_METHODS = ["kd", "kd_ls", "dkd", "dist", "ttm", "wttm", "r2kd", "cakd", "cmkd", "dhkd"]
METHODS = TINY_METHODS + ["mlkd", "nkd", "ctkd", "sdd"]
# mdistiller's feature methods (docs/reference/methods.md §13): a recipe per CIFAR-100 pair, AT on ImageNet
FEATURE_METHODS = ["fitnet", "at", "nst", "pkt", "rkd", "sp", "kdsvd", "vid"]
IMAGENET_FEATURE_METHODS = ["at"]
# issue 20, part B: OFD, CRD, ReviewKD, and KD under the DOT optimiser (docs/reference/methods.md §14–§17)
FEATURE_B = ["ofd", "crd", "reviewkd", "kd_dot"]
# the authors' released CIFAR-100 script (docs/reference/methods.md §16); the other pairs carry a kdlab default
REVIEWKD_WEIGHT = {"wrn_40_2-wrn_16_2": 5.0, "wrn_40_2-wrn_40_1": 5.0, "wrn_40_2-ShuffleV1": 5.0,
                   "resnet32x4-resnet8x4": 5.0, "resnet32x4-ShuffleV1": 5.0, "resnet32x4-ShuffleV2": 8.0,
                   "resnet56-resnet20": 0.6, "resnet110-resnet32": 1.0}
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
# KD + logit standardisation per pair (docs/reference/methods.md §23: the authors' README logs kd,<t>,<s>,T,w):
# (T, KD weight); every other pair runs the paper's general T = 2, weight 9 (§9)
KD_LS = {"vgg13-vgg8": (3.0, 9.0), "vgg13-MobileNetV2": (3.0, 9.0), "cifar_resnet50-MobileNetV2": (3.0, 1.0),
         "resnet110-resnet20": (4.0, 12.0)}
# MLKD's released configs (docs/reference/methods.md §19): pair -> (epochs, lr); 150/180/210 milestones in all
MLKD_SCHEDULE = {"resnet32x4-ShuffleV2": (960, 0.01), "resnet32x4-ShuffleV1": (960, 0.01),
                 "vgg13-MobileNetV2": (480, 0.01), "cifar_resnet50-MobileNetV2": (480, 0.01),
                 "wrn_40_2-ShuffleV1": (480, 0.01), "resnet110-resnet20": (480, 0.025)}
# SD-DKD (docs/reference/methods.md §22): β of the released sdd_dkd configs, scales of the released run scripts
SDD_BETA = {"resnet56-resnet20": 2, "resnet110-resnet32": 2, "vgg13-vgg8": 6, "vgg13-MobileNetV2": 6,
            "wrn_40_2-wrn_16_2": 6, "wrn_40_2-wrn_40_1": 6}
SDD_SCALES = {"vgg13-vgg8": [1, 2]}
MOBILE = {"MobileNetV2", "ShuffleV1", "ShuffleV2"}
TEACHERS = sorted({p.split("-")[0] for p in PAIRS})
STUDENTS = sorted({p.split("-")[1] for p in PAIRS})
REPO = Path(__file__).resolve().parents[2]
REFERENCE = "docs/reference/methods.md"
SECTIONS = {int(n) for n in re.findall(r"^## (\d+)\. ", (REPO / REFERENCE).read_text(encoding="utf-8"), re.M)}


def _all_files():
    return sorted(CIFAR.rglob("*.yaml"))


def test_the_expected_recipe_set_is_shipped():
    expected = {CIFAR / p / f"{m}.yaml" for p in PAIRS for m in METHODS + FEATURE_METHODS + FEATURE_B}
    expected |= {CIFAR / p / "single_head_bkl.yaml" for p in PAIRS}  # DHKD's failing case (dhkd_single_head)
    expected |= {CIFAR / "resnet56-resnet56" / "fidelity_kd.yaml"}  # Stanton et al.'s self-distillation
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
    epochs, lr = 240, (0.01 if cfg.student.arch in MOBILE else 0.05)
    if cfg.method.name == "mlkd":  # MLKD's own schedules (§19): lr 0.025 for the non-mobile students, longer runs
        epochs, lr = MLKD_SCHEDULE.get(path.parent.name, (240, 0.01 if cfg.student.arch in MOBILE else 0.025))
    assert (o.epochs, o.batch_size, o.momentum, o.weight_decay, o.milestones, o.gamma, o.nesterov) == (
        epochs, 64, 0.9, 5e-4, [150, 180, 210], 0.1, False)
    assert o.lr == lr
    if path.parent.name == "teachers" or path.parent.parent.name == "students":
        assert cfg.method.name == "ce" and cfg.teacher.checkpoint is None
    else:
        t, s = path.parent.name.split("-")
        assert (cfg.teacher.arch, cfg.student.arch) == (t, s) and t in known
        # RepDistiller's released teacher, fetched by name (tests/teachers/test_published.py fetches them from a
        # local server); the comment names where `kdlab teacher cifar100/teachers/<t>` writes one of your own
        assert cfg.teacher.checkpoint == f"repdistiller:{t}"
        named = published.lookup(cfg.teacher.checkpoint)
        assert (named.arch, named.num_classes) == (t, 100)
        assert f"yours: runs/cifar100/teachers/{t}/model.safetensors" in text
        assert load_config(CIFAR / "teachers" / f"{t}.yaml").out_dir == f"runs/cifar100/teachers/{t}"
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
    t_ls, w_ls = KD_LS.get(pair, (2.0, 9.0))
    assert (kd_ls.args["temperature"], kd_ls.args["ce_weight"], kd_ls.args["kd_weight"]) == (t_ls, 0.1, w_ls)
    assert kd_ls.args["logit_standardization"] and not kd.args["logit_standardization"]
    dist = args("dist")
    assert (dist["beta"], dist["gamma"], dist["temperature"], dist["ce_weight"]) == (2.0, 2.0, 4.0, 1.0)
    r2kd = args("r2kd")
    assert (r2kd["lam"], r2kd["prune_amount"], r2kd["value_weight"], r2kd["rank_weight"]) == (0.7, 0.1, 2.0, 2.0)
    dhkd = args("dhkd")
    assert (dhkd["alpha"], dhkd["temperature"], dhkd["head"]) == (1.0, 2.0, "nonlinear")
    mlkd = args("mlkd")
    assert (mlkd["temperatures"], mlkd["strong_terms"], mlkd["ce_weight"], mlkd["kd_weight"], mlkd["strong_augment"],
            mlkd["n_ops"], mlkd["cutout"]) == ([4.0, 3.0, 5.0, 2.0, 6.0], 3, 0.1, 0.9, "randaugment", 2, 0.5)
    nkd = args("nkd")
    assert (nkd["temperature"], nkd["gamma"], nkd["ce_weight"]) == (3.0, 3.5, 1.0)
    ctkd = args("ctkd")
    assert (ctkd["base"], ctkd["temperature_mode"], ctkd["t_start"], ctkd["t_end"], ctkd["curriculum_epochs"],
            ctkd["ce_weight"], ctkd["kd_weight"]) == ("kd", "global", 1.0, 20.0, 10, 0.1, 0.9)
    sdd = args("sdd")
    assert (sdd["base"], sdd["scales"], sdd["temperature"], sdd["alpha"], sdd["beta"], sdd["warmup"], sdd["ce_weight"],
            sdd["complementary_weight"]) == ("dkd", SDD_SCALES.get(pair, [1, 2, 4]), 4.0, 1.0,
                                             SDD_BETA.get(pair, 8), 20, 1.0, 2.0)


@pytest.mark.parametrize("pair", PAIRS)
def test_feature_b_recipes_carry_the_published_values(pair):
    """docs/reference/methods.md §14 (OFD), §15 (CRD), §16 (ReviewKD), §17 (DOT)."""
    def load(method):
        return load_config(CIFAR / pair / f"{method}.yaml")

    ofd = load("ofd").method.args
    assert (ofd["ce_weight"], ofd["feat_weight"], ofd["connector_kernel"]) == (1.0, 1e-3, 1)
    crd = load("crd").method.args
    assert (crd["ce_weight"], crd["crd_weight"], crd["embed_dim"], crd["num_negatives"], crd["temperature"],
            crd["momentum"], crd["negatives_with_replacement"]) == (1.0, 0.8, 128, 16384, 0.07, 0.5, False)
    review = load("reviewkd")
    text = (CIFAR / pair / "reviewkd.yaml").read_text(encoding="utf-8").splitlines()[0]
    a = review.method.args
    assert (a["ce_weight"], a["warmup"], a["student_preact"]) == (1.0, 20, False)
    if pair in REVIEWKD_WEIGHT:
        assert a["reviewkd_weight"] == REVIEWKD_WEIGHT[pair] and "published for this pair" in text
    else:
        assert "kdlab default" in text
    dot = load("kd_dot")
    assert dot.method.name == "kd" and (dot.optim.optimizer, dot.optim.momentum, dot.optim.dot_delta) == (
        "dot", 0.9, 0.075)
    assert (dot.method.args["temperature"], dot.method.args["ce_weight"], dot.method.args["kd_weight"]) == (
        4.0, 0.1, 0.9)


def test_cifar_teacher_recipes_run_with_kdlab_teacher():
    """`kdlab teacher cifar100/teachers/<arch>` (the README's command) reads teacher.arch, `kdlab train` student.arch."""
    for path in sorted((CIFAR / "teachers").glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.teacher.arch == cfg.student.arch == path.stem


# ---------------------------------------------------------------------------------------------------------------
# ImageNet and Tiny-ImageNet (docs/reference/imagenet.md)
# ---------------------------------------------------------------------------------------------------------------
IMAGENET = RECIPES_DIR / "imagenet"
TINY = RECIPES_DIR / "tiny_imagenet"
IMAGENET_REF = "docs/reference/imagenet.md"
IMAGENET_SECTIONS = {int(n) for n in re.findall(r"^## (\d+)\. ", (REPO / IMAGENET_REF).read_text(encoding="utf-8"),
                                                re.M)}
IMAGENET_PAIRS = ["resnet34-resnet18", "resnet50-mobilenet_v1"]
WTTM_PAIRS = ["resnet50-resnet18", "resnet101-resnet18", "resnet152-resnet18"]  # TTM's other ->R18 rows: WTTM only
# Stanton et al.'s ImageNet self-distillation (`kdlab experiment ... --pair resnet50-resnet50`): student and teachers
SELF_DISTILLATION = ["fidelity_kd.yaml", "fidelity_teacher.yaml"]
TINY_PAIRS = ["resnet32x4-resnet8x4", "wrn_40_2-wrn_16_2", "vgg13-vgg8", "vgg13-MobileNetV2",
              "resnet32x4-ShuffleV2"]  # R2KD's five (docs/reference/imagenet.md §3, §5)
TINY_AA_PAIR = "resnet56-resnet20"  # R2KD's second view by AutoAugment's IMAGENET policy (docs/reference/imagenet.md §2)
# torchvision's released IMAGENET1K_V1 files (docs/reference/imagenet.md §3), named for kdlab.teachers.published
TV_WEIGHTS = {"resnet34": "resnet34-b627a593.pth", "resnet50": "resnet50-0676ba61.pth",
              "resnet101": "resnet101-63fe2227.pth", "resnet152": "resnet152-394f9c45.pth"}
# (epochs, global batch, lr, weight decay, milestones): published ImageNet schedules (docs/reference/imagenet.md §4)
MDISTILLER = (100, 512, 0.2, 1e-4, [30, 60, 90])
TORCHDISTILL = (100, 256, 0.1, 1e-4, [30, 60, 90])
DHKD_SCHEDULE = (100, 128, 0.1, 1e-4, [30, 60, 90])
TORCHVISION = (90, 256, 0.1, 1e-4, [30, 60])


def _schedule(cfg):
    o = cfg.optim
    assert (o.momentum, o.gamma, o.nesterov, o.schedule) == (0.9, 0.1, False, "step")
    return o.epochs, o.batch_size, o.lr, o.weight_decay, o.milestones


def _check_first_line_and_citations(path: Path):
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0].startswith("# "), "source comment first"
    cited = re.findall(r"(docs/reference/[\w.]+) §(\d+)", text)
    assert cited, "cite docs/reference/methods.md §N or docs/reference/imagenet.md §N"
    for doc, n in cited:
        assert int(n) in {REFERENCE: SECTIONS, IMAGENET_REF: IMAGENET_SECTIONS}[doc], f"{doc} §{n} does not exist"
    assert "published" in text.lower() or "Published" in text
    return load_config(path)  # validates method.args against the method's Params too


def test_the_expected_imagenet_and_tiny_recipe_sets_are_shipped():
    expected = {IMAGENET / p / f"{m}.yaml" for p in IMAGENET_PAIRS
                for m in METHODS + IMAGENET_FEATURE_METHODS + ["crd", "reviewkd", "kd_dot"]}
    expected |= {IMAGENET / "resnet50-mobilenet_v1" / "ofd.yaml"}  # mdistiller's one ImageNet OFD config
    expected |= {IMAGENET / p / "wttm.yaml" for p in WTTM_PAIRS}
    expected |= {IMAGENET / "resnet50-resnet50" / f for f in SELF_DISTILLATION}
    expected |= {IMAGENET / "students" / s / "ce.yaml" for s in ("resnet18", "mobilenet_v1")}
    expected |= {IMAGENET / "teachers" / f"{t}.yaml" for t in TV_WEIGHTS}
    assert set(IMAGENET.rglob("*.yaml")) == expected
    expected = {TINY / p / f"{m}.yaml" for p in TINY_PAIRS for m in TINY_METHODS}
    expected |= {TINY / TINY_AA_PAIR / "r2kd.yaml"}  # R2KD with AutoAugment's IMAGENET policy
    expected |= {TINY / "students" / p.split("-")[1] / "ce.yaml" for p in [*TINY_PAIRS, TINY_AA_PAIR]}
    expected |= {TINY / "teachers" / f"{p.split('-')[0]}.yaml" for p in [*TINY_PAIRS, TINY_AA_PAIR]}
    assert set(TINY.rglob("*.yaml")) == expected


@pytest.mark.parametrize("path", sorted(IMAGENET.rglob("*.yaml")), ids=lambda p: str(p.relative_to(IMAGENET)))
def test_imagenet_recipe_validates(path: Path):
    cfg = _check_first_line_and_citations(path)
    assert cfg.data.name == "imagenet" and cfg.student.arch in set(model_names())
    if path.parent.name == "teachers":
        assert cfg.method.name == "ce" and cfg.teacher.arch == cfg.student.arch == path.stem
        assert _schedule(cfg) == TORCHVISION and "released weights" in path.read_text()
    elif path.parent.parent.name == "students":
        assert cfg.method.name == "ce" and cfg.teacher.checkpoint is None and _schedule(cfg) == MDISTILLER
    elif path.name == "fidelity_teacher.yaml":  # Stanton et al.'s teachers: 90 epochs, batch 1024, cosine
        o = cfg.optim
        assert cfg.method.name == "ce" and cfg.teacher.checkpoint is None and cfg.teacher.arch == "resnet50"
        assert (o.epochs, o.batch_size, o.schedule) == (90, 1024, "cosine")
    else:
        t, s = path.parent.name.split("-")
        assert (cfg.teacher.arch, cfg.student.arch) == (t, s)
        assert cfg.teacher.checkpoint == f"torchvision:{t}.IMAGENET1K_V1"  # torchvision's file, fetched by name
        named = published.lookup(cfg.teacher.checkpoint)
        assert (named.arch, named.num_classes, named.filename) == (t, 1000, TV_WEIGHTS[t])
        assert f"({TV_WEIGHTS[t]})" in path.read_text()
        assert cfg.out_dir == f"runs/imagenet/{path.parent.name}/{path.stem}"


def _imagenet_recipe(pair, method):
    return load_config(IMAGENET / pair / f"{method}.yaml")


@pytest.mark.parametrize("pair", IMAGENET_PAIRS)
def test_imagenet_published_values(pair):
    """docs/reference/imagenet.md §4 and docs/reference/methods.md §2, §3, §5, §6, §8."""
    r18 = pair == "resnet34-resnet18"
    load = functools.partial(_imagenet_recipe, pair)

    kd = load("kd")
    assert (kd.method.args["temperature"], kd.method.args["ce_weight"], kd.method.args["kd_weight"]) == (1.0, 0.5, 0.5)
    assert _schedule(kd) == MDISTILLER
    dkd = load("dkd")
    a = dkd.method.args
    assert (a["alpha"], a["beta"], a["temperature"], a["warmup"], a["ce_weight"]) == (1.0, 0.5 if r18 else 2.0, 1.0,
                                                                                        1, 1.0)
    assert _schedule(dkd) == MDISTILLER
    cakd = load("cakd")  # DKD's ImageNet row (docs/reference/imagenet.md §4)
    a = cakd.method.args
    assert (a["temperature"], a["warmup"], a["beta"]) == (1.0, 1, 0.5 if r18 else 2.0)
    wttm = load("wttm")
    assert (wttm.method.args["gamma"], wttm.method.args["beta"]) == ((0.8, 1.6) if r18 else (0.7, 3.5))
    assert _schedule(wttm) == _schedule(load("ttm")) == TORCHDISTILL
    dist = load("dist")
    a = dist.method.args
    assert (a["beta"], a["gamma"], a["temperature"]) == (2.0, 2.0, 1.0)
    assert _schedule(dist)[:3] == (100, 256, 0.1)
    dhkd = load("dhkd")
    a = dhkd.method.args
    assert (a["head"], a["alpha"], a["alpha_zero_from_epoch"], a["temperature"], a["gradient_alignment"]) == (
        "linear", 0.1, 50, 2.0, False)
    assert _schedule(dhkd) == DHKD_SCHEDULE
    assert load("cmkd").method.args["temperature"] == 1.0  # docs/reference/methods.md §7: τ = 1 on ImageNet
    r2kd = load("r2kd").method.args
    assert (r2kd["lam"], r2kd["prune_amount"], r2kd["input_mean"]) == (0.7, 0.1, [0.485, 0.456, 0.406])
    # docs/reference/imagenet.md §7
    mlkd = load("mlkd")
    a = mlkd.method.args
    assert (a["temperatures"], a["ce_weight"], a["kd_weight"], a["input_mean"]) == (
        [1.0, 3.0, 5.0, 2.0, 6.0], 0.5, 0.5, [0.485, 0.456, 0.406])
    assert _schedule(mlkd) == (100, 512, 0.1 if r18 else 0.2, 1e-4, [30, 60, 90])
    nkd = load("nkd")
    assert (nkd.method.args["temperature"], nkd.method.args["gamma"]) == (1.0, 1.5)
    assert _schedule(nkd) == TORCHDISTILL and nkd.optim.grad_clip == (None if r18 else 5.0)
    ctkd = load("ctkd")
    a = ctkd.method.args
    assert (a["curriculum_epochs"], a["ce_weight"], a["kd_weight"], a["t_end"]) == (5, 1.0, 1.0, 20.0)
    assert _schedule(ctkd) == (120, 256, 0.1, 1e-4, [30, 60, 90])
    sdd = load("sdd")
    a = sdd.method.args
    assert (a["base"], a["scales"], a["beta"], a["temperature"], a["warmup"]) == (
        "dkd", [1, 2] if r18 else [1, 2, 4], 0.5 if r18 else 2.0, 1.0, 1)
    assert _schedule(sdd) == (100, 256, 0.2, 1e-4, [30, 60, 90])


@pytest.mark.parametrize("pair", IMAGENET_PAIRS)
def test_imagenet_feature_b_recipes(pair):
    """mdistiller's configs/imagenet/*/{crd,reviewkd,ofd,dot}.yaml (docs/reference/methods.md §14–§17)."""
    r18 = pair == "resnet34-resnet18"
    load = functools.partial(_imagenet_recipe, pair)

    crd = load("crd")
    assert _schedule(crd) == TORCHDISTILL and crd.method.args["negatives_with_replacement"] is True
    assert (crd.method.args["num_negatives"], crd.method.args["crd_weight"]) == (16384, 0.8)
    review = load("reviewkd")
    a = review.method.args
    assert _schedule(review) == TORCHDISTILL
    assert (a["reviewkd_weight"], a["warmup"], a["student_preact"], a.get("mid_channels")) == (
        (1.0, 1, True, None) if r18 else (8.0, 1, True, 256))
    dot = load("kd_dot")
    assert _schedule(dot) == MDISTILLER and (dot.optim.optimizer, dot.optim.dot_delta) == ("dot", 0.09)
    assert (dot.method.args["temperature"], dot.method.args["ce_weight"], dot.method.args["kd_weight"]) == (
        1.0, 0.5, 0.5)
    if not r18:
        ofd = load("ofd")
        assert _schedule(ofd) == (100, 128, 0.05, 1e-4, [30, 60, 90]) and ofd.method.args["feat_weight"] == 1e-4


@pytest.mark.parametrize("pair", WTTM_PAIRS)
def test_imagenet_wttm_rows_of_the_larger_teachers(pair):
    """TTM paper Table 10's R101/R152 -> R18 rows: WTTM's one ->R18 setting (docs/reference/imagenet.md §4)."""
    cfg = load_config(IMAGENET / pair / "wttm.yaml")
    assert (cfg.method.name, cfg.method.args["gamma"], cfg.method.args["beta"], cfg.method.args["ce_weight"]) == (
        "wttm", 0.8, 1.6, 1.0)
    assert _schedule(cfg) == TORCHDISTILL


@pytest.mark.parametrize("path", sorted(TINY.rglob("*.yaml")), ids=lambda p: str(p.relative_to(TINY)))
def test_tiny_imagenet_recipe_validates_and_follows_the_cifar_recipe(path: Path):
    """R2KD's Tiny-ImageNet configs: the CIFAR-100 recipe (240 epochs, batch 64, lr 0.05 or 0.01 for the mobile
    students, wd 5e-4); docs/reference/imagenet.md §2, §5."""
    cfg = _check_first_line_and_citations(path)
    assert cfg.data.name == "tiny_imagenet"
    assert _schedule(cfg) == (240, 64, 0.01 if cfg.student.arch in MOBILE else 0.05, 5e-4, [150, 180, 210])
    if path.parent.name == "teachers":
        assert cfg.method.name == "ce" and cfg.teacher.arch == cfg.student.arch == path.stem
    elif path.parent.parent.name == "students":
        assert cfg.method.name == "ce" and cfg.teacher.checkpoint is None
    else:
        t, s = path.parent.name.split("-")
        assert (cfg.teacher.arch, cfg.student.arch) == (t, s)
        assert cfg.teacher.checkpoint == f"runs/tiny_imagenet/teachers/{t}/model.safetensors"
        if cfg.method.name == "r2kd":  # cutout 16 px, ImageNet normalisation (docs/reference/imagenet.md §2)
            a = cfg.method.args
            assert (a["cutout_size"], a["input_mean"], a["input_std"], a["autoaugment_policy"]) == (
                16, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], "imagenet")
            assert a["augment"] == ("autoaugment" if path.parent.name == TINY_AA_PAIR else "cutmixpick")
        if cfg.method.name == "dkd":
            assert cfg.method.args["beta"] == DKD_BETA.get(path.parent.name, 8)


REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
# the two methods without a page of their own: the CE baseline, and KD (Hinton et al.), documented with the losses
PAGES_ELSEWHERE = {"ce": None, "kd": REPO / "docs/losses.md"}


def test_every_registered_method_has_a_page_and_an_mnist1d_recipe():
    """Adding a method means adding its docs page and a recipe that runs here; this fails until both exist."""
    from kdlab import methods

    for name in methods.names():
        assert (RECIPES_DIR / "mnist1d" / f"{name}.yaml").is_file(), f"{name}: configs/mnist1d/{name}.yaml is missing"
        load_config(f"mnist1d/{name}")
        page = PAGES_ELSEWHERE.get(name, DOCS / "methods" / f"{name}.md")
        if page is not None:
            assert page.is_file(), f"{name}: {page.relative_to(DOCS.parent)} is missing"
            assert name == "kd" or f"]({name}.md)" in (DOCS / "methods" / "README.md").read_text(encoding="utf-8"), \
                f"{name}: its page is not linked from docs/methods/README.md"


def test_self_distillation_recipes_of_stanton_et_al():
    """Pure KD (ce_weight 0) at tau 4, student = teacher arch; ImageNet: 90 epochs, batch 1024, cosine."""
    for path, arch in ((CIFAR / "resnet56-resnet56" / "fidelity_kd.yaml", "resnet56"),
                       (IMAGENET / "resnet50-resnet50" / "fidelity_kd.yaml", "resnet50")):
        cfg = load_config(path)
        a = cfg.method.args
        assert (cfg.method.name, a["ce_weight"], a["kd_weight"], a["temperature"]) == ("kd", 0.0, 1.0, 4.0)
        assert cfg.teacher.arch == cfg.student.arch == arch
    o = load_config(IMAGENET / "resnet50-resnet50" / "fidelity_kd.yaml").optim
    assert (o.epochs, o.batch_size, o.schedule) == (90, 1024, "cosine")


@pytest.mark.parametrize("pair", PAIRS)
def test_single_head_bkl_is_dhkd_on_one_head(pair):
    """The failing configuration of DHKD (docs/reference/methods.md §8): CE and BinaryKL (tau 2) on one head."""
    one, two = load_config(CIFAR / pair / "single_head_bkl.yaml"), load_config(CIFAR / pair / "dhkd.yaml")
    assert one.method.name == "single_head_bkl" and one.method.args == {"ce_weight": 1.0, "bkl_weight": 1.0,
                                                                        "temperature": 2.0}
    assert (one.optim, one.teacher, one.student) == (two.optim, two.teacher, two.student)
