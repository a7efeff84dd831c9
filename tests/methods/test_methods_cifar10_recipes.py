"""The CIFAR-10 recipes: the pairs users run, with kdlab-trained teachers (no CIFAR-10 teacher is released). Every
recipe says first what is published (nothing, for CIFAR-10) and what is chosen, validates, follows the shared recipe
of docs/reference/methods.md §10, builds its method on its real pair with 10 classes and trains a step (one recipe
trains end to end from a generated CIFAR-10 archive: tests/data/test_data_cifar10.py)."""

import re
from pathlib import Path

import pytest
import torch

from kdlab import builder, models
from kdlab.config import RECIPES_DIR, recipe_names
from kdlab.data.batch import Batch
from kdlab.teachers.frozen import FrozenTeacher

C10 = RECIPES_DIR / "cifar10"
PAIRS = ["resnet56-resnet20", "resnet110-resnet20", "wrn_40_2-wrn_16_2", "resnet32x4-resnet8x4", "vgg13-vgg8"]
METHODS = ["kd", "dkd", "ttm", "wttm", "r2kd", "cakd", "dhkd"]
REPO = Path(__file__).resolve().parents[2]
SECTIONS = {int(n) for n in re.findall(r"^## (\d+)\. ",
                                       (REPO / "docs/reference/methods.md").read_text(encoding="utf-8"), re.M)}


def _files():
    return sorted(C10.rglob("*.yaml"))


def test_the_expected_cifar10_recipes_are_shipped_and_listed():
    expected = {C10 / p / f"{m}.yaml" for p in PAIRS for m in METHODS}
    expected |= {C10 / "teachers" / f"{p.split('-')[0]}.yaml" for p in PAIRS}
    expected |= {C10 / "students" / p.split("-")[1] / "ce.yaml" for p in PAIRS}
    assert set(_files()) == expected
    listed = {n for n in recipe_names() if n.startswith("cifar10/")}  # what `kdlab recipes` prints
    assert listed == {p.relative_to(RECIPES_DIR).with_suffix("").as_posix() for p in expected}


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(C10)))
def test_recipe_says_what_is_published_validates_and_builds_on_its_pair(path: Path):
    text = path.read_text(encoding="utf-8")
    first = text.splitlines()[0]
    assert first.startswith("# ") and "Published" in first and "Chosen" in first
    cited = {int(n) for n in re.findall(r"docs/reference/methods\.md §(\d+)", text)}
    assert cited and cited <= SECTIONS
    cfg = builder.load_config(str(path))
    o = cfg.optim
    assert cfg.data.name == "cifar10" and (o.epochs, o.batch_size, o.lr, o.momentum, o.weight_decay, o.milestones) \
        == (240, 64, 0.05, 0.9, 5e-4, [150, 180, 210])
    if path.parent.name == "teachers" or path.parent.parent.name == "students":
        assert cfg.method.name == "ce" and cfg.teacher.checkpoint is None
        assert cfg.out_dir == f"runs/cifar10/{path.relative_to(C10).with_suffix('').as_posix()}".removesuffix("/ce")
        return
    t, s = path.parent.name.split("-")
    assert (cfg.teacher.arch, cfg.student.arch) == (t, s)
    assert cfg.teacher.checkpoint == f"runs/cifar10/teachers/{t}/model.safetensors"
    assert builder.load_config(str(C10 / "teachers" / f"{t}.yaml")).out_dir == f"runs/cifar10/teachers/{t}"
    assert cfg.out_dir == f"runs/cifar10/{path.parent.name}/{path.stem}"
    if cfg.method.name == "ttm":  # the CIFAR-100 pair's β scaled by C/100
        c100 = builder.load_config(str(RECIPES_DIR / "cifar100" / path.parent.name / "ttm.yaml"))
        assert cfg.method.args["beta"] == pytest.approx(c100.method.args["beta"] * 10 / 100)
    if cfg.method.name == "r2kd":
        assert cfg.method.args["input_mean"] == [0.4914, 0.4822, 0.4465]
    torch.manual_seed(0)
    plan = builder.plan(cfg, 10, (3, 32, 32))
    method = plan.build_method(models.create(s, 10), FrozenTeacher(models.create(t, 10)), 10)
    g = torch.Generator().manual_seed(1)
    method.setup(torch.randn(2, 3, 32, 32, generator=g))
    method.train()
    batch = Batch(x=torch.randn(4, 3, 32, 32, generator=g), y=torch.randint(0, 10, (4,), generator=g),
                  index=torch.arange(4))
    out = method(batch, 240)
    assert all(torch.isfinite(v) for v in out.losses.values()) and len(out.losses) > 1
    method.backward(out)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.student.parameters())
