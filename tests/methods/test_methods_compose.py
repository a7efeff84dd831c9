"""method.add: distillation terms of several methods in one run, as the papers combine them (WTTM + CRD, DHKD +
ReviewKD, KD + AT). CE is counted once, every term is named, each added method's trainable parts are its own, the
student and the teacher run once per step, and the run's identity covers the whole combination."""

import json

import pytest
import torch
import yaml

from kdlab import builder, methods, models
from kdlab._checks import SettingError
from kdlab.cli import main
from kdlab.config import ConfigError
from kdlab.data.batch import Batch
from kdlab.teachers.frozen import FrozenTeacher

FEATURE = {"logit": False, "feature": True, "warmup": 1}


def _pair(seed=0):
    torch.manual_seed(seed)
    student, teacher = models.create("mnist1d_cnn_small", 10), models.create("mnist1d_cnn", 10)
    with torch.no_grad():
        teacher.classifier.weight.mul_(8.0)
    return student, FrozenTeacher(teacher)


def _batch(n=8):
    g = torch.Generator().manual_seed(3)
    return Batch(x=torch.randn(n, 1, 40, generator=g), y=torch.randint(0, 10, (n,), generator=g), index=torch.arange(n))


def _combined(primary="kd", primary_args=None, weight=0.5):
    student, teacher = _pair()
    method = methods.create(primary, student, teacher, 10, primary_args or {})
    method.add(methods.create("cakd", student, teacher, 10, FEATURE), weight)
    method.setup(_batch().x)
    return method


def test_terms_are_the_parts_terms_ce_once_and_named():
    batch = _batch()
    method = _combined().eval()
    out = method(batch, 30)
    assert set(out.losses) == {"ce", "kd", "cakd_feat"}  # one CE (the primary's), the added method's by its name
    alone_kd = methods.create("kd", method.student, method.teacher, 10, {}).eval()
    alone_cakd = methods.create("cakd", method.student, method.teacher, 10, FEATURE, probe=batch.x).eval()
    alone_cakd.connector.load_state_dict(method.added[0].connector.state_dict())
    reference = alone_kd(batch, 30).losses
    torch.testing.assert_close(out.losses["ce"], reference["ce"])
    torch.testing.assert_close(out.losses["kd"], reference["kd"])
    torch.testing.assert_close(out.losses["cakd_feat"], 0.5 * alone_cakd(batch, 30).losses["cakd_feat"])
    assert "cakd_feat_bcd" in out.logs and "feat_bcd" not in out.logs  # the added method's logs, named by it


def test_the_student_and_the_teacher_run_once_per_step():
    method = _combined().train()
    calls = {"student": 0, "teacher": 0}
    s_forward, t_forward = method.student.forward_features, method.teacher.module.forward_features

    def count(who, fn):
        def wrapped(x):
            calls[who] += 1
            return fn(x)
        return wrapped

    method.student.forward_features = count("student", s_forward)
    method.teacher.module.forward_features = count("teacher", t_forward)
    out = method(_batch(), 30)
    out.total.backward()
    assert calls == {"student": 1, "teacher": 1}
    connector = list(method.added[0].connector.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in connector)


def test_the_added_methods_parts_are_owned_once():
    method = _combined()
    names = list(method.state_dict())
    assert any(n.startswith("added.0.connector.") for n in names)
    assert not any(n.startswith("added.0.student.") for n in names), "the shared student is saved once"
    params = list(method.parameters())
    assert len(params) == len({id(p) for p in params})
    assert {id(p) for p in method.student.parameters()} <= {id(p) for p in params}


def test_a_custom_backward_covers_the_added_parts():
    """DHKD's gradient alignment: the added method's terms are distillation terms (g2), its connector trained."""
    method = _combined("dhkd", {"head": "linear", "gradient_alignment": True}).train()
    out = method(_batch(), 30)
    assert set(out.losses) == {"ce", "bkln", "cakd_feat"}
    method.backward(out)
    assert all(p.grad is not None for p in method.added[0].connector.parameters())


@pytest.mark.parametrize("primary, part, match", [
    ("kd", "dhkd", r"'dhkd' replaces the training step's backward and prepare_distributed and eval_model|replaces"),
    ("kd", "kd", "already the run's method"),
    ("kd", "ce", "already the run's method or added once|CE is counted"),
])
def test_combinations_that_cannot_work_are_refused(primary, part, match):
    student, teacher = _pair()
    method = methods.create(primary, student, teacher, 10, {})
    with pytest.raises(SettingError, match=match):
        method.add(methods.create(part, student, teacher, 10, {}))


def test_a_combination_from_a_config_trains_resumes_and_is_identified(tmp_path, random_teacher, capsys):
    recipe = tmp_path / "kd_cakd.yaml"
    recipe.write_text(yaml.safe_dump({
        "data": {"name": "mnist1d", "train_subset": 256, "test_subset": 64},
        "teacher": {"arch": "mnist1d_cnn_small", "checkpoint": str(random_teacher)},
        "student": {"arch": "mnist1d_cnn_small"},
        "method": {"name": "kd", "add": [{"name": "cakd", "weight": 0.5, "args": {"logit": False, "feature": True}}]},
        "optim": {"epochs": 2, "milestones": []}, "run": {"progress": False, "tensorboard": False}}))
    out = tmp_path / "run"
    assert main(["train", str(recipe), f"out_dir={out}"]) == 0
    final = json.loads((out / "final.json").read_text())
    assert final["method"] == "kd+cakd"
    assert {"loss_ce", "loss_kd", "loss_cakd_feat"} <= set(json.loads((out / "metrics.jsonl").read_text()
                                                                        .splitlines()[0])["train"])
    identity = json.loads((out / "plan.json").read_text())["identity"]
    assert identity["method.add.0.name"] == "cakd" and identity["method.add.0.weight"] == 0.5
    assert identity["method.add.0.args.warmup"] == 1  # the added method's defaults are adapted and identified too
    assert [a["key"] for a in final["adapted_defaults"]] == ["add.0.args.warmup"]
    # a changed weight is another run: refused on resume, naming the key
    assert main(["train", str(recipe), f"out_dir={out}", "method.add.0.weight=0.25"]) == 2
    assert "method.add.0.weight (0.5 -> 0.25)" in capsys.readouterr().err
    # the added method's arguments are validated like the run's method's, errors naming the key
    with pytest.raises(ConfigError, match=r"method\.add\.0\.args\.featur: not an argument of method 'cakd'"):
        builder.load_config(recipe, ["method.add.0.args.featur=true"])
