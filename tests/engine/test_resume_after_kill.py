"""A run killed with SIGKILL and restarted on the same out_dir ends exactly like an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

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
run: {{progress: false, threads: 1}}
""")
    return cfg


def _cmd(cfg, out):
    return [sys.executable, "-m", "kdlab", "train", str(cfg), f"out_dir={out}"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _history(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("epoch_time_s")
    return rows


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    torch.manual_seed(123)
    teacher = tmp_path / "teacher.safetensors"
    save_model(teacher, models.create("mnist1d_cnn_small", 10), arch="mnist1d_cnn_small", num_classes=10)
    cfg = _config(tmp_path, teacher)

    full = tmp_path / "full"
    subprocess.run(_cmd(cfg, full), check=True, env=_env(), capture_output=True, timeout=600)

    part = tmp_path / "part"
    proc = subprocess.Popen(_cmd(cfg, part), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = part / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 2:
            break
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (part / "final.json").exists(), "the kill came too late to interrupt the run"

    resumed = subprocess.run(_cmd(cfg, part), check=True, env=_env(), capture_output=True, text=True, timeout=600)
    assert "resumed from epoch" in resumed.stdout

    a, b = json.loads((full / "final.json").read_text()), json.loads((part / "final.json").read_text())
    assert b["resumed_from_epoch"] is not None and 2 <= b["resumed_from_epoch"] <= EPOCHS
    assert a["student"] == b["student"]
    assert a["fidelity"] == b["fidelity"]
    assert _history(full) == _history(part)
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
