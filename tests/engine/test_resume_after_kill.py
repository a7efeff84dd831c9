"""A run killed with SIGKILL and restarted on the same out_dir ends exactly like an uninterrupted run."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from kdlab import models
from kdlab.models import save_model

EPOCHS = 8


def _config(tmp_path, teacher_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"""
data: {{name: mnist1d, train_subset: 2000, test_subset: 300}}
teacher: {{checkpoint: {teacher_path}}}
student: {{arch: mnist1d_mlp}}
method: {{name: dkd, args: {{warmup: 3}}}}
optim: {{epochs: {EPOCHS}, batch_size: 32, lr: 0.05, milestones: [5]}}
eval: {{every: 2}}
run: {{progress: false, threads: 1, grad_conflict_every: 7}}
""")
    return cfg


def _cmd(cfg, out):
    return [sys.executable, "-m", "kdlab", "train", str(cfg), f"out_dir={out}"]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, run_tools):
    torch.manual_seed(123)
    teacher = tmp_path / "teacher.safetensors"
    save_model(teacher, models.create("mnist1d_cnn_small", 10), arch="mnist1d_cnn_small", num_classes=10)
    cfg = _config(tmp_path, teacher)

    full = tmp_path / "full"
    subprocess.run(_cmd(cfg, full), check=True, env=run_tools.env(), capture_output=True, timeout=600)

    part = tmp_path / "part"
    run_tools.killed_after(_cmd(cfg, part), part)

    resumed = subprocess.run(_cmd(cfg, part), check=True, env=run_tools.env(), capture_output=True, text=True, timeout=600)
    assert "resumed from epoch" in resumed.stdout

    a, b = json.loads((full / "final.json").read_text()), json.loads((part / "final.json").read_text())
    assert b["resumed_from_epoch"] is not None and 2 <= b["resumed_from_epoch"] <= EPOCHS
    assert a["student"] == b["student"]
    assert a["fidelity"] == b["fidelity"]
    # the per-bin fidelity of the last evaluation and the per-epoch gradient cosines (measured steps chosen by their
    # index in the epoch) resume exactly too
    assert a["fidelity_bins"] == b["fidelity_bins"] and a["grad_conflict"] == b["grad_conflict"]
    assert len(a["grad_conflict"]["epochs"]) == EPOCHS
    assert run_tools.history(full) == run_tools.history(part)
    wa, wb = load_file(full / "model.safetensors"), load_file(part / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_rerun_with_a_different_config_is_refused(tmp_path):
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.safetensors"
    save_model(teacher, models.create("mnist1d_cnn_small", 10), arch="mnist1d_cnn_small", num_classes=10)
    cfg = _config(tmp_path, teacher)
    out = tmp_path / "o"
    base = ["data.train_subset=64", "data.test_subset=32", "optim.epochs=1"]
    from kdlab.cli import main

    assert main(["train", str(cfg), f"out_dir={out}", *base]) == 0
    assert main(["train", str(cfg), f"out_dir={out}", *base, "optim.lr=0.2"]) == 2
