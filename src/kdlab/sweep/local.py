"""Cells on this machine: ``jobs`` spawned worker processes, each pinned to its own GPU(s) with
``CUDA_VISIBLE_DEVICES`` (or given its share of the CPU threads), a progress bar over cells.

Workers are *spawned* (a forked child of a process that has run torch's thread pool can hang) and live for the whole
pool, so torch is imported once per worker, not once per cell. The pool survives what a cell can do to its process:
a worker that dies (out of memory, a segfault) is reported for the task it ran and replaced. And a worker never
outlives its parent: if the sweep is killed (even with SIGKILL), each worker ends itself and its torchrun children
within a fraction of a second, so a rerun never meets a second writer in a cell's directory.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import wait
from typing import Any

import torch

from kdlab._bar import tqdm
from kdlab.sweep.cell import end_children

__all__ = ["Outcome", "WorkerPool", "device_groups", "pool_size"]


@dataclass
class Outcome:
    """What became of one task: its return ``value``, or the ``error`` it raised, or the exit code of a worker that
    ``died`` running it."""

    value: Any = None
    error: BaseException | None = None
    traceback: str | None = None
    died: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.died is None

    def describe_failure(self) -> str:
        if self.died is not None:
            how = f"signal {-self.died}" if self.died < 0 else f"exit code {self.died}"
            return f"its worker process died ({how}), e.g. killed for lack of memory"
        return f"{type(self.error).__name__}: {self.error}"


def pool_size(workers: int | None = None) -> tuple[int, int]:
    """``(workers, threads per worker)``: by default 2 workers (or 1 on a 1-core machine), the cores split evenly."""
    cores = os.cpu_count() or 1
    workers = workers or max(1, min(2, cores))
    return workers, max(1, cores // workers)


def device_groups(procs: int = 1) -> list[str] | None:
    """The visible CUDA devices in groups of ``procs`` (``["0", "1"]``, or ``["0,1", "2,3"]`` for 2 per cell), as
    ``CUDA_VISIBLE_DEVICES`` values; ``None`` without a GPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = ([d.strip() for d in visible.split(",") if d.strip()] if visible is not None
           else [str(i) for i in range(torch.cuda.device_count())])
    if not ids:
        return None
    if len(ids) < procs:
        raise ValueError(f"a cell needs {procs} GPUs but {len(ids)} are visible ({','.join(ids)})")
    return [",".join(ids[i:i + procs]) for i in range(0, len(ids) - procs + 1, procs)]


# ---------------------------------------------------------------------------------------------------------------
# worker side
# ---------------------------------------------------------------------------------------------------------------
def _end_children_and_exit(code: int) -> None:
    end_children()
    os._exit(code)


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(0.2)
        if os.getppid() != parent_pid:  # the sweep is gone: nobody will read our result
            _end_children_and_exit(70)


def _worker_main(conn, parent_pid: int, env: dict[str, str], threads: int) -> None:
    os.environ.update(env)  # before anything initialises CUDA
    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it ends the workers)
    signal.signal(signal.SIGTERM, lambda *_: _end_children_and_exit(143))
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        fn, args = task
        try:
            reply = ("ok", fn(*args), None)
        except Exception as exc:
            reply = ("error", exc, traceback.format_exc())
        try:
            conn.send(reply)
        except Exception:  # an exception or value that does not pickle
            conn.send(("error", RuntimeError(repr(reply[1])), reply[2]))


