import json
import os
import signal
import subprocess
import time
import types

import pytest
import torch

# Tests must not depend on the user's cache directory: every generated dataset goes to one session tmp dir.
@pytest.fixture(scope="session", autouse=True)
def _isolated_data_cache(tmp_path_factory):
    old = os.environ.get("KDLAB_DATA")
    os.environ["KDLAB_DATA"] = str(tmp_path_factory.mktemp("kdlab_data"))
    yield
    if old is None:
        os.environ.pop("KDLAB_DATA", None)
    else:
        os.environ["KDLAB_DATA"] = old


@pytest.fixture(autouse=True)
def _one_thread():
    # two xdist workers on two cores: one thread each avoids oversubscription
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _subprocess_env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _history(out):
    """metrics.jsonl of a run without the wall-clock field (equal for equal runs)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("epoch_time_s")
    return rows


def _killed_after(cmd, out, epochs=2):
    """Start ``cmd`` (a run writing ``out``), SIGKILL it once ``epochs`` epochs are logged, before it finishes."""
    proc = subprocess.Popen(cmd, env=_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = out / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= epochs:
            break
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "final.json").exists(), "the kill came too late to interrupt the run"


@pytest.fixture
def run_tools():
    """Helpers of the kill-and-resume tests: ``env()``, ``history(out)``, ``killed_after(cmd, out, epochs)``."""
    return types.SimpleNamespace(env=_subprocess_env, history=_history, killed_after=_killed_after)


@pytest.fixture(scope="session")
def random_teacher(tmp_path_factory):
    """A randomly initialised (seed 0) mnist1d_cnn_small saved as a kdlab weights file: a teacher for runs that test
    the machinery, not accuracy."""
    from kdlab import models

    path = tmp_path_factory.mktemp("random_teacher") / "model.safetensors"
    torch.manual_seed(0)
    models.save_model(path, models.create("mnist1d_cnn_small", 10), arch="mnist1d_cnn_small", num_classes=10)
    return path
