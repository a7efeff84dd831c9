"""One writer per run directory (kdlab.engine.run_dir): a second process on a busy out_dir is refused at once, a
lock left by a SIGKILLed process is not in the way, and only rank 0 locks."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from kdlab import distributed, models
from kdlab.engine.run_dir import LOCK_NAME, RunDirBusy, RunDirLock
from kdlab.models import save_model

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fcntl locks")


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_a_held_lock_refuses_a_second_holder_and_names_it(tmp_path):
    with RunDirLock(tmp_path / "run"):
        with pytest.raises(RunDirBusy, match=rf"being written by another kdlab run \(pid {os.getpid()} on "):
            with RunDirLock(tmp_path / "run"):
                pass
    with RunDirLock(tmp_path / "run"):  # released on exit
        pass


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    code = ("import sys, time; from pathlib import Path; from kdlab.engine.run_dir import RunDirLock; "
            "lock = RunDirLock(Path(sys.argv[1])).__enter__(); print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunDirBusy, match=f"pid {holder.pid}"):
        RunDirLock(tmp_path / "run").__enter__()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "run" / LOCK_NAME).exists()  # the file stays; the kernel dropped the lock with the process
    with RunDirLock(tmp_path / "run"):
        pass


def test_a_forked_child_of_a_killed_run_does_not_keep_its_lock(tmp_path):
    """A DataLoader worker outlives its killed run for a few seconds; it must not hold the run's lock meanwhile."""
    code = ("import os, sys, time; from pathlib import Path; from kdlab.engine.run_dir import RunDirLock; "
            "lock = RunDirLock(Path(sys.argv[1])).__enter__(); pid = os.fork()\n"
            "if pid == 0: time.sleep(600)\n"
            "print(pid, flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    child = int(holder.stdout.readline())
    try:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        os.kill(child, 0)  # the child is still alive
        with RunDirLock(tmp_path / "run"):
            pass
    finally:
        os.kill(child, signal.SIGKILL)


def test_only_rank_0_locks(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    with RunDirLock(tmp_path / "run"):
        assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_second_kdlab_train_on_a_busy_out_dir_is_refused_at_once(tmp_path):
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.safetensors"
    save_model(teacher, models.create("mnist1d_cnn_small", 10), arch="mnist1d_cnn_small", num_classes=10)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "kdlab", "train", "mnist1d/kd", f"out_dir={out}", f"teacher.checkpoint={teacher}",
           "teacher.arch=mnist1d_cnn_small", "student.arch=mnist1d_mlp", "data.train_subset=512",
           "data.test_subset=100", "optim.epochs=5000", "run.progress=false", "run.threads=1",
           "run.on_divergence=warn"]  # (a random teacher: whether the student learns is not the point here)
    first = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().count("\n") >= 1):
            assert first.poll() is None and time.time() < deadline, first.communicate()[1][-2000:]
            time.sleep(0.02)
        second = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
        assert first.poll() is None, "the first run must still be training"
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1
        assert f"being written by another kdlab run (pid {first.pid} " in second.stderr
        epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert epochs == list(range(1, len(epochs) + 1))  # one writer: no interleaved epochs
    finally:
        first.kill()
        first.wait()
