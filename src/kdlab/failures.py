"""How a run fails: the one mapping from an exception to the exit code ``kdlab train`` gives and the line it prints.

Used by the CLI (``kdlab.cli``) and by sweeps, which record a failed cell's exit code and reason without a process
of its own (``kdlab.sweep.cell``), so a cell fails exactly as the same command would.

| code | meaning |
|---|---|
| 2 | bad input: a config, data, checkpoint or file problem named in one line |
| 3 | stopped: a non-finite loss (the last good checkpoint is kept) |
| 1 | anything unexpected (a bug: the traceback is shown) |
"""

from __future__ import annotations

from kdlab._io import CheckpointError
from kdlab.config import ConfigError
from kdlab.engine.loop import NonFiniteLossError

__all__ = ["exit_code", "failure_line"]


def exit_code(exc: BaseException) -> int:
    """The exit code of a run that raised ``exc``: 3 stopped, 2 bad input, 1 unexpected."""
    if isinstance(exc, NonFiniteLossError):
        return 3
    if isinstance(exc, (ConfigError, CheckpointError, ValueError, FileNotFoundError)):
        return 2
    return 1


def failure_line(exc: BaseException) -> str:
    """The one line a run that raised ``exc`` prints (``kdlab: error: ...`` / ``kdlab: stopped: ...``)."""
    return f"kdlab: {'stopped' if exit_code(exc) == 3 else 'error'}: {exc}"
