"""CRD (memory bank, its seeded negatives), ReviewKD (ABF modules) and DKD under DOT (two momentum buffers): a run
killed with SIGKILL and restarted on the same out_dir ends bit for bit like an uninterrupted one."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from kdlab import models
from kdlab.models import save_model

EPOCHS = 6
METHODS = {
    "crd": "{name: crd, args: {num_negatives: 64, embed_dim: 32}}",
    "reviewkd": "{name: reviewkd, args: {warmup: 2}}",
    "dkd_dot": "{name: dkd, args: {warmup: 2}}",
}


def _config(tmp_path, teacher_path, case):
    optim = "optimizer: dot, " if case == "dkd_dot" else ""
    cfg = tmp_path / f"{case}.yaml"
    cfg.write_text(f"""
data: {{name: mnist1d, train_subset: 1000, test_subset: 200}}
teacher: {{checkpoint: {teacher_path}}}
student: {{arch: mnist1d_cnn_small}}
method: {METHODS[case]}
optim: {{{optim}epochs: {EPOCHS}, batch_size: 32, lr: 0.05, milestones: [4]}}
eval: {{every: 2}}
run: {{progress: false, threads: 1, tensorboard: false}}
""")
    return cfg


def _cmd(cfg, out):
    return [sys.executable, "-m", "kdlab", "train", str(cfg), f"out_dir={out}"]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(METHODS))
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, run_tools, case):
    torch.manual_seed(123)
    teacher = tmp_path / "teacher.safetensors"
    save_model(teacher, models.create("mnist1d_cnn", 10), arch="mnist1d_cnn", num_classes=10)
    cfg = _config(tmp_path, teacher, case)

    full = tmp_path / "full"
    subprocess.run(_cmd(cfg, full), check=True, env=run_tools.env(), capture_output=True, timeout=600)

    part = tmp_path / "part"
    run_tools.killed_after(_cmd(cfg, part), part)
    resumed = subprocess.run(_cmd(cfg, part), check=True, env=run_tools.env(), capture_output=True, text=True,
                             timeout=600)
    assert "resumed from epoch" in resumed.stdout

    a, b = json.loads((full / "final.json").read_text()), json.loads((part / "final.json").read_text())
    assert b["resumed_from_epoch"] is not None and 2 <= b["resumed_from_epoch"] <= EPOCHS
    assert a["student"] == b["student"] and a["fidelity"] == b["fidelity"]
    assert run_tools.history(full) == run_tools.history(part)
    wa, wb = load_file(full / "model.safetensors"), load_file(part / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # the whole training state too: the method's extras (CRD's bank, ReviewKD's ABFs) and the optimizer's buffers
    ca, cb = load_file(full / "checkpoint.safetensors"), load_file(part / "checkpoint.safetensors")
    state = [k for k in ca if not k.startswith("rng.")]
    assert all(torch.equal(ca[k], cb[k]) for k in state)
    if case == "crd":
        assert ca["model.bank.student"].shape == (1000, 32) and int(ca["model.bank.step"]) == EPOCHS * 32
    if case == "reviewkd":
        assert any(k.startswith("model.abfs.") for k in ca)
    if case == "dkd_dot":
        assert any(k.endswith(".momentum_kd_buffer") for k in ca)
