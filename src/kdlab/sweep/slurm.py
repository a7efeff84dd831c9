"""Cells on a cluster through ``submitit`` (``pip install 'kdlab[cluster]'``): SLURM array jobs, or submitit's local
executor, which runs the very same job code as subprocesses (what CI tests).

The submitted function is :class:`CellJob`: :func:`kdlab.sweep.cell.run_cell` in the job's allocation (a cell of
several GPUs runs under torchrun there). It is *checkpointable*: on preemption or at the time limit, SLURM signals the
job, submitit asks ``CellJob.checkpoint`` for the call to make next, and requeues it; the requeued job starts the same
cell, which resumes from the checkpoint of its last finished epoch (kdlab saves one every epoch, atomically).

Stages: the teacher cells are submitted first (one array job), the students once their teachers have ended (a second
array). Each job's id is recorded in ``sweep.json`` as soon as it is submitted, so a rerun of the sweep does not
submit a cell again while its job is still queued or running.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

from kdlab._bar import tqdm
from kdlab.sweep.cell import Cell, run_cell
from kdlab.sweep.spec import SlurmOptions

__all__ = ["CellJob", "Submitit", "submitit_module"]

_ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED", "REQUEUE_HOLD",
           "REQUEUE_FED"}


def submitit_module():
    """The submitit package, or a clear error naming the extra that installs it."""
    try:
        import submitit
    except ImportError:
        raise ValueError("--executor slurm/submitit-local needs submitit: pip install 'kdlab[cluster]'") from None
    return submitit


class CellJob:
    """The job submitit runs for a cell: ``run_cell(cell, threads)``; requeued (and so resumed) when preempted."""

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def __call__(self, cell: Cell) -> dict[str, Any]:
        return run_cell(cell, self.threads)

    def checkpoint(self, cell: Cell):
        """What submitit submits again after a preemption or time-out: the same cell (it resumes from its
        checkpoint)."""
        return submitit_module().helpers.DelayedSubmission(CellJob(self.threads), cell)


class Submitit:
    """An executor over submitit: ``cluster="slurm"`` (array jobs with ``options``) or ``"local"`` (subprocesses)."""

    def __init__(self, folder: str | Path, cluster: Literal["slurm", "local"] = "slurm",
                 options: SlurmOptions | None = None, procs_per_cell: int = 1, threads: int | None = None,
                 wait: bool = True, progress: bool = True, poll_s: float = 5.0):
        submitit = submitit_module()
        self.cluster, self.folder, self.progress = cluster, Path(folder), progress
        self.poll_s = poll_s if cluster == "slurm" else min(poll_s, 1.0)
        self.wait = wait or cluster == "local"  # a local job has no scheduler to hold the students back
        options = options or SlurmOptions()
        gpus = options.gpus_per_cell if options.gpus_per_cell is not None else procs_per_cell
        if cluster == "slurm":
            self.executor = submitit.SlurmExecutor(folder=self.folder)
            params: dict[str, Any] = dict(
                job_name="kdlab-sweep", time=options.time_min, nodes=1, ntasks_per_node=1,
                cpus_per_task=options.cpus_per_cell, array_parallelism=options.array_parallelism,
                setup=list(options.setup), additional_parameters=dict(options.additional))
            for key in ("partition", "account", "qos", "constraint"):
                if getattr(options, key) is not None:
                    params[key] = getattr(options, key)
            if gpus:
                params["gpus_per_node"] = gpus
            if options.mem_gb is not None:
                params["mem"] = f"{options.mem_gb:g}GB"
            self.executor.update_parameters(**params)
            self.threads = threads or options.cpus_per_cell
        else:
            self.executor = submitit.LocalExecutor(folder=self.folder)
            self.executor.update_parameters(timeout_min=options.time_min, gpus_per_node=gpus if gpus else 0)
            self.threads = threads
        self.job = CellJob(self.threads)

    def _submit(self, cells: list[Cell], after_jobs: list[str]) -> list:
        if self.cluster == "slurm":
            dep = {"dependency": "afterok:" + ":".join(after_jobs), "kill-on-invalid-dep": "yes"} if after_jobs else {}
            extra = {**self.executor.parameters.get("additional_parameters", {}), **dep}
            self.executor.update_parameters(additional_parameters=extra)
        return self.executor.map_array(self.job, cells)

    def active(self, previous: list[dict[str, Any]]) -> dict[str, dict]:
        """Cells whose job (recorded in a previous ``sweep.json``) is still queued or running: not submitted again."""
        submitit = submitit_module()
        out = {}
        for rec in previous:
            job_id = rec.get("job_id")
            if rec.get("status") != "submitted" or not job_id:
                continue
            if self.cluster == "slurm":
                alive = submitit.SlurmJob(self.folder, job_id).state.split(" ")[0] in _ACTIVE
            else:
                alive = _pid_alive(int(job_id))
            if alive:
                key = rec["out_dir"]  # a cell's key is its directory
                out[key] = {"key": key, "status": "submitted", "job_id": job_id,
                            "reason": f"still queued or running as job {job_id}"}
        return out

    def run(self, cells, gate, done) -> None:
        bar = tqdm(total=len(cells), desc="cells", disable=not self.progress)
        teacher_jobs: list[str] = []
        for stage in ("teacher", "student"):
            todo = []
            for cell in (c for c in cells if c.kind == stage):
                if self.wait or stage == "teacher":
                    settled = gate(cell)
                    if settled is not None:
                        done(cell, settled)
                        bar.update()
                        continue
                todo.append(cell)
            if not todo:
                continue
            jobs = self._submit(todo, [] if self.wait else sorted({j.split("_")[0] for j in teacher_jobs}))
            for cell, job in zip(todo, jobs):
                done(cell, {"key": cell.key, "status": "submitted", "job_id": job.job_id,
                            "reason": f"submitted as job {job.job_id}"})
            if stage == "teacher":
                teacher_jobs = [j.job_id for j in jobs]
            if self.wait:
                self._collect(todo, jobs, done, bar)
        bar.close()

    def _collect(self, cells: list[Cell], jobs: list, done, bar) -> None:
        waiting = dict(zip(range(len(cells)), zip(cells, jobs)))
        while waiting:
            for i, (cell, job) in list(waiting.items()):
                if not job.done():
                    continue
                del waiting[i]
                try:
                    rec = job.result()
                except Exception as exc:  # the job itself failed (timed out too often, killed, ...)
                    text = " ".join(str(exc).split())
                    rec = {"key": cell.key, "status": "failed", "exit_code": 1,
                           "reason": f"job {job.job_id} failed: {text[:300]}"}
                rec = {**rec, "job_id": job.job_id}
                done(cell, rec)
                bar.set_postfix_str(f"{cell.describe()}: {rec['status']}", refresh=False)
                bar.update()
            if waiting:
                time.sleep(self.poll_s)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
