"""How a run fails: the one mapping from an exception to the exit code ``kdlab train`` gives and the line it prints.

Used by the CLI (``kdlab.cli``) and by sweeps, which record a failed cell's exit code and reason without a process
of its own (``kdlab.sweep.cell``), so a cell fails exactly as the same command would. docs/reliability.md lists the
faults behind each code.

| code | meaning |
|---|---|
| 2 | bad input: a config, data, checkpoint or file problem, an out_dir that cannot be written or has another writer |
| 3 | stopped: a non-finite loss (the last good checkpoint is kept) |
| 4 | stopped: the divergence guard found a collapsed run (kdlab.engine.guard; best and last good checkpoints kept) |
| 5 | the environment failed: disk full or file too large, an I/O error, torchrun processes that could not join |
| 1 | anything unexpected (a bug: the traceback is shown) |
"""

from __future__ import annotations

import errno

from kdlab._io import CheckpointError
from kdlab.config import ConfigError
from kdlab.distributed import ProcessGroupError
from kdlab.engine.guard import TrainingDiverged
from kdlab.engine.loop import NonFiniteLossError

__all__ = ["exit_code", "failure_line"]

# the environment failed, not the input: free space (or raise a limit) and rerun, which resumes
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}


def exit_code(exc: BaseException) -> int:
    """The exit code of a run that raised ``exc`` (the table above)."""
    if isinstance(exc, NonFiniteLossError):
        return 3
    if isinstance(exc, TrainingDiverged):
        return 4
    if isinstance(exc, (ConfigError, CheckpointError, ValueError, FileNotFoundError)):
        return 2
    if isinstance(exc, ProcessGroupError):
        return 5
    if isinstance(exc, OSError):
        return 5 if exc.errno in _ENVIRONMENT_ERRNOS else 2
    return 1


def failure_line(exc: BaseException) -> str:
    """The one line a run that raised ``exc`` prints (``kdlab: error: ...`` / ``kdlab: stopped: ...``)."""
    code = exit_code(exc)
    if code in (3, 4):
        return f"kdlab: stopped: {exc}"
    if code == 5 and not isinstance(exc, ProcessGroupError):
        return (f"kdlab: error: {exc}. Free space (or raise the limit) and rerun the same command: it resumes from "
                "the last checkpoint")
    return f"kdlab: error: {exc}"
