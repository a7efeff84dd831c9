"""A teacher and a student built by their own library (tests/models/factory_nets.py, named by an import string),
distilled with CAKD's feature level through the CLI and with AT at module paths through ``kdlab.fit``: killed with
SIGKILL and restarted on the same out_dir, each run ends bit for bit like an uninterrupted one."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kdlab.models import from_factory, save_model

EPOCHS = 6
NETS = Path(__file__).parents[1] / "models" / "factory_nets.py"
FACTORY = f"{NETS}:create_model"
TEACHER = {"model_name": "hf_like_net", "num_classes": 10, "width": 16}

FIT_SCRIPT = f"""
import sys
import torch
import kdlab
from kdlab.data import load_dataset
from kdlab.models import from_factory, load_model

splits = load_dataset("mnist1d")  # float signals [N, 1, 40], used as given
teacher = load_model(sys.argv[1])
torch.manual_seed(0)
student = from_factory({FACTORY!r}, {{"model_name": "tiny_net", "num_classes": 10}})
kdlab.fit(student, teacher, (splits.x_train[:600], splits.y_train[:600]), (splits.x_test[:200], splits.y_test[:200]),
          method="at",
          method_args={{"student_paths": ["blocks.0", "blocks.1"], "teacher_paths": ["blocks.0", "blocks.1"]}},
          epochs={EPOCHS}, batch_size=32, lr=0.02, milestones=[4], out_dir=sys.argv[2])
"""


def _commands(tmp_path, teacher, case):
    if case == "fit":
        script = tmp_path / "fit_factory.py"
        script.write_text(FIT_SCRIPT)
        return lambda out: [sys.executable, str(script), str(teacher), str(out)]
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"""
data: {{name: mnist1d, train_subset: 1000, test_subset: 200}}
teacher: {{checkpoint: {teacher}}}
student: {{arch: {{factory: '{FACTORY}', args: {{model_name: tiny_net, num_classes: 10}}}}}}
method: {{name: cakd, args: {{feature: true, warmup: 2, student_stage: blocks.1, teacher_stage: blocks.1}}}}
optim: {{epochs: {EPOCHS}, batch_size: 32, lr: 0.05, milestones: [4]}}
eval: {{every: 2}}
run: {{progress: false, threads: 1, tensorboard: false}}
""")
    return lambda out: [sys.executable, "-m", "kdlab", "train", str(cfg), f"out_dir={out}"]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["cli_cakd_feature", "fit"])
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, run_tools, case):
    torch.manual_seed(123)
    teacher = tmp_path / "teacher.safetensors"
    save_model(teacher, from_factory(FACTORY, TEACHER), arch={"factory": FACTORY, "args": TEACHER}, num_classes=10)
    cmd = _commands(tmp_path, teacher, case)

    full = tmp_path / "full"
    subprocess.run(cmd(full), check=True, env=run_tools.env(), capture_output=True, timeout=600)
    part = tmp_path / "part"
    run_tools.killed_after(cmd(part), part)
    subprocess.run(cmd(part), check=True, env=run_tools.env(), capture_output=True, text=True, timeout=600)

    a, b = json.loads((full / "final.json").read_text()), json.loads((part / "final.json").read_text())
    assert b["resumed_from_epoch"] is not None and 2 <= b["resumed_from_epoch"] <= EPOCHS
    assert a["student"] == b["student"] and a["fidelity"] == b["fidelity"]
    assert run_tools.history(full) == run_tools.history(part)
    ca, cb = load_file(full / "checkpoint.safetensors"), load_file(part / "checkpoint.safetensors")
    assert all(torch.equal(ca[k], cb[k]) for k in ca if not k.startswith("rng."))  # weights, extras, optimizer
    wa, wb = load_file(full / "model.safetensors"), load_file(part / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    last = run_tools.history(full)[-1]["train"]
    assert last["loss_cakd_feat" if case != "fit" else "loss_at"] > 0
    if case != "fit":
        assert any(".connector." in k for k in ca)  # CAKD's 1x1 conv + BN, checkpointed
        assert a["student"]["factory"]["args"]["model_name"] == "tiny_net"
