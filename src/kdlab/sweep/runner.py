"""The sweep engine: which cells to run, running them through an executor, and the record ``<out>/sweep.json``.

:func:`execute` runs a list of cells (the demo's and the fidelity experiments' too): finished cells are skipped,
interrupted ones resumed, changed ones reported and left alone, a student whose teacher cell failed is not run.
:func:`run_sweep` does that for a sweep directory: one sweep at a time per directory (a lock), every cell's status
written to ``sweep.json`` as it ends.

Executors: :class:`InProcess` (this process), :class:`Local` (``--jobs N`` worker processes, ``kdlab.sweep.local``)
and ``kdlab.sweep.slurm.Submitit`` (SLURM, or submitit's local executor). Each runs :func:`kdlab.sweep.cell.run_cell`.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from kdlab._io import atomic_write_text
from kdlab.sweep.cell import Cell, run_cell
from kdlab.sweep.local import Outcome, WorkerPool, device_groups
from kdlab.sweep.state import cell_state
from kdlab.sweep.trust import distrust

__all__ = [
    "SWEEP_FILE",
    "Executor",
    "InProcess",
    "Local",
    "SweepLocked",
    "SweepReport",
    "execute",
    "read_sweep",
    "run_sweep",
]

SWEEP_FILE = "sweep.json"
OK = {"finished", "trained", "resumed"}  # a cell in one of these states has its final.json


class SweepLocked(ValueError):
    """Another sweep is running in this directory."""


class Executor(Protocol):
    """Runs cells, each once the cells it comes ``after`` have ended; ``gate`` may settle a cell without running
    it; ``done(cell, record)`` for every cell as it ends."""

    def run(self, cells: list[Cell], gate: Callable[[Cell], dict | None],
            done: Callable[[Cell, dict], None]) -> None: ...


def _failure(cell: Cell, outcome: Outcome) -> dict[str, Any]:
    """The record of a cell whose worker died or whose job raised (``run_cell`` itself records failing runs)."""
    return {"key": cell.key, "status": "failed", "exit_code": 1, "reason": outcome.describe_failure(),
            "traceback": outcome.traceback}


class InProcess:
    """Every cell in this process, one after the other."""

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def run(self, cells, gate, done) -> None:
        for cell in cells:
            settled = gate(cell)
            done(cell, settled if settled is not None else run_cell(cell, self.threads))


class Local:
    """``jobs`` cells at once in worker processes (``kdlab.sweep.local.WorkerPool``): on a machine with GPUs each
    worker is pinned to its own ``procs_per_cell`` GPUs, else the CPU cores are divided (``threads`` each)."""

    def __init__(self, jobs: int | None = None, threads: int | None = None, procs_per_cell: int = 1,
                 pool: WorkerPool | None = None, progress: bool = True):
        self.devices = device_groups(procs_per_cell)
        jobs = jobs or (len(self.devices) if self.devices else 1)
        self.threads = threads or max(1, (os.cpu_count() or 1) // jobs)
        self.pool = pool or WorkerPool(jobs, self.threads, self.devices)
        self.progress = progress

    def __enter__(self) -> Local:
        return self

    def __exit__(self, *exc) -> None:
        self.pool.close()

    def run(self, cells, gate, done) -> None:
        by_key = {c.key: c for c in cells}

        def on_result(key, outcome: Outcome) -> None:
            cell = by_key[key]
            done(cell, outcome.value if outcome.ok else _failure(cell, outcome))

        def gate_keys(key, _deps) -> Outcome | None:
            settled = gate(by_key[key])
            return Outcome(value=settled) if settled is not None else None

        self.pool.run({c.key: (run_cell, (c, self.threads)) for c in cells}, after={c.key: c.after for c in cells},
                      gate=gate_keys, on_result=on_result,
                      progress=self.progress, desc="cells",
                      postfix=lambda k, o: f"{by_key[k].describe()}: {_short(o.value if o.ok else None)}")


def _short(rec: dict | None) -> str:
    if not rec or rec.get("status") != "done":
        return (rec or {}).get("status", "failed")
    return f"{rec['last_acc']:.2f}%"


class SweepReport:
    """Every cell with its record (``status``: finished, trained, resumed, failed, changed, blocked, submitted)."""

    def __init__(self, cells: list[Cell], records: dict[str, dict]):
        self.cells, self.records = cells, records

    def status(self, cell: Cell) -> str:
        return self.records[cell.key]["status"]

    @property
    def ok(self) -> bool:
        return all(self.status(c) in OK for c in self.cells)

    def problems(self) -> list[tuple[Cell, dict]]:
        return [(c, self.records[c.key]) for c in self.cells if self.status(c) not in OK | {"submitted"}]

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for c in self.cells:
            counts[self.status(c)] = counts.get(self.status(c), 0) + 1
        order = ["trained", "resumed", "finished", "submitted", "failed", "changed", "blocked"]
        lines = [f"{len(self.cells)} cells: " + ", ".join(
            f"{counts[s]} {'finished before (skipped)' if s == 'finished' else s}" for s in order if counts.get(s))]
        for c, rec in self.problems():
            code = f" (exit {rec['exit_code']})" if rec.get("exit_code") is not None else ""
            lines.append(f"  {rec['status']} {c.describe()}{code}: {rec.get('reason')}")
        return "\n".join(lines)


def _status(rec: dict) -> str:
    if rec["status"] != "done":
        return rec["status"]
    return "resumed" if rec.get("resumed_from_epoch") else ("finished" if rec.get("already_finished") else "trained")


def execute(cells: list[Cell], executor: Executor, on_record: Callable[[Cell, dict], None] | None = None,
            skip: dict[str, dict] | None = None) -> SweepReport:
    """Run ``cells`` through ``executor``: finished cells skipped, interrupted ones resumed, changed ones reported
    (never overwritten), students of a failed or changed teacher cell blocked. ``skip``: cells settled beforehand
    (e.g. still running as a SLURM job)."""
    records: dict[str, dict] = {}
    todo = []
    for cell in cells:
        if skip and cell.key in skip:
            records[cell.key] = skip[cell.key]
            continue
        st = cell_state(cell)
        if st.state == "finished":
            role = st.final.get("role", "student")
            rec = {"key": cell.key, "status": "finished", "skipped": True,
                   "best_acc": st.final[role]["best_acc"], "last_acc": st.final[role]["last_acc"]}
            reason = distrust(st.final)
            if reason:  # finished before, but not a result: left as it is (a rerun would not change it)
                rec.update(status="failed", exit_code=None, reason=f"{reason} (finished before; move "
                                                                   f"{cell.out_dir} away to train it again)")
            records[cell.key] = rec
        elif st.state == "changed":
            records[cell.key] = {"key": cell.key, "status": "changed", "reason": st.reason}
        else:
            todo.append(cell)
    by_key = {c.key: c for c in cells}
    for key, rec in records.items():
        if on_record is not None:
            on_record(by_key[key], rec)

    def gate(cell: Cell) -> dict | None:
        for dep in cell.after:
            rec = records.get(dep)
            if rec is not None and rec["status"] not in OK:
                return {"key": cell.key, "status": "blocked",
                        "reason": f"its teacher cell {dep} is {rec['status']}" + (
                            f": {rec['reason']}" if rec.get("reason") else "")}
        return None

    def done(cell: Cell, rec: dict) -> None:
        rec = {**rec, "status": _status(rec)}
        records[cell.key] = rec
        if on_record is not None:
            on_record(cell, rec)

    executor.run(todo, gate, done)
    return SweepReport(cells, records)


class _Lock:
    """One sweep per directory: an OS lock on ``<out>/.sweep.lock`` (released by the OS if the sweep dies)."""

    def __init__(self, out: Path):
        self.path = out / ".sweep.lock"

    def __enter__(self) -> _Lock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.path, "a+")
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.f.seek(0)
            holder = self.f.read().strip() or "another process"
            self.f.close()
            raise SweepLocked(f"another sweep ({holder}) is running in {self.path.parent}; wait for it, or use "
                              "another --out") from None
        self.f.seek(0)
        self.f.truncate()
        self.f.write(f"pid {os.getpid()} on {os.uname().nodename}")
        self.f.flush()
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def read_sweep(out: str | Path) -> dict[str, Any]:
    path = Path(out) / SWEEP_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def run_sweep(cells: list[Cell], out: str | Path, executor: Executor, spec: dict | None = None,
              skip: dict[str, dict] | None = None) -> SweepReport:
    """:func:`execute` for the sweep directory ``out``, recording every cell in ``<out>/sweep.json``."""
    out = Path(out)
    start = time.time()
    with _Lock(out):
        records: dict[str, dict] = {}

        def write(cell: Cell | None = None, rec: dict | None = None) -> None:
            if cell is not None:
                records[cell.key] = rec
            doc = {"kdlab_sweep": 1, "spec": spec, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                time.gmtime(start)),
                   "cells": [{**asdict(c), **{k: v for k, v in records.get(c.key, {"status": "pending"}).items()
                                              if k != "key"}} for c in cells]}
            atomic_write_text(out / SWEEP_FILE, json.dumps(doc, indent=2))

        write()
        return execute(cells, executor, on_record=write, skip=skip)
