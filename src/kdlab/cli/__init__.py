"""The ``kdlab`` command line. Each command group lives in its own module with a ``register(subparsers)``:

* :mod:`kdlab.cli.train` — ``teacher``, ``train``, ``config``, ``recipes``, ``methods``;
* :mod:`kdlab.cli.evaluate` — ``eval``, ``fidelity``;
* :mod:`kdlab.cli.showcase` — ``demo``, ``experiment``.

:func:`main` maps the library's errors to one line on stderr and an exit code: 2 for bad input (config, data,
checkpoint, files, an out_dir that cannot be written or has another writer), 3 for a non-finite loss, 4 for a run the
divergence guard stopped (kdlab.engine.guard), 5 when the environment failed (disk full or file too large, I/O
error, processes of a torchrun job that could not join), 130 for Ctrl-C. docs/reliability.md lists the faults.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import time

from kdlab import __version__
from kdlab.cli import evaluate, showcase, train
from kdlab.config import ConfigError
from kdlab.distributed import ProcessGroupError, launched_by_torchrun
from kdlab.engine.checkpoint import CheckpointError
from kdlab.engine.guard import TrainingDiverged
from kdlab.engine.loop import NonFiniteLossError

__all__ = ["build_parser", "main"]

GROUPS = (showcase, train, evaluate)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdlab", description="Knowledge distillation for image classifiers.")
    p.add_argument("--version", action="version", version=f"kdlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return p


# the environment failed, not the input: free space (or raise a limit) and rerun, which resumes
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(signal, "SIGXFSZ"):
        # past a file-size limit (ulimit -f) a write fails with EFBIG and a clear message instead of killing us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    code = _run(args)
    if launched_by_torchrun():
        # Every file is written (atomically, fsynced) by now. Interpreter teardown with a gloo process group can
        # abort in gloo's threads ("terminate called without an active exception"), so end without any teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run(args) -> int:
    code, line = _outcome(args)
    if line:
        print(line, file=sys.stderr)
        _tell_launcher(line)
    return code


def _tell_launcher(line: str) -> None:
    """Under torchrun: the one line also goes to the error file the launcher reads, so its failure summary shows
    it as the root cause instead of "To enable traceback see ..."."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path and launched_by_torchrun():
        try:
            with open(path, "w", encoding="utf-8") as f:
                # the layout torch.distributed.elastic's ErrorHandler writes, without a Python call stack
                json.dump({"message": {"message": line, "extraInfo": {"timestamp": str(int(time.time()))}}}, f)
        except OSError:  # the console line is already out; the summary is a courtesy
            pass


def _outcome(args) -> tuple[int, str | None]:
    """(exit code, the one line for stderr or None)."""
    try:
        return args.func(args), None
    except NonFiniteLossError as exc:
        return 3, f"kdlab: stopped: {exc}"
    except TrainingDiverged as exc:
        return 4, f"kdlab: stopped: {exc}"
    except (ConfigError, CheckpointError, ValueError, FileNotFoundError) as exc:
        return 2, f"kdlab: error: {exc}"
    except ProcessGroupError as exc:
        return 5, f"kdlab: error: {exc}"
    except OSError as exc:
        if exc.errno in _ENVIRONMENT_ERRNOS:
            return 5, (f"kdlab: error: {exc}. Free space (or raise the limit) and rerun the same command: it resumes "
                       "from the last checkpoint")
        return 2, f"kdlab: error: {exc}"
    except KeyboardInterrupt:
        return 130, "kdlab: interrupted; rerun the same command to resume from the last checkpoint"
