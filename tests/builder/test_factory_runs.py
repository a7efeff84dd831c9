"""A teacher and a student built by their own library (tests/models/factory_nets.py, named by an import string in a
YAML config) train through the CLI and through ``kdlab.fit``, with CAKD's feature level and a feature method reading
them through forward hooks at the library's module paths; the factory is in final.json and the weights, so
``kdlab eval`` rebuilds them."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import kdlab
from kdlab.cli import main
from kdlab.models import from_factory

NETS = Path(__file__).parents[1] / "models" / "factory_nets.py"
FACTORY = f"{NETS}:create_model"
DATA = "data: {name: mnist1d, train_subset: 256, test_subset: 128}"
RUN = "run: {progress: false, tensorboard: false, threads: 1}"


def _arch(name, width=8, num_classes=10):
    return f"{{factory: '{FACTORY}', args: {{model_name: {name}, num_classes: {num_classes}, width: {width}}}}}"


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """``kdlab teacher`` on a YAML whose teacher.arch is a factory."""
    tmp = tmp_path_factory.mktemp("factory_teacher")
    cfg = tmp / "teacher.yaml"
    cfg.write_text(f"{DATA}\nteacher: {{arch: {_arch('tiny_net', 16)}}}\nmethod: {{name: ce}}\n"
                   f"optim: {{epochs: 2, batch_size: 32, lr: 0.05, milestones: []}}\n{RUN}\n"
                   f"out_dir: {tmp / 'teacher'}\n")
    assert main(["teacher", str(cfg)]) == 0
    return tmp / "teacher"


def _student_config(tmp_path, teacher_run, method, name="hf_like_net", num_classes=10):
    cfg = tmp_path / "student.yaml"
    cfg.write_text(f"{DATA}\nteacher: {{checkpoint: {teacher_run / 'model.safetensors'}}}\n"
                   f"student: {{arch: {_arch(name, 8, num_classes)}}}\nmethod: {method}\n"
                   f"optim: {{epochs: 2, batch_size: 32, lr: 0.05, milestones: []}}\n{RUN}\n"
                   f"out_dir: {tmp_path / 'student'}\n")
    return cfg


def test_kdlab_teacher_trains_a_factory_network_and_records_the_factory(teacher_run):
    final = json.loads((teacher_run / "final.json").read_text())
    factory = {"factory": FACTORY, "args": {"model_name": "tiny_net", "num_classes": 10, "width": 16}}
    assert final["teacher"]["factory"] == factory and final["teacher"]["arch"] == f"{FACTORY}('tiny_net')"
    assert final["config"]["teacher"]["arch"] == factory
    plan = json.loads((teacher_run / "plan.json").read_text())
    assert plan["identity"]["teacher.arch.args.width"] == 16 and plan["identity"]["teacher.arch.factory"] == FACTORY
    with safe_open(str(teacher_run / "model.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["factory"]) == factory


@pytest.mark.parametrize("method", [
    "{name: cakd, args: {feature: true, warmup: 1, student_stage: blocks.1, teacher_stage: blocks.1}}",
    "{name: at, args: {student_paths: [blocks.0, blocks.1], teacher_paths: [blocks.0, blocks.1]}}",
], ids=["cakd_feature", "at_paths"])
def test_kdlab_train_distils_a_factory_student_from_a_factory_teacher(tmp_path, teacher_run, method, capsys):
    cfg = _student_config(tmp_path, teacher_run, method)
    assert main(["train", str(cfg)]) == 0
    out = tmp_path / "student"
    final = json.loads((out / "final.json").read_text())
    name = "cakd_feat" if "cakd" in method else "at"
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["train"][f"loss_{name}"] > 0
    assert final["student"]["factory"]["args"]["model_name"] == "hf_like_net"  # its outputs adapted from .logits
    assert final["teacher"]["acc"] == json.loads((teacher_run / "final.json").read_text())["teacher"]["last_acc"]
    capsys.readouterr()
    # the weights rebuild themselves: kdlab eval needs no arch for either network
    assert main(["eval", "--teacher", str(teacher_run / "model.safetensors"), "--student",
                 str(out / "model.safetensors"), "--data", "mnist1d", "--json", str(tmp_path / "eval.json")]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())  # on the whole test set (the run used 128 samples)
    assert {"student_acc", "teacher_acc", "agreement"} <= set(evaluated)
    assert type(kdlab.load_model(out / "model.safetensors")).__name__ == "HFLikeNet"


def test_a_factory_student_of_the_wrong_class_count_is_one_line_naming_its_args(tmp_path, teacher_run, capsys):
    cfg = _student_config(tmp_path, teacher_run, "{name: kd}", name="tiny_net", num_classes=7)
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"kdlab: error: the student outputs shape (2, 7) but the data has 10 classes: {FACTORY} is called "
                   "with student.arch.args only, so give it the class count there (timm and torchvision: "
                   "num_classes: 10)")


def _data(n, seed):
    """Inputs [n, 1, 40] whose class is a fixed linear function's argmax: learnable in two epochs."""
    x = torch.randn(n, 1, 40, generator=torch.Generator().manual_seed(seed))
    w = torch.randn(40, 10, generator=torch.Generator().manual_seed(99))
    return x, (x[:, 0] @ w).argmax(1)


@pytest.mark.parametrize("method, args", [
    ("cakd", {"feature": True, "warmup": 1, "student_stage": "blocks.1", "teacher_stage": "blocks.1"}),
    ("at", {"student_paths": ["blocks.0", "blocks.1"], "teacher_paths": ["blocks.0", "blocks.1"], "feat_weight": 10}),
], ids=["cakd_feature", "at_paths"])
def test_kdlab_fit_distils_factory_networks(method, args):
    torch.manual_seed(0)
    teacher = from_factory(FACTORY, {"model_name": "hf_like_net", "num_classes": 10, "width": 16})
    student = from_factory(FACTORY, {"model_name": "tiny_net", "num_classes": 10})
    before = {k: v.clone() for k, v in student.state_dict().items()}
    res = kdlab.fit(student, teacher, _data(96, 0), _data(64, 1), method=method, method_args=args, epochs=2,
                    batch_size=32, lr=0.02)
    term = "cakd_feat" if method == "cakd" else "at"
    assert f"loss_{term}" in res.history[-1]["train"] and res.history[-1]["train"][f"loss_{term}"] > 0
    assert any(not torch.equal(v, before[k]) for k, v in res.student.state_dict().items())
    assert 0 <= res.report["agreement"] <= 100
