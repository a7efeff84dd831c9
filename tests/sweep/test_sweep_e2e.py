"""`kdlab sweep` end to end on MNIST-1D (2 recipes × 2 seeds and their teacher cell, tiny data, a few epochs):
SIGKILL mid-sweep and rerun, --jobs 2 = --jobs 1, submitit's local executor (and a requeue after preemption),
failing, blocked and changed cells, a cell under torchrun."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kdlab.sweep.cell import Cell
from kdlab.sweep.table import collect, markdown, to_csv

TINY = ["data.train_subset=2000", "data.test_subset=300", "optim.epochs=6", "optim.milestones=[4]", "eval.every=2"]
SPEC = {"recipes": ["mnist1d/kd", "mnist1d/dkd"], "seeds": 2, "teachers": "train", "overrides": TINY,
        "teacher_overrides": ["optim.epochs=3", "optim.milestones=[]"]}
CELLS = ["mnist1d/teacher/seed0", "mnist1d/kd/seed0", "mnist1d/kd/seed1", "mnist1d/dkd/seed0", "mnist1d/dkd/seed1"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _sweep_cmd(spec: Path | None, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "kdlab", "sweep", *([str(spec)] if spec else []), "--out", str(out),
            "--threads", "1", "--no-progress", "--no-table", *args]


def _run(cmd, ok=True):
    p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    if ok and p.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} → {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def _statuses(out: Path) -> dict[str, str]:
    doc = json.loads((out / "sweep.json").read_text())
    return {str(Path(c["out_dir"]).relative_to(out)): c["status"] for c in doc["cells"]}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "sweep.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


@pytest.fixture(scope="module")
def full(spec, tmp_path_factory):
    """The uninterrupted sweep, one cell at a time."""
    out = tmp_path_factory.mktemp("full") / "sweep"
    _run(_sweep_cmd(spec, out, "--jobs", "1"))
    assert _statuses(out) == dict.fromkeys(CELLS, "trained")
    return out


@pytest.mark.slow
def test_sigkill_mid_sweep_then_rerun_skips_finished_resumes_interrupted_same_table(spec, full, tmp_path):
    out = tmp_path / "sweep"
    target = out / "mnist1d/dkd/seed0"
    proc = subprocess.Popen(_sweep_cmd(spec, out, "--jobs", "1"), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while time.time() < deadline:
        log = target / "metrics.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= 2:
            break
        if proc.poll() is not None:
            pytest.fail(f"sweep ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # the sweep only: its worker must end by itself
    proc.wait()
    time.sleep(2)
    assert not (target / "final.json").exists(), "the kill came too late to interrupt the cell"
    finished = {c: (out / c / "final.json").stat().st_mtime_ns for c in CELLS[:3]}

    _run(_sweep_cmd(spec, out, "--jobs", "1"))
    assert _statuses(out) == {**dict.fromkeys(CELLS[:3], "finished"), CELLS[3]: "resumed", CELLS[4]: "trained"}
    records = {c["out_dir"]: c for c in json.loads((out / "sweep.json").read_text())["cells"]}
    assert all(records[str(out / c)].get("skipped") for c in CELLS[:3])  # no worker ran them
    assert {c: (out / c / "final.json").stat().st_mtime_ns for c in CELLS[:3]} == finished  # not retrained
    assert json.loads((target / "final.json").read_text())["resumed_from_epoch"] >= 2
    assert to_csv(collect([out])) == to_csv(collect([full]))
    assert markdown(collect([out])) == markdown(collect([full]))

    # the same sweep with another config: every cell is reported as changed and left as it is
    changed = _run(_sweep_cmd(spec, out, "--set", "optim.lr=0.1"), ok=False)
    assert changed.returncode == 1 and "5 changed" in changed.stdout and "optim.lr: 0.05 there, 0.1 now" in \
        changed.stdout
    assert {c: (out / c / "final.json").stat().st_mtime_ns for c in CELLS[:3]} == finished


@pytest.mark.slow
def test_jobs_2_gives_the_numbers_of_jobs_1(spec, full, tmp_path):
    out = tmp_path / "sweep"
    _run(_sweep_cmd(spec, out, "--jobs", "2"))
    assert _statuses(out) == dict.fromkeys(CELLS, "trained")
    assert to_csv(collect([out])) == to_csv(collect([full]))


@pytest.mark.slow
def test_submitit_local_executor_runs_cells_to_the_same_table(full, tmp_path):
    out = tmp_path / "sweep"
    teacher = full / "mnist1d/teacher/seed0/model.safetensors"
    _run(_sweep_cmd(None, out, "--recipes", "mnist1d/kd", "--seeds", "2", "--teachers", "given", "--set", *TINY,
                    f"teacher.checkpoint={teacher}", "--executor", "submitit-local"))
    doc = json.loads((out / "sweep.json").read_text())
    assert [c["status"] for c in doc["cells"]] == ["trained", "trained"] and all(c["job_id"] for c in doc["cells"])
    ours = collect([out / "mnist1d/kd/seed0", out / "mnist1d/kd/seed1"])
    theirs = collect([full / "mnist1d/kd/seed0", full / "mnist1d/kd/seed1"])
    assert to_csv(ours) == to_csv(theirs)




@pytest.mark.slow
def test_a_preempted_job_is_requeued_and_resumes_its_cell(full, tmp_path, children):
    import submitit

    from kdlab.sweep.slurm import CellJob

    teacher = full / "mnist1d/teacher/seed0/model.safetensors"
    out = tmp_path / "cell"
    cell = Cell("mnist1d/kd", "mnist1d/kd", ("run.progress=false", *TINY, f"teacher.checkpoint={teacher}",
                                             "seed=0", f"out_dir={out}"), str(out), 0)
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    # a 1-minute limit: submitit takes the signal as the time limit, which only a checkpointable job survives
    executor.update_parameters(timeout_min=1)
    job = executor.submit(CellJob(threads=1), cell)
    deadline = time.time() + 600
    while time.time() < deadline:
        log = out / "metrics.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= 2:
            break
        assert job.state == "RUNNING", job.stderr()
        time.sleep(0.01)
    tasks = children(int(job.job_id))
    assert tasks
    for pid in tasks:  # what SLURM sends before the time limit (and before preempting)
        os.kill(pid, signal.SIGUSR2)
    rec = job.result()
    assert rec["status"] == "done" and rec["resumed_from_epoch"] >= 2
    assert "Requeued job" in (job.stderr() or "") + (job.stdout() or "")
    a = json.loads((out / "final.json").read_text())
    b = json.loads((full / "mnist1d/kd/seed0/final.json").read_text())
    assert a["student"] == b["student"] and a["fidelity"] == b["fidelity"]


@pytest.mark.slow
def test_failing_cells_are_recorded_the_sweep_goes_on_and_the_exit_code_says_so(full, tmp_path):
    teacher = full / "mnist1d/teacher/seed0/model.safetensors"
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({
        "recipes": [{"name": "diverges", "recipe": "mnist1d/kd", "overrides": ["optim.lr=1e30"]}, "mnist1d/kd"],
        "teachers": "given", "overrides": [*TINY, f"teacher.checkpoint={teacher}"]}))
    p = _run(_sweep_cmd(spec, tmp_path / "o"), ok=False)
    assert p.returncode == 1, p.stderr
    doc = {c["name"]: c for c in json.loads((tmp_path / "o" / "sweep.json").read_text())["cells"]}
    assert doc["diverges"]["status"] == "failed" and doc["diverges"]["exit_code"] == 3
    assert "non-finite" in doc["diverges"]["reason"]
    assert doc["mnist1d/kd"]["status"] == "trained"  # the sweep went on
    assert "failed diverges seed 0 (exit 3)" in p.stdout

    # a teacher cell that fails: its students are not run, and say why
    spec.write_text(yaml.safe_dump({"recipes": ["mnist1d/kd"], "seeds": 2, "teachers": "train",
                                    "overrides": TINY, "teacher_overrides": ["optim.lr=1e30"]}))
    p = _run(_sweep_cmd(spec, tmp_path / "o2"), ok=False)
    assert p.returncode == 1
    assert _statuses(tmp_path / "o2") == {"mnist1d/teacher/seed0": "failed", "mnist1d/kd/seed0": "blocked",
                                          "mnist1d/kd/seed1": "blocked"}
    assert not (tmp_path / "o2/mnist1d/kd").exists()


@pytest.mark.slow
def test_a_cell_of_two_processes_runs_under_torchrun(full, tmp_path):
    teacher = full / "mnist1d/teacher/seed0/model.safetensors"
    base = ["--recipes", "mnist1d/kd", "--teachers", "given", "--procs-per-cell", "2", "--set", *TINY,
            f"teacher.checkpoint={teacher}"]
    _run(_sweep_cmd(None, tmp_path / "ok", *base))
    log = (tmp_path / "ok/mnist1d/kd/seed0/torchrun.log").read_text()
    assert (tmp_path / "ok/mnist1d/kd/seed0/final.json").is_file() and "wrote" in log
    # a rank's own exit code and one-line message become the cell's record
    p = _run(_sweep_cmd(None, tmp_path / "bad", *base, "optim.batch_size=33"), ok=False)
    assert p.returncode == 1
    rec = json.loads((tmp_path / "bad" / "sweep.json").read_text())["cells"][0]
    assert rec["status"] == "failed" and rec["exit_code"] == 2 and "divisible" in rec["reason"], rec
