"""The ``kdlab`` command line. Each command group lives in its own module with a ``register(subparsers)``:

* :mod:`kdlab.cli.train` — ``teacher``, ``train``, ``config``, ``recipes``, ``methods``;
* :mod:`kdlab.cli.teachers` — ``teacher import`` (published weights → a kdlab weights file);
* :mod:`kdlab.cli.teacher_cache` — ``teacher cache`` (a teacher's outputs on a stored crop schedule);
* :mod:`kdlab.cli.evaluate` — ``eval``, ``fidelity``;
* :mod:`kdlab.cli.showcase` — ``demo``, ``experiment``.

:func:`main` maps the library's errors to one line on stderr and an exit code: 2 for bad input (config, data,
checkpoint, files), 3 for a non-finite loss, 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys

from kdlab import __version__
from kdlab.cli import evaluate, showcase, teacher_cache, teachers, train
from kdlab.config import ConfigError
from kdlab.distributed import launched_by_torchrun
from kdlab.engine.checkpoint import CheckpointError
from kdlab.engine.loop import NonFiniteLossError

__all__ = ["build_parser", "main"]

GROUPS = (showcase, train, teachers, teacher_cache, evaluate)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdlab", description="Knowledge distillation for image classifiers.")
    p.add_argument("--version", action="version", version=f"kdlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(teacher_cache.route(teachers.route(argv)))
    code = _run(args)
    if launched_by_torchrun():
        # Every file is written (atomically, fsynced) by now. Interpreter teardown with a gloo process group can
        # abort in gloo's threads ("terminate called without an active exception"), so end without any teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run(args) -> int:
    try:
        return args.func(args)
    except NonFiniteLossError as exc:
        print(f"kdlab: stopped: {exc}", file=sys.stderr)
        return 3
    except (ConfigError, CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"kdlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kdlab: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
