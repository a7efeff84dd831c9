"""torchrun with 2 CPU processes (gloo) trains exactly like 1 process with the same global batch.

The student is BN-free (mnist1d_mlp): with BatchNorm each rank would normalise by its half batch's statistics, which
is a different computation from one process, not a bug. Global batch 64 = 2 ranks × 32; the train subset is a
multiple of 64, so every step averages equal shards and DDP's mean of rank gradients is the global-batch gradient.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from kdlab import models
from kdlab.models import save_model

METHODS = {
    "kd": "{name: kd, args: {temperature: 4.0}}",
    # DHKD's gradient alignment uses autograd.grad (no DDP hooks): its backward all-reduces g1 and g2 itself
    "dhkd": "{name: dhkd, args: {head: linear, gradient_alignment: true, dropout: 0.0}}",
}


def _config(tmp_path, teacher, method):
    cfg = tmp_path / f"{method}.yaml"
    cfg.write_text(f"""
data: {{name: mnist1d, train_subset: 512, test_subset: 100}}
teacher: {{checkpoint: {teacher}}}
student: {{arch: mnist1d_mlp}}
method: {METHODS[method]}
optim: {{epochs: 2, batch_size: 64, lr: 0.1}}
run: {{progress: false, threads: 1, tensorboard: false}}
""")
    return cfg


def _run(cfg, out, nproc):
    if nproc == 1:  # the reference runs in this process (same code path as `kdlab train`, no start-up cost)
        from kdlab import build

        build.distil(build.load_config(str(cfg), [f"out_dir={out}"]))
        return json.loads((out / "final.json").read_text())
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd = [sys.executable, *launcher, "-m", "kdlab", "train", str(cfg), f"out_dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {**json.loads((out / "final.json").read_text()), "stdout": proc.stdout}


def _train_rows(out):
    return [json.loads(line)["train"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp") / "teacher.safetensors"
    torch.manual_seed(7)
    save_model(path, models.create("mnist1d_cnn_small", 10), arch="mnist1d_cnn_small", num_classes=10)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_two_gloo_processes_match_one_process(tmp_path, teacher, method):
    cfg = _config(tmp_path, teacher, method)
    one = _run(cfg, tmp_path / "one", 1)
    two = _run(cfg, tmp_path / "two", 2)

    w1 = load_file(tmp_path / "one" / "model.safetensors")
    w2 = load_file(tmp_path / "two" / "model.safetensors")
    assert w1.keys() == w2.keys()
    start = models.create("mnist1d_mlp", 10).state_dict()  # (not the seed-0 init: training really moved them)
    assert any(not torch.equal(w1[k], start[k]) for k in w1)
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5)
    for r1, r2 in zip(_train_rows(tmp_path / "one"), _train_rows(tmp_path / "two"), strict=True):
        assert r1.keys() == r2.keys()
        for k in r1:  # per-example sums all-reduced over ranks = the one-process epoch means
            assert r2[k] == pytest.approx(r1[k], rel=1e-4, abs=1e-6), k
    for k in ("student_acc", "teacher_acc", "agreement", "kl", "student_nll", "n"):
        assert two["fidelity"][k] == pytest.approx(one["fidelity"][k], rel=1e-4, abs=1e-6), k
    assert two["fidelity"]["n"] == 100  # both ranks' eval shards were summed
    if method == "kd":
        # a restart of the finished run under DDP leaves it as it is (final.json untouched) and says so, once
        before = (tmp_path / "two" / "final.json").read_bytes()
        again = _run(cfg, tmp_path / "two", 2)
        assert (tmp_path / "two" / "final.json").read_bytes() == before
        assert again["stdout"].count("holds a finished run") == 1


def test_global_batch_must_split_evenly(monkeypatch):
    from kdlab.data.splits import DataSplits
    from kdlab import build, distributed

    x, y = torch.zeros(8, 1, 4), torch.zeros(8, dtype=torch.long)
    splits = DataSplits(x_train=x, y_train=y, x_test=x, y_test=y, num_classes=2, name="toy")
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    with pytest.raises(ValueError, match=r"optim.batch_size=33 .*divisible"):
        build.make_loaders(splits, 33, 16, 0, "cpu")
    train, test = build.make_loaders(splits, 4, 16, 0, "cpu")
    assert (train.batch_size, train.global_batch_size, train.rank) == (2, 4, 1)
    assert test.global_batch_size == 16
