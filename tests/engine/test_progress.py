"""What a run shows: bars on a terminal, one plain line per epoch (and a heartbeat) when the output is a file."""

import io
import subprocess
import sys

from kdlab.engine import progress as progress_mod
from kdlab.engine.progress import Progress, epoch_line

RECORD = {"epoch": 3, "lr": 0.05, "epoch_time_s": 1.5,
          "train": {"acc": 80.0, "loss_ce": 0.2, "loss_kd": 1.0, "loss": 1.2, "agreement": 85.0},
          "test": {"student_acc": 81.25, "agreement": 90.5}}


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_epoch_line_has_epoch_lr_loss_terms_accuracy_and_agreement():
    line = epoch_line(RECORD, 20)
    assert line.startswith("epoch 3/20  lr 0.05  loss 1.2000 (ce 0.2, kd 1)  train acc 80.00%")
    assert "test acc 81.25%" in line and "agreement 90.50%" in line and "\r" not in line


def test_a_file_gets_a_line_per_epoch_and_a_heartbeat_within_long_epochs(monkeypatch):
    out = io.StringIO()
    p = Progress(True, 2, stream=out)
    monkeypatch.setattr(progress_mod, "HEARTBEAT_S", 0.0)  # every step is "a long time" later
    for epoch in p.over_epochs(1):
        assert list(p.over_steps(range(3), epoch)) == [0, 1, 2]
        p.epoch_done({**RECORD, "epoch": epoch})
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[:3] == ["epoch 1/2: step 1/3, 0 s", "epoch 1/2: step 2/3, 0 s", "epoch 1/2: step 3/3, 0 s"]
    assert [line.split("  ")[0] for line in lines if "lr" in line] == ["epoch 1/2", "epoch 2/2"]


def test_a_terminal_gets_bars_and_disabled_progress_writes_nothing():
    tty = _Terminal()
    p = Progress(True, 2, stream=tty)
    for epoch in p.over_epochs(1):
        list(p.over_steps(range(3), epoch))
        p.epoch_done({**RECORD, "epoch": epoch})
    p.close()
    assert "\r" in tty.getvalue() and "epochs" in tty.getvalue()
    quiet = io.StringIO()
    p = Progress(False, 2, stream=quiet)
    for epoch in p.over_epochs(1):
        list(p.over_steps(range(3), epoch))
        p.epoch_done({**RECORD, "epoch": epoch})
    assert quiet.getvalue() == ""


def test_kdlab_train_into_a_pipe_writes_plain_lines(tmp_path):
    """The cluster case: `kdlab train ... 2>&1 | tee log`. No carriage-return redraws, one line per epoch."""
    cmd = [sys.executable, "-m", "kdlab", "teacher", "mnist1d/teacher", "data.train_subset=128",
           "data.test_subset=64", "optim.epochs=3", "optim.milestones=[]", "eval.every=1", "run.tensorboard=false",
           f"out_dir={tmp_path / 't'}"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout
    assert "\r" not in proc.stdout
    epochs = [line for line in proc.stdout.splitlines() if line.startswith("epoch ") and " lr " in line]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"]
    assert all("test acc" in line for line in epochs)
