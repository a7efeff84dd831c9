"""The ``kdlab`` command line, in two halves so that asking costs nothing and running costs only what it needs.

* :mod:`kdlab.cli.commands` — every command's arguments (argparse and the standard library only), each command
  naming its handler as ``"module:function"``;
* the handler modules, imported by that name (:func:`handler`) only once the arguments parse, so that ``kdlab
  --help``, ``kdlab recipes`` and a mistyped argument never import torch (1.4 CPU-s; ``tests/cli/test_startup.py``):

  * :mod:`kdlab.cli.train` — ``teacher``, ``train``, ``config``, ``methods``;
  * :mod:`kdlab.cli.recipes` — ``recipes`` (only :mod:`kdlab.config`);
  * :mod:`kdlab.cli.teachers` — ``teacher fetch`` (a published teacher by name, fetched once), ``teacher import``
    (weights you have → a kdlab weights file);
  * :mod:`kdlab.cli.teacher_cache` — ``teacher cache`` (a teacher's outputs on a stored crop schedule);
  * :mod:`kdlab.cli.evaluate` — ``eval``, ``fidelity``;
  * :mod:`kdlab.cli.export` — ``export``;
  * :mod:`kdlab.cli.predict` — ``predict``;
  * :mod:`kdlab.cli.showcase` — ``demo``, ``experiment``;
  * :mod:`kdlab.cli.sweep` — ``sweep``, ``table``.

A handler module imports what it needs at its top, as every kdlab module does; naming it instead of importing it is
the one thing the CLI does differently. :func:`main` maps the library's errors to one line on stderr and an exit code
(:mod:`kdlab.failures`, named the same way: 2 for bad input, 3 for a non-finite loss, 4 for a run the divergence
guard stopped, 5 when the environment failed), 130 for Ctrl-C. docs/reliability.md lists the faults.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import signal
import sys
import time
from typing import Callable

from kdlab import __version__
from kdlab.cli import commands

__all__ = ["build_parser", "handler", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdlab", description="Knowledge distillation for image classifiers.")
    p.add_argument("--version", action="version", version=f"kdlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    commands.register(sub)
    return p


def handler(name: str) -> Callable[[argparse.Namespace], int]:
    """The function a command names as ``"module:function"``, its module imported now (with all it needs)."""
    module, function = name.split(":")
    return getattr(importlib.import_module(module), function)


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
    code = _run(_imported(args.handler), args)
    if _launched_by_torchrun():
        # Every file is written (atomically, fsynced) by now. Interpreter teardown with a gloo process group can
        # abort in gloo's threads ("terminate called without an active exception"), so end without any teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _launched_by_torchrun() -> bool:
    # only a launcher sets RANK; kdlab.distributed (which imports torch) is asked only then
    return "RANK" in os.environ and importlib.import_module("kdlab.distributed").launched_by_torchrun()


def _imported(name: str) -> Callable[[argparse.Namespace], int]:
    """:func:`handler`, its first import made with the cyclic garbage collector paused, and everything it imported
    frozen after (``gc.freeze``): torch's import creates a million-odd long-lived objects and little garbage, and
    every full collection of the run (several, and one at the interpreter's exit) would walk them all again (about
    1 s of a 1-epoch MNIST-1D run; docs/performance.md). Results do not depend on it."""
    if name.split(":")[0] in sys.modules:
        return handler(name)
    enabled = gc.isenabled()
    gc.disable()
    try:
        return handler(name)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _run(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return command(args)
    except KeyboardInterrupt:
        print("kdlab: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kdlab recipes | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not fail again
        return 0
    except Exception as exc:  # noqa: BLE001 - mapped by kdlab.failures; an unexpected one keeps its traceback
        failures = importlib.import_module("kdlab.failures")  # only a failed command pays for its imports
        code = failures.exit_code(exc)
        if code == 1:
            raise
        line = failures.failure_line(exc)
        print(line, file=sys.stderr)
        _tell_launcher(line)
        return code


def _tell_launcher(line: str) -> None:
    """Under torchrun: the one line also goes to the error file the launcher reads, so its failure summary shows
    it as the root cause instead of "To enable traceback see ..."."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path and _launched_by_torchrun():
        try:
            with open(path, "w", encoding="utf-8") as f:
                # the layout torch.distributed.elastic's ErrorHandler writes, without a Python call stack
                json.dump({"message": {"message": line, "extraInfo": {"timestamp": str(int(time.time()))}}}, f)
        except OSError:  # the console line is already out; the summary is a courtesy
            pass
