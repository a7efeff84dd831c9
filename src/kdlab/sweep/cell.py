"""One cell of a sweep and the one function that runs it, wherever it runs (a local worker, a SLURM job, submitit's
local executor): :func:`run_cell`.

A cell is an ordinary run: a recipe, its overrides (``seed=``, ``out_dir=`` among them) and ``kdlab teacher`` or
``kdlab train``. It is trained exactly as that command would train it (``builder.load_config`` →
``builder.train_teacher`` / ``builder.distil``), so resume, ``kdlab eval`` and ``kdlab fidelity`` work on its directory.
A cell of one process runs in the calling process; a cell of several processes runs under ``torchrun`` (one process
per GPU of its allocation, or gloo processes on CPU).

:func:`run_cell` never raises for a failing run: it returns a record with the exit code ``kdlab train`` would have
given (2 bad input, 3 non-finite loss, ...; :func:`exit_code`) and the one-line reason, so a sweep records it and
goes on. A run that finished but whose result is not to be trusted (:func:`kdlab.sweep.trust.distrust`: the
divergence guard fired and it trained on, a non-finite number) is ``failed`` too, with ``exit_code`` None, its
accuracies and the reason.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from kdlab import builder
from kdlab.failures import exit_code
from kdlab.sweep.trust import distrust, read_final

__all__ = ["Cell", "end_children", "exit_code", "run_cell"]

Command = Literal["teacher", "train"]


@dataclass(frozen=True)
class Cell:
    """One run of a sweep. ``key`` (its directory) identifies it; ``after`` names the cells it needs (its teacher)."""

    name: str  # the recipe's name, or a variant's: the cell lives in <sweep out>/<name>/seed<k>
    recipe: str  # shipped recipe name or YAML file
    overrides: tuple[str, ...]  # everything on top of the recipe, out_dir= and seed= included
    out_dir: str
    seed: int | None = None
    command: Command = "train"  # `kdlab teacher` (CE on cfg.teacher.arch) or `kdlab train`
    kind: Literal["teacher", "student"] = "student"  # a teacher cell feeds other cells of the sweep
    procs: int = 1  # processes (GPUs) of the cell; > 1 runs under torchrun
    after: tuple[str, ...] = ()  # keys of the cells that must have finished first
    label: str = field(default="", compare=False)  # how progress and reports name it

    @property
    def key(self) -> str:
        return self.out_dir

    def describe(self) -> str:
        return self.label or (f"{self.name} seed {self.seed}" if self.seed is not None else self.name)

    def config(self):
        """The cell's validated run config (a ``ConfigError`` names the bad key)."""
        return builder.load_config(self.recipe, list(self.overrides))

    def argv(self) -> list[str]:
        """The command line that trains this cell: ``kdlab <command> RECIPE OVERRIDES...``."""
        return [self.command, self.recipe, *self.overrides]


def _one_line(exc: BaseException) -> str:
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}" if exit_code(exc) == 1 else text


def _record(cell: Cell, status: str, start: float, final: dict[str, Any] | None = None, code: int | None = None,
            reason: str | None = None, detail: str | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {"key": cell.key, "status": status, "exit_code": code, "reason": reason,
                           "wall_time_s": round(time.perf_counter() - start, 3), "threads": torch.get_num_threads()}
    if final is not None:
        role = final.get("role", "student")
        rec.update(already_finished=bool(final.get("already_finished")), resumed_from_epoch=final.get(
            "resumed_from_epoch"), best_acc=final[role]["best_acc"], last_acc=final[role]["last_acc"])
    if detail:
        rec["traceback"] = detail
    return rec


def run_cell(cell: Cell, threads: int | None = None) -> dict[str, Any]:
    """Train ``cell`` (or resume it, or find it finished) and return its record: ``status`` ``"done"`` with the
    accuracies, or ``"failed"`` with ``exit_code`` and ``reason``. ``threads``: torch's intra-op threads."""
    start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    if cell.procs > 1:
        return _run_torchrun(cell, threads, start)
    try:
        cfg = cell.config()
        final = (builder.train_teacher if cell.command == "teacher" else builder.distil)(cfg)
    except Exception as exc:  # recorded with its reason; the sweep goes on
        code = exit_code(exc)
        return _record(cell, "failed", start, code=code, reason=_one_line(exc),
                       detail=traceback.format_exc() if code == 1 else None)
    return _finished(cell, start, final)


def _finished(cell: Cell, start: float, final: dict[str, Any]) -> dict[str, Any]:
    """The record of a run that ended with its ``final.json``: done, or failed when its result is not trusted."""
    reason = distrust(final)
    return _record(cell, "failed" if reason else "done", start, final, reason=reason)


# torchrun children of this process, so that a worker whose sweep died can end them (see kdlab.sweep.local)
_CHILDREN: set[subprocess.Popen] = set()


def end_children() -> None:
    """End the torchrun process groups this process started (a worker whose sweep is gone calls it)."""
    for proc in list(_CHILDREN):
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _run_torchrun(cell: Cell, threads: int | None, start: float) -> dict[str, Any]:
    """``torchrun --standalone --nproc_per_node P -m kdlab <command> ...`` in the cell's allocation; the CLI's own
    exit code and one-line message become the record. The log is ``<out_dir>/torchrun.log``."""
    out = Path(cell.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(max(1, (threads or torch.get_num_threads()) // cell.procs))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cell.procs}",
           "-m", "kdlab", *cell.argv()]
    with open(out / "torchrun.log", "ab") as log:
        # its own process group: the whole group (launcher and ranks) ends with the cell, whatever ends it
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _CHILDREN.add(proc)
        try:
            code = proc.wait()
        finally:
            _kill_group(proc)
            _CHILDREN.discard(proc)
    if code == 0:
        try:
            return _finished(cell, start, read_final(out / "final.json"))
        except ValueError as exc:
            return _record(cell, "failed", start, code=2, reason=str(exc))
    text = (out / "torchrun.log").read_text(encoding="utf-8", errors="replace")
    reasons = [line[len("kdlab: "):] for line in text.splitlines() if line.startswith("kdlab: ")]
    rank_codes = [int(c) for c in re.findall(r"exitcode\s*:\s*(-?\d+)", text)]
    code = next((c for c in rank_codes if c > 0), code)  # torchrun exits 1; a rank's own code says more
    reason = reasons[-1] if reasons else f"torchrun exited with {code}; see {out / 'torchrun.log'}"
    return _record(cell, "failed", start, code=code, reason=reason)
