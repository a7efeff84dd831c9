"""The local worker pool: results in order, errors raised, a dead worker reported and replaced, dependencies and
gates, GPU pinning per worker, and no worker outliving a SIGKILLed parent. The tasks are stdlib functions (a spawned
worker imports them by name)."""

import math
import os
import signal
import subprocess
import sys
import time

import pytest

from kdlab.sweep import Outcome, WorkerPool, device_groups




def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_pool_results_errors_deaths_dependencies_and_pinning():
    with WorkerPool(2, 1, devices=["5", "6"]) as pool:
        assert pool.map(math.sqrt, {"a": (9.0,), "b": (4.0,)}) == {"a": 3.0, "b": 2.0}
        # every worker sees its own CUDA devices
        seen = pool.map(os.getenv, {0: ("CUDA_VISIBLE_DEVICES",), 1: ("CUDA_VISIBLE_DEVICES",)})
        assert sorted(seen.values()) == ["5", "6"]
        with pytest.raises(ValueError, match="math domain error"):
            pool.map(math.sqrt, {"x": (-1.0,), "y": (1.0,)})
        # a worker that dies is reported for its task and replaced; the other tasks still run
        out = pool.run({"die": (os._exit, (3,)), "after": (math.sqrt, (16.0,))})
        assert out["die"].died == 3 and not out["die"].ok and "exit code 3" in out["die"].describe_failure()
        assert out["after"].value == 4.0
        # `after` holds a task back until its prerequisites ended; `gate` settles it without running it
        order = []
        out = pool.run({"t": (math.sqrt, (-1.0,)), "s": (math.sqrt, (1.0,)), "u": (math.sqrt, (25.0,))},
                       after={"s": ("t",)},
                       gate=lambda key, deps: Outcome(value="blocked") if any(not o.ok for o in deps.values())
                       else None, on_result=lambda key, o: order.append(key))
        assert out["s"].value == "blocked" and out["u"].value == 5.0 and isinstance(out["t"].error, ValueError)
        assert order.index("t") < order.index("s")


def test_device_groups(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert device_groups(1) == ["0", "1", "2", "3"]
    assert device_groups(2) == ["0,1", "2,3"]
    assert device_groups(3) == ["0,1,2"]
    with pytest.raises(ValueError, match="needs 5 GPUs but 4 are visible"):
        device_groups(5)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert device_groups(1) is None


@pytest.mark.slow
def test_workers_end_when_the_sweep_is_sigkilled(tmp_path, children):
    script = ("import time\nfrom kdlab.sweep import WorkerPool\n"
              "with WorkerPool(1, 1) as pool:\n    pool.map(time.sleep, {0: (120,)})\n")
    parent = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    workers: list[int] = []
    while time.time() < deadline and not workers:
        workers = [p for p in children(parent.pid) if "spawn" in open(f"/proc/{p}/cmdline").read()]
        time.sleep(0.2)
    assert workers, "the pool never started its worker"
    time.sleep(3)  # the worker is in its task (or still importing)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers), "a worker outlived its SIGKILLed sweep"
