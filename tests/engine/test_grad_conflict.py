"""Gradient conflict logging (kdlab.engine.conflict, run.grad_conflict_every): the cosines against autograd written
out, the groups of Method.parameter_groups, and a run with the option on training bit-identically to one without."""

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from kdlab import builder, methods, models
from kdlab.engine.conflict import GradConflict


def test_cosines_per_group_equal_the_gradients_written_out():
    torch.manual_seed(0)
    backbone, head = nn.Linear(5, 4), nn.Linear(4, 3)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    z = head(torch.tanh(backbone(x)))
    losses = {"ce": nn.functional.cross_entropy(z, y), "kd": z.square().mean(), "const": torch.tensor(1.0)}
    groups = {"classifier": list(head.parameters()), "backbone": list(backbone.parameters())}
    conflict = GradConflict(groups, every=1)
    conflict.measure(losses)
    conflict.measure(losses)  # two equal steps: the mean is the step's cosine
    out = conflict.epoch_summary()
    assert out["steps"] == 2 and set(out["cosine"]) == {"ce_vs_kd"}  # a constant term has no gradient: no pair
    for name, params in groups.items():
        ga = torch.cat([g.flatten() for g in torch.autograd.grad(losses["ce"], params, retain_graph=True)])
        gb = torch.cat([g.flatten() for g in torch.autograd.grad(losses["kd"], params, retain_graph=True)])
        cos = torch.nn.functional.cosine_similarity(ga, gb, dim=0).item()
        assert out["cosine"]["ce_vs_kd"][name] == pytest.approx(cos, rel=1e-5)
        assert out["negative"]["ce_vs_kd"][name] == (1.0 if cos < 0 else 0.0)
    assert backbone.weight.grad is None and head.weight.grad is None  # measuring writes no gradient
    assert conflict.epoch_summary() is None  # reset after the summary


def test_a_group_one_term_does_not_reach_is_none_and_steps_are_chosen_by_index():
    a, b = nn.Linear(3, 1), nn.Linear(3, 1)
    x = torch.randn(4, 3)
    conflict = GradConflict({"classifier": list(a.parameters()), "extras": list(b.parameters())}, every=3)
    assert [s for s in range(8) if conflict.due(s)] == [0, 3, 6]
    conflict.measure({"ce": a(x).sum(), "aux": (a(x) + b(x)).square().sum()})
    out = conflict.epoch_summary()
    assert out["cosine"]["aux_vs_ce"]["extras"] is None and out["cosine"]["aux_vs_ce"]["classifier"] is not None
    # a(x)·(a(x)+b(x)) summed: the classifier's two gradients point the same way when a and b agree in sign
    assert out["negative"]["aux_vs_ce"]["extras"] is None
    assert GradConflict({}, every=0).due(0) is False


def test_parameter_groups_split_the_student_at_its_classifier_and_keep_extras_apart():
    student = models.create("mnist1d_cnn_small", 10)
    teacher_net = models.create("mnist1d_cnn_small", 10)
    from kdlab.teachers import FrozenTeacher

    cls = methods.get("dhkd")
    method = cls(student, FrozenTeacher(teacher_net), 10, cls.Params())
    groups = method.parameter_groups()
    assert set(groups) == {"classifier", "backbone", "extras"}
    assert {id(p) for p in groups["classifier"]} == {id(p) for p in student.classifier.parameters()}
    assert {id(p) for p in groups["extras"]} == {id(p) for p in method.aux_head.parameters()}
    n = sum(len(g) for g in groups.values())
    assert n == len([p for p in method.parameters() if p.requires_grad])


def _run(tmp_path, random_teacher, name, recipe, every, extra=()):
    out = tmp_path / name
    cfg = builder.load_config(recipe, [
        f"teacher.checkpoint={random_teacher}", "teacher.arch=mnist1d_cnn_small", "data.train_subset=256",
        "data.test_subset=64", "optim.epochs=2", "eval.every=1", f"out_dir={out}", "run.progress=false",
        "run.tensorboard=false", f"run.grad_conflict_every={every}", *extra])
    builder.distil(cfg)
    return out, json.loads((out / "final.json").read_text())


@pytest.mark.parametrize("recipe", ["mnist1d/single_head_bkl", "mnist1d/dhkd"])
def test_a_run_measuring_conflicts_trains_bit_identically(tmp_path, random_teacher, recipe):
    """single_head_bkl (plain backward) and DHKD (its own backward: gradient alignment by autograd.grad)."""
    off, f_off = _run(tmp_path, random_teacher, "off", recipe, 0)
    on, f_on = _run(tmp_path, random_teacher, "on", recipe, 1)
    for file in ("model.safetensors", "checkpoint.safetensors"):  # weights, optimizer state, RNG: every bit
        a, b = load_file(on / file), load_file(off / file)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), file
    strip = lambda r: {k: v for k, v in r.items() if k not in ("epoch_time_s", "grad_conflict")}  # noqa: E731
    log = lambda out: [strip(json.loads(line)) for line in (out / "metrics.jsonl").read_text().splitlines()]  # noqa
    assert log(on) == log(off)
    assert "grad_conflict" not in f_off
    conflict = f_on["grad_conflict"]
    assert conflict["every"] == 1 and [e["epoch"] for e in conflict["epochs"]] == [1, 2]
    epoch = conflict["epochs"][0]
    assert epoch["steps"] == 4  # 256 samples, batch 64
    pair = "bkl_vs_ce" if "single" in recipe else "bkln_vs_ce"
    groups = {k for k, v in epoch["cosine"][pair].items() if v is not None}
    # single head: both terms reach the classifier; DHKD: CE the student's head, BinaryKL the auxiliary one
    assert groups == ({"classifier", "backbone"} if "single" in recipe else {"backbone"})
    assert all(-1.0 <= v <= 1.0 for v in epoch["cosine"][pair].values() if v is not None)
    assert all(0.0 <= v <= 1.0 for v in epoch["negative"][pair].values() if v is not None)


def test_the_option_does_not_change_the_run_identity(random_teacher):
    a = builder.load_config("mnist1d/kd", [f"teacher.checkpoint={random_teacher}"])
    b = builder.load_config("mnist1d/kd", [f"teacher.checkpoint={random_teacher}", "run.grad_conflict_every=5",
                                           "eval.bins=3"])
    assert builder.plan(a, 10, (40,)).identity_hash == builder.plan(b, 10, (40,)).identity_hash
    assert builder.plan(a, 10, (40,), objects=True).identity_hash == \
        builder.plan(b, 10, (40,), objects=True).identity_hash
