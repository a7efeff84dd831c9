"""The ``kdlab`` command line. Each command group lives in its own module with a ``register(subparsers)``:

* :mod:`kdlab.cli.train` — ``teacher``, ``train``, ``config``, ``recipes``, ``methods``;
* :mod:`kdlab.cli.teachers` — ``teacher fetch`` (a published teacher by name, fetched once), ``teacher import``
  (weights you have → a kdlab weights file);
* :mod:`kdlab.cli.teacher_cache` — ``teacher cache`` (a teacher's outputs on a stored crop schedule);
* :mod:`kdlab.cli.evaluate` — ``eval``, ``fidelity``;
* :mod:`kdlab.cli.export` — ``export``;
* :mod:`kdlab.cli.showcase` — ``demo``, ``experiment``;
* :mod:`kdlab.cli.sweep` — ``sweep``, ``table``.

:func:`main` maps the library's errors to one line on stderr and an exit code (:mod:`kdlab.failures`: 2 for bad
input, 3 for a non-finite loss, 4 for a run the divergence guard stopped, 5 when the environment failed), 130 for
Ctrl-C. docs/reliability.md lists the faults.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from kdlab import __version__
from kdlab.cli import evaluate, export, predict, showcase, sweep, teacher_cache, teachers, train
from kdlab.distributed import launched_by_torchrun
from kdlab.failures import exit_code, failure_line

__all__ = ["build_parser", "main"]

GROUPS = (showcase, train, teachers, teacher_cache, evaluate, export, predict, sweep)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdlab", description="Knowledge distillation for image classifiers.")
    p.add_argument("--version", action="version", version=f"kdlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return p


def _two_word_commands(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``kdlab teacher import ...`` / ``kdlab teacher cache ...`` are registered as one command named by both words
    (``kdlab teacher CONFIG`` stays the teacher's training); join the words where they name such a command."""
    names = next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [" ".join(argv[:2]), *argv[2:]] if " ".join(argv[:2]) in names and len(argv) >= 2 else argv


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(_two_word_commands(parser, argv))
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
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("kdlab: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kdlab recipes | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not fail again
        return 0
    except Exception as exc:  # noqa: BLE001 - mapped by kdlab.failures; an unexpected one keeps its traceback
        code = exit_code(exc)
        if code == 1:
            raise
        line = failure_line(exc)
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
