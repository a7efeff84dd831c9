"""The run directory has one writer: an exclusive OS lock held while a run trains and reports.

Two processes started on the same ``out_dir`` would interleave their metrics and overwrite each other's checkpoints;
the second is refused at once with :class:`RunDirBusy` naming the holder. The lock is ``fcntl.flock`` on
``<out_dir>/.kdlab.lock``: the kernel drops it when its process ends in any way (SIGKILL included), so a stale lock
cannot block a rerun. The file stays (deleting a lock file races with its next holder); it holds the holder's pid,
host and start time for the message. Under torchrun only rank 0 writes, so only rank 0 locks. Without ``fcntl``
(Windows) nothing is locked. A forked child (a DataLoader worker) closes its copy of the descriptor at once: flock
belongs to the open file, which fork shares, so a worker outliving a killed run would otherwise keep its lock
(up to the few seconds a worker takes to notice) and refuse the rerun.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from kdlab import distributed as dist
from kdlab._io import write_error

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["LOCK_NAME", "RunDirBusy", "RunDirLock", "check_writable"]

LOCK_NAME = ".kdlab.lock"

_HELD: set[int] = set()  # this process's lock descriptors


def _drop_in_child() -> None:
    """Close, in a forked child, the descriptors of the parent's locks (the parent's lock is untouched)."""
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if fcntl is not None:
    os.register_at_fork(after_in_child=_drop_in_child)


class RunDirBusy(ValueError):
    """Another live process holds the run directory's lock."""


def check_writable(out_dir: Path) -> None:
    """Refuse, before any work, an ``out_dir`` that is a file or cannot be created or written."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir {out_dir} is a file, not a directory: choose another out_dir")
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"out_dir {out_dir} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is read-only or not writable by this user"
        raise ValueError(f"out_dir {out_dir} cannot be written: {existing} {what}; choose another out_dir")


class RunDirLock:
    """``with RunDirLock(out_dir):`` — hold ``out_dir``'s writer lock (created if needed); a no-op for ``None``
    and on ranks other than 0."""

    def __init__(self, out_dir: Path | None):
        self.out_dir = out_dir
        self._fd: int | None = None

    def __enter__(self) -> RunDirLock:
        if self.out_dir is None or fcntl is None or not dist.is_main():
            return self
        path = self.out_dir / LOCK_NAME
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise write_error(path, exc, "create") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _describe(os.read(fd, 4096))
            os.close(fd)
            raise RunDirBusy(f"{self.out_dir} is being written by another kdlab run ({holder}): wait for it to end, "
                             "or use another out_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self._fd = fd
        _HELD.add(fd)
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            _HELD.discard(self._fd)
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode())
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "its pid is unknown"
