"""Every method builds and trains one step on the ImageNet students (resnet18 from resnet34, mobilenet_v1 from
resnet50), CAKD's feature level and DHKD's auxiliary heads included, on small inputs (3×64×64, 10 classes)."""

from __future__ import annotations

import pytest
import torch

from kdlab.data.batch import Batch
from kdlab.methods import create as build
from kdlab.models import create
from kdlab.teachers.frozen import FrozenTeacher

PAIRS = [("resnet34", "resnet18"), ("resnet50", "mobilenet_v1")]
SETTINGS = {
    "ce": {}, "kd": {"temperature": 1.0, "ce_weight": 0.5, "kd_weight": 0.5},
    "kd_ls": {"logit_standardization": True, "temperature": 2.0},
    "dkd": {"beta": 0.5, "temperature": 1.0, "warmup": 1}, "ttm": {}, "wttm": {"gamma": 0.8, "beta": 1.6},
    "dist": {"temperature": 1.0}, "cmkd": {"temperature": 1.0}, "r2kd": {"augment": "cutmix"},
    "cakd_feature": {"feature": True, "warmup": 1},
    "dhkd_linear": {"head": "linear", "alpha": 0.1, "alpha_zero_from_epoch": 50},
    "dhkd_nonlinear": {"head": "nonlinear"},
}


def _method(setting: str, teacher: str, student: str):
    torch.manual_seed(0)
    name = setting.split("_")[0]  # kd_ls -> kd, cakd_feature -> cakd, dhkd_linear -> dhkd
    s, t = create(student, 10), create(teacher, 10)
    return build(name, s, FrozenTeacher(t), 10, SETTINGS[setting], probe=torch.zeros(2, 3, 64, 64))


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: "-".join(p))
def test_one_training_step(setting, pair):
    method = _method(setting, *pair)
    g = torch.Generator().manual_seed(1)
    batch = Batch(x=torch.randn(4, 3, 64, 64, generator=g), y=torch.randint(0, 10, (4,), generator=g),
                  index=torch.arange(4))
    method.train()
    out = method(batch, epoch=2)
    assert out.logits.shape == (4, 10)
    assert out.losses and all(t.dim() == 0 and torch.isfinite(t) for t in out.losses.values())
    if setting != "ce":
        assert any(k != "ce" and t.abs() > 0 for k, t in out.losses.items()), "a distillation term is active"
    method.backward(out)
    grads = [p.grad for p in method.student.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    extras = [p for n, p in method.named_parameters() if not n.startswith("student.")]
    if setting.startswith(("cakd", "dhkd")):  # the feature connector / the auxiliary head is trained too
        assert extras and all(p.grad is not None for p in extras)
