"""Asking the CLI costs nothing: ``kdlab --help``, ``kdlab recipes``, ``kdlab config``, ``kdlab methods`` and a
mistyped argument run without importing torch (kdlab.cli.commands holds the arguments; a command's handler module is
imported only when it runs; the methods' models come from the generated kdlab.config.method_params)."""

import argparse
import subprocess
import sys
import textwrap

import pytest

from kdlab.cli import build_parser, commands, handler
from kdlab.data import DATASETS
from kdlab.fidelity.sources import SOURCES
from kdlab.models.export import FORMATS
from kdlab.teachers.published import MIRROR_ENV
from kdlab.teachers.store import PRECISIONS


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_importing_the_cli_leaves_torch_out():
    r = _python("import sys, kdlab.cli; assert 'torch' not in sys.modules, sorted(sys.modules)")
    assert r.returncode == 0, r.stderr


def test_help_recipes_and_argument_errors_leave_torch_out():
    r = _python("""
        import contextlib, io, sys
        from kdlab.cli import build_parser, main
        build_parser()
        codes = []
        for argv in (["--help"], ["train", "--help"], ["teacher cache", "--help"], ["recipes"],
                     ["recipes", "--long"], ["trian", "x"], ["eval", "--student", "s", "--data", "mnist2d"],
                     ["--version"], ["config", "mnist1d/kd", "method.args.temperature=2"], ["methods"]):
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                try:
                    codes.append(main(argv))
                except SystemExit as exc:
                    codes.append(exc.code)
            assert out.getvalue(), argv
        print(codes)
        assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith(("torch", "kdlab")))
    """)
    assert r.returncode == 0, r.stderr + r.stdout
    assert r.stdout.strip() == "[0, 0, 0, 0, 0, 2, 2, 0, 0, 0]"


def test_a_command_that_runs_imports_its_handler_and_freezes_what_it_imported():
    r = _python("""
        import gc, sys
        from kdlab.cli import main
        assert main(["plot", "no_such_run"]) == 2  # its handler imports torch (kdlab._io), then says what is missing
        assert 'kdlab.cli.plot' in sys.modules and 'torch' in sys.modules
        # imported with the collector paused, then frozen (full collections skip torch's objects); collector back on
        assert gc.get_freeze_count() > 100_000 and gc.isenabled()
    """)
    assert r.returncode == 0, r.stderr


def _commands() -> dict[str, argparse.ArgumentParser]:
    return next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_command_names_a_handler_that_exists(name):
    assert callable(handler(_commands()[name].get_default("handler")))


def test_the_choices_repeated_in_commands_equal_their_sources():
    assert (commands.DATASETS, commands.SOURCES, commands.EXPORT_FORMATS, commands.PRECISIONS, commands.MIRROR_ENV) == (
        DATASETS, SOURCES, FORMATS, PRECISIONS, MIRROR_ENV)