# ---------------------------------------------------------------------------------------------------------------
# parent side
# ---------------------------------------------------------------------------------------------------------------
class _Worker:
    def __init__(self, ctx, env: dict[str, str], threads: int):
        self.env, self.threads = env, threads
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, os.getpid(), env, threads), daemon=True)
        self.proc.start()
        child.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to end (``timeout`` 0: end it now, e.g. on Ctrl-C: its run resumes next time)."""
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join()
        self.conn.close()


Task = tuple[Callable[..., Any], tuple]


class WorkerPool:
    """``jobs`` worker processes, started on first use; worker ``i`` sees ``devices[i % len(devices)]`` as its
    CUDA devices (when given) and runs torch with ``threads`` threads."""

    def __init__(self, jobs: int, threads: int, devices: list[str] | None = None):
        if jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {jobs}")
        self.jobs, self.threads, self.devices = jobs, threads, devices
        self._ctx = get_context("spawn")
        self._workers: list[_Worker] = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self, now: bool = False) -> None:
        for w in self._workers:
            w.stop(0 if now else 5.0)
        self._workers = []

    def _env(self, slot: int) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": self.devices[slot % len(self.devices)]} if self.devices else {}

    def _start(self, n: int) -> None:
        while len(self._workers) < min(n, self.jobs):
            self._workers.append(_Worker(self._ctx, self._env(len(self._workers)), self.threads))

    def run(self, tasks: dict[Hashable, Task], after: dict[Hashable, tuple] | None = None,
            gate: Callable[[Hashable, dict[Hashable, Outcome]], Outcome | None] | None = None,
            on_result: Callable[[Hashable, Outcome], None] | None = None, progress: bool = False, desc: str = "",
            postfix: Callable[[Hashable, Outcome], str] | None = None) -> dict[Hashable, Outcome]:
        """Run every task ``key: (fn, args)``, a task only once the tasks it comes ``after`` have ended; ``gate``
        may then settle it without running it (e.g. its teacher failed). Returns ``{key: Outcome}`` in task order."""
        after = {k: tuple(d for d in deps if d in tasks) for k, deps in (after or {}).items()}
        results: dict[Hashable, Outcome] = {}
        pending = list(tasks)
        busy: dict[_Worker, Hashable] = {}
        bar = tqdm(total=len(tasks), desc=desc, disable=not progress)

        def finish(key: Hashable, outcome: Outcome) -> None:
            results[key] = outcome
            if on_result is not None:
                on_result(key, outcome)
            if postfix is not None:
                bar.set_postfix_str(postfix(key, outcome), refresh=False)
            bar.update()

        try:
            while pending or busy:
                for key in list(pending):
                    deps = after.get(key, ())
                    if any(d not in results for d in deps):
                        continue
                    settled = gate(key, {d: results[d] for d in deps}) if gate is not None else None
                    if settled is not None:
                        pending.remove(key)
                        finish(key, settled)
                        continue
                    self._start(len(busy) + 1)
                    idle = [w for w in self._workers if w not in busy]
                    if not idle:
                        break
                    idle[0].conn.send(tasks[key])
                    busy[idle[0]] = key
                    pending.remove(key)
                if not busy:
                    if pending:
                        raise ValueError(f"tasks wait for each other in a cycle: {pending}")
                    break
                ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy])
                for w in [w for w in busy if w.conn in ready or w.proc.sentinel in ready]:
                    key = busy.pop(w)
                    finish(key, self._collect(w))
        except BaseException:
            self.close(now=True)  # Ctrl-C or a bug here: no worker goes on training in the background
            raise
        finally:
            bar.close()
        return {key: results[key] for key in tasks}

    def _collect(self, w: _Worker) -> Outcome:
        try:
            if w.conn.poll():
                kind, payload, tb = w.conn.recv()
                return Outcome(value=payload) if kind == "ok" else Outcome(error=payload, traceback=tb)
        except (EOFError, OSError):
            pass
        w.proc.join()
        died = w.proc.exitcode
        w.conn.close()
        self._workers[self._workers.index(w)] = _Worker(self._ctx, w.env, w.threads)
        return Outcome(died=died if died is not None else -1)

    def map(self, fn: Callable[..., Any], cells: dict[Hashable, tuple], progress: bool = False, desc: str = "",
            postfix: Callable[[Hashable, Any], str] | None = None) -> dict[Hashable, Any]:
        """``{key: fn(*args)}``; a failing task raises its error here once every task has ended, so a caller never
        averages over a silently missing result."""
        outcomes = self.run({k: (fn, args) for k, args in cells.items()}, progress=progress, desc=desc,
                            postfix=(lambda k, o: postfix(k, o.value) if o.ok else "failed") if postfix else None)
        for key, o in outcomes.items():
            if o.error is not None:
                raise o.error
            if o.died is not None:
                raise RuntimeError(f"{desc} {key}: {o.describe_failure()}")
        return {k: o.value for k, o in outcomes.items()}
